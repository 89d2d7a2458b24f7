"""Atomic checkpoints of any pytree of arrays (params, optax state, step, PRNG keys).

A checkpoint is one file, ``checkpoint_<step>.msgpack``: an 8-byte magic, the SHA-256 of the
payload, and the payload (``flax.serialization`` msgpack of the pytree's state dict, which stores
every array's raw bytes, dtype and shape, so a round trip is bit-for-bit). It is written to a
temporary file in the same directory, flushed and ``fsync``-ed, then moved over the final name
with ``os.replace`` (atomic on POSIX) and the directory is ``fsync``-ed. A crash at any point
leaves either the old set of checkpoints or the new one, never a torn file under a checkpoint
name; a file damaged by other means fails its checksum and :func:`restore_checkpoint` falls back
to the newest intact one.
"""

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

_MAGIC = b"RNNJAXC1"
_PATTERN = re.compile(r"^checkpoint_(\d+)\.msgpack$")
_TEMPORARY = re.compile(r"^\.checkpoint_(\d+)\.msgpack\..+\.tmp$")
_log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint is missing or does not match the target."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is truncated or damaged (bad header or checksum)."""


def _is_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _encode(target: Any) -> bytes:
    raw = jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, target)
    payload = serialization.msgpack_serialize(serialization.to_state_dict(raw))
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def _decode(data: bytes, source: str) -> Any:
    header = len(_MAGIC) + 32
    if len(data) < header or not data.startswith(_MAGIC):
        raise CorruptCheckpointError(
            f"{source} is not an rnnjax checkpoint (bad header or truncated)."
        )
    payload = data[header:]
    if hashlib.sha256(payload).digest() != data[len(_MAGIC) : header]:
        raise CorruptCheckpointError(f"{source} is corrupt or truncated (checksum mismatch).")
    return serialization.msgpack_restore(payload)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """Steps of the checkpoint files in ``directory``, ascending (not verified)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    matches = (_PATTERN.match(p.name) for p in directory.iterdir())
    return sorted(int(m.group(1)) for m in matches if m)


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """``directory / checkpoint_<step>.msgpack``."""
    return Path(directory) / f"checkpoint_{int(step)}.msgpack"


def save_checkpoint(
    directory: str | os.PathLike, target: Any, step: int, *, keep: int | None = None
) -> Path:
    """Write ``target`` atomically as the checkpoint of ``step``; keep the newest ``keep``.

    Args:
      directory: created if missing.
      target: a pytree of arrays and scalars (NamedTuples, dicts, tuples, ``None``, typed PRNG
        keys), e.g. ``TrainState(params, opt_state, step)``.
      step: non-negative int naming the checkpoint; an existing one of that step is replaced.
      keep: delete all but the newest ``keep`` checkpoints after writing (``None``: keep all).

    Temporaries that killed writes of this or an earlier step left behind (``.checkpoint_<s>
    .msgpack.*.tmp``, ``s <= step``) are deleted once this checkpoint is in place; those of later
    steps are left alone (another writer may still be on them).

    Returns:
      The path written.

    >>> rnnjax.train.save_checkpoint("runs/ckpt", train_state, step=100, keep=3)
    """
    if not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be a non-negative int; got {step!r}.")
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be a positive int or None; got {keep!r}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    _atomic_write(path, _encode(target))
    for leftover in directory.iterdir():
        match = _TEMPORARY.match(leftover.name)
        if match and int(match.group(1)) <= step:
            leftover.unlink(missing_ok=True)
    if keep is not None:
        for old in checkpoint_steps(directory)[:-keep]:
            checkpoint_path(directory, old).unlink(missing_ok=True)
    return path


def _restore_leaf(path, template, value):
    name = jax.tree_util.keystr(path)
    if _is_key(template):
        value = np.asarray(value)
        data = jax.random.key_data(template)
        if value.shape != data.shape:
            raise CheckpointError(
                f"leaf {name}: expected key data {data.shape}, got {value.shape}."
            )
        return jax.random.wrap_key_data(value, impl=jax.random.key_impl(template))
    if not hasattr(template, "shape"):
        return value
    value = np.asarray(value)
    if value.shape != tuple(template.shape) or value.dtype != template.dtype:
        raise CheckpointError(
            f"leaf {name}: checkpoint holds {value.dtype}{list(value.shape)}, the target expects "
            f"{template.dtype}{list(template.shape)}."
        )
    return jnp.asarray(value) if isinstance(template, jax.Array) else value


def _load(path: Path, target: Any) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}.") from None
    state = _decode(data, str(path))
    raw_target = jax.tree_util.tree_map(
        lambda x: jax.random.key_data(x) if _is_key(x) else x, target
    )
    try:
        restored = serialization.from_state_dict(raw_target, state)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} does not match the target's structure: {error}") from None
    return jax.tree_util.tree_map_with_path(_restore_leaf, target, restored)


def restore_checkpoint(
    directory: str | os.PathLike, target: Any, *, step: int | None = None
) -> tuple[Any, int]:
    """Read a checkpoint into the structure of ``target``.

    Args:
      directory: the directory :func:`save_checkpoint` wrote to.
      target: a pytree like the saved one (its values are ignored; shapes and dtypes are checked).
      step: the step to read; ``None`` reads the newest checkpoint that passes its checksum,
        skipping (and logging) damaged ones.

    Returns:
      ``(restored, step)``: leaves are ``jax.Array`` where ``target``'s are, NumPy otherwise.

    Raises:
      CorruptCheckpointError: the requested step's file is damaged.
      CheckpointError: no intact checkpoint, or it does not match ``target``.

    >>> train_state, step = rnnjax.train.restore_checkpoint("runs/ckpt", train_state)
    """
    if step is not None:
        return _load(checkpoint_path(directory, step), target), int(step)
    steps = checkpoint_steps(directory)
    for candidate in reversed(steps):
        try:
            return _load(checkpoint_path(directory, candidate), target), candidate
        except CorruptCheckpointError as error:
            _log.warning("skipping damaged checkpoint: %s", error)
    raise CheckpointError(f"no intact checkpoint in {directory} (found steps {steps}).")
