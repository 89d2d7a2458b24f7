"""Checkpoints of any pytree of arrays (params, optax state, step, PRNG keys) on orbax.

A checkpoint is orbax's directory ``<directory>/<step>/``, written by an
``orbax.checkpoint.CheckpointManager``: the arrays as one flat dict (``arrays/``, every host
writing its own shards of sharded arrays) and an rnnjax manifest (``manifest/``: each leaf's path,
shape, dtype and SHA-256, and the Python scalars; see ``_manifest``). orbax writes into a
temporary directory and renames it when every host is done (the atomic commit), so a crash at
any point leaves the old set of checkpoints; it keeps the newest ``keep`` and saves in a
background thread when asked. Restoring reads each array straight into the sharding of the
template's leaf. The first format, one ``checkpoint_<step>.msgpack`` file, is still read.

One process writes to a directory at a time (per process index): a writer holds
``.rnnjax-writer-<i>.lock`` (``_lock``), and a second one fails at once naming the owner's pid and
host. Needs ``orbax-checkpoint`` (``pip install 'rnnjax[flax]'``); ``import rnnjax`` does not
import it.
"""

import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rnnjax.train import _manifest
from rnnjax.train._errors import CheckpointError, CorruptCheckpointError, require
from rnnjax.train._legacy import PATTERN, legacy_path, load_legacy
from rnnjax.train._lock import DirectoryLock

_log = logging.getLogger(__name__)
_PURPOSE = "rnnjax's checkpoints"


def _check_step(step: Any, name: str = "step") -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer):
        raise TypeError(f"{name} must be an int; got {step!r} ({type(step).__name__}).")
    if step < 0:
        raise ValueError(f"{name} must be a non-negative int; got {step!r}.")
    return int(step)


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """Steps of the committed checkpoints in ``directory``, ascending (not verified).

    >>> import tempfile, rnnjax
    >>> rnnjax.train.checkpoint_steps(tempfile.mkdtemp())
    []
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = set()
    for entry in directory.iterdir():
        if entry.name.isdigit() and entry.is_dir():
            steps.add(int(entry.name))
        elif match := PATTERN.match(entry.name):
            steps.add(int(match.group(1)))
    return sorted(steps)


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` lives: ``directory / str(step)``, or the legacy
    ``checkpoint_<step>.msgpack`` file when only that exists.

    >>> import rnnjax
    >>> rnnjax.train.checkpoint_path("runs/a", 3).name
    '3'
    """
    step = _check_step(step)
    path = Path(directory) / str(step)
    legacy = legacy_path(directory, step)
    return legacy if not path.exists() and legacy.exists() else path


