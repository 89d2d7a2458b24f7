r"""Flax linen interop: ``nn.RNN`` over ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` or
``SimpleCell`` to rnnjax layers.

Flax keeps one ``Dense`` per gate (``ii``, ``if``, ... for the input, ``hi``, ... for the hidden
state), each ``kernel [in, H]`` in rnnjax's row-vector layout; the converter concatenates them in
rnnjax's gate order. LSTM biases live on the hidden-side denses, GRU biases on the input side
plus ``hn`` (the candidate's recurrent bias, rnnjax's ``b_hn``). Flax's GRU updates
``h_t = (1 - z) n + z h_{t-1}``, rnnjax's ``h_t = (1 - z) h_{t-1} + z n``: the update gate's
kernels and bias are negated (:math:`\sigma(-a) = 1 - \sigma(a)`).
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._cells import GRUParams, LSTMParams, RNNParams, gru, lstm, simple_rnn
from rnnjax._layers import rnn
from rnnjax.interop._common import ConvertedLayer, with_spec

_CELLS = ("LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell")


class FlaxSpec(NamedTuple):
    """The converted Flax cell's class name and the ``nn.RNN`` options that carried over."""

    cell: str
    hidden_size: int
    reverse: bool


def _variables(variables: Mapping, where: str) -> Mapping:
    params = variables.get("params", variables) if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping):
        raise TypeError(
            f"variables must be the dict {where}.init returns ({{'params': ...}}) or its "
            f"'params'; got {type(variables).__name__}."
        )
    return params


def _kernel(params: Mapping, name: str, field: str = "kernel") -> jax.Array:
    try:
        return jnp.asarray(params[name][field])
    except KeyError as error:
        raise ValueError(
            f"variables have no params['{name}']['{field}']; expected the parameters of the "
            f"Flax cell (found {sorted(params)})."
        ) from error


def _check_functions(cell, allowed: dict[str, tuple[str, ...]], linen) -> None:
    known = {"sigmoid": linen.sigmoid, "tanh": linen.tanh, "relu": linen.relu}
    for attribute, names in allowed.items():
        function = getattr(cell, attribute)
        if not any(function is known[name] for name in names):
            raise ValueError(
                f"{type(cell).__name__}.{attribute}={getattr(function, '__name__', function)!r} "
                f"is not supported; rnnjax converts {attribute} in {list(names)}."
            )


def _convert_cell(cell, params: Mapping, linen):
    kind = type(cell).__name__
    hidden = int(cell.features)
    if kind in ("LSTMCell", "OptimizedLSTMCell"):
        _check_functions(cell, {"gate_fn": ("sigmoid",), "activation_fn": ("tanh",)}, linen)
        gates = "ifgo"
        w_x = jnp.concatenate([_kernel(params, f"i{g}") for g in gates], axis=-1)
        w_h = jnp.concatenate([_kernel(params, f"h{g}") for g in gates], axis=-1)
        b = jnp.concatenate([_kernel(params, f"h{g}", "bias") for g in gates])
        return lstm(hidden, forget_bias=0.0), LSTMParams(w_x, w_h, b)
    if kind == "GRUCell":
        _check_functions(cell, {"gate_fn": ("sigmoid",), "activation_fn": ("tanh",)}, linen)
        w_x = jnp.concatenate(
            [_kernel(params, "ir"), -_kernel(params, "iz"), _kernel(params, "in")], axis=-1
        )
        w_h = jnp.concatenate(
            [_kernel(params, "hr"), -_kernel(params, "hz"), _kernel(params, "hn")], axis=-1
        )
        b = jnp.concatenate(
            [
                _kernel(params, "ir", "bias"),
                -_kernel(params, "iz", "bias"),
                _kernel(params, "in", "bias"),
            ]
        )
        return gru(hidden, reset_after=True), GRUParams(w_x, w_h, b, _kernel(params, "hn", "bias"))
    _check_functions(cell, {"activation_fn": ("tanh", "relu", "sigmoid")}, linen)
    if cell.residual:
        raise ValueError(
            "SimpleCell.residual=True adds h_{t-1} before the activation; rnnjax.simple_rnn has "
            "no residual connection."
        )
    activation = {linen.tanh: jnp.tanh, linen.relu: jax.nn.relu, linen.sigmoid: jax.nn.sigmoid}
    cell_ = simple_rnn(hidden, activation[cell.activation_fn])
    return cell_, RNNParams(
        _kernel(params, "i"), _kernel(params, "h"), _kernel(params, "i", "bias")
    )


def from_flax(module, variables) -> tuple[ConvertedLayer, Any]:
    """Convert a Flax linen ``nn.RNN`` (or a bare cell) and its variables.

    Supported cells: ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` (sigmoid gates, tanh
    activation) and ``SimpleCell`` (tanh, relu or sigmoid, ``residual=False``). ``nn.RNN``'s
    ``reverse`` carries over when ``keep_order=True`` (rnnjax keeps outputs aligned with inputs).

    Args:
      module: an ``nn.RNN`` or one of the cells above (a cell is run over time like
        ``nn.RNN(cell)``).
      variables: what ``module.init`` returned, or its ``'params'`` entry.

    Returns:
      ``(model, params)``: ``model = rnnjax.rnn(cell, return_sequences=True)``, so
      ``model.apply(params, x [B, T, D], lengths)`` equals ``module.apply(variables, x,
      seq_lengths=lengths)`` on the valid steps (rnnjax writes zeros past each length, Flax
      leaves other values there); ``model.spec`` is a :class:`FlaxSpec`.

    Raises:
      TypeError: an unsupported module, or variables that are not a dict.
      ValueError: an unsupported option (activation, ``residual``, ``time_major``,
        ``return_carry``, ``reverse`` without ``keep_order``) or missing parameters.

    >>> flax_rnn = nn.RNN(nn.GRUCell(8))
    >>> variables = flax_rnn.init(jax.random.key(0), x)
    >>> model, params = rnnjax.interop.from_flax(flax_rnn, variables)
    >>> ys = model.apply(params, x)                      # == flax_rnn.apply(variables, x)
    """
    from flax import linen

    params = _variables(variables, type(module).__name__)
    reverse = False
    if isinstance(module, linen.RNN):
        for option in ("time_major", "return_carry"):
            if getattr(module, option):
                raise ValueError(
                    f"nn.RNN({option}=True) is not supported: the rnnjax model takes batch-major "
                    "x and returns the output sequence (rnnjax.rnn(..., return_state=True) gives "
                    "the final state)."
                )
        if module.reverse and not module.keep_order:
            raise ValueError(
                "nn.RNN(reverse=True, keep_order=False) returns outputs in reversed time order; "
                "rnnjax keeps them aligned with the inputs. Use keep_order=True."
            )
        reverse, cell = bool(module.reverse), module.cell
        params = params.get("cell", params)
    else:
        cell = module
    if type(cell).__name__ not in _CELLS or not isinstance(cell, linen.Module):
        raise TypeError(
            f"module must be a flax.linen RNN or one of {list(_CELLS)}; got {type(cell).__name__}."
        )
    cell_, cell_params = _convert_cell(cell, params, linen)
    model = rnn(cell_, return_sequences=True, reverse=reverse)
    return with_spec(model, FlaxSpec(type(cell).__name__, int(cell.features), reverse)), cell_params
