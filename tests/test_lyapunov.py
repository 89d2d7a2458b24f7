"""``rnnjax.jacobians.lyapunov_exponents`` (QR method) against closed forms and a NumPy oracle, and
the auto rule's cost model (``rnnjax._parallel_auto``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import _parallel_auto
from rnnjax.jacobians import largest_lyapunov_exponent, lyapunov_exponents


def test_diagonal_jacobians_give_the_log_of_their_entries():
    jac = jnp.broadcast_to(jnp.diag(jnp.array([2.0, 0.5, 0.25])), (20, 3, 3))
    np.testing.assert_allclose(lyapunov_exponents(jac, num=3), np.log([2.0, 0.5, 0.25]), rtol=1e-5)


def test_rotation_times_scale_has_a_double_exponent():
    # A scaled rotation stretches every direction equally: both exponents are log(scale).
    angle = 0.7
    rotation = jnp.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    jac = jnp.broadcast_to(1.5 * rotation, (30, 2, 2))
    np.testing.assert_allclose(lyapunov_exponents(jac, num=2), np.log([1.5, 1.5]), rtol=1e-5)


def test_matches_a_numpy_product_of_random_matrices(x64):
    """Oracle: the growth of the top singular value of the whole product (NumPy, float64)."""
    rng = np.random.default_rng(0)
    jac = rng.standard_normal((60, 4, 4)) / 2
    product = np.eye(4)
    log_norm = 0.0
    for j in jac:
        product = j @ product
        scale = np.linalg.norm(product, 2)
        log_norm += np.log(scale)
        product /= scale
    top = lyapunov_exponents(jnp.asarray(jac), num=1)[0]
    # The QR estimate and the norm growth share the same limit; over 60 steps they agree closely.
    np.testing.assert_allclose(top, log_norm / 60, atol=0.05)


def test_tanh_rnn_exponent_signs():
    # Small finite networks can sit on a stable orbit even at gain > 1: H = 32 does not here.
    init_small = jax.nn.initializers.normal(0.5 / np.sqrt(32))
    init_large = jax.nn.initializers.normal(3.0 / np.sqrt(32))
    xs = 0.1 * jax.random.normal(jax.random.key(1), (300, 3))
    for init, positive in ((init_small, False), (init_large, True)):
        cell = rnnjax.simple_rnn(32, recurrent_init=init)
        params = cell.init(jax.random.key(0), 3)
        exponent = float(largest_lyapunov_exponent(cell, params, xs, burn_in=50))
        assert (exponent > 0) == positive, exponent


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"step_jacobians": jnp.ones((3, 2, 4))}, r"step_jacobians must have shape \(T, S, S\)"),
        ({"num": 0}, r"num must be an int in \[1, 2\]"),
        ({"num": 3}, r"num must be an int in \[1, 2\] .* got 3"),
        ({"burn_in": 5}, r"burn_in must be an int in \[0, 5\)"),
    ],
)
def test_bad_input_errors(kwargs, match):
    kwargs = {"step_jacobians": jnp.ones((5, 2, 2)), **kwargs}
    with pytest.raises(ValueError, match=match):
        lyapunov_exponents(**kwargs)


def test_auto_prefers_scan_on_cpu_and_rules_out_chaos():
    contracting = _parallel_auto.predicted_costs(jnp.asarray(-0.5), 1000, 16, "cpu", 100)
    assert int(jnp.argmin(contracting)) == 0  # on 2 CPU cores a scan beats any Newton iteration
    chaotic = _parallel_auto.predicted_costs(jnp.asarray(0.5), 1000, 16, "gpu", 100)
    assert bool(jnp.all(jnp.isinf(chaotic[1:])))  # predicted beyond max_iter: never chosen
    assert int(jnp.argmin(chaotic)) == 0
    assert _parallel_auto.predicted_iterations(jnp.asarray(1.0), 50, "deer") <= 50
