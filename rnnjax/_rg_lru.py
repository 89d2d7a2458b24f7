r"""The Real-Gated Linear Recurrent Unit, ``rg_lru`` (De et al. 2024, Griffin).

A real diagonal recurrence whose per-step decay ``a_t = a^(c r_t)`` is chosen by a gate that reads
only ``x_t``, so ``h_t = a_t h_{t-1} + b_t`` is linear in ``h`` with coefficients known before the
recurrence starts. The cell's ``project_inputs`` computes them (all the gate math), so
``rnnjax.scan`` evaluates it for every step at once and its loop does only ``a_t h + b_t``;
:func:`rnnjax.parallel_linear_scan` runs the same recurrence with one associative scan.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax import _initializers as inits
from rnnjax._cells import Cell, Config, Kernels, RNNState, _project, _split

RG_LRU_GATES = ("r", "i", "u")
"""Gate order along the fused RG-LRU axis: recurrence gate, input gate, recurrence input."""

RG_LRU_C = 8.0
"""Griffin's constant ``c`` in ``a_t = a^(c r_t)``."""


class RGLRUParams(NamedTuple):
    """RG-LRU parameters, gates (r, i, u): ``w_x [D, 3H]``, ``b [3H]``, and ``a_logit [H]``
    (Griffin's ``Lambda``, ``a = sigmoid(a_logit)``)."""

    w_x: jax.Array
    b: jax.Array
    a_logit: jax.Array


def rg_lru_coefficients(params: RGLRUParams, projected: jax.Array, c: float = RG_LRU_C):
    """``(a_t, b_t)``, each ``[..., H]``, of ``h_t = a_t h_{t-1} + b_t``: the RG-LRU's gate math.

    ``projected`` is either the gate pre-activations ``x_t W_x + b`` ``[..., 3H]`` (gates r, i,
    u), from which ``log a_t = -c softplus(-a_logit) r_t`` (that is ``a^(c r_t)`` with
    ``a = sigmoid(a_logit)``, computed in log space) and ``b_t = sqrt(1 - a_t^2) i_t u_t`` (with
    ``1 - a_t^2`` as ``-expm1(2 log a_t)``: no cancellation when ``a_t`` is near 1); or the
    cell's ``project_inputs`` output ``[..., 2H]``, ``[a_t, b_t]`` already computed, which is
    split. ``H`` is ``a_logit``'s size, so the two widths never coincide.
    """
    hidden = params.a_logit.shape[-1]
    if projected.shape[-1] == 2 * hidden:
        a, b = _split(projected, 2)
        return a, b
    if projected.shape[-1] != 3 * hidden:
        raise ValueError(
            f"projected must have shape (..., {3 * hidden}) (x W_x + b) or (..., {2 * hidden}) "
            f"(the cell's project_inputs) for a_logit ({hidden},); got {tuple(projected.shape)}."
        )
    k_r, k_i, u = _split(projected, 3)
    rate = jax.nn.softplus(-params.a_logit).reshape((1,) * (projected.ndim - 1) + (-1,))
    log_a = -c * rate * jax.nn.sigmoid(k_r)
    scale = jnp.sqrt(-jnp.expm1(2.0 * log_a))
    return jnp.exp(log_a), scale * (jax.nn.sigmoid(k_i) * u)


