"""rnnjax.interop against live Keras 3 layers (JAX backend): forward, masks, seed models, round trips."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnnjax  # noqa: E402
from rnnjax import interop  # noqa: E402
from tests.tolerances import assert_close  # noqa: E402

L = keras.layers

# Weights are overwritten with random values, so skip Keras' (slow, orthogonal) initialisers.
FAST = {"kernel_initializer": "zeros", "recurrent_initializer": "zeros"}

# Every option once, both GRU reset_after settings.
LAYERS = {
    "simple_rnn_tanh": lambda h: L.SimpleRNN(h, return_sequences=True, **FAST),
    "simple_rnn_relu": lambda h: L.SimpleRNN(h, activation="relu", return_state=True, **FAST),
    "lstm": lambda h: L.LSTM(h, return_sequences=True, return_state=True, **FAST),
    "lstm_no_bias": lambda h: L.LSTM(h, use_bias=False, unroll=True, **FAST),
    "gru_reset_after": lambda h: L.GRU(h, return_state=True, **FAST),
    "gru_reset_before": lambda h: L.GRU(h, reset_after=False, return_sequences=True, **FAST),
    "gru_go_backwards": lambda h: L.GRU(h, go_backwards=True, **FAST),
    "bidirectional_lstm": lambda h: L.Bidirectional(L.LSTM(h, return_state=True, **FAST)),
    "bidirectional_gru_ave": lambda h: L.Bidirectional(
        L.GRU(h, return_sequences=True, reset_after=False, **FAST), merge_mode="ave"
    ),
    "bidirectional_rnn_none": lambda h: L.Bidirectional(
        L.SimpleRNN(h, return_sequences=True, **FAST), merge_mode=None
    ),
}


def _keras(layer, *args, **kwargs):
    """Call a Keras layer: Keras broadcasts by rank internally, which conftest's "raise" forbids
    (rnnjax calls stay under "raise")."""
    with jax.numpy_rank_promotion("allow"):
        return layer(*args, **kwargs)


def _randomize(layer, rng):
    """Random weights and biases (Keras initialises biases to zero, which would hide mistakes)."""
    layer.set_weights(
        [rng.normal(scale=0.6, size=w.shape).astype(w.dtype) for w in layer.get_weights()]
    )
    return layer


@pytest.fixture(scope="module")
def built():
    """Each layer of LAYERS built once with random weights: (layer, x) pairs. One random shape
    for all, so Keras and JAX reuse their compiled kernels."""
    cases = {}
    rng = np.random.default_rng(0)
    batch, steps, input_size, hidden = (
        int(v) for v in rng.integers(2, [4, 6, 4, 5], endpoint=True)
    )
    for name, factory in LAYERS.items():
        with jax.numpy_rank_promotion("allow"):  # Keras' initialisers broadcast by rank
            layer = factory(hidden)
            layer.build((None, steps, input_size))
        x = rng.normal(size=(batch, steps, input_size)).astype(np.float32)
        cases[name] = (_randomize(layer, rng), x)
    return cases


def _assert_same(actual, expected, scale=2.0):
    actual, expected = jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape
        assert_close(a, e, "float32", scale)


@pytest.mark.parametrize("name", LAYERS)
def test_forward_and_states_match_keras(built, name):
    layer, x = built[name]
    model, params = interop.from_keras(layer)
    _assert_same(jax.jit(model.apply)(params, jnp.asarray(x)), _keras(layer, x))


@pytest.mark.parametrize("name", ["lstm", "bidirectional_gru_ave"])
def test_lengths_match_keras_mask(built, name):
    """Valid outputs and final states agree; past each length Keras repeats the last output
    (or zeros, inside Bidirectional) where rnnjax writes zeros."""
    layer, x = built[name]
    lengths = np.random.default_rng(0).integers(1, x.shape[1], size=x.shape[0], endpoint=True)
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    expected = jax.tree_util.tree_leaves(_keras(layer, x, mask=valid))
    model, params = interop.from_keras(layer)
    actual = jax.tree_util.tree_leaves(
        jax.jit(model.apply)(params, jnp.asarray(x), jnp.asarray(lengths))
    )
    _assert_same(
        np.where(valid[..., None], actual[0], 0), np.where(valid[..., None], expected[0], 0)
    )
    _assert_same(actual[1:], expected[1:])


@pytest.mark.parametrize("recurrent", ["SimpleRNN", "LSTM"])
def test_seed_sequential_models_convert_whole(recurrent):
    """The seed's two models: SimpleRNN(50) / LSTM(100) + Dense(1, sigmoid) on (100, 1) inputs."""
    units = 50 if recurrent == "SimpleRNN" else 100
    rng = np.random.default_rng(units)
    with jax.numpy_rank_promotion("allow"):
        keras_model = keras.Sequential(
            [keras.Input((100, 1)), getattr(L, recurrent)(units, activation="tanh", **FAST),
             L.Dense(1, activation="sigmoid")]
        )  # fmt: skip
    for layer in keras_model.layers:
        layer.set_weights(
            [rng.normal(scale=0.3, size=w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    x = rng.normal(size=(3, 100, 1)).astype(np.float32)
    model, params = interop.from_keras(keras_model)
    assert isinstance(params[1], rnnjax.DenseParams)
    actual = jax.jit(model.apply)(params, jnp.asarray(x))
    _assert_same(actual, _keras(keras_model, x), scale=5.0)
    rebuilt = interop.to_keras(model, params)
    assert [type(layer) for layer in rebuilt.layers] == [
        type(layer) for layer in keras_model.layers
    ]
    for new, old in zip(rebuilt.get_weights(), keras_model.get_weights(), strict=True):
        np.testing.assert_array_equal(new, old)


@pytest.mark.parametrize("name", LAYERS)
def test_round_trips_exactly(built, name):
    layer, x = built[name]
    model, params = interop.from_keras(layer)
    rebuilt = interop.to_keras(model, params)
    again = interop.from_keras(rebuilt)[1]
    same = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), params, again)
    assert all(jax.tree_util.tree_leaves(same))
    key = "merge_mode" if "bidirectional" in name else "return_sequences"
    assert rebuilt.get_config()[key] == layer.get_config()[key]
    if name not in ("gru_reset_after", "gru_go_backwards"):  # there Keras' two bias rows are summed
        for new, old in zip(rebuilt.get_weights(), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(new, old)
    _assert_same(_keras(rebuilt, x), _keras(layer, x))


def test_to_keras_from_hand_built_params():
    rng = np.random.default_rng(3)
    gru = rnnjax.gru(4, reset_after=True)
    shapes = [(3, 12), (4, 12), (12,), (4,)]
    params = rnnjax.GRUParams(*(jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes))
    model = rnnjax.rnn(gru, return_sequences=True)
    keras_layer = interop.to_keras(model, params, return_sequences=True, **FAST)
    assert isinstance(keras_layer, L.GRU) and keras_layer.reset_after
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    _assert_same(jax.jit(model.apply)(params, jnp.asarray(x)), _keras(keras_layer, x))
    relu = rnnjax.RNNParams(
        *(jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(3, 4), (4, 4), (4,)])
    )
    keras_layer = interop.to_keras(
        None, rnnjax.BidirectionalParams(relu, relu), activation="relu", **FAST
    )
    relu_model = rnnjax.bidirectional(rnnjax.simple_rnn(4, jax.nn.relu))
    _assert_same(
        relu_model.apply(rnnjax.BidirectionalParams(relu, relu), jnp.asarray(x)),
        _keras(keras_layer, x),
    )


def _keras_gru_numpy(x, kernel, recurrent, bias, reset_after):
    """Keras' GRU equations in float64 NumPy, on Keras' own weights (gate order z, r, h)."""
    hidden = recurrent.shape[0]
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, np.zeros_like(bias))
    h = np.zeros((x.shape[0], hidden))
    for t in range(x.shape[1]):
        xz, xr, xh = np.split(x[:, t] @ kernel + b_in, 3, axis=-1)
        if reset_after:
            rz, rr, rh = np.split(h @ recurrent + b_rec, 3, axis=-1)
            z, r = sigmoid(xz + rz), sigmoid(xr + rr)
            candidate = np.tanh(xh + r * rh)
        else:
            z = sigmoid(xz + h @ recurrent[:, :hidden])
            r = sigmoid(xr + h @ recurrent[:, hidden : 2 * hidden])
            candidate = np.tanh(xh + (r * h) @ recurrent[:, 2 * hidden :])
        h = z * h + (1 - z) * candidate
    return h


