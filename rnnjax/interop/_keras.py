r"""Keras 3 interop: ``SimpleRNN`` / ``LSTM`` / ``GRU`` / ``Bidirectional`` / ``Dense`` /
``Sequential`` to and from rnnjax layers.

Keras stores kernels in rnnjax's own row-vector layout (``kernel [D, G*H]``), so weights move
without transposes; only the gate orders differ. LSTM: Keras i, f, c, o is rnnjax i, f, g, o.
GRU: Keras z, r, h is reordered to rnnjax r, z, n, and since Keras updates
``h_t = z h_{t-1} + (1 - z) h~`` while rnnjax updates ``h_t = (1 - z) h_{t-1} + z h~``, the update
gate's kernel, recurrent kernel and bias are negated (:math:`\sigma(-a) = 1 - \sigma(a)`).
``reset_after=True`` stores a ``[2, 3H]`` bias (input row, recurrent row): the two rows are summed
for r and z, and the recurrent candidate row becomes ``b_hn``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._cells import (
    GRU_GATES,
    LSTM_GATES,
    GRUParams,
    LSTMParams,
    RNNParams,
    gru,
    lstm,
    simple_rnn,
)
from rnnjax._layers import (
    BidirectionalParams,
    DenseParams,
    Layer,
    bidirectional,
    dense,
    rnn,
    serial,
)
from rnnjax.interop._common import (
    ConvertedLayer,
    array_module,
    check_zero,
    reorder_gates,
    spec_of,
    to_numpy,
    with_spec,
)
from rnnjax.interop._keras_build import SUPPORTED, keras_for_model

KERAS_LSTM_GATES = ("i", "f", "g", "o")
"""Gate order of Keras' LSTM kernels (Keras calls the candidate ``c``)."""

KERAS_GRU_GATES = ("z", "r", "n")
"""Gate order of Keras' GRU kernels (Keras calls the candidate ``h``)."""

_RNN_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}
_DENSE_ACTIVATIONS = {
    "linear": None,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "softmax": jax.nn.softmax,
}
_MERGE_MODES = {"concat": "concat", "sum": "sum", "mul": "mul", "ave": "mean", None: None}
_PARAMS_CLASS = {RNNParams: "SimpleRNN", LSTMParams: "LSTM", GRUParams: "GRU"}


class KerasSpec(NamedTuple):
    """A Keras layer's class name and ``get_config()``: enough for ``from_config`` to rebuild it."""

    class_name: str
    config: dict


