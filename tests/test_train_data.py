"""Preprocessing: padding, bucketing, standardisation and windowing (plain NumPy checks)."""

import numpy as np
import pytest

from rnnjax import train


def test_pad_sequences():
    x, lengths = train.pad_sequences([np.ones((3, 2)), 2 * np.ones((1, 2)), np.zeros((0, 2))])
    assert x.shape == (3, 3, 2) and lengths.tolist() == [3, 1, 0]
    np.testing.assert_array_equal(x[1], [[2, 2], [0, 0], [0, 0]])
    cut, cut_lengths = train.pad_sequences(
        [[1, 2, 3, 4], [5]], max_length=2, value=-1, dtype=np.float32
    )
    np.testing.assert_array_equal(cut, [[1, 2], [5, -1]])
    assert cut.dtype == np.float32 and cut_lengths.tolist() == [2, 1]


def test_pad_sequences_errors():
    with pytest.raises(ValueError, match="at least one sequence"):
        train.pad_sequences([])
    with pytest.raises(
        ValueError, match=r"equal trailing shapes; got shapes \[\(1, 2\), \(1, 3\)\]"
    ):
        train.pad_sequences([np.ones((1, 2)), np.ones((1, 3))])


def test_bucket_by_length_covers_every_sequence_once():
    rng = np.random.default_rng(0)
    sequences = [rng.normal(size=(n, 1)) for n in rng.integers(1, 30, size=50)]
    batches = list(train.bucket_by_length(sequences, 8, boundaries=[10, 20, 30], seed=1))
    seen = np.concatenate([b.indices for b in batches])
    assert sorted(seen.tolist()) == list(range(50))
    for padded, lengths, indices in batches:
        assert len(indices) <= 8 and padded.shape[1] in (10, 20, 30)
        for row, i in enumerate(indices):
            n = len(sequences[i])
            assert lengths[row] == n and padded.shape[1] - 10 < n <= padded.shape[1]
            np.testing.assert_array_equal(padded[row, :n], sequences[i])
    again = list(train.bucket_by_length(sequences, 8, boundaries=[10, 20, 30], seed=1))
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(batches, again, strict=True))
    full = list(train.bucket_by_length(sequences, 8, boundaries=[10, 20, 30], drop_remainder=True))
    assert all(len(b.indices) == 8 for b in full)
    assert list(train.bucket_by_length([], 8)) == []


def test_bucket_errors():
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        next(train.bucket_by_length([np.ones(2)], 0))
    with pytest.raises(
        ValueError, match=r"boundaries must be positive and increasing; got \[5, 3\]"
    ):
        next(train.bucket_by_length([np.ones(2)], 1, boundaries=[5, 3]))


def test_standardize_uses_training_statistics():
    rng = np.random.default_rng(0)
    series = rng.normal(5.0, 3.0, size=(1000, 2)).astype(np.float32)
    series[:, 1] = 7.0  # constant feature: no division by zero
    scaler = train.fit_standardizer(series[:800])
    z = train.standardize(series, scaler)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:800, 0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:800, 0].std(), 1.0, atol=1e-5)
    np.testing.assert_array_equal(z[:, 1], 0.0)
    np.testing.assert_allclose(train.unstandardize(z, scaler), series, rtol=1e-5)


def test_sliding_windows():
    x, y = train.sliding_windows(np.arange(10.0), 3)
    assert x.shape == (7, 3, 1) and y.shape == (7, 1)
    np.testing.assert_array_equal(x[0, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(y[:, 0], np.arange(3.0, 10.0))
    x, y = train.sliding_windows(np.arange(20.0).reshape(10, 2), 4, horizon=2, stride=3)
    np.testing.assert_array_equal(x[1, 0], [6, 7])
    np.testing.assert_array_equal(y[1], [16, 17])  # step 3 + 4 + 2 - 1 = 8
    assert len(x) == 2


def test_sliding_window_errors():
    with pytest.raises(ValueError, match="shorter than window \\+ horizon = 6"):
        train.sliding_windows(np.arange(5.0), 5)
    with pytest.raises(ValueError, match="stride must be a positive int; got 0"):
        train.sliding_windows(np.arange(5.0), 2, stride=0)
    with pytest.raises(ValueError, match=r"series must have shape \[T\] or \[T, F\]"):
        train.sliding_windows(np.ones((3, 3, 3)), 1)
