"""Batch-major layers: ``(init, apply, output_shape)`` triples in the stax spirit.

Layers take ``x [B, T, D]`` and optional ``lengths [B]``; recurrent layers run
``rnnjax._scan.scan_batch``, which equals ``rnnjax.scan`` under ``jax.vmap`` (and raises its
errors), so all sequence semantics (masking, reverse on the valid prefix, remat) come from one
place. ``init(key, input_shape)`` takes the per-example shape, without the batch axis.
"""

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks
from rnnjax import _initializers as inits
from rnnjax._cells import Cell
from rnnjax._scan import _check_cell, scan_batch

MERGE_MODES = ("concat", "sum", "mean", "mul", None)


def _freeze(value):
    """Lists as tuples, recursively (``stack``'s layers), so equal arguments hash alike."""
    plain = isinstance(value, list) or type(value) is tuple  # not a NamedTuple such as a Cell
    return tuple(_freeze(v) for v in value) if plain else value


def _cached(builder):
    """Equal (hashable) arguments give the very same :class:`Layer`: layers built from equal
    configurations are equal and hash alike, so one can be a static argument of ``jax.jit`` and
    re-creating it does not retrace. Unhashable arguments build a fresh layer."""
    cache = functools.lru_cache(maxsize=256)(builder)

    @functools.wraps(builder)
    def build(*args, **kwargs):
        args = tuple(_freeze(a) if isinstance(a, list) else a for a in args)
        try:
            hash((args, tuple(sorted(kwargs.items()))))
        except TypeError:
            return builder(*args, **kwargs)
        return cache(*args, **kwargs)

    return build


class Layer(NamedTuple):
    """A batch-major layer.

    Attributes:
      init: ``init(key, input_shape) -> params``; ``input_shape`` excludes the batch axis,
        e.g. ``(T, D)``.
      apply: ``apply(params, x, lengths=None, **options) -> y`` with ``x [B, ...]``.
      output_shape: ``output_shape(input_shape) -> shape`` of one example's output; a pair of
        shapes for a layer that returns a pair (``bidirectional(..., merge=None)``).
    """

    init: Callable[..., Any]
    apply: Callable[..., Any]
    output_shape: Callable[[tuple[int, ...]], Any]


class BidirectionalParams(NamedTuple):
    """Parameters of a bidirectional layer: one params pytree per direction."""

    forward: Any
    backward: Any


class DenseParams(NamedTuple):
    """Affine layer parameters: ``w [D, N]``, ``b [N]`` (``None`` without bias)."""

    w: jax.Array
    b: jax.Array | None


def _is_pair_of_arrays(x) -> bool:
    return isinstance(x, tuple | list) and bool(x) and all(hasattr(a, "shape") for a in x)


def _check_one_array(x, name: str, layout: str) -> jax.Array:
    """Reject a tuple of arrays, which ``jnp.asarray`` would silently stack into one array."""
    if _is_pair_of_arrays(x):
        raise TypeError(
            f"{name} must be one array {layout}; got a {type(x).__name__} of {len(x)} arrays with "
            f"shapes {tuple(tuple(a.shape) for a in x)}. bidirectional(..., merge=None) returns "
            f"such a (forward, backward) pair: give it merge='concat', 'sum', 'mean' or 'mul'."
        )
    return _checks.floating_array(x, name)


def _check_input_shape(input_shape) -> int:
    """The feature size ``input_shape[-1]`` (other dims, such as ``T``, may be ``None``)."""
    shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else ()
    if not shape or not isinstance(shape[-1], int | np.integer):
        raise ValueError(
            f"input_shape must be one example's shape, a tuple such as (T, input_size) ending in "
            f"the feature size; got {input_shape!r}. A pair of shapes is the output_shape of "
            f"bidirectional(..., merge=None), whose output is a (forward, backward) pair: give it "
            f"merge='concat', 'sum', 'mean' or 'mul' to feed this layer."
        )
    return int(shape[-1])


def _is_sequence(value) -> bool:
    """A tuple or list, but not a NamedTuple such as a cell state (``LSTMState(h, c)``)."""
    return isinstance(value, list) or (isinstance(value, tuple) and not hasattr(value, "_fields"))


def _describe(value) -> str:
    if _is_sequence(value):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"{type(value).__name__}"


