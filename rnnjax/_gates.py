"""The gate math of the built-in cells: one source for ``step``, ``scan`` and the fast path.

Each update takes the recurrent matmul as an argument, ``matmul(a, w) -> a @ w``, so the same
equations run with plain ``jnp.matmul`` in a cell's ``step`` and with the fast path's stored
layouts (``rnnjax._fast``) inside its loops; nothing here knows about memory layout. Each returns
``(new_state, residuals)``: the values the fast path's derivative keeps per step.

>>> import jax.numpy as jnp
>>> from rnnjax import _cells, _gates
>>> params = _cells.LSTMParams(jnp.zeros((3, 8)), jnp.zeros((2, 8)), jnp.zeros(8))
>>> state = _cells.LSTMState(jnp.zeros(2), jnp.zeros(2))
>>> new, residuals = _gates.lstm_update(params, state, jnp.zeros(8), _gates.Matmul(None))
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class LSTMState(NamedTuple):
    """State of an LSTM: hidden ``h [..., H]`` and cell ``c [..., H]``."""

    h: jax.Array
    c: jax.Array


class RNNState(NamedTuple):
    """State of a vanilla RNN or GRU: ``h [..., H]``."""

    h: jax.Array


def dot(a: jax.Array, w: jax.Array, dtype) -> jax.Array:
    """``a @ w``; with ``dtype`` set, operands are cast to it and accumulated in their own dtype."""
    if dtype is None:
        return jnp.matmul(a, w)
    accumulate = jnp.promote_types(a.dtype, w.dtype)
    return jnp.matmul(a.astype(dtype), w.astype(dtype), preferred_element_type=accumulate)


class Matmul(NamedTuple):
    """``matmul(a, w) = dot(a, w, dtype)``, hashable and comparable (equal for equal ``dtype``)."""

    dtype: object

    def __call__(self, a: jax.Array, w: jax.Array) -> jax.Array:
        return dot(a, w, self.dtype)


def add_bias(z: jax.Array, b: jax.Array) -> jax.Array:
    """``z + b`` with ``b [N]`` broadcast explicitly over the leading dims of ``z [..., N]``."""
    return z + b.reshape((1,) * (z.ndim - 1) + b.shape)


def split(z: jax.Array, num_gates: int) -> list[jax.Array]:
    return jnp.split(z, num_gates, axis=-1)


def cast_like(new, old):
    """``new`` state with each leaf cast to ``old``'s dtype (the carry keeps the state's dtype)."""
    return type(old)(*(n.astype(o.dtype) for n, o in zip(new, old, strict=True)))


def lstm_gates(z: jax.Array) -> list[jax.Array]:
    """Activated gates ``sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)`` of ``z [..., 4H]``."""
    i, f, g, o = split(z, 4)
    return [jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)]


def lstm_update(params, state, projected, matmul):
    """LSTM update and what its derivative needs: ``(LSTMState, (i, f, g, o, tanh c))``."""
    return lstm_activate(state, projected + matmul(state.h, params.w_h))


def lstm_activate(state, z):
    """The LSTM update from its pre-activations ``z = x W_x + h W_h + b [..., 4H]`` (reads
    ``state.c`` only), with the values its derivative needs."""
    i, f, g, o = lstm_gates(z)
    c = f * state.c + i * g
    tanh_c = jnp.tanh(c)
    return LSTMState(o * tanh_c, c), (i, f, g, o, tanh_c)


def gru_update(params, state, projected, matmul, reset_after: bool):
    """GRU state update and its derivative's values: ``(RNNState, (r, z, candidate, m))`` with
    ``m = h W_hn + b_hn`` (``reset_after``) or ``m = r * h`` (the seed's form)."""
    h, hidden = state.h, state.h.shape[-1]
    if reset_after:
        return gru_reset_after(h, projected, matmul(h, params.w_h), params.b_hn)
    x_rz, x_n = projected[..., : 2 * hidden], projected[..., 2 * hidden :]
    r, z, m = gru_reset(h, x_rz + matmul(h, params.w_h[:, : 2 * hidden]))
    new, candidate = gru_combine(h, z, x_n + matmul(m, params.w_h[:, 2 * hidden :]))
    return new, (r, z, candidate, m)


def gru_reset_after(h, projected, hidden_product, b_hn):
    """Reset-after GRU from its two products ``projected = x W_x + b`` and ``hidden_product =
    h W_h`` (both ``[..., 3H]``): ``r, z = sigmoid(x_rz + h_rz)``, ``m = h W_hn + b_hn``,
    ``h' = (1 - z) h + z tanh(x_n + r * m)``. Returns ``(RNNState, (r, z, candidate, m))``."""
    hidden = h.shape[-1]
    x_rz, x_n = projected[..., : 2 * hidden], projected[..., 2 * hidden :]
    h_rz, h_n = jnp.split(hidden_product, [2 * hidden], axis=-1)
    r, z = split(jax.nn.sigmoid(x_rz + h_rz), 2)
    m = add_bias(h_n, b_hn)
    new, candidate = gru_combine(h, z, x_n + r * m)
    return new, (r, z, candidate, m)


def gru_reset(h, pre_rz):
    """Seed-form GRU gates from ``pre_rz = x W_rz + h U_rz + b_rz [..., 2H]``: ``(r, z, r * h)``."""
    r, z = split(jax.nn.sigmoid(pre_rz), 2)
    return r, z, r * h


def gru_combine(h, z, pre_n):
    """``h' = (1 - z) h + z tanh(pre_n)`` and the candidate ``tanh(pre_n)``."""
    candidate = jnp.tanh(pre_n)
    return RNNState((1.0 - z) * h + z * candidate), candidate


def rnn_update(params, state, projected, matmul, activation):
    """Vanilla RNN update and its pre-activation: ``(RNNState, (a,))``."""
    a = projected + matmul(state.h, params.w_h)
    return RNNState(activation(a)), (a,)


def lstm_update_with(matmul, params, state, projected):
    """The new state of :func:`lstm_update`, ``matmul`` first (a cell's bound ``update``)."""
    return lstm_update(params, state, projected, matmul)[0]


def gru_update_with(matmul, reset_after: bool, params, state, projected):
    """The new state of :func:`gru_update`, ``matmul`` and ``reset_after`` first."""
    return gru_update(params, state, projected, matmul, reset_after)[0]


def rnn_update_with(matmul, activation, params, state, projected):
    """The new state of :func:`rnn_update`, ``matmul`` and ``activation`` first."""
    return rnn_update(params, state, projected, matmul, activation)[0]
