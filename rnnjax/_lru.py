r"""The Linear Recurrent Unit, ``lru`` (Orvieto et al. 2023): a complex diagonal linear recurrence.

The state ``h in C^N`` evolves by ``h_t = lambda * h_{t-1} + gamma * (B x_t)`` with a diagonal
``lambda`` inside the unit disc, so every mode decays (or rotates) at its own fixed rate and
``d h_T / d h_k = diag(lambda^(T-k))``: gradients neither explode nor vanish faster than the
slowest mode allows. Params stay real pytrees (``lambda`` in its exponential parametrisation,
``B`` and ``C`` as real and imaginary parts); the state is kept as its real and imaginary parts,
:class:`LRUState`, so ``rnnjax.scan``, ``jax.grad``, ``vmap`` and ``rnnjax.jacobians`` see only
real arrays. :func:`rnnjax.parallel_linear_scan` evaluates the same recurrence with one
associative scan.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax._cells import Cell, Config, Kernels


class LRUParams(NamedTuple):
    r"""LRU parameters (state size ``N``, input size ``D``), all real.

    ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` and ``gamma = exp(gamma_log)`` are ``[N]``;
    ``B = (b_re + i b_im)^T`` with ``b_re, b_im [D, N]`` (row-vector convention: ``x @ b_re``);
    ``C = (c_re + i c_im)^T`` with ``c_re, c_im [N, D]``; ``d [D]`` is the diagonal skip.
    """

    nu_log: jax.Array
    theta_log: jax.Array
    gamma_log: jax.Array
    b_re: jax.Array
    b_im: jax.Array
    c_re: jax.Array
    c_im: jax.Array
    d: jax.Array


class LRUState(NamedTuple):
    """State of an LRU, ``h = h_re + i h_im``: real and imaginary parts, each ``[..., N]``."""

    h_re: jax.Array
    h_im: jax.Array


def _check_positive_int(value, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")


def _along_last(v: jax.Array, ndim: int) -> jax.Array:
    """``v [N]`` reshaped to broadcast explicitly against a ``[..., N]`` array of rank ``ndim``."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def lru_lambda(params: LRUParams) -> tuple[jax.Array, jax.Array]:
    """``(Re lambda, Im lambda)`` of the diagonal recurrence, each ``[N]``."""
    modulus = jnp.exp(-jnp.exp(params.nu_log))
    phase = jnp.exp(params.theta_log)
    return modulus * jnp.cos(phase), modulus * jnp.sin(phase)


def _lru_readout(params: LRUParams, h_re, h_im, skip) -> jax.Array:
    """``Re(C h) + d * x``; ``skip = d * x`` was computed by ``project_inputs``."""
    return jnp.matmul(h_re, params.c_re) - jnp.matmul(h_im, params.c_im) + skip


def lru(
    hidden_size: int,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2.0 * math.pi,
    *,
    param_dtype=jnp.float32,
) -> Cell:
    r"""Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for
    Long Sequences"): a complex diagonal recurrence with a real output.

    With ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` and ``gamma = exp(gamma_log)`` (both
    ``[N]``), ``B [N, D]``, ``C [D, N]`` complex and ``d [D]`` real:

    .. math::
        h_t = \lambda \odot h_{t-1} + \gamma \odot (B x_t), \qquad
        y_t = \mathrm{Re}(C h_t) + d \odot x_t

    The output has the input's size ``D`` (the paper's layer maps ``R^D -> R^D`` through a state
    ``C^N``); put a dense layer in front to widen it. ``d h_T / d h_k = diag(lambda^(T-k))``, so
    ``||d h_T / d h_k||_2 = max|lambda|^(T-k)`` exactly (in the real ``(h_re, h_im)`` layout too:
    each mode is a 2x2 scaled rotation).

    Initialisation (the paper's Sec. 3.2-3.3): ``|lambda|`` on the ring ``[r_min, r_max]`` with
    ``|lambda|^2`` uniform, ``nu = -log(u_1 (r_max^2 - r_min^2) + r_min^2) / 2``,
    ``theta = max_phase * u_2`` (``u_1, u_2 ~ U(0, 1)``), stored as ``nu_log = log nu``,
    ``theta_log = log theta``; ``gamma = sqrt(1 - |lambda|^2)`` (so a white input keeps the state's
    variance); ``Re B, Im B ~ N(0, 1 / (2 D))``, ``Re C, Im C ~ N(0, 1 / N)``, ``d ~ N(0, 1)``.

    Args:
      hidden_size: ``N``, the complex state size.
      r_min: smallest ``|lambda|`` at initialisation, ``0 <= r_min < r_max``.
      r_max: largest ``|lambda|`` at initialisation, ``r_max <= 1``.
      max_phase: phases ``arg(lambda)`` are drawn from ``[0, max_phase]``, ``max_phase > 0``.
      param_dtype: dtype of the initialised parameters.

    Returns:
      A :class:`Cell` with params :class:`LRUParams` and state :class:`LRUState`; ``y_t`` is
      ``[..., D]``. Usable with ``rnnjax.scan`` and :func:`rnnjax.parallel_linear_scan`.

    Raises:
      ValueError: ``hidden_size`` is not a positive int, or ``r_min``, ``r_max``, ``max_phase``
        are out of range.

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> cell = rnnjax.lru(16, r_min=0.9, r_max=0.999, max_phase=0.314)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> final_state, ys = rnnjax.scan(cell, params, jnp.ones((100, 4)))
    >>> ys.shape
    (100, 4)
    """
    _check_positive_int(hidden_size, "hidden_size")
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(
            f"r_min and r_max must satisfy 0 <= r_min < r_max <= 1; got {r_min}, {r_max}."
        )
    if not max_phase > 0.0:
        raise ValueError(f"max_phase must be positive; got {max_phase!r}.")
    label = f"lru(hidden_size={hidden_size})"

    def check_params(params) -> None:
        _checks.cell_params(params, LRUParams, "lru", label)
        shapes = {field: tuple(jnp.shape(value)) for field, value in params._asdict().items()}
        input_size = shapes["d"][0] if len(shapes["d"]) == 1 else -1
        n, d = hidden_size, input_size
        expected = {
            "nu_log": (n,), "theta_log": (n,), "gamma_log": (n,), "b_re": (d, n),
            "b_im": (d, n), "c_re": (n, d), "c_im": (n, d), "d": (d,),
        }  # fmt: skip
        if input_size < 1 or shapes != expected:
            raise ValueError(
                f"params do not match {label}: expected nu_log, theta_log, gamma_log ({n},), "
                f"b_re, b_im (input_size, {n}), c_re, c_im ({n}, input_size), d (input_size,); "
                f"got {shapes}."
            )

    def init(key: jax.Array, input_size: int) -> LRUParams:
        _check_positive_int(input_size, "input_size")
        keys = jax.random.split(key, 7)
        draw = jnp.promote_types(param_dtype, jnp.float32)  # narrow dtypes: draw, then cast
        u1 = jax.random.uniform(keys[0], (hidden_size,), draw)
        u2 = jax.random.uniform(keys[1], (hidden_size,), draw)
        nu = -0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        theta = max_phase * u2
        gamma_log = 0.5 * jnp.log1p(-jnp.exp(-2.0 * nu))  # log sqrt(1 - |lambda|^2)

        def normal(k, shape, fan):
            return jax.random.normal(k, shape, draw) / math.sqrt(fan)

        shape_b, shape_c = (input_size, hidden_size), (hidden_size, input_size)
        params = LRUParams(
            nu_log=jnp.log(nu),
            theta_log=jnp.log(theta),
            gamma_log=gamma_log,
            b_re=normal(keys[2], shape_b, 2 * input_size),
            b_im=normal(keys[3], shape_b, 2 * input_size),
            c_re=normal(keys[4], shape_c, hidden_size),
            c_im=normal(keys[5], shape_c, hidden_size),
            d=jax.random.normal(keys[6], (input_size,), draw),
        )
        return jax.tree.map(lambda leaf: leaf.astype(param_dtype), params)

    def initial_state(batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> LRUState:
        zeros = jnp.zeros((*batch_shape, hidden_size), dtype)
        return LRUState(zeros, zeros)

    def project_inputs(params: LRUParams, x: jax.Array) -> jax.Array:
        """``[gamma * Re(B x), gamma * Im(B x), d * x]``: ``[..., 2N + D]``."""
        check_params(params)
        x = _checks.floating_array(x, "x")
        input_size = params.d.shape[0]
        if x.ndim < 1 or x.shape[-1] != input_size:
            raise ValueError(
                f"x must have shape (..., input_size={input_size}) to match params.d "
                f"{tuple(params.d.shape)}; got shape {tuple(x.shape)}."
            )
        gamma = _along_last(jnp.exp(params.gamma_log), x.ndim)
        skip = x * _along_last(params.d, x.ndim)
        return jnp.concatenate(
            [jnp.matmul(x, params.b_re) * gamma, jnp.matmul(x, params.b_im) * gamma, skip], -1
        )

    def recur(params: LRUParams, state: LRUState, projected: jax.Array):
        check_params(params)
        if not isinstance(state, LRUState):
            raise TypeError(
                f"state must be LRUState (from cell.initial_state); got {type(state).__name__}."
            )
        expected = (*projected.shape[:-1], hidden_size)
        if tuple(jnp.shape(state.h_re)) != expected or tuple(jnp.shape(state.h_im)) != expected:
            raise ValueError(
                f"state.h_re and state.h_im must have shape {expected}; got "
                f"{jnp.shape(state.h_re)}, {jnp.shape(state.h_im)}."
            )
        u_re = projected[..., :hidden_size]
        u_im = projected[..., hidden_size : 2 * hidden_size]
        lam_re, lam_im = (_along_last(v, projected.ndim) for v in lru_lambda(params))
        h_re = lam_re * state.h_re - lam_im * state.h_im + u_re
        h_im = lam_im * state.h_re + lam_re * state.h_im + u_im
        new = LRUState(h_re.astype(state.h_re.dtype), h_im.astype(state.h_im.dtype))
        return new, _lru_readout(params, h_re, h_im, projected[..., 2 * hidden_size :])

    def step(params: LRUParams, state: LRUState, x: jax.Array):
        return recur(params, state, project_inputs(params, x))

    config = {
        "r_min": r_min, "r_max": r_max, "max_phase": max_phase, "param_dtype": param_dtype,
    }  # fmt: skip
    config = Config(config)
    # A record of its own functions (no fast-path kind): a replaced ``step`` is then honoured.
    kernels = Kernels("lru", config, step, project_inputs, recur)
    return Cell(
        init, initial_state, step, project_inputs, recur, hidden_size, 2, "lru", config, kernels
    )
