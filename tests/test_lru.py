"""``lru`` and ``rg_lru``: steps against a NumPy reading of the papers, the parallel associative scan
against ``rnnjax.scan``, the initialisers' distributions, and hand-computed state Jacobians.

Runs are jitted with XLA's backend optimisations off and reused across cases: eager associative
scans dispatch and compile hundreds of small ops.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax import jacobians
from rnnjax._linear_scan import parallel_linear_scan
from rnnjax._lru import LRUParams, LRUState, lru, lru_lambda
from rnnjax._rg_lru import RGLRUParams, rg_lru
from tests.oracles import numpy_lru
from tests.tolerances import assert_close

HIDDEN, INPUT = 6, 3
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _make(name, dtype=jnp.float32):
    if name == "lru":
        return lru(HIDDEN, r_min=0.5, r_max=0.99, max_phase=3.0, param_dtype=dtype)
    return rg_lru(HIDDEN, param_dtype=dtype)


def _setup(name, seed, steps, dtype=jnp.float32):
    cell = _make(name, dtype)
    keys = jax.random.split(jax.random.key(seed), 4)
    params = cell.init(keys[0], INPUT)
    if name == "rg_lru":  # non-zero biases, so a swapped gate cannot hide
        params = params._replace(b=jax.random.normal(keys[3], params.b.shape, dtype))
    xs = jax.random.normal(keys[1], (steps, INPUT), dtype)
    state = cell.initial_state((), dtype)
    state = type(state)(*(jax.random.normal(k, s.shape, dtype) for k, s in zip(keys[2:], state)))
    return cell, params, xs, state


def _numpy_run(name, params, xs, state):
    if name == "lru":
        h0 = np.asarray(state.h_re) + 1j * np.asarray(state.h_im)
        hs, ys = numpy_lru.lru_run(params, xs, h0)
        return (hs.real, hs.imag), ys
    hs = numpy_lru.rg_lru_run(params, xs, np.asarray(state.h))
    return (hs,), hs


@pytest.mark.parametrize("name", ["lru", "rg_lru"])
def test_step_matches_numpy_reference(name, x64):
    cell, params, xs, state = _setup(name, 0, 6, jnp.float64)
    states, outputs = _numpy_run(name, params, xs, state)
    step = _jit(cell.step)
    for t, x in enumerate(xs):
        state, y = step(params, state, x)
        assert_close(y, outputs[t])
        for leaf, expected in zip(state, states, strict=True):
            assert_close(leaf, expected[t])


@pytest.mark.parametrize("name", ["lru", "rg_lru"])
def test_step_accepts_batch_dims(name):
    cell, params, xs, _ = _setup(name, 1, 4)
    step = _jit(cell.step)
    batched, ys = step(params, cell.initial_state((4,)), xs)
    for row in range(4):
        one, y = step(params, cell.initial_state(), xs[row])
        assert_close(ys[row], y)
        for a, b in zip(batched, one, strict=True):
            assert_close(a[row], b)


@pytest.mark.parametrize("name", ["lru", "rg_lru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_parallel_equals_sequential(name, reverse, x64):
    cell = _make(name)
    sequential = _jit(functools.partial(rnnjax.scan, cell, reverse=reverse))
    parallel = _jit(functools.partial(parallel_linear_scan, cell, reverse=reverse))
    for seed in range(2):
        _, params, xs, state = _setup(name, seed, 100, jnp.float64)
        final, ys = sequential(params, xs, initial_state=state)
        p_final, p_ys = parallel(params, xs, initial_state=state)
        assert_close(p_ys, ys, scale=100)
        for a, b in zip(p_final, final, strict=True):
            assert_close(a, b, scale=100)


@pytest.mark.parametrize("name", ["lru", "rg_lru"])
def test_parallel_equals_sequential_float32_long(name):
    cell, params, xs, state = _setup(name, 3, 2000)
    _, ys = _jit(functools.partial(rnnjax.scan, cell))(params, xs, initial_state=state)
    _, p_ys = _jit(functools.partial(parallel_linear_scan, cell))(params, xs, initial_state=state)
    assert bool(jnp.all(jnp.isfinite(p_ys)))
    assert_close(p_ys, ys, scale=30)


@pytest.mark.parametrize("name, reverse", [("lru", False), ("rg_lru", True)])
def test_length_matches_sequential_scan_under_vmap(name, reverse, x64):
    cell, params, xs, state = _setup(name, 5, 12, jnp.float64)
    lengths = jnp.array([0, 6, 12, 3])
    padded = xs.at[6:].set(jnp.nan)  # NaN in the padding reaches neither outputs nor gradients
    batch = jnp.stack([xs.at[:].set(jnp.inf), padded, xs, padded])

    def value_and_grad(runner):
        def loss(params, xs, lengths, state):
            run = functools.partial(runner, cell, initial_state=state, reverse=reverse)
            final, ys = jax.vmap(lambda x, n: run(params, x, length=n))(xs, lengths)
            squares = sum(jnp.sum(leaf**2) for leaf in final)
            return jnp.sum(jnp.sin(ys)) + squares, (final, ys)

        return _jit(jax.value_and_grad(loss, argnums=(0, 1, 3), has_aux=True))

    (loss, (final, ys)), grads = value_and_grad(rnnjax.scan)(params, batch, lengths, state)
    out = value_and_grad(parallel_linear_scan)(params, batch, lengths, state)
    (p_loss, (p_final, p_ys)), p_grads = out
    leaves = jax.tree_util.tree_leaves((p_loss, p_final, p_ys, p_grads))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
    for p_leaf, leaf in zip(
        leaves, jax.tree_util.tree_leaves((loss, final, ys, grads)), strict=True
    ):
        assert_close(p_leaf, leaf, scale=100)
    assert_close(ys[0], np.zeros_like(ys[0]))  # length 0: zero outputs, the initial state back
    for leaf, s in zip(final, state, strict=True):
        assert_close(leaf[0], s)


@pytest.mark.parametrize("name", ["lru", "rg_lru"])
def test_gradients_match_sequential_and_check_grads(name, x64):
    cell, params, xs, state = _setup(name, 2, 5, jnp.float64)

    def loss(runner, params, xs, state):
        final, ys = runner(cell, params, xs, initial_state=state)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in final)

    args = (params, xs, state)
    grads = _jit(jax.grad(functools.partial(loss, rnnjax.scan), argnums=(0, 1, 2)))(*args)
    p_loss = jax.jit(functools.partial(loss, parallel_linear_scan))
    p_grads = jax.grad(p_loss, argnums=(0, 1, 2))(*args)
    leaves = zip(jax.tree_util.tree_leaves(p_grads), jax.tree_util.tree_leaves(grads), strict=True)
    for p_leaf, leaf in leaves:
        assert_close(p_leaf, leaf, scale=100)
    check_grads(p_loss, args, order=1, modes=["fwd", "rev"])


def test_lru_jacobian_is_max_modulus_power(x64):
    # d h_T / d h_k = diag(lambda^(T-k)): each mode a 2x2 scaled rotation in (h_re, h_im).
    cell, params, xs, state = _setup("lru", 4, 40, jnp.float64)
    jac = jacobians.state_jacobians(cell, params, xs, initial_state=state)  # [T+1, 2N, 2N]
    lam = np.exp(-np.exp(np.asarray(params.nu_log)) + 1j * np.exp(np.asarray(params.theta_log)))
    lags = np.arange(xs.shape[0], -1, -1)
    powers = lam[None, :] ** lags[:, None]  # [T+1, N]
    eye = np.eye(HIDDEN)
    expected = np.block(
        [
            [powers.real[:, :, None] * eye, -powers.imag[:, :, None] * eye],
            [powers.imag[:, :, None] * eye, powers.real[:, :, None] * eye],
        ]
    )
    assert_close(jac, expected)
    norms = np.linalg.norm(np.asarray(jac), ord=2, axis=(-2, -1))
    assert_close(norms, np.max(np.abs(lam)) ** lags)


def test_rg_lru_jacobian_is_product_of_decays(x64):
    cell, params, xs, state = _setup("rg_lru", 6, 30, jnp.float64)
    jac = jacobians.state_jacobians(cell, params, xs, initial_state=state)
    decays = numpy_lru.rg_lru_decays(params, xs)  # a_1..a_T
    tails = np.concatenate([np.cumprod(decays[::-1], axis=0)[::-1], np.ones((1, HIDDEN))])
    assert_close(jac, tails[:, :, None] * np.eye(HIDDEN)[None])


def test_lru_ring_initialisation():
    r_min, r_max, max_phase, n = 0.4, 0.95, 1.5, 4096
    cell = lru(n, r_min, r_max, max_phase)
    params = cell.init(jax.random.key(0), 8)
    lam_re, lam_im = (np.asarray(v, np.float64) for v in lru_lambda(params))
    modulus, phase = np.hypot(lam_re, lam_im), np.exp(np.asarray(params.theta_log, np.float64))
    assert modulus.min() >= r_min - 1e-6 and modulus.max() <= r_max + 1e-6
    # The ring: |lambda|^2 uniform on [r_min^2, r_max^2], the phase uniform on [0, max_phase].
    u1 = np.sort((modulus**2 - r_min**2) / (r_max**2 - r_min**2))
    u2 = np.sort(phase / max_phase)
    grid = (np.arange(n) + 0.5) / n
    assert np.abs(u1 - grid).max() < 0.03 and np.abs(u2 - grid).max() < 0.03
    # Reading the same uniforms through the paper's formulas gives the stored params back.
    nu_log, theta_log, gamma_log = numpy_lru.lru_ring_init(
        u1=np.clip((modulus**2 - r_min**2) / (r_max**2 - r_min**2), 0, 1),
        u2=phase / max_phase, r_min=r_min, r_max=r_max, max_phase=max_phase,
    )  # fmt: skip
    assert_close(params.nu_log, nu_log, scale=10)
    assert_close(params.gamma_log, gamma_log, scale=10)
    assert_close(params.theta_log, theta_log, scale=10)
    stds = [np.std(np.asarray(p)) for p in (params.b_re, params.b_im, params.c_re, params.c_im)]
    np.testing.assert_allclose(stds, [1 / np.sqrt(16)] * 2 + [1 / np.sqrt(n)] * 2, rtol=0.05)


def test_rg_lru_initialisation_spreads_a_power_c_uniformly():
    n = 4096
    params = rg_lru(n).init(jax.random.key(1), 5)
    a = numpy_lru.sigmoid(np.asarray(params.a_logit, np.float64))
    a_c = np.sort(a**8.0)
    assert a_c.min() >= 0.9 - 1e-6 and a_c.max() <= 0.999 + 1e-6
    grid = 0.9 + 0.099 * (np.arange(n) + 0.5) / n
    assert np.abs(a_c - grid).max() < 0.099 * 0.03
    assert_close(params.b, np.zeros(3 * n))


def test_griffin_form_with_identity_input_projection(x64):
    # input_size = H, W_u = I, b_u = 0: the cell is Griffin's RG-LRU on x_t itself.
    cell = rg_lru(HIDDEN, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(2), HIDDEN)
    w_x = params.w_x.at[:, 2 * HIDDEN :].set(jnp.eye(HIDDEN))
    params = params._replace(w_x=w_x)
    xs = jax.random.normal(jax.random.key(3), (5, HIDDEN), jnp.float64)
    _, ys = rnnjax.scan(cell, params, xs)
    a = numpy_lru.sigmoid(np.asarray(params.a_logit))
    h = np.zeros(HIDDEN)
    for t, x in enumerate(np.asarray(xs)):
        r = numpy_lru.sigmoid(x @ np.asarray(w_x[:, :HIDDEN]))
        i = numpy_lru.sigmoid(x @ np.asarray(w_x[:, HIDDEN : 2 * HIDDEN]))
        a_t = a ** (8.0 * r)
        h = a_t * h + np.sqrt(1 - a_t**2) * (i * x)
        assert_close(ys[t], h)


@pytest.mark.parametrize("name", ["lru", "rg_lru"])
def test_bfloat16_params_and_empty_sequence(name):
    factory = lru if name == "lru" else rg_lru
    params = factory(4, param_dtype=jnp.bfloat16).init(jax.random.key(0), 2)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree_util.tree_leaves(params))
    cell = factory(4)
    final, ys = parallel_linear_scan(cell, cell.init(jax.random.key(0), 2), jnp.zeros((0, 2)))
    assert ys.shape == (0, 2 if name == "lru" else 4)
    for leaf in final:
        assert_close(leaf, np.zeros(4))


def test_lru_params_and_state_types():
    cell = lru(4)
    params = cell.init(jax.random.key(0), 3)
    assert isinstance(params, LRUParams) and isinstance(cell.initial_state(), LRUState)
    assert isinstance(rg_lru(4).init(jax.random.key(0), 3), RGLRUParams)


def test_rg_lru_runs_in_a_layer():
    layer = rnnjax.rnn(rg_lru(5), return_sequences=True)
    params = layer.init(jax.random.key(0), (7, 3))
    ys = layer.apply(params, jnp.ones((2, 7, 3)), lengths=jnp.array([7, 4]))
    assert ys.shape == (2, 7, 5)
    assert_close(ys[1, 4:], np.zeros((3, 5)))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: lru(0), ValueError, "hidden_size must be a positive int; got 0"),
        (lambda: lru(4, 0.9, 0.5), ValueError, "r_min and r_max must satisfy .* got 0.9, 0.5"),
        (lambda: lru(4, 0.0, 1.5), ValueError, "0 <= r_min < r_max <= 1; got 0.0, 1.5"),
        (lambda: lru(4, max_phase=0.0), ValueError, "max_phase must be positive; got 0.0"),
        (lambda: rg_lru(4, c=-1.0), ValueError, "c must be positive; got -1.0"),
        (lambda: rg_lru(4, max_rad=1.0), ValueError, "0 < min_rad < max_rad < 1; got 0.9, 1.0"),
        (lambda: lru(4).init(jax.random.key(0), 0), ValueError, "input_size must be a positive"),
    ],
)
def test_constructor_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_call_errors():
    cell = lru(4)
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"params do not match lru\(hidden_size=4\)"):
        cell.step(params._replace(nu_log=jnp.zeros(5)), cell.initial_state(), jnp.ones(3))
    with pytest.raises(TypeError, match="params must be LRUParams"):
        cell.step(rg_lru(4).init(jax.random.key(0), 3), cell.initial_state(), jnp.ones(3))
    with pytest.raises(ValueError, match=r"x must have shape \(..., input_size=3\).*got shape"):
        cell.step(params, cell.initial_state(), jnp.ones(2))
    with pytest.raises(TypeError, match="state must be LRUState"):
        cell.step(params, rnnjax.RNNState(jnp.zeros(4)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"state.h_re and state.h_im must have shape \(4,\)"):
        cell.step(params, cell.initial_state((2,)), jnp.ones(3))
    gru = rnnjax.gru(4)
    with pytest.raises(ValueError, match="cell must be rnnjax.lru or rnnjax.rg_lru.*'gru'"):
        parallel_linear_scan(gru, gru.init(jax.random.key(0), 3), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"xs must have rank 2.*got shape \(5,\)"):
        parallel_linear_scan(cell, params, jnp.ones(5))
    with pytest.raises(TypeError, match="xs must have a floating-point dtype"):
        parallel_linear_scan(cell, params, jnp.ones((5, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"length must lie in \[0, 5\]"):
        parallel_linear_scan(cell, params, jnp.ones((5, 3)), length=6)
    other = rg_lru(4)
    with pytest.raises(ValueError, match=r"params do not match rg_lru\(hidden_size=4\)"):
        other.step(other.init(jax.random.key(0), 3)._replace(a_logit=jnp.zeros(3)),
                   other.initial_state(), jnp.ones(3))  # fmt: skip
    with pytest.raises(ValueError, match=r"state.h must have shape \(4,\)"):
        other.step(other.init(jax.random.key(0), 3), rnnjax.RNNState(jnp.zeros(5)), jnp.ones(3))
