"""ELK / quasi-ELK (damped Newton as a parallel Kalman smoother), DEER's overflow guard, the pinned
stopping rule, ``T = 0`` and resets in ``rnnjax.parallel_scan``.

Compiled without XLA's backend optimisations (as in test_parallel_scan.py): the associative scans
compile twice as fast, and the suite runs on two cores.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax import _kalman
from rnnjax._parallel_auto import parallel_method
from rnnjax._parallel_scan import parallel_scan
from tests.tolerances import assert_close

_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
HIDDEN, INPUT = 4, 3


def _tanh_rnn(gain, hidden=8, seed=0, dtype=jnp.float32):
    """A tanh RNN with ``w_h ~ N(0, gain^2 / H)`` (chaotic for gain > 1) and its params."""
    init = jax.nn.initializers.normal(gain / np.sqrt(hidden))
    cell = rnnjax.simple_rnn(hidden, recurrent_init=init, param_dtype=dtype)
    return cell, cell.init(jax.random.key(seed), INPUT)


def _xs(steps, dtype=jnp.float32, seed=1):
    return jax.random.normal(jax.random.key(seed), (steps, INPUT), dtype)


@pytest.mark.parametrize("diagonal", [False, True])
def test_damped_solve_equals_the_normal_equations(diagonal, x64):
    keys = jax.random.split(jax.random.key(0), 3)
    jac = 1.5 * jax.random.normal(keys[0], (7, 3, 3), jnp.float64)
    if diagonal:
        jac = jac[:, 0]
    offset = jax.random.normal(keys[1], (7, 3), jnp.float64)
    target = jax.random.normal(keys[2], (7, 3), jnp.float64)
    for damping in (1e-3, 0.5, 10.0):
        actual = _kalman.damped_solve(jac, offset, target, jnp.asarray(damping))
        expected = _kalman.damped_solve_reference(jac, offset, target, damping)
        np.testing.assert_allclose(actual, expected, atol=1e-10)
    # No damping: DEER's exact linear recurrence.
    undamped = _kalman.damped_solve(jac, offset, target, jnp.asarray(1e-300))
    np.testing.assert_allclose(undamped, _kalman.linear_scan(jac.at[0].set(0), offset), atol=1e-10)


@pytest.mark.parametrize("method", ["elk", "quasi_elk"])
def test_elk_outputs_and_gradients_match_scan(method, x64):
    cell = rnnjax.gru(HIDDEN, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(2), INPUT)
    xs = _xs(12, jnp.float64)

    def loss(run):
        final, ys = run(params, xs)[:2]
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h**2)

    sequential = _jit(jax.value_and_grad(lambda p, x: loss(lambda *a: rnnjax.scan(cell, *a))))
    parallel = _jit(
        jax.value_and_grad(
            lambda p, x: loss(lambda *a: parallel_scan(cell, *a, method=method, tol=1e-12))
        )
    )
    (value, grads), (p_value, p_grads) = sequential(params, xs), parallel(params, xs)
    assert_close(p_value, value, scale=1e2)
    for a, e in zip(jax.tree_util.tree_leaves(p_grads), jax.tree_util.tree_leaves(grads)):
        assert_close(a, e, scale=1e2)
    _, _, info = _jit(functools.partial(parallel_scan, cell, method=method))(params, xs)
    assert bool(info.converged) and not bool(info.fell_back) and int(info.iterations) >= 1


@pytest.mark.slow
def test_elk_check_grads(x64):
    cell = rnnjax.lstm(2, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(3), INPUT)

    @jax.jit
    def run(params, xs):
        final, ys, _ = parallel_scan(cell, params, xs, method="elk", tol=1e-13)
        return jnp.sum(jnp.cos(ys)) + jnp.sum(final.c)

    check_grads(run, (params, _xs(6, jnp.float64)), order=1, modes=["rev"])


def test_elk_length_and_vmap_match_scan():
    cell = rnnjax.gru(HIDDEN)
    params = cell.init(jax.random.key(4), INPUT)
    xs = jnp.stack([_xs(10, seed=5), _xs(10, seed=6)])
    lengths = jnp.array([10, 4])
    final, ys = jax.vmap(lambda x, n: rnnjax.scan(cell, params, x, length=n))(xs, lengths)
    run = _jit(jax.vmap(lambda x, n: parallel_scan(cell, params, x, length=n, method="elk")))
    p_final, p_ys, info = run(xs, lengths)
    assert info.iterations.shape == (2,) and bool(jnp.all(info.converged))
    assert_close(p_ys, ys, scale=10)
    assert_close(p_final.h, final.h, scale=10)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_chaotic_cell_converges_within_the_sensitivity_bound(dtype, request):
    """g = 2: DEER's undamped recurrence overflows; ELK and the guarded DEER both end converged.

    On a chaotic cell the answer is only defined up to its sensitivity: two sequential runs whose
    states differ by ``delta`` drift apart by up to ``gain * delta``. A converged parallel run
    leaves an error of at most ``residual * (1 + |s|)`` at each of the ``T`` steps, so it must stay
    within ``T * gain * residual * (1 + max |s|)`` of ``scan`` (and never beyond the distance
    two sequential runs a rounding unit apart reach, times ``1e3``, when that is larger).
    """
    if dtype == jnp.float64:
        request.getfixturevalue("x64")
    cell, params = _tanh_rnn(2.0, dtype=dtype)
    steps = 40
    xs = _xs(steps, dtype)
    _, ys = rnnjax.scan(cell, params, xs)
    eps = float(jnp.finfo(dtype).eps)
    delta = 1e-3 * float(jnp.sqrt(eps))
    _, ys_nudged = rnnjax.scan(
        cell, params, xs, initial_state=rnnjax.RNNState(jnp.full((8,), delta, dtype))
    )
    gain = float(jnp.max(jnp.abs(ys_nudged - ys))) / delta
    assert gain > 1.0  # the cell amplifies perturbations: chaotic at this gain
    scale = 1 + float(jnp.max(jnp.abs(ys)))
    for method in ("elk", "deer"):
        run = _jit(functools.partial(parallel_scan, cell, method=method, max_iter=200))
        _, p_ys, info = run(params, xs)
        assert bool(info.converged) and not bool(info.fell_back), (method, info)
        error = float(jnp.max(jnp.abs(p_ys - ys)))
        bound = steps * gain * max(float(info.residual), eps) * scale
        assert error <= bound, (method, error, bound)


@pytest.mark.parametrize(
    ("method", "max_iter"),
    [("deer", 1000), ("quasi_deer", 1000), pytest.param("elk", 3000, marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chaotic_cell_settles_within_t_newton_iterations(method, max_iter, seed, x64):
    """Each Newton iteration makes at least one more step exact, in floating point too.

    At g = 2.5, T = 1000 the Jacobian products grow past ``1 / eps``: without the settled prefix
    the rounding residuals of the already-exact steps were amplified into every later step and
    DEER did not converge within ``T`` iterations (seed 2). The returned outputs' residual is
    recomputed here from ``cell.step``: ``ys_t = f(s_{t-1})`` is the image of the solver's state,
    so its residual may exceed ``tol`` by the step's Lipschitz constant, ``1 + ||W_h||``.
    """
    steps = 1000
    cell, params = _tanh_rnn(2.5, hidden=8, seed=seed, dtype=jnp.float64)
    xs = 0.1 * _xs(steps, jnp.float64, seed=seed + 1)
    run = _jit(functools.partial(parallel_scan, cell, method=method, max_iter=max_iter))
    _, ys, info = run(params, xs)
    assert bool(info.converged) and not bool(info.fell_back), info  # within max_iter (= T)
    previous = jnp.concatenate([jnp.zeros((1, 8), ys.dtype), ys[:-1]])
    images = jax.vmap(lambda h, x: cell.step(params, rnnjax.RNNState(h), x)[1])(previous, xs)
    residual = jnp.max(jnp.abs(ys - images) / (1 + jnp.abs(images)))
    lipschitz = float(jnp.max(jnp.sum(jnp.abs(params.w_h), axis=0)))  # of h -> h @ w_h, inf-norm
    assert float(residual) <= 1e-10 * (1 + lipschitz), (float(residual), lipschitz)


@pytest.mark.parametrize(
    "method", ["deer", "quasi_deer", pytest.param("elk", marks=pytest.mark.slow)]
)
def test_stopping_rule_is_pinned(method, x64):
    """The iteration stops at the first iterate whose residual is <= tol, never before.

    Run with max_iter = k for each k to read the residual after k iterations, then set tol to that
    residual exactly: the solver must report exactly k iterations and a residual <= tol, and a
    looser tol no more. A rule stopping at 1e4 * tol (or at < tol) stops at another k.
    """
    cell, params = _tanh_rnn(1.0, hidden=HIDDEN, dtype=jnp.float64)
    xs = _xs(30, jnp.float64)
    run = _jit(
        lambda p, x, tol, max_iter: parallel_scan(cell, p, x, method=method, max_iter=max_iter,
                                                  tol=tol, on_failure="raise"),
        static_argnums=(2, 3),
    )  # fmt: skip
    initial = float(run(params, xs, 1e300, 1)[2].residual)  # stops before any iteration
    residuals = [initial] + [float(run(params, xs, 1e-300, k)[2].residual) for k in range(1, 7)]
    assert all(np.isfinite(residuals))
    # Iteration counts k whose residual is below every earlier one: tol = r_k stops exactly there.
    pinned = [k for k in range(1, 7) if residuals[k] < min(residuals[:k])]
    assert len(pinned) >= 2, residuals
    for k in pinned[-2:]:
        info = run(params, xs, residuals[k], 50)[2]
        assert int(info.iterations) == k and float(info.residual) <= residuals[k]
        looser = run(params, xs, min(residuals[:k]), 50)[2]
        assert int(looser.iterations) <= k - 1 and float(looser.residual) <= min(residuals[:k])


def test_zero_steps_behaves_like_scan():
    cell = rnnjax.lstm(HIDDEN)
    params = cell.init(jax.random.key(0), INPUT)
    state = rnnjax.LSTMState(jnp.ones(HIDDEN), 2 * jnp.ones(HIDDEN))
    for method in ("deer", "elk", "auto"):
        final, ys, info = parallel_scan(
            cell, params, jnp.zeros((0, INPUT)), initial_state=state, method=method
        )
        assert ys.shape == (0, HIDDEN)
        assert_close(final.h, state.h) and assert_close(final.c, state.c)
        assert bool(info.converged) and int(info.iterations) == 0


@pytest.mark.parametrize(
    "method, reverse",
    [
        ("deer", False),
        pytest.param("quasi_elk", False, marks=pytest.mark.slow),
        pytest.param("deer", True, marks=pytest.mark.slow),
    ],
)
def test_resets_equal_running_the_segments_separately(method, reverse, x64):
    cell = rnnjax.gru(HIDDEN, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(7), INPUT)
    xs = _xs(12, jnp.float64)
    state = rnnjax.RNNState(0.3 * jnp.ones(HIDDEN, jnp.float64))
    resets = jnp.zeros(12, bool).at[jnp.array([0, 5, 9])].set(True)

    def segments(params, xs, state):
        runs = [
            rnnjax.scan(cell, params, xs[start:stop], initial_state=state, reverse=reverse)
            for start, stop in ((0, 5), (5, 9), (9, 12))
        ]
        # Forward, the last segment ends the run; reversed, the first one does.
        final = runs[0][0] if reverse else runs[-1][0]
        return final, jnp.concatenate([ys for _, ys in runs])

    def parallel(params, xs, state):
        final, ys, _ = parallel_scan(
            cell, params, xs, initial_state=state, resets=resets, method=method, reverse=reverse,
            tol=1e-12,
        )  # fmt: skip
        return final, ys

    def loss(run):
        return lambda *args: jnp.sum(jnp.sin(run(*args)[1])) + jnp.sum(run(*args)[0].h ** 2)

    expected = segments(params, xs, state)
    actual = _jit(parallel)(params, xs, state)
    assert_close(actual[1], expected[1], scale=1e2)
    assert_close(actual[0].h, expected[0].h, scale=1e2)
    grads = jax.grad(loss(segments), argnums=(0, 1, 2))(params, xs, state)
    p_grads = _jit(jax.grad(loss(parallel), argnums=(0, 1, 2)))(params, xs, state)
    for a, e in zip(jax.tree_util.tree_leaves(p_grads), jax.tree_util.tree_leaves(grads)):
        assert_close(a, e, scale=1e3)


def test_auto_picks_a_method_and_matches_scan():
    cell = rnnjax.gru(HIDDEN)
    params = cell.init(jax.random.key(8), INPUT)
    xs = _xs(50)
    choice = parallel_method(cell, params, xs, backend="cpu")
    assert choice in ("scan", "deer", "elk")
    _, ys = rnnjax.scan(cell, params, xs)
    auto = functools.partial(parallel_scan, cell, method="auto")
    # Eager: the choice is made in Python; under jit it is a lax.switch over the three.
    for run in (auto, _jit(auto)):
        _, p_ys, info = run(params, xs)
        assert bool(info.converged)
        assert_close(p_ys, ys, scale=10)
