r"""State Jacobians of recurrent cells: how far back does the gradient reach?

Backpropagation through time multiplies the per-step Jacobians of the state update,

.. math::
    \frac{\partial s_T}{\partial s_k} = \prod_{j=k+1}^{T} \frac{\partial s_j}{\partial s_{j-1}},

so its norm shrinks or grows roughly geometrically in the lag ``T - k`` (vanishing / exploding
gradients; Bengio et al. 1994, Pascanu et al. 2013). The tools here measure it for any
:class:`rnnjax.Cell`.

Conventions (used by every function here):

* The state ``s`` is the cell's whole state flattened in field order: ``h`` for ``simple_rnn`` and
  ``gru`` (``S = H``), ``concat(h, c)`` for ``lstm`` (``S = 2H``). ``part="h"`` keeps the
  ``[H, H]`` block that maps ``h_k`` to ``h_T`` (with ``c_k`` held fixed for the LSTM).
* ``s_0`` is the initial state and ``s_t`` the state after step ``t``; index ``k`` runs over
  ``0..T`` and the lag is ``T - k``.
* Jacobians are in numerator layout: ``J[i, j] = d s_T[i] / d s_k[j]``. In rnnjax's row-vector
  convention (``w_h = W_hh^T``) the seed's vanilla-RNN step Jacobian
  ``diag(1 - tanh^2(a_j)) W_hh^T`` reads ``diag(1 - tanh^2(a_j)) w_h^T``; the transpose layout
  has the same singular values, so every norm below is layout-free.

``state_jacobians`` differentiates through :func:`rnnjax.scan` itself: the cell is wrapped so that
an additive perturbation ``e_t`` (zero in value) enters the state after every step, and
``d s_T / d e_k = d s_T / d s_k`` for all ``k`` comes out of one ``jax.jacrev`` (``S`` reverse
passes of length ``T``).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks
from rnnjax._cells import Cell, simple_rnn
from rnnjax._scan import _check_cell, scan

_PARTS = ("full", "h")


def flatten_state(state: Any) -> jax.Array:
    """Concatenate a state's fields along the last axis: ``LSTMState(h, c) -> [..., 2H]``."""
    if not isinstance(state, tuple) or not state:
        raise TypeError(
            f"state must be a cell state such as LSTMState(h, c) (cell.initial_state()); "
            f"got {type(state).__name__}."
        )
    return jnp.concatenate(list(state), axis=-1)


def _check_step_jacobians(step_jacobians) -> jax.Array:
    """``[T, S, S]`` floating per-step Jacobians, or a ``ValueError`` naming the argument."""
    step_jacobians = _checks.floating_array(step_jacobians, "step_jacobians")
    if step_jacobians.ndim != 3 or step_jacobians.shape[1] != step_jacobians.shape[2]:
        raise ValueError(
            f"step_jacobians must have shape (T, S, S) (step_jacobians(...)); got shape "
            f"{tuple(step_jacobians.shape)}."
        )
    return step_jacobians


def _unflatten(template: Any, flat: jax.Array) -> Any:
    return type(template)(*jnp.split(flat, len(template), axis=-1))


def _part_slice(cell: Cell, part: str) -> slice:
    if part not in _PARTS:
        raise ValueError(f"part must be one of {_PARTS}; got {part!r}.")
    return slice(0, cell.hidden_size) if part == "h" else slice(None)


def _prepare(cell, params, xs, initial_state):
    _check_cell(cell)
    xs = _checks.floating_array(xs, "xs")
    _checks.rank(xs, 2, "xs", "(T, input_size) for one sequence; batch with jax.vmap")
    if initial_state is None:
        dtype = jnp.result_type(xs.dtype, *jax.tree_util.tree_leaves(params))
        initial_state = cell.initial_state((), dtype=dtype)
    return xs, initial_state


