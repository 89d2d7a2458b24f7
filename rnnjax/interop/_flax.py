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
from rnnjax.interop._flax_nnx import convert_nnx

_CELLS = ("LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell")


class FlaxSpec(NamedTuple):
    """The converted Flax cell's class name (``"nnx.GRUCell"`` for NNX) and the ``RNN`` options
    that carried over."""

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


def from_flax(module, variables=None) -> tuple[ConvertedLayer, Any]:
    """Convert a Flax linen ``nn.RNN`` (or a bare cell) and its variables, or a Flax NNX
    ``nnx.RNN`` (or a bare NNX cell), which holds its own parameters.

    Supported cells, linen and NNX alike: ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``
    (sigmoid gates, tanh activation) and ``SimpleCell`` (tanh, relu or sigmoid,
    ``residual=False``). ``RNN``'s ``reverse`` carries over when ``keep_order=True`` (rnnjax keeps
    outputs aligned with inputs). NNX's ``GRUCell`` has no recurrent candidate bias: ``b_hn`` is 0.

    Args:
      module: a linen or NNX ``RNN``, or one of the cells above (a cell is run over time like
        ``RNN(cell)``).
      variables: for a linen module, what ``module.init`` returned, or its ``'params'`` entry;
        ``None`` for an NNX module.

    Returns:
      ``(model, params)``: ``model = rnnjax.rnn(cell, return_sequences=True)``, so
      ``model.apply(params, x [B, T, D], lengths)`` equals ``module.apply(variables, x,
      seq_lengths=lengths)`` on the valid steps (rnnjax writes zeros past each length, Flax
      leaves other values there); ``model.spec`` is a :class:`FlaxSpec`.

    Raises:
      TypeError: an unsupported module, variables that are not a dict (linen), or variables
        given with an NNX module.
      ValueError: an unsupported option (activation, ``residual``, ``time_major``,
        ``return_carry``, ``reverse`` without ``keep_order``) or missing parameters.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> from flax import linen as nn
    >>> x = jnp.ones((4, 10, 3))
    >>> flax_rnn = nn.RNN(nn.GRUCell(8))
    >>> variables = flax_rnn.init(jax.random.key(0), x)
    >>> model, params = rnnjax.interop.from_flax(flax_rnn, variables)
    >>> ys = model.apply(params, x)                      # == flax_rnn.apply(variables, x)
    """
    from flax import linen, nnx

    if isinstance(module, nnx.Module):
        if variables is not None:
            raise TypeError(
                f"variables must be None for a flax.nnx module ({type(module).__name__} holds its "
                f"own parameters); got {type(variables).__name__}."
            )
        model, params, spec = convert_nnx(module, FlaxSpec)
        return with_spec(model, spec), params
    if not isinstance(module, linen.Module):
        raise TypeError(
            f"module must be a flax.linen or flax.nnx RNN, or one of their cells {list(_CELLS)}; "
            f"got {type(module).__name__}."
        )
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


def _split_gru(w, hidden):
    """``w [..., 3H]`` in rnnjax's (r, z, n) order, with z negated into Flax's convention."""
    return w[..., :hidden], -w[..., hidden : 2 * hidden], w[..., 2 * hidden :]


