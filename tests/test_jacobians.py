"""rnnjax.jacobians against independent references: the seed's product of per-step Jacobians in
NumPy, ``jax.jacfwd`` of a Python loop of steps, ``jax.grad`` and NumPy's SVD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import jacobians
from tests.tolerances import assert_close

T, D, H = 9, 3, 5


def _float64(tree):
    return jax.tree.map(lambda a: None if a is None else jnp.asarray(a, jnp.float64), tree)


def _setup(cell, seed=0, steps=T):
    params = _float64(cell.init(jax.random.key(seed), D))
    xs = jax.random.normal(jax.random.key(seed + 1), (steps, D), jnp.float64)
    return params, xs


def _numpy_rnn(params, xs):
    """Forward pass and the seed's per-step Jacobians ``diag(1 - tanh^2(a_j)) W_hh`` in NumPy.

    The seed writes ``a_j = W_hh h_{j-1} + W_xh x_j + b`` (column vectors); rnnjax stores
    ``w_h = W_hh^T``, so ``W_hh = w_h.T``.
    """
    w_x, w_hh, b = (np.asarray(a) for a in (params.w_x, params.w_h.T, params.b))
    h = np.zeros(w_hh.shape[0])
    hs, steps = [h], []
    for x in np.asarray(xs):
        a = w_hh @ h + x @ w_x + b
        h = np.tanh(a)
        hs.append(h)
        steps.append(np.diag(1.0 - np.tanh(a) ** 2) @ w_hh)
    return np.stack(hs), steps


def _loop_jacobian(cell, params, xs, k):
    """``d s_T / d s_k`` by ``jax.jacfwd`` of a Python loop of ``cell.step`` (no scan)."""
    state = cell.initial_state((), jnp.float64)
    for x in xs[:k]:
        state, _ = cell.step(params, state, x)

    def rest(flat):
        s = type(state)(*jnp.split(flat, len(state)))
        for x in xs[k:]:
            s, _ = cell.step(params, s, x)
        return jnp.concatenate(list(s))

    return jax.jacfwd(rest)(jnp.concatenate(list(state)))


def test_rnn_state_jacobians_equal_the_seed_product(x64):
    cell = rnnjax.simple_rnn(H)
    params, xs = _setup(cell)
    _, steps = _numpy_rnn(params, xs)
    got = jacobians.state_jacobians(cell, params, xs)
    assert got.shape == (T + 1, H, H)
    for k in range(T + 1):
        expected = np.eye(H)
        for j in range(T, k, -1):  # d h_T / d h_k = D_T D_{T-1} ... D_{k+1}
            expected = expected @ steps[j - 1]
        assert_close(got[k], expected, scale=10)


def test_rnn_step_jacobians_closed_form_equals_autodiff_and_numpy(x64):
    cell = rnnjax.simple_rnn(H)
    params, xs = _setup(cell, seed=3)
    _, steps = _numpy_rnn(params, xs)
    closed = jacobians.rnn_step_jacobians(params, xs)
    assert_close(closed, np.stack(steps))
    assert_close(jacobians.step_jacobians(cell, params, xs), closed)


@pytest.mark.parametrize(
    "cell",
    [
        rnnjax.lstm(H),
        rnnjax.lstm(H, forget_bias=0.0),
        rnnjax.gru(H),
        rnnjax.gru(H, reset_after=True),
        rnnjax.min_gru(H),  # no w_h: the default state dtype comes from all the params
        rnnjax.min_lstm(H),
    ],
    ids=["lstm", "lstm_fb0", "gru", "gru_reset_after", "min_gru", "min_lstm"],
)
def test_gated_state_jacobians_equal_loop_jacobians(x64, cell):
    params, xs = _setup(cell, seed=5)
    got = jacobians.state_jacobians(cell, params, xs)
    size = H * (2 if cell.name == "lstm" else 1)
    assert got.shape == (T + 1, size, size)
    for k in (0, 3, T - 1, T):
        assert_close(got[k], _loop_jacobian(cell, params, xs, k), scale=10)
    h_block = jacobians.state_jacobians(cell, params, xs, part="h")
    assert_close(h_block, got[:, :H, :H])


def test_chain_of_step_jacobians_equals_state_jacobians(x64):
    cell = rnnjax.lstm(H)
    params, xs = _setup(cell, seed=7)
    steps = jacobians.step_jacobians(cell, params, xs)
    assert steps.shape == (T, 2 * H, 2 * H)
    assert_close(
        jacobians.chain_products(steps), jacobians.state_jacobians(cell, params, xs), scale=10
    )


def test_pairwise_jacobians_and_norms(x64):
    cell = rnnjax.gru(H)
    params, xs = _setup(cell, seed=9)
    steps = jacobians.step_jacobians(cell, params, xs)
    pairs = jacobians.pairwise_jacobians(steps)
    assert pairs.shape == (T + 1, T + 1, H, H)
    t = 6  # row t holds d s_t / d s_k: the state Jacobians of the first t steps
    assert_close(pairs[t, : t + 1], jacobians.state_jacobians(cell, params, xs[:t]), scale=10)
    assert np.all(np.asarray(pairs[t, t + 1 :]) == 0.0)
    norms = np.asarray(jacobians.pairwise_jacobian_norms(steps))
    assert_close(np.diag(norms), np.ones(T + 1))
    assert np.all(np.isnan(norms[np.triu_indices(T + 1, 1)]))
    final = jacobians.spectral_norm(jacobians.state_jacobians(cell, params, xs))
    assert_close(norms[-1], final, scale=10)


def test_spectral_norm_equals_numpy(x64):
    matrices = jax.random.normal(jax.random.key(0), (4, 6, 5), jnp.float64)
    assert_close(jacobians.spectral_norm(matrices), np.linalg.norm(matrices, ord=2, axis=(1, 2)))


def test_states_and_flatten_state(x64):
    cell = rnnjax.lstm(H)
    params, xs = _setup(cell)
    visited = jacobians.states(cell, params, xs)
    final, _ = rnnjax.scan(cell, params, xs)
    assert visited.shape == (T + 1, 2 * H)
    assert_close(visited[-1], jnp.concatenate([final.h, final.c]))
    assert_close(jacobians.flatten_state(final), visited[-1])
    assert_close(visited[0], np.zeros(2 * H))


def test_decay_rate_fits_geometric_decay_and_skips_underflow():
    lags = np.arange(20.0)
    assert_close(jacobians.decay_rate(0.5**lags), np.log(0.5))
    batch = np.stack([0.9**lags, 1.1**lags])
    assert_close(jacobians.decay_rate(batch), np.log([0.9, 1.1]))
    underflowed = np.where(lags < 8, 0.5**lags, 0.0)
    assert_close(jacobians.decay_rate(underflowed), np.log(0.5))
    assert np.isnan(jacobians.decay_rate(np.array([1.0, 0.5, 0.0, 0.0])))


def test_decay_rate_rejects_too_few_lags():
    with pytest.raises(ValueError, match=r"norms_by_lag must have shape \(\.\.\., L \+ 1\)"):
        jacobians.decay_rate(np.ones(2))


@pytest.mark.parametrize("rho", [0.5, 1.0, 1.5])
def test_linear_regime_meets_pascanu_bound_exactly(x64, rho):
    """Zero input and state keep tanh' = 1, so ||d h_T / d h_k|| = rho^(T-k) for orthogonal W."""
    cell = rnnjax.simple_rnn(H)
    orthogonal, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((H, H)))
    params = _float64(cell.init(jax.random.key(2), D))._replace(w_h=jnp.asarray(orthogonal))
    params = jacobians.with_spectral_radius(params, rho)
    norms = jacobians.spectral_norm(jacobians.state_jacobians(cell, params, jnp.zeros((T, D))))
    lags = np.arange(T + 1)
    assert_close(norms[::-1], jacobians.pascanu_bound(params.w_h, lags), scale=100)
    assert_close(jacobians.decay_rate(norms[::-1]), np.log(rho), scale=100)


