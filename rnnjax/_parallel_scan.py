r"""Parallel-in-time evaluation of a nonlinear cell: ``rnnjax.parallel_scan``.

The iterations themselves (DEER, quasi-DEER, ELK, quasi-ELK, their implicit-function gradients)
live in :mod:`rnnjax._parallel_solver`, the damped step's Kalman smoother in
:mod:`rnnjax._kalman`, and ``method="auto"``'s choice in :mod:`rnnjax._parallel_auto`. This
module checks the arguments, applies lengths and resets (the shared rule of :mod:`rnnjax._mask`)
and flattens the state.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from rnnjax import _checks, _mask, _parallel_auto
from rnnjax._parallel_solver import ParallelScanInfo, full_precision, make_solver, shift
from rnnjax._scan import _check_cell, _check_initial_state, scan

METHODS = ("deer", "quasi_deer", "elk", "quasi_elk", "auto")
_DEFAULT_TOL = {"float64": 1e-10, "float32": 1e-5}
__all__ = ["METHODS", "ConvergenceError", "ParallelScanInfo", "parallel_scan"]


class ConvergenceError(RuntimeError):
    """Raised by ``parallel_scan(..., on_failure="raise")`` when Newton did not converge."""


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


def _sequential_info(dtype) -> ParallelScanInfo:
    return ParallelScanInfo(
        jnp.int32(0), jnp.ones((), bool), jnp.zeros((), dtype), jnp.zeros((), bool)
    )


@full_precision
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
    resets: jax.Array | None = None,
    reverse: bool = False,
    on_failure: str = "fallback",
) -> tuple[Any, jax.Array, ParallelScanInfo]:
    r"""Run ``cell`` over ``xs [T, D]`` with iterations parallel in time (DEER, ELK, ...).

    Each iteration linearises every step around the current trajectory guess,

    .. math::
        s_t = J_t s_{t-1} + \big(f(\hat s_{t-1}, x_t) - J_t \hat s_{t-1}\big), \qquad
        J_t = \partial f / \partial s \,(\hat s_{t-1}, x_t),

    and solves it for all ``t`` with ``lax.associative_scan``: exactly (``"deer"``, Newton), with
    ``diag(J_t)`` only (``"quasi_deer"``), or as a damped Levenberg–Marquardt step whose damping
    adapts (``"elk"``, ``"quasi_elk"``, a parallel Kalman smoother; Gonzalez et al. 2024). The
    state pytree (``LSTMState(h, c)``, ...) is flattened to ``N`` numbers: dense methods hold
    ``[T, N, N]`` Jacobians, quasi ones ``[T, N]``. The iteration stops once the fixed-point
    residual (see :class:`ParallelScanInfo`) is ``<= tol``; the distance to the sequential
    trajectory is then at most ``residual`` times the sum over ``k`` of the norms of the Jacobian
    products ``J_t...J_{t-k}``, about ``residual / (1 - rho)`` for a cell contracting by ``rho``.
    On a chaotic cell (largest Lyapunov exponent > 0) that sum grows with ``T``: a converged
    result then differs from ``scan`` by as much as two sequential runs with different rounding
    do, not by ``tol``.

    DEER diverges on chaotic cells (its Jacobian products overflow); a step that would overflow
    takes the Picard value ``f(s_{t-1})`` instead, so DEER still ends, slowly (of order ``T``
    iterations). ELK's damped steps stay finite and each accepted one lowers the residual's sum of
    squares; a rejected one takes DEER's guarded step. ``"auto"`` picks ``scan``, ``"deer"`` or
    ``"elk"`` from a cheap estimate of the cell's largest Lyapunov exponent on a prefix of ``xs``
    (``rnnjax._parallel_auto.parallel_method``); under ``jit`` the choice is a ``lax.switch``
    (under ``vmap`` every branch runs, so choose outside ``vmap`` there).

    Gradients (reverse mode only) come from the implicit function theorem, never from
    differentiating the iterations: the adjoint ``lambda_t = g_t + J_{t+1}^T lambda_{t+1}`` is one
    dense reverse associative scan for ``"deer"``/``"elk"``; for the quasi methods it is iterated
    with diagonal scans and parallel VJPs (memory ``O(T N)``), falling back to a sequential
    backward sweep if that iteration does not reach ``tol``. Matmuls run at full precision
    whatever ``jax.default_matmul_precision`` says (Newton stalls on TF32 rounding).

    Args:
      cell: a :class:`Cell` (``rnnjax.simple_rnn``, ``lstm``, ``gru``, ``min_gru``, ...).
      params: the cell's params.
      xs: one sequence ``[T, input_size]`` (``T = 0`` returns ``initial_state`` and ``[0, H]``
        outputs, as ``rnnjax.scan``); batch with ``jax.vmap``.
      method: ``"deer"``, ``"quasi_deer"``, ``"elk"``, ``"quasi_elk"`` or ``"auto"``.
      max_iter: iterations at most (each ELK step, accepted or rejected, counts).
      tol: residual target; ``None`` uses 1e-10 for float64 states, 1e-5 for float32 and
        1e-2 for 16-bit ones.
      initial_guess: a state pytree with leaves ``[T, H]`` to start from (e.g. the trajectory of
        the previous training step); zeros when ``None``.
      initial_state: the state before ``xs[0]`` (leaves ``[H]``); zeros when ``None``.
      length: valid steps ``0 <= length <= T`` (an int scalar; per example under ``vmap``), as in
        ``rnnjax.scan`` and through the same mask (:mod:`rnnjax._mask`): steps at
        ``t >= length`` leave the state unchanged and output zeros. In the Newton system a padded
        step is ``s_t = s_{t-1}`` (Jacobian identity, offset zero), still linear, so it costs no
        extra iterations. The padding of ``xs`` is zeroed first, so NaN/inf there reaches
        neither outputs nor gradients. Under ``jit`` an out-of-range length acts as if clipped
        to ``[0, T]``; concrete values are checked.
      resets: ``bool [T]``, as in ``rnnjax.scan``: where ``resets[t]``, step ``t`` starts from
        ``initial_state`` (a new segment). In the Newton system a reset step has a zero Jacobian
        with respect to the previous state, so the linear recurrence restarts there.
      reverse: run from the last valid step to ``xs[0]``; ``ys[t]`` stays aligned with ``xs[t]``
        (with ``length``, only the valid prefix is reversed, as in ``rnnjax.scan``).
      on_failure: ``"fallback"`` reruns the sequence with a sequential loop when the iteration
        did not converge (``info.fell_back``); ``"raise"`` raises :class:`ConvergenceError` when
        called outside ``jit``/``vmap``/``grad`` and otherwise returns NaN trajectories. Under
        ``vmap`` the fallback loop runs only when some example of the batch did not converge.

    Returns:
      ``(final_state, ys [T, H], info)``, ``info`` a :class:`ParallelScanInfo`.

    Raises:
      TypeError: ``cell`` is not a Cell, ``xs`` is not floating point, ``length`` not an int or
        ``resets`` not bool.
      ValueError: bad ``xs`` shape, option, ``initial_state``, ``initial_guess`` or ``resets``
        shape, or ``length`` not a scalar in ``[0, T]``.
      ConvergenceError: ``on_failure="raise"``, concrete values, no convergence.

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> cell = rnnjax.gru(16)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> final_state, ys, info = rnnjax.parallel_scan(cell, params, jnp.ones((1000, 4)))
    >>> bool(info.converged)
    True
    >>> final_state, ys, info = rnnjax.parallel_scan(cell, params, jnp.ones((100, 4)), method="elk")
    >>> bool(info.converged)
    True
    """
    _check_cell(cell)
    _check_options(method, max_iter, tol, on_failure)
    xs = _checks.floating_array(xs, "xs")
    _checks.rank(xs, 2, "xs", "(T, input_size) for one sequence; batch with jax.vmap")
    num_steps = xs.shape[0]
    resets = _checks.resets(resets, (num_steps,))
    if num_steps == 0:
        final_state, ys = scan(cell, params, xs, initial_state=initial_state, length=length)
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(final_state))
        return final_state, ys, _sequential_info(dtype)
    if method == "auto":
        kwargs = dict(
            max_iter=max_iter, tol=tol, initial_guess=initial_guess, initial_state=initial_state,
            length=length, resets=resets, reverse=reverse, on_failure=on_failure,
        )  # fmt: skip
        return _auto(cell, params, xs, kwargs)
    valid = None
    if length is not None:
        length = _checks.lengths(length, (), num_steps, name="length")
        valid = _mask.valid(length, num_steps)
        # Zero the padding so NaN/inf there cannot leak into gradients (0 * NaN is NaN).
        xs = _mask.zero_padding(xs, valid)
    starts = None if resets is None else _mask.segment_starts(resets, reverse)
    if reverse:
        # The whole sequence is reversed: the padding then leads, as identity steps.
        xs = xs[::-1]
        valid = None if valid is None else valid[::-1]
        starts = None if starts is None else starts[::-1]
    projected = cell.project_inputs(params, xs)
    dtype = jnp.result_type(projected, *jax.tree_util.tree_leaves(params))
    state = _check_initial_state(cell, initial_state, dtype)
    guess = _check_guess(initial_guess, state, num_steps)
    if reverse:
        guess = jax.tree_util.tree_map(lambda leaf: leaf[::-1], guess)

    s0, unravel = ravel_pytree(state)
    unravel_all = jax.vmap(unravel)

    def f(params, s0, s, inputs):
        p, valid_t, start_t = inputs
        # A reset step starts from s0: its Jacobian with respect to s is zero.
        prev = s if start_t is None else jnp.where(start_t, s0, s)
        new = ravel_pytree(cell.recur(params, unravel(prev), p)[0])[0]
        # A padded step is the identity: Jacobian I, Newton offset 0.
        return new if valid_t is None else _mask.keep(valid_t, new, s)

    if tol is None:
        tol = _DEFAULT_TOL.get(np.dtype(s0.dtype).name, 1e-2)
    solve = make_solver(f, method, max_iter, float(tol), on_failure == "fallback")
    guess_flat = jax.vmap(lambda *leaves: ravel_pytree(leaves)[0])(
        *jax.tree_util.tree_leaves(guess)
    )
    states, info = solve(params, (projected, valid, starts), s0, guess_flat)

    prev = shift(states, s0)
    if starts is not None:
        prev = jnp.where(starts[:, None], s0[None], prev)
    _, ys = jax.vmap(cell.recur, in_axes=(None, 0, 0))(params, unravel_all(prev), projected)
    if valid is not None:
        ys = _mask.zero_invalid(valid, ys)
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
                f"Raise max_iter, use method='elk', on_failure='fallback', or rnnjax.scan."
            )
    return final_state, ys, info


def _auto(cell, params, xs, kwargs):
    """``method="auto"``: the method :func:`rnnjax.parallel_method` picks, or a ``lax.switch``."""
    choice = _parallel_auto.parallel_method(
        cell, params, xs, initial_state=kwargs["initial_state"], max_iter=kwargs["max_iter"]
    )
    branches = [
        lambda: _sequential(cell, params, xs, kwargs),
        lambda: parallel_scan(cell, params, xs, method="deer", **kwargs),
        lambda: parallel_scan(cell, params, xs, method="elk", **kwargs),
    ]
    if isinstance(choice, str):
        return branches[_parallel_auto.CHOICES.index(choice)]()
    return lax.switch(choice, branches)


def _sequential(cell, params, xs, kwargs):
    # resets= only when given: rnnjax.scan's resets argument is newer than this module.
    extra = {} if kwargs["resets"] is None else {"resets": kwargs["resets"]}
    final_state, ys = scan(
        cell, params, xs, initial_state=kwargs["initial_state"], length=kwargs["length"],
        reverse=kwargs["reverse"], **extra,
    )  # fmt: skip
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(final_state))
    return final_state, ys, _sequential_info(dtype)
