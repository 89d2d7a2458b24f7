"""rnnjax.inference: the engine against a NumPy transcription of the seed's Java engine.

``tests/oracles/seed_java.py`` transcribes ``forwardVanillaRNNParallel`` and
``forwardLSTMParallel`` loop for loop (the thread pool aside), in float64 like Java's ``double``.
Tests named ``test_multidevice_*`` need 8 devices and run in a subprocess (see test_distributed).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax.inference import InferenceEngine, power_of_two_bucket
from tests.multidevice import EIGHT, run_multidevice_cases
from tests.oracles.seed_java import java_forward_lstm, java_forward_vanilla_rnn
from tests.tolerances import assert_close

multidevice = pytest.mark.skipif(
    not EIGHT, reason="needs 8 devices; test_eight_simulated_devices_in_subprocess runs it"
)
LENGTHS = (5, 1, 12, 0, 9, 3)


def seed_weights(kind: str, hidden: int = 5, features: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    if kind == "rnn":
        return (
            rng.normal(scale=0.5, size=(hidden, features)),
            rng.normal(scale=0.5, size=(hidden, hidden)),
            rng.normal(scale=0.5, size=hidden),
        )
    return rng.normal(scale=0.5, size=(4, hidden, features + hidden)), rng.normal(size=(4, hidden))


def params_from_seed(kind: str, weights, features: int = 3):
    """Test-local reading of the seed layout (independent of rnnjax.interop)."""
    if kind == "rnn":
        w_x, w_h, bias = weights
        return rnnjax.RNNParams(jnp.asarray(w_x.T), jnp.asarray(w_h.T), jnp.asarray(bias))
    w_gate, b_gate = weights
    order = [1, 0, 2, 3]  # seed (f, i, g, o) -> rnnjax LSTM_GATES (i, f, g, o)
    w_x = np.concatenate([w_gate[k][:, :features].T for k in order], axis=1)
    w_h = np.concatenate([w_gate[k][:, features:].T for k in order], axis=1)
    b = np.concatenate([b_gate[k] for k in order])
    return rnnjax.LSTMParams(jnp.asarray(w_x), jnp.asarray(w_h), jnp.asarray(b))


def ragged(lengths=LENGTHS, features: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, features)) for n in lengths]


def java_reference(kind: str, weights, sequences):
    """One Java call per sequence: the Java engine runs every sequence for the first's length."""
    if kind == "rnn":
        return np.stack([java_forward_vanilla_rnn([s], *weights)[0] for s in sequences])
    return np.stack([java_forward_lstm([s], *weights, feature_dim=3)[0] for s in sequences])


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_engine_matches_the_java_loops_on_ragged_sequences(kind, x64):
    weights = seed_weights(kind)
    params = params_from_seed(kind, weights)
    cell = rnnjax.simple_rnn(5) if kind == "rnn" else rnnjax.lstm(5)
    sequences = ragged()
    result = InferenceEngine(cell, params).run(sequences)
    assert result.final_state.h.dtype == np.float64 and result.ok.all()
    assert_close(result.final_state.h, java_reference(kind, weights, sequences), scale=100)
    np.testing.assert_array_equal(result.lengths, LENGTHS)


def test_engine_matches_one_java_batch_of_equal_lengths(x64):
    weights = seed_weights("lstm")
    batch = np.random.default_rng(2).normal(size=(4, 7, 3))
    engine = InferenceEngine(rnnjax.lstm(5), params_from_seed("lstm", weights))
    expected = java_forward_lstm(batch, *weights, feature_dim=3)
    assert_close(engine.run(batch).final_state.h, expected, scale=100)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_from_seed_constructors_read_the_java_layout(kind, x64):
    weights = seed_weights(kind)
    make = InferenceEngine.from_seed_rnn if kind == "rnn" else InferenceEngine.from_seed_lstm
    result = make(*weights).run(ragged())
    assert_close(result.final_state.h, java_reference(kind, weights, ragged()), scale=100)


def padded_reference(cell, params, sequences):
    """Final states and outputs of ``rnnjax.rnn`` on the zero-padded batch: one compilation."""
    width = max(len(s) for s in sequences)
    padded = np.zeros((len(sequences), width, sequences[0].shape[1]), np.float32)
    for row, s in enumerate(sequences):
        padded[row, : len(s)] = s
    layer = rnnjax.rnn(cell, return_sequences=True, return_state=True)
    lengths = np.array([len(s) for s in sequences])
    ys, state = jax.jit(layer.apply)(params, padded, lengths)
    return state, ys


