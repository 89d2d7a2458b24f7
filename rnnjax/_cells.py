"""Recurrent cells as pure functions over NamedTuple pytrees: ``simple_rnn``, ``lstm``, ``gru``.

A cell is written for one example: ``x_t`` has shape ``(input_size,)`` (leading batch dimensions are
accepted when the state carries the same ones). Gates are fused along the last axis of the kernels,
``w_x [D, G*H]``, ``w_h [H, G*H]``, ``b [G*H]``, so a step is two matmuls. Each cell splits its step
into ``project_inputs`` (``x W_x + b``, independent of the state, so a generic scan can hoist it
out of the time loop as one ``[T, D] x [D, G*H]`` matmul) and ``recur`` (the state update from the
projected input); ``step`` is their composition. The gate math lives in ``rnnjax._gates``.

A cell's functions are module-level functions bound to frozen arguments (:class:`Partial`), so
equal constructions give equal, equally hashed cells: a cell can be a static argument of
``jax.jit``, and re-creating it does not retrace. The built-in cells carry a :class:`Kernels`
record naming their kind; the fast path (``rnnjax._fast``) reads it only while the cell's
``step``, ``project_inputs`` and ``recur`` are still the ones the record was built with.
"""

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks, _gates
from rnnjax import _initializers as inits
from rnnjax._gates import LSTMState, Matmul, RNNState
from rnnjax._gates import add_bias as _add_bias
from rnnjax._gates import cast_like as _cast_like
from rnnjax._gates import dot as _dot
from rnnjax._gates import split as _split

__all__ = ["LSTMState", "RNNState", "_add_bias", "_cast_like", "_dot", "_split"]

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


GRUState = RNNState


@dataclasses.dataclass(frozen=True)
class Partial:
    """``function`` with its leading positional ``args`` bound, like ``functools.partial``, but
    equal (and hashed alike) when the function and the arguments are, which a cell needs to be a
    static argument of ``jax.jit`` and not to retrace when re-created."""

    function: Callable
    args: tuple = ()

    def __call__(self, *args, **kwargs):
        return self.function(*self.args, *args, **kwargs)


class Config(Mapping):
    """A cell's constructor options: a read-only, hashable mapping (``config["dtype"]``)."""

    __slots__ = ("_items",)

    def __init__(self, items=()):
        self._items = tuple(dict(items).items())

    def __getitem__(self, key):
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items))

    def __repr__(self) -> str:
        return f"Config({dict(self._items)!r})"


class Kernels(NamedTuple):
    """The record a built-in cell carries for the fast path (``rnnjax._fast``).

    ``kind`` names the update in the fast path's table (``"lstm"``, ``"gru"``,
    ``"gru_reset_after"``, ``"simple_rnn"``); ``options`` are the cell's config (matmul
    ``dtype``, ``activation``). ``step``, ``project_inputs`` and ``recur`` are the functions it
    was built with: the record holds only while the cell's own three are equal to them.
    """

    kind: str
    options: Config
    step: Callable
    project_inputs: Callable
    recur: Callable


class Cell(NamedTuple):
    """A recurrent cell: pure functions over explicit parameter and state pytrees.

    Which function is the truth: ``rnnjax.scan`` (and the layers) run ``recur(params, state,
    project_inputs(params, x_t))``, the input projection hoisted out of the loop. A built-in cell
    whose ``step`` alone was replaced (``cell._replace(step=...)``) runs its own ``step`` instead;
    one whose ``recur`` or ``project_inputs`` was replaced runs ``recur(project_inputs(x))`` (its
    ``step`` still calls the built-in pair, so replace all that you change). A built-in cell left
    as built may take a faster path (``rnnjax._fast``) with the same values; any change to these
    three functions, or any cell you build yourself, takes the generic path.

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
      kernels: the fast path's :class:`Kernels` record (built-in cells), or ``None``.
    """

    init: Callable[[jax.Array, int], Any]
    initial_state: Callable[..., Any]
    step: Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
    project_inputs: Callable[[Any, jax.Array], jax.Array]
    recur: Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
    hidden_size: int
    num_gates: int
    name: str
    config: Mapping
    kernels: Kernels | None = None


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