def _perturbed_cell(cell: Cell, template: Any) -> Cell:
    """``cell`` whose inputs carry an extra additive perturbation of the flattened state.

    Inputs are ``[x_t, e_t]`` (``[T, D + S]``); after each step the state becomes
    ``s_t + e_t`` and the output is the flattened state ``[S]``.
    """
    state_size = len(template) * cell.hidden_size

    def project_inputs(params, inputs):
        x, e = inputs[..., :-state_size], inputs[..., -state_size:]
        return jnp.concatenate([cell.project_inputs(params, x), e], axis=-1)

    def recur(params, state, projected):
        # The perturbation is the last ``state_size`` entries; the cell's own projection (any
        # width: the LRU's also carries its skip term) comes before it.
        new_state, _ = cell.recur(params, state, projected[..., :-state_size])
        flat = flatten_state(new_state) + projected[..., -state_size:]
        return _unflatten(template, flat), flat

    def step(params, state, x):
        return recur(params, state, project_inputs(params, x))

    return cell._replace(project_inputs=project_inputs, recur=recur, step=step)


def state_jacobians(
    cell: Cell, params: Any, xs: jax.Array, *, initial_state: Any = None, part: str = "full"
) -> jax.Array:
    """``d s_T / d s_k`` for every ``k = 0..T``, by reverse-mode autodiff through ``rnnjax.scan``.

    Args:
      cell: an :class:`rnnjax.Cell`.
      params: the cell's params.
      xs: one input sequence ``[T, input_size]``.
      initial_state: the state ``s_0`` (leaves ``[H]``); zeros when ``None``.
      part: ``"full"`` for the whole flattened state (``S = 2H`` for the LSTM: ``(h, c)``),
        ``"h"`` for the ``[H, H]`` hidden-to-hidden block.

    Returns:
      ``[T + 1, S, S]`` with ``J[k, i, j] = d s_T[i] / d s_k[j]`` (lag ``T - k``; ``J[T] = I``).

    Raises:
      TypeError: ``cell`` is not a Cell or ``xs`` is not floating point.
      ValueError: ``xs`` is not ``[T, input_size]`` or ``part`` is unknown.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> from rnnjax.jacobians import state_jacobians
    >>> cell = rnnjax.simple_rnn(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> jacobians = state_jacobians(cell, params, jnp.ones((20, 3)))     # (21, 8, 8)
    """
    rows = _part_slice(cell, part)
    xs, initial_state = _prepare(cell, params, xs, initial_state)
    wrapped = _perturbed_cell(cell, initial_state)
    flat0 = flatten_state(initial_state)
    perturbations = jnp.zeros(xs.shape[:1] + flat0.shape, flat0.dtype)

    def final_state(flat_initial, perturbations):
        inputs = jnp.concatenate([xs.astype(flat0.dtype), perturbations], axis=-1)
        start = _unflatten(initial_state, flat_initial)
        state, _ = scan(wrapped, params, inputs, initial_state=start)
        return flatten_state(state)

    d_initial, d_perturbations = jax.jacrev(final_state, argnums=(0, 1))(flat0, perturbations)
    jacobians = jnp.concatenate([d_initial[None], jnp.moveaxis(d_perturbations, 1, 0)], axis=0)
    return jacobians[:, rows, rows]


def states(cell: Cell, params: Any, xs: jax.Array, *, initial_state: Any = None) -> jax.Array:
    """The flattened states ``s_0..s_T`` visited on ``xs [T, D]``: ``[T + 1, S]``."""
    xs, initial_state = _prepare(cell, params, xs, initial_state)
    wrapped = _perturbed_cell(cell, initial_state)
    flat0 = flatten_state(initial_state)
    inputs = jnp.concatenate([xs.astype(flat0.dtype), jnp.zeros(xs.shape[:1] + flat0.shape)], -1)
    _, visited = scan(wrapped, params, inputs.astype(flat0.dtype), initial_state=initial_state)
    return jnp.concatenate([flat0[None], visited], axis=0)


def step_jacobians(
    cell: Cell, params: Any, xs: jax.Array, *, initial_state: Any = None, part: str = "full"
) -> jax.Array:
    """Per-step Jacobians ``d s_t / d s_{t-1}`` for ``t = 1..T`` (``jax.jacfwd`` of one step).

    Args:
      cell, params, xs, initial_state, part: as in :func:`state_jacobians`.

    Returns:
      ``[T, S, S]``; entry ``t - 1`` is ``d s_t / d s_{t-1}`` at the visited states.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> from rnnjax.jacobians import step_jacobians
    >>> cell = rnnjax.gru(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> step_jacobians(cell, params, jnp.ones((20, 3))).shape
    (20, 8, 8)
    """
    rows = _part_slice(cell, part)
    xs, initial_state = _prepare(cell, params, xs, initial_state)
    visited = states(cell, params, xs, initial_state=initial_state)
    projected = cell.project_inputs(params, xs.astype(visited.dtype))

    def one_step(flat, projected_t):
        new_state, _ = cell.recur(params, _unflatten(initial_state, flat), projected_t)
        return flatten_state(new_state)

    jacobians = jax.vmap(jax.jacfwd(one_step))(visited[:-1], projected)
    return jacobians[:, rows, rows]


