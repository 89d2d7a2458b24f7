"""rnnjax.interop seed importers against a NumPy transcription of the seed's Java loops."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import interop
from tests.tolerances import assert_close


def java_vanilla_rnn(input_batch, w_x, w_h, bias):
    """``EnterpriseSequenceInferenceEngine.forwardVanillaRNNParallel``, loop for loop."""
    hidden_dim = len(w_h)
    final = []
    for sequence in input_batch:
        current = [0.0] * hidden_dim
        for current_input in sequence:
            next_hidden = [0.0] * hidden_dim
            for h in range(hidden_dim):
                net = 0.0
                for x in range(len(current_input)):
                    net += current_input[x] * w_x[h][x]
                for r in range(hidden_dim):
                    net += current[r] * w_h[h][r]
                net += bias[h]
                next_hidden[h] = math.tanh(net)
            current = list(next_hidden)
        final.append(current)
    return np.array(final)


def java_lstm(input_batch, w_gate, b_gate):
    """``EnterpriseSequenceInferenceEngine.forwardLSTMParallel``, loop for loop."""
    hidden_dim = len(w_gate[0])
    sigmoid = lambda v: 1.0 / (1.0 + math.exp(-v))
    final = []
    for sequence in input_batch:
        h_state, c_state = [0.0] * hidden_dim, [0.0] * hidden_dim
        for x_t in sequence:
            concat = list(x_t) + list(h_state)
            gates = [[0.0] * hidden_dim for _ in range(4)]
            for h in range(hidden_dim):
                sums = [
                    sum(concat[j] * w_gate[k][h][j] for j in range(len(concat))) for k in range(4)
                ]
                gates[0][h] = sigmoid(sums[0] + b_gate[0][h])
                gates[1][h] = sigmoid(sums[1] + b_gate[1][h])
                gates[2][h] = math.tanh(sums[2] + b_gate[2][h])
                gates[3][h] = sigmoid(sums[3] + b_gate[3][h])
            for h in range(hidden_dim):
                c_state[h] = gates[0][h] * c_state[h] + gates[1][h] * gates[2][h]
                h_state[h] = gates[3][h] * math.tanh(c_state[h])
        final.append(list(h_state))
    return np.array(final)


def _shapes(seed):
    rng = np.random.default_rng(seed)
    batch, steps, input_size, hidden = (
        int(v) for v in rng.integers(1, [3, 5, 4, 5], endpoint=True)
    )
    return rng, batch, steps, input_size, hidden


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_from_seed_rnn_matches_java_loops(seed, x64):
    rng, batch, steps, input_size, hidden = _shapes(seed)
    x = rng.normal(size=(batch, steps, input_size))
    w_x, w_h = rng.normal(size=(hidden, input_size)), rng.normal(size=(hidden, hidden)) * 0.5
    bias = rng.normal(size=hidden)
    params = interop.from_seed_rnn(w_x.tolist(), w_h.tolist(), bias.tolist())
    assert params.w_x.dtype == jnp.float64
    actual = rnnjax.rnn(rnnjax.simple_rnn(hidden)).apply(params, jnp.asarray(x))
    assert_close(actual, java_vanilla_rnn(x.tolist(), w_x, w_h, bias), "float64", scale=100)
    for original, back in zip((w_x, w_h, bias), interop.to_seed_rnn(params), strict=True):
        np.testing.assert_array_equal(back, original)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_from_seed_lstm_matches_java_loops(seed, x64):
    rng, batch, steps, input_size, hidden = _shapes(seed)
    x = rng.normal(size=(batch, steps, input_size))
    w_gate = rng.normal(size=(4, hidden, input_size + hidden))
    b_gate = rng.normal(size=(4, hidden))
    params = interop.from_seed_lstm(w_gate.tolist(), b_gate)
    actual = rnnjax.rnn(rnnjax.lstm(hidden)).apply(params, jnp.asarray(x))
    assert_close(
        actual, java_lstm(x.tolist(), w_gate.tolist(), b_gate.tolist()), "float64", scale=100
    )
    w_back, b_back = interop.to_seed_lstm(params)
    np.testing.assert_array_equal(w_back, w_gate)
    np.testing.assert_array_equal(b_back, b_gate)


def test_float32_without_x64():
    params = interop.from_seed_lstm(np.ones((4, 2, 5)), np.zeros((4, 2)))
    assert params.w_x.shape == (3, 8) and params.w_h.shape == (2, 8)
    assert params.w_x.dtype == jnp.float32
    jax.tree_util.tree_map(lambda a: a.block_until_ready(), params)


def test_errors():
    with pytest.raises(
        ValueError, match=r"w_h must have shape \(3, 3\) and bias \(3,\).*got \(3, 2\)"
    ):
        interop.from_seed_rnn(np.ones((3, 2)), np.ones((3, 2)), np.ones(3))
    with pytest.raises(
        ValueError, match=r"w_x must be a non-empty .* shape \(H, D\); got shape \(3,\)"
    ):
        interop.from_seed_rnn(np.ones(3), np.ones((3, 3)), np.ones(3))
    with pytest.raises(
        ValueError, match=r"w_gate must have shape \(4, H, D \+ H\).*got \(3, 2, 5\)"
    ):
        interop.from_seed_lstm(np.ones((3, 2, 5)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"w_gate must have shape .*D >= 1.*got \(4, 2, 2\)"):
        interop.from_seed_lstm(np.ones((4, 2, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"b_gate must have shape \(4, 2\).*got \(4, 3\)"):
        interop.from_seed_lstm(np.ones((4, 2, 5)), np.ones((4, 3)))
    with pytest.raises(TypeError, match="params must be RNNParams; got LSTMParams"):
        interop.to_seed_rnn(interop.from_seed_lstm(np.ones((4, 2, 5)), np.ones((4, 2))))
    with pytest.raises(TypeError, match="params must be LSTMParams; got RNNParams"):
        interop.to_seed_lstm(interop.from_seed_rnn(np.ones((2, 1)), np.ones((2, 2)), np.ones(2)))
