"""Bad input to the parallel-in-time solvers (``rnnjax.parallel_scan``, DEER / quasi-DEER / ELK,
and ``rnnjax.parallel_minimal_scan``): each case raises the named exception and the message names
the argument. Where ``rnnjax.scan`` accepts an input (T = 0), the parallel solvers must too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax

KEY = jax.random.key(0)
CELL = rnnjax.gru(4)
PARAMS = CELL.init(KEY, 3)
MIN_CELL = rnnjax.min_gru(4)
MIN_PARAMS = MIN_CELL.init(KEY, 3)
XS = jnp.ones((6, 3))


def _parallel(**options):
    return rnnjax.parallel_scan(CELL, PARAMS, XS, **options)


def _minimal(**options):
    return rnnjax.parallel_minimal_scan(MIN_CELL, MIN_PARAMS, XS, **options)


CASES = [
    pytest.param(lambda: _parallel(method="newton"), ValueError, "method", id="method-unknown"),
    pytest.param(lambda: _parallel(max_iter=0), ValueError, "max_iter", id="max-iter-0"),
    pytest.param(lambda: _parallel(max_iter=2.5), ValueError, "max_iter", id="max-iter-float"),
    pytest.param(lambda: _parallel(max_iter=True), ValueError, "max_iter", id="max-iter-bool"),
    pytest.param(lambda: _parallel(tol=0.0), ValueError, "tol", id="tol-0"),
    pytest.param(lambda: _parallel(tol=-1e-6), ValueError, "tol", id="tol-negative"),
    pytest.param(lambda: _parallel(tol="1e-6"), ValueError, "tol", id="tol-str"),
    pytest.param(
        lambda: _parallel(on_failure="ignore"), ValueError, "on_failure", id="on-failure-unknown"
    ),
    pytest.param(
        lambda: _parallel(initial_guess=jnp.zeros((6, 4))),
        ValueError,
        "initial_guess",
        id="guess-structure",
    ),
    pytest.param(
        lambda: _parallel(initial_guess=rnnjax.GRUState(jnp.zeros((5, 4)))),
        ValueError,
        "initial_guess",
        id="guess-shape",
    ),
    pytest.param(lambda: _parallel(length=7), ValueError, "length", id="length-past-t"),
    pytest.param(lambda: _parallel(length=-1), ValueError, "length", id="length-negative"),
    pytest.param(lambda: _parallel(length=2.0), TypeError, "length", id="length-float"),
    pytest.param(
        lambda: _parallel(initial_state=rnnjax.lstm(4).initial_state()),
        ValueError,
        "initial_state",
        id="state-of-lstm",
    ),
    pytest.param(
        lambda: rnnjax.parallel_scan(CELL, PARAMS, jnp.ones((2, 6, 3))),
        ValueError,
        "xs",
        id="xs-batched",
    ),
    pytest.param(
        lambda: rnnjax.parallel_scan(CELL, PARAMS, jnp.ones((6, 4))),
        ValueError,
        "x",
        id="xs-wrong-width",
    ),
    pytest.param(
        lambda: rnnjax.parallel_scan(CELL, PARAMS, jnp.ones((6, 3), int)),
        TypeError,
        "xs",
        id="xs-int",
    ),
    pytest.param(lambda: rnnjax.parallel_scan("gru", PARAMS, XS), TypeError, "cell", id="cell-str"),
    pytest.param(
        lambda: rnnjax.parallel_scan(CELL, rnnjax.lstm(4).init(KEY, 3), XS),
        TypeError,
        "params",
        id="params-of-lstm",
    ),
    pytest.param(
        lambda: rnnjax.parallel_minimal_scan(CELL, PARAMS, XS),
        (TypeError, ValueError),
        "cell",
        id="minimal-gru-cell",
    ),
    pytest.param(
        lambda: rnnjax.parallel_minimal_scan(MIN_CELL, MIN_PARAMS, jnp.ones((2, 6, 3))),
        ValueError,
        "xs",
        id="minimal-xs-batched",
    ),
    pytest.param(lambda: _minimal(length=7), ValueError, "length", id="minimal-length-past-t"),
    pytest.param(
        lambda: _minimal(initial_state=jnp.zeros(5)),
        ValueError,
        "initial_state",
        id="minimal-state-shape",
    ),
    pytest.param(
        lambda: rnnjax.parallel_minimal_scan(MIN_CELL, MIN_PARAMS, jnp.ones((6, 3), int)),
        TypeError,
        "xs",
        id="minimal-xs-int",
    ),
]


@pytest.mark.parametrize("call, error, match", CASES)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("method", ["deer", "quasi_deer", "elk", "quasi_elk"])
def test_empty_sequence_matches_scan(method):
    """Issue 23: parallel_scan refused T = 0 while scan accepts it."""
    xs = jnp.ones((0, 3))
    state, ys, _ = rnnjax.parallel_scan(CELL, PARAMS, xs, method=method)
    expected_state, expected_ys = rnnjax.scan(CELL, PARAMS, xs)
    assert ys.shape == expected_ys.shape == (0, 4)
    np.testing.assert_array_equal(np.asarray(state.h), np.asarray(expected_state.h))


def test_minimal_empty_sequence_matches_scan():
    xs = jnp.ones((0, 3))
    state, ys = rnnjax.parallel_minimal_scan(MIN_CELL, MIN_PARAMS, xs)
    assert ys.shape == (0, 4)
    np.testing.assert_array_equal(np.asarray(state.h), np.zeros(4))
