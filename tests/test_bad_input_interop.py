"""Bad input to ``rnnjax.interop`` (the seed's Java layout, PyTorch, Keras, Flax): each case raises
the named exception and the message names the argument. The framework cases import torch, keras
and flax lazily, inside the call.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import interop

os.environ.setdefault("KERAS_BACKEND", "jax")

KEY = jax.random.key(0)
LSTM_PARAMS = rnnjax.lstm(4).init(KEY, 3)
GRU_PARAMS = rnnjax.gru(4).init(KEY, 3)
RNN_PARAMS = rnnjax.simple_rnn(4).init(KEY, 3)
DENSE = rnnjax.dense(2)
DENSE_PARAMS = DENSE.init(KEY, (3,))
LSTM_LAYER = rnnjax.rnn(rnnjax.lstm(4))


def _torch_linear():
    import torch

    return torch.nn.Linear(3, 2)


def _flax_dense():
    import flax.linen as nn

    module = nn.Dense(2)
    return module, module.init(KEY, jnp.ones((1, 3)))


def _keras_conv():
    import keras

    layer = keras.layers.Conv1D(2, 3)
    layer.build((None, 5, 3))
    return layer


CASES = [
    # the seed's Java layout
    pytest.param(
        lambda: interop.from_seed_rnn(np.ones((4, 3)), np.ones((4, 5)), np.ones(4)),
        ValueError,
        "w_h",
        id="seed-rnn-w-h-shape",
    ),
    pytest.param(
        lambda: interop.from_seed_rnn(np.ones((4, 3)), np.ones((4, 4)), np.ones(5)),
        ValueError,
        "bias",
        id="seed-rnn-bias-shape",
    ),
    pytest.param(
        lambda: interop.from_seed_rnn(np.ones(4), np.ones((4, 4)), np.ones(4)),
        ValueError,
        "w_x",
        id="seed-rnn-w-x-rank",
    ),
    pytest.param(
        lambda: interop.from_seed_rnn([], np.ones((4, 4)), np.ones(4)),
        ValueError,
        "w_x",
        id="seed-rnn-empty",
    ),
    pytest.param(
        lambda: interop.from_seed_rnn([["a"]], [[1.0]], [1.0]),
        ValueError,
        "w_x",
        id="seed-rnn-strings",
    ),
    pytest.param(
        lambda: interop.from_seed_rnn([[1.0, 2.0], [3.0]], [[1.0]], [1.0]),
        ValueError,
        "w_x",
        id="seed-rnn-ragged",
    ),
    pytest.param(
        lambda: interop.from_seed_lstm(np.ones((3, 4, 7)), np.ones((4, 4))),
        ValueError,
        "w_gate",
        id="seed-lstm-three-gates",
    ),
    pytest.param(
        lambda: interop.from_seed_lstm(np.ones((4, 4, 4)), np.ones((4, 4))),
        ValueError,
        "w_gate",
        id="seed-lstm-no-inputs",
    ),
    pytest.param(
        lambda: interop.from_seed_lstm(np.ones((4, 4, 7)), np.ones((4, 3))),
        ValueError,
        "b_gate",
        id="seed-lstm-bias-shape",
    ),
    pytest.param(
        lambda: interop.to_seed_rnn(LSTM_PARAMS), TypeError, "params", id="to-seed-rnn-lstm-params"
    ),
    pytest.param(
        lambda: interop.to_seed_lstm(GRU_PARAMS), TypeError, "params", id="to-seed-lstm-gru-params"
    ),
    pytest.param(
        lambda: interop.to_seed_lstm({"w_x": 1}), TypeError, "params", id="to-seed-lstm-dict"
    ),
    # PyTorch
    pytest.param(lambda: interop.from_torch("lstm"), TypeError, "module", id="from-torch-str"),
    pytest.param(
        lambda: interop.from_torch(_torch_linear()), TypeError, "module", id="from-torch-linear"
    ),
    pytest.param(
        lambda: interop.to_torch(DENSE, DENSE_PARAMS), TypeError, "params", id="to-torch-dense"
    ),
    pytest.param(
        lambda: interop.to_torch(LSTM_LAYER, GRU_PARAMS._replace(b_hn=None)),
        ValueError,
        "params",
        id="to-torch-gru-reset-before",
    ),
    pytest.param(
        lambda: interop.to_torch(LSTM_LAYER, (LSTM_PARAMS, GRU_PARAMS)),
        ValueError,
        r"params\[1\]",
        id="to-torch-mixed-stack",
    ),
    pytest.param(
        lambda: interop.to_torch(
            rnnjax.rnn(rnnjax.simple_rnn(4)), RNN_PARAMS, nonlinearity="sigmoid"
        ),
        ValueError,
        "nonlinearity",
        id="to-torch-sigmoid",
    ),
    pytest.param(
        lambda: interop.to_torch(LSTM_LAYER, LSTM_PARAMS, dropout=1.5),
        ValueError,
        "dropout",
        id="to-torch-dropout",
    ),
    pytest.param(
        lambda: interop.to_torch(LSTM_LAYER, "weights"),
        TypeError,
        "params",
        id="to-torch-str-params",
    ),
    # Keras
    pytest.param(lambda: interop.from_keras("lstm"), TypeError, "layer", id="from-keras-str"),
    pytest.param(
        lambda: interop.from_keras(_keras_conv()), TypeError, "layer", id="from-keras-conv"
    ),
    pytest.param(
        lambda: interop.to_keras(LSTM_LAYER, "weights"),
        TypeError,
        "params",
        id="to-keras-str-params",
    ),
    # Flax
    pytest.param(lambda: interop.from_flax("lstm", {}), TypeError, "module", id="from-flax-str"),
    pytest.param(
        lambda: interop.from_flax(*_flax_dense()), TypeError, "module", id="from-flax-dense"
    ),
]


@pytest.mark.parametrize("call, error, match", CASES)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
