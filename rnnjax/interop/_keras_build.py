"""Build a Keras ``Sequential`` for an rnnjax model that did not come from Keras.

Params say the layer types and sizes (cell params, ``BidirectionalParams``, ``DenseParams``; a
tuple is a ``serial`` or a ``stack``, flattened into one layer list), but not the options a
layer closes over: a dense or ``simple_rnn`` activation, a bidirectional merge other than concat,
``return_sequences``. These are read off the model itself: ``return_sequences`` from the rank of
``model.apply``'s output (every recurrent layer returns sequences but the last, which does when the
model's output is a sequence), a concat merge from the next layer's input size, and activations
and other merges by running candidate Keras layers on one random probe batch, layer by layer
(depth first, each candidate once per prefix), keeping the chain that gives what ``model.apply``
gives.
"""

import itertools

import jax
import numpy as np

from rnnjax._cells import GRUParams, LSTMParams, RNNParams
from rnnjax._layers import BidirectionalParams, DenseParams

_DENSE_ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "softmax")
_RNN_ACTIVATIONS = ("tanh", "relu", "sigmoid")
_CELL_PARAMS = (RNNParams, LSTMParams, GRUParams)
_FAST = {"kernel_initializer": "zeros"}  # the weights are overwritten; skip Keras' orthogonal QR
_PROBE_SHAPE = (3, 5)  # batch, time
SUPPORTED = (
    "to_keras converts rnnjax.rnn, rnnjax.bidirectional, rnnjax.stack and rnnjax.dense layers "
    "and rnnjax.serial models of them (params: cell params, BidirectionalParams, DenseParams "
    "or tuples of them)"
)


def _is_plain_tuple(value) -> bool:
    return isinstance(value, tuple | list) and not hasattr(value, "_fields")


def flatten_units(params, where: str = "params") -> list:
    """The layer params of a ``serial``/``stack`` in order, nested tuples flattened."""
    if _is_plain_tuple(params):
        if not params:
            raise TypeError(f"{where} is an empty {type(params).__name__}. {SUPPORTED}.")
        return [u for i, p in enumerate(params) for u in flatten_units(p, f"{where}[{i}]")]
    cells = tuple(params) if isinstance(params, BidirectionalParams) else (params,)
    if not (isinstance(params, DenseParams) or all(isinstance(c, _CELL_PARAMS) for c in cells)):
        raise TypeError(
            f"{where} must be rnnjax cell params (RNNParams, LSTMParams, GRUParams), "
            f"BidirectionalParams of them or DenseParams; got {type(params).__name__}. "
            f"{SUPPORTED}."
        )
    return [params]


def _input_size(unit) -> int:
    if isinstance(unit, DenseParams):
        return int(unit.w.shape[0])
    unit = unit.forward if isinstance(unit, BidirectionalParams) else unit
    return int(unit.w_x.shape[0])


def _choices(units, index: int, sequence_output: bool, output_width: int) -> list[dict]:
    """Candidate option sets for ``units[index]``: ``{"kind", "activation", "merge",
    "return_sequences"}``, those the shapes allow."""
    unit = units[index]
    if isinstance(unit, DenseParams):
        return [{"kind": "dense", "activation": a} for a in _DENSE_ACTIVATIONS]
    later_recurrent = any(not isinstance(u, DenseParams) for u in units[index + 1 :])
    base = {"kind": "recurrent", "return_sequences": sequence_output or later_recurrent}
    cell = unit.forward if isinstance(unit, BidirectionalParams) else unit
    activations = _RNN_ACTIVATIONS if isinstance(cell, RNNParams) else ("tanh",)
    merges = [None]
    if isinstance(unit, BidirectionalParams):
        widths = [int(p.w_h.shape[0]) for p in unit]
        following = _input_size(units[index + 1]) if index + 1 < len(units) else output_width
        merges = ["concat"] if following == sum(widths) else []
        if following == widths[0] == widths[1]:
            merges += ["sum", "ave", "mul"]
    return [
        {**base, "activation": a, "merge": m} for a, m in itertools.product(activations, merges)
    ]


