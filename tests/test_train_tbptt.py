"""Truncated BPTT: forward values equal full BPTT; gradients equal the truncated reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import train
from tests.tolerances import assert_close

B, T, K, D, H = 2, 12, 4, 2, 5
LAYER = rnnjax.rnn(rnnjax.lstm(H), return_sequences=True, return_state=True)
HEAD = rnnjax.dense(1)


def _params():
    return (LAYER.init(jax.random.key(0), (K, D)), HEAD.init(jax.random.key(1), (H,)))


def _data():
    x = jax.random.normal(jax.random.key(2), (B, T, D))
    y = jnp.sin(jnp.cumsum(x[..., :1], axis=1))
    return x, y


def chunk_loss(params, state, chunk, key=None):
    x, y = chunk
    ys, state = LAYER.apply(params[0], x, initial_state=state)
    return train.mean_squared_error(HEAD.apply(params[1], ys), y, reduction="sum"), state


def _state0():
    return rnnjax.lstm(H).initial_state((B,))


def test_time_chunks_and_errors():
    x = jnp.arange(2 * 6).reshape(2, 6)
    chunks = train.time_chunks({"x": x}, 3)["x"]
    assert chunks.shape == (2, 2, 3)
    np.testing.assert_array_equal(chunks[1], x[:, 3:])
    with pytest.raises(ValueError, match="chunk_length=4 must divide the time axis 1 of length 6"):
        train.time_chunks(x, 4)
    with pytest.raises(ValueError, match="chunk_length must be a positive int; got 0"):
        train.time_chunks(x, 0)
    # Negative axes count from the end, as in NumPy.
    np.testing.assert_array_equal(train.time_chunks(x, 3, axis=-1), chunks)
    with pytest.raises(ValueError, match=r"axis=2 is out of range for an array of shape \(2, 6\)"):
        train.time_chunks(x, 3, axis=2)


def test_forward_equals_full_bptt(x64):
    params, (x, y) = _params(), _data()
    full_loss, full_state = chunk_loss(params, _state0(), (x, y))
    total, (losses, state) = train.tbptt_loss(
        chunk_loss, params, _state0(), train.time_chunks((x, y), K)
    )
    assert losses.shape == (T // K,)
    assert_close(total, full_loss, scale=10)
    assert_close(state.h, full_state.h, scale=10)
    assert_close(state.c, full_state.c, scale=10)


def test_gradients_equal_truncated_reference_not_full_bptt(x64):
    params, (x, y) = _params(), _data()
    chunks = train.time_chunks((x, y), K)
    grads, _ = jax.grad(train.tbptt_loss, argnums=1, has_aux=True)(
        chunk_loss, params, _state0(), chunks
    )
    # Reference: each chunk's gradient with its incoming state an input held constant, summed.
    chunk_grad = jax.jit(jax.grad(lambda p, s, c: chunk_loss(p, s, c)[0]))
    forward = jax.jit(lambda p, s, c: chunk_loss(p, s, c)[1])
    state, reference = _state0(), None
    for n in range(T // K):
        chunk = jax.tree_util.tree_map(lambda a, n=n: a[n], chunks)
        g = chunk_grad(params, state, chunk)
        reference = g if reference is None else jax.tree_util.tree_map(jnp.add, reference, g)
        state = forward(params, state, chunk)
    for actual, expected in zip(
        jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(reference), strict=True
    ):
        assert_close(actual, expected, scale=10)
    full = jax.grad(lambda p: chunk_loss(p, _state0(), (x, y))[0])(params)
    assert not np.allclose(grads[0].w_h, full[0].w_h, rtol=1e-3)  # truncation is real


def test_reset_restarts_chosen_examples():
    params, (x, y) = _params(), _data()
    chunks = train.time_chunks((x, y), K)
    resets = jnp.zeros((T // K, B), bool).at[1, 1].set(True)
    _, (losses, _) = train.tbptt_loss(chunk_loss, params, _state0(), chunks, resets=resets)
    _, (plain, _) = train.tbptt_loss(chunk_loss, params, _state0(), chunks)
    state1 = chunk_loss(params, _state0(), jax.tree_util.tree_map(lambda a: a[0], chunks))[1]
    mixed = jax.tree_util.tree_map(lambda s, z: s.at[1].set(z[1]), state1, _state0())
    expected = chunk_loss(params, mixed, jax.tree_util.tree_map(lambda a: a[1], chunks))[0]
    assert_close(losses[1], expected)
    assert_close(losses[0], plain[0])
    assert not np.isclose(losses[1], plain[1])


def test_reset_state_errors():
    state = _state0()
    with pytest.raises(ValueError, match="reset must be a boolean array"):
        train.reset_state(state, state, jnp.ones(B))
    with pytest.raises(
        ValueError, match=r"reset has shape \(3,\) but a state leaf has shape \(2, 5\)"
    ):
        train.reset_state(state, state, jnp.ones(3, bool))
    with pytest.raises(ValueError, match=r"resets must have shape \(3, 2\)"):
        train.tbptt_loss(
            chunk_loss,
            _params(),
            state,
            train.time_chunks(_data(), K),
            resets=jnp.zeros((2, 2), bool),
        )


def test_runner_updates_per_chunk_like_a_manual_loop():
    params, (x, y) = _params(), _data()
    chunks = train.time_chunks((x, y), K)
    optimizer = train.with_clipping(optax.sgd(0.05), max_norm=1.0)
    step = train.make_tbptt_step(chunk_loss, optimizer, _state0())
    resets = jnp.zeros((T // K, B), bool).at[2, 0].set(True)
    train_state, state, metrics = train.run_tbptt(
        step, train.TrainState.create(params, optimizer), _state0(), chunks, resets=resets
    )
    assert metrics["loss"].shape == (T // K,) and metrics["grad_norm"].shape == (T // K,)
    assert int(train_state.step) == T // K
    p, opt_state, s = params, optimizer.init(params), _state0()
    for n in range(T // K):
        chunk = jax.tree_util.tree_map(lambda a, n=n: a[n], chunks)
        s = train.reset_state(s, _state0(), resets[n])
        (loss, s_next), g = jax.value_and_grad(chunk_loss, has_aux=True)(p, s, chunk)
        assert_close(metrics["loss"][n], loss, scale=10)
        assert_close(metrics["grad_norm"][n], optax.tree.norm(g), scale=10)
        updates, opt_state = optimizer.update(g, opt_state, p)
        p, s = optax.apply_updates(p, updates), s_next
    for actual, expected in zip(
        jax.tree_util.tree_leaves(train_state.params), jax.tree_util.tree_leaves(p), strict=True
    ):
        assert_close(actual, expected, scale=10)
    assert_close(state.h, s.h, scale=10)
