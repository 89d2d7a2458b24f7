"""Float64 NumPy transcriptions of the seed's equations, in the seed's own notation.

The seed writes column vectors and one matrix per gate: ``a_t = W_hh h_{t-1} + W_xh x_t + b_h``,
``f_t = sigma(W_f x_t + U_f h_{t-1} + b_f)``, ... These references take per-gate matrices
``W [H, D]``, ``U [H, H]`` and vectors ``b [H]``; :func:`split_lstm` and friends read them out of
rnnjax's fused row-vector params using the documented gate orders, so a wrong gate order or a
transposed kernel in the library shows up as a mismatch here.
"""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _blocks(params, names):
    """Per-gate ``(W [H, D], U [H, H], b [H])`` from fused ``w_x [D, G*H]``, ``w_h``, ``b``."""
    w_x, w_h, b = (np.asarray(a, np.float64) for a in (params.w_x, params.w_h, params.b))
    hidden = w_h.shape[0]
    out = {}
    for k, name in enumerate(names):
        cols = slice(k * hidden, (k + 1) * hidden)
        out[name] = (w_x[:, cols].T, w_h[:, cols].T, b[cols])
    return out


def rnn_step(params, h, x, activation=np.tanh):
    """Seed section 1: ``h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h)``."""
    (w_xh, w_hh, b_h) = _blocks(params, ["a"])["a"]
    return activation(w_hh @ h + w_xh @ x + b_h)


def lstm_step(params, h, c, x):
    """Seed section 2, gates read in rnnjax's documented order (i, f, g, o)."""
    g = _blocks(params, ["i", "f", "c", "o"])
    f = sigmoid(g["f"][0] @ x + g["f"][1] @ h + g["f"][2])
    i = sigmoid(g["i"][0] @ x + g["i"][1] @ h + g["i"][2])
    c_tilde = np.tanh(g["c"][0] @ x + g["c"][1] @ h + g["c"][2])
    c_new = f * c + i * c_tilde
    o = sigmoid(g["o"][0] @ x + g["o"][1] @ h + g["o"][2])
    return o * np.tanh(c_new), c_new


def gru_step(params, h, x, reset_after=False):
    """Seed section 3 (``reset_after=False``), or the cuDNN form ``r * (U_h h + b_hn)``."""
    g = _blocks(params, ["r", "z", "h"])
    z = sigmoid(g["z"][0] @ x + g["z"][1] @ h + g["z"][2])
    r = sigmoid(g["r"][0] @ x + g["r"][1] @ h + g["r"][2])
    w_h, u_h, b_h = g["h"]
    if reset_after:
        b_hn = np.asarray(params.b_hn, np.float64)
        h_tilde = np.tanh(w_h @ x + r * (u_h @ h + b_hn) + b_h)
    else:
        h_tilde = np.tanh(w_h @ x + u_h @ (r * h) + b_h)
    return (1.0 - z) * h + z * h_tilde


def run(step, state, xs):
    """Apply ``step(state, x) -> state`` over ``xs [T, D]``; returns the list of states."""
    states = []
    for x in np.asarray(xs, np.float64):
        state = step(state, x)
        states.append(state)
    return states
