r"""Parallel-in-time evaluation of a nonlinear cell: DEER and quasi-DEER Newton iterations.

The trajectory ``s_1..s_T`` of ``s_t = f(s_{t-1}, x_t)`` is the root of ``S - F(S) = 0`` with
``F(S)_t = f(s_{t-1}, x_t)``. Newton's method linearises ``f`` around the current guess, which
turns the recurrence into a *linear* one, ``s_t = J_t s_{t-1} + u_t``, solved over all ``T``
steps at once by ``lax.associative_scan`` in ``O(log T)`` depth (Lim et al. 2024, "DEER").
Quasi-DEER keeps only ``diag(J_t)`` (Gonzalez et al. 2024), so the scan carries ``[T, N]``
instead of ``[T, N, N]``. Gradients use the implicit function theorem: the adjoint
``lambda_t = g_t + J_{t+1}^T lambda_{t+1}`` is one more linear scan, run backwards.
"""

from functools import wraps
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from rnnjax import _checks
from rnnjax._scan import _check_cell, _check_initial_state

METHODS = ("deer", "quasi_deer")
_DEFAULT_TOL = {"float64": 1e-10, "float32": 1e-5}


class ParallelScanInfo(NamedTuple):
    """Diagnostics of :func:`parallel_scan` (scalars; batched under ``vmap``).

    Attributes:
      iterations: Newton iterations taken (int32).
      converged: whether ``residual <= tol`` within ``max_iter`` iterations (bool).
      residual: ``max_t |s_t - f(s_{t-1}, x_t)| / (1 + |f(s_{t-1}, x_t)|)`` of the last Newton
        iterate, elementwise over the flattened state; NaN/inf when the iteration diverged.
      fell_back: the returned trajectory came from the sequential fallback (bool).
    """

    iterations: jax.Array
    converged: jax.Array
    residual: jax.Array
    fell_back: jax.Array


class ConvergenceError(RuntimeError):
    """Raised by ``parallel_scan(..., on_failure="raise")`` when Newton did not converge."""


def _full_precision(fn):
    """``fn`` with its matmuls at full precision (``jax.default_matmul_precision("highest")``).

    Newton needs the step evaluated exactly: under TF32 matmuls (XLA's float32 default on recent
    GPUs) ``f`` is a step function at the 1e-3 level and the iteration stalls above ``tol``
    (measured on an H100, GRU H=16 T=100: 100 iterations, residual 2e-4, then the sequential
    fallback; at full float32, 3 iterations). JAX derives the JVP and transpose from the traced
    matmuls, so derivatives inherit it; only a custom VJP's backward, traced later, needs its own.
    On CPU float32 matmuls are full precision already.
    """

    @wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def _shift(states: jax.Array, s0: jax.Array) -> jax.Array:
    """``[s_0, s_1, ..., s_{T-1}]``: the previous state of every step."""
    return jnp.concatenate([s0[None], states[:-1]], axis=0)


def _combine(diagonal: bool):
    """Compose two affine maps ``s -> A s + b`` (the earlier one first) for the associative scan."""

    def combine(earlier, later):
        a1, b1 = earlier
        a2, b2 = later
        if diagonal:
            return a2 * a1, a2 * b1 + b2
        return a2 @ a1, jnp.einsum("...ij,...j->...i", a2, b1) + b2

    return combine


def _linear_scan(a: jax.Array, b: jax.Array, reverse: bool = False) -> jax.Array:
    """Solve ``x_t = a_t x_{t-1} + b_t`` (``x_{T+1}`` side when ``reverse``) from ``x_0 = 0``.

    ``a`` is ``[T, N, N]`` (dense) or ``[T, N]`` (diagonal), ``b`` is ``[T, N]``.
    """
    combine = _combine(diagonal=a.ndim == b.ndim)
    return lax.associative_scan(combine, (a, b), reverse=reverse)[1]


def _residual(states: jax.Array, images: jax.Array) -> jax.Array:
    error = jnp.abs(states - images) / (1 + jnp.abs(images))
    # XLA's max reduction may skip NaN (a diverged iterate then looks converged): map it to inf.
    return jnp.max(jnp.where(jnp.isnan(error), jnp.inf, error))


