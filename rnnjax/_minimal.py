r"""Minimal RNNs with a recurrence linear in ``h``: ``min_gru``, ``min_lstm`` (Feng et al. 2024).

Their gates read only ``x_t``, so ``h_t = a_t \odot h_{t-1} + b_t`` with ``a_t, b_t > 0`` known for
all ``t`` before the recurrence starts. :func:`parallel_minimal_scan` solves it exactly with
``lax.associative_scan`` on ``(log a, log b)`` pairs (log space keeps long products of gates in
range); the cells' ``step``/``recur`` give the same numbers one step at a time for ``rnnjax.scan``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax import _checks, _mask
from rnnjax import _initializers as inits
from rnnjax._cells import (
    Cell,
    Config,
    Kernels,
    Partial,
    RNNState,
    _project,
    _split,
    batch_shape_of,
)
from rnnjax._scan import _check_cell, _check_initial_state, check_closed_form

MIN_GRU_GATES = ("z", "h")
"""Gate order along the fused min-GRU axis: update gate, candidate."""

MIN_LSTM_GATES = ("f", "i", "h")
"""Gate order along the fused min-LSTM axis: forget gate, input gate, candidate."""


class MinGRUParams(NamedTuple):
    """min-GRU parameters, gates (z, h): ``w_x [D, 2H]``, ``b [2H]``; no recurrent kernel."""

    w_x: jax.Array
    b: jax.Array


class MinLSTMParams(NamedTuple):
    """min-LSTM parameters, gates (f, i, h): ``w_x [D, 3H]``, ``b [3H]``; no recurrent kernel."""

    w_x: jax.Array
    b: jax.Array


def _g(x: jax.Array) -> jax.Array:
    """Feng et al.'s positive activation: ``x + 1/2`` for ``x >= 0``, ``sigmoid(x)`` below."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def _log_g(x: jax.Array) -> jax.Array:
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def _min_gru_coefficients(projected: jax.Array, log: bool):
    """``(a, b)`` of ``h_t = a h_{t-1} + b`` (their logs when ``log``) from ``[..., 2H]`` gates."""
    k, candidate = _split(projected, 2)
    if log:
        return -jax.nn.softplus(k), -jax.nn.softplus(-k) + _log_g(candidate)
    z = jax.nn.sigmoid(k)
    return 1.0 - z, z * _g(candidate)


def _min_lstm_coefficients(projected: jax.Array, log: bool):
    """``(a, b)`` with the normalised gates ``f / (f + i)``, ``i / (f + i)`` from ``[..., 3H]``."""
    k_f, k_i, candidate = _split(projected, 3)
    if log:
        # log(i / f) = softplus(-k_f) - softplus(-k_i); the normalised gates follow from it.
        diff = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
        return -jax.nn.softplus(diff), -jax.nn.softplus(-diff) + _log_g(candidate)
    f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
    return f / (f + i), i / (f + i) * _g(candidate)


_COEFFICIENTS = {"min_gru": _min_gru_coefficients, "min_lstm": _min_lstm_coefficients}


class _Spec(NamedTuple):
    """What the minimal cells' module-level functions are bound to (hashable)."""

    name: str
    hidden: int
    num_gates: int
    params_type: type
    kernel_init: Any
    dtype: Any
    param_dtype: Any


def _label(spec: _Spec) -> str:
    return f"{spec.name}(hidden_size={spec.hidden})"


def _check_params(spec: _Spec, params) -> None:
    fused = spec.num_gates * spec.hidden
    _checks.cell_params(params, spec.params_type, spec.name, _label(spec))
    if params.w_x.ndim != 2 or params.w_x.shape[1] != fused or params.b.shape != (fused,):
        raise ValueError(
            f"params do not match {_label(spec)}: expected w_x (input_size, {fused}) and b "
            f"({fused},); got w_x {tuple(params.w_x.shape)}, b {tuple(params.b.shape)}."
        )


def _init(spec: _Spec, key: jax.Array, input_size: int):
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
        raise ValueError(f"input_size must be a positive int; got {input_size!r}.")
    fused = spec.num_gates * spec.hidden
    w_x = inits.per_gate(
        spec.kernel_init, key, (input_size, fused), spec.num_gates, spec.param_dtype
    )
    return spec.params_type(w_x, jnp.zeros((fused,), spec.param_dtype))


