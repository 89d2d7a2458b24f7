"""Recurrent cells as pure functions over NamedTuple pytrees: ``simple_rnn``, ``lstm``, ``gru``.

A cell is written for one example: ``x_t`` has shape ``(input_size,)`` (leading batch dimensions are
accepted when the state carries the same ones). Gates are fused along the last axis of the kernels,
``w_x [D, G*H]``, ``w_h [H, G*H]``, ``b [G*H]``, so a step is two matmuls. Each cell splits its step
into ``project_inputs`` (``x W_x + b``, independent of the state, so a generic scan can hoist it
out of the time loop as one ``[T, D] x [D, G*H]`` matmul) and ``recur`` (the state update from the
projected input). For the built-in cells ``rnnjax.scan`` takes a fused path (``rnnjax._fused``)
that projects inside the loop, which measured faster on XLA:CPU. ``step`` is their composition,
so the gate math has one source.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks, _layout
from rnnjax import _initializers as inits

LSTM_GATES = ("i", "f", "g", "o")
"""Fused LSTM gate order: input, forget, candidate (cell), output (PyTorch, Keras, cuDNN)."""

GRU_GATES = ("r", "z", "n")
"""Gate order along the fused GRU axis: reset, update, candidate (PyTorch/cuDNN order)."""


class RNNParams(NamedTuple):
    """Vanilla RNN parameters: ``w_x [D, H]``, ``w_h [H, H]``, ``b [H]``."""

    w_x: jax.Array
    w_h: jax.Array
    b: jax.Array


class LSTMParams(NamedTuple):
    """LSTM parameters, gates (i, f, g, o): ``w_x [D, 4H]``, ``w_h [H, 4H]``, ``b [4H]``."""

    w_x: jax.Array
    w_h: jax.Array
    b: jax.Array


class GRUParams(NamedTuple):
    """GRU parameters, gates (r, z, n): ``w_x [D, 3H]``, ``w_h [H, 3H]``, ``b [3H]``.

    ``b_hn [H]`` is the recurrent candidate bias applied inside the reset gate when
    ``reset_after=True``; it is ``None`` when ``reset_after=False``.
    """

    w_x: jax.Array
    w_h: jax.Array
    b: jax.Array
    b_hn: jax.Array | None = None


class RNNState(NamedTuple):
    """State of a vanilla RNN or GRU: ``h [..., H]``."""

    h: jax.Array


class LSTMState(NamedTuple):
    """State of an LSTM: hidden ``h [..., H]`` and cell ``c [..., H]``."""

    h: jax.Array
    c: jax.Array


GRUState = RNNState


class Cell(NamedTuple):
    """A recurrent cell: pure functions over explicit parameter and state pytrees.

    Attributes:
      init: ``init(key, input_size) -> params``.
      initial_state: ``initial_state(batch_shape=(), dtype=jnp.float32) -> state`` of zeros.
      step: ``step(params, state, x_t) -> (state, y_t)`` with ``x_t [..., D]``, ``y_t [..., H]``.
      project_inputs: ``project_inputs(params, x) -> x W_x + b`` of shape ``[..., G*H]``; has no
        dependence on the state, so sequences project all steps in one matmul.
      recur: ``recur(params, state, projected_t) -> (state, y_t)``; ``step`` is
        ``recur(params, state, project_inputs(params, x_t))``.
      hidden_size: ``H``.
      num_gates: ``G``, the number of fused gate blocks (1, 4 or 3).
      name: ``"simple_rnn"``, ``"lstm"`` or ``"gru"``.
      config: the constructor's options (activation, forget_bias, reset_after, dtype, ...).
    """

    init: Callable[[jax.Array, int], Any]
    initial_state: Callable[..., Any]
    step: Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
    project_inputs: Callable[[Any, jax.Array], jax.Array]
    recur: Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
    hidden_size: int
    num_gates: int
    name: str
    config: dict


def _dot(a: jax.Array, w: jax.Array, dtype) -> jax.Array:
    """``a @ w``; with ``dtype`` set, operands are cast to it and accumulated in their own dtype.

    ``w`` may be a ``rnnjax._layout.LoopWeight`` (inside the fused loops), which computes the
    same product in the layout it stores.
    """
    if isinstance(w, _layout.LoopWeight):
        return w.matmul(a, dtype)
    if dtype is None:
        return jnp.matmul(a, w)
    accumulate = jnp.promote_types(a.dtype, w.dtype)
    return jnp.matmul(a.astype(dtype), w.astype(dtype), preferred_element_type=accumulate)


def _add_bias(z: jax.Array, b: jax.Array) -> jax.Array:
    """``z + b`` with ``b [N]`` broadcast explicitly over the leading dims of ``z [..., N]``."""
    return z + b.reshape((1,) * (z.ndim - 1) + b.shape)


def _project(params, x, dtype) -> jax.Array:
    """``x W_x + b`` after checking ``x`` is floating point with ``params.w_x``'s feature size."""
    x = _checks.floating_array(x, "x")
    input_size = params.w_x.shape[0]
    if x.ndim < 1 or x.shape[-1] != input_size:
        raise ValueError(
            f"x must have shape (..., input_size={input_size}) to match params.w_x "
            f"{tuple(params.w_x.shape)}; got shape {tuple(x.shape)}."
        )
    return _add_bias(_dot(x, params.w_x, dtype), params.b)


