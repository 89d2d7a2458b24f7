r"""Linear recurrences and damped (Levenberg–Marquardt) linear solves as associative scans.

DEER's Newton step solves the linear recurrence ``s_t = J_t s_{t-1} + c_t``. ELK (Gonzalez et al.
2024) damps it: the step minimises

.. math::
    \sum_t \|s_t - J_t s_{t-1} - c_t\|^2 + \lambda \sum_t \|s_t - y_t\|^2

around the current iterate ``y``. That objective is the negative log posterior of a linear-Gaussian
state-space model (dynamics ``s_t = J_t s_{t-1} + c_t + w_t``, ``w_t ~ N(0, I)``; observations
``y_t = s_t + v_t``, ``v_t ~ N(0, I / lambda)``), so its minimiser is the Kalman smoother's mean,
computed in ``O(log T)`` depth by the parallel filter and smoother of Särkkä and García-Fernández
(2021, "Temporal parallelization of Bayesian smoothers"): a forward associative scan over
filtering elements ``(A, b, C, eta, J)`` and a reverse one over the affine smoothing maps.
``lambda -> 0`` is DEER's step; a large ``lambda`` keeps every state near the iterate. The
filtered covariances stay below ``I / lambda`` whatever the Jacobians, so the step stays finite
where DEER's Jacobian products overflow.

Dense elements hold ``[T, N, N]`` matrices; diagonal ones (quasi-ELK) hold ``[T, N]`` vectors.
"""

import jax
import jax.numpy as jnp
from jax import lax


def _affine_combine(diagonal: bool):
    """Compose two affine maps ``s -> A s + b`` (the earlier one first) for the associative scan."""

    def combine(earlier, later):
        a1, b1 = earlier
        a2, b2 = later
        if diagonal:
            return a2 * a1, a2 * b1 + b2
        return a2 @ a1, jnp.einsum("...ij,...j->...i", a2, b1) + b2

    return combine


def linear_scan(a: jax.Array, b: jax.Array, reverse: bool = False) -> jax.Array:
    """Solve ``x_t = a_t x_{t-1} + b_t`` (``x_{T+1}`` side when ``reverse``) from ``x_0 = 0``.

    ``a`` is ``[T, N, N]`` (dense) or ``[T, N]`` (diagonal), ``b`` is ``[T, N]``.
    """
    combine = _affine_combine(diagonal=a.ndim == b.ndim)
    return lax.associative_scan(combine, (a, b), reverse=reverse)[1]


def _mv(matrix, vector):
    return jnp.einsum("...ij,...j->...i", matrix, vector)


def _transpose(matrix):
    return jnp.swapaxes(matrix, -1, -2)


def _filter_combine(diagonal: bool):
    """Särkkä and García-Fernández's filtering-element composition (the earlier element first)."""

    def combine(earlier, later):
        a1, b1, c1, eta1, j1 = earlier
        a2, b2, c2, eta2, j2 = later
        if diagonal:
            scale = 1.0 / (1.0 + c1 * j2)
            return (
                a2 * scale * a1,
                a2 * scale * (b1 + c1 * eta2) + b2,
                a2 * scale * c1 * a2 + c2,
                a1 * scale * (eta2 - j2 * b1) + eta1,
                a1 * scale * j2 * a1 + j1,
            )
        eye = jnp.eye(a1.shape[-1], dtype=a1.dtype)
        # a2 (I + c1 j2)^-1 and a1^T (I + j2 c1)^-1 = a1^T ((I + c1 j2)^-1)^T (c, j symmetric):
        # one inverse per composition (two solves compiled twice as slowly on CPU).
        inverse = jnp.linalg.inv(jnp.broadcast_to(eye, c1.shape) + c1 @ j2)
        left = a2 @ inverse
        right = _transpose(inverse @ a1)
        c = left @ c1 @ _transpose(a2) + c2
        j = right @ j2 @ a1 + j1
        return (
            left @ a1,
            _mv(left, b1 + _mv(c1, eta2)) + b2,
            0.5 * (c + _transpose(c)),
            _mv(right, eta2 - _mv(j2, b1)) + eta1,
            0.5 * (j + _transpose(j)),
        )

    return combine


