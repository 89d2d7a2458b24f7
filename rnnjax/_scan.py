"""Run a cell over one sequence with ``jax.lax.scan``; BPTT is ``jax.grad`` through it.

Built-in cells left as built take the fast path (``rnnjax._fast``: the seam that holds every
speed decision); any other cell runs here, as its documented truth (``rnnjax.Cell``): its own
``step`` when only ``step`` was replaced, else ``recur`` on the hoisted ``project_inputs``.
"""

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax import _checks, _fast, _mask
from rnnjax._cells import Cell


def _check_cell(cell) -> Cell:
    if not isinstance(cell, Cell):
        raise TypeError(
            f"cell must be an rnnjax Cell (rnnjax.simple_rnn / lstm / gru); "
            f"got {type(cell).__name__}."
        )
    return cell


def _check_initial_state(cell: Cell, initial_state, dtype):
    if initial_state is None:
        return cell.initial_state((), dtype=dtype)
    # Compare with the cell's own one-example state, so wrapped cells with richer states work.
    expected = jax.eval_shape(lambda: cell.initial_state((), dtype=dtype))
    if jax.tree_util.tree_structure(initial_state) != jax.tree_util.tree_structure(expected):
        raise ValueError(
            f"initial_state must have the structure of cell.initial_state() "
            f"({type(expected).__name__}); got {type(initial_state).__name__}."
        )
    for want, leaf in zip(
        jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(initial_state), strict=True
    ):
        if tuple(jnp.shape(leaf)) != tuple(want.shape):
            raise ValueError(
                f"initial_state leaves must have shape {tuple(want.shape)} for one sequence "
                f"(batch with jax.vmap or rnnjax.rnn); got {tuple(jnp.shape(leaf))}."
            )
    return initial_state


def runs_own_step(cell: Cell) -> bool:
    """Whether ``cell``'s truth is its own ``step``: a built-in cell whose ``step`` alone was
    replaced (``rnnjax.Cell`` documents the contract)."""
    kernels = cell.kernels
    return (
        kernels is not None
        and cell.step != kernels.step
        and (cell.project_inputs, cell.recur) == (kernels.project_inputs, kernels.recur)
    )


def check_closed_form(cell: Cell, function: str) -> None:
    """Refuse a cell whose ``step`` or ``recur`` is not its built-in one: ``function`` solves the
    built-in recurrence in closed form and would silently ignore the replacement."""
    kernels = cell.kernels
    if kernels is None or (cell.step, cell.recur) != (kernels.step, kernels.recur):
        raise ValueError(
            f"{function} solves the built-in {cell.name!r} recurrence in closed form, but this "
            f"cell's step or recur was replaced; run it with rnnjax.scan, which honours them."
        )


def _planner(cell: Cell, kernels, unroll) -> "_fast.Planner":
    return _fast.Planner(
        kernels.kind, cell.hidden_size, jax.default_backend(), _fast.cores(), unroll
    )


