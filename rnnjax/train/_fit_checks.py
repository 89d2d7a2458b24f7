"""Argument checks of :func:`rnnjax.train.fit`: each bad value is a TypeError or ValueError that
names the argument, what it must be and what it got."""

import math
import numbers
import os
from typing import Any

NONFINITE_MODES = ("raise", "skip")


def check_int(name: str, value: Any, *, minimum: int, optional: bool = False) -> None:
    """``value`` is an int (not a bool) of at least ``minimum`` (or ``None`` if ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        expected = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {expected}; got {value!r} ({type(value).__name__}).")
    if value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}; got {value!r}.")


def check_fit_arguments(
    *,
    loss_fn,
    step,
    epochs,
    batch_size,
    seed,
    mode,
    patience,
    min_delta,
    monitor,
    eval_fn,
    eval_data,
    checkpoint_dir,
    resume,
    on_nonfinite,
) -> None:
    """Raise on the first bad argument of :func:`fit`."""
    if step is None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
    if step is not None:
        if not callable(step):
            raise TypeError(
                f"step must be callable, step(state, batch, key) -> (state, metrics); got "
                f"{type(step).__name__}."
            )
        if loss_fn is not None:
            raise ValueError(
                "pass loss_fn or step, not both: with step=, pass loss_fn=None (the step holds "
                "its own loss)."
            )
    check_int("epochs", epochs, minimum=1)
    check_int("batch_size", batch_size, minimum=1, optional=True)
    check_int("seed", seed, minimum=0)
    check_int("patience", patience, minimum=1, optional=True)
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}.")
    if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real):
        raise TypeError(f"min_delta must be a real number; got {type(min_delta).__name__}.")
    if not (math.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(f"min_delta must be finite and >= 0; got {min_delta!r}.")
    if monitor is not None and not isinstance(monitor, str):
        raise TypeError(f"monitor must be a metric name (str) or None; got {monitor!r}.")
    if (eval_fn is None) != (eval_data is None):
        raise ValueError("eval_fn and eval_data go together; pass both or neither.")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable; got {type(eval_fn).__name__}.")
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, str | os.PathLike):
        raise TypeError(
            f"checkpoint_dir must be a path (str or os.PathLike) or None; got "
            f"{type(checkpoint_dir).__name__}."
        )
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir; got checkpoint_dir=None.")
    if on_nonfinite not in NONFINITE_MODES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_MODES}; got {on_nonfinite!r}.")