def to_flax(model, params, *, activation: str | None = None, reverse: bool | None = None):
    """Build the Flax linen ``nn.RNN`` (and its variables) that computes what ``params`` compute.

    ``LSTMParams`` give ``nn.LSTMCell``, ``GRUParams`` of ``gru(reset_after=True)`` give
    ``nn.GRUCell`` (the update gate negated into Flax's convention), ``RNNParams`` give
    ``nn.SimpleCell``. ``module.apply(variables, x [B, T, D])`` returns the output sequence that
    ``rnnjax.rnn(cell, return_sequences=True).apply(params, x)`` returns; ``from_flax`` converts
    it back exactly.

    Args:
      model: the rnnjax model (``from_flax``'s, whose spec gives ``reverse``; or any
        ``rnnjax.rnn`` layer; or ``None``).
      params: one cell's params.
      activation: ``"tanh"`` (default), ``"relu"`` or ``"sigmoid"`` for ``RNNParams`` (a cell's
        activation cannot be read from its params).
      reverse: ``nn.RNN(reverse=True, keep_order=True)``; default from ``model.spec``, else False.

    Returns:
      ``(module, variables)`` with ``variables = {"params": {"cell": ...}}``.

    Raises:
      TypeError: params that are not one cell's (a ``stack``, ``serial``, ``dense`` or
        bidirectional model has no single ``nn.RNN``).
      ValueError: ``GRUParams`` without ``b_hn`` (Flax's GRU applies the reset gate after the
        recurrent matmul only), or an unknown ``activation``.

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> model = rnnjax.rnn(rnnjax.lstm(8), return_sequences=True)
    >>> params = model.init(jax.random.key(0), (10, 3))
    >>> module, variables = rnnjax.interop.to_flax(model, params)
    >>> ys = module.apply(variables, jnp.ones((2, 10, 3)))        # == model.apply(params, x)
    >>> ys.shape
    (2, 10, 8)
    """
    from flax import linen

    if not isinstance(params, LSTMParams | GRUParams | RNNParams):
        raise TypeError(
            "params must be one cell's params (LSTMParams, GRUParams, RNNParams) of an "
            f"rnnjax.rnn layer; got {type(params).__name__}. to_flax converts single-cell "
            "layers to nn.RNN; convert each cell of a stack or serial on its own."
        )
    spec = getattr(model, "spec", None)
    if reverse is None:
        reverse = bool(spec.reverse) if isinstance(spec, FlaxSpec) else False
    hidden = int(params.w_h.shape[0])
    dtype = params.w_x.dtype
    w_x, w_h, b = (jnp.asarray(a) for a in params[:3])
    if isinstance(params, LSTMParams):
        cell = linen.LSTMCell(hidden, param_dtype=dtype)
        blocks = {}
        for k, gate in enumerate("ifgo"):
            part = slice(k * hidden, (k + 1) * hidden)
            blocks[f"i{gate}"] = {"kernel": w_x[:, part]}
            blocks[f"h{gate}"] = {"kernel": w_h[:, part], "bias": b[part]}
    elif isinstance(params, GRUParams):
        if params.b_hn is None:
            raise ValueError(
                "params are GRUParams with b_hn=None (reset_after=False): flax's GRUCell applies "
                "the reset gate after the recurrent matmul (rnnjax.gru(reset_after=True)) only."
            )
        cell = linen.GRUCell(hidden, param_dtype=dtype)
        (x_r, x_z, x_n), (h_r, h_z, h_n), (b_r, b_z, b_n) = (
            _split_gru(w, hidden) for w in (w_x, w_h, b)
        )
        blocks = {
            "ir": {"kernel": x_r, "bias": b_r},
            "iz": {"kernel": x_z, "bias": b_z},
            "in": {"kernel": x_n, "bias": b_n},
            "hr": {"kernel": h_r},
            "hz": {"kernel": h_z},
            "hn": {"kernel": h_n, "bias": jnp.asarray(params.b_hn)},
        }
    else:
        functions = {"tanh": linen.tanh, "relu": linen.relu, "sigmoid": linen.sigmoid}
        activation = "tanh" if activation is None else activation
        if activation not in functions:
            raise ValueError(f"activation must be one of {sorted(functions)}; got {activation!r}.")
        cell = linen.SimpleCell(hidden, activation_fn=functions[activation], param_dtype=dtype)
        blocks = {"i": {"kernel": w_x, "bias": b}, "h": {"kernel": w_h}}
    module = linen.RNN(cell, reverse=reverse, keep_order=True)
    return module, {"params": {"cell": blocks}}