def scan(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    *,
    initial_state: Any = None,
    length: jax.Array | int | None = None,
    reverse: bool = False,
    unroll: int | bool | None = None,
    remat: bool = False,
    remat_chunk: int | None = None,
    resets: jax.Array | None = None,
) -> tuple[Any, jax.Array]:
    """Run ``cell`` over one sequence ``xs [T, D]``; returns ``(final_state, ys [T, H])``.

    Built-in cells left as built (without ``remat``) take the fast path, whose derivative is
    one custom JVP over the whole sequence (``rnnjax._fast``: less BPTT memory, the ``dW_h`` term
    as one matmul); under ``jax.vmap`` its loops see the whole batch, as ``rnnjax.rnn``'s do.
    Other cells run ``cell.recur`` under ``lax.scan`` with the input projection ``xs W_x + b``
    hoisted out of the loop (or their own ``step``, see :class:`rnnjax.Cell`). Batches come from
    ``jax.vmap`` (or ``rnnjax.rnn``).

    Args:
      cell: a :class:`Cell` from ``rnnjax.simple_rnn``, ``lstm`` or ``gru``.
      params: the cell's params (``cell.init``).
      xs: one sequence ``[T, input_size]``, floating point.
      initial_state: the cell's state for one example (leaves ``[H]``); zeros when ``None``, in
        the dtype ``xs`` and ``params.w_h`` promote to.
      length: valid steps ``0 <= length <= T`` (an int scalar; per example under ``vmap``). Steps
        at ``t >= length`` leave the state unchanged and output zeros, so ``final_state`` is the
        state after the last valid step and ``length = 0`` returns ``initial_state``. No ``T x``
        state history is stored. Under ``jit`` an out-of-range length acts as if clipped to
        ``[0, T]``; concrete values are checked.
      reverse: run from the last valid step to the first; ``ys[t]`` stays aligned with ``xs[t]``.
        With ``length``, only the valid prefix is reversed (padding does not delay the start).
      unroll: steps per loop iteration, passed to ``lax.scan``; ``None`` lets the fast path's
        plan pick it for ``jax.default_backend()`` when traced (``rnnjax._fast.plan``: more on a
        GPU, where kernel launches dominate a step). Pass an int to choose it yourself.
      remat: wrap the step in ``jax.checkpoint``: BPTT stores only the carries and recomputes
        the gates, trading compute for memory.
      remat_chunk: checkpoint the loop in chunks of this many steps: BPTT keeps one carry per
        chunk plus one chunk's internals and recomputes each chunk's forward, so memory is
        ``O(T / k + k)`` (``k ~ sqrt(T)`` is the classic choice for very long sequences).
        Combines with ``remat``; ``T`` need not be a multiple of ``k``.
      resets: ``bool [T]`` (or ``None``): ``resets[t]`` starts a new segment at step ``t``; the
        state entering step ``t`` is ``initial_state`` again (with ``reverse``, each segment runs
        from its last step to its first, so the state entering step ``t - 1`` is). Equal to
        running each segment on its own; padding steps (past ``length``) ignore it.

    Returns:
      ``(final_state, ys)`` with ``ys [T, H]``.

    Raises:
      TypeError: ``cell`` is not a Cell, ``xs``, ``length`` or ``resets`` has the wrong dtype.
      ValueError: ``xs`` is not ``[T, input_size]``, ``length`` is not a scalar in ``[0, T]``,
        ``resets`` is not ``[T]``, or ``initial_state`` does not have the cell's shape.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> cell = rnnjax.lstm(16)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> final_state, ys = rnnjax.scan(cell, params, jnp.ones((10, 4)), length=7)
    >>> starts = jnp.zeros(10, bool).at[4].set(True)              # segments 0-3 and 4-9
    >>> final_state, ys = rnnjax.scan(cell, params, jnp.ones((10, 4)), resets=starts)
    """
    _check_cell(cell)
    if unroll is not None:
        unroll = _checks.unroll(unroll)
    xs = _checks.floating_array(xs, "xs")
    _checks.rank(xs, 2, "xs", "(T, input_size) for one sequence; batch with jax.vmap or rnnjax.rnn")
    num_steps = xs.shape[0]
    _checks.boolean(reverse, "reverse")
    resets = _checks.resets(resets, (num_steps,))
    if remat_chunk is not None:
        if not isinstance(remat_chunk, int) or isinstance(remat_chunk, bool) or remat_chunk < 1:
            raise ValueError(f"remat_chunk must be a positive int or None; got {remat_chunk!r}.")
        if length is None and num_steps % remat_chunk:
            length = num_steps  # the chunks' padding must leave the state alone
    valid = None
    if length is not None:
        length = _checks.lengths(length, (), num_steps, name="length")
        valid = _mask.valid(length, num_steps)
        xs = _mask.zero_padding(xs, valid)
    starts = None if resets is None else _mask.segment_starts(resets, reverse)
    # Checks the params and gives the projection's dtype without computing it.
    try:
        projected = jax.eval_shape(cell.project_inputs, params, xs)
    except ValueError:
        _check_width(params, xs)
        raise
    state = _check_initial_state(
        cell, initial_state, jnp.result_type(projected.dtype, *jax.tree_util.tree_leaves(params))
    )
    kernels = _fast.record(cell)
    if kernels is not None and not remat and remat_chunk is None:
        step_input = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
        jax.eval_shape(cell.step, params, state, step_input)  # the cell's checks and messages
        return _fast.scan_one(
            kernels, params, xs, state, valid, starts,
            reverse=reverse, planner=_planner(cell, kernels, unroll),
        )  # fmt: skip
    loop_unroll = _fast.default_unroll(jax.default_backend()) if unroll is None else unroll
    own_step = runs_own_step(cell)
    advance = cell.step if own_step else cell.recur
    advance = jax.checkpoint(advance) if remat else advance
    # One hoisted ``xs W_x + b`` for all steps (not for a cell run by its own ``step``); with
    # ``remat_chunk`` each checkpointed chunk projects its own steps, so neither the projection
    # nor its cotangent is O(T) in memory.
    project = (lambda x: x) if own_step else partial(cell.project_inputs, params)

    def body(carry, inputs):
        input_t, valid_t, reset_t = inputs
        entering = carry if reset_t is None else _mask.keep(reset_t, state, carry)
        new, y = advance(params, entering, input_t)
        return _mask.step(valid_t, new, carry, y)

    if remat_chunk is None:
        return _loop(
            body, state, (project(xs), valid, starts), reverse, loop_unroll, None, num_steps
        )
    padded = xs, valid, starts
    if num_steps % remat_chunk:
        pad = remat_chunk - num_steps % remat_chunk
        padded = jax.tree_util.tree_map(
            lambda a: jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)), padded
        )
    return _loop(
        body, state, padded, reverse, loop_unroll, remat_chunk, num_steps,
        lambda inputs: (project(inputs[0]), *inputs[1:]),
    )  # fmt: skip


