r"""``parallel_scan(method="auto")``: sequential, DEER or ELK, from a cheap Lyapunov estimate.

Gonzalez et al. (2025) tie DEER's iteration count to the largest Lyapunov exponent ``lambda``
of the cell along its trajectory: contractive cells (``lambda < 0``, vanishing gradients) converge
in a few iterations, chaotic ones need of order ``T``. The choice:

1. estimate ``lambda`` on a prefix of ``PREFIX`` steps (a sequential run of the prefix and the QR
   method on its step Jacobians, :func:`rnnjax.jacobians.lyapunov_exponents`);
2. predict each method's iterations with the model fitted by ``experiments.parallel_in_time``,
   ``log n = c_0 + c_1 lambda + c_2 max(lambda, 0) log T + c_3 log T`` (``ITERATION_MODEL``);
3. price each as ``n * COST_PER_ITERATION[backend][method]`` sequential scans of the same
   sequence (with the state size's power, ``COST_STATE_POWER``), and take the cheapest, with a
   prediction above ``max_iter`` ruling a method out.
"""

import math

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.jacobians import lyapunov_exponents, step_jacobians

CHOICES = ("scan", "deer", "elk")
PREFIX = 64
# Fitted by `python -m experiments._iteration_predictor` (results/parallel_in_time/predictor):
# coefficients of log(iterations) on [1, lambda, max(lambda, 0) log T, log T]. That run holds no
# chaotic cell (every exponent < 0), so the chaotic coefficient comes from the chaotic runs of
# `python -m experiments.elk_gain_sweep` (g=2, T=1000, lambda 0.04-0.06: DEER 514-518 iterations,
# ELK 846-1061; each run alone gives 9.1-13.6 for DEER and 10.6-15.1 for ELK; midpoints kept).
ITERATION_MODEL = {
    "deer": (1.44, 0.58, 11.0, 0.112),
    "elk": (1.41, 0.60, 13.0, 0.123),
}
# One iteration's time over one sequential scan's at state size 16 and T = 1000, and how that
# ratio scales: ratio * (N / 16) ** p * (T / 1000) ** q. CPU: the 2-core runs of the same
# experiment (DEER 1.6-9 scans per iteration at N = 6-12, ELK about 10x DEER, no gain at small N);
# GPU: the H100 row of experiments.benchmarks (DEER 4 iterations at 6.3x a scan at T = 1000,
# 1.2x at T = 100); ELK's GPU ratio is a guess (3x DEER) until the GPU run measures it.
COST_PER_ITERATION = {
    "cpu": {"deer": 2.0, "elk": 20.0},
    "gpu": {"deer": 0.04, "elk": 0.12},
}
COST_STATE_POWER = {"cpu": 0.0, "gpu": 1.0}
COST_LENGTH_POWER = {"cpu": 0.3, "gpu": -0.6}


def predicted_iterations(lyapunov, num_steps: int, method: str):
    """The fitted iteration count of ``method`` (``"deer"``/``"elk"``) at exponent ``lyapunov``."""
    c0, c1, c2, c3 = ITERATION_MODEL[method]
    log_steps = math.log(num_steps)
    log_n = c0 + c1 * lyapunov + c2 * jnp.maximum(lyapunov, 0.0) * log_steps + c3 * log_steps
    return jnp.clip(jnp.exp(log_n), 1.0, float(num_steps))


def predicted_costs(lyapunov, num_steps: int, state_size: int, backend: str, max_iter: int):
    """``[3]`` predicted times of scan, DEER and ELK in units of one sequential scan."""
    kind = "gpu" if backend in ("gpu", "cuda", "rocm") else "cpu"
    scale = (state_size / 16) ** COST_STATE_POWER[kind]
    scale *= (num_steps / 1000) ** COST_LENGTH_POWER[kind]
    costs = [jnp.ones_like(lyapunov)]
    for method in CHOICES[1:]:
        n = predicted_iterations(lyapunov, num_steps, method)
        cost = n * COST_PER_ITERATION[kind][method] * scale
        costs.append(jnp.where(n > max_iter, jnp.inf, cost))
    return jnp.stack(costs)


def parallel_method(
    cell, params, xs: jax.Array, *, initial_state=None, max_iter: int = 100, backend=None
):
    """The method ``parallel_scan(method="auto")`` runs: ``"scan"``, ``"deer"`` or ``"elk"``.

    Args:
      cell, params, xs, initial_state: as in :func:`rnnjax.parallel_scan`.
      max_iter: a method predicted to need more iterations is never chosen.
      backend: ``"cpu"`` or ``"gpu"``; ``None`` reads ``jax.default_backend()``.

    Returns:
      The name when ``params`` and ``xs`` are concrete; under ``jit``/``vmap`` the index into
      ``CHOICES`` as a traced int32 (for ``lax.switch``).

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> from rnnjax._parallel_auto import parallel_method
    >>> cell = rnnjax.gru(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> parallel_method(cell, params, jnp.ones((200, 3)), backend="cpu")
    'scan'
    """
    xs = _checks.floating_array(xs, "xs")
    _checks.rank(xs, 2, "xs", "(T, input_size) for one sequence; batch with jax.vmap")
    num_steps = xs.shape[0]
    prefix = xs[: min(num_steps, PREFIX)]
    jacobians = step_jacobians(cell, params, prefix, initial_state=initial_state)
    lyapunov = lyapunov_exponents(jacobians, burn_in=prefix.shape[0] // 4)[0]
    lyapunov = jnp.where(jnp.isfinite(lyapunov), lyapunov, jnp.inf)
    costs = predicted_costs(
        lyapunov, num_steps, jacobians.shape[-1], backend or jax.default_backend(), max_iter
    )
    index = jnp.argmin(costs).astype(jnp.int32)
    concrete = all(_checks.is_concrete(leaf) for leaf in jax.tree_util.tree_leaves((params, xs)))
    return CHOICES[int(index)] if concrete else index
