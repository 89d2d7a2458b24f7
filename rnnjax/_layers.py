"""Batch-major layers: ``(init, apply, output_shape)`` triples in the stax spirit.

Layers take ``x [B, T, D]`` and optional ``lengths [B]``; recurrent layers run
``rnnjax._scan.scan_batch``, which equals ``rnnjax.scan`` under ``jax.vmap`` (and raises its
errors), so all sequence semantics (masking, reverse on the valid prefix, remat) come from one
place. ``init(key, input_shape)`` takes the per-example shape, without the batch axis.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax import _initializers as inits
from rnnjax._cells import Cell
from rnnjax._scan import _check_cell, scan_batch

MERGE_MODES = ("concat", "sum", "mean", "mul", None)


class Layer(NamedTuple):
    """A batch-major layer.

    Attributes:
      init: ``init(key, input_shape) -> params``; ``input_shape`` excludes the batch axis,
        e.g. ``(T, D)``.
      apply: ``apply(params, x, lengths=None, **options) -> y`` with ``x [B, ...]``.
      output_shape: ``output_shape(input_shape) -> shape`` of one example's output.
    """

    init: Callable[..., Any]
    apply: Callable[..., Any]
    output_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


class BidirectionalParams(NamedTuple):
    """Parameters of a bidirectional layer: one params pytree per direction."""

    forward: Any
    backward: Any


class DenseParams(NamedTuple):
    """Affine layer parameters: ``w [D, N]``, ``b [N]`` (``None`` without bias)."""

    w: jax.Array
    b: jax.Array | None


def _check_batch(x, lengths):
    x = _checks.floating_array(x, "x")
    _checks.rank(x, 3, "x", "(batch, T, input_size)")
    if lengths is not None:
        lengths = _checks.lengths(lengths, (x.shape[0],), x.shape[1])
    return x, lengths


def _run_cell(
    cell: Cell, params, x, lengths, initial_state, *, reverse, unroll, remat, remat_chunk=None
):
    """``scan`` over the batch (``scan_batch``): ``(final_state [B, ..], ys [B, T, H])``."""
    if initial_state is None:
        dtype = jnp.result_type(x, *jax.tree_util.tree_leaves(params))
        initial_state = cell.initial_state((x.shape[0],), dtype=dtype)
    return scan_batch(
        cell, params, x, initial_state, lengths,
        reverse=reverse, unroll=unroll, remat=remat, remat_chunk=remat_chunk,
    )  # fmt: skip


def _merge(forward: jax.Array, backward: jax.Array, merge):
    if merge == "concat":
        return jnp.concatenate([forward, backward], axis=-1)
    if merge == "sum":
        return forward + backward
    if merge == "mean":
        return (forward + backward) / 2
    if merge == "mul":
        return forward * backward
    return forward, backward


def _check_merge(merge):
    if merge not in MERGE_MODES:
        raise ValueError(f"merge must be one of {MERGE_MODES}; got {merge!r}.")


def _directions(cells: Sequence[Cell], merge, unroll, remat, remat_chunk=None):
    """Shared body of ``rnn``, ``bidirectional`` and ``stack``.

    Returns ``(init, run, width)`` with ``run(params, x, lengths, state, reverse) ->
    (ys, last, final_state)``; ``last`` merges the final hidden state of every direction.
    """
    cells = tuple(_check_cell(cell) for cell in cells)
    _checks.unroll(unroll)  # a bad value fails when the layer is built; None is decided per trace
    bidirectional_ = len(cells) == 2

    def init(key, input_shape):
        input_size = int(input_shape[-1])
        if not bidirectional_:
            return cells[0].init(key, input_size)
        key_f, key_b = jax.random.split(key)
        return BidirectionalParams(
            cells[0].init(key_f, input_size), cells[1].init(key_b, input_size)
        )

    def run(params, x, lengths, initial_state, reverse):
        if not bidirectional_:
            state, ys = _run_cell(
                cells[0], params, x, lengths, initial_state,
                reverse=reverse, unroll=unroll, remat=remat, remat_chunk=remat_chunk,
            )  # fmt: skip
            return ys, state.h, state
        if not isinstance(params, BidirectionalParams):
            raise TypeError(
                f"params of a bidirectional layer must be BidirectionalParams; "
                f"got {type(params).__name__}."
            )
        initial = (None, None) if initial_state is None else initial_state
        states, outputs = [], []
        for cell, p, s, rev in zip(cells, params, initial, (False, True), strict=True):
            state, ys = _run_cell(
                cell, p, x, lengths, s,
                reverse=rev, unroll=unroll, remat=remat, remat_chunk=remat_chunk,
            )  # fmt: skip
            states.append(state)
            outputs.append(ys)
        last = _merge(states[0].h, states[1].h, merge)
        return _merge(*outputs, merge), last, tuple(states)

    width = sum(cell.hidden_size for cell in cells) if merge == "concat" else cells[0].hidden_size
    return init, run, width


def _recurrent_layer(
    cells, merge, return_sequences, return_state, reverse, unroll, remat, remat_chunk=None
):
    init, run, width = _directions(cells, merge, unroll, remat, remat_chunk)

    def apply(params, x, lengths=None, *, initial_state=None):
        x, lengths = _check_batch(x, lengths)
        ys, last, state = run(params, x, lengths, initial_state, reverse)
        output = ys if return_sequences else last
        return (output, state) if return_state else output

    def output_shape(input_shape):
        return (*input_shape[:-1], width) if return_sequences else (width,)

    return Layer(init, apply, output_shape)


def rnn(
    cell: Cell,
    *,
    return_sequences: bool = False,
    return_state: bool = False,
    reverse: bool = False,
    unroll: int | bool | None = None,
    remat: bool = False,
    remat_chunk: int | None = None,
) -> Layer:
    """Run ``cell`` over a batch ``x [B, T, D]`` (equal to ``rnnjax.scan`` under ``jax.vmap``).

    ``apply(params, x, lengths=None, *, initial_state=None)`` returns the last valid hidden state
    ``[B, H]`` (or all outputs ``[B, T, H]`` with ``return_sequences``, zero past each length),
    and with ``return_state`` also the final state (leaves ``[B, H]``). ``reverse``, ``unroll``,
    ``remat`` and ``remat_chunk`` are ``rnnjax.scan``'s.

    >>> layer = rnnjax.rnn(rnnjax.gru(32), return_sequences=True)
    >>> params = layer.init(jax.random.key(0), input_shape=(20, 8))
    >>> ys = layer.apply(params, jnp.ones((4, 20, 8)), lengths=jnp.array([20, 5, 0, 11]))
    """
    return _recurrent_layer(
        (cell,), "concat", return_sequences, return_state, reverse, unroll, remat, remat_chunk
    )


def bidirectional(
    forward: Cell,
    backward: Cell | None = None,
    *,
    merge: str | None = "concat",
    return_sequences: bool = False,
    return_state: bool = False,
    unroll: int | bool | None = None,
    remat: bool = False,
) -> Layer:
    """Run ``forward`` left to right and ``backward`` right to left over each valid prefix.

    Params are :class:`BidirectionalParams` ``(forward, backward)``. Outputs are merged by
    ``merge`` ("concat" along features, "sum", "mean", "mul", or ``None`` for a pair); the
    non-sequence output merges the forward final state (after the last valid step) with the
    backward one (after step 0), as ``torch.nn.LSTM``'s ``h_n`` and Keras do. With
    ``return_state`` the state is ``(forward_state, backward_state)``. ``backward`` defaults to a
    cell like ``forward``. Padding never reaches the backward direction: on padded input it gives
    what it gives on the unpadded sequence.
    """
    _check_merge(merge)
    backward = forward if backward is None else backward
    return _recurrent_layer(
        (forward, backward), merge, return_sequences, return_state, False, unroll, remat
    )


def stack(
    layers: Sequence[Cell | tuple[Cell, Cell]],
    *,
    return_sequences: bool = False,
    return_state: bool = False,
    unroll: int | bool | None = None,
    remat: bool = False,
) -> Layer:
    """Multi-layer recurrent network: each element of ``layers`` is a cell (one direction) or a
    ``(forward, backward)`` pair (bidirectional, concatenated), like ``torch.nn.LSTM(num_layers)``.

    Layer ``k + 1`` reads layer ``k``'s output sequence, masked by the same ``lengths``. Params are
    a tuple with one entry per layer; with ``return_state`` the state is a tuple of each layer's
    final state. ``initial_state`` (optional) is such a tuple.
    """
    if not layers:
        raise ValueError("layers must name at least one cell; got an empty sequence.")
    runs = []
    for index, layer in enumerate(layers):
        cells = (layer,) if isinstance(layer, Cell) else tuple(layer)
        if len(cells) not in (1, 2):
            raise ValueError(
                f"layers[{index}] must be a cell or a (forward, backward) pair; "
                f"got {len(cells)} cells."
            )
        runs.append(_directions(cells, "concat", unroll, remat))

    def init(key, input_shape):
        params, shape = [], tuple(input_shape)
        for key_i, (init_i, _, width) in zip(jax.random.split(key, len(runs)), runs, strict=True):
            params.append(init_i(key_i, shape))
            shape = (*shape[:-1], width)
        return tuple(params)

    def apply(params, x, lengths=None, *, initial_state=None):
        x, lengths = _check_batch(x, lengths)
        if len(params) != len(runs):
            raise ValueError(
                f"params must hold one entry per layer ({len(runs)}); got {len(params)}."
            )
        initial = (None,) * len(runs) if initial_state is None else initial_state
        states, last = [], None
        for (_, run, _), p, s in zip(runs, params, initial, strict=True):
            x, last, state = run(p, x, lengths, s, False)
            states.append(state)
        output = x if return_sequences else last
        return (output, tuple(states)) if return_state else output

    def output_shape(input_shape):
        width = runs[-1][2]
        return (*input_shape[:-1], width) if return_sequences else (width,)

    return Layer(init, apply, output_shape)


def dense(
    features: int,
    activation: Callable[[jax.Array], jax.Array] | None = None,
    *,
    use_bias: bool = True,
    kernel_init: inits.Initializer = inits.glorot_uniform,
) -> Layer:
    """Affine map over the last axis, ``act(x w + b)``: ``[..., D] -> [..., features]``.

    Given ``lengths`` and a sequence input ``[B, T, D]``, outputs past each length are zero, as
    the recurrent layers' are.
    """
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"features must be a positive int; got {features!r}.")

    def init(key, input_shape):
        w = kernel_init(key, (int(input_shape[-1]), features), jnp.float32)
        return DenseParams(w, jnp.zeros((features,), jnp.float32) if use_bias else None)

    def apply(params, x, lengths=None):
        x = _checks.floating_array(x, "x")
        if x.ndim < 1 or x.shape[-1] != params.w.shape[0]:
            raise ValueError(
                f"x must have shape (..., {params.w.shape[0]}) to match params.w "
                f"{tuple(params.w.shape)}; got shape {tuple(x.shape)}."
            )
        y = x @ params.w
        if params.b is not None:
            y = y + params.b.reshape((1,) * (y.ndim - 1) + params.b.shape)
        if activation is not None:
            y = activation(y)
        if lengths is not None and x.ndim == 3:
            lengths = _checks.lengths(lengths, (x.shape[0],), x.shape[1])
            valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
            y = jnp.where(valid[..., None], y, jnp.zeros_like(y))
        return y

    def output_shape(input_shape):
        return (*input_shape[:-1], features)

    return Layer(init, apply, output_shape)


def serial(*layers: Layer) -> Layer:
    """Compose layers left to right; params are a tuple, ``lengths`` reaches every layer.

    >>> model = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(100)), rnnjax.dense(1, jax.nn.sigmoid))
    >>> params = model.init(jax.random.key(0), input_shape=(100, 1))
    >>> y = model.apply(params, jnp.ones((8, 100, 1)))     # (8, 1)
    """
    for index, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layers[{index}] must be an rnnjax Layer; got {type(layer).__name__}.")

    def init(key, input_shape):
        params, shape = [], tuple(input_shape)
        for key_i, layer in zip(jax.random.split(key, max(len(layers), 1)), layers, strict=False):
            params.append(layer.init(key_i, shape))
            shape = layer.output_shape(shape)
        return tuple(params)

    def apply(params, x, lengths=None):
        if len(params) != len(layers):
            raise ValueError(
                f"params must hold one entry per layer ({len(layers)}); got {len(params)}."
            )
        for layer, p in zip(layers, params, strict=True):
            x = layer.apply(p, x, lengths=lengths)
        return x

    def output_shape(input_shape):
        for layer in layers:
            input_shape = layer.output_shape(input_shape)
        return input_shape

    return Layer(init, apply, output_shape)
