"""Host-side preprocessing (NumPy): pad and bucket variable-length sequences, standardise and
window time series.

The seed lists "ignoring data preprocessing (tokenization, normalization)" among the common
mistakes. These helpers produce what the layers take: dense ``[B, T, ...]`` batches with
``lengths [B]`` (padding is masked by every rnnjax layer and loss), and standardised
``(inputs [N, L, F], targets [N, F])`` windows of a series.
"""

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np


def pad_sequences(
    sequences: Sequence[np.ndarray],
    *,
    max_length: int | None = None,
    value: float = 0.0,
    dtype=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences of different lengths into one zero-padded batch (padding at the end).

    Args:
      sequences: ``N`` arrays ``[T_i, ...]`` (or lists), equal trailing shape.
      max_length: ``T`` of the batch; longer sequences are truncated (their length becomes ``T``).
        Defaults to the longest sequence.
      value: fill value of the padding.
      dtype: result dtype (defaults to the sequences' common dtype).

    Returns:
      ``(padded [N, T, ...], lengths [N] int32)``.

    Raises:
      ValueError: no sequences, or trailing shapes differ.

    >>> import rnnjax
    >>> x, lengths = rnnjax.train.pad_sequences([[1, 2, 3], [4]])   # x [[1,2,3],[4,0,0]]
    """
    arrays = [np.asarray(s) for s in sequences]
    if not arrays:
        raise ValueError("sequences must hold at least one sequence; got none.")
    trailing = {a.shape[1:] for a in arrays}
    if len(trailing) > 1 or any(a.ndim == 0 for a in arrays):
        raise ValueError(
            f"sequences must be arrays [T_i, ...] with equal trailing shapes; got shapes "
            f"{sorted({a.shape for a in arrays})}."
        )
    lengths = np.array([a.shape[0] for a in arrays], np.int32)
    if max_length is not None and (
        isinstance(max_length, bool)
        or not isinstance(max_length, int | np.integer)
        or max_length < 0
    ):
        raise ValueError(f"max_length must be a non-negative int or None; got {max_length!r}.")
    length = int(lengths.max()) if max_length is None else int(max_length)
    dtype = np.result_type(*arrays) if dtype is None else dtype
    padded = np.full((len(arrays), length) + arrays[0].shape[1:], value, dtype)
    lengths = np.minimum(lengths, length)
    for row, (array, n) in enumerate(zip(arrays, lengths, strict=True)):
        padded[row, :n] = array[:n]
    return padded, lengths


class Bucket(NamedTuple):
    """One batch from :func:`bucket_by_length`: ``padded [b, T_bucket, ...]``, ``lengths [b]``
    and ``indices [b]`` (positions in the original list)."""

    padded: np.ndarray
    lengths: np.ndarray
    indices: np.ndarray


def bucket_by_length(
    sequences: Sequence[np.ndarray],
    batch_size: int,
    *,
    boundaries: Sequence[int] | None = None,
    seed: int | None = None,
    drop_remainder: bool = False,
) -> Iterator[Bucket]:
    """Group sequences of similar length into batches padded to their bucket's bound.

    Fewer padded steps than padding everything to the longest sequence, and only as many padded
    lengths as buckets (one ``jit`` compilation each).

    Args:
      sequences: ``N`` arrays ``[T_i, ...]``.
      batch_size: sequences per batch.
      boundaries: increasing upper bounds of the buckets; a sequence goes to the first bound
        ``>= T_i`` and is padded to it. Defaults to ``[max T_i]`` (a single bucket); longer
        sequences than the last bound are truncated to it.
      seed: shuffle within buckets and the order of batches (``None``: keep input order).
      drop_remainder: drop each bucket's last incomplete batch (static batch shapes).

    Yields:
      :class:`Bucket` batches (none for no sequences).

    >>> import numpy as np
    >>> import rnnjax
    >>> seqs = [np.ones((n, 3)) for n in (5, 12, 40, 60, 7)]
    >>> for x, lengths, _ in rnnjax.train.bucket_by_length(seqs, 32, boundaries=[16, 64], seed=0):
    ...     print(x.shape, lengths.tolist())
    (3, 16, 3) [...]
    (2, 64, 3) [...]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    lengths = np.array([np.shape(s)[0] for s in sequences], np.int64)
    if not len(lengths):
        return
    bounds = [int(lengths.max())] if boundaries is None else [int(b) for b in boundaries]
    if not bounds or any(b < 1 for b in bounds) or any(np.diff(bounds) <= 0):
        raise ValueError(f"boundaries must be positive and increasing; got {boundaries!r}.")
    bucket_of = np.minimum(np.searchsorted(bounds, lengths, side="left"), len(bounds) - 1)
    rng = None if seed is None else np.random.default_rng(seed)
    batches = []
    for bucket, bound in enumerate(bounds):
        members = np.flatnonzero(bucket_of == bucket)
        if rng is not None:
            members = rng.permutation(members)
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            if drop_remainder and len(chunk) < batch_size:
                continue
            batches.append((chunk, bound))
    order = range(len(batches)) if rng is None else rng.permutation(len(batches))
    for index in order:
        chunk, bound = batches[index]
        padded, chunk_lengths = pad_sequences([sequences[i] for i in chunk], max_length=bound)
        yield Bucket(padded, chunk_lengths, chunk)


class Standardizer(NamedTuple):
    """Per-feature ``mean`` and ``std`` fitted on training data (apply them to every split)."""

    mean: np.ndarray
    std: np.ndarray


def fit_standardizer(x: np.ndarray, *, axis=0, epsilon: float = 1e-8) -> Standardizer:
    """Mean and standard deviation of ``x`` over ``axis`` (e.g. time for a series ``[T, F]``).

    Fit on the training split only, so the test split does not leak into the scaling.
    ``std`` is floored at ``epsilon`` so constant features do not divide by zero.

    >>> import numpy as np
    >>> import rnnjax
    >>> train_series, test_series = np.arange(100.0), np.arange(100.0, 120.0)
    >>> scaler = rnnjax.train.fit_standardizer(train_series)
    >>> z = rnnjax.train.standardize(test_series, scaler)
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive (the floor of std); got {epsilon!r}.")
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"x must hold real numbers; got dtype {x.dtype}.")
    x = x.astype(np.float64)
    if x.size == 0:
        raise ValueError(f"x must hold at least one value along axis={axis}; got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(
            f"x must be finite; got {int((~np.isfinite(x)).sum())} NaN or infinite value(s) "
            f"(mean and std would be NaN and poison every standardized value)."
        )
    mean = x.mean(axis=axis, keepdims=True)
    std = np.maximum(x.std(axis=axis, keepdims=True), epsilon)
    return Standardizer(mean, std)


def _check_fitted(x, standardizer, name: str) -> np.ndarray:
    """``x`` as an array whose trailing shape matches the fitted statistics."""
    if not isinstance(standardizer, Standardizer):
        raise TypeError(
            f"standardizer must be a Standardizer (from fit_standardizer); got "
            f"{type(standardizer).__name__}."
        )
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}.")
    try:
        np.broadcast_shapes(x.shape, standardizer.mean.shape)
    except ValueError:
        raise ValueError(
            f"{name} of shape {x.shape} does not match the standardizer, fitted on data with "
            f"statistics of shape {standardizer.mean.shape} (same features, e.g. [T, F])."
        ) from None
    return x


def standardize(x: np.ndarray, standardizer: Standardizer) -> np.ndarray:
    """``(x - mean) / std``, in ``x``'s floating dtype (float32 for integer input).

    Raises:
      TypeError: ``standardizer`` is not a :class:`Standardizer`.
      ValueError: ``x``'s shape does not match the shape the standardizer was fitted on.
    """
    x = _check_fitted(x, standardizer, "x")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return ((x - standardizer.mean) / standardizer.std).astype(dtype)


def unstandardize(z: np.ndarray, standardizer: Standardizer) -> np.ndarray:
    """Inverse of :func:`standardize`: ``z * std + mean`` (same checks)."""
    z = _check_fitted(z, standardizer, "z")
    return (z * standardizer.std + standardizer.mean).astype(z.dtype)


def sliding_windows(
    series: np.ndarray, window: int, *, horizon: int = 1, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a series into ``(input, target)`` pairs for one-step (or ``horizon``-step) forecasting.

    Example ``i`` has input ``series[s : s + window]`` and target
    ``series[s + window + horizon - 1]``, with ``s = i * stride``.

    Args:
      series: ``[T]`` or ``[T, F]``.
      window: input length ``L``.
      horizon: steps ahead of the window's last step to predict (1 = the next step).
      stride: steps between consecutive windows.

    Returns:
      ``(inputs [N, L, F], targets [N, F])`` (``F = 1`` for a 1-D series).

    Raises:
      ValueError: the series is shorter than ``window + horizon`` or an argument is not positive.

    >>> import numpy as np
    >>> import rnnjax
    >>> x, y = rnnjax.train.sliding_windows(np.arange(10.0), 3)   # x[0] = [0,1,2], y[0] = [3]
    """
    series = np.asarray(series)
    if series.ndim == 1:
        series = series[:, None]
    if series.ndim != 2:
        raise ValueError(f"series must have shape [T] or [T, F]; got {series.shape}.")
    for name, value in (("window", window), ("horizon", horizon), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}.")
    span = window + horizon
    if series.shape[0] < span:
        raise ValueError(
            f"series of length {series.shape[0]} is shorter than window + horizon = {span}."
        )
    starts = np.arange(0, series.shape[0] - span + 1, stride)
    inputs = series[starts[:, None] + np.arange(window)[None, :]]
    targets = series[starts + span - 1]
    return inputs, targets
