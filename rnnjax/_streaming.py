"""Streaming inference: feed a recurrent model one chunk at a time, keeping its state between
calls, for one stream or many at once.

The state of every stream lives in a :class:`StreamState` pytree that the caller holds, so
:func:`feed` is a pure function (``jax.jit(functools.partial(feed, cells))`` compiles it once per
chunk shape). Feeding a sequence chunk by chunk gives what one run over the whole sequence gives:
the state after each chunk is the state after its last valid step (``lengths``), so streams may
advance by different amounts per call, or not at all (length 0).
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._cells import Cell
from rnnjax._layers import rnn


class StreamState(NamedTuple):
    """What :func:`feed` carries between calls.

    Attributes:
      states: one cell state per level (``LSTMState(h, c)``, ``RNNState(h)``), leaves
        ``[S, H]`` for ``S`` streams (``[H]`` for a single stream).
      steps: ``[S]`` (or ``[]``) int32, the valid steps each stream has consumed.
    """

    states: tuple
    steps: jax.Array


def _levels(cells) -> tuple[Cell, ...]:
    levels = (cells,) if isinstance(cells, Cell) else tuple(cells) if _is_seq(cells) else ()
    if not levels or not all(isinstance(cell, Cell) for cell in levels):
        raise TypeError(
            "cells must be an rnnjax Cell or a non-empty sequence of Cells (the levels of a "
            "one-directional rnnjax.stack; a bidirectional layer needs the whole sequence and "
            f"cannot stream); got {_describe(cells)}."
        )
    return levels


def _is_seq(value) -> bool:
    """A list or tuple, but not a NamedTuple (a Cell, a Layer, a params record)."""
    return isinstance(value, list | tuple) and not hasattr(value, "_fields")


def _describe(value) -> str:
    if _is_seq(value):
        return f"a {type(value).__name__} of {[type(v).__name__ for v in value]}"
    return type(value).__name__


def init_stream(
    cells: Cell | Sequence[Cell], num_streams: int | None = None, dtype=jnp.float32
) -> StreamState:
    """Zero states for ``num_streams`` streams (``None``: one stream without a stream axis).

    Args:
      cells: a Cell (params as ``rnnjax.rnn``'s) or the cells of a one-directional
        ``rnnjax.stack`` (params a tuple, one entry per level, as ``stack`` makes).
      num_streams: ``S``, or ``None`` for a single unbatched stream.
      dtype: the state's dtype.

    Returns:
      A :class:`StreamState` with zero cell states and zero step counts.

    Raises:
      TypeError: ``cells`` is not a Cell or a sequence of Cells.
      ValueError: ``num_streams`` is not a positive int or ``None``.

    >>> import jax.numpy as jnp, rnnjax
    >>> cell = rnnjax.gru(8)
    >>> stream = rnnjax.init_stream(cell, num_streams=4)
    >>> stream.states[0].h.shape
    (4, 8)
    """
    levels = _levels(cells)
    if num_streams is not None and (
        isinstance(num_streams, bool) or not isinstance(num_streams, int) or num_streams < 1
    ):
        raise ValueError(f"num_streams must be a positive int or None; got {num_streams!r}.")
    batch = () if num_streams is None else (num_streams,)
    states = tuple(cell.initial_state(batch, dtype=dtype) for cell in levels)
    return StreamState(states, jnp.zeros(batch, jnp.int32))


def feed(
    cells: Cell | Sequence[Cell],
    params: Any,
    stream: StreamState,
    chunk: jax.Array,
    lengths: jax.Array | None = None,
) -> tuple[StreamState, jax.Array]:
    """Run the next ``chunk`` of every stream from where the last call stopped.

    Args:
      cells: as given to :func:`init_stream`.
      params: the cell's params, or a tuple with one entry per level (``rnnjax.stack``'s).
      stream: the :class:`StreamState` from :func:`init_stream` or the previous ``feed``.
      chunk: ``[S, T, D]`` (``[T, D]`` for a single stream); ``T`` may change between calls.
      lengths: ``[S]`` (a scalar for a single stream) valid steps of each stream in this chunk,
        ``0 <= lengths <= T``; ``None`` means all ``T``. Steps past a stream's length leave its
        state unchanged and give zero outputs.

    Returns:
      ``(stream, outputs)``: the updated state and the top level's outputs ``[S, T, H]``
      (``[T, H]``), which equal the matching slice of one run over the whole sequence.

    Raises:
      TypeError, ValueError: bad ``cells``, ``stream``, ``params``, ``chunk`` or ``lengths``
        (messages name the argument and the shapes).

    >>> import functools, jax, jax.numpy as jnp, rnnjax
    >>> cell = rnnjax.lstm(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> step = jax.jit(functools.partial(rnnjax.feed, cell))
    >>> stream = rnnjax.init_stream(cell, num_streams=2)
    >>> stream, ys = step(params, stream, jnp.ones((2, 5, 3)))           # first 5 steps
    >>> stream, ys = step(params, stream, jnp.ones((2, 5, 3)), jnp.array([5, 2]))
    >>> stream.steps
    Array([10,  7], dtype=int32)
    """
    levels = _levels(cells)
    if not isinstance(stream, StreamState):
        raise TypeError(
            f"stream must be the StreamState from init_stream or feed; got {_describe(stream)}."
        )
    per_level = (params,) if isinstance(cells, Cell) else params
    if not _is_seq(per_level) or len(per_level) != len(levels) or len(stream.states) != len(levels):
        raise ValueError(
            f"params and stream.states must hold one entry per level ({len(levels)}); got "
            f"{_describe(per_level)} and {len(stream.states)} states."
        )
    single = jnp.ndim(stream.steps) == 0
    chunk = jnp.asarray(chunk)
    if chunk.ndim != (2 if single else 3):
        expected = "(T, input_size) for one stream" if single else "(S, T, input_size)"
        raise ValueError(f"chunk must have shape {expected}; got {tuple(chunk.shape)}.")
    x = chunk[None] if single else chunk
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        lengths = lengths[None] if single and lengths.ndim == 0 else lengths
    states = (
        jax.tree_util.tree_map(lambda leaf: leaf[None], stream.states) if single else stream.states
    )
    new_states = []
    for cell, p, state in zip(levels, per_level, states, strict=True):
        layer = rnn(cell, return_sequences=True, return_state=True)
        x, state = layer.apply(p, x, lengths, initial_state=state)
        new_states.append(state)
    advanced = jnp.full(x.shape[:1], x.shape[1], jnp.int32) if lengths is None else lengths
    steps = stream.steps + (advanced[0] if single else advanced).astype(jnp.int32)
    new_states = tuple(new_states)
    if single:
        return StreamState(jax.tree_util.tree_map(lambda leaf: leaf[0], new_states), steps), x[0]
    return StreamState(new_states, steps), x


def reset_streams(
    cells: Cell | Sequence[Cell], stream: StreamState, done: jax.Array
) -> StreamState:
    """Start the streams where ``done [S]`` is true afresh (zero state, zero steps), so a slot
    can take a new sequence while the others continue.

    >>> import jax.numpy as jnp, rnnjax
    >>> cell = rnnjax.gru(8)
    >>> stream = rnnjax.init_stream(cell, num_streams=3)
    >>> stream = rnnjax.reset_streams(cell, stream, jnp.array([False, True, False]))
    """
    levels = _levels(cells)
    done = jnp.asarray(done)
    if done.dtype != jnp.bool_ or done.shape != jnp.shape(stream.steps):
        raise ValueError(
            f"done must be a bool array of shape {jnp.shape(stream.steps)} (one per stream); got "
            f"{done.dtype} of shape {done.shape}."
        )
    fresh = init_stream(levels, None if done.ndim == 0 else done.shape[0])

    def pick(new, old):
        mask = done.reshape(done.shape + (1,) * (old.ndim - done.ndim))
        return jnp.where(mask, new.astype(old.dtype), old)

    return jax.tree_util.tree_map(pick, fresh, stream)
