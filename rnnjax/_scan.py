"""Run a cell over one sequence with ``jax.lax.scan``; BPTT is ``jax.grad`` through it."""

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax import _checks, _fused
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
) -> tuple[Any, jax.Array]:
    """Run ``cell`` over one sequence ``xs [T, D]``; returns ``(final_state, ys [T, H])``.

    The built-in cells (without ``remat``) take a fused path whose derivative is one custom JVP
    over the whole sequence (``rnnjax._fused``: less BPTT memory, the ``dW_h`` term as one matmul);
    other cells run ``cell.recur`` under ``lax.scan`` with the input projection ``xs W_x + b``
    hoisted out of the loop. Batches come from ``jax.vmap`` (or ``rnnjax.rnn``).

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
      unroll: steps per loop iteration, passed to ``lax.scan``; ``None`` picks the measured best
        for ``jax.default_backend()`` when traced: 8 on a GPU (kernel launches dominate a step
        there), 1 on CPU and elsewhere, except 4 in the reset-after GRU's partitioned forward on
        CPU when it is not differentiated (``rnnjax._partitioned``). Pass an int to choose it
        yourself.
      remat: wrap the step in ``jax.checkpoint``: BPTT stores only the carries and recomputes
        the gates, trading compute for memory.
      remat_chunk: checkpoint the loop in chunks of this many steps: BPTT keeps one carry per
        chunk plus one chunk's internals and recomputes each chunk's forward, so memory is
        ``O(T / k + k)`` (``k ~ sqrt(T)`` is the classic choice for very long sequences).
        Combines with ``remat``; ``T`` need not be a multiple of ``k``.

    Returns:
      ``(final_state, ys)`` with ``ys [T, H]``.

    Raises:
      TypeError: ``cell`` is not a Cell, ``xs`` or ``length`` has the wrong dtype.
      ValueError: ``xs`` is not ``[T, input_size]``, ``length`` is not a scalar in ``[0, T]``,
        or ``initial_state`` does not have the cell's shape.

    >>> cell = rnnjax.lstm(16)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> final_state, ys = rnnjax.scan(cell, params, jnp.ones((10, 4)), length=7)
    """
    _check_cell(cell)
    loop_unroll = _checks.unroll(unroll)
    fused_unroll = None if unroll is None else loop_unroll  # None: the fused path's defaults
    xs = _checks.floating_array(xs, "xs")
    _checks.rank(xs, 2, "xs", "(T, input_size) for one sequence; batch with jax.vmap or rnnjax.rnn")
    num_steps = xs.shape[0]
    if remat_chunk is not None:
        if not isinstance(remat_chunk, int) or isinstance(remat_chunk, bool) or remat_chunk < 1:
            raise ValueError(f"remat_chunk must be a positive int or None; got {remat_chunk!r}.")
        if length is None and num_steps % remat_chunk:
            length = num_steps  # the chunks' padding must leave the state alone
    if length is not None:
        length = _checks.lengths(length, (), num_steps, name="length")
        steps = jnp.arange(num_steps)
        # Zero the padding so NaN/inf there cannot leak into gradients (0 * NaN is NaN).
        xs = jnp.where((steps < length)[:, None], xs, jnp.zeros_like(xs))
        if remat_chunk is not None and num_steps % remat_chunk:
            pad = remat_chunk - num_steps % remat_chunk
            xs = jnp.pad(xs, ((0, pad), (0, 0)))
            steps = jnp.arange(num_steps + pad)
    fast = not remat and remat_chunk is None and _fused.fast_kind(cell) is not None
    # The fast path projects inside its loop; here it only needs the projection's dtype.
    # Checks the params and gives the projection's dtype without computing it.
    projected = jax.eval_shape(cell.project_inputs, params, xs)
    state = _check_initial_state(
        cell, initial_state, jnp.result_type(projected.dtype, *jax.tree_util.tree_leaves(params))
    )
    if fast:
        step_input = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
        jax.eval_shape(cell.step, params, state, step_input)  # the cell's checks and messages
        valid = None if length is None else steps < length
        return _fused.scan(cell, params, xs, state, valid, reverse=reverse, unroll=fused_unroll)
    recur = jax.checkpoint(cell.recur) if remat else cell.recur
    # One hoisted ``xs W_x + b`` for all steps; with ``remat_chunk`` each checkpointed chunk
    # projects its own steps, so neither the projection nor its cotangent is O(T) in memory.
    project = partial(cell.project_inputs, params)

    if length is None:

        def body(carry, projected_t):
            return recur(params, carry, projected_t)

        if remat_chunk is None:
            return _loop(body, state, project(xs), reverse, loop_unroll, None, num_steps)
        return _loop(body, state, xs, reverse, loop_unroll, remat_chunk, num_steps, project)

    def masked_body(carry, inputs):
        t, projected_t = inputs
        valid = t < length
        new_carry, y = recur(params, carry, projected_t)
        new_carry = jax.tree_util.tree_map(
            lambda new, old: jnp.where(valid, new, old), new_carry, carry
        )
        return new_carry, jnp.where(valid, y, jnp.zeros_like(y))

    if remat_chunk is None:
        return _loop(
            masked_body, state, (steps, project(xs)), reverse, loop_unroll, None, num_steps
        )
    return _loop(
        masked_body, state, (steps, xs), reverse, loop_unroll, remat_chunk, num_steps,
        lambda inputs: (inputs[0], project(inputs[1])),
    )  # fmt: skip


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
    cell: Cell, params, x, initial_state, lengths, *, reverse, unroll, remat, remat_chunk
):
    """``scan`` over a batch ``x [B, T, D]``: returns ``(final_state [B, ...], ys [B, T, H])``.

    Equal to ``jax.vmap(scan)`` with per-example ``initial_state`` leaves ``[B, ...]`` and
    ``lengths [B]`` (or ``None``), and it raises the same errors. Built-in cells without remat run
    the fused path time-major on ``[T, B, ...]`` directly, so the derivative's hoisted matmuls see
    all ``T * B`` rows at once in the layout XLA:CPU's GEMM is fast with (``vmap`` would put the
    batch dim where XLA chooses a slow, transposing form).
    """

    def one(xs, state, length):
        return scan(
            cell, params, xs, initial_state=state, length=length,
            reverse=reverse, unroll=unroll, remat=remat, remat_chunk=remat_chunk,
        )  # fmt: skip

    if unroll is not None:
        unroll = _checks.unroll(unroll)  # None stays: each path picks its own default
    batched = jax.vmap(one)
    if remat or remat_chunk is not None or _fused.fast_kind(_check_cell(cell)) is None:
        return batched(x, initial_state, lengths)
    jax.eval_shape(batched, x, initial_state, lengths)  # every check and message of ``scan``
    xs = jnp.swapaxes(x, 0, 1)
    valid = None
    if lengths is not None:
        valid = jnp.arange(xs.shape[0])[:, None] < lengths[None, :]
        # Zero the padding so NaN/inf there cannot leak into gradients (0 * NaN is NaN).
        xs = jnp.where(valid[..., None], xs, jnp.zeros_like(xs))
    final, ys = _fused.scan(cell, params, xs, initial_state, valid, reverse=reverse, unroll=unroll)
    return final, jnp.swapaxes(ys, 0, 1)