def rnn_step_jacobians(params: Any, xs: jax.Array, initial_state: Any = None) -> jax.Array:
    """The seed's closed form for a tanh ``simple_rnn``: ``diag(1 - tanh^2(a_j)) w_h^T``.

    Args:
      params: :class:`rnnjax.RNNParams` of a tanh ``simple_rnn`` (``w_h [H, H] = W_hh^T``).
      xs: ``[T, input_size]``.
      initial_state: ``RNNState`` (``h [H]``); zeros when ``None``.

    Returns:
      ``[T, H, H]``; entry ``j - 1`` is ``d h_j / d h_{j-1}`` (numerator layout).

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> from rnnjax.jacobians import rnn_step_jacobians
    >>> params = rnnjax.simple_rnn(8).init(jax.random.key(0), input_size=3)
    >>> rnn_step_jacobians(params, jnp.ones((20, 3))).shape
    (20, 8, 8)
    """
    cell = simple_rnn(params.w_h.shape[0])
    visited = states(cell, params, xs, initial_state=initial_state)
    derivative = 1.0 - visited[1:] ** 2  # 1 - tanh^2(a_j) = 1 - h_j^2
    return derivative[:, :, None] * params.w_h.T[None]


def chain_products(step_jacobians: jax.Array) -> jax.Array:
    """``d s_T / d s_k = D_T ... D_{k+1}`` for ``k = 0..T`` from per-step Jacobians ``D``.

    Args:
      step_jacobians: ``[T, S, S]`` (entry ``t - 1`` is ``D_t = d s_t / d s_{t-1}``).

    Returns:
      ``[T + 1, S, S]``, indexed as :func:`state_jacobians`.
    """
    step_jacobians = _check_step_jacobians(step_jacobians)
    identity = jnp.eye(step_jacobians.shape[-1], dtype=step_jacobians.dtype)

    def body(product, step_jacobian):
        product = product @ step_jacobian
        return product, product

    _, products = jax.lax.scan(body, identity, step_jacobians, reverse=True)
    return jnp.concatenate([products, identity[None]], axis=0)


def spectral_norm(matrices: jax.Array) -> jax.Array:
    """Largest singular value of each matrix: ``[..., M, N] -> [...]``."""
    matrices = _checks.floating_array(matrices, "matrices")
    if matrices.ndim < 2:
        raise ValueError(
            f"matrices must have shape (..., M, N); got shape {tuple(matrices.shape)}."
        )
    return jnp.linalg.matrix_norm(matrices, ord=2)


def pairwise_jacobians(step_jacobians: jax.Array) -> jax.Array:
    """``d s_t / d s_k`` for all ``0 <= k <= t <= T`` from per-step Jacobians (``T^2 S^2`` memory).

    Args:
      step_jacobians: ``[T, S, S]`` from :func:`step_jacobians`.

    Returns:
      ``[T + 1, T + 1, S, S]`` with entry ``[t, k]`` equal to ``d s_t / d s_k`` (the identity
      on the diagonal) and zero where ``k > t``.
    """
    step_jacobians = _check_step_jacobians(step_jacobians)
    num_steps, size = step_jacobians.shape[0], step_jacobians.shape[-1]
    sources = jnp.arange(num_steps + 1)
    identity = jnp.eye(size, dtype=step_jacobians.dtype)
    identity = jnp.broadcast_to(identity, (num_steps + 1, size, size))

    def body(products, inputs):
        t, step_jacobian = inputs
        updated = jnp.einsum("ij,kjl->kil", step_jacobian, products)
        products = jnp.where((sources < t)[:, None, None], updated, products)
        return products, jnp.where((sources <= t)[:, None, None], products, 0.0)

    _, rows = jax.lax.scan(body, identity, (jnp.arange(1, num_steps + 1), step_jacobians))
    first = jnp.where((sources == 0)[:, None, None], identity, 0.0)
    return jnp.concatenate([first[None], rows], axis=0)