def test_outputs_match_the_layer_for_list_and_padded_input():
    cell = rnnjax.gru(6, reset_after=True)
    params = cell.init(jax.random.key(0), 3)
    sequences = [s.astype(np.float32) for s in ragged()]
    engine = InferenceEngine(cell, params)
    listed = engine.run(sequences, return_outputs=True)
    padded = np.full((len(sequences), 12, 3), np.nan, np.float32)  # NaN padding is never read
    for row, s in enumerate(sequences):
        padded[row, : len(s)] = s
    boxed = engine.run(padded, lengths=np.array(LENGTHS), return_outputs=True)
    assert boxed.outputs.shape == (6, 12, 6) and boxed.ok.all()
    state, ys = padded_reference(cell, params, sequences)
    assert_close(listed.final_state.h, state.h, scale=10)
    assert_close(boxed.final_state.h, state.h, scale=10)
    assert_close(boxed.outputs, ys, scale=10)
    for row, s in enumerate(sequences):
        assert listed.outputs[row].shape == (len(s), 6)
        assert_close(listed.outputs[row], ys[row, : len(s)], scale=10)


def test_buckets_bound_compilations_over_a_stream():
    cell = rnnjax.simple_rnn(4)
    params = cell.init(jax.random.key(0), 3)
    engine = InferenceEngine(cell, params, min_batch=1)
    engine.run(ragged((3, 5, 7)))  # bucket 8, batch 4
    assert engine.stats.compilations == 1
    engine.run(ragged((2, 8, 6), seed=5))  # new lengths, same bucket and batch size
    assert engine.stats.compilations == 1
    engine.run(ragged((9,)))  # bucket 16, batch 1
    engine.run(ragged((16,)))
    stats = engine.stats
    assert (stats.compilations, stats.sequences, stats.batches) == (2, 8, 4)
    assert stats.padded_fraction == pytest.approx(1 - (15 + 16 + 9 + 16) / (32 + 32 + 16 + 16))
    floored = InferenceEngine(cell, params)  # min_batch=8: one batch size for small groups
    floored.run(ragged((3, 5, 7, 9)))
    assert floored.stats.padded_fraction == pytest.approx(1 - 24 / (8 * 8 + 8 * 16))


def test_length_buckets_and_batch_chunks():
    cell = rnnjax.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    engine = InferenceEngine(cell, params, length_buckets=(10, 20), max_batch=2)
    assert [engine.bucket_length(n) for n in (0, 10, 11, 20, 21)] == [10, 10, 20, 20, None]
    sequences = ragged((4, 15, 6, 8, 2, 21))
    result = engine.run(sequences)
    assert result.ok.tolist() == [True] * 5 + [False]
    assert result.errors[5] == "sequence 5 has length 21 > the largest bucket 20"
    assert engine.stats.batches == 3  # four of length <= 10 in two batches of 2, then 15 alone
    state, _ = padded_reference(cell, params, sequences[:5])
    assert_close(result.final_state.h[:5], state.h, scale=10)
    assert_close(result.final_state.c[:5], state.c, scale=10)
    assert [power_of_two_bucket(n) for n in (0, 1, 8, 9, 100)] == [8, 8, 8, 16, 128]
    assert power_of_two_bucket(3, minimum=1) == 4


def test_bad_sequences_are_isolated():
    cell = rnnjax.lstm(4)
    engine = InferenceEngine(cell, cell.init(jax.random.key(0), 3))
    good = ragged((5, 7))
    nan = np.ones((4, 3))
    nan[2, 1] = np.nan
    sequences = [good[0], nan, np.ones((4, 2)), [[1.0, 2.0, 3.0], [1.0]], np.ones(3), good[1]]
    sequences.append(np.array([["a", "b", "c"]]))
    result = engine.run(sequences, return_outputs=True)
    alone = engine.run(good)
    assert result.ok.tolist() == [True, False, False, False, False, True, False]
    np.testing.assert_array_equal(result.final_state.h[[0, 5]], alone.final_state.h)
    assert np.isnan(result.final_state.h[1:5]).all() and np.isnan(result.final_state.c[6]).all()
    assert result.errors[0] is None
    assert result.errors[1] == "sequence 1 has NaN or infinite values in its first 4 steps"
    assert "sequence 2 must have shape (length, input_size=3); got (4, 2)" in result.errors[2]
    assert "sequence 3 is not a rectangular [length, 3] array" in result.errors[3]
    assert "sequence 4 must have shape (length, input_size=3); got (3,)" in result.errors[4]
    assert "sequence 6 must be real numbers; got dtype <U1" in result.errors[6]
    assert result.outputs[1].shape == (0, 4)
    with pytest.raises(ValueError, match=r"bad sequences: sequence 1 has NaN .*; sequence 2 must"):
        engine.run(sequences, strict=True)


def test_empty_batches_and_zero_lengths_compile_nothing():
    cell = rnnjax.lstm(4)
    engine = InferenceEngine(cell, cell.init(jax.random.key(0), 3))
    empty = engine.run([], return_outputs=True)
    assert empty.final_state.h.shape == (0, 4) and empty.outputs == [] and empty.ok.shape == (0,)
    boxed = engine.run(np.zeros((0, 5, 3)), return_outputs=True)
    assert boxed.final_state.c.shape == (0, 4) and boxed.outputs.shape == (0, 5, 4)
    zero = engine.run([np.zeros((0, 3)), np.zeros((0, 3))], return_outputs=True)
    assert zero.ok.all() and not zero.final_state.h.any() and not zero.final_state.c.any()
    assert zero.outputs[0].shape == (0, 4)
    assert engine.stats.compilations == 0


