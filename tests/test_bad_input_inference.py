"""Bad input to ``rnnjax.inference.InferenceEngine``: bad arguments raise naming the argument; bad
sequences are isolated (``ok=False`` with a reason naming the sequence, NaN results) while the
others are computed, and ``strict=True`` raises instead.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax.inference import InferenceEngine

KEY = jax.random.key(0)
CELL = rnnjax.lstm(4)
PARAMS = CELL.init(KEY, 3)
ENGINE = InferenceEngine(CELL, PARAMS, length_buckets=(4, 8))
GOOD = np.ones((5, 3), np.float32)


def _with(value, row=2, column=1, dtype=np.float64):
    x = GOOD.astype(dtype)
    x[row, column] = value
    return x


CONSTRUCTOR_CASES = [
    pytest.param(lambda: InferenceEngine("lstm", PARAMS), TypeError, "cell", id="cell-str"),
    pytest.param(lambda: InferenceEngine(CELL, {"w": 1}), TypeError, "params", id="params-dict"),
    pytest.param(
        lambda: InferenceEngine(CELL, rnnjax.gru(4).init(KEY, 3)),
        TypeError,
        "params",
        id="params-of-gru",
    ),
    pytest.param(
        lambda: InferenceEngine(CELL, PARAMS, length_buckets=()),
        ValueError,
        "length_buckets",
        id="buckets-empty",
    ),
    pytest.param(
        lambda: InferenceEngine(CELL, PARAMS, length_buckets=(8, 4)),
        ValueError,
        "length_buckets",
        id="buckets-decreasing",
    ),
    pytest.param(
        lambda: InferenceEngine(CELL, PARAMS, length_buckets=(0, 4)),
        ValueError,
        "length_buckets",
        id="buckets-zero",
    ),
    pytest.param(
        lambda: InferenceEngine(CELL, PARAMS, length_buckets=(2.5, 4)),
        ValueError,
        "length_buckets",
        id="buckets-float",
    ),
    pytest.param(
        lambda: InferenceEngine(CELL, PARAMS, min_length_bucket=0),
        ValueError,
        "min_length_bucket",
        id="min-bucket-0",
    ),
    pytest.param(
        lambda: InferenceEngine(CELL, PARAMS, max_batch=0),
        ValueError,
        "max_batch",
        id="max-batch-0",
    ),
    pytest.param(
        lambda: InferenceEngine(CELL, PARAMS, min_batch=1.5),
        ValueError,
        "min_batch",
        id="min-batch-float",
    ),
    pytest.param(
        lambda: InferenceEngine(CELL, PARAMS, devices=[]), ValueError, "devices", id="devices-empty"
    ),
    pytest.param(
        lambda: InferenceEngine.from_seed_rnn(np.ones((4, 3)), np.ones((4, 5)), np.ones(4)),
        ValueError,
        "w_h",
        id="seed-rnn-w-h-shape",
    ),
    pytest.param(
        lambda: InferenceEngine.from_seed_lstm(np.ones((3, 4, 7)), np.ones((4, 4))),
        ValueError,
        "w_gate",
        id="seed-lstm-three-gates",
    ),
    pytest.param(
        lambda: rnnjax.inference.power_of_two_bucket(-1),
        ValueError,
        "length",
        id="bucket-negative-length",
    ),
]

RUN_CASES = [
    pytest.param(lambda: ENGINE.run(GOOD), TypeError, "sequences", id="run-2d-array"),
    pytest.param(lambda: ENGINE.run("abc"), TypeError, "sequences", id="run-str"),
    pytest.param(
        lambda: ENGINE.run(np.ones((2, 5, 3)), lengths=[5]),
        ValueError,
        "lengths",
        id="run-lengths-short",
    ),
    pytest.param(
        lambda: ENGINE.run(np.ones((2, 5, 3)), lengths=[5.0, 2.0]),
        ValueError,
        "lengths",
        id="run-lengths-float",
    ),
    pytest.param(
        lambda: ENGINE.run([GOOD, _with(np.nan)], strict=True),
        ValueError,
        "sequence 1",
        id="run-strict-nan",
    ),
    pytest.param(
        lambda: ENGINE.run([np.ones((9, 3))], strict=True),
        ValueError,
        "sequence 0 has length 9",
        id="run-strict-too-long",
    ),
]


@pytest.mark.parametrize("call, error, match", CONSTRUCTOR_CASES + RUN_CASES)
def test_bad_argument_raises_naming_it(call, error, match):
    with pytest.raises(error, match=match):
        call()


BAD_SEQUENCES = [
    pytest.param(_with(1e39), "overflow past the largest float32", id="float64-1e39"),
    pytest.param(_with(-1e39), "overflow past the largest float32", id="float64-minus-1e39"),
    pytest.param(_with(np.nan), "NaN or infinite", id="nan"),
    pytest.param(_with(np.inf, dtype=np.float32), "NaN or infinite", id="inf"),
    pytest.param(GOOD.astype(bool), "got dtype bool", id="bool"),
    pytest.param(GOOD.astype(np.complex64), "must be real numbers", id="complex"),
    pytest.param(np.array([["a", "b", "c"]]), "must be real numbers", id="strings"),
    pytest.param(np.ones((5, 4)), r"shape \(length, input_size=3\)", id="wrong-width"),
    pytest.param(np.ones((5, 3, 1)), r"shape \(length, input_size=3\)", id="rank-3"),
    pytest.param(np.ones(3), r"shape \(length, input_size=3\)", id="rank-1"),
    pytest.param([[1.0, 2.0, 3.0], [1.0, 2.0]], "not a rectangular", id="ragged-list"),
    pytest.param(np.ones((9, 3)), "length 9 > the largest bucket 8", id="past-largest-bucket"),
]


@pytest.mark.parametrize("bad, reason", BAD_SEQUENCES)
def test_bad_sequence_is_isolated(bad, reason):
    result = ENGINE.run([GOOD, bad, GOOD[:2]])
    assert result.ok.tolist() == [True, False, True]
    assert result.errors[0] is None and result.errors[2] is None
    assert "sequence 1" in result.errors[1]
    assert re.search(reason, result.errors[1])
    assert np.isnan(result.final_state.h[1]).all() and np.isnan(result.final_state.c[1]).all()
    assert np.isfinite(result.final_state.h[[0, 2]]).all()
    alone = ENGINE.run([GOOD, GOOD[:2]])
    np.testing.assert_array_equal(result.final_state.h[[0, 2]], alone.final_state.h)


def test_float64_within_float32_range_is_accepted():
    """The finiteness check is after the cast: 3e38 fits float32 and is computed (ok=True)."""
    result = ENGINE.run([_with(3e38)])
    assert result.ok.tolist() == [True] and result.errors == (None,)


def test_values_past_the_length_are_not_checked():
    """Lengths mark the valid prefix: 1e39 or NaN past it does not make a sequence bad."""
    padded = np.stack([_with(1e39, row=4), _with(np.nan, row=3)])
    result = ENGINE.run(padded, lengths=np.array([4, 3]))
    assert result.ok.tolist() == [True, True]
    expected = ENGINE.run([GOOD[:4], GOOD[:3]])
    np.testing.assert_array_equal(result.final_state.h, expected.final_state.h)


def test_float64_engine_accepts_1e39(x64):
    params = jax.tree_util.tree_map(lambda w: jnp.asarray(w, jnp.float64), PARAMS)
    result = InferenceEngine(CELL, params).run([_with(1e39)])
    assert result.ok.tolist() == [True] and np.isfinite(result.final_state.h).all()