def batch_shape_of(batch_shape) -> tuple[int, ...]:
    """``batch_shape`` as a tuple of non-negative ints; raises ``TypeError``/``ValueError``."""
    if not isinstance(batch_shape, tuple | list):
        raise TypeError(
            f"batch_shape must be a tuple of non-negative ints, e.g. () for one example or (B,) "
            f"for a batch; got {batch_shape!r} ({type(batch_shape).__name__})."
        )
    for size in batch_shape:
        if jax.export.is_symbolic_dim(size):  # a symbolic batch under jax.export
            continue
        if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 0:
            raise ValueError(
                f"batch_shape must hold non-negative ints; got {tuple(batch_shape)!r}."
            )
    return tuple(size if jax.export.is_symbolic_dim(size) else int(size) for size in batch_shape)


class _Spec(NamedTuple):
    """What the module-level cell functions below are bound to (hashable)."""

    name: str
    hidden: int
    num_gates: int
    params_type: type
    state_type: type
    make_params: Callable
    update: Callable
    config: Config


def _label(spec: _Spec) -> str:
    return f"{spec.name}(hidden_size={spec.hidden})"


def _check_params(spec: _Spec, params) -> None:
    label, hidden, fused = _label(spec), spec.hidden, spec.num_gates * spec.hidden
    _checks.cell_params(params, spec.params_type, spec.name, label)
    expected = {"w_h": (hidden, fused), "b": (fused,)}
    if spec.params_type is GRUParams and spec.config["reset_after"]:
        expected["b_hn"] = (hidden,)
    elif spec.params_type is GRUParams and params.b_hn is not None:
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
                f"params do not match {label}: expected params.{field} of shape {shape}, got {got}."
            )
    if params.w_x.ndim != 2 or params.w_x.shape[1] != fused:
        raise ValueError(
            f"params do not match {label}: expected params.w_x of shape (input_size, {fused}), "
            f"got {tuple(params.w_x.shape)}."
        )


def _init(spec: _Spec, key: jax.Array, input_size: int):
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
        raise ValueError(f"input_size must be a positive int; got {input_size!r}.")
    return spec.make_params(key, input_size)


