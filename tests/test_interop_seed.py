"""rnnjax.interop seed importers against a NumPy transcription of the seed's Java loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import interop
from tests.oracles.seed_java import java_forward_lstm, java_forward_vanilla_rnn
from tests.tolerances import assert_close


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
    assert_close(actual, java_forward_vanilla_rnn(x.tolist(), w_x, w_h, bias), "float64", scale=100)
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
        actual,
        java_forward_lstm(x.tolist(), w_gate.tolist(), b_gate.tolist(), x.shape[-1]),
        "float64",
        scale=100,
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