def pairwise_jacobian_norms(step_jacobians: jax.Array) -> jax.Array:
    """``||d s_t / d s_k||_2`` for all ``0 <= k <= t <= T`` from per-step Jacobians.

    Args:
      step_jacobians: ``[T, S, S]`` from :func:`step_jacobians`.

    Returns:
      ``[T + 1, T + 1]`` with entry ``[t, k]`` the spectral norm of ``d s_t / d s_k`` (1 on the
      diagonal) and NaN where ``k > t``.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> from rnnjax.jacobians import pairwise_jacobian_norms, step_jacobians
    >>> cell = rnnjax.lstm(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> pairwise_jacobian_norms(step_jacobians(cell, params, jnp.ones((20, 3)))).shape
    (21, 21)
    """
    step_jacobians = _check_step_jacobians(step_jacobians)
    steps = jnp.arange(step_jacobians.shape[0] + 1)
    norms = spectral_norm(pairwise_jacobians(step_jacobians))
    return jnp.where(steps[None, :] <= steps[:, None], norms, jnp.nan)


def decay_rate(norms_by_lag: jax.Array, *, floor: float | None = None) -> jax.Array:
    """Least-squares slope of ``log ||d s_T / d s_{T-l}||`` against the lag ``l`` (per step).

    A rate ``r`` means the norm behaves like ``exp(r * lag)``: ``r < 0`` vanishes, ``r > 0``
    explodes; ``log(rho)`` is the rate of a linear RNN with spectral radius ``rho``. Lag 0 (the
    identity) is left out, and so are norms outside ``[floor, 1 / floor]`` (underflow/overflow).

    Args:
      norms_by_lag: ``[..., L + 1]``; entry ``l`` of the last axis is the norm at lag ``l``
        (``spectral_norm(state_jacobians(...))[::-1]``).
      floor: smallest norm kept; default ``1e3 * finfo(dtype).tiny``.

    Returns:
      ``[...]`` fitted rates (NaN when fewer than two lags are usable).

    >>> import jax.numpy as jnp
    >>> from rnnjax.jacobians import decay_rate
    >>> round(float(decay_rate(0.5 ** jnp.arange(10.0))), 3)   # log(0.5)
    -0.693
    """
    norms_by_lag = jnp.asarray(norms_by_lag)
    if norms_by_lag.ndim < 1 or norms_by_lag.shape[-1] < 3:
        raise ValueError(
            f"norms_by_lag must have shape (..., L + 1) with L >= 2 lags; "
            f"got shape {tuple(norms_by_lag.shape)}."
        )
    if floor is not None and not 0.0 < floor < 1.0:
        raise ValueError(f"floor must lie in (0, 1) (the smallest norm kept); got {floor!r}.")
    dtype = jnp.result_type(norms_by_lag.dtype, jnp.float32)
    floor = 1e3 * float(jnp.finfo(dtype).tiny) if floor is None else floor
    norms = norms_by_lag[..., 1:].astype(dtype)
    lags = jnp.arange(1, norms_by_lag.shape[-1], dtype=dtype)
    lags = jnp.broadcast_to(lags, norms.shape)
    usable = jnp.isfinite(norms) & (norms > floor) & (norms < 1.0 / floor)
    weight = usable.astype(dtype)
    logs = jnp.where(usable, jnp.log(jnp.where(usable, norms, 1.0)), 0.0)
    count = weight.sum(-1)
    mean_lag = (weight * lags).sum(-1) / count
    mean_log = (weight * logs).sum(-1) / count
    centred = lags - mean_lag[..., None]
    covariance = (weight * centred * (logs - mean_log[..., None])).sum(-1)
    slope = covariance / (weight * centred**2).sum(-1)
    return jnp.where(count >= 2, slope, jnp.nan)


