r"""Flax NNX interop: ``nnx.RNN`` over ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` or
``SimpleCell`` (or a bare cell) to an rnnjax layer.

NNX modules hold their own parameters, so no variables are passed. Kernels are in rnnjax's
row-vector layout (``kernel [in, out]``). ``LSTMCell`` keeps one ``Linear`` per gate (``ii``,
``if_``, ``ig``, ``io`` without bias; ``hi``, ... with bias), ``OptimizedLSTMCell`` two fused
ones (``dense_i [D, 4H]`` without bias, ``dense_h [H, 4H]`` with it), both in rnnjax's i, f, g, o
order. ``GRUCell`` fuses r, z, n in ``dense_i`` (with bias) and ``dense_h`` (without: rnnjax's
``b_hn`` is zero) and updates ``h_t = (1 - z) n + z h_{t-1}``; the update gate is negated into
rnnjax's ``h_t = (1 - z) h_{t-1} + z n`` (:math:`\sigma(-a) = 1 - \sigma(a)`).
"""

import jax
import jax.numpy as jnp

from rnnjax._cells import GRUParams, LSTMParams, RNNParams, gru, lstm, simple_rnn
from rnnjax._layers import rnn

_CELLS = ("LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell")
_FUNCTIONS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu}


def _value(variable) -> jax.Array:
    return jnp.asarray(variable[...])


def _check_functions(cell, allowed: dict[str, tuple[str, ...]]) -> None:
    for attribute, names in allowed.items():
        function = getattr(cell, attribute)
        if not any(function is _FUNCTIONS[name] for name in names):
            raise ValueError(
                f"nnx.{type(cell).__name__}.{attribute}="
                f"{getattr(function, '__name__', function)!r} is not supported; rnnjax converts "
                f"{attribute} in {list(names)}."
            )


def _negate_z(w, hidden):
    return jnp.concatenate(
        [w[..., :hidden], -w[..., hidden : 2 * hidden], w[..., 2 * hidden :]], axis=-1
    )


def convert_nnx(module, spec_type):
    """``(model, params, spec)`` for an NNX ``RNN`` or cell (``from_flax`` wraps ``spec``)."""
    from flax import nnx

    reverse, cell = False, module
    if isinstance(module, nnx.RNN):
        for option in ("time_major", "return_carry"):
            if getattr(module, option):
                raise ValueError(
                    f"nnx.RNN({option}=True) is not supported: the rnnjax model takes "
                    "batch-major x and returns the output sequence (rnnjax.rnn(..., "
                    "return_state=True) gives the final state)."
                )
        if module.reverse and not module.keep_order:
            raise ValueError(
                "nnx.RNN(reverse=True, keep_order=False) returns outputs in reversed time order; "
                "rnnjax keeps them aligned with the inputs. Use keep_order=True."
            )
        reverse, cell = bool(module.reverse), module.cell
    kind = type(cell).__name__
    if kind not in _CELLS or not isinstance(cell, nnx.Module):
        raise TypeError(
            f"module must be a flax.nnx RNN or one of {list(_CELLS)} (or a flax.linen one, with "
            f"its variables); got {kind}."
        )
    hidden = int(cell.hidden_features)
    if kind in ("LSTMCell", "OptimizedLSTMCell"):
        _check_functions(cell, {"gate_fn": ("sigmoid",), "activation_fn": ("tanh",)})
        if kind == "LSTMCell":
            gates = ("i", "f", "g", "o")
            inputs = [getattr(cell, "if_" if g == "f" else f"i{g}") for g in gates]
            recurrent = [getattr(cell, f"h{g}") for g in gates]
            w_x = jnp.concatenate([_value(d.kernel) for d in inputs], axis=-1)
            w_h = jnp.concatenate([_value(d.kernel) for d in recurrent], axis=-1)
            b = jnp.concatenate([_value(d.bias) for d in recurrent])
        else:
            w_x, w_h = _value(cell.dense_i.kernel), _value(cell.dense_h.kernel)
            b = _value(cell.dense_h.bias)
        rnnjax_cell, params = lstm(hidden, forget_bias=0.0), LSTMParams(w_x, w_h, b)
    elif kind == "GRUCell":
        _check_functions(cell, {"gate_fn": ("sigmoid",), "activation_fn": ("tanh",)})
        w_x, w_h = _value(cell.dense_i.kernel), _value(cell.dense_h.kernel)
        b = _value(cell.dense_i.bias)
        params = GRUParams(
            _negate_z(w_x, hidden),
            _negate_z(w_h, hidden),
            _negate_z(b, hidden),
            jnp.zeros((hidden,), b.dtype),
        )
        rnnjax_cell = gru(hidden, reset_after=True)
    else:
        _check_functions(cell, {"activation_fn": ("tanh", "relu", "sigmoid")})
        if cell.residual:
            raise ValueError(
                "nnx.SimpleCell(residual=True) adds h_{t-1} before the activation; "
                "rnnjax.simple_rnn has no residual connection."
            )
        activation = next(f for f in _FUNCTIONS.values() if f is cell.activation_fn)
        rnnjax_cell = simple_rnn(hidden, activation)
        params = RNNParams(
            _value(cell.dense_i.kernel), _value(cell.dense_h.kernel), _value(cell.dense_i.bias)
        )
    model = rnn(rnnjax_cell, return_sequences=True, reverse=reverse)
    return model, params, spec_type(f"nnx.{kind}", hidden, reverse)
