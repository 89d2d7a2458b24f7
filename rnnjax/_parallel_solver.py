r"""The iterations behind :func:`rnnjax.parallel_scan`: DEER, quasi-DEER, ELK and quasi-ELK.

The trajectory ``s_1..s_T`` of ``s_t = f(s_{t-1}, x_t)`` is the root of ``S - F(S) = 0``. Every
method linearises ``f`` around the current iterate, ``s_t = J_t s_{t-1} + c_t``:

* ``"deer"`` (Lim et al. 2024) solves it exactly with one dense associative scan (Newton);
* ``"quasi_deer"`` keeps ``diag(J_t)`` only (Gonzalez et al. 2024): ``[T, N]`` instead of
  ``[T, N, N]``, more iterations, each cheaper;
* ``"elk"`` / ``"quasi_elk"`` (Gonzalez et al. 2024) take the Levenberg–Marquardt step instead,
  the Kalman smoother of :mod:`rnnjax._kalman`, and adapt its damping ``lambda``: a step that
  lowers the merit ``sum_t |s_t - f(s_{t-1})|^2`` is accepted and ``lambda`` shrinks
  (``/ DAMPING_DOWN``, towards DEER's step), any other is rejected and ``lambda`` grows
  (``* DAMPING_UP``). Every step, accepted or not, counts as an iteration.

Every step is solved for the update ``delta_t = s_t' - s_t`` from the residuals
``r_t = f(s_{t-1}) - s_t`` (``delta_t = J_t delta_{t-1} + r_t`` for Newton), and the *settled
prefix* is never moved again: the steps ``1..k`` whose residuals, and every earlier one's, are at
rounding level (``min(tol, FREEZE_EPS * eps)``) get ``r_t = 0`` and ``delta_t = 0`` exactly, and
``J_{k+1}`` is cut (``s_k`` is fixed). A Newton step then gives step ``k + 1`` the value
``f(s_k)`` to rounding, so the settled prefix grows by at least one step per Newton iteration *in
floating point*: DEER and quasi-DEER end within about ``T`` iterations even on chaotic cells,
where the products ``J_t ... J_k`` grow like ``exp(lambda (t - k))`` and would otherwise amplify
the prefix's rounding residuals into every later step for ever. ELK's accepted damped steps need
not grow the prefix (its rejected ones take the guarded Newton step), so it has no such bound.

DEER's own guard against overflow: where a Newton iterate leaves the finite range (or exceeds
``GUARD`` times the largest image ``|f(s_{t-1})|``), that step takes the Picard value
``f(s_{t-1})`` instead, so it no longer stops on an infinite residual.

Gradients use the implicit function theorem whatever the forward method: the adjoint
``lambda_t = g_t + J_{t+1}^T lambda_{t+1}`` is one dense reverse scan (``deer``, ``elk``) or
diagonal sweeps with parallel VJPs (``quasi_*``, memory ``O(T N)``).
"""

from functools import wraps
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._kalman import damped_solve, linear_scan

DAMPING_INIT = 1e-3
DAMPING_DOWN = 3.0
DAMPING_UP = 10.0
DAMPING_MAX = 1e20
GUARD = 1e4
FREEZE_EPS = 16  # a settled step's relative residual, in machine epsilons (one add rounds twice)


class ParallelScanInfo(NamedTuple):
    """Diagnostics of :func:`parallel_scan` (scalars; batched under ``vmap``).

    Attributes:
      iterations: Newton (or Levenberg–Marquardt) iterations taken (int32); 0 for a sequential
        run (``method="auto"`` choosing ``scan``, or ``T = 0``).
      converged: whether ``residual <= tol`` within ``max_iter`` iterations (bool).
      residual: ``max_t |s_t - f(s_{t-1}, x_t)| / (1 + |f(s_{t-1}, x_t)|)`` of the last iterate,
        elementwise over the flattened state; NaN/inf when the iteration diverged.
      fell_back: the returned trajectory came from the sequential fallback (bool).
    """

    iterations: jax.Array
    converged: jax.Array
    residual: jax.Array
    fell_back: jax.Array


def full_precision(fn):
    """``fn`` with its matmuls at full precision (``jax.default_matmul_precision("highest")``).

    Newton needs the step evaluated exactly: under TF32 matmuls (XLA's float32 default on recent
    GPUs) ``f`` is a step function at the 1e-3 level and the iteration stalls above ``tol``
    (measured on an H100, GRU H=16 T=100: 100 iterations, residual 2e-4, then the sequential
    fallback; at full float32, 3 iterations). JAX derives the JVP and transpose from the traced
    matmuls, so derivatives inherit it; only a custom VJP's backward, traced later, needs its own.
    """

    @wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def shift(states: jax.Array, s0: jax.Array) -> jax.Array:
    """``[s_0, s_1, ..., s_{T-1}]``: the previous state of every step."""
    return jnp.concatenate([s0[None], states[:-1]], axis=0)


def _residual(states: jax.Array, images: jax.Array) -> jax.Array:
    error = jnp.abs(states - images) / (1 + jnp.abs(images))
    # XLA's max reduction may skip NaN (a diverged iterate then looks converged): map it to inf.
    return jnp.max(jnp.where(jnp.isnan(error), jnp.inf, error))