def _activation(config: dict, key: str, allowed, where: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or value not in allowed:
        name = value.get("config", value) if isinstance(value, dict) else value
        raise ValueError(
            f"{where}: {key}={name!r} is not supported; rnnjax converts {key} in "
            f"{sorted(allowed)} (custom activations have no rnnjax cell)."
        )
    return value


def _cell(class_name: str, config: dict, where: str):
    if config.get("stateful"):
        raise ValueError(
            f"{where}: stateful=True carries the state across batches; rnnjax passes "
            "initial_state explicitly. Convert the layer with stateful=False."
        )
    units = int(config["units"])
    if class_name == "SimpleRNN":
        return simple_rnn(
            units, _RNN_ACTIVATIONS[_activation(config, "activation", _RNN_ACTIVATIONS, where)]
        )
    _activation(config, "activation", ("tanh",), where)
    _activation(config, "recurrent_activation", ("sigmoid",), where)
    if class_name == "LSTM":
        return lstm(units, forget_bias=0.0)
    return gru(units, reset_after=bool(config["reset_after"]))


def _cell_params(class_name: str, config: dict, weights: list):
    """rnnjax cell params from a Keras RNN layer's ``get_weights()``."""
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if config["use_bias"] else None
    xp = array_module(*weights)
    units = int(config["units"])
    if class_name == "SimpleRNN":
        return RNNParams(kernel, recurrent, xp.zeros(units, kernel.dtype) if bias is None else bias)
    if class_name == "LSTM":
        order = (KERAS_LSTM_GATES, LSTM_GATES)
        if bias is None:
            bias = xp.zeros(4 * units, kernel.dtype)
        return LSTMParams(*(reorder_gates(w, *order) for w in (kernel, recurrent, bias)))
    order = (KERAS_GRU_GATES, GRU_GATES)
    w_x, w_h = (reorder_gates(w, *order, negate=("z",)) for w in (kernel, recurrent))
    if not config["reset_after"]:
        b = xp.zeros(3 * units, kernel.dtype) if bias is None else bias
        return GRUParams(w_x, w_h, reorder_gates(b, *order, negate=("z",)), None)
    if bias is None:
        bias = xp.zeros((2, 3 * units), kernel.dtype)
    b_in, b_rec = (reorder_gates(row, *order, negate=("z",)) for row in (bias[0], bias[1]))
    b = xp.concatenate([b_in[: 2 * units] + b_rec[: 2 * units], b_in[2 * units :]])
    return GRUParams(w_x, w_h, b, b_rec[2 * units :])


def _keras_weights(class_name: str, config: dict, params) -> list[np.ndarray]:
    """A Keras RNN layer's ``set_weights`` list from rnnjax cell params."""
    p = jax.tree_util.tree_map(to_numpy, params)
    if class_name == "SimpleRNN":
        weights = [p.w_x, p.w_h, p.b]
    elif class_name == "LSTM":
        order = (LSTM_GATES, KERAS_LSTM_GATES)
        weights = [reorder_gates(w, *order) for w in (p.w_x, p.w_h, p.b)]
    else:
        order = (GRU_GATES, KERAS_GRU_GATES)
        weights = [reorder_gates(w, *order, negate=("z",)) for w in (p.w_x, p.w_h, p.b)]
        if config["reset_after"]:
            zeros = np.zeros_like(p.b_hn)
            recurrent_row = reorder_gates(np.concatenate([zeros, zeros, p.b_hn]), *order)
            weights[2] = np.stack([weights[2], recurrent_row])
    if not config["use_bias"]:
        check_zero(weights.pop(), f"params.b of Keras layer {config.get('name')!r}")
    return weights


def _built_weights(layer) -> list[np.ndarray]:
    if not layer.built:
        raise ValueError(
            f"Keras layer {layer.name!r} is not built, so it has no weights yet; call it on an "
            "input or layer.build(input_shape) first."
        )
    return [np.asarray(w) for w in layer.get_weights()]


def _convert(layer, keras) -> tuple[Any, Any]:
    """``(rnnjax layer, params)`` for one Keras layer (recursing into ``Sequential``)."""
    kinds = {
        keras.layers.SimpleRNN: "SimpleRNN",
        keras.layers.LSTM: "LSTM",
        keras.layers.GRU: "GRU",
        keras.layers.Bidirectional: "Bidirectional",
        keras.layers.Dense: "Dense",
        keras.Sequential: "Sequential",
    }
    kind = kinds.get(type(layer))
    where = f"Keras layer {getattr(layer, 'name', '?')!r}"
    if kind is None:
        raise TypeError(
            f"layer must be a Keras SimpleRNN, LSTM, GRU, Bidirectional, Dense or a Sequential "
            f"of them; got {type(layer).__name__}."
        )
    if kind == "Sequential":
        parts = [_convert(sub, keras) for sub in layer.layers]
        return serial(*(m for m, _ in parts)), tuple(p for _, p in parts)
    if kind == "Dense":
        config = layer.get_config()
        activation = _activation(config, "activation", _DENSE_ACTIVATIONS, where)
        weights = _built_weights(layer)
        model = dense(
            int(config["units"]), _DENSE_ACTIVATIONS[activation], use_bias=config["use_bias"]
        )
        return model, DenseParams(weights[0], weights[1] if config["use_bias"] else None)
    if kind == "Bidirectional":
        forward, backward = layer.forward_layer, layer.backward_layer
        for inner in (forward, backward):
            if kinds.get(type(inner)) not in ("SimpleRNN", "LSTM", "GRU"):
                raise TypeError(
                    f"{where}: Bidirectional must wrap a Keras SimpleRNN, LSTM or GRU; "
                    f"got {type(inner).__name__}."
                )
        f_config, b_config = forward.get_config(), backward.get_config()
        if f_config["go_backwards"] or not b_config["go_backwards"]:
            raise ValueError(
                f"{where}: expected go_backwards=False on the forward layer and True on the "
                f"backward layer; got {f_config['go_backwards']} and {b_config['go_backwards']}."
            )
        cells = [
            _cell(type(x).__name__, c, where)
            for x, c in ((forward, f_config), (backward, b_config))
        ]
        model = bidirectional(
            *cells,
            merge=_MERGE_MODES[layer.merge_mode],
            return_sequences=bool(f_config["return_sequences"]),
            return_state=bool(f_config["return_state"]),
            unroll=True if f_config["unroll"] else None,
        )
        params = BidirectionalParams(
            _cell_params(type(forward).__name__, f_config, _built_weights(forward)),
            _cell_params(type(backward).__name__, b_config, _built_weights(backward)),
        )
        return model, params
    config = layer.get_config()
    cell = _cell(kind, config, where)
    if config["go_backwards"] and config["return_sequences"]:
        raise ValueError(
            f"{where}: go_backwards=True with return_sequences=True returns the outputs in "
            "reversed time order; rnnjax keeps outputs aligned with inputs. Wrap the layer in "
            "Bidirectional or use return_sequences=False."
        )
    model = rnn(
        cell,
        return_sequences=bool(config["return_sequences"]),
        return_state=bool(config["return_state"]),
        reverse=bool(config["go_backwards"]),
        unroll=True if config["unroll"] else None,
    )
    return model, _cell_params(kind, config, _built_weights(layer))


def _import_keras():
    try:
        import keras
    except ImportError as error:  # pragma: no cover - keras is a dev dependency
        raise ImportError(
            "rnnjax.interop Keras converters need Keras 3: pip install keras, then run with "
            "KERAS_BACKEND=jax (no TensorFlow needed)."
        ) from error
    return keras


def from_keras(layer) -> tuple[ConvertedLayer, Any]:
    """Convert a built Keras 3 ``SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional``, ``Dense`` or
    a ``Sequential`` of them.

    ``return_sequences``, ``return_state``, ``unroll``, ``Bidirectional.merge_mode`` and
    ``go_backwards`` (with ``return_sequences=False``) carry over; dropout, which Keras applies
    only in training, is not applied. GRU weights are converted to rnnjax's update convention by
    negating the update gate (see the module docstring); both ``reset_after`` settings map onto
    ``rnnjax.gru(reset_after=...)``.

    Args:
      layer: a built Keras layer or ``keras.Sequential``.

    Returns:
      ``(model, params)``: ``model.apply(params, x [B, T, D])`` gives what ``layer(x)`` gives.
      With ``return_state`` the result is ``(output, state)`` where Keras returns
      ``[output, h]`` / ``[output, h, c]`` (``Bidirectional``: forward then backward), the same
      leaves in the same order. A Sequential becomes ``rnnjax.serial`` with a tuple of params.
      ``model.spec`` is a :class:`KerasSpec` that :func:`to_keras` rebuilds from.

    Raises:
      TypeError: a layer type that has no rnnjax counterpart (or a custom subclass).
      ValueError: an unsupported option: activations other than tanh/sigmoid (tanh, relu or
        sigmoid for SimpleRNN), ``stateful=True``, ``go_backwards`` with ``return_sequences``
        or on the wrong side of a ``Bidirectional``, or an unbuilt layer.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import keras                                   # with KERAS_BACKEND=jax
    >>> import rnnjax
    >>> with jax.numpy_rank_promotion("allow"):       # Keras broadcasts by rank
    ...     keras_model = keras.Sequential([keras.Input((100, 1)), keras.layers.LSTM(100),
    ...                                     keras.layers.Dense(1, activation="sigmoid")])
    >>> model, params = rnnjax.interop.from_keras(keras_model)
    >>> y = model.apply(params, jnp.ones((8, 100, 1)))          # == keras_model(x), (8, 1)
    """
    keras = _import_keras()
    model, params = _convert(layer, keras)
    spec = KerasSpec(type(layer).__name__, layer.get_config())
    return with_spec(model, spec), jax.tree_util.tree_map(jnp.asarray, params)


def _first_input_size(params) -> int:
    while isinstance(params, (tuple, list)) and not hasattr(params, "_fields"):
        params = params[0]
    if isinstance(params, BidirectionalParams):
        params = params.forward
    return int((params.w if isinstance(params, DenseParams) else params.w_x).shape[0])


def _layer_for(params, keras, options: dict):
    """A fresh Keras layer shaped like ``params`` (no spec to rebuild from)."""
    if isinstance(params, BidirectionalParams):
        if type(params.forward) is not type(params.backward):
            raise ValueError(
                "params.forward and params.backward must be the same cell type for Keras "
                f"Bidirectional; got {type(params.forward).__name__} and "
                f"{type(params.backward).__name__}."
            )
        return keras.layers.Bidirectional(_layer_for(params.forward, keras, options))
    dtype = str(np.asarray(jax.tree_util.tree_leaves(params)[0]).dtype)
    if isinstance(params, DenseParams):
        return keras.layers.Dense(
            int(params.w.shape[1]), use_bias=params.b is not None, dtype=dtype, **options
        )
    class_name = _PARAMS_CLASS.get(type(params))
    if class_name is None:
        raise TypeError(
            "params must be rnnjax cell params, BidirectionalParams or DenseParams to build a "
            f"Keras layer without a model; got {type(params).__name__}. Pass the rnnjax model "
            f"(to_keras(model, params)) to convert a serial or stack: {SUPPORTED}."
        )
    if class_name == "GRU":
        options = {"reset_after": params.b_hn is not None, **options}
    return getattr(keras.layers, class_name)(int(params.w_h.shape[0]), dtype=dtype, **options)


def _set_weights(layer, params, keras) -> None:
    if isinstance(layer, keras.Sequential):
        if len(layer.layers) != len(params):
            raise ValueError(
                f"params must hold one entry per Keras layer ({len(layer.layers)}); "
                f"got {len(params)}."
            )
        for sub, p in zip(layer.layers, params, strict=True):
            _set_weights(sub, p, keras)
    elif isinstance(layer, keras.layers.Bidirectional):
        _set_weights(layer.forward_layer, params.forward, keras)
        _set_weights(layer.backward_layer, params.backward, keras)
    elif isinstance(layer, keras.layers.Dense):
        weights = [to_numpy(params.w)]
        if layer.use_bias:
            weights.append(to_numpy(params.b))
        elif params.b is not None:
            check_zero(params.b, f"params.b of Keras layer {layer.name!r}")
        layer.set_weights(weights)
    else:
        layer.set_weights(_keras_weights(type(layer).__name__, layer.get_config(), params))


def to_keras(model, params, **layer_options):
    """Build the Keras layer (or ``Sequential``) that computes what ``params`` compute.

    When ``model`` came from :func:`from_keras`, its spec rebuilds the same layer (options in
    ``layer_options`` override the spec's config of a single layer).

    Any other rnnjax model (``rnn``, ``bidirectional``, ``stack``, ``dense`` or a ``serial`` of
    them) becomes the Keras layer, or ``Sequential``, that computes what ``model.apply`` computes:
    layer types and sizes come from ``params`` (``reset_after`` from ``b_hn``; a ``stack`` becomes
    one Keras layer per level), ``return_sequences`` from the rank of the model's output, and
    activations and merge modes from running the candidates on a random probe batch against
    ``model.apply`` (see ``rnnjax.interop._keras_build``).

    With ``model=None`` or ``layer_options``, one layer is built from ``params`` alone with Keras
    defaults unless ``layer_options`` say otherwise (e.g. ``activation="relu"``,
    ``return_sequences=True``). rnnjax -> Keras -> rnnjax round-trips exactly.

    Args:
      model: the rnnjax model ``params`` belong to (a :class:`ConvertedLayer` or any Layer), or
        ``None``.
      params: its parameters.
      **layer_options: Keras constructor arguments for a single rebuilt layer.

    Returns:
      A built Keras layer or ``keras.Sequential`` holding the converted weights.

    Raises:
      TypeError: ``model`` is not an rnnjax Layer (or ``None``); params of a layer Keras has no
        counterpart for, or a tuple of params without the model.
      ValueError: params Keras cannot hold (non-zero biases for ``use_bias=False``, ...), a
        model whose output is a pair, or options with no Keras counterpart (``reverse=True``,
        custom activations).

    >>> import jax, rnnjax
    >>> model = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(4)), rnnjax.dense(1, jax.nn.sigmoid))
    >>> params = model.init(jax.random.key(0), (10, 3))
    >>> keras_model = rnnjax.interop.to_keras(model, params)   # LSTM(4) -> Dense(1, sigmoid)
    """
    keras = _import_keras()
    if model is not None and not isinstance(model, Layer):
        raise TypeError(
            f"model must be the rnnjax Layer params belong to (or None); got "
            f"{type(model).__name__}. {SUPPORTED}."
        )
    spec = spec_of(model, KerasSpec)
    if spec is not None and spec.class_name == "Sequential" and layer_options:
        raise ValueError(
            f"layer_options apply to a single layer, not a Sequential; got {layer_options}."
        )
    # Keras' initialisers broadcast by rank; let them under jax_numpy_rank_promotion="raise".
    with jax.numpy_rank_promotion("allow"):
        if spec is None and model is not None and not layer_options:
            return keras_for_model(model, params, keras, _layer_for, _set_weights)
        if spec is None:
            layer = _layer_for(params, keras, layer_options)
        elif spec.class_name == "Sequential":
            layer = keras.Sequential.from_config(spec.config)
        else:
            config = {**spec.config, **layer_options}
            layer = getattr(keras.layers, spec.class_name).from_config(config)
        if not layer.built:
            layer.build((None, None, _first_input_size(params)))
        _set_weights(layer, params, keras)
    return layer