def _split(z: jax.Array, num_gates: int) -> list[jax.Array]:
    return jnp.split(z, num_gates, axis=-1)


def _cast_like(new, old):
    """``new`` state with each leaf cast to ``old``'s dtype (the carry keeps the state's dtype)."""
    return type(old)(*(n.astype(o.dtype) for n, o in zip(new, old, strict=True)))


def _lstm_gates(z: jax.Array) -> list[jax.Array]:
    """Activated gates ``sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)`` of ``z [..., 4H]``."""
    i, f, g, o = _split(z, 4)
    return [jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)]


def _lstm_update(params, state, projected, dtype):
    """LSTM update and what its derivative needs: ``(LSTMState, (i, f, g, o, tanh c))``."""
    return _lstm_activate(state, projected + _dot(state.h, params.w_h, dtype))


def _lstm_activate(state, z):
    """The LSTM update from its pre-activations ``z = x W_x + h W_h + b [..., 4H]`` (reads
    ``state.c`` only), with the values its derivative needs."""
    i, f, g, o = _lstm_gates(z)
    c = f * state.c + i * g
    tanh_c = jnp.tanh(c)
    return LSTMState(o * tanh_c, c), (i, f, g, o, tanh_c)


def _gru_update(params, state, projected, dtype, reset_after):
    """GRU state update and its derivative's values: ``(RNNState, (r, z, candidate, m))`` with
    ``m = h W_hn + b_hn`` (``reset_after``) or ``m = r * h`` (the seed's form)."""
    h, hidden = state.h, state.h.shape[-1]
    if reset_after:
        return _gru_reset_after(h, projected, _dot(h, params.w_h, dtype), params.b_hn)
    x_rz, x_n = projected[..., : 2 * hidden], projected[..., 2 * hidden :]
    r, z, m = _gru_reset(h, x_rz + _dot(h, params.w_h[:, : 2 * hidden], dtype))
    new, candidate = _gru_combine(h, z, x_n + _dot(m, params.w_h[:, 2 * hidden :], dtype))
    return new, (r, z, candidate, m)


def _gru_reset_after(h, projected, hidden_product, b_hn):
    """Reset-after GRU from its two products ``projected = x W_x + b`` and ``hidden_product =
    h W_h`` (both ``[..., 3H]``): ``r, z = sigmoid(x_rz + h_rz)``, ``m = h W_hn + b_hn``,
    ``h' = (1 - z) h + z tanh(x_n + r * m)``. Returns ``(RNNState, (r, z, candidate, m))``."""
    hidden = h.shape[-1]
    x_rz, x_n = projected[..., : 2 * hidden], projected[..., 2 * hidden :]
    h_rz, h_n = jnp.split(hidden_product, [2 * hidden], axis=-1)
    r, z = _split(jax.nn.sigmoid(x_rz + h_rz), 2)
    m = _add_bias(h_n, b_hn)
    new, candidate = _gru_combine(h, z, x_n + r * m)
    return new, (r, z, candidate, m)


