"""Streaming (``init_stream`` / ``feed`` / ``reset_streams``): a sequence fed chunk by chunk, with
ragged per-stream lengths, equals one run of ``rnnjax.rnn`` / ``rnnjax.stack`` over the whole."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax._streaming import StreamState, feed, init_stream, reset_streams
from tests.tolerances import assert_close

D, T = 3, 14
CELLS = {
    "lstm": lambda: rnnjax.lstm(5),
    "gru": lambda: rnnjax.gru(5),
    "gru_reset_after": lambda: rnnjax.gru(5, reset_after=True),
    "simple_rnn": lambda: rnnjax.simple_rnn(5),
    "stack": lambda: [rnnjax.lstm(4), rnnjax.gru(3, reset_after=True)],
}


def _full_model(cells):
    if isinstance(cells, rnnjax.Cell):
        return rnnjax.rnn(cells, return_sequences=True, return_state=True)
    return rnnjax.stack(cells, return_sequences=True, return_state=True)


def _chunks(rng, lengths):
    """Per call: ``(chunk [S, T_c, D], lengths_c [S])``, ragged: each stream takes a random
    number of its remaining steps per call, the rest of the chunk is junk padding."""
    consumed = np.zeros_like(lengths)
    calls = []
    while (consumed < lengths).any():
        size = int(rng.integers(1, 6))
        take = np.minimum(rng.integers(0, size + 1, size=lengths.shape), lengths - consumed)
        calls.append((consumed.copy(), size, take))
        consumed += take
    return calls


@pytest.mark.parametrize("name", sorted(CELLS))
def test_feeding_chunks_equals_the_full_run(name):
    cells = CELLS[name]()
    model = _full_model(cells)
    params = model.init(jax.random.key(0), (T, D))
    rng = np.random.default_rng(len(name))
    lengths = np.array([T, 9, 0, 4])
    x = rng.normal(size=(4, T, D)).astype(np.float32)
    expected_ys, expected_state = model.apply(params, jnp.asarray(x), jnp.asarray(lengths))
    expected_ys = np.asarray(expected_ys)

    step = jax.jit(functools.partial(feed, cells))
    stream = init_stream(cells, num_streams=4)
    outputs = np.zeros_like(expected_ys)
    for start, size, take in _chunks(rng, lengths):
        chunk = rng.normal(size=(4, size, D)).astype(np.float32)  # junk past each take
        for s in range(4):
            chunk[s, : take[s]] = x[s, start[s] : start[s] + take[s]]
        stream, ys = step(params, stream, chunk, jnp.asarray(take))
        ys = np.asarray(ys)
        for s in range(4):
            outputs[s, start[s] : start[s] + take[s]] = ys[s, : take[s]]
            assert not ys[s, take[s] :].any()
    np.testing.assert_array_equal(stream.steps, lengths)
    assert_close(outputs, expected_ys, scale=10.0)
    expected_states = (expected_state,) if isinstance(cells, rnnjax.Cell) else expected_state
    for got, want in zip(
        jax.tree_util.tree_leaves(stream.states),
        jax.tree_util.tree_leaves(expected_states),
        strict=True,
    ):
        assert_close(got, want, scale=10.0)


def test_single_stream_without_lengths():
    cell = rnnjax.lstm(6)
    params = cell.init(jax.random.key(1), D)
    x = jax.random.normal(jax.random.key(2), (T, D))
    final, expected = rnnjax.scan(cell, params, x)
    stream = init_stream(cell)
    assert stream.states[0].h.shape == (6,) and stream.steps.shape == ()
    stream, first = feed(cell, params, stream, x[:5])
    stream, second = feed(cell, params, stream, x[5:])
    assert_close(jnp.concatenate([first, second]), expected, scale=10.0)
    assert_close(stream.states[0].c, final.c, scale=10.0)
    assert int(stream.steps) == T
    stream, _ = feed(cell, params, init_stream(cell), x[:5], 3)
    assert int(stream.steps) == 3


def test_reset_streams_starts_one_slot_afresh():
    cell = rnnjax.gru(4)
    params = cell.init(jax.random.key(0), D)
    x = jax.random.normal(jax.random.key(3), (2, 6, D))
    stream, _ = feed(cell, params, init_stream(cell, 2), x)
    stream = reset_streams(cell, stream, jnp.array([True, False]))
    assert not np.asarray(stream.states[0].h[0]).any() and np.asarray(stream.states[0].h[1]).any()
    np.testing.assert_array_equal(stream.steps, [0, 6])
    stream, ys = feed(cell, params, stream, x)
    _, fresh = feed(cell, params, init_stream(cell, 2), x)
    assert_close(ys[0], fresh[0])


def test_errors():
    cell = rnnjax.lstm(4)
    params = cell.init(jax.random.key(0), D)
    stream = init_stream(cell, 2)
    with pytest.raises(TypeError, match="cells must be an rnnjax Cell .*got Layer"):
        init_stream(rnnjax.bidirectional(cell))
    with pytest.raises(ValueError, match="num_streams must be a positive int or None; got 0"):
        init_stream(cell, 0)
    with pytest.raises(TypeError, match="stream must be the StreamState .*got a tuple"):
        feed(cell, params, tuple(stream), jnp.ones((2, 3, D)))
    with pytest.raises(
        ValueError, match=r"chunk must have shape \(S, T, input_size\); got \(3, 3\)"
    ):
        feed(cell, params, stream, jnp.ones((3, D)))
    with pytest.raises(ValueError, match=r"one entry per level \(2\)"):
        feed([cell, cell], params, init_stream([cell, cell], 2), jnp.ones((2, 3, D)))
    with pytest.raises(ValueError, match="lengths"):
        feed(cell, params, stream, jnp.ones((2, 3, D)), jnp.array([4, 1]))
    with pytest.raises(ValueError, match=r"done must be a bool array of shape \(2,\)"):
        reset_streams(cell, stream, jnp.array([1, 0]))
    assert isinstance(stream, StreamState)