def _at(inputs, t):
    """Step ``t`` of a pytree of per-step inputs (leaves ``[T, ...]``)."""
    return jax.tree_util.tree_map(lambda leaf: leaf[t], inputs)


def _make_solver(f, method: str, max_iter: int, tol: float, fallback: bool):
    """Build ``solve(params, projected, s0, guess) -> (states [T, N], info)`` with an IFT VJP.

    ``f(params, s, p) -> s'`` is one step on a flat state ``s [N]``; ``projected`` is a pytree of
    per-step inputs (leaves ``[T, ...]``; the projected inputs and, with ``length``, the mask).
    """
    step_all = jax.vmap(f, in_axes=(None, 0, 0))
    diagonal = method == "quasi_deer"

    def images(params, states, projected, s0):
        return step_all(params, _shift(states, s0), projected)

    def jacobians(params, prev, projected):
        if not diagonal:
            return jax.vmap(jax.jacfwd(f, argnums=1), in_axes=(None, 0, 0))(params, prev, projected)
        # diag(J_t) one basis vector at a time: memory stays O(T N), never O(T N^2).
        size = prev.shape[-1]

        def column(i):
            tangent = jnp.zeros_like(prev).at[:, i].set(1)
            _, out = jax.jvp(lambda s: step_all(params, s, projected), (prev,), (tangent,))
            return out[:, i]

        return lax.map(column, jnp.arange(size), batch_size=min(size, 8)).T

    def newton(params, projected, s0, guess):
        def cond(carry):
            iteration, _, _, residual = carry
            # An infinite residual (overflow, NaN) never recovers: stop instead of spinning.
            return (iteration < max_iter) & (residual > tol) & jnp.isfinite(residual)

        def body(carry):
            iteration, states, image, _ = carry
            prev = _shift(states, s0)
            jac = jacobians(params, prev, projected)
            linear = jac * prev if diagonal else jnp.einsum("tij,tj->ti", jac, prev)
            # s_1 = f(s_0) exactly: the first offset absorbs J_1 s_0.
            offset = (image - linear).at[0].set(image[0])
            states = _linear_scan(jac, offset)
            image = images(params, states, projected, s0)
            return iteration + 1, states, image, _residual(states, image)

        image = images(params, guess, projected, s0)
        init = (jnp.int32(0), guess, image, _residual(guess, image))
        iterations, states, _, residual = lax.while_loop(cond, body, init)
        return states, iterations, residual, residual <= tol

    def sequential(params, projected, s0, states, needed):
        # A while_loop, not lax.scan: under vmap it runs zero steps unless some example needs it.
        def body(carry):
            t, s, out = carry
            s = f(params, s, _at(projected, t))
            return t + 1, s, out.at[t].set(s)

        carry = (jnp.int32(0), s0, states)
        return lax.while_loop(lambda c: needed & (c[0] < states.shape[0]), body, carry)[2]

    def forward(params, projected, s0, guess):
        states, iterations, residual, converged = newton(params, projected, s0, guess)
        if fallback:
            states = sequential(params, projected, s0, states, ~converged)
            fell_back = ~converged
        else:
            states = jnp.where(converged, states, jnp.full_like(states, jnp.nan))
            fell_back = jnp.zeros((), bool)
        return states, ParallelScanInfo(iterations, converged, residual, fell_back)

    def adjoint_quasi(params, projected, s0, states, cotangent):
        # lambda = g + B lambda with (B lambda)_t = J_{t+1}^T lambda_{t+1}, split as D + (B - D),
        # D = diag(J): each sweep is one parallel VJP and one diagonal scan.
        _, transpose = jax.vjp(lambda s: images(params, s, projected, s0), states)
        diag = jacobians(params, _shift(states, s0), projected)
        diag_next = jnp.concatenate([diag[1:], jnp.zeros_like(diag[:1])], axis=0)

        def shifted(lam):
            return diag_next * jnp.concatenate([lam[1:], jnp.zeros_like(lam[:1])], axis=0)

        def cond(carry):
            iteration, _, _, residual = carry
            return (iteration < max_iter) & (residual > tol) & jnp.isfinite(residual)

        def body(carry):
            iteration, lam, b_lam, _ = carry
            lam = _linear_scan(diag_next, cotangent + b_lam - shifted(lam), reverse=True)
            b_lam = transpose(lam)[0]
            return iteration + 1, lam, b_lam, _residual(lam, cotangent + b_lam)

        zeros = jnp.zeros_like(cotangent)
        init = (jnp.int32(0), zeros, zeros, jnp.asarray(jnp.finfo(zeros.dtype).max, zeros.dtype))
        _, lam, _, residual = lax.while_loop(cond, body, init)

        def step_back(carry):
            t, lam_next, out = carry
            _, vjp = jax.vjp(lambda s: f(params, s, _at(projected, t + 1)), states[t])
            lam_t = cotangent[t] + vjp(lam_next)[0]
            return t - 1, lam_t, out.at[t].set(lam_t)

        num_steps = states.shape[0]
        start = (jnp.int32(num_steps - 2), cotangent[-1], lam.at[-1].set(cotangent[-1]))
        needed = ~(residual <= tol)
        return lax.while_loop(lambda c: needed & (c[0] >= 0), step_back, start)[2]

    def adjoint_deer(params, projected, s0, states, cotangent):
        jac = jacobians(params, _shift(states, s0), projected)
        jac_next_t = jnp.concatenate([jac[1:], jnp.zeros_like(jac[:1])], axis=0).swapaxes(1, 2)
        return _linear_scan(jac_next_t, cotangent, reverse=True)

    @jax.custom_vjp
    def solve(params, projected, s0, guess):
        return forward(params, projected, s0, guess)

    def solve_fwd(params, projected, s0, guess):
        states, info = forward(params, projected, s0, guess)
        return (states, info), (params, projected, s0, states)

    @_full_precision  # traced when differentiated, outside parallel_scan's own call
    def solve_bwd(residuals, cotangents):
        params, projected, s0, states = residuals
        adjoint = adjoint_quasi if diagonal else adjoint_deer
        lam = adjoint(params, projected, s0, states, cotangents[0])
        _, pullback = jax.vjp(lambda *a: images(a[0], states, a[1], a[2]), params, projected, s0)
        return (*pullback(lam), None)

    solve.defvjp(solve_fwd, solve_bwd)
    return solve