def _gru_reset(h, pre_rz):
    """Seed-form GRU gates from ``pre_rz = x W_rz + h U_rz + b_rz [..., 2H]``: ``(r, z, r * h)``."""
    r, z = _split(jax.nn.sigmoid(pre_rz), 2)
    return r, z, r * h


def _gru_combine(h, z, pre_n):
    """``h' = (1 - z) h + z tanh(pre_n)`` and the candidate ``tanh(pre_n)``."""
    candidate = jnp.tanh(pre_n)
    return RNNState((1.0 - z) * h + z * candidate), candidate


def _rnn_update(params, state, projected, dtype, activation):
    """Vanilla RNN update and its pre-activation: ``(RNNState, (a,))``."""
    a = projected + _dot(state.h, params.w_h, dtype)
    return RNNState(activation(a)), (a,)


def _fast_path(cell: "Cell", kind: str) -> "Cell":
    """Mark ``cell.recur`` as the built-in ``kind`` update, so ``rnnjax.scan`` may use the fused
    sequence derivative of ``rnnjax._fused``; a cell whose ``recur`` is replaced loses the mark."""
    cell.recur._rnnjax_fast_path = kind
    return cell


def _make_cell(
    name: str,
    hidden_size: int,
    num_gates: int,
    params_type: type,
    state_type: type,
    make_params: Callable[[jax.Array, int], Any],
    update: Callable[[Any, Any, jax.Array], Any],
    config: dict,
) -> Cell:
    """Assemble a ``Cell`` from its parameter factory and its state update on projected inputs."""
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int; got {hidden_size!r}.")
    hidden, fused = hidden_size, num_gates * hidden_size
    dtype = config.get("dtype")
    label = f"{name}(hidden_size={hidden})"

    def check_params(params) -> None:
        _checks.cell_params(params, params_type, name, label)
        expected = {"w_h": (hidden, fused), "b": (fused,)}
        if params_type is GRUParams and config["reset_after"]:
            expected["b_hn"] = (hidden,)
        elif params_type is GRUParams and params.b_hn is not None:
            raise ValueError(
                f"params.b_hn must be None for {label} with reset_after=False (the seed's form has "
                f"no recurrent candidate bias); got shape {tuple(params.b_hn.shape)}. Use "
                f"gru(..., reset_after=True) for these params."
            )
        for field, shape in expected.items():
            actual = getattr(params, field)
            if actual is None or tuple(actual.shape) != shape:
                got = None if actual is None else tuple(actual.shape)
                raise ValueError(
                    f"params do not match {label}: expected params.{field} of shape {shape}, "
                    f"got {got}."
                )
        if params.w_x.ndim != 2 or params.w_x.shape[1] != fused:
            raise ValueError(
                f"params do not match {label}: expected params.w_x of shape (input_size, {fused}), "
                f"got {tuple(params.w_x.shape)}."
            )

    def init(key: jax.Array, input_size: int):
        if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
            raise ValueError(f"input_size must be a positive int; got {input_size!r}.")
        return make_params(key, input_size)

    def initial_state(batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        shape = tuple(batch_shape) + (hidden,)
        return state_type(*(jnp.zeros(shape, dtype) for _ in state_type._fields))

    def project_inputs(params, x: jax.Array) -> jax.Array:
        check_params(params)
        return _project(params, x, dtype)

    def recur(params, state, projected: jax.Array):
        check_params(params)
        if not isinstance(state, state_type):
            raise TypeError(
                f"state must be {state_type.__name__} (from {name}(...).initial_state); "
                f"got {type(state).__name__}."
            )
        expected = tuple(projected.shape[:-1]) + (hidden,)
        for field, leaf in zip(state_type._fields, state, strict=True):
            if tuple(jnp.shape(leaf)) != expected:
                raise ValueError(
                    f"state.{field} must have shape {expected} (the input's batch shape "
                    f"{tuple(projected.shape[:-1])} + (hidden_size,)); "
                    f"got {tuple(jnp.shape(leaf))}. "
                    f"Build it with initial_state(batch_shape={tuple(projected.shape[:-1])})."
                )
            _checks.floating_array(leaf, f"state.{field}")
        # The carry keeps the state's dtype (e.g. float32 state with bfloat16 matmuls).
        new_state = _cast_like(update(params, state, projected), state)
        return new_state, new_state.h

    def step(params, state, x: jax.Array):
        return recur(params, state, project_inputs(params, x))

    return Cell(
        init=init,
        initial_state=initial_state,
        step=step,
        project_inputs=project_inputs,
        recur=recur,
        hidden_size=hidden,
        num_gates=num_gates,
        name=name,
        config=dict(config),
    )


def _kernels(key, input_size, hidden_size, num_gates, kernel_init, recurrent_init, param_dtype):
    key_x, key_h = jax.random.split(key)
    fused = num_gates * hidden_size
    w_x = inits.per_gate(kernel_init, key_x, (input_size, fused), num_gates, param_dtype)
    w_h = inits.per_gate(recurrent_init, key_h, (hidden_size, fused), num_gates, param_dtype)
    return w_x, w_h


def simple_rnn(
    hidden_size: int,
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
    *,
    kernel_init: inits.Initializer = inits.glorot_uniform,
    recurrent_init: inits.Initializer = inits.orthogonal,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    r"""Vanilla (Elman) RNN cell.

    .. math::
        h_t = \mathrm{act}(x_t W_x + h_{t-1} W_h + b)

    The seed's :math:`a_t = W_{hh} h_{t-1} + W_{xh} x_t + b_h` with ``w_h = W_hh^T``,
    ``w_x = W_xh^T`` (row-vector convention).

    Args:
      hidden_size: ``H``.
      activation: elementwise nonlinearity, ``jnp.tanh`` (default) or ``jax.nn.relu``, ...
      kernel_init: initialiser of ``w_x [D, H]`` (Glorot uniform).
      recurrent_init: initialiser of ``w_h [H, H]`` (orthogonal).
      dtype: matmul dtype (e.g. ``jnp.bfloat16``); accumulation and state keep their own dtype.
        ``None`` computes in the operands' promoted dtype.
      param_dtype: dtype of the initialised parameters.

    Returns:
      A :class:`Cell` with params :class:`RNNParams` and state :class:`RNNState`.

    >>> cell = rnnjax.simple_rnn(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> state, y = cell.step(params, cell.initial_state(), jnp.ones(3))   # y: (8,)
    """

    def make_params(key, input_size):
        w_x, w_h = _kernels(
            key, input_size, hidden_size, 1, kernel_init, recurrent_init, param_dtype
        )
        return RNNParams(w_x, w_h, jnp.zeros((hidden_size,), param_dtype))

    def update(params, state, projected):
        return _rnn_update(params, state, projected, dtype, activation)[0]

    config = {"activation": activation, "dtype": dtype, "param_dtype": param_dtype}
    cell = _make_cell(
        "simple_rnn", hidden_size, 1, RNNParams, RNNState, make_params, update, config
    )
    return _fast_path(cell, "simple_rnn")


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    kernel_init: inits.Initializer = inits.glorot_uniform,
    recurrent_init: inits.Initializer = inits.orthogonal,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997, with forget gate).

    .. math::
        [i, f, g, o] = x_t W_x + h_{t-1} W_h + b \quad \text{(gate order } i, f, g, o)

        c_t = \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g), \qquad
        h_t = \sigma(o) \odot \tanh(c_t)

    Args:
      hidden_size: ``H``.
      forget_bias: initial value of the forget-gate block of ``b`` (Gers et al. 2000,
        Jozefowicz et al. 2015). It lives in the parameters, not in the forward pass.
      kernel_init: initialiser of each ``[D, H]`` gate block of ``w_x`` (Glorot uniform).
      recurrent_init: initialiser of each ``[H, H]`` gate block of ``w_h`` (orthogonal per block).
      dtype: matmul dtype (e.g. ``jnp.bfloat16``); gates and state keep the state's dtype.
      param_dtype: dtype of the initialised parameters.

    Returns:
      A :class:`Cell` with params :class:`LSTMParams` (``w_x [D, 4H]``, ``w_h [H, 4H]``,
      ``b [4H]``) and state :class:`LSTMState` (``h``, ``c``); the output is ``h_t``.

    >>> cell = rnnjax.lstm(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> state, y = cell.step(params, cell.initial_state(), jnp.ones(3))
    """

    def make_params(key, input_size):
        w_x, w_h = _kernels(
            key, input_size, hidden_size, 4, kernel_init, recurrent_init, param_dtype
        )
        b = inits.gate_bias(hidden_size, LSTM_GATES, {"f": forget_bias}, param_dtype)
        return LSTMParams(w_x, w_h, b)

    def update(params, state, projected):
        return _lstm_update(params, state, projected, dtype)[0]

    config = {"forget_bias": forget_bias, "dtype": dtype, "param_dtype": param_dtype}
    cell = _make_cell("lstm", hidden_size, 4, LSTMParams, LSTMState, make_params, update, config)
    return _fast_path(cell, "lstm")


def gru(
    hidden_size: int,
    *,
    reset_after: bool = False,
    kernel_init: inits.Initializer = inits.glorot_uniform,
    recurrent_init: inits.Initializer = inits.orthogonal,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    r"""Gated recurrent unit (Cho et al. 2014) in the seed's update convention.

    With ``[x_r, x_z, x_n] = x_t W_x + b`` and ``W_h = [U_r, U_z, U_n]`` (gate order r, z, n):

    .. math::
        r = \sigma(x_r + h_{t-1} U_r), \qquad z = \sigma(x_z + h_{t-1} U_z)

        \text{reset\_after=False (seed, Cho 2014):}\quad
        \tilde h = \tanh(x_n + (r \odot h_{t-1}) U_n)

        \text{reset\_after=True (PyTorch, cuDNN, Keras):}\quad
        \tilde h = \tanh(x_n + r \odot (h_{t-1} U_n + b_{hn}))

        h_t = (1 - z) \odot h_{t-1} + z \odot \tilde h

    PyTorch and Keras write ``h_t = z h_{t-1} + (1 - z) h~``: their ``z`` is this ``1 - z``, so
    ``rnnjax.interop`` negates the update gate's weights and bias when converting.

    Args:
      hidden_size: ``H``.
      reset_after: where the reset gate acts (see above); ``True`` adds ``b_hn [H]`` to the params.
      kernel_init: initialiser of each ``[D, H]`` gate block of ``w_x`` (Glorot uniform).
      recurrent_init: initialiser of each ``[H, H]`` gate block of ``w_h`` (orthogonal per block).
      dtype: matmul dtype (e.g. ``jnp.bfloat16``); gates and state keep the state's dtype.
      param_dtype: dtype of the initialised parameters.

    Returns:
      A :class:`Cell` with params :class:`GRUParams` and state :class:`RNNState`.

    >>> cell = rnnjax.gru(8, reset_after=True)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> state, y = cell.step(params, cell.initial_state(), jnp.ones(3))
    """

    def make_params(key, input_size):
        w_x, w_h = _kernels(
            key, input_size, hidden_size, 3, kernel_init, recurrent_init, param_dtype
        )
        b = jnp.zeros((3 * hidden_size,), param_dtype)
        b_hn = jnp.zeros((hidden_size,), param_dtype) if reset_after else None
        return GRUParams(w_x, w_h, b, b_hn)

    def update(params, state, projected):
        return _gru_update(params, state, projected, dtype, reset_after)[0]

    config = {"reset_after": reset_after, "dtype": dtype, "param_dtype": param_dtype}
    cell = _make_cell("gru", hidden_size, 3, GRUParams, RNNState, make_params, update, config)
    return _fast_path(cell, "gru_reset_after" if reset_after else "gru")