def damped_solve(
    jac: jax.Array, offset: jax.Array, target: jax.Array, damping: jax.Array
) -> jax.Array:
    r"""The Levenberg–Marquardt step: the Kalman smoother's mean of the model above.

    Args:
      jac: ``J_t``, ``[T, N, N]`` or ``[T, N]`` (diagonal); ``J_1`` is ignored (``s_0`` is fixed
        and folded into ``c_1``).
      offset: ``c_t``, ``[T, N]``.
      target: the iterate ``y_t`` the damping pulls towards, ``[T, N]``.
      damping: ``lambda > 0`` (a scalar).

    Returns:
      ``[T, N]``, the minimiser of
      ``sum_t |s_t - J_t s_{t-1} - c_t|^2 + lambda |s_t - y_t|^2`` with ``s_0 = 0``.
    """
    diagonal = jac.ndim == offset.ndim
    # Observation gain of every step: S = (1 + 1/lambda) I, K = S^-1 = lambda / (1 + lambda).
    gain = (damping / (1.0 + damping)).astype(offset.dtype)
    jac = jac.at[0].set(0)  # s_0 = 0 is known exactly: the first element ignores it
    innovation = target - offset
    ones = jnp.ones_like(offset)
    if diagonal:
        elements = (
            (1 - gain) * jac,
            offset + gain * innovation,
            (1 - gain) * ones,
            gain * jac * innovation,
            gain * jac * jac,
        )
    else:
        eye = jnp.eye(offset.shape[-1], dtype=offset.dtype)
        jac_t = _transpose(jac)
        elements = (
            (1 - gain) * jac,
            offset + gain * innovation,
            jnp.broadcast_to((1 - gain) * eye, jac.shape),
            gain * _mv(jac_t, innovation),
            gain * jac_t @ jac,
        )
    _, means, covariances, _, _ = lax.associative_scan(_filter_combine(diagonal), elements)
    # Smoother: s_t = E_t s_{t+1} + g_t with E_t = P_t F^T (F P_t F^T + I)^-1, F = J_{t+1}.
    following = jnp.concatenate([jac[1:], jnp.zeros_like(jac[:1])], axis=0)
    following_offset = jnp.concatenate([offset[1:], jnp.zeros_like(offset[:1])], axis=0)
    if diagonal:
        smooth = covariances * following / (following * covariances * following + 1.0)
        predicted = following * means + following_offset
        return linear_scan(smooth, means - smooth * predicted, reverse=True)
    eye = jnp.eye(offset.shape[-1], dtype=offset.dtype)
    projected = following @ covariances  # F P (P symmetric)
    innovation_cov = projected @ _transpose(following) + jnp.broadcast_to(eye, jac.shape)
    smooth = _transpose(jnp.linalg.solve(innovation_cov, projected))
    predicted = _mv(following, means) + following_offset
    return linear_scan(smooth, means - _mv(smooth, predicted), reverse=True)


def damped_solve_reference(jac, offset, target, damping):
    """The same minimiser from the dense normal equations (``[T N, T N]``; tests only)."""
    steps, size = offset.shape
    dense = jnp.zeros((steps, steps, size, size), offset.dtype)
    eye = jnp.eye(size, dtype=offset.dtype)
    if jac.ndim == offset.ndim:
        jac = jax.vmap(jnp.diag)(jac)
    # Residual r = D s - c with D block-bidiagonal: I on the diagonal, -J_t below (t >= 2).
    for t in range(steps):
        dense = dense.at[t, t].set(eye)
        if t > 0:
            dense = dense.at[t, t - 1].set(-jac[t])
    d = dense.transpose(0, 2, 1, 3).reshape(steps * size, steps * size)
    normal = d.T @ d + damping * jnp.eye(steps * size, dtype=offset.dtype)
    rhs = d.T @ offset.reshape(-1) + damping * target.reshape(-1)
    return jnp.linalg.solve(normal, rhs).reshape(steps, size)
