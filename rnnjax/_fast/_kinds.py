"""The fast path's table of cell kinds: for each, its update, its tangent and its weight terms.

A built-in cell's :class:`rnnjax._cells.Kernels` record names its kind; this table says how the
fused derivative (``rnnjax._fast._fused``) runs it. The update is the gate math of
``rnnjax._gates`` given the loop's matmul (so the values are the cell's own); the tangent is the
derivative of one step written linear in the tangents (so partial evaluation saves nothing beyond
the update's residuals); ``inputs`` gives every step's tangent entering other than through the
state, all steps at once. A kind with a hidden-partitioned loop also has a row in
``rnnjax._fast._partitioned.STEPS``, and its thresholds in ``rnnjax._fast._plan.THRESHOLDS``.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from rnnjax import _gates
from rnnjax._gates import LSTMState, RNNState


def is_zero(tangent) -> bool:
    return tangent is None or isinstance(tangent, SymbolicZero)


def _sum(*terms):
    """Sum of the terms that are not ``None`` (absent tangents)."""
    present = [t for t in terms if t is not None]
    total = present[0]
    for term in present[1:]:
        total = total + term
    return total


def _sigmoid_tangent(tangent, s):
    """``tangent * s * (1 - s)``, written linear in ``tangent`` (nothing new to save)."""
    scaled = tangent * s
    return scaled - scaled * s


def _tanh_tangent(tangent, t):
    scaled = tangent * t
    return tangent - scaled * t


def _transposed(a: jax.Array) -> jax.Array:
    """``a [..., K]`` as a ``[K, N]`` matrix stored transposed (``N`` = all leading dims).

    The weight gradients are sums over every step and example, ``a^T ct``. Written as that,
    XLA folds the transpose into the dot and XLA:CPU runs the "contract dim 0 of both" form on
    its slow generic path (plus a transposed copy of the ``[N, G*H]`` cotangent); the barrier
    keeps ``a`` physically transposed, so the gradient is a plain ``[K, N] x [N, G*H]`` GEMM.
    """
    return lax.optimization_barrier(a.reshape(-1, a.shape[-1]).T)


def _gemm(pairs, leading: tuple, dtype):
    """``sum_k a_k @ d_w_k`` over the pairs whose ``d_w_k`` is not zero, or ``None``.

    One matmul of the features ``[a_1 .. a_n]`` (concatenated, stored transposed) with the
    stacked ``d_w_k``: transposed, it yields all those weight gradients in one GEMM (``dW_x`` and
    ``dW_h`` together; alone, ``dW_x``'s ``[D, T*B]`` GEMM is too thin to run fast).
    """
    pairs = [(a, d_w) for a, d_w in pairs if not is_zero(d_w)]
    if not pairs:
        return None
    a_t = _transposed(jnp.concatenate([a for a, _ in pairs], axis=-1))
    d_w = jnp.concatenate([d_w for _, d_w in pairs], axis=0)
    return _gates.dot(a_t.T, d_w, dtype).reshape(*leading, d_w.shape[-1])


def _columns(d_w, start: int, stop: int | None = None):
    return d_w if is_zero(d_w) else d_w[:, start:stop]


def _blocks(blocks, leading: tuple, widths):
    """Concatenate column blocks (``None``: zero), or ``None`` if every block is."""
    if all(block is None for block in blocks):
        return None
    dtype = next(b for b in blocks if b is not None).dtype
    return jnp.concatenate(
        [
            jnp.zeros((*leading, width), dtype) if block is None else block
            for block, width in zip(blocks, widths, strict=True)
        ],
        axis=-1,
    )


def _finish_inputs(params, d_params, d_xs, d_in, leading, dtype):
    """Add ``dx W_x`` and ``db`` to the weight terms ``d_in``."""
    if not is_zero(d_xs):
        d_in = _sum(d_in, _gates.dot(d_xs, params.w_x, dtype))
    if not is_zero(d_params.b):
        if d_in is None:
            d_in = jnp.zeros(leading + d_params.b.shape, d_params.b.dtype)
        d_in = _gates.add_bias(d_in, d_params.b)
    return d_in


def _dense_inputs(params, d_params, xs, d_xs, previous, residuals, options):
    """``d_in = dx W_x + x dW_x + h_{t-1} dW_h + db`` for every step (LSTM, vanilla RNN)."""
    leading, dtype = xs.shape[:-1], options["dtype"]
    d_in = _gemm([(xs, d_params.w_x), (previous.h, d_params.w_h)], leading, dtype)
    return _finish_inputs(params, d_params, d_xs, d_in, leading, dtype), None


def _gru_inputs(params, d_params, xs, d_xs, previous, residuals, options):
    """GRU: the gates' ``x dW_x + h dW_h``; the candidate's ``x dW_xn`` plus ``(r h) dW_hn``
    (seed form) or, apart as ``d_hn = h dW_hn + db_hn`` (reset after: the cell scales it by r)."""
    leading, dtype, h = xs.shape[:-1], options["dtype"], previous.h
    hidden = h.shape[-1]
    d_w_x, d_w_h, d_hn = d_params.w_x, d_params.w_h, None
    gates = _gemm(
        [(xs, _columns(d_w_x, 0, 2 * hidden)), (h, _columns(d_w_h, 0, 2 * hidden))], leading, dtype
    )
    candidate = [(xs, _columns(d_w_x, 2 * hidden))]
    if options["reset_after"]:
        d_hn = _gemm([(h, _columns(d_w_h, 2 * hidden))], leading, dtype)
        if not is_zero(d_params.b_hn):
            if d_hn is None:
                d_hn = jnp.zeros(leading + d_params.b_hn.shape, d_params.b_hn.dtype)
            d_hn = _gates.add_bias(d_hn, d_params.b_hn)
    else:  # the candidate reads (r * h_{t-1}) W_hn
        candidate.append((residuals[3], _columns(d_w_h, 2 * hidden)))
    d_in = _blocks([gates, _gemm(candidate, leading, dtype)], leading, (2 * hidden, hidden))
    return _finish_inputs(params, d_params, d_xs, d_in, leading, dtype), d_hn


def _lstm_tangent(params, d_state, d_in, d_hn, previous, residuals, options, matmul):
    i, f, g, o, tanh_c = residuals
    dz = _sum(matmul(d_state.h, params.w_h), d_in)
    di, df, dg, do = _gates.split(dz, 4)
    di, df, do = _sigmoid_tangent(di, i), _sigmoid_tangent(df, f), _sigmoid_tangent(do, o)
    dg = _tanh_tangent(dg, g)
    dc = df * previous.c + f * d_state.c + di * g + i * dg
    return LSTMState(do * tanh_c + _tanh_tangent(o * dc, tanh_c), dc)


def _gru_tangent(params, d_state, d_in, d_hn, previous, residuals, options, matmul):
    r, z, candidate, m = residuals
    h, dh = previous.h, d_state.h
    hidden = h.shape[-1]
    # jnp.split (not slices): transposed, it is one concatenate rather than pads and adds.
    d_in_rz, d_in_n = (None, None) if d_in is None else jnp.split(d_in, [2 * hidden], axis=-1)
    if options["reset_after"]:
        d_hidden_rz, d_hidden_n = jnp.split(matmul(dh, params.w_h), [2 * hidden], axis=-1)
        dr, dz = _gates.split(_sum(d_hidden_rz, d_in_rz), 2)
        dr, dz = _sigmoid_tangent(dr, r), _sigmoid_tangent(dz, z)
        dm = _sum(d_hidden_n, d_hn)  # d_hn carries d b_hn too
        d_pre = _sum(d_in_n, dr * m, r * dm)
    else:
        w_rz, w_n = params.w_h[:, : 2 * hidden], params.w_h[:, 2 * hidden :]
        dr, dz = _gates.split(_sum(matmul(dh, w_rz), d_in_rz), 2)
        dr, dz = _sigmoid_tangent(dr, r), _sigmoid_tangent(dz, z)
        d_pre = _sum(d_in_n, matmul(dr * h + r * dh, w_n))
    d_candidate = _tanh_tangent(d_pre, candidate)
    return RNNState(dh - z * dh + dz * candidate - dz * h + z * d_candidate)


def _rnn_tangent(params, d_state, d_in, d_hn, previous, residuals, options, matmul):
    (a,) = residuals
    da = _sum(matmul(d_state.h, params.w_h), d_in)
    return RNNState(jax.jvp(options["activation"], (a,), (da,))[1])


def _lstm_update(params, state, projected, matmul, options):
    return _gates.lstm_update(params, state, projected, matmul)


def _gru_update(params, state, projected, matmul, options):
    return _gates.gru_update(params, state, projected, matmul, options["reset_after"])


def _rnn_update(params, state, projected, matmul, options):
    return _gates.rnn_update(params, state, projected, matmul, options["activation"])


class Kind(NamedTuple):
    """How the fused derivative runs one kind of cell.

    Attributes:
      update: ``(params, state, projected, matmul, options) -> (state, residuals)``.
      tangent: ``(params, d_state, d_in, d_hn, previous, residuals, options, matmul) ->
        d_state``, linear in ``d_state``, ``d_in`` and ``d_hn``.
      inputs: ``(params, d_params, xs, d_xs, previous, residuals, options) -> (d_in, d_hn)``:
        the tangents entering every step other than through the state (``None`` where zero).
    """

    update: Callable
    tangent: Callable
    inputs: Callable


KINDS = {
    "lstm": Kind(_lstm_update, _lstm_tangent, _dense_inputs),
    "gru": Kind(_gru_update, _gru_tangent, _gru_inputs),
    "gru_reset_after": Kind(_gru_update, _gru_tangent, _gru_inputs),
    "simple_rnn": Kind(_rnn_update, _rnn_tangent, _dense_inputs),
}
"""The one table of kinds on the fast path."""
