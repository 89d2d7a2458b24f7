"""``rnnjax.parallel_scan`` (DEER, quasi-DEER) against the sequential ``rnnjax.scan``.

Every comparison is jitted once per configuration and reused across seeds, with XLA's backend
optimisations off: compiling the associative scans dominates these tests on CPU (optimisation
level 0 halves it), and the suite runs on two cores.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax._parallel_scan import ConvergenceError, ParallelScanInfo, parallel_scan
from tests.tolerances import assert_close

HIDDEN, INPUT, STEPS = 5, 3, 16
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

CELLS = {
    "simple_rnn": lambda dtype: rnnjax.simple_rnn(HIDDEN, param_dtype=dtype),
    "lstm": lambda dtype: rnnjax.lstm(HIDDEN, param_dtype=dtype),
    "gru": lambda dtype: rnnjax.gru(HIDDEN, param_dtype=dtype),
    "gru_reset_after": lambda dtype: rnnjax.gru(HIDDEN, reset_after=True, param_dtype=dtype),
}


def _chaotic_cell(gain: float = 2.5, hidden: int = 8):
    """A tanh RNN with ``w_h ~ N(0, gain^2 / H)``: chaotic for gain > 1 (Sompolinsky et al. 1988)."""
    init = jax.nn.initializers.normal(gain / np.sqrt(hidden))
    return rnnjax.simple_rnn(hidden, recurrent_init=init)


def _loss(outputs):
    final_state, ys = outputs[:2]
    leaves = jax.tree_util.tree_leaves(final_state)
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in leaves)


def _value_and_grad(run):
    """Jitted ``(params, xs, initial_state) -> ((loss, outputs), grads)`` of a runner."""

    def loss(params, xs, initial_state):
        outputs = run(params, xs, initial_state)
        return _loss(outputs), outputs

    return _jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def _inputs(cell, seed, dtype, steps=STEPS):
    keys = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(keys[0], INPUT)
    xs = jax.random.normal(keys[1], (steps, INPUT), dtype)
    state = cell.initial_state((), dtype)
    leaves = jax.random.normal(keys[2], (len(state), cell.hidden_size), dtype)
    return params, xs, type(state)(*(0.5 * leaf for leaf in leaves))


def _assert_trees_close(actual, expected, scale):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for a, e in zip(
        jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected), strict=True
    ):
        assert_close(a, e, scale=scale)


@pytest.mark.parametrize(
    "name, method",
    [("simple_rnn", "deer"), ("lstm", "deer"), ("gru", "deer"), ("lstm", "quasi_deer")]
    + [pytest.param("gru_reset_after", "deer", marks=pytest.mark.slow)],
)
def test_outputs_and_gradients_match_sequential_scan(name, method, x64):
    cell = CELLS[name](jnp.float64)
    sequential = _value_and_grad(lambda p, x, s: rnnjax.scan(cell, p, x, initial_state=s))
    parallel = _value_and_grad(
        lambda p, x, s: parallel_scan(cell, p, x, initial_state=s, method=method)
    )
    for seed in range(3):
        args = _inputs(cell, seed, jnp.float64)
        (loss, (final, ys)), grads = sequential(*args)
        (p_loss, (p_final, p_ys, info)), p_grads = parallel(*args)
        assert bool(info.converged) and not bool(info.fell_back)
        assert 0 < int(info.iterations) <= (10 if method == "deer" else 100)
        # Default tol 1e-10 on the residual; these cells contract, so errors stay near it.
        _assert_trees_close((p_final, p_ys, p_loss), (final, ys, loss), scale=1e3)
        _assert_trees_close(p_grads, grads, scale=1e3)


def test_float32_default_tolerance_matches_sequential_scan():
    cell = rnnjax.lstm(16)
    params, xs, state = _inputs(cell, 0, jnp.float32, steps=200)
    final, ys = rnnjax.scan(cell, params, xs, initial_state=state)
    p_final, p_ys, info = _jit(functools.partial(parallel_scan, cell))(
        params, xs, initial_state=state
    )
    assert bool(info.converged) and float(info.residual) <= 1e-5
    _assert_trees_close((p_final, p_ys), (final, ys), scale=10)


@pytest.mark.parametrize("method", ["deer", pytest.param("quasi_deer", marks=pytest.mark.slow)])
def test_check_grads(method, x64):
    cell = rnnjax.gru(3, param_dtype=jnp.float64)
    params, xs, _ = _inputs(cell, 1, jnp.float64, steps=12)

    # check_grads nests its own jit, where compiler_options are refused.
    @jax.jit
    def run(params, xs):
        final, ys, _ = parallel_scan(cell, params, xs, method=method, tol=1e-13)
        return jnp.sum(jnp.cos(ys)) + jnp.sum(final.h)

    check_grads(run, (params, xs), order=1, modes=["rev"])


def test_reverse_initial_guess_and_vmap():
    cell = rnnjax.gru(HIDDEN)
    params, _, _ = _inputs(cell, 2, jnp.float32)
    xs = jax.random.normal(jax.random.key(3), (2, STEPS, INPUT))
    final, ys = jax.vmap(lambda x: rnnjax.scan(cell, params, x, reverse=True))(xs)
    # Per example: no guess, and the exact trajectory as guess (zero iterations needed).
    guess = rnnjax.RNNState(ys * jnp.array([0.0, 1.0])[:, None, None])

    @_jit
    @jax.vmap
    def run(x, guess):
        return parallel_scan(cell, params, x, reverse=True, initial_guess=guess)

    p_final, p_ys, info = run(xs, guess)
    _assert_trees_close((p_final, p_ys), (final, ys), scale=10)
    assert info.iterations.shape == (2,) and int(info.iterations[1]) == 0
    assert int(info.iterations[0]) > 0 and bool(jnp.all(info.converged))


def _length_value_and_grad(run):
    """Jitted per-example ``(params, xs [B, T, D], lengths [B], state) -> ((loss, out), grads)``.

    The loss sums over the batch, so the params' gradient sums over examples and each example's
    ``xs`` gets its own gradient.
    """

    def loss(params, xs, lengths, initial_state):
        outputs = jax.vmap(run, in_axes=(None, 0, 0, None))(params, xs, lengths, initial_state)
        return _loss(outputs), outputs

    return _jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


@pytest.mark.parametrize(
    "name, method, reverse",
    [
        ("gru", "deer", False),
        ("lstm", "quasi_deer", False),
        ("gru", "deer", True),
        # The other pairings, in the slow step (each method and cell is covered above).
        pytest.param("lstm", "deer", False, marks=pytest.mark.slow),
        pytest.param("gru", "quasi_deer", False, marks=pytest.mark.slow),
    ],
)
def test_length_matches_sequential_scan_under_vmap(name, method, reverse, x64):
    cell = CELLS[name](jnp.float64)
    params, xs, state = _inputs(cell, 6, jnp.float64)
    lengths = jnp.array([0, STEPS // 2, STEPS, 3])
    # NaN/inf in the padding of the partial examples must reach neither outputs nor gradients.
    padded = xs.at[STEPS // 2 :].set(jnp.nan)
    batch = jnp.stack([xs.at[:].set(jnp.inf), padded, xs, padded])
    sequential = _length_value_and_grad(
        lambda p, x, n, s: rnnjax.scan(cell, p, x, initial_state=s, length=n, reverse=reverse)
    )
    parallel = _length_value_and_grad(
        lambda p, x, n, s: parallel_scan(
            cell, p, x, initial_state=s, length=n, method=method, reverse=reverse
        )
    )
    (loss, (final, ys)), grads = sequential(params, batch, lengths, state)
    (p_loss, (p_final, p_ys, info)), p_grads = parallel(params, batch, lengths, state)
    assert bool(jnp.all(info.converged)) and not bool(jnp.any(info.fell_back))
    for leaf in jax.tree_util.tree_leaves((p_loss, p_final, p_ys, p_grads)):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    _assert_trees_close((p_final, p_ys, p_loss), (final, ys, loss), scale=1e3)
    _assert_trees_close(p_grads, grads, scale=1e3)
    # length 0 returns the initial state; padded steps output zeros and get zero gradient.
    _assert_trees_close(jax.tree_util.tree_map(lambda leaf: leaf[0], p_final), state, scale=1)
    assert not bool(jnp.any(p_ys[0])) and not bool(jnp.any(p_ys[3, 3:]))
    assert not bool(jnp.any(p_grads[1][0])) and not bool(jnp.any(p_grads[1][1, STEPS // 2 :]))


def test_traced_length_out_of_range_acts_clipped():
    cell = rnnjax.gru(HIDDEN)
    params, xs, _ = _inputs(cell, 7, jnp.float32)
    run = _jit(functools.partial(parallel_scan, cell))
    full_final, full_ys, _ = run(params, xs)
    final, ys, _ = run(params, xs, length=jnp.int32(STEPS + 5))
    _assert_trees_close((final, ys), (full_final, full_ys), scale=1)
    final, ys, _ = run(params, xs, length=jnp.int32(-2))
    assert not bool(jnp.any(ys)) and not bool(jnp.any(final.h))


@pytest.mark.parametrize("method", ["deer", "quasi_deer"])
def test_chaotic_cell_is_detected_and_falls_back(method):
    cell = _chaotic_cell()
    params, _, _ = _inputs(cell, 0, jnp.float32)
    xs = jax.random.normal(jax.random.key(4), (300, INPUT))
    _, ys = rnnjax.scan(cell, params, xs)
    run = _jit(functools.partial(parallel_scan, cell, method=method))
    p_final, p_ys, info = run(params, xs)
    assert not bool(info.converged) and bool(info.fell_back)
    assert not float(info.residual) <= 1e-5
    # Chaos amplifies any rounding difference, so after the first steps compare each step of the
    # returned trajectory with one step of the cell from its own previous state (shadowing).
    assert_close(p_ys[:20], ys[:20])
    prev = jnp.concatenate([jnp.zeros((1, cell.hidden_size)), p_ys[:-1]])
    _, one_step = jax.vmap(cell.step, in_axes=(None, 0, 0))(params, rnnjax.RNNState(prev), xs)
    assert_close(p_ys, one_step)
    assert_close(p_final.h, p_ys[-1])


def test_chaotic_cell_raises_or_returns_nan():
    cell = _chaotic_cell()
    params, xs, _ = _inputs(cell, 0, jnp.float32, steps=300)
    with pytest.raises(ConvergenceError, match=r"did not converge to tol 1e-05 in \d+ iterations"):
        parallel_scan(cell, params, xs, on_failure="raise")
    final, ys, info = _jit(functools.partial(parallel_scan, cell, on_failure="raise"))(params, xs)
    assert not bool(info.converged) and not bool(info.fell_back)
    assert bool(jnp.all(jnp.isnan(ys))) and bool(jnp.all(jnp.isnan(final.h)))


@pytest.mark.parametrize("method", [pytest.param("deer", marks=pytest.mark.slow), "quasi_deer"])
def test_gradients_after_fallback_match_sequential_scan(method, x64):
    cell = _chaotic_cell(hidden=HIDDEN)
    args = _inputs(cell, 5, jnp.float64, steps=30)
    (_, (_, ys)), grads = _value_and_grad(lambda p, x, s: rnnjax.scan(cell, p, x, initial_state=s))(
        *args
    )
    run = _value_and_grad(
        lambda p, x, s: parallel_scan(cell, p, x, initial_state=s, method=method, max_iter=2)
    )
    (_, (_, p_ys, info)), p_grads = run(*args)
    assert bool(info.fell_back)
    _assert_trees_close(p_ys, ys, scale=1.0)
    _assert_trees_close(p_grads, grads, scale=1e3)


def test_info_fields():
    assert ParallelScanInfo._fields == ("iterations", "converged", "residual", "fell_back")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"method": "newton"},
            ValueError,
            r"method must be one of \('deer', 'quasi_deer', 'elk', 'quasi_elk', 'auto'\)",
        ),
        ({"max_iter": 0}, ValueError, "max_iter must be a positive int; got 0"),
        ({"tol": -1.0}, ValueError, "tol must be a positive float or None"),
        ({"on_failure": "ignore"}, ValueError, "on_failure must be 'fallback' or 'raise'"),
        (
            {"xs": jnp.ones((2, 4, INPUT))},
            ValueError,
            r"xs must have rank 2 .* got shape \(2, 4, 3\)",
        ),
        ({"xs": jnp.ones((4, INPUT), jnp.int32)}, TypeError, "xs must have a floating-point dtype"),
        ({"resets": jnp.zeros(4)}, TypeError, "resets must have dtype bool"),
        ({"resets": jnp.zeros(3, bool)}, ValueError, r"resets must have shape \(4,\); got \(3,\)"),
        ({"xs": jnp.ones((4, 7))}, ValueError, r"x must have shape \(..., input_size=3\)"),
        (
            {"initial_guess": rnnjax.RNNState(jnp.zeros((3, HIDDEN)))},
            ValueError,
            r"initial_guess leaves must have shape \(4, 5\) .* got \(3, 5\)",
        ),
        (
            {"initial_guess": jnp.zeros((4, HIDDEN))},
            ValueError,
            "initial_guess must have the state's",
        ),
        (
            {"initial_state": rnnjax.RNNState(jnp.zeros((2, HIDDEN)))},
            ValueError,
            r"initial_state leaves must have shape \(5,\)",
        ),
        ({"length": 5}, ValueError, r"length must lie in \[0, 4\] .* got values in \[5, 5\]"),
        ({"length": -1}, ValueError, r"length must lie in \[0, 4\]"),
        ({"length": jnp.array([2, 3])}, ValueError, r"length must have shape \(\) .* \(2,\)"),
        ({"length": 2.0}, TypeError, "length must have an integer dtype; got dtype float"),
    ],
)
def test_bad_input_errors(kwargs, error, match):
    cell = rnnjax.gru(HIDDEN)
    params = cell.init(jax.random.key(0), INPUT)
    kwargs = {"xs": jnp.ones((4, INPUT)), **kwargs}
    with pytest.raises(error, match=match):
        parallel_scan(cell, params, **kwargs)


def test_rejects_non_cell():
    with pytest.raises(TypeError, match="cell must be an rnnjax Cell"):
        parallel_scan(lambda s, x: s, None, jnp.ones((4, INPUT)))


def test_newton_runs_its_matmuls_at_full_precision():
    """Under TF32 (a GPU's float32 default) Newton stalls, so every matmul of the solve, its
    gradient and the outputs is pinned to HIGHEST, whatever precision the caller set."""
    import re

    cell = rnnjax.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((5, 3))
    for method in ("deer", "quasi_deer"):
        solve = functools.partial(parallel_scan, cell, method=method)
        with jax.default_matmul_precision("bfloat16"):
            forward = str(jax.make_jaxpr(solve)(params, xs))
            backward = str(
                jax.make_jaxpr(jax.grad(lambda p, x, solve=solve: jnp.sum(solve(p, x)[1])))(
                    params, xs
                )
            )
        for text in (forward, backward):
            found = set(re.findall(r"precision=\(?([A-Za-z.]+)", text))
            assert found == {"Precision.HIGHEST"}, found
        # Outside parallel_scan the caller's setting still holds.
        with jax.default_matmul_precision("bfloat16"):
            plain = str(jax.make_jaxpr(lambda p, x: rnnjax.scan(cell, p, x))(params, xs))
        assert "HIGHEST" not in plain