def test_pascanu_bound_holds_with_saturating_inputs(x64):
    cell = rnnjax.simple_rnn(H)
    params, xs = _setup(cell, seed=4)
    params = jacobians.with_spectral_radius(params, 1.3)
    norms = jacobians.spectral_norm(jacobians.state_jacobians(cell, params, 3.0 * xs))[::-1]
    bound = jacobians.pascanu_bound(params.w_h, np.arange(T + 1))
    assert np.all(np.asarray(norms) <= np.asarray(bound) * (1 + 1e-12))
    diagonal = jnp.diag(jnp.array([-1.3, 0.5, 0.2]))
    assert_close(jacobians.pascanu_bound(diagonal, 2.0, gamma=0.25), (0.25 * 1.3) ** 2)


def test_with_spectral_radius_concrete_and_traced(x64):
    params = _float64(rnnjax.simple_rnn(H).init(jax.random.key(1), D))
    params = params._replace(w_h=params.w_h + 0.3)  # not orthogonal any more
    scaled = jacobians.with_spectral_radius(params, 0.7)
    assert_close(np.max(np.abs(np.linalg.eigvals(np.asarray(scaled.w_h)))), 0.7)
    traced = jax.jit(jacobians.with_spectral_radius)(params, 0.7)
    assert_close(traced.w_h, scaled.w_h, scale=100)