def _keras_layer(unit, options: dict, keras, layer_for):
    if options["kind"] == "dense":
        return layer_for(unit, keras, {"activation": options["activation"], **_FAST})
    cell = unit.forward if isinstance(unit, BidirectionalParams) else unit
    inner = {"return_sequences": options["return_sequences"], "recurrent_initializer": "zeros"}
    if isinstance(cell, RNNParams):
        inner["activation"] = options["activation"]
    if isinstance(unit, BidirectionalParams):
        forward = layer_for(unit.forward, keras, {**inner, **_FAST})
        return keras.layers.Bidirectional(forward, merge_mode=options["merge"])
    return layer_for(unit, keras, {**inner, **_FAST})


def keras_for_model(model, params, keras, layer_for, set_weights):
    """The built Keras layer (one unit) or ``Sequential`` that computes ``model.apply(params, x)``.

    ``layer_for(params, keras, options)`` builds one fresh Keras layer, ``set_weights(layer,
    params, keras)`` loads rnnjax params into it (both from ``rnnjax.interop._keras``).

    Raises:
      TypeError: params of a layer Keras has no counterpart for.
      ValueError: a model whose output is a pair (``return_state``, ``merge=None``), or one no
        candidate reproduces (``reverse=True``, a custom activation, ...).
    """
    units = flatten_units(params)
    first = units[0].forward if isinstance(units[0], BidirectionalParams) else units[0]
    dtype = np.asarray(first.w if isinstance(first, DenseParams) else first.w_x).dtype
    probe = np.random.default_rng(0).normal(size=(*_PROBE_SHAPE, _input_size(units[0])))
    probe = probe.astype(dtype)
    expected = jax.jit(model.apply)(params, probe)
    if not hasattr(expected, "ndim"):
        raise ValueError(
            f"model.apply must return one array to convert to Keras; got a "
            f"{type(expected).__name__} (return_state=True or bidirectional(merge=None)). "
            f"Convert the model built without them: they change outputs, not params."
        )
    expected = np.asarray(expected, np.float64)
    sequence_output = expected.ndim == 3
    choices = [_choices(units, i, sequence_output, expected.shape[-1]) for i in range(len(units))]
    tolerance = 1e-4 if dtype == np.float32 else 1e-2

    def search(index, inputs):
        """Built Keras layers for ``units[index:]`` that map ``inputs`` to ``expected``, or
        ``None``: a depth-first search that runs each candidate layer once per prefix."""
        if index == len(units):
            outputs = np.asarray(inputs, np.float64)
            same_shape = outputs.shape == expected.shape
            match = same_shape and np.allclose(outputs, expected, rtol=tolerance, atol=tolerance)
            return [] if match else None
        for options in choices[index]:
            layer = _keras_layer(units[index], options, keras, layer_for)
            layer.build(tuple(inputs.shape))
            set_weights(layer, units[index], keras)
            rest = search(index + 1, layer(inputs))
            if rest is not None:
                return [layer, *rest]
        return None

    layers = search(0, probe)
    if layers is not None:
        if not _is_plain_tuple(params):
            return layers[0]
        return keras.Sequential([keras.Input((None, probe.shape[-1]), dtype=str(dtype)), *layers])
    raise ValueError(
        f"no Keras model of these layers ({', '.join(type(u).__name__ for u in units)}) "
        f"computes what model.apply computes on a probe batch, over every activation "
        f"({_DENSE_ACTIVATIONS} for dense, {_RNN_ACTIVATIONS} for simple_rnn) and merge mode. "
        f"Options with no Keras counterpart (reverse=True, custom activations, masking by "
        f"lengths inside the model) cannot be converted; build the Keras layer with "
        f"to_keras(None, layer_params, **keras_options) for each layer instead."
    )