def pascanu_bound(w_h: jax.Array, lags: jax.Array, gamma: float = 1.0) -> jax.Array:
    """Pascanu et al. (2013)'s bound ``(gamma * sigma_max(w_h)) ** lag`` on ``||d h_T / d h_k||``.

    Args:
      w_h: ``[H, H]`` recurrent kernel of a ``simple_rnn``.
      lags: ``[...]`` lags ``T - k``.
      gamma: bound on the activation's derivative: 1 for tanh, 1/4 for sigmoid.

    Returns:
      ``[...]`` the bound at each lag.
    """
    w_h = _checks.floating_array(w_h, "w_h")
    if w_h.ndim != 2 or w_h.shape[0] != w_h.shape[1]:
        raise ValueError(
            f"w_h must be a square recurrent kernel (H, H) of a simple_rnn; got shape "
            f"{tuple(w_h.shape)}."
        )
    if not gamma > 0:
        raise ValueError(
            f"gamma must be positive (a bound on the activation's slope); got {gamma!r}."
        )
    return (gamma * spectral_norm(w_h)) ** jnp.asarray(lags, w_h.dtype)


def with_spectral_radius(params: Any, rho: float | jax.Array) -> Any:
    """``params`` with the square ``w_h`` rescaled so its spectral radius is ``rho``.

    For an orthogonal ``w_h`` (``simple_rnn``'s default) every singular value becomes ``rho`` too.
    Traced ``w_h`` (under ``jit``/``vmap``) uses ``jnp.linalg.eigvals``, which runs on CPU only.

    Raises:
      ValueError: ``params.w_h`` is not square (gated cells fuse ``[H, G*H]``).

    >>> import jax
    >>> import rnnjax
    >>> from rnnjax.jacobians import with_spectral_radius
    >>> params = with_spectral_radius(rnnjax.simple_rnn(8).init(jax.random.key(0), 3), 1.2)
    """
    if not hasattr(params, "w_h") or not hasattr(params, "_replace"):
        raise TypeError(
            f"params must be a cell's params with a w_h field (simple_rnn(...).init); got "
            f"{type(params).__name__}."
        )
    if _checks.is_concrete(rho) and not np.all(np.asarray(rho) >= 0):
        raise ValueError(f"rho must be a non-negative spectral radius; got {rho!r}.")
    w_h = params.w_h
    if w_h.ndim != 2 or w_h.shape[0] != w_h.shape[1]:
        raise ValueError(
            f"params.w_h must be square (H, H) as in simple_rnn; got shape {tuple(w_h.shape)}."
        )
    if _checks.is_concrete(w_h):  # NumPy's eig is much faster to start than a compiled one
        radius = np.max(np.abs(np.linalg.eigvals(np.asarray(w_h, np.float64))))
    else:
        radius = jnp.max(jnp.abs(jnp.linalg.eigvals(w_h)))
    return params._replace(w_h=w_h * jnp.asarray(rho / radius, w_h.dtype))


def bptt_terms(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    final_cotangent: jax.Array,
    *,
    initial_state: Any = None,
) -> Any:
    r"""The seed's BPTT decomposition of ``dJ_T / d params`` into one term per step.

    .. math::
        \frac{\partial J_T}{\partial \theta} = \sum_{k=1}^{T}
        \frac{\partial J_T}{\partial s_T} \frac{\partial s_T}{\partial s_k}
        \frac{\partial^+ s_k}{\partial \theta}

    where :math:`\partial^+ s_k / \partial\theta` is the immediate derivative of step ``k`` (its
    input state held fixed). Term ``k`` is the gradient that reaches the parameters from the state
    at step ``k``; the terms sum to ``jax.grad`` of a loss of ``s_T``.

    Args:
      cell, params, xs, initial_state: as in :func:`state_jacobians`.
      final_cotangent: ``dJ_T / d s_T``, the flattened ``[S]`` gradient of the loss.

    Returns:
      A params pytree whose leaves have a leading ``[T]`` axis: term ``k`` at index ``k - 1``.

    Raises:
      ValueError: ``final_cotangent`` is not ``[S]``.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> from rnnjax.jacobians import bptt_terms
    >>> cell = rnnjax.simple_rnn(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> terms = bptt_terms(cell, params, jnp.ones((20, 3)), jnp.ones(8))   # terms.w_h: (20, 8, 8)
    """
    xs, initial_state = _prepare(cell, params, xs, initial_state)
    size = len(initial_state) * cell.hidden_size
    if jnp.shape(final_cotangent) != (size,):
        raise ValueError(
            f"final_cotangent must have shape ({size},) (the flattened state of {cell.name}); "
            f"got {tuple(jnp.shape(final_cotangent))}."
        )
    visited = states(cell, params, xs, initial_state=initial_state)
    jacobians = state_jacobians(cell, params, xs, initial_state=initial_state)
    upstream = jnp.einsum("i,kij->kj", final_cotangent, jacobians[1:])  # dJ/ds_k, k = 1..T

    def immediate(previous, x_t, cotangent):
        def one_step(p):
            new_state, _ = cell.step(p, _unflatten(initial_state, previous), x_t)
            return flatten_state(new_state)

        _, pullback = jax.vjp(one_step, params)
        return pullback(cotangent)[0]

    return jax.vmap(immediate)(visited[:-1], xs.astype(visited.dtype), upstream)