def _check_options(method, max_iter, tol, on_failure) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int; got {max_iter!r}.")
    if tol is not None and not (isinstance(tol, float | int) and tol > 0):
        raise ValueError(f"tol must be a positive float or None (dtype default); got {tol!r}.")
    if on_failure not in ("fallback", "raise"):
        raise ValueError(f"on_failure must be 'fallback' or 'raise'; got {on_failure!r}.")


def _check_guess(initial_guess, state, num_steps: int):
    if initial_guess is None:
        return jax.tree_util.tree_map(
            lambda leaf: jnp.zeros((num_steps, *leaf.shape), leaf.dtype), state
        )
    if jax.tree_util.tree_structure(initial_guess) != jax.tree_util.tree_structure(state):
        raise ValueError(
            f"initial_guess must have the state's structure {jax.tree_util.tree_structure(state)} "
            f"with leaves [T, H]; got {jax.tree_util.tree_structure(initial_guess)}."
        )
    for guess, leaf in zip(
        jax.tree_util.tree_leaves(initial_guess), jax.tree_util.tree_leaves(state), strict=True
    ):
        expected = (num_steps, *leaf.shape)
        if tuple(jnp.shape(guess)) != expected:
            raise ValueError(
                f"initial_guess leaves must have shape {expected} (T, hidden_size); "
                f"got {tuple(jnp.shape(guess))}."
            )
    return jax.tree_util.tree_map(lambda g, leaf: jnp.asarray(g, leaf.dtype), initial_guess, state)


