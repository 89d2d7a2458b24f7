"""Dropout, variational recurrent dropout, zoneout and DropConnect against their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import train
from tests.oracles import numpy_cells as ref
from tests.tolerances import assert_close

H, D, T = 6, 3, 5


def _inputs(shape=(T, D), seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def test_dropout_scales_survivors_and_is_off_without_key():
    x = jnp.ones((200, 50)) * 2.0
    assert train.dropout(None, x, 0.5) is x
    y = np.asarray(train.dropout(jax.random.key(0), x, 0.25))
    assert set(np.unique(y)) == {0.0, np.float32(2.0) / np.float32(0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02


def test_dropout_broadcast_axes_reuse_mask_over_time():
    x = jnp.ones((4, 10, 8))
    y = np.asarray(train.dropout(jax.random.key(0), x, 0.5, broadcast_axes=(1,)))
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1], y.shape))
    assert not np.array_equal(y[0], y[1])


def test_variational_lstm_uses_one_mask_for_every_step(x64):
    cell = train.variational_dropout(rnnjax.lstm(H), 0.5, key=jax.random.key(3))
    params = cell.init(jax.random.key(0), D)
    state0 = cell.initial_state(dtype=jnp.float64)
    mask = np.asarray(state0.mask)
    assert set(np.unique(mask)) <= {0.0, 2.0} and 0 < (mask == 0).sum() < H
    xs = _inputs()
    final, ys = rnnjax.scan(cell, params, xs, initial_state=state0)
    np.testing.assert_array_equal(final.mask, mask)
    h, c = np.zeros(H), np.zeros(H)
    for t in range(T):  # the seed's LSTM with h_{t-1} * m entering the gates
        h, c = ref.lstm_step(params, h * mask, c, np.asarray(xs[t]))
        assert_close(ys[t], h)
    assert_close(final.cell_state.c, c)


def _gru_reference(params, h, x, mask):
    """Keras' recurrent_dropout on a GRU: dropped h feeds the gates, whole h is interpolated."""
    g = ref._blocks(params, ["r", "z", "h"])
    dropped = h * mask
    z = ref.sigmoid(g["z"][0] @ x + g["z"][1] @ dropped + g["z"][2])
    r = ref.sigmoid(g["r"][0] @ x + g["r"][1] @ dropped + g["r"][2])
    h_tilde = np.tanh(g["h"][0] @ x + g["h"][1] @ (r * dropped) + g["h"][2])
    return (1 - z) * h + z * h_tilde


def test_variational_gru_drops_only_the_recurrent_matmul_input(x64):
    cell = train.variational_dropout(rnnjax.gru(H), 0.5, key=jax.random.key(4))
    params = cell.init(jax.random.key(0), D)
    state0 = cell.initial_state(dtype=jnp.float64)
    xs = _inputs()
    _, ys = rnnjax.scan(cell, params, xs, initial_state=state0)
    h, mask = np.zeros(H), np.asarray(state0.mask)
    for t in range(T):
        h = _gru_reference(params, h, np.asarray(xs[t]), mask)
        assert_close(ys[t], h)
    state_b = cell.initial_state((2,), dtype=jnp.float64)  # batched direct step: per-example W_h
    new_b, _ = cell.step(params, state_b, jnp.stack([xs[0], xs[0]]))
    for b in range(2):
        expected = _gru_reference(
            params, np.zeros(H), np.asarray(xs[0]), np.asarray(state_b.mask[b])
        )
        assert_close(new_b.h[b], expected)


def test_variational_masks_differ_per_example_and_vanish_at_eval():
    key = jax.random.key(5)
    layer = rnnjax.rnn(train.variational_dropout(rnnjax.lstm(H), 0.5, key=key), return_state=True)
    plain = rnnjax.rnn(rnnjax.lstm(H))
    params = plain.init(jax.random.key(0), (T, D))
    x = _inputs((4, T, D))
    _, state = layer.apply(params, x)
    assert not np.array_equal(state.mask[0], state.mask[1])
    evaluation = rnnjax.rnn(train.variational_dropout(rnnjax.lstm(H), 0.5))
    np.testing.assert_array_equal(evaluation.apply(params, x), plain.apply(params, x))


def test_zoneout_eval_is_the_expectation(x64):
    rate, cell_rate = 0.3, 0.6
    cell = train.zoneout(rnnjax.lstm(H), rate, cell_rate=cell_rate)
    params = cell.init(jax.random.key(0), D)
    xs = _inputs()
    _, ys = rnnjax.scan(cell, params, xs, initial_state=cell.initial_state(dtype=jnp.float64))
    h, c = np.zeros(H), np.zeros(H)
    for t in range(T):
        h_new, c_new = ref.lstm_step(params, h, c, np.asarray(xs[t]))
        h, c = rate * h + (1 - rate) * h_new, cell_rate * c + (1 - cell_rate) * c_new
        assert_close(ys[t], h)