def test_bfloat16_params_and_inputs_run_in_bfloat16():
    """ml_dtypes' bfloat16 is a float (NumPy's dtype kind says 'V'): accepted, computed in it."""
    cell = rnnjax.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    x = np.asarray(jax.random.normal(jax.random.key(1), (5, 3)))
    engine = InferenceEngine(cell, jax.tree.map(lambda a: a.astype(jnp.bfloat16), params))
    result = engine.run([x.astype(jnp.bfloat16)])
    assert result.ok.all() and result.final_state.h.dtype == jnp.bfloat16
    reference = InferenceEngine(cell, params).run([x]).final_state.h
    np.testing.assert_allclose(np.float32(result.final_state.h), reference, atol=3e-2)


def test_cells_without_a_recurrent_kernel_are_served():
    cell = rnnjax.min_gru(4)
    params = cell.init(jax.random.key(0), 2)
    x = np.asarray(jax.random.normal(jax.random.key(1), (6, 2)))
    result = InferenceEngine(cell, params).run([x], return_outputs=True)
    final, ys = rnnjax.scan(cell, params, jnp.asarray(x))
    assert result.ok.all()
    assert_close(result.final_state.h[0], final.h)
    assert_close(result.outputs[0], ys)


def test_integer_inputs_are_cast_to_the_params_dtype():
    cell = rnnjax.simple_rnn(4)
    engine = InferenceEngine(cell, cell.init(jax.random.key(0), 2))
    as_ints = engine.run([np.array([[1, 2], [3, 4]])]).final_state.h
    as_floats = engine.run([np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)]).final_state.h
    assert as_ints.dtype == np.float32
    np.testing.assert_array_equal(as_ints, as_floats)


def test_call_level_errors():
    cell = rnnjax.simple_rnn(4)
    engine = InferenceEngine(cell, cell.init(jax.random.key(0), 3))
    with pytest.raises(
        TypeError, match=r"padded array \[N, T, 3\] .*got an array of shape \(7, 3\)"
    ):
        engine.run(np.ones((7, 3)))
    with pytest.raises(TypeError, match="got int"):
        engine.run(3)
    with pytest.raises(ValueError, match=r"lengths must be ints of shape \(2,\).*shape \(3,\)"):
        engine.run(np.ones((2, 4, 3)), lengths=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="lengths must be ints .*got dtype float64"):
        engine.run(np.ones((2, 4, 3)), lengths=np.array([1.0, 2.0]))
    result = engine.run(np.ones((2, 4, 3)), lengths=np.array([5, -1]))
    assert result.errors == ("lengths[0]=5 must lie in [0, 4]", "lengths[1]=-1 must lie in [0, 4]")


def test_constructor_errors():
    cell = rnnjax.simple_rnn(4)
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"length_buckets must be increasing .*got \(20, 10\)"):
        InferenceEngine(cell, params, length_buckets=(20, 10))
    with pytest.raises(ValueError, match="max_batch must be a positive int; got 0"):
        InferenceEngine(cell, params, max_batch=0)
    with pytest.raises(ValueError, match="min_batch must be a positive int; got -1"):
        InferenceEngine(cell, params, min_batch=-1)
    with pytest.raises(ValueError, match="devices must name at least one device"):
        InferenceEngine(cell, params, devices=[])
    with pytest.raises(TypeError, match="params must be LSTMParams"):
        InferenceEngine(rnnjax.lstm(4), params)
    with pytest.raises(TypeError, match="cell must be an rnnjax Cell"):
        InferenceEngine("lstm", params)
    with pytest.raises(
        TypeError, match=r"params must be the params of simple_rnn\(hidden_size=4\)"
    ):
        InferenceEngine(cell, {"w": params.w_x})
    with pytest.raises(ValueError, match="min_length_bucket must be a positive int; got 0"):
        InferenceEngine(cell, params, min_length_bucket=0)


@multidevice
def test_multidevice_engine_shards_batches_and_matches_one_device():
    cell = rnnjax.lstm(6)
    params = cell.init(jax.random.key(0), 3)
    sequences = ragged((5, 1, 12, 0, 9, 3, 14, 7, 7, 2, 30))
    sharded = InferenceEngine(cell, params, max_batch=20)
    single = InferenceEngine(cell, params, devices=jax.devices()[:1], min_batch=1)
    assert (sharded.num_devices, sharded.max_batch) == (8, 24)
    result = sharded.run(sequences, return_outputs=True)
    expected = single.run(sequences, return_outputs=True)
    for a, e in zip(result.final_state, expected.final_state, strict=True):
        assert_close(a, e, scale=10)
    for a, e in zip(result.outputs, expected.outputs, strict=True):
        assert_close(a, e, scale=10)
    assert sharded.stats.padded_fraction > single.stats.padded_fraction  # rows per device >= 1


@pytest.mark.slow
def test_eight_simulated_devices_in_subprocess():
    if EIGHT:
        pytest.skip("this process has 8 devices: the multidevice tests ran here")
    run_multidevice_cases(__file__, expected_passed=1)
