"""Layer-normalised LSTM/GRU against a float64 NumPy reading of Ba et al. (2016)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax._norm_cells import (
    LayerNormGRUParams,
    LayerNormLSTMParams,
    layer_norm_gru,
    layer_norm_lstm,
)
from tests.tolerances import assert_close

H, D, T = 5, 3, 7


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _ln(z, groups, eps=1e-5):
    out = np.empty_like(z)
    size = z.shape[-1] // groups
    for g in range(groups):
        block = z[..., g * size : (g + 1) * size]
        out[..., g * size : (g + 1) * size] = (block - block.mean()) / np.sqrt(block.var() + eps)
    return out


def lstm_reference(p, h, c, x, groups):
    """Ba et al. eq. (20)-(22), gate order i, f, g, o; one example, float64."""
    p = {k: np.asarray(v, np.float64) for k, v in p._asdict().items()}
    z = _ln(x @ p["w_x"], groups) * p["scale_x"] + _ln(h @ p["w_h"], groups) * p["scale_h"]
    z = z + p["b"]
    i, f, g, o = np.split(z, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(_ln(c, 1) * p["scale_c"] + p["bias_c"])
    return h, c


def gru_reference(p, h, x, groups):
    p = {k: np.asarray(v, np.float64) for k, v in p._asdict().items()}
    xr, xz, xn = np.split(_ln(x @ p["w_x"], groups) * p["scale_x"] + p["b"], 3)
    hr, hz, hn = np.split(_ln(h @ p["w_h"], groups) * p["scale_h"], 3)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * (hn + p["b_hn"]))
    return (1 - z) * h + z * n


def _perturbed(params, key):
    """Move every gain, shift and bias off its 1/0 initial value so each one is tested; float64
    under the x64 fixture."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [
        x.astype(dtype) + 0.3 * jax.random.normal(k, x.shape, dtype)
        for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, leaves)


@pytest.mark.parametrize("per_gate", [False, True])
def test_lstm_sequence_matches_numpy(x64, per_gate):
    cell = layer_norm_lstm(H, per_gate=per_gate)
    params = _perturbed(cell.init(jax.random.key(0), D), jax.random.key(1))
    xs = jax.random.normal(jax.random.key(2), (T, D))
    state, ys = rnnjax.scan(cell, params, xs)
    assert ys.dtype == jnp.float64
    h, c = np.zeros(H), np.zeros(H)
    for t in range(T):
        h, c = lstm_reference(params, h, c, np.asarray(xs[t]), 4 if per_gate else 1)
        assert_close(ys[t], h)
    assert_close(state.c, c)


@pytest.mark.parametrize("per_gate", [False, True])
def test_gru_sequence_matches_numpy(x64, per_gate):
    cell = layer_norm_gru(H, per_gate=per_gate)
    params = _perturbed(cell.init(jax.random.key(0), D), jax.random.key(1))
    xs = jax.random.normal(jax.random.key(2), (T, D))
    _, ys = rnnjax.scan(cell, params, xs)
    h = np.zeros(H)
    for t in range(T):
        h = gru_reference(params, h, np.asarray(xs[t]), 3 if per_gate else 1)
        assert_close(ys[t], h)


@pytest.mark.parametrize("make", [layer_norm_lstm, layer_norm_gru])
def test_step_equals_scan_and_layer_masks_padding(make):
    cell = make(H)
    params = _perturbed(cell.init(jax.random.key(0), D), jax.random.key(1))
    xs = jax.random.normal(jax.random.key(2), (2, T, D))
    state, step = cell.initial_state((2,)), jax.jit(cell.step)
    for t in range(T):
        state, y = step(params, state, xs[:, t])
    apply = jax.jit(rnnjax.rnn(cell).apply)
    assert_close(apply(params, xs), y)
    padded = apply(params, xs.at[1, 3:].set(jnp.nan), lengths=jnp.array([T, 3]))
    assert_close(padded[1], apply(params, xs[1:, :3])[0])


@pytest.mark.parametrize("make", [layer_norm_lstm, layer_norm_gru])
def test_gradients(x64, make):
    cell = make(3)
    params = _perturbed(cell.init(jax.random.key(0), 2), jax.random.key(1))
    state = jax.tree_util.tree_map(lambda s: s + 0.5, cell.initial_state(dtype=jnp.float64))
    check_grads(jax.jit(cell.step), (params, state, jnp.array([0.3, -1.2])), order=2, modes="rev")
    xs = jax.random.normal(jax.random.key(2), (4, 2))
    loss = jax.jit(lambda params: jnp.sum(rnnjax.scan(cell, params, xs)[1] ** 2))
    check_grads(loss, (params,), order=1, modes="rev")


def test_initial_params():
    params = layer_norm_lstm(H, forget_bias=2.0).init(jax.random.key(0), D)
    assert isinstance(params, LayerNormLSTMParams)
    np.testing.assert_array_equal(params.b[H : 2 * H], 2.0)
    np.testing.assert_array_equal(params.scale_x, 1.0)
    np.testing.assert_array_equal(params.bias_c, 0.0)
    gru_params = layer_norm_gru(H).init(jax.random.key(0), D)
    assert isinstance(gru_params, LayerNormGRUParams)
    assert gru_params.b_hn.shape == (H,)


def test_bad_params_raise():
    cell = layer_norm_lstm(H)
    params = cell.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"params.scale_h of shape \(20,\), got \(5,\)"):
        cell.step(params._replace(scale_h=jnp.ones(H)), cell.initial_state(), jnp.ones(D))
    with pytest.raises(ValueError, match=r"params.scale_x of shape \(20,\), got \(3,\)"):
        cell.project_inputs(params._replace(scale_x=jnp.ones(3)), jnp.ones(D))
    with pytest.raises(TypeError, match="params must be LayerNormLSTMParams"):
        cell.step(rnnjax.lstm(H).init(jax.random.key(0), D), cell.initial_state(), jnp.ones(D))
    with pytest.raises(ValueError, match=r"x must have shape \(..., input_size=3\)"):
        cell.step(params, cell.initial_state(), jnp.ones(4))