def test_with_spectral_radius_rejects_fused_kernels():
    params = rnnjax.lstm(H).init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"params.w_h must be square \(H, H\).*\(5, 20\)"):
        jacobians.with_spectral_radius(params, 1.0)


@pytest.mark.parametrize(
    "cell",
    [rnnjax.simple_rnn(H), rnnjax.lstm(H), rnnjax.gru(H, reset_after=True)],
    ids=["rnn", "lstm", "gru"],
)
def test_bptt_terms_sum_to_jax_grad(x64, cell):
    params, xs = _setup(cell, seed=11)
    size = H * (2 if cell.name == "lstm" else 1)
    readout = jax.random.normal(jax.random.key(12), (size,), jnp.float64)

    def loss(params):
        final, _ = rnnjax.scan(cell, params, xs)
        return jnp.sin(jacobians.flatten_state(final) @ readout)

    final, _ = rnnjax.scan(cell, params, xs)
    cotangent = jnp.cos(jacobians.flatten_state(final) @ readout) * readout
    terms = jacobians.bptt_terms(cell, params, xs, cotangent)
    expected = jax.grad(loss)(params)
    assert jax.tree.structure(terms) == jax.tree.structure(expected)
    for term, grad in zip(jax.tree.leaves(terms), jax.tree.leaves(expected), strict=True):
        assert term.shape == (T,) + grad.shape
        assert_close(term.sum(0), grad, scale=10)


def test_rnn_bptt_term_is_the_seed_outer_product(x64):
    cell = rnnjax.simple_rnn(H)
    params, xs = _setup(cell, seed=13)
    hs, steps = _numpy_rnn(params, xs)
    cotangent = np.linspace(-1.0, 1.0, H)
    terms = np.asarray(jacobians.bptt_terms(cell, params, xs, jnp.asarray(cotangent)).w_h)
    upstream = cotangent
    for k in range(T, 0, -1):  # upstream = dJ/dh_k; d+h_k/dw_h = outer(h_{k-1}, 1 - h_k^2)
        assert_close(terms[k - 1], np.outer(hs[k - 1], upstream * (1.0 - hs[k] ** 2)), scale=10)
        upstream = upstream @ steps[k - 1]


def test_errors_name_the_argument():
    cell = rnnjax.simple_rnn(H)
    params = cell.init(jax.random.key(0), D)
    xs = jnp.ones((T, D))
    with pytest.raises(ValueError, match=r"part must be one of \('full', 'h'\); got 'c'"):
        jacobians.state_jacobians(cell, params, xs, part="c")
    with pytest.raises(ValueError, match=r"xs must have rank 2 .* got shape \(2, 9, 3\)"):
        jacobians.state_jacobians(cell, params, jnp.ones((2, T, D)))
    with pytest.raises(TypeError, match="xs must have a floating-point dtype"):
        jacobians.step_jacobians(cell, params, jnp.ones((T, D), jnp.int32))
    with pytest.raises(TypeError, match="cell must be an rnnjax Cell"):
        jacobians.state_jacobians(params, params, xs)
    with pytest.raises(ValueError, match=r"final_cotangent must have shape \(5,\).*got \(4,\)"):
        jacobians.bptt_terms(cell, params, xs, jnp.ones(4))