def test_zoneout_training_keeps_or_updates_each_unit(x64):
    rate, cell_rate, hidden, steps = 0.3, 0.6, 64, 40
    cell = train.zoneout(rnnjax.lstm(hidden), rate, cell_rate=cell_rate, key=jax.random.key(7))
    params = cell.init(jax.random.key(0), D)
    plain = rnnjax.lstm(hidden)
    state, step = cell.initial_state(dtype=jnp.float64), jax.jit(cell.step)
    kept_h, kept_c, patterns = [], [], []
    for t in range(steps):
        x = _inputs((D,), seed=t)
        candidate, _ = plain.step(params, state.cell_state, x)
        new_state, y = step(params, state, x)
        for field, kept in (("h", kept_h), ("c", kept_c)):
            old, cand, new = (
                np.asarray(getattr(s, field))
                for s in (state.cell_state, candidate, new_state.cell_state)
            )
            keep = new == old
            assert np.all(
                keep | np.isclose(new, cand, rtol=1e-12, atol=1e-12)
            )  # formula: d*old + (1-d)*new
            kept.append(keep)
        patterns.append(kept_h[-1])
        np.testing.assert_array_equal(y, new_state.cell_state.h)
        state = new_state
    kept_h, kept_c = np.array(kept_h[1:]), np.array(kept_c[1:])  # step 0 starts at zero state
    assert abs(kept_h.mean() - rate) < 0.04 and abs(kept_c.mean() - cell_rate) < 0.04
    assert abs((kept_h & kept_c).mean() - rate * cell_rate) < 0.04  # independent masks
    assert not np.array_equal(patterns[5], patterns[6])  # a fresh mask every step


def test_wrappers_compose_under_layers_jit_grad_and_lengths():
    keys = jax.random.split(jax.random.key(0), 2)
    cell = train.variational_dropout(
        train.zoneout(rnnjax.gru(H), 0.1, key=keys[0]), 0.2, key=keys[1]
    )
    assert cell.name == "variational_dropout(zoneout(gru))"
    layer = rnnjax.rnn(cell, remat=True)
    params = layer.init(jax.random.key(1), (T, D))
    x, lengths = _inputs((3, T, D)), jnp.array([T, 2, 0])
    grads = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply(p, x, lengths) ** 2)))(params)
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
    out = layer.apply(params, x, lengths)
    np.testing.assert_array_equal(out[2], 0.0)


def test_drop_connect_masks_only_w_h():
    model = rnnjax.serial(rnnjax.stack([rnnjax.lstm(H), rnnjax.gru(H)]), rnnjax.dense(1))
    params = model.init(jax.random.key(0), (T, D))
    dropped = train.drop_connect(jax.random.key(1), params, 0.5)
    for layer, layer_dropped in zip(params[0], dropped[0], strict=True):
        np.testing.assert_array_equal(layer.w_x, layer_dropped.w_x)
        np.testing.assert_array_equal(layer.b, layer_dropped.b)
        w, w_dropped = np.asarray(layer.w_h), np.asarray(layer_dropped.w_h)
        zero = w_dropped == 0
        assert 0.4 < zero.mean() < 0.6
        np.testing.assert_allclose(w_dropped[~zero], 2.0 * w[~zero], rtol=1e-6)
    np.testing.assert_array_equal(dropped[1].w, params[1].w)
    assert not np.array_equal(dropped[0][0].w_h != 0, dropped[0][1].w_h[:, : 4 * H] != 0)
    assert train.drop_connect(None, params, 0.5) is params
    grad = jax.grad(lambda p: jnp.sum(train.drop_connect(jax.random.key(1), p, 0.5).w_h))(
        params[0][0]
    )
    np.testing.assert_array_equal(np.asarray(grad.w_h) == 0, np.asarray(dropped[0][0].w_h) == 0)


def test_errors():
    with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\); got 1.0"):
        train.dropout(jax.random.key(0), jnp.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\]; got 1.5"):
        train.zoneout(rnnjax.lstm(H), 1.5)
    with pytest.raises(ValueError, match=r"cell_rate must lie in \[0, 1\]; got -0.1"):
        train.zoneout(rnnjax.lstm(H), 0.1, cell_rate=-0.1)
    with pytest.raises(TypeError, match="cell must be an rnnjax Cell; got str"):
        train.variational_dropout("lstm", 0.1)
    with pytest.raises(ValueError, match="params contain no field named"):
        train.drop_connect(jax.random.key(0), {"w": jnp.ones(2)}, 0.1)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        train.dropout(jnp.ones(2), jnp.ones(3), 0.5)
    cell = train.variational_dropout(rnnjax.lstm(H), 0.1)
    params = cell.init(jax.random.key(0), D)
    with pytest.raises(TypeError, match="state must be VariationalState"):
        cell.step(params, rnnjax.lstm(H).initial_state(), jnp.ones(D))
