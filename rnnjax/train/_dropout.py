"""Dropout for recurrent networks with explicit PRNG keys: off whenever the key is ``None``.

Three places to drop, each a pure function of an explicit key:

* :func:`dropout` on arrays: inputs ``[B, T, D]`` and outputs; ``broadcast_axes=(1,)`` reuses one
  mask over time (Gal & Ghahramani's variational dropout of inputs and outputs).
* Cell transformers :func:`variational_dropout` (a fixed per-sequence mask on ``h_{t-1}`` where it
  enters ``W_h``) and :func:`zoneout` (Krueger et al. 2016): each returns a :class:`rnnjax.Cell`
  with the same params as the cell it wraps, so ``rnnjax.scan``, layers, ``jit``, ``vmap`` and
  ``grad`` take it unchanged. The key is fixed when the cell is built; the randomness lives in the
  *state*: ``initial_state`` draws a mask (or per-unit keys) per example from that key, so every
  sequence of a batch gets its own mask. Build the training model inside the loss with the step's
  key, and the evaluation model with ``key=None``; both share one params pytree::

      def make_model(key=None):
          cell = rnnjax.train.variational_dropout(rnnjax.lstm(100), 0.25, key=key)
          return rnnjax.serial(rnnjax.rnn(cell), rnnjax.dense(1, jax.nn.sigmoid))

      params = make_model().init(key, (T, D))
      loss = lambda params, batch, key: bce(make_model(key).apply(params, batch[0]), batch[1])

  Give each wrapped cell of a ``bidirectional`` or ``stack`` its own key.
* :func:`drop_connect` on parameters: one mask on ``W_h`` per call (the weight-dropped LSTM of
  Merity et al. 2017), shared by all examples and steps.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks
from rnnjax._cells import Cell, Config

# Cells whose previous hidden state enters the update only through ``h_{t-1} W_h``; for them
# masking h is the same as masking the rows of W_h, and much cheaper under vmap.
_H_ONLY_IN_MATMUL = ("simple_rnn", "lstm", "layer_norm_lstm")


def _describe(value) -> str:
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r:.60}"


def _typed_key(key, signature: str = "") -> jax.Array:
    if not hasattr(key, "dtype") or not (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.ndim == 1)
    ):
        raise TypeError(
            f"key must be a PRNG key (jax.random.key or PRNGKey) or None; got "
            f"{_describe(key)}.{signature}"
        )
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _check_rate(rate, name: str, upper_inclusive: bool = False, signature: str = "") -> float:
    """``rate`` as a Python float, refusing keys, arrays and strings passed in its place."""
    is_scalar = isinstance(rate, int | float | np.integer | np.floating) and not isinstance(
        rate, bool
    )
    if not is_scalar and hasattr(rate, "dtype") and np.ndim(rate) == 0:
        is_scalar = _checks.is_concrete(rate) and (
            jnp.issubdtype(rate.dtype, jnp.floating) or jnp.issubdtype(rate.dtype, jnp.integer)
        )
    if not is_scalar:
        raise TypeError(
            f"{name} must be a Python float (a static drop probability); got "
            f"{_describe(rate)}.{signature}"
        )
    interval = "[0, 1]" if upper_inclusive else "[0, 1)"
    ok = 0.0 <= rate <= 1.0 if upper_inclusive else 0.0 <= rate < 1.0
    if not ok:
        raise ValueError(f"{name} must lie in {interval}; got {rate!r}.")
    return float(rate)


def _check_x(x, signature: str) -> jax.Array:
    if not hasattr(x, "dtype") or not (
        jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.complexfloating)
    ):
        raise TypeError(f"x must be a floating-point array; got {_describe(x)}.{signature}")
    return x


def dropout(key, x: jax.Array, rate: float, *, broadcast_axes: tuple[int, ...] = ()) -> jax.Array:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by 1/(1-rate).

    Args:
      key: PRNG key, or ``None`` for evaluation (returns ``x`` unchanged).
      x: any array, e.g. inputs ``[B, T, D]``.
      rate: drop probability in ``[0, 1)``.
      broadcast_axes: axes along which one mask is shared; ``(1,)`` on ``[B, T, D]`` drops the
        same features at every step of a sequence (variational dropout).

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> key, x = jax.random.key(0), jnp.ones((4, 10, 8))   # [B, T, D]
    >>> x = rnnjax.train.dropout(key, x, 0.2, broadcast_axes=(1,))
    """
    signature = " The signature is dropout(key, x, rate)."
    rate = _check_rate(rate, "rate", signature=signature)
    x = _check_x(jnp.asarray(x) if isinstance(x, np.ndarray) else x, signature)
    key = None if key is None else _typed_key(key, signature)
    for axis in broadcast_axes:
        if not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
            raise ValueError(
                f"broadcast_axes must be axes of x (shape {tuple(x.shape)}); "
                f"got {broadcast_axes!r}."
            )
    if key is None or rate == 0.0:
        return x
    axes = tuple(a % x.ndim for a in broadcast_axes)
    shape = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    scaled = x / jnp.asarray(1.0 - rate, x.dtype)
    return jnp.where(jnp.broadcast_to(keep, x.shape), scaled, jnp.zeros_like(x))