def _check_width(params, xs) -> None:
    """Name ``xs`` (the cell names its one-step ``x``) when its width does not fit ``w_x``."""
    w_x = getattr(params, "w_x", None)
    if hasattr(w_x, "shape") and len(w_x.shape) == 2 and xs.shape[-1] != w_x.shape[0]:
        raise ValueError(
            f"xs must have shape (T, input_size={w_x.shape[0]}) to match params.w_x "
            f"{tuple(w_x.shape)}; got shape {tuple(xs.shape)}."
        ) from None


def _loop(body, carry, inputs, reverse, unroll, chunk, num_steps, prepare=None):
    """``lax.scan``, or with ``chunk`` a scan over checkpointed chunks of ``chunk`` steps.

    ``inputs`` already span a whole number of chunks (``scan`` pads them, masked); the outputs
    are cut back to ``num_steps``. ``prepare`` maps a chunk's inputs to the body's (inside the
    checkpoint, so it is recomputed in the backward pass instead of stored).
    """
    if chunk is None:
        return lax.scan(body, carry, inputs, reverse=reverse, unroll=unroll)
    num_chunks = jax.tree_util.tree_leaves(inputs)[0].shape[0] // chunk

    def split(a):
        return a.reshape(num_chunks, chunk, *a.shape[1:])

    @jax.checkpoint
    def chunk_body(carry, chunk_inputs):
        if prepare is not None:
            chunk_inputs = prepare(chunk_inputs)
        return lax.scan(body, carry, chunk_inputs, reverse=reverse, unroll=unroll)

    carry, ys = lax.scan(chunk_body, carry, jax.tree_util.tree_map(split, inputs), reverse=reverse)
    return carry, ys.reshape(num_chunks * chunk, *ys.shape[2:])[:num_steps]


def scan_batch(
    cell: Cell, params, x, initial_state, lengths, *, reverse, unroll, remat, remat_chunk,
    resets=None, plans=None,
):  # fmt: skip
    """``scan`` over a batch ``x [B, T, D]``: returns ``(final_state [B, ...], ys [B, T, H])``.

    Equal to ``jax.vmap(scan)`` with per-example ``initial_state`` leaves ``[B, ...]``,
    ``lengths [B]`` and ``resets [B, T]`` (or ``None``), and it raises the same errors. Built-in
    cells without remat run the fast path time-major on ``[T, B, ...]`` directly, so the
    derivative's hoisted matmuls see all ``T * B`` rows at once in the layout XLA:CPU's GEMM is
    fast with, planned for this batch size (``plans``: a ``(forward, derivative)`` pair of
    ``rnnjax._fast.Plan`` to force a path instead).
    """

    def one(xs, state, length, resets_one):
        return scan(
            cell, params, xs, initial_state=state, length=length, reverse=reverse,
            unroll=unroll, remat=remat, remat_chunk=remat_chunk, resets=resets_one,
        )  # fmt: skip

    if unroll is not None:
        unroll = _checks.unroll(unroll)  # None stays: the plan picks it
    if resets is not None:
        resets = _checks.resets(resets, x.shape[:2])
    batched = jax.vmap(one)
    kernels = _fast.record(_check_cell(cell))
    if remat or remat_chunk is not None or kernels is None:
        return batched(x, initial_state, lengths, resets)
    jax.eval_shape(batched, x, initial_state, lengths, resets)  # every check and message of scan
    xs = jnp.swapaxes(x, 0, 1)
    valid = None if lengths is None else _mask.valid(lengths, xs.shape[0])
    xs = _mask.zero_padding(xs, valid)
    starts = None if resets is None else _mask.segment_starts(jnp.swapaxes(resets, 0, 1), reverse)
    if plans is None:
        planner = _planner(cell, kernels, unroll)
        plans = planner(xs.shape[1], False), planner(xs.shape[1], True)
    final, ys = _fast.scan(
        kernels, params, xs, initial_state, valid, starts,
        reverse=reverse, forward=plans[0], derivative=plans[1],
    )  # fmt: skip
    return final, jnp.swapaxes(ys, 0, 1)