def _initial_state(spec: _Spec, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
    shape = batch_shape_of(batch_shape) + (spec.hidden,)
    _checks.floating_dtype(dtype, "dtype")
    return spec.state_type(*(jnp.zeros(shape, dtype) for _ in spec.state_type._fields))


def _project_inputs(spec: _Spec, params, x: jax.Array) -> jax.Array:
    _check_params(spec, params)
    return _project(params, x, spec.config.get("dtype"))


def _recur(spec: _Spec, params, state, projected: jax.Array):
    _check_params(spec, params)
    state_type, name = spec.state_type, spec.name
    if not isinstance(state, state_type):
        raise TypeError(
            f"state must be {state_type.__name__} (from {name}(...).initial_state); "
            f"got {type(state).__name__}."
        )
    expected = tuple(projected.shape[:-1]) + (spec.hidden,)
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
    new_state = _cast_like(spec.update(params, state, projected), state)
    return new_state, new_state.h


def _step(spec: _Spec, params, state, x: jax.Array):
    return _recur(spec, params, state, _project_inputs(spec, params, x))


def _make_cell(
    name: str,
    hidden_size: int,
    num_gates: int,
    params_type: type,
    state_type: type,
    make_params: Callable[[jax.Array, int], Any],
    update: Callable[[Any, Any, jax.Array], Any],
    config: Mapping,
    kind: str | None = None,
) -> Cell:
    """Assemble a ``Cell`` from its parameter factory and its state update on projected inputs.

    ``update(params, state, projected) -> new_state``. With ``kind`` the cell carries
    a :class:`Kernels` record for the fast path; give hashable ``make_params`` and ``update``
    (module-level functions or :class:`Partial`) for a hashable cell.
    """
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int; got {hidden_size!r}.")
    for option in ("dtype", "param_dtype"):
        if config.get(option) is not None:
            _checks.floating_dtype(config[option], option)
    _checks.callable_or_none(config.get("activation"), "activation", "jnp.tanh")
    config = Config(config)
    spec = _Spec(name, hidden_size, num_gates, params_type, state_type, make_params, update, config)
    step, project_inputs, recur = (Partial(f, (spec,)) for f in (_step, _project_inputs, _recur))
    kernels = None if kind is None else Kernels(kind, config, step, project_inputs, recur)
    return Cell(
        init=Partial(_init, (spec,)),
        initial_state=Partial(_initial_state, (spec,)),
        step=step,
        project_inputs=project_inputs,
        recur=recur,
        hidden_size=hidden_size,
        num_gates=num_gates,
        name=name,
        config=config,
        kernels=kernels,
    )


def _kernels(key, input_size, hidden_size, num_gates, kernel_init, recurrent_init, param_dtype):
    key_x, key_h = jax.random.split(key)
    fused = num_gates * hidden_size
    w_x = inits.per_gate(kernel_init, key_x, (input_size, fused), num_gates, param_dtype)
    w_h = inits.per_gate(recurrent_init, key_h, (hidden_size, fused), num_gates, param_dtype)
    return w_x, w_h


def _rnn_params(hidden_size, kernel_init, recurrent_init, param_dtype, key, input_size):
    w_x, w_h = _kernels(key, input_size, hidden_size, 1, kernel_init, recurrent_init, param_dtype)
    return RNNParams(w_x, w_h, jnp.zeros((hidden_size,), param_dtype))


def _lstm_params(
    hidden_size, forget_bias, kernel_init, recurrent_init, param_dtype, key, input_size
):
    w_x, w_h = _kernels(key, input_size, hidden_size, 4, kernel_init, recurrent_init, param_dtype)
    b = inits.gate_bias(hidden_size, LSTM_GATES, {"f": forget_bias}, param_dtype)
    return LSTMParams(w_x, w_h, b)


def _gru_params(
    hidden_size, reset_after, kernel_init, recurrent_init, param_dtype, key, input_size
):
    w_x, w_h = _kernels(key, input_size, hidden_size, 3, kernel_init, recurrent_init, param_dtype)
    b = jnp.zeros((3 * hidden_size,), param_dtype)
    b_hn = jnp.zeros((hidden_size,), param_dtype) if reset_after else None
    return GRUParams(w_x, w_h, b, b_hn)


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

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> cell = rnnjax.simple_rnn(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> state, y = cell.step(params, cell.initial_state(), jnp.ones(3))   # y: (8,)
    """
    make_params = Partial(_rnn_params, (hidden_size, kernel_init, recurrent_init, param_dtype))
    update = Partial(_gates.rnn_update_with, (Matmul(dtype), activation))
    config = {"activation": activation, "dtype": dtype, "param_dtype": param_dtype}
    return _make_cell(
        "simple_rnn", hidden_size, 1, RNNParams, RNNState, make_params, update, config, "simple_rnn"
    )


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

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> cell = rnnjax.lstm(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> state, y = cell.step(params, cell.initial_state(), jnp.ones(3))
    """
    make_params = Partial(
        _lstm_params, (hidden_size, forget_bias, kernel_init, recurrent_init, param_dtype)
    )
    update = Partial(_gates.lstm_update_with, (Matmul(dtype),))
    config = {"forget_bias": forget_bias, "dtype": dtype, "param_dtype": param_dtype}
    return _make_cell(
        "lstm", hidden_size, 4, LSTMParams, LSTMState, make_params, update, config, "lstm"
    )


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

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> cell = rnnjax.gru(8, reset_after=True)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> state, y = cell.step(params, cell.initial_state(), jnp.ones(3))
    """
    reset_after = bool(reset_after)
    make_params = Partial(
        _gru_params, (hidden_size, reset_after, kernel_init, recurrent_init, param_dtype)
    )
    update = Partial(_gates.gru_update_with, (Matmul(dtype), reset_after))
    config = {"reset_after": reset_after, "dtype": dtype, "param_dtype": param_dtype}
    kind = "gru_reset_after" if reset_after else "gru"
    return _make_cell("gru", hidden_size, 3, GRUParams, RNNState, make_params, update, config, kind)