def drop_connect(key, params: Any, rate: float, *, fields: tuple[str, ...] = ("w_h",)) -> Any:
    """DropConnect on the recurrent kernels: zero entries of every ``w_h`` in ``params``.

    One Bernoulli mask per matrix per call (inverted scaling, as ``torch.nn.functional.dropout``
    in AWD-LSTM), shared by every example and time step. Call it inside the loss with the step's
    key; gradients flow to the kept entries.

    Args:
      key: PRNG key, or ``None`` for evaluation (``params`` returned unchanged).
      params: any params pytree (a cell's, a layer's, ``serial``'s tuple).
      rate: drop probability in ``[0, 1)``.
      fields: NamedTuple field names to drop (``("w_h",)``).

    Raises:
      ValueError: ``params`` has no such field.

    >>> import jax
    >>> import rnnjax
    >>> key = jax.random.key(0)
    >>> params = rnnjax.lstm(8).init(jax.random.key(1), input_size=3)
    >>> dropped = rnnjax.train.drop_connect(key, params, 0.5)
    """
    signature = " The signature is drop_connect(key, params, rate)."
    rate = _check_rate(rate, "rate", signature=signature)
    key = None if key is None else _typed_key(key, signature)
    paths = [
        path
        for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
        if path and getattr(path[-1], "name", None) in fields
    ]
    if not paths:
        raise ValueError(
            f"fields must name fields of params; params contain no field named {fields}, so "
            f"nothing would be dropped."
        )
    if key is None or rate == 0.0:
        return params
    chosen = {jax.tree_util.keystr(p): i for i, p in enumerate(paths)}

    def drop(path, leaf):
        index = chosen.get(jax.tree_util.keystr(path))
        if index is None:
            return leaf
        return dropout(jax.random.fold_in(key, index), leaf, rate)

    return jax.tree_util.tree_map_with_path(drop, params)


class VariationalState(NamedTuple):
    """State of a :func:`variational_dropout` cell: the wrapped cell's state and the mask.

    ``mask [..., H]`` holds 0 or ``1 / (1 - rate)`` (ones at evaluation); it stays fixed over the
    sequence. ``.h`` is the wrapped state's ``h``.
    """

    cell_state: Any
    mask: jax.Array

    @property
    def h(self) -> jax.Array:
        return self.cell_state.h


class ZoneoutState(NamedTuple):
    """State of a :func:`zoneout` cell: the wrapped cell's state and one PRNG key per unit
    ``keys [..., H]``, advanced every step. ``.h`` is the wrapped state's ``h``."""

    cell_state: Any
    keys: jax.Array

    @property
    def h(self) -> jax.Array:
        return self.cell_state.h


def _check_cell(cell) -> Cell:
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax Cell; got {type(cell).__name__}.")
    return cell


def _check_state(state, state_type) -> None:
    if not isinstance(state, state_type):
        raise TypeError(
            f"state must be {state_type.__name__} (from the wrapped cell's initial_state); "
            f"got {type(state).__name__}."
        )


def _wrap(cell: Cell, name: str, initial_state, recur, config: dict) -> Cell:
    def step(params, state, x):
        return recur(params, state, cell.project_inputs(params, x))

    return cell._replace(
        initial_state=initial_state,
        step=step,
        recur=recur,
        name=f"{name}({cell.name})",
        config=Config({**cell.config, name: Config(config)}),
    )


def variational_dropout(cell: Cell, rate: float, *, key=None) -> Cell:
    r"""Recurrent dropout with one mask per sequence on ``h_{t-1}`` (Gal & Ghahramani 2016).

    .. math::
        z_t = x_t W_x + (h_{t-1} \odot m) W_h + b, \qquad
        m \sim \mathrm{Bernoulli}(1 - p)^H / (1 - p)

    The mask ``m`` is drawn once per example in ``initial_state`` and reused at every step; the
    carried ``h_{t-1}`` itself is not dropped (so a GRU's ``(1 - z) h_{t-1}`` path keeps it whole,
    as in Keras' ``recurrent_dropout``). Computed as ``h_{t-1} (diag(m) W_h)``, which is exact for
    every cell; cells whose ``h`` enters only through ``W_h`` (simple RNN, LSTM, layer-norm LSTM)
    mask ``h`` directly. Apply input/output dropout with :func:`dropout`.

    Args:
      cell: the cell to wrap (any :class:`rnnjax.Cell`).
      rate: drop probability ``p`` in ``[0, 1)``.
      key: PRNG key for the masks; ``None`` (evaluation) gives masks of ones.

    Returns:
      A :class:`rnnjax.Cell` with the same params and state :class:`VariationalState`.

    >>> import jax
    >>> import rnnjax
    >>> key = jax.random.key(0)
    >>> cell = rnnjax.train.variational_dropout(rnnjax.lstm(64), 0.25, key=key)
    """
    cell = _check_cell(cell)
    rate = _check_rate(
        rate, "rate", signature=" The signature is variational_dropout(cell, rate, *, key)."
    )
    key = None if key is None else _typed_key(key)
    hidden = cell.hidden_size
    fast = cell.name in _H_ONLY_IN_MATMUL

    def initial_state(batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        shape = tuple(batch_shape) + (hidden,)
        if key is None or rate == 0.0:
            mask = jnp.ones(shape, dtype)
        else:
            keep = jax.random.bernoulli(key, 1.0 - rate, shape)
            mask = keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)
        return VariationalState(cell.initial_state(batch_shape, dtype), mask)

    def recur(params, state, projected):
        _check_state(state, VariationalState)
        if fast:
            inner = state.cell_state._replace(h=state.cell_state.h * state.mask)
            new_inner, y = cell.recur(params, inner, projected)
            return VariationalState(new_inner, state.mask), y
        if state.mask.ndim > 1:  # one masked W_h per example: map over the batch axes
            return jax.vmap(recur, in_axes=(None, 0, 0))(params, state, projected)
        masked = params._replace(w_h=params.w_h * state.mask[:, None].astype(params.w_h.dtype))
        new_inner, y = cell.recur(masked, state.cell_state, projected)
        return VariationalState(new_inner, state.mask), y

    return _wrap(cell, "variational_dropout", initial_state, recur, {"rate": rate})