@_full_precision
def parallel_scan(
    cell,
    params: Any,
    xs: jax.Array,
    *,
    method: str = "deer",
    max_iter: int = 100,
    tol: float | None = None,
    initial_guess: Any = None,
    initial_state: Any = None,
    length: jax.Array | int | None = None,
    reverse: bool = False,
    on_failure: str = "fallback",
) -> tuple[Any, jax.Array, ParallelScanInfo]:
    r"""Run ``cell`` over ``xs [T, D]`` with Newton iterations parallel in time (DEER, quasi-DEER).

    Each iteration linearises every step around the current trajectory guess and solves

    .. math::
        s_t = J_t s_{t-1} + \big(f(\hat s_{t-1}, x_t) - J_t \hat s_{t-1}\big), \qquad
        J_t = \partial f / \partial s \,(\hat s_{t-1}, x_t)

    for all ``t`` with ``lax.associative_scan``. The state pytree (``LSTMState(h, c)``, ...) is
    flattened to ``N`` numbers, so ``"deer"`` holds ``[T, N, N]`` Jacobians and ``"quasi_deer"``
    only their diagonals ``[T, N]`` (more iterations, each cheaper). The iteration stops once the
    fixed-point residual (see :class:`ParallelScanInfo`) is ``<= tol``; the distance to the
    sequential trajectory is then at most ``residual`` times the sum over ``k`` of the norms of
    the Jacobian products ``J_t...J_{t-k}``, i.e. about ``residual / (1 - rho)`` for a cell
    contracting by ``rho``. Newton is exact after ``T`` iterations in exact arithmetic; chaotic
    cells (Jacobian products growing with ``T``) overflow or stall instead and are reported.

    Gradients (reverse mode only) come from the implicit function theorem, never from
    differentiating the iterations: the adjoint ``lambda_t = g_t + J_{t+1}^T lambda_{t+1}`` is one
    dense reverse associative scan for ``"deer"``; for ``"quasi_deer"`` it is iterated with
    diagonal scans and parallel VJPs (memory ``O(T N)``), falling back to a sequential backward
    sweep if that iteration does not reach ``tol``.

    Its matmuls run at full precision whatever ``jax.default_matmul_precision`` says: Newton
    stalls on TF32 rounding (a GPU's float32 default), see ``_full_precision``.

    Args:
      cell: a :class:`Cell` (``rnnjax.simple_rnn``, ``lstm``, ``gru``, ``min_gru``, ...).
      params: the cell's params.
      xs: one sequence ``[T, input_size]``; batch with ``jax.vmap``.
      method: ``"deer"`` (full Jacobians, quadratic convergence) or ``"quasi_deer"``.
      max_iter: Newton iterations at most.
      tol: residual target; ``None`` uses 1e-10 for float64 states, 1e-5 for float32 and
        1e-2 for 16-bit ones.
      initial_guess: a state pytree with leaves ``[T, H]`` to start from (e.g. the trajectory of
        the previous training step); zeros when ``None``.
      initial_state: the state before ``xs[0]`` (leaves ``[H]``); zeros when ``None``.
      length: valid steps ``0 <= length <= T`` (an int scalar; per example under ``vmap``), as in
        ``rnnjax.scan``: steps at ``t >= length`` leave the state unchanged and output zeros, so
        ``final_state`` is the state after the last valid step and ``length = 0`` returns
        ``initial_state``. In the Newton system a padded step is ``s_t = s_{t-1}`` (Jacobian
        identity, offset zero), still a linear recurrence, so it costs no extra iterations and
        the gradients (zero for the padding of ``xs``) follow from the same adjoint. The padding
        of ``xs`` is zeroed first, so NaN/inf there reaches neither outputs nor gradients. Under
        ``jit`` an out-of-range length acts as if clipped to ``[0, T]``; concrete values are
        checked.
      reverse: run from the last valid step to ``xs[0]``; ``ys[t]`` stays aligned with ``xs[t]``
        (with ``length``, only the valid prefix is reversed, as in ``rnnjax.scan``).
      on_failure: ``"fallback"`` reruns the sequence with a sequential loop when Newton did not
        converge (``info.fell_back``); ``"raise"`` raises :class:`ConvergenceError` when called
        outside ``jit``/``vmap``/``grad`` and otherwise returns NaN trajectories. Under ``vmap``
        the fallback loop runs only when some example of the batch did not converge.

    Returns:
      ``(final_state, ys [T, H], info)``, ``info`` a :class:`ParallelScanInfo`.

    Raises:
      TypeError: ``cell`` is not a Cell, ``xs`` is not floating point or ``length`` not an int.
      ValueError: bad ``xs`` shape, option, ``initial_state`` or ``initial_guess``, or
        ``length`` not a scalar in ``[0, T]``.
      ConvergenceError: ``on_failure="raise"``, concrete values, no convergence.

    >>> cell = rnnjax.gru(16)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> final_state, ys, info = rnnjax.parallel_scan(cell, params, jnp.ones((1000, 4)))
    >>> bool(info.converged), int(info.iterations)   # (True, 4)-ish for a contractive GRU
    >>> final_state, ys, info = rnnjax.parallel_scan(cell, params, jnp.ones((1000, 4)), length=700)
    """
    _check_cell(cell)
    _check_options(method, max_iter, tol, on_failure)
    xs = _checks.floating_array(xs, "xs")
    _checks.rank(xs, 2, "xs", "(T, input_size) for one sequence; batch with jax.vmap")
    num_steps = xs.shape[0]
    if num_steps == 0:
        raise ValueError("xs must have at least one step (T >= 1); got shape (0, ...).")
    valid = None
    if length is not None:
        length = _checks.lengths(length, (), num_steps, name="length")
        valid = jnp.arange(num_steps) < length
        # Zero the padding so NaN/inf there cannot leak into gradients (0 * NaN is NaN).
        xs = jnp.where(valid[:, None], xs, jnp.zeros_like(xs))
    if reverse:
        xs = xs[::-1]
        valid = None if valid is None else valid[::-1]
    projected = cell.project_inputs(params, xs)
    dtype = jnp.result_type(projected, *jax.tree_util.tree_leaves(params))
    state = _check_initial_state(cell, initial_state, dtype)
    guess = _check_guess(initial_guess, state, num_steps)
    if reverse:
        guess = jax.tree_util.tree_map(lambda leaf: leaf[::-1], guess)

    s0, unravel = ravel_pytree(state)
    unravel_all = jax.vmap(unravel)

    def f(params, s, inputs):
        p, valid_t = inputs
        new = ravel_pytree(cell.recur(params, unravel(s), p)[0])[0]
        # A padded step is the identity: Jacobian I, Newton offset 0.
        return new if valid_t is None else jnp.where(valid_t, new, s)

    if tol is None:
        tol = _DEFAULT_TOL.get(np.dtype(s0.dtype).name, 1e-2)
    solve = _make_solver(f, method, max_iter, float(tol), on_failure == "fallback")
    guess_flat = jax.vmap(lambda *leaves: ravel_pytree(leaves)[0])(
        *jax.tree_util.tree_leaves(guess)
    )
    states, info = solve(params, (projected, valid), s0, guess_flat)

    prev = unravel_all(_shift(states, s0))
    _, ys = jax.vmap(cell.recur, in_axes=(None, 0, 0))(params, prev, projected)
    if valid is not None:
        ys = jnp.where(valid[:, None], ys, jnp.zeros_like(ys))
    final_state = unravel(states[-1])
    if on_failure == "raise":
        ys = jnp.where(info.converged, ys, jnp.full_like(ys, jnp.nan))
    if reverse:
        ys = ys[::-1]
    if on_failure == "raise":
        try:
            converged, iterations = bool(info.converged), int(info.iterations)
        except jax.errors.ConcretizationTypeError:
            converged = True  # traced: the NaN trajectory reports it instead
        if not converged:
            raise ConvergenceError(
                f"parallel_scan ({method}) did not converge to tol {tol:.3g} in {iterations} "
                f"iterations (max_iter={max_iter}); info.residual holds the last residual. "
                f"Raise max_iter, use on_failure='fallback', or use rnnjax.scan for this cell."
            )
    return final_state, ys, info