def _settled(states: jax.Array, images: jax.Array, threshold) -> jax.Array:
    """``[T]`` bool: step ``t`` and every step before it have residual ``<= threshold``."""
    error = jnp.abs(states - images) / (1 + jnp.abs(images))
    ok = jnp.all(error <= threshold, axis=-1).astype(jnp.int32)
    return lax.cummin(ok) > 0


def _merit(states: jax.Array, images: jax.Array) -> jax.Array:
    merit = jnp.sum((states - images) ** 2)
    return jnp.where(jnp.isfinite(merit), merit, jnp.inf)


def _at(inputs, t):
    """Step ``t`` of a pytree of per-step inputs (leaves ``[T, ...]``)."""
    return jax.tree_util.tree_map(lambda leaf: leaf[t], inputs)


def make_solver(f, method: str, max_iter: int, tol: float, fallback: bool):
    """Build ``solve(params, inputs, s0, guess) -> (states [T, N], info)`` with an IFT VJP.

    ``f(params, s0, s, inputs_t) -> s'`` is one step on a flat state ``s [N]`` (``s0`` is the
    initial state, which a reset step starts from); ``inputs`` is a pytree of per-step inputs
    (leaves ``[T, ...]``).
    """
    step_all = jax.vmap(f, in_axes=(None, None, 0, 0))
    diagonal = method.startswith("quasi")
    damped = method.endswith("elk")

    def images(params, states, inputs, s0):
        return step_all(params, s0, shift(states, s0), inputs)

    def jacobians(params, s0, prev, inputs):
        if not diagonal:
            jac = jax.jacfwd(f, argnums=2)
            return jax.vmap(jac, in_axes=(None, None, 0, 0))(params, s0, prev, inputs)
        # diag(J_t) one basis vector at a time: memory stays O(T N), never O(T N^2).
        size = prev.shape[-1]

        def column(i):
            tangent = jnp.zeros_like(prev).at[:, i].set(1)
            _, out = jax.jvp(lambda s: step_all(params, s0, s, inputs), (prev,), (tangent,))
            return out[:, i]

        return lax.map(column, jnp.arange(size), batch_size=min(size, 8)).T

    def linearise(params, inputs, s0, states, image):
        """``J_t`` (cut where ``s_{t-1}`` is fixed), residuals ``r_t`` (zero on the settled
        prefix) and that prefix."""
        jac = jacobians(params, s0, shift(states, s0), inputs)
        threshold = jnp.minimum(tol, FREEZE_EPS * jnp.finfo(states.dtype).eps)
        settled = _settled(states, image, threshold)
        # d_{t-1} = 0 where s_{t-1} is fixed (s_0, the settled prefix): J_t acts on nothing there.
        # Cutting it makes the damped step the minimiser *with* the prefix held (the smoother
        # cannot trade prefix moves for later residuals) and keeps inf * 0 out of the scans.
        fixed = shift(settled, jnp.ones((), bool))
        jac = jnp.where(fixed.reshape((-1,) + (1,) * (jac.ndim - 1)), 0, jac)
        return jac, jnp.where(settled[:, None], 0, image - states), settled

    def cond(carry):
        iteration, _, _, residual, _, damping = carry
        # An infinite residual (overflow, NaN) never recovers: stop instead of spinning.
        going = (iteration < max_iter) & (residual > tol) & jnp.isfinite(residual)
        return going & (damping < DAMPING_MAX)

    def moved(states, delta, settled):
        # where(), not a product: an overflowing J-product times a zero residual is NaN.
        return jnp.where(settled[:, None], states, states + delta)

    def guarded_newton(params, inputs, s0, jac, residuals, settled, states, image):
        candidate = moved(states, linear_scan(jac, residuals), settled)
        # The guard: an overflowing step takes the Picard value f(s_{t-1}) instead.
        bound = GUARD * (1 + jnp.max(jnp.abs(image)))
        sane = jnp.all(jnp.abs(candidate) <= bound, axis=-1, keepdims=True)
        states = jnp.where(sane, candidate, image)
        return states, images(params, states, inputs, s0)

    def newton_body(params, inputs, s0):
        def body(carry):
            iteration, states, image, _, merit, damping = carry
            jac, residuals, settled = linearise(params, inputs, s0, states, image)
            states, image = guarded_newton(
                params, inputs, s0, jac, residuals, settled, states, image
            )
            return iteration + 1, states, image, _residual(states, image), merit, damping

        return body

    def levenberg_marquardt_body(params, inputs, s0):
        def body(carry):
            iteration, states, image, residual, merit, damping = carry
            jac, residuals, settled = linearise(params, inputs, s0, states, image)
            # The damped step for the update: min sum |d_t - J_t d_{t-1} - r_t|^2 + lambda |d_t|^2.
            step = damped_solve(jac, residuals, jnp.zeros_like(states), damping)
            candidate = moved(states, step, settled)
            candidate_image = images(params, candidate, inputs, s0)
            candidate_merit = _merit(candidate, candidate_image)
            accept = candidate_merit < merit
            # A rejected damped step takes the guarded Newton step instead of standing still:
            # on chaotic cells the merit's valleys are exponentially narrow in T, and Newton's
            # exact prefix still grows there.
            states, image = lax.cond(
                accept,
                lambda: (candidate, candidate_image),
                lambda: guarded_newton(params, inputs, s0, jac, residuals, settled, states, image),
            )
            merit = _merit(states, image)
            damping = jnp.where(accept, damping / DAMPING_DOWN, damping * DAMPING_UP)
            return iteration + 1, states, image, _residual(states, image), merit, damping

        return body

    def iterate(params, inputs, s0, guess):
        make_body = levenberg_marquardt_body if damped else newton_body
        image = images(params, guess, inputs, s0)
        damping = jnp.asarray(DAMPING_INIT, guess.dtype)
        init = (jnp.int32(0), guess, image, _residual(guess, image), _merit(guess, image), damping)
        carry = lax.while_loop(cond, make_body(params, inputs, s0), init)
        iterations, states, _, residual, _, _ = carry
        return states, iterations, residual, residual <= tol

    def sequential(params, inputs, s0, states, needed):
        # A while_loop, not lax.scan: under vmap it runs zero steps unless some example needs it.
        def body(carry):
            t, s, out = carry
            s = f(params, s0, s, _at(inputs, t))
            return t + 1, s, out.at[t].set(s)

        carry = (jnp.int32(0), s0, states)
        return lax.while_loop(lambda c: needed & (c[0] < states.shape[0]), body, carry)[2]

    def forward(params, inputs, s0, guess):
        states, iterations, residual, converged = iterate(params, inputs, s0, guess)
        if fallback:
            states = sequential(params, inputs, s0, states, ~converged)
            fell_back = ~converged
        else:
            states = jnp.where(converged, states, jnp.full_like(states, jnp.nan))
            fell_back = jnp.zeros((), bool)
        return states, ParallelScanInfo(iterations, converged, residual, fell_back)

    def adjoint_quasi(params, inputs, s0, states, cotangent):
        # lambda = g + B lambda with (B lambda)_t = J_{t+1}^T lambda_{t+1}, split as D + (B - D),
        # D = diag(J): each sweep is one parallel VJP and one diagonal scan.
        _, transpose = jax.vjp(lambda s: images(params, s, inputs, s0), states)
        diag = jacobians(params, s0, shift(states, s0), inputs)
        diag_next = jnp.concatenate([diag[1:], jnp.zeros_like(diag[:1])], axis=0)

        def shifted(lam):
            return diag_next * jnp.concatenate([lam[1:], jnp.zeros_like(lam[:1])], axis=0)

        def adjoint_cond(carry):
            iteration, _, _, residual = carry
            return (iteration < max_iter) & (residual > tol) & jnp.isfinite(residual)

        def body(carry):
            iteration, lam, b_lam, _ = carry
            lam = linear_scan(diag_next, cotangent + b_lam - shifted(lam), reverse=True)
            b_lam = transpose(lam)[0]
            return iteration + 1, lam, b_lam, _residual(lam, cotangent + b_lam)

        zeros = jnp.zeros_like(cotangent)
        init = (jnp.int32(0), zeros, zeros, jnp.asarray(jnp.finfo(zeros.dtype).max, zeros.dtype))
        _, lam, _, residual = lax.while_loop(adjoint_cond, body, init)

        def step_back(carry):
            t, lam_next, out = carry
            _, vjp = jax.vjp(lambda s: f(params, s0, s, _at(inputs, t + 1)), states[t])
            lam_t = cotangent[t] + vjp(lam_next)[0]
            return t - 1, lam_t, out.at[t].set(lam_t)

        num_steps = states.shape[0]
        start = (jnp.int32(num_steps - 2), cotangent[-1], lam.at[-1].set(cotangent[-1]))
        needed = ~(residual <= tol)
        return lax.while_loop(lambda c: needed & (c[0] >= 0), step_back, start)[2]

    def adjoint_dense(params, inputs, s0, states, cotangent):
        jac = jacobians(params, s0, shift(states, s0), inputs)
        jac_next_t = jnp.concatenate([jac[1:], jnp.zeros_like(jac[:1])], axis=0).swapaxes(1, 2)
        return linear_scan(jac_next_t, cotangent, reverse=True)

    @jax.custom_vjp
    def solve(params, inputs, s0, guess):
        return forward(params, inputs, s0, guess)

    def solve_fwd(params, inputs, s0, guess):
        states, info = forward(params, inputs, s0, guess)
        return (states, info), (params, inputs, s0, states)

    @full_precision  # traced when differentiated, outside parallel_scan's own call
    def solve_bwd(residuals, cotangents):
        params, inputs, s0, states = residuals
        adjoint = adjoint_quasi if diagonal else adjoint_dense
        lam = adjoint(params, inputs, s0, states, cotangents[0])
        _, pullback = jax.vjp(lambda *a: images(a[0], states, a[1], a[2]), params, inputs, s0)
        return (*pullback(lam), None)

    solve.defvjp(solve_fwd, solve_bwd)
    return solve