def _zone(old, new, mix_h, mix_c):
    """Apply ``mix(old, new)`` to every field of a (possibly wrapped) cell state."""
    if hasattr(old, "cell_state"):
        return new._replace(cell_state=_zone(old.cell_state, new.cell_state, mix_h, mix_c))
    fields = [
        (mix_c if field == "c" else mix_h)(o, n)
        for field, o, n in zip(old._fields, old, new, strict=True)
    ]
    return type(old)(*fields)


def zoneout(cell: Cell, rate: float, *, cell_rate: float | None = None, key=None) -> Cell:
    r"""Zoneout (Krueger et al. 2016): each unit keeps its previous value with probability ``rate``.

    .. math::
        h_t = d^h_t \odot h_{t-1} + (1 - d^h_t) \odot \tilde h_t, \qquad
        c_t = d^c_t \odot c_{t-1} + (1 - d^c_t) \odot \tilde c_t

    with :math:`\tilde h_t, \tilde c_t` the wrapped cell's update and fresh
    :math:`d_t \sim \mathrm{Bernoulli}(\text{rate})` per unit, step and example. At evaluation
    (``key=None``) the mask is replaced by its expectation:
    :math:`h_t = \text{rate}\, h_{t-1} + (1 - \text{rate})\, \tilde h_t`.

    Args:
      cell: the cell to wrap.
      rate: zoneout probability of ``h`` in ``[0, 1]``.
      cell_rate: zoneout probability of an LSTM's ``c`` (defaults to ``rate``); the paper's
        best LSTM uses ``rate=0.05, cell_rate=0.5``.
      key: PRNG key; ``None`` for evaluation.

    Returns:
      A :class:`rnnjax.Cell` with the same params and state :class:`ZoneoutState`.

    >>> import jax
    >>> import rnnjax
    >>> key = jax.random.key(0)
    >>> cell = rnnjax.train.zoneout(rnnjax.lstm(64), 0.05, cell_rate=0.5, key=key)
    """
    cell = _check_cell(cell)
    rate_h = _check_rate(rate, "rate", upper_inclusive=True)
    rate_c = _check_rate(rate if cell_rate is None else cell_rate, "cell_rate", True)
    hidden = cell.hidden_size
    base_key = jax.random.key(0) if key is None else _typed_key(key)

    def initial_state(batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        shape = tuple(batch_shape) + (hidden,)
        keys = jax.random.split(base_key, math.prod(shape)).reshape(shape)
        return ZoneoutState(cell.initial_state(batch_shape, dtype), keys)

    def expected(rate_):
        return lambda old, new: rate_ * old + (1.0 - rate_) * new

    def recur(params, state, projected):
        _check_state(state, ZoneoutState)
        new_inner, _ = cell.recur(params, state.cell_state, projected)
        if key is None:
            zoned = _zone(state.cell_state, new_inner, expected(rate_h), expected(rate_c))
            return ZoneoutState(zoned, state.keys), zoned.h
        flat = state.keys.reshape(-1)
        pairs = jax.vmap(jax.random.split)(flat)
        uniform = jax.vmap(lambda k: jax.random.uniform(k, (2,)))(pairs[:, 1])
        keep_h = (uniform[:, 0] < rate_h).reshape(state.keys.shape)
        keep_c = (uniform[:, 1] < rate_c).reshape(state.keys.shape)
        zoned = _zone(
            state.cell_state,
            new_inner,
            lambda old, new: jnp.where(keep_h, old, new),
            lambda old, new: jnp.where(keep_c, old, new),
        )
        return ZoneoutState(zoned, pairs[:, 0].reshape(state.keys.shape)), zoned.h

    config = {"rate": rate_h, "cell_rate": rate_c}
    return _wrap(cell, "zoneout", initial_state, recur, config)
