"""What every application shares: the optimizer recipe, a validation split, seeds summarised as
mean ± spread, and the wall time of each run.

The recipe is the one the training docs teach: Adam on a warmup-then-cosine learning-rate
schedule (``optax.warmup_cosine_decay_schedule``) behind ``optax.clip_by_global_norm``
(:func:`rnnjax.train.with_clipping`), the LSTM's forget-gate bias at its default 1.0, early
stopping on a validation split carved from the training data (never the test split), and
several seeds reported as mean ± standard deviation with their range.
"""

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import optax

import rnnjax.train as train


def optimizer(
    learning_rate: float,
    total_steps: int,
    *,
    warmup_fraction: float = 0.05,
    final_fraction: float = 0.02,
    max_norm: float = 1.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """Adam (AdamW with ``weight_decay``) on a linear warmup then cosine decay, with clipping.

    The rate climbs from 0 to ``learning_rate`` over the first ``warmup_fraction`` of
    ``total_steps``, then decays along a cosine to ``final_fraction * learning_rate``.

    >>> opt = optimizer(3e-3, total_steps=1000)
    """
    warmup = max(1, int(warmup_fraction * total_steps))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup, max(total_steps, warmup + 1), final_fraction * learning_rate
    )
    if weight_decay:
        return train.with_clipping(
            optax.adamw(schedule, weight_decay=weight_decay), max_norm=max_norm
        )
    return train.with_clipping(optax.adam(schedule), max_norm=max_norm)


def split_validation(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, validation indices)``: a random ``fraction`` of ``range(count)`` held out.

    >>> fit_index, validation_index = split_validation(100, 0.2, seed=0)
    """
    order = np.random.default_rng(seed).permutation(count)
    held = max(1, int(round(fraction * count)))
    return np.sort(order[held:]), np.sort(order[:held])


def spread(values: Sequence[float]) -> dict:
    """``{"mean", "std", "min", "max", "values"}`` of one metric over seeds (sample std).

    >>> spread([0.97, 0.98, 0.99])["mean"]
    0.98
    """
    array = np.asarray(values, np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {
        "mean": round(float(array.mean()), 12),
        "std": std,
        "min": float(array.min()),
        "max": float(array.max()),
        "values": [float(v) for v in array],
    }


def show(stats: dict, digits: int = 3) -> str:
    """``"0.981 ± 0.004 (0.976-0.985)"``: mean ± std (min-max) of a :func:`spread`.

    >>> show(spread([0.97, 0.98, 0.99]))
    '0.980 ± 0.010 (0.970-0.990)'
    """
    f = f"{{:.{digits}f}}"
    return (
        f"{f.format(stats['mean'])} ± {f.format(stats['std'])} "
        f"({f.format(stats['min'])}-{f.format(stats['max'])})"
    )


def timed(function: Callable, *args, **kwargs) -> tuple[object, float]:
    """``(function(*args, **kwargs), wall seconds)``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Training steps in one epoch of ``fit`` (the last partial batch is dropped)."""
    return max(1, count // batch_size)


def minutes(seconds: float) -> str:
    """``"3.2 min"`` or ``"45 s"``."""
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{math.ceil(seconds)} s"
