r"""The seed's Java layout (``EnterpriseSequenceInferenceEngine``) to and from rnnjax params.

The Java engine stores column-vector weights, one row per hidden unit:

- ``forwardVanillaRNNParallel(inputBatch, wX [H][D], wH [H][H], bias [H])`` computes
  ``h_t[h] = tanh(sum_x x_t[x] wX[h][x] + sum_r h_{t-1}[r] wH[h][r] + bias[h])``;
- ``forwardLSTMParallel(inputBatch, wGate [4][H][D+H], bGate [4][H])`` applies every gate to the
  concatenation ``[x_t, h_{t-1}]``, gate index 0 forget, 1 input, 2 candidate, 3 output.

Both start from zero state and return the final ``h`` of each sequence, which is
``rnnjax.rnn(cell).apply(params, x)`` with the params converted here (LSTM: ``forget_bias=0``
plays no role, the bias comes from ``bGate``).
"""

import jax.numpy as jnp
import numpy as np

from rnnjax._cells import LSTM_GATES, LSTMParams, RNNParams
from rnnjax.interop._common import to_numpy

SEED_LSTM_GATES = ("f", "i", "g", "o")
"""Gate order of the seed's ``wGate`` / ``bGate`` first axis: forget, input, candidate, output."""


def _array(value, name: str, rank: int, layout: str) -> np.ndarray:
    try:
        array = np.asarray(to_numpy(value) if hasattr(value, "shape") else value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        # Ragged nested lists and strings fail inside NumPy; say which argument and why.
        raise ValueError(
            f"{name} must be a rectangular nested list or array of numbers of shape {layout}; "
            f"got {type(value).__name__} that NumPy cannot read as float64 ({error})."
        ) from None
    if array.ndim != rank or 0 in array.shape:
        raise ValueError(
            f"{name} must be a non-empty nested list or array of shape {layout}; "
            f"got shape {array.shape}."
        )
    return array


def from_seed_rnn(w_x, w_h, bias) -> RNNParams:
    """``RNNParams`` from the seed's vanilla RNN weights ``wX [H][D]``, ``wH [H][H]``, ``bias [H]``.

    Args:
      w_x: input weights ``[H][D]`` (nested lists or an array), ``wX[h][x]``.
      w_h: recurrent weights ``[H][H]``, ``wH[h][r]`` multiplies ``h_{t-1}[r]``.
      bias: ``[H]``.

    Returns:
      ``RNNParams(w_x [D, H], w_h [H, H], b [H])`` (the transposes; float64 under
      ``jax_enable_x64``, else float32) for ``rnnjax.simple_rnn(H)`` (tanh).

    Raises:
      ValueError: shapes that do not fit together.

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import rnnjax
    >>> rng = np.random.default_rng(0)
    >>> wX, wH, bias = rng.normal(size=(16, 3)), rng.normal(size=(16, 16)) / 4, np.zeros(16)
    >>> x = jnp.ones((2, 5, 3))
    >>> params = rnnjax.interop.from_seed_rnn(wX, wH, bias)
    >>> h_final = rnnjax.rnn(rnnjax.simple_rnn(len(bias))).apply(params, x)
    """
    w_x = _array(w_x, "w_x", 2, "(H, D)")
    hidden = w_x.shape[0]
    w_h = _array(w_h, "w_h", 2, f"(H, H) = ({hidden}, {hidden})")
    bias = _array(bias, "bias", 1, f"(H,) = ({hidden},)")
    if w_h.shape != (hidden, hidden) or bias.shape != (hidden,):
        raise ValueError(
            f"w_h must have shape ({hidden}, {hidden}) and bias ({hidden},) to match w_x "
            f"{w_x.shape} (H, D); got {w_h.shape} and {bias.shape}."
        )
    return RNNParams(jnp.asarray(w_x.T), jnp.asarray(w_h.T), jnp.asarray(bias))


def from_seed_lstm(w_gate, b_gate) -> LSTMParams:
    """``LSTMParams`` from the seed's ``wGate [4][H][D+H]`` and ``bGate [4][H]``.

    Gate ``k`` of the seed (0 forget, 1 input, 2 candidate, 3 output) computes
    ``[x_t, h_{t-1}] . wGate[k][h] + bGate[k][h]``: its first ``D`` columns become that gate's block
    of ``w_x`` and the last ``H`` its block of ``w_h``, reordered to rnnjax's (i, f, g, o).

    Args:
      w_gate: ``[4][H][D+H]`` (nested lists or an array); ``D = len(w_gate[0][0]) - H``.
      b_gate: ``[4][H]``.

    Returns:
      ``LSTMParams(w_x [D, 4H], w_h [H, 4H], b [4H])`` for ``rnnjax.lstm(H)``.

    Raises:
      ValueError: a first axis other than 4, ``D + H <= H``, or a bias of another shape.

    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import rnnjax
    >>> wGate = np.random.default_rng(0).normal(size=(4, 16, 3 + 16)) / 4
    >>> bGate = np.zeros((4, 16))
    >>> x = jnp.ones((2, 5, 3))
    >>> params = rnnjax.interop.from_seed_lstm(wGate, bGate)
    >>> h_final = rnnjax.rnn(rnnjax.lstm(len(bGate[0]))).apply(params, x)
    """
    w_gate = _array(w_gate, "w_gate", 3, "(4, H, D + H)")
    _, hidden, combined = w_gate.shape
    if w_gate.shape[0] != 4 or combined <= hidden:
        raise ValueError(
            f"w_gate must have shape (4, H, D + H) with D >= 1 (gates forget, input, candidate, "
            f"output acting on [x_t, h_t-1]); got {w_gate.shape}."
        )
    b_gate = _array(b_gate, "b_gate", 2, f"(4, H) = (4, {hidden})")
    if b_gate.shape != (4, hidden):
        raise ValueError(
            f"b_gate must have shape (4, {hidden}) to match w_gate {w_gate.shape}; "
            f"got {b_gate.shape}."
        )
    input_size = combined - hidden
    order = [SEED_LSTM_GATES.index(gate) for gate in LSTM_GATES]
    w_x = np.concatenate([w_gate[k, :, :input_size].T for k in order], axis=1)
    w_h = np.concatenate([w_gate[k, :, input_size:].T for k in order], axis=1)
    b = np.concatenate([b_gate[k] for k in order])
    return LSTMParams(jnp.asarray(w_x), jnp.asarray(w_h), jnp.asarray(b))


def to_seed_rnn(params: RNNParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seed's ``(wX [H][D], wH [H][H], bias [H])`` as float64 arrays (inverse of
    :func:`from_seed_rnn`); ``.tolist()`` gives Java-ready nested lists."""
    if not isinstance(params, RNNParams):
        raise TypeError(f"params must be RNNParams; got {type(params).__name__}.")
    w_x, w_h, b = (to_numpy(a).astype(np.float64) for a in params)
    return w_x.T.copy(), w_h.T.copy(), b


def to_seed_lstm(params: LSTMParams) -> tuple[np.ndarray, np.ndarray]:
    """The seed's ``(wGate [4][H][D+H], bGate [4][H])`` as float64 arrays (inverse of
    :func:`from_seed_lstm`)."""
    if not isinstance(params, LSTMParams):
        raise TypeError(f"params must be LSTMParams; got {type(params).__name__}.")
    w_x, w_h, b = (to_numpy(a).astype(np.float64) for a in params)
    blocks = dict(zip(LSTM_GATES, range(4), strict=True))
    hidden = w_h.shape[0]
    w_gate, b_gate = [], []
    for gate in SEED_LSTM_GATES:
        cols = slice(blocks[gate] * hidden, (blocks[gate] + 1) * hidden)
        w_gate.append(np.concatenate([w_x[:, cols], w_h[:, cols]], axis=0).T)
        b_gate.append(b[cols])
    return np.stack(w_gate), np.stack(b_gate)