@pytest.mark.parametrize("reset_after", [True, False])
def test_float64_gru_matches_keras_equations(reset_after, x64):
    """float64 to 1e-10 against Keras' equations on Keras' float64 weights. (Keras 3.15's JAX
    ``ops.tanh`` returns float32 for float64 input, so the live layer is not a float64 oracle.)"""
    rng = np.random.default_rng(5)
    layer = L.GRU(3, reset_after=reset_after, dtype="float64", **FAST)
    with jax.numpy_rank_promotion("allow"):
        layer.build((None, 6, 2))
    _randomize(layer, rng)
    x = rng.normal(size=(2, 6, 2))
    model, params = interop.from_keras(layer)
    assert params.w_x.dtype == jnp.float64
    expected = _keras_gru_numpy(x, *layer.get_weights(), reset_after=reset_after)
    assert_close(model.apply(params, jnp.asarray(x)), expected, "float64", scale=100)


def test_errors(built):
    def build(layer):
        with jax.numpy_rank_promotion("allow"):
            layer.build((None, 3, 2))
        return layer

    with pytest.raises(ValueError, match="activation='my_tanh' is not supported"):
        interop.from_keras(build(L.SimpleRNN(2, activation=my_tanh, **FAST)))
    with pytest.raises(ValueError, match="recurrent_activation='hard_sigmoid' is not supported"):
        interop.from_keras(build(L.LSTM(2, recurrent_activation="hard_sigmoid", **FAST)))
    with pytest.raises(ValueError, match="stateful=True carries the state across batches"):
        interop.from_keras(L.GRU(2, stateful=True))
    with pytest.raises(ValueError, match="go_backwards=True with return_sequences=True"):
        interop.from_keras(build(L.GRU(2, go_backwards=True, return_sequences=True, **FAST)))
    with pytest.raises(
        ValueError, match="go_backwards=False on the forward layer.*got True and False"
    ):
        interop.from_keras(build(L.Bidirectional(
            L.LSTM(2, go_backwards=True, **FAST), backward_layer=L.LSTM(2, **FAST)
        )))  # fmt: skip
    with pytest.raises(TypeError, match="Bidirectional must wrap a Keras SimpleRNN, LSTM or GRU"):
        interop.from_keras(L.Bidirectional(L.RNN(L.GRUCell(2))))
    with pytest.raises(TypeError, match="layer must be a Keras SimpleRNN.*got Conv1D"):
        interop.from_keras(L.Conv1D(2, 3))
    with pytest.raises(ValueError, match="Keras layer 'unbuilt' is not built"):
        interop.from_keras(L.LSTM(2, name="unbuilt"))
    model, params = interop.from_keras(built["lstm_no_bias"][0])
    with pytest.raises(ValueError, match="params.b of Keras layer .* is non-zero"):
        interop.to_keras(model, params._replace(b=params.b + 1))
    with pytest.raises(
        TypeError, match="params must be rnnjax cell params, BidirectionalParams or"
    ):
        interop.to_keras(None, (params, params))