def _check_batched_state(cell: Cell, initial_state, batch: int, dtype, name: str):
    """Check ``initial_state`` against ``cell.initial_state((batch,))``, before ``vmap`` sees it."""
    expected = jax.eval_shape(lambda: cell.initial_state((batch,), dtype=dtype))
    want = tuple(tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(expected))
    structure = jax.tree_util.tree_structure(expected)
    if jax.tree_util.tree_structure(initial_state) != structure:
        raise ValueError(
            f"{name} must have the structure of cell.initial_state(({batch},)) "
            f"({type(expected).__name__} with leaves of shapes {want}); "
            f"got {_describe(initial_state)}."
        )
    got = tuple(tuple(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(initial_state))
    if got != want:
        raise ValueError(
            f"{name} leaves must have shapes {want} (batch {batch} from x, as "
            f"cell.initial_state(({batch},)) gives); got {got}."
        )


def _check_batch(x, lengths):
    x = _check_one_array(x, "x", "[batch, T, input_size]")
    _checks.rank(x, 3, "x", "(batch, T, input_size)")
    if lengths is not None:
        lengths = _checks.lengths(lengths, (x.shape[0],), x.shape[1])
    return x, lengths


def _run_cell(
    cell: Cell, params, x, lengths, initial_state, name, *, reverse, unroll, remat,
    remat_chunk=None, resets=None,
):  # fmt: skip
    """``scan`` over the batch (``scan_batch``): ``(final_state [B, ..], ys [B, T, H])``.

    ``name`` is how the user spells ``initial_state`` in messages (``initial_state[1][0]``).
    """
    dtype = jnp.result_type(x, *jax.tree_util.tree_leaves(params))
    if initial_state is None:
        initial_state = cell.initial_state((x.shape[0],), dtype=dtype)
    else:
        _check_batched_state(cell, initial_state, x.shape[0], dtype, name)
    return scan_batch(
        cell, params, x, initial_state, lengths,
        reverse=reverse, unroll=unroll, remat=remat, remat_chunk=remat_chunk, resets=resets,
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

    Returns ``(init, run, width)`` with ``run(params, x, lengths, state, reverse, name,
    resets) -> (ys, last, final_state)``; ``last`` merges the final hidden state of every
    direction, ``name`` spells ``state`` in messages. ``width`` is the output's last dim, a pair
    with ``merge=None``.
    """
    cells = tuple(_check_cell(cell) for cell in cells)
    _checks.unroll(unroll)  # a bad value fails when the layer is built; None is decided per trace
    bidirectional_ = len(cells) == 2

    def init(key, input_shape):
        input_size = _check_input_shape(input_shape)
        if not bidirectional_:
            return cells[0].init(key, input_size)
        key_f, key_b = jax.random.split(key)
        return BidirectionalParams(
            cells[0].init(key_f, input_size), cells[1].init(key_b, input_size)
        )

    def run(params, x, lengths, initial_state, reverse, name="initial_state", resets=None):
        if not bidirectional_:
            state, ys = _run_cell(
                cells[0], params, x, lengths, initial_state, name,
                reverse=reverse, unroll=unroll, remat=remat, remat_chunk=remat_chunk,
                resets=resets,
            )  # fmt: skip
            return ys, state.h, state
        if not isinstance(params, BidirectionalParams):
            raise TypeError(
                f"params of a bidirectional layer must be BidirectionalParams; "
                f"got {type(params).__name__}."
            )
        if initial_state is not None and not (
            _is_sequence(initial_state) and len(initial_state) == 2
        ):
            raise ValueError(
                f"{name} of a bidirectional layer must be a pair (forward_state, backward_state), "
                f"each with leaves [batch, H] (or None for zeros); got {_describe(initial_state)}."
            )
        initial = (None, None) if initial_state is None else initial_state
        states, outputs = [], []
        for index, (cell, p, s, rev) in enumerate(
            zip(cells, params, initial, (False, True), strict=True)
        ):
            state, ys = _run_cell(
                cell, p, x, lengths, s, f"{name}[{index}]",
                reverse=rev, unroll=unroll, remat=remat, remat_chunk=remat_chunk, resets=resets,
            )  # fmt: skip
            states.append(state)
            outputs.append(ys)
        last = _merge(states[0].h, states[1].h, merge)
        return _merge(*outputs, merge), last, tuple(states)

    if merge == "concat":
        width = sum(cell.hidden_size for cell in cells)
    elif merge is None and bidirectional_:
        width = tuple(cell.hidden_size for cell in cells)
    else:
        width = cells[0].hidden_size
    return init, run, width


def _recurrent_layer(
    cells, merge, return_sequences, return_state, reverse, unroll, remat, remat_chunk=None
):
    init, run, width = _directions(cells, merge, unroll, remat, remat_chunk)

    def apply(params, x, lengths=None, *, initial_state=None, resets=None):
        x, lengths = _check_batch(x, lengths)
        ys, last, state = run(params, x, lengths, initial_state, reverse, resets=resets)
        output = ys if return_sequences else last
        return (output, state) if return_state else output

    def output_shape(input_shape):
        def one(size):
            return (*input_shape[:-1], size) if return_sequences else (size,)

        return tuple(one(size) for size in width) if isinstance(width, tuple) else one(width)

    return Layer(init, apply, output_shape)


@_cached
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
    ``remat`` and ``remat_chunk`` are ``rnnjax.scan``'s, and so is ``apply``'s ``resets=[B, T]``
    (bool: a new segment starts at ``t``, its state the initial one).

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> layer = rnnjax.rnn(rnnjax.gru(32), return_sequences=True)
    >>> params = layer.init(jax.random.key(0), input_shape=(20, 8))
    >>> ys = layer.apply(params, jnp.ones((4, 20, 8)), lengths=jnp.array([20, 5, 0, 11]))
    """
    return _recurrent_layer(
        (cell,), "concat", return_sequences, return_state, reverse, unroll, remat, remat_chunk
    )


@_cached
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
    ``merge`` ("concat" along features, "sum", "mean", "mul", or ``None`` for a pair, whose
    ``output_shape`` is then the pair of the two outputs' shapes); the
    non-sequence output merges the forward final state (after the last valid step) with the
    backward one (after step 0), as ``torch.nn.LSTM``'s ``h_n`` and Keras do. With
    ``return_state`` the state is ``(forward_state, backward_state)``, and ``initial_state`` must be
    such a pair (leaves ``[B, H]``; either may be ``None`` for zeros). ``backward`` defaults to a
    cell like ``forward``. Padding never reaches the backward direction: on padded input it gives
    what it gives on the unpadded sequence. ``apply``'s ``resets=[B, T]`` (``rnnjax.scan``'s)
    split both directions into the same segments. ``merge`` ``"sum"``, ``"mean"`` and ``"mul"``
    need both cells' ``hidden_size`` equal (a ``ValueError`` otherwise, when built).
    """
    _check_merge(merge)
    backward = forward if backward is None else backward
    sizes = tuple(getattr(cell, "hidden_size", None) for cell in (forward, backward))
    if merge in ("sum", "mean", "mul") and sizes[0] != sizes[1]:
        raise ValueError(
            f"merge={merge!r} adds or multiplies the two directions elementwise, so both cells "
            f"need the same hidden_size; got forward {sizes[0]} and backward {sizes[1]}. Use "
            f"merge='concat' (width {sizes[0]} + {sizes[1]}) or merge=None for a pair."
        )
    return _recurrent_layer(
        (forward, backward), merge, return_sequences, return_state, False, unroll, remat
    )


def _inverted_dropout(key, index: int, x: jax.Array, rate: float) -> jax.Array:
    """Zero each entry of ``x`` with probability ``rate``, scale the rest by ``1 / (1 - rate)``,
    with ``key`` folded with ``index`` (``stack``'s dropout before layer ``index``;
    ``rnnjax.train.dropout`` is the same for users)."""
    _checks.prng_key(key)
    keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x))


@_cached
def stack(
    layers: Sequence[Cell | tuple[Cell, Cell]],
    *,
    return_sequences: bool = False,
    return_state: bool = False,
    unroll: int | bool | None = None,
    remat: bool = False,
    dropout: float = 0.0,
) -> Layer:
    """Multi-layer recurrent network: each element of ``layers`` is a cell (one direction) or a
    ``(forward, backward)`` pair (bidirectional, concatenated), like ``torch.nn.LSTM(num_layers)``.

    Layer ``k + 1`` reads layer ``k``'s output sequence, masked by the same ``lengths``. Params are
    a tuple with one entry per layer; with ``return_state`` the state is a tuple of each layer's
    final state. ``initial_state`` (optional) is such a tuple; ``resets=[B, T]``
    (``rnnjax.scan``'s) reach every layer.

    ``dropout`` is ``torch.nn.LSTM(dropout=)``: inverted dropout of rate ``dropout`` on every
    layer's output sequence but the last's (each entry of ``[B, T, H]`` kept with probability
    ``1 - dropout`` and scaled by ``1 / (1 - dropout)``). It is active only when ``apply`` gets a
    PRNG ``key`` (``apply(params, x, lengths, *, initial_state=None, key=None)``); without one
    (evaluation) the layer is deterministic.

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> layer = rnnjax.stack([rnnjax.lstm(16), rnnjax.lstm(16)], dropout=0.2)
    >>> params = layer.init(jax.random.key(0), (10, 3))
    >>> train_h = layer.apply(params, jnp.ones((4, 10, 3)), key=jax.random.key(1))
    >>> eval_h = layer.apply(params, jnp.ones((4, 10, 3)))        # no key: no dropout
    """
    if not layers:
        raise ValueError("layers must name at least one cell; got an empty sequence.")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a float in [0, 1); got {dropout!r}.")
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

    def apply(params, x, lengths=None, *, initial_state=None, key=None, resets=None):
        x, lengths = _check_batch(x, lengths)
        if len(params) != len(runs):
            raise ValueError(
                f"params must hold one entry per layer ({len(runs)}); got {len(params)}."
            )
        if initial_state is not None and not (
            _is_sequence(initial_state) and len(initial_state) == len(runs)
        ):
            raise ValueError(
                f"initial_state must be a tuple with one state per layer ({len(runs)}; None for "
                f"zeros); got {_describe(initial_state)}."
            )
        initial = (None,) * len(runs) if initial_state is None else initial_state
        states, last = [], None
        for index, ((_, run, _), p, s) in enumerate(zip(runs, params, initial, strict=True)):
            if index and key is not None and dropout:
                x = _inverted_dropout(key, index, x, dropout)
            x, last, state = run(p, x, lengths, s, False, f"initial_state[{index}]", resets)
            states.append(state)
        output = x if return_sequences else last
        return (output, tuple(states)) if return_state else output

    def output_shape(input_shape):
        width = runs[-1][2]
        return (*input_shape[:-1], width) if return_sequences else (width,)

    return Layer(init, apply, output_shape)


@_cached
def dense(
    features: int,
    activation: Callable[[jax.Array], jax.Array] | None = None,
    *,
    use_bias: bool = True,
    kernel_init: inits.Initializer = inits.glorot_uniform,
) -> Layer:
    """Affine map over the last axis, ``act(x w + b)``: ``[..., D] -> [..., features]``.

    Given ``lengths`` and a sequence input ``[B, T, D]``, outputs past each length are zero, as
    the recurrent layers' are. It takes one array, not a pair such as
    ``bidirectional(..., merge=None)`` returns: ``init`` raises ``ValueError`` on a pair of input
    shapes and ``apply`` raises ``TypeError`` on a pair of arrays.
    """
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"features must be a positive int; got {features!r}.")
    _checks.callable_or_none(activation, "activation", "jax.nn.relu")

    def init(key, input_shape):
        w = kernel_init(key, (_check_input_shape(input_shape), features), jnp.float32)
        return DenseParams(w, jnp.zeros((features,), jnp.float32) if use_bias else None)

    def apply(params, x, lengths=None):
        x = _check_one_array(x, "x", f"[..., {params.w.shape[0]}]")
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


def _takes_key(apply) -> bool:
    try:
        return "key" in inspect.signature(apply).parameters
    except (TypeError, ValueError):  # a callable without a signature: never given a key
        return False


@_cached
def serial(*layers: Layer) -> Layer:
    """Compose layers left to right; params are a tuple, ``lengths`` reaches every layer.

    ``apply(params, x, lengths=None, *, key=None)``: a PRNG ``key`` reaches each layer whose
    ``apply`` takes one (``stack(..., dropout=)``) as ``jax.random.fold_in(key, index)``;
    without one, no layer drops anything.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> model = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(100)), rnnjax.dense(1, jax.nn.sigmoid))
    >>> params = model.init(jax.random.key(0), input_shape=(100, 1))
    >>> y = model.apply(params, jnp.ones((8, 100, 1)))     # (8, 1)
    """
    for index, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layers[{index}] must be an rnnjax Layer; got {type(layer).__name__}.")
    takes_key = tuple(_takes_key(layer.apply) for layer in layers)

    def init(key, input_shape):
        params, shape = [], tuple(input_shape)
        keys = jax.random.split(key, max(len(layers), 1))
        for index, (key_i, layer) in enumerate(zip(keys, layers, strict=False)):
            try:
                params.append(layer.init(key_i, shape))
            except (TypeError, ValueError) as error:
                if index:
                    error.add_note(
                        f"In serial: layers[{index}].init got input_shape {shape!r}, "
                        f"layers[{index - 1}].output_shape."
                    )
                raise
            shape = layer.output_shape(shape)
        return tuple(params)

    def apply(params, x, lengths=None, *, key=None):
        if len(params) != len(layers):
            raise ValueError(
                f"params must hold one entry per layer ({len(layers)}); got {len(params)}."
            )
        if key is not None:
            _checks.prng_key(key)
        for index, (layer, p) in enumerate(zip(layers, params, strict=True)):
            if key is not None and takes_key[index]:
                x = layer.apply(p, x, lengths=lengths, key=jax.random.fold_in(key, index))
            else:
                x = layer.apply(p, x, lengths=lengths)
        return x

    def output_shape(input_shape):
        for layer in layers:
            input_shape = layer.output_shape(input_shape)
        return input_shape

    return Layer(init, apply, output_shape)
