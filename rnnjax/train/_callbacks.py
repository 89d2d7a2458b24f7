"""Hooks into :func:`rnnjax.train.fit` and the metric writers it feeds (CSV, JSON lines,
TensorBoard).

A callback is any object with ``on_step_end`` and/or ``on_epoch_end`` (:class:`Callback` gives
no-op defaults); returning ``True`` from either stops training after that step or epoch. A writer
is any object with ``write(step, metrics)``: :func:`fit` calls it once per epoch with the epoch's
history record and the global step count. The built-in writers append, one file open per call,
so they can be shared by a run and its resumed continuation and need no closing.
"""

import csv
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class Callback:
    """Base class with no-op hooks; override the ones you need.

    >>> import rnnjax
    >>> class StopBelow(rnnjax.train.Callback):
    ...     def on_epoch_end(self, epoch, record, state):
    ...         return record["train_loss"] < 0.1     # True stops training
    >>> StopBelow().on_epoch_end(1, {"train_loss": 0.05}, None)
    True
    """

    def on_step_end(self, step: int, metrics: Mapping[str, Any], state: Any) -> bool | None:
        """After each optimizer step: ``step`` counts steps from 1 over the whole run (resumes
        included), ``metrics`` holds the step's values (device arrays: ``float()`` on them
        waits for the device), ``state`` is the new :class:`TrainState`."""
        return None

    def on_epoch_end(self, epoch: int, record: Mapping[str, float], state: Any) -> bool | None:
        """After each epoch (evaluation included): ``record`` is the epoch's history entry."""
        return None


def check_callbacks(callbacks: Any) -> tuple:
    """``callbacks`` as a tuple, or a TypeError naming the one that has no hook."""
    if callbacks is None:
        return ()
    if not isinstance(callbacks, list | tuple):
        raise TypeError(
            f"callbacks must be a list or tuple of callbacks; got {type(callbacks).__name__}."
        )
    for index, callback in enumerate(callbacks):
        if not any(
            callable(getattr(callback, name, None)) for name in ("on_step_end", "on_epoch_end")
        ):
            raise TypeError(
                f"callbacks[{index}] ({type(callback).__name__}) has neither on_step_end nor "
                "on_epoch_end."
            )
    return tuple(callbacks)


def check_writers(writers: Any) -> tuple:
    """``writers`` as a tuple, or a TypeError naming the one without ``write``."""
    if writers is None:
        return ()
    if not isinstance(writers, list | tuple):
        raise TypeError(
            f"writers must be a list or tuple of writers; got {type(writers).__name__}."
        )
    for index, writer in enumerate(writers):
        if not callable(getattr(writer, "write", None)):
            raise TypeError(
                f"writers[{index}] ({type(writer).__name__}) has no write(step, metrics) method."
            )
    return tuple(writers)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items()}


class JSONLWriter:
    """Appends one JSON object per call, ``{"step": step, **metrics}``, to ``path``.

    Non-finite values are written as ``NaN``/``Infinity`` (Python's ``json`` reads them back).

    >>> import json, tempfile, os, rnnjax
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
    >>> rnnjax.train.JSONLWriter(path).write(10, {"train_loss": 0.5})
    >>> json.loads(open(path).read())
    {'step': 10, 'train_loss': 0.5}
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append ``metrics`` at ``step``."""
        with self.path.open("a") as file:
            file.write(json.dumps({"step": int(step), **_scalars(metrics)}) + "\n")


class CSVWriter:
    """Appends one row per call to a CSV file with a ``step`` column and one per metric.

    The header is the first call's metric names; a later call with a new name rewrites the
    file with the wider header (earlier rows get empty cells).

    >>> import csv, tempfile, os, rnnjax
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.csv")
    >>> writer = rnnjax.train.CSVWriter(path)
    >>> writer.write(1, {"train_loss": 0.5})
    >>> writer.write(2, {"train_loss": 0.25, "learning_rate": 0.1})
    >>> [row["learning_rate"] for row in csv.DictReader(open(path))]
    ['', '0.1']
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> tuple[list[str], list[dict]]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return [], []
        with self.path.open(newline="") as file:
            reader = csv.DictReader(file)
            return list(reader.fieldnames or []), list(reader)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append a row for ``metrics`` at ``step``."""
        row = {"step": int(step), **_scalars(metrics)}
        header, rows = self._read()
        if header and all(name in header for name in row):
            with self.path.open("a", newline="") as file:
                csv.DictWriter(file, fieldnames=header).writerow(row)
            return
        header = header + [name for name in row if name not in header]
        with self.path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows + [row])


class TensorBoardWriter:
    """Writes each metric as a TensorBoard scalar through ``tensorboardX`` (``pip install
    tensorboardX``), tagged by its name, at ``step``. Non-finite values are skipped.

    Raises:
      ImportError: tensorboardX is not installed.

    >>> import tempfile, rnnjax
    >>> writer = rnnjax.train.TensorBoardWriter(tempfile.mkdtemp())
    >>> writer.write(1, {"train_loss": 0.5})
    >>> writer.close()
    """

    def __init__(self, logdir: str | os.PathLike):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as error:
            raise ImportError(
                f"TensorBoardWriter needs tensorboardX ({error}); install it with "
                "`pip install tensorboardX`, or use CSVWriter / JSONLWriter."
            ) from error
        self._writer = SummaryWriter(str(logdir))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Add each finite metric as a scalar at ``step`` and flush."""
        for name, value in _scalars(metrics).items():
            if math.isfinite(value):
                self._writer.add_scalar(name, value, int(step))
        self._writer.flush()

    def close(self) -> None:
        """Close the event file."""
        self._writer.close()
