"""``min_gru`` / ``min_lstm``: a NumPy reading of Feng et al. (2024), and the log-space associative
scan against the sequential ``rnnjax.scan`` of the same cell.

Runs are jitted (XLA backend optimisations off) and reused across seeds: eager associative scans
dispatch and compile hundreds of small ops.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax._minimal import MinGRUParams, MinLSTMParams, min_gru, min_lstm, parallel_minimal_scan
from rnnjax._parallel_scan import parallel_scan
from tests.tolerances import assert_close

HIDDEN, INPUT = 6, 3
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
CELLS = {"min_gru": min_gru, "min_lstm": min_lstm}


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _g(v):
    return np.where(v >= 0, v + 0.5, _sigmoid(v))


def _numpy_step(name, params, h, x):
    """Feng et al. (2024) eqs. for one step, float64 NumPy; gate order (z, h) or (f, i, h)."""
    k = np.asarray(x, np.float64) @ np.asarray(params.w_x, np.float64) + np.asarray(params.b)
    if name == "min_gru":
        k_z, k_h = np.split(k, 2)
        z = _sigmoid(k_z)
        return (1 - z) * h + z * _g(k_h)
    k_f, k_i, k_h = np.split(k, 3)
    f, i = _sigmoid(k_f), _sigmoid(k_i)
    return f / (f + i) * h + i / (f + i) * _g(k_h)


def _setup(name, seed, steps, dtype=jnp.float32, scale=1.0):
    cell = CELLS[name](HIDDEN, param_dtype=dtype)
    keys = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(keys[0], INPUT)
    params = params._replace(b=jax.random.normal(keys[2], params.b.shape, dtype))
    xs = scale * jax.random.normal(keys[1], (steps, INPUT), dtype)
    h0 = rnnjax.RNNState(jax.random.normal(keys[2], (HIDDEN,), dtype))  # both signs
    return cell, params, xs, h0


@pytest.mark.parametrize("name", CELLS)
def test_step_matches_numpy_reference(name, x64):
    cell, params, xs, h0 = _setup(name, 0, 5, jnp.float64)
    h = np.asarray(h0.h)
    state = h0
    for x in xs:
        h = _numpy_step(name, params, h, x)
        state, y = cell.step(params, state, x)
        assert_close(y, h)
        assert_close(state.h, h)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_parallel_equals_sequential_across_seeds(name, reverse, x64):
    cell = CELLS[name](HIDDEN)
    sequential = _jit(functools.partial(rnnjax.scan, cell, reverse=reverse))
    parallel = _jit(functools.partial(parallel_minimal_scan, cell, reverse=reverse))
    for seed in range(3):
        _, params, xs, h0 = _setup(name, seed, 100, jnp.float64, scale=3.0)
        final, ys = sequential(params, xs, initial_state=h0)
        p_final, p_ys = parallel(params, xs, initial_state=h0)
        assert_close(p_ys, ys, scale=100)
        assert_close(p_final.h, final.h, scale=100)


@pytest.mark.parametrize("name", CELLS)
def test_float32_long_sequence_stays_finite_and_equal(name):
    # Gates near 0/1 over 4096 steps: the products A_t underflow; log space must still be exact.
    cell, params, xs, h0 = _setup(name, 1, 4096, scale=10.0)
    final, ys = _jit(functools.partial(rnnjax.scan, cell))(params, xs, initial_state=h0)
    p_final, p_ys = _jit(functools.partial(parallel_minimal_scan, cell))(
        params, xs, initial_state=h0
    )
    assert bool(jnp.all(jnp.isfinite(p_ys)))
    assert_close(p_ys, ys, scale=10)


@pytest.mark.parametrize("name", CELLS)
def test_gradients_match_sequential_and_check_grads(name, x64):
    cell, params, xs, h0 = _setup(name, 2, 9, jnp.float64)

    def loss(runner, params, xs, h0):
        final, ys = runner(cell, params, xs, initial_state=h0)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h**2)

    args = (params, xs, h0)
    grads = _jit(jax.grad(functools.partial(loss, rnnjax.scan), argnums=(0, 1, 2)))(*args)
    # check_grads nests its own jit, where compiler_options are refused.
    p_loss = jax.jit(functools.partial(loss, parallel_minimal_scan))
    p_grads = jax.grad(p_loss, argnums=(0, 1, 2))(*args)
    leaves = zip(jax.tree_util.tree_leaves(p_grads), jax.tree_util.tree_leaves(grads), strict=True)
    for p_leaf, leaf in leaves:
        assert_close(p_leaf, leaf, scale=100)
    check_grads(p_loss, args, order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize(
    "name, reverse",
    [("min_gru", False), ("min_lstm", True)]
    + [
        pytest.param(*case, marks=pytest.mark.slow)
        for case in [("min_gru", True), ("min_lstm", False)]
    ],
)
def test_length_matches_sequential_scan_under_vmap(name, reverse, x64):
    cell, params, xs, h0 = _setup(name, 5, 12, jnp.float64)
    lengths = jnp.array([0, 6, 12, 3])
    padded = xs.at[6:].set(jnp.nan)  # NaN in the padding reaches neither outputs nor gradients
    batch = jnp.stack([xs.at[:].set(jnp.inf), padded, xs, padded])

    def value_and_grad(runner):
        def loss(params, xs, lengths, h0):
            run = functools.partial(runner, cell, initial_state=h0, reverse=reverse)
            final, ys = jax.vmap(lambda x, n: run(params, x, length=n))(xs, lengths)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h**2), (final, ys)

        return _jit(jax.value_and_grad(loss, argnums=(0, 1, 3), has_aux=True))

    (loss, (final, ys)), grads = value_and_grad(rnnjax.scan)(params, batch, lengths, h0)
    (p_loss, (p_final, p_ys)), p_grads = value_and_grad(parallel_minimal_scan)(
        params, batch, lengths, h0
    )
    leaves = jax.tree_util.tree_leaves((p_loss, p_final, p_ys, p_grads))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
    expected = jax.tree_util.tree_leaves((loss, final, ys, grads))
    for p_leaf, leaf in zip(leaves, expected, strict=True):
        assert_close(p_leaf, leaf, scale=100)
    assert_close(p_final.h[0], h0.h)  # length 0 returns the initial state
    assert not bool(jnp.any(p_ys[3, 3:])) and not bool(jnp.any(p_grads[1][1, 6:]))


def test_length_bad_values_and_traced_clipping():
    cell, params, xs, _ = _setup("min_gru", 6, 5)
    with pytest.raises(ValueError, match=r"length must lie in \[0, 5\] .* got values in \[6, 6\]"):
        parallel_minimal_scan(cell, params, xs, length=6)
    with pytest.raises(ValueError, match=r"length must have shape \(\)"):
        parallel_minimal_scan(cell, params, xs, length=jnp.array([1, 2]))
    with pytest.raises(TypeError, match="length must have an integer dtype"):
        parallel_minimal_scan(cell, params, xs, length=1.5)
    run = _jit(functools.partial(parallel_minimal_scan, cell))
    full_final, full_ys = run(params, xs)
    final, ys = run(params, xs, length=jnp.int32(9))
    assert_close(ys, full_ys)
    assert_close(final.h, full_final.h)
    final, ys = run(params, xs, length=jnp.int32(-1))
    assert not bool(jnp.any(ys)) and not bool(jnp.any(final.h))


def test_vmap_over_a_batch():
    cell, params, _, _ = _setup("min_gru", 3, 1)
    xs = jax.random.normal(jax.random.key(7), (4, 50, INPUT))
    _, ys = _jit(jax.vmap(lambda x: rnnjax.scan(cell, params, x)))(xs)
    _, p_ys = _jit(jax.vmap(lambda x: parallel_minimal_scan(cell, params, x)))(xs)
    assert_close(p_ys, ys, scale=10)


@pytest.mark.parametrize("name", CELLS)
def test_deer_solves_a_linear_recurrence_in_one_iteration(name, x64):
    cell, params, xs, h0 = _setup(name, 4, 64, jnp.float64)
    _, ys = _jit(functools.partial(parallel_minimal_scan, cell))(params, xs, initial_state=h0)
    _, d_ys, info = _jit(functools.partial(parallel_scan, cell))(params, xs, initial_state=h0)
    assert int(info.iterations) == 1 and bool(info.converged)
    assert_close(d_ys, ys, scale=100)


def test_params_and_initial_state():
    gru_params = min_gru(HIDDEN).init(jax.random.key(0), INPUT)
    lstm_params = min_lstm(HIDDEN).init(jax.random.key(0), INPUT)
    assert isinstance(gru_params, MinGRUParams) and isinstance(lstm_params, MinLSTMParams)
    assert gru_params.w_x.shape == (INPUT, 2 * HIDDEN) and gru_params.b.shape == (2 * HIDDEN,)
    assert lstm_params.w_x.shape == (INPUT, 3 * HIDDEN) and lstm_params.b.shape == (3 * HIDDEN,)
    assert min_lstm(HIDDEN).config["gates"] == ("f", "i", "h")
    state = min_gru(HIDDEN).initial_state((2,))
    assert isinstance(state, rnnjax.RNNState) and state.h.shape == (2, HIDDEN)


def test_bad_inputs():
    cell = min_gru(HIDDEN)
    params = cell.init(jax.random.key(0), INPUT)
    xs = jnp.ones((5, INPUT))
    with pytest.raises(ValueError, match="cell must be rnnjax.min_gru or rnnjax.min_lstm"):
        gru = rnnjax.gru(HIDDEN)
        parallel_minimal_scan(gru, gru.init(jax.random.key(0), INPUT), xs)
    with pytest.raises(TypeError, match="cell must be an rnnjax Cell"):
        parallel_minimal_scan("min_gru", params, xs)
    with pytest.raises(TypeError, match="params must be MinGRUParams"):
        parallel_minimal_scan(cell, min_lstm(HIDDEN).init(jax.random.key(0), INPUT), xs)
    with pytest.raises(ValueError, match=r"expected w_x \(input_size, 12\) .* got w_x \(3, 10\)"):
        parallel_minimal_scan(cell, params._replace(w_x=jnp.ones((INPUT, 10))), xs)
    with pytest.raises(TypeError, match=r"params.b of min_gru\(hidden_size=6\) .* got dtype int32"):
        parallel_minimal_scan(cell, params._replace(b=params.b.astype(jnp.int32)), xs)
    with pytest.raises(ValueError, match=r"xs must have rank 2 .* got shape \(5,\)"):
        parallel_minimal_scan(cell, params, jnp.ones(5))
    with pytest.raises(ValueError, match=r"x must have shape \(..., input_size=3\)"):
        parallel_minimal_scan(cell, params, jnp.ones((5, 4)))
    with pytest.raises(TypeError, match="xs must have a floating-point dtype"):
        parallel_minimal_scan(cell, params, jnp.ones((5, INPUT), jnp.int32))
    with pytest.raises(ValueError, match=r"initial_state leaves must have shape \(6,\)"):
        parallel_minimal_scan(cell, params, xs, initial_state=rnnjax.RNNState(jnp.zeros(4)))
    with pytest.raises(ValueError, match=r"state.h must have shape \(6,\); got \(4,\)"):
        cell.recur(params, rnnjax.RNNState(jnp.zeros(4)), jnp.zeros(2 * HIDDEN))
    with pytest.raises(TypeError, match="state must be RNNState"):
        cell.recur(params, (jnp.zeros(HIDDEN),), jnp.zeros(2 * HIDDEN))
    with pytest.raises(ValueError, match="hidden_size must be a positive int; got 0"):
        min_lstm(0)
    with pytest.raises(ValueError, match="input_size must be a positive int; got -1"):
        cell.init(jax.random.key(0), -1)