class CheckpointManager:
    """Writes checkpoints to one directory under its writer lock; orbax's manager underneath.

    Args:
      directory: created if missing.
      keep: keep the newest ``keep`` checkpoints (``None``: all).
      async_save: :meth:`save` returns once the arrays are copied to host memory and writes
        them in a background thread; :meth:`wait` and :meth:`close` wait for it.

    Raises:
      CheckpointLockError: another live process writes to ``directory`` (names its pid, host).
      ImportError: orbax-checkpoint is not installed.

    >>> import tempfile, jax.numpy as jnp, rnnjax
    >>> directory = tempfile.mkdtemp()
    >>> with rnnjax.train.CheckpointManager(directory, keep=2) as manager:
    ...     for step in range(3):
    ...         path = manager.save(step, {"w": jnp.full(3, step)})
    >>> rnnjax.train.checkpoint_steps(directory)
    [1, 2]
    """

    def __init__(
        self, directory: str | os.PathLike, *, keep: int | None = None, async_save: bool = True
    ):
        if keep is not None and (
            isinstance(keep, bool) or not isinstance(keep, int | np.integer) or keep < 1
        ):
            raise ValueError(f"keep must be a positive int or None; got {keep!r}.")
        ocp = require("orbax.checkpoint", _PURPOSE)
        self.directory = Path(directory).absolute()
        self._ocp = ocp
        self._lock = DirectoryLock(self.directory, jax.process_index()).acquire()
        try:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=None if keep is None else int(keep),
                enable_async_checkpointing=bool(async_save),
                cleanup_tmp_directories=True,  # safe: the lock holder is the only writer
            )
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=("arrays", "manifest")
            )
        except BaseException:
            self._lock.release()
            raise

    def save(self, step: int, target: Any) -> Path:
        """Save ``target`` (a pytree of arrays, typed PRNG keys, bool/int/float/str) as ``step``.

        An existing checkpoint of ``step`` is replaced. Returns the checkpoint's directory.
        """
        step = _check_step(step)
        if self._manager is None:
            raise CheckpointError(f"the CheckpointManager of {self.directory} is closed.")
        arrays, manifest = _manifest.split(target)
        if step in self._manager.all_steps():
            self._manager.wait_until_finished()
            self._manager.delete(step)
        items = {"manifest": self._ocp.args.JsonSave(manifest)}
        if arrays:
            items["arrays"] = self._ocp.args.PyTreeSave(arrays)
        self._manager.save(step, args=self._ocp.args.Composite(**items), force=True)
        return self.directory / str(step)

    def wait(self) -> None:
        """Block until every save has been committed."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def steps(self) -> list[int]:
        """:func:`checkpoint_steps` of the directory (after committing pending saves)."""
        self.wait()
        return checkpoint_steps(self.directory)

    def restore(self, target: Any, *, step: int | None = None) -> tuple[Any, int]:
        """:func:`restore_checkpoint` of the directory (after committing pending saves)."""
        self.wait()
        return restore_checkpoint(self.directory, target, step=step)

    def close(self) -> None:
        """Wait for pending saves, then release the lock."""
        if self._manager is None:
            return
        manager, self._manager = self._manager, None
        try:
            manager.close()
        finally:
            self._lock.release()

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def save_checkpoint(
    directory: str | os.PathLike, target: Any, step: int, *, keep: int | None = None
) -> Path:
    """Write ``target`` as the checkpoint of ``step`` and wait for it; keep the newest ``keep``.

    Args:
      directory: created if missing; locked while writing (see :class:`CheckpointManager`).
      target: a pytree of arrays and scalars (NamedTuples, dicts, tuples, ``None``, typed PRNG
        keys, bool/int/float/str), e.g. ``TrainState(params, opt_state, step)``.
      step: non-negative int naming the checkpoint; an existing one of that step is replaced.
      keep: delete all but the newest ``keep`` checkpoints after writing (``None``: keep all).

    Returns:
      The checkpoint's directory.

    >>> import tempfile, jax.numpy as jnp, rnnjax
    >>> directory = tempfile.mkdtemp()
    >>> rnnjax.train.save_checkpoint(directory, {"w": jnp.ones(3)}, step=100).name
    '100'
    """
    step = _check_step(step)
    with CheckpointManager(directory, keep=keep, async_save=False) as manager:
        return manager.save(step, target)


def _load_orbax(path: Path, target: Any) -> Any:
    ocp = require("orbax.checkpoint", _PURPOSE)
    try:  # a plain Checkpointer reads one step without a (read-only) manager's warnings
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            manifest = checkpointer.restore(
                path, args=ocp.args.Composite(manifest=ocp.args.JsonRestore())
            )["manifest"]
            abstract = _manifest.match(target, manifest, str(path))
            arrays = {}
            if abstract:
                restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
                arrays = checkpointer.restore(
                    path,
                    args=ocp.args.Composite(
                        arrays=ocp.args.PyTreeRestore(
                            abstract, restore_args=restore_args, partial_restore=True
                        )
                    ),
                )["arrays"]
    except CheckpointError:
        raise
    except Exception as error:  # orbax and tensorstore raise many types for damaged files
        raise CorruptCheckpointError(
            f"{path} cannot be read ({type(error).__name__}: {str(error)[:300]})."
        ) from error
    return _manifest.assemble(target, manifest, arrays, str(path))


def _load(directory: Path, step: int, target: Any) -> Any:
    path = Path(directory) / str(step)
    if path.is_dir():
        return _load_orbax(path, target)
    legacy = legacy_path(directory, step)
    if legacy.exists():
        return load_legacy(legacy, target)
    raise CheckpointError(f"no checkpoint at {path} (nor {legacy.name}).")


def restore_checkpoint(
    directory: str | os.PathLike, target: Any, *, step: int | None = None
) -> tuple[Any, int]:
    """Read a checkpoint into the structure, and the shardings, of ``target``.

    Args:
      directory: the directory :func:`save_checkpoint` (or an older rnnjax's msgpack writer)
        wrote to.
      target: a pytree like the saved one; its values are ignored, its shapes and dtypes are
        checked, and each ``jax.Array`` (or ``jax.ShapeDtypeStruct``) leaf's sharding is where
        that array is restored to (e.g. split over a mesh's ``"model"`` axis).
      step: the step to read (an int); ``None`` reads the newest checkpoint that restores,
        skipping (and logging at WARNING, with the reason) damaged ones and ones that do not
        match ``target``.

    Returns:
      ``(restored, step)``: leaves are ``jax.Array`` where ``target``'s are, NumPy where
      ``target``'s are NumPy, Python values where ``target``'s are.

    Raises:
      TypeError: ``step`` is not an int (e.g. ``2.7``).
      CorruptCheckpointError: the requested step's checkpoint is damaged.
      CheckpointError: no checkpoint restores, or the requested one does not match ``target``
        (the message names the leaf).

    >>> import tempfile, jax.numpy as jnp, rnnjax
    >>> directory = tempfile.mkdtemp()
    >>> _ = rnnjax.train.save_checkpoint(directory, {"w": jnp.arange(3.0)}, step=7)
    >>> restored, step = rnnjax.train.restore_checkpoint(directory, {"w": jnp.zeros(3)})
    >>> step, restored["w"].tolist()
    (7, [0.0, 1.0, 2.0])
    """
    directory = Path(directory)
    if step is not None:
        step = _check_step(step)
        return _load(directory, step, target), step
    steps = checkpoint_steps(directory)
    if not steps:
        raise CheckpointError(f"no intact checkpoint in {directory} (found steps []).")
    reasons = []
    for candidate in reversed(steps):
        try:
            return _load(directory, candidate, target), candidate
        except CheckpointError as error:
            _log.warning("skipping checkpoint %d of %s: %s", candidate, directory, error)
            reasons.append(f"step {candidate}: {error}")
    raise CheckpointError(
        f"no intact checkpoint in {directory} restores into the target (found steps {steps}); "
        + "; ".join(reasons)
    )