def lyapunov_exponents(step_jacobians: jax.Array, *, num: int = 1, burn_in: int = 0) -> jax.Array:
    r"""The ``num`` largest Lyapunov exponents of a trajectory, by the QR method (per step).

    ``Q_0 = I[:, :num]``; each step ``J_t Q_{t-1} = Q_t R_t`` (reduced QR) and
    ``exponent_i = mean_t log |R_t[i, i]|`` over the steps after ``burn_in`` (Benettin et al.
    1980). Positive: nearby trajectories separate (chaos; the gradient explodes); negative: they
    merge (the gradient vanishes at that rate).

    Args:
      step_jacobians: ``[T, S, S]``, entry ``t - 1`` is ``d s_t / d s_{t-1}``
        (:func:`step_jacobians`).
      num: how many exponents, ``1 <= num <= S``.
      burn_in: leading steps left out of the mean (the tangent basis aligning), ``< T``.

    Returns:
      ``[num]`` exponents, largest first (natural log per step).

    Raises:
      ValueError: ``step_jacobians`` is not ``[T, S, S]``, or ``num``/``burn_in`` out of range.

    >>> import jax.numpy as jnp
    >>> from rnnjax.jacobians import lyapunov_exponents
    >>> lyapunov_exponents(jnp.broadcast_to(jnp.diag(jnp.array([2.0, 0.5])), (10, 2, 2)), num=2)
    Array([ 0.6931472, -0.6931472], dtype=float32)
    """
    step_jacobians = jnp.asarray(step_jacobians)
    if step_jacobians.ndim != 3 or step_jacobians.shape[1] != step_jacobians.shape[2]:
        raise ValueError(
            f"step_jacobians must have shape (T, S, S); got shape {tuple(step_jacobians.shape)}."
        )
    steps, size = step_jacobians.shape[:2]
    if not isinstance(num, int) or not 1 <= num <= size:
        raise ValueError(f"num must be an int in [1, {size}] (the state size); got {num!r}.")
    if not isinstance(burn_in, int) or not 0 <= burn_in < steps:
        raise ValueError(f"burn_in must be an int in [0, {steps}) (T steps); got {burn_in!r}.")

    def body(basis, jacobian):
        q, r = jnp.linalg.qr(jacobian @ basis)
        diagonal = jnp.diagonal(r)
        # Keep Q's columns oriented so that R's diagonal stays positive.
        sign = jnp.where(diagonal < 0, -1.0, 1.0).astype(q.dtype)
        return q * sign[None], jnp.log(jnp.abs(diagonal))

    basis = jnp.eye(size, num, dtype=step_jacobians.dtype)
    _, logs = jax.lax.scan(body, basis, step_jacobians)
    return jnp.mean(logs[burn_in:], axis=0)


def largest_lyapunov_exponent(
    cell: Cell, params: Any, xs: jax.Array, *, initial_state: Any = None, burn_in: int = 0
) -> jax.Array:
    """The largest Lyapunov exponent of ``cell`` along its trajectory on ``xs [T, D]``.

    :func:`lyapunov_exponents` of :func:`step_jacobians` (the whole flattened state).

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> from rnnjax.jacobians import largest_lyapunov_exponent
    >>> cell = rnnjax.gru(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> float(largest_lyapunov_exponent(cell, params, jnp.ones((50, 3)))) < 0
    True
    """
    jacobians = step_jacobians(cell, params, xs, initial_state=initial_state)
    return lyapunov_exponents(jacobians, num=1, burn_in=burn_in)[0]