def _initial_state(spec: _Spec, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> RNNState:
    return RNNState(jnp.zeros((*batch_shape_of(batch_shape), spec.hidden), dtype))


def _project_inputs(spec: _Spec, params, x: jax.Array) -> jax.Array:
    _check_params(spec, params)
    return _project(params, x, spec.dtype)


def _recur(spec: _Spec, params, state, projected: jax.Array):
    _check_params(spec, params)
    if not isinstance(state, RNNState):
        raise TypeError(f"state must be RNNState; got {type(state).__name__}.")
    expected = (*projected.shape[:-1], spec.hidden)
    if tuple(jnp.shape(state.h)) != expected:
        raise ValueError(f"state.h must have shape {expected}; got {jnp.shape(state.h)}.")
    a, b = _COEFFICIENTS[spec.name](projected, log=False)
    h = (a * state.h + b).astype(state.h.dtype)
    return RNNState(h), h


def _step(spec: _Spec, params, state, x: jax.Array):
    return _recur(spec, params, state, _project_inputs(spec, params, x))


def _minimal_cell(name, hidden_size, gates, params_type, kernel_init, dtype, param_dtype) -> Cell:
    """A ``Cell`` whose ``recur`` is ``h_t = a_t h_{t-1} + b_t`` with gates from ``x_t`` only;
    its functions are bound with ``Partial``, so equal constructions give equal cells."""
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int; got {hidden_size!r}.")
    spec = _Spec(name, hidden_size, len(gates), params_type, kernel_init, dtype, param_dtype)
    init, initial_state, step, project_inputs, recur = (
        Partial(f, (spec,)) for f in (_init, _initial_state, _step, _project_inputs, _recur)
    )
    config = Config({"dtype": dtype, "param_dtype": param_dtype, "gates": tuple(gates)})
    # A record of its own functions (no fast-path kind): a replaced ``step`` is then honoured.
    kernels = Kernels(name, config, step, project_inputs, recur)
    return Cell(
        init, initial_state, step, project_inputs, recur, hidden_size, len(gates), name, config,
        kernels,
    )  # fmt: skip


def min_gru(
    hidden_size: int,
    *,
    kernel_init: inits.Initializer = inits.glorot_uniform,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    r"""Minimal GRU (Feng et al. 2024, "Were RNNs All We Needed?"): gates see only ``x_t``.

    With ``[k_z, k_h] = x_t W_x + b`` (gate order z, h) and ``g(v) = v + 1/2`` for ``v >= 0``,
    ``sigmoid(v)`` otherwise (positive, so the parallel form can work in log space):

    .. math::
        z_t = \sigma(k_z), \qquad h_t = (1 - z_t) \odot h_{t-1} + z_t \odot g(k_h)

    Args:
      hidden_size: ``H``.
      kernel_init: initialiser of each ``[D, H]`` gate block of ``w_x`` (Glorot uniform).
      dtype: matmul dtype; the state keeps its own dtype.
      param_dtype: dtype of the initialised parameters.

    Returns:
      A :class:`Cell` with params :class:`MinGRUParams` and state ``RNNState(h)``, usable with
      ``rnnjax.scan`` (one step at a time) and :func:`parallel_minimal_scan` (all at once).

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> cell = rnnjax.min_gru(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> final_state, ys = rnnjax.parallel_minimal_scan(cell, params, jnp.ones((100, 3)))
    """
    return _minimal_cell(
        "min_gru", hidden_size, MIN_GRU_GATES, MinGRUParams, kernel_init, dtype, param_dtype
    )


def min_lstm(
    hidden_size: int,
    *,
    kernel_init: inits.Initializer = inits.glorot_uniform,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    r"""Minimal LSTM (Feng et al. 2024) with the length-independent normalised gates.

    With ``[k_f, k_i, k_h] = x_t W_x + b`` (gate order f, i, h) and ``g`` as in :func:`min_gru`:

    .. math::
        f_t = \sigma(k_f), \quad i_t = \sigma(k_i), \qquad
        h_t = \frac{f_t}{f_t + i_t} \odot h_{t-1} + \frac{i_t}{f_t + i_t} \odot g(k_h)

    Args:
      hidden_size: ``H``.
      kernel_init: initialiser of each ``[D, H]`` gate block of ``w_x`` (Glorot uniform).
      dtype: matmul dtype; the state keeps its own dtype.
      param_dtype: dtype of the initialised parameters.

    Returns:
      A :class:`Cell` with params :class:`MinLSTMParams` and state ``RNNState(h)``.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> cell = rnnjax.min_lstm(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> state, y = cell.step(params, cell.initial_state(), jnp.ones(3))
    """
    return _minimal_cell(
        "min_lstm", hidden_size, MIN_LSTM_GATES, MinLSTMParams, kernel_init, dtype, param_dtype
    )


def _log_combine(earlier, later):
    """Compose ``h -> a h + b`` maps stored as ``(log a, log b)``: ``a2 a1``, ``a2 b1 + b2``."""
    log_a1, log_b1 = earlier
    log_a2, log_b2 = later
    return log_a1 + log_a2, jnp.logaddexp(log_a2 + log_b1, log_b2)


def parallel_minimal_scan(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    *,
    initial_state: Any = None,
    length: jax.Array | int | None = None,
    reverse: bool = False,
) -> tuple[RNNState, jax.Array]:
    r"""Run a ``min_gru``/``min_lstm`` cell over ``xs [T, D]`` with one associative scan, exactly.

    The recurrence ``h_t = a_t h_{t-1} + b_t`` (``a_t, b_t > 0``) unrolls to
    ``h_t = A_t h_0 + \sum_{k \le t} (A_t / A_k) b_k`` with ``A_t = a_1 \cdots a_t``. The sum is
    computed by ``lax.associative_scan`` over ``(log a_t, log b_t)`` pairs combined with
    ``logaddexp`` (depth ``O(log T)``, no underflow of long gate products); ``A_t h_0`` is added
    outside the logs, so ``h_0`` may have any sign. Reverse-mode and forward-mode autodiff go
    through the scan directly.

    Args:
      cell: ``rnnjax.min_gru(H)`` or ``rnnjax.min_lstm(H)``.
      params: the cell's params.
      xs: one sequence ``[T, input_size]``; batch with ``jax.vmap``.
      initial_state: ``RNNState(h [H])``; zeros when ``None``.
      length: valid steps ``0 <= length <= T`` (an int scalar; per example under ``vmap``), as in
        ``rnnjax.scan``: outputs at ``t >= length`` are zeros and ``final_state`` is the state
        after the last valid step (``initial_state`` when ``length = 0``). Causality makes the
        padding harmless once it sits after the valid steps, so the scan runs over all ``T``
        steps and reads the result at ``length - 1``; the padding of ``xs`` is zeroed first, so
        NaN/inf there reaches neither outputs nor gradients. Under ``jit`` an out-of-range length
        is clipped to ``[0, T]``; concrete values are checked.
      reverse: run from the last valid step to ``xs[0]``; ``ys[t]`` stays aligned with ``xs[t]``
        (with ``length``, only the valid prefix is reversed, as in ``rnnjax.scan``).

    Returns:
      ``(final_state, ys [T, H])``, equal to ``rnnjax.scan(cell, params, xs)`` up to rounding.

    Raises:
      TypeError: ``cell`` is not a Cell; ``xs`` is not floating point.
      ValueError: ``cell`` is not a minimal cell; ``xs`` or ``initial_state`` has the wrong shape;
        ``length`` is not a scalar in ``[0, T]``.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> cell = rnnjax.min_lstm(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> final_state, ys = rnnjax.parallel_minimal_scan(cell, params, jnp.ones((100, 3)))
    """
    _check_cell(cell)
    if cell.name not in _COEFFICIENTS:
        raise ValueError(
            f"cell must be rnnjax.min_gru or rnnjax.min_lstm (gates independent of h); got a "
            f"{cell.name!r} cell. Use rnnjax.parallel_scan for nonlinear cells."
        )
    check_closed_form(cell, "parallel_minimal_scan")
    xs = _checks.floating_array(xs, "xs")
    _checks.rank(xs, 2, "xs", "(T, input_size) for one sequence; batch with jax.vmap")
    num_steps = xs.shape[0]
    valid = None
    if length is None:
        order = jnp.arange(num_steps)[::-1] if reverse else None
    else:
        length = jnp.clip(_checks.lengths(length, (), num_steps, name="length"), 0, num_steps)
        valid = _mask.valid(length, num_steps)
        xs = _mask.zero_padding(xs, valid)
        order = _mask.reversed_prefix(length, num_steps) if reverse else None
    projected = cell.project_inputs(params, xs)
    state = _check_initial_state(cell, initial_state, projected.dtype)
    if order is not None:
        projected = projected[order]
    log_a, log_b = _COEFFICIENTS[cell.name](projected, log=True)
    log_a_cum, log_h = lax.associative_scan(_log_combine, (log_a, log_b))
    h0 = state.h.astype(projected.dtype)
    ys = (jnp.exp(log_h) + jnp.exp(log_a_cum) * h0[None]).astype(state.h.dtype)
    if length is None:
        final_state = RNNState(ys[-1]) if num_steps else state
    else:
        last = ys[jnp.maximum(length - 1, 0)] if num_steps else state.h
        final_state = RNNState(jnp.where(length > 0, last, state.h))
        ys = _mask.zero_invalid(valid, ys)
    return final_state, ys if order is None else ys[order]
