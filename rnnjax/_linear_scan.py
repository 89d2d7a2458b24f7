r"""Exact parallel-in-time evaluation of the diagonal linear recurrences ``lru`` and ``rg_lru``.

Both cells update ``h_t = a_t \odot h_{t-1} + b_t`` with ``a_t, b_t`` known from ``x_t`` alone
(``a_t = lambda`` complex for the LRU, ``a_t = a^(c r_t)`` real for the RG-LRU). Maps
``h -> a h + b`` compose associatively, ``(a_2, b_2) o (a_1, b_1) = (a_2 a_1, a_2 b_1 + b_2)``, so
``lax.associative_scan`` gives every ``h_t`` in depth ``O(log T)``. Since ``|a_t| < 1`` the
products only shrink: no log-space trick is needed (unlike the minimal cells' positive gates).
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax import _checks, _mask
from rnnjax._cells import Cell, RNNState
from rnnjax._lru import LRUState, _lru_readout, lru_lambda
from rnnjax._rg_lru import rg_lru_coefficients
from rnnjax._scan import _check_cell, _check_initial_state, check_closed_form

_LINEAR_CELLS = ("lru", "rg_lru")


def _combine(earlier, later):
    """Compose ``h -> a h + b`` maps (complex or real): ``(a2 a1, a2 b1 + b2)``."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def _lru_solve(cell: Cell, params, projected, state: LRUState):
    """LRU states ``[T, N]`` (real and imaginary parts) and outputs ``[T, D]`` in one scan."""
    n = cell.hidden_size
    compute = jnp.promote_types(projected.dtype, jnp.float32)
    lam_re, lam_im = lru_lambda(params)
    lam = lax.complex(lam_re.astype(compute), lam_im.astype(compute))
    b = lax.complex(projected[:, :n].astype(compute), projected[:, n : 2 * n].astype(compute))
    a_cum, h = lax.associative_scan(_combine, (jnp.broadcast_to(lam[None], b.shape), b))
    h0 = lax.complex(state.h_re.astype(compute), state.h_im.astype(compute))
    h = h + a_cum * h0[None]
    h_re, h_im = jnp.real(h), jnp.imag(h)
    ys = _lru_readout(params, h_re, h_im, projected[:, 2 * n :])
    dtype = state.h_re.dtype
    return (h_re.astype(dtype), h_im.astype(dtype)), ys


def _rg_lru_solve(cell: Cell, params, projected, state: RNNState):
    """RG-LRU states ``[T, H]`` (also the outputs) in one scan."""
    a, b = rg_lru_coefficients(params, projected, cell.config["c"])
    a_cum, h = lax.associative_scan(_combine, (a, b))
    h = (h + a_cum * state.h.astype(h.dtype)[None]).astype(state.h.dtype)
    return (h,), h


_SOLVERS = {"lru": (_lru_solve, LRUState), "rg_lru": (_rg_lru_solve, RNNState)}


def parallel_linear_scan(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    *,
    initial_state: Any = None,
    length: jax.Array | int | None = None,
    reverse: bool = False,
) -> tuple[Any, jax.Array]:
    r"""Run an ``lru``/``rg_lru`` cell over ``xs [T, D]`` with one associative scan, exactly.

    ``h_t = a_t h_{t-1} + b_t`` unrolls to ``h_t = A_t h_0 + \sum_{k \le t} (A_t / A_k) b_k``
    with ``A_t = a_1 \cdots a_t``; ``lax.associative_scan`` builds every prefix of the composed
    maps in depth ``O(log T)`` (complex arithmetic for the LRU, real for the RG-LRU). Equal to
    ``rnnjax.scan(cell, params, xs)`` up to rounding; reverse- and forward-mode autodiff go
    through the scan.

    Args:
      cell: ``rnnjax.lru(...)`` or ``rnnjax.rg_lru(...)``.
      params: the cell's params.
      xs: one sequence ``[T, input_size]``; batch with ``jax.vmap``.
      initial_state: the cell's state for one example; zeros when ``None``.
      length: valid steps ``0 <= length <= T`` (an int scalar; per example under ``vmap``), as in
        ``rnnjax.scan``: outputs at ``t >= length`` are zeros and ``final_state`` is the state
        after the last valid step (``initial_state`` when ``length = 0``). The padding of ``xs``
        is zeroed first, so NaN/inf there reaches neither outputs nor gradients.
      reverse: run from the last valid step to ``xs[0]``; ``ys[t]`` stays aligned with ``xs[t]``
        (with ``length``, only the valid prefix is reversed, as in ``rnnjax.scan``).

    Returns:
      ``(final_state, ys)``: ``ys [T, D]`` for the LRU, ``[T, H]`` for the RG-LRU.

    Raises:
      TypeError: ``cell`` is not a Cell; ``xs`` is not floating point.
      ValueError: ``cell`` is not an ``lru``/``rg_lru`` cell; ``xs`` or ``initial_state`` has the
        wrong shape; ``length`` is not a scalar in ``[0, T]``.

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> cell = rnnjax.lru(8, r_min=0.9, r_max=0.99)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> final_state, ys = rnnjax.parallel_linear_scan(cell, params, jnp.ones((100, 3)), length=60)
    >>> ys.shape
    (100, 3)
    """
    _check_cell(cell)
    if cell.name not in _SOLVERS:
        raise ValueError(
            f"cell must be rnnjax.lru or rnnjax.rg_lru (a diagonal recurrence linear in h); got a "
            f"{cell.name!r} cell. Use rnnjax.parallel_minimal_scan for min_gru/min_lstm and "
            f"rnnjax.parallel_scan for nonlinear cells."
        )
    check_closed_form(cell, "parallel_linear_scan")
    solve, state_type = _SOLVERS[cell.name]
    xs = _checks.floating_array(xs, "xs")
    _checks.rank(xs, 2, "xs", "(T, input_size) for one sequence; batch with jax.vmap")
    num_steps = xs.shape[0]
    if length is None:
        valid = None
        order = jnp.arange(num_steps)[::-1] if reverse else None
    else:
        length = jnp.clip(_checks.lengths(length, (), num_steps, name="length"), 0, num_steps)
        valid = _mask.valid(length, num_steps)
        xs = _mask.zero_padding(xs, valid)
        order = _mask.reversed_prefix(length, num_steps) if reverse else None
    projected = cell.project_inputs(params, xs)
    dtype = jnp.result_type(projected.dtype, *jax.tree_util.tree_leaves(params))
    state = _check_initial_state(cell, initial_state, dtype)
    if num_steps == 0:
        step_input = jax.ShapeDtypeStruct(projected.shape[1:], projected.dtype)
        y = jax.eval_shape(cell.recur, params, state, step_input)[1]
        return state, jnp.zeros((0, *y.shape), y.dtype)
    if order is not None:
        projected = projected[order]
    states, ys = solve(cell, params, projected, state)
    if length is None:
        final_state = state_type(*(s[-1] for s in states))
    else:
        last = jnp.maximum(length - 1, 0)
        final_state = state_type(
            *(jnp.where(length > 0, s[last], s0) for s, s0 in zip(states, state, strict=True))
        )
        ys = _mask.zero_invalid(valid, ys)
    return final_state, ys if order is None else ys[order]