def rg_lru(
    hidden_size: int,
    *,
    c: float = RG_LRU_C,
    min_rad: float = 0.9,
    max_rad: float = 0.999,
    kernel_init: inits.Initializer = inits.glorot_uniform,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    r"""Real-Gated LRU (De et al. 2024, "Griffin"): a gated real diagonal linear recurrence.

    With ``[k_r, k_i, u_t] = x_t W_x + b`` (gate order r, i, u) and ``a = sigmoid(a_logit)``:

    .. math::
        r_t = \sigma(k_r), \quad i_t = \sigma(k_i), \quad a_t = a^{c r_t}, \qquad
        h_t = a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot u_t)

    The output is ``h_t``. Griffin's RG-LRU reads its input ``x_t`` of width ``H`` directly
    (``r_t = sigma(W_a x_t + b_a)``, ``i_t = sigma(W_x x_t + b_x)``, and ``x_t`` in place of
    ``u_t``); this cell also holds the linear layer that feeds it, ``u_t = x_t W_u + b_u``, so
    ``input_size`` is free. With ``input_size = H``, ``W_u = I`` and ``b_u = 0`` it is exactly
    Griffin's recurrence. ``a_logit`` is initialised so that ``a^c ~ U(min_rad, max_rad)``
    (Griffin: ``[0.9, 0.999]``), the decay of a fully open recurrence gate; gate kernels use
    ``kernel_init`` per gate block, biases are zero.

    Args:
      hidden_size: ``H``.
      c: the constant in ``a_t = a^(c r_t)`` (Griffin: 8).
      min_rad: lower end of ``a^c`` at initialisation, ``0 < min_rad < max_rad``.
      max_rad: upper end of ``a^c`` at initialisation, ``max_rad < 1``.
      kernel_init: initialiser of each ``[D, H]`` gate block of ``w_x`` (Glorot uniform).
      dtype: matmul dtype; the state keeps its own dtype.
      param_dtype: dtype of the initialised parameters.

    Returns:
      A :class:`Cell` with params :class:`RGLRUParams` and state ``RNNState(h)``. Its
      ``project_inputs`` returns the coefficients ``[a_t, b_t]`` ``[..., 2H]``
      (:func:`rg_lru_coefficients`, every gate), so ``rnnjax.scan`` computes them for all steps
      at once and ``recur`` is only ``a_t h_{t-1} + b_t``.

    Raises:
      ValueError: ``hidden_size`` is not a positive int, or ``c``, ``min_rad``, ``max_rad`` are
        out of range.

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> cell = rnnjax.rg_lru(16)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> final_state, ys = rnnjax.parallel_linear_scan(cell, params, jnp.ones((100, 4)))
    >>> ys.shape
    (100, 16)
    """
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int; got {hidden_size!r}.")
    if not c > 0.0:
        raise ValueError(f"c must be positive; got {c!r}.")
    if not 0.0 < min_rad < max_rad < 1.0:
        raise ValueError(
            f"min_rad and max_rad must satisfy 0 < min_rad < max_rad < 1; got {min_rad}, {max_rad}."
        )
    fused = 3 * hidden_size
    label = f"rg_lru(hidden_size={hidden_size})"

    def check_params(params) -> None:
        _checks.cell_params(params, RGLRUParams, "rg_lru", label)
        if (
            params.w_x.ndim != 2
            or params.w_x.shape[1] != fused
            or params.b.shape != (fused,)
            or params.a_logit.shape != (hidden_size,)
        ):
            raise ValueError(
                f"params do not match {label}: expected w_x (input_size, {fused}), b ({fused},) "
                f"and a_logit ({hidden_size},); got w_x {tuple(params.w_x.shape)}, b "
                f"{tuple(params.b.shape)}, a_logit {tuple(params.a_logit.shape)}."
            )

    def init(key: jax.Array, input_size: int) -> RGLRUParams:
        if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
            raise ValueError(f"input_size must be a positive int; got {input_size!r}.")
        key_w, key_a = jax.random.split(key)
        w_x = inits.per_gate(kernel_init, key_w, (input_size, fused), 3, param_dtype)
        a_c = jax.random.uniform(key_a, (hidden_size,), param_dtype, min_rad, max_rad)
        log_a = jnp.log(a_c) / c  # a = (a^c)^(1/c); a_logit = log(a / (1 - a))
        return RGLRUParams(
            w_x, jnp.zeros((fused,), param_dtype), log_a - jnp.log(-jnp.expm1(log_a))
        )

    def initial_state(batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> RNNState:
        return RNNState(jnp.zeros((*batch_shape, hidden_size), dtype))

    def project_inputs(params: RGLRUParams, x: jax.Array) -> jax.Array:
        """``[a_t, b_t]`` ``[..., 2H]`` from ``x [..., D]``: every gate, outside the loop."""
        check_params(params)
        return jnp.concatenate(rg_lru_coefficients(params, _project(params, x, dtype), c), -1)

    def recur(params: RGLRUParams, state: RNNState, projected: jax.Array):
        """``h_t = a_t h_{t-1} + b_t`` with ``[a_t, b_t] = projected [..., 2H]``."""
        check_params(params)
        if not isinstance(state, RNNState):
            raise TypeError(f"state must be RNNState; got {type(state).__name__}.")
        if projected.ndim < 1 or projected.shape[-1] != 2 * hidden_size:
            raise ValueError(
                f"projected must be [a_t, b_t] of shape (..., {2 * hidden_size}) (this cell's "
                f"project_inputs); got {tuple(projected.shape)}."
            )
        expected = (*projected.shape[:-1], hidden_size)
        if tuple(jnp.shape(state.h)) != expected:
            raise ValueError(f"state.h must have shape {expected}; got {jnp.shape(state.h)}.")
        a, b = _split(projected, 2)
        h = (a * state.h + b).astype(state.h.dtype)
        return RNNState(h), h

    def step(params: RGLRUParams, state: RNNState, x: jax.Array):
        return recur(params, state, project_inputs(params, x))

    config = {
        "c": c, "min_rad": min_rad, "max_rad": max_rad, "dtype": dtype,
        "param_dtype": param_dtype, "gates": RG_LRU_GATES,
    }  # fmt: skip
    # A record of the three functions as built (no fast-path kind): ``rnnjax.scan`` then runs a
    # cell whose ``step`` alone was replaced by that ``step`` (the ``rnnjax.Cell`` contract).
    kernels = Kernels("rg_lru", Config(config), step, project_inputs, recur)
    return Cell(
        init, initial_state, step, project_inputs, recur, hidden_size, 3, "rg_lru", config, kernels
    )