def my_tanh(v):
    """A custom activation (no rnnjax counterpart), equal to tanh."""
    return keras.ops.tanh(v)


def _random_params(model, input_shape, seed):
    params = model.init(jax.random.key(seed), input_shape)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    return jax.tree_util.tree_unflatten(tree, noisy)


SERIAL_MODELS = {
    # The example: raised "TypeError ... got tuple" before.
    "lstm_sigmoid": lambda: rnnjax.serial(
        rnnjax.rnn(rnnjax.lstm(4)), rnnjax.dense(1, jax.nn.sigmoid)
    ),
    "stack_of_gru_and_bidirectional_relu_tanh_head": lambda: rnnjax.serial(
        rnnjax.stack(
            [rnnjax.gru(4, reset_after=True), (rnnjax.simple_rnn(3, jax.nn.relu),) * 2],
            return_sequences=True,
        ),
        rnnjax.dense(2, jnp.tanh),
    ),
    "bidirectional_mean_then_gru_seed_form_softmax": lambda: rnnjax.serial(
        rnnjax.bidirectional(rnnjax.lstm(4), merge="mean", return_sequences=True),
        rnnjax.rnn(rnnjax.gru(3)),
        rnnjax.dense(2, jax.nn.softmax),
    ),
    "rnn_sequences_alone": lambda: rnnjax.rnn(rnnjax.lstm(3), return_sequences=True),
}


@pytest.mark.parametrize("name", sorted(SERIAL_MODELS))
def test_to_keras_of_any_serial_matches_keras(name):
    model = SERIAL_MODELS[name]()
    params = _random_params(model, (6, 3), seed=len(name))
    keras_model = interop.to_keras(model, params)
    x = np.random.default_rng(5).normal(size=(4, 9, 3)).astype(np.float32)
    expected = jax.jit(model.apply)(params, jnp.asarray(x))
    _assert_same(expected, _keras(keras_model, x), scale=5.0)
    back, again = interop.from_keras(keras_model)
    _assert_same(jax.jit(back.apply)(again, jnp.asarray(x)), expected, scale=5.0)


def test_to_keras_of_a_model_keras_cannot_express():
    reversed_rnn = rnnjax.rnn(rnnjax.lstm(3), reverse=True)
    params = _random_params(reversed_rnn, (6, 3), seed=0)
    with pytest.raises(ValueError, match="no Keras model of these layers \\(LSTMParams\\)"):
        interop.to_keras(reversed_rnn, params)
    with_state = rnnjax.rnn(rnnjax.lstm(3), return_state=True)
    with pytest.raises(ValueError, match="model.apply must return one array .*got a tuple"):
        interop.to_keras(with_state, params)
    with pytest.raises(TypeError, match="model must be the rnnjax Layer .*got dict"):
        interop.to_keras({"lstm": 3}, params)
    with pytest.raises(TypeError, match=r"params\[1\] must be rnnjax cell params.*got dict"):
        interop.to_keras(reversed_rnn, (params, {"w": 1}))
    with pytest.raises(TypeError, match="Pass the rnnjax model"):
        interop.to_keras(None, (params, params))
