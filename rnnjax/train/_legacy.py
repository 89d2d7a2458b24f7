"""Reader of rnnjax's first checkpoint format, ``checkpoint_<step>.msgpack`` (before orbax).

A file is an 8-byte magic, the SHA-256 of the payload, and the payload: ``flax.serialization``
msgpack of the pytree's state dict, where each array is a msgpack extension holding ``(shape,
dtype name, raw bytes)``. Arrays are decoded leaf by leaf against the target, so a payload whose
checksum holds but whose shapes do not (a forged or hand-edited file) is a
:class:`CheckpointError` naming the leaf, never a bare NumPy ``reshape`` error. Reading needs
``flax`` (the ``rnnjax[flax]`` extra); nothing writes this format any more.
"""

import hashlib
import re
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.train._errors import CheckpointError, CorruptCheckpointError, require

MAGIC = b"RNNJAXC1"
PATTERN = re.compile(r"^checkpoint_(\d+)\.msgpack$")


def legacy_path(directory: str | Path, step: int) -> Path:
    """``directory / checkpoint_<step>.msgpack``."""
    return Path(directory) / f"checkpoint_{int(step)}.msgpack"


class _Packed(NamedTuple):
    """An array as stored: decoded only once its leaf (and name) is known."""

    shape: Any
    dtype: bytes
    buffer: bytes
    scalar: bool


def _ext_hook(code: int, data: bytes):
    import msgpack

    if code in (1, 3):  # flax's ndarray and numpy-scalar extensions
        shape, dtype, buffer = msgpack.unpackb(data, raw=True)
        return _Packed(shape, dtype, buffer, code == 3)
    if code == 2:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


def _decode(data: bytes, source: Path) -> Any:
    import msgpack

    header = len(MAGIC) + 32
    if len(data) < header or not data.startswith(MAGIC):
        raise CorruptCheckpointError(
            f"{source} is not an rnnjax checkpoint (bad header or truncated)."
        )
    payload = data[header:]
    if hashlib.sha256(payload).digest() != data[len(MAGIC) : header]:
        raise CorruptCheckpointError(f"{source} is corrupt or truncated (checksum mismatch).")
    try:
        return msgpack.unpackb(payload, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise CorruptCheckpointError(
            f"{source}: the payload cannot be decoded ({error})."
        ) from None


def _materialize(name: str, value: Any) -> Any:
    if not isinstance(value, _Packed):
        return value
    try:
        dtype = jnp.bfloat16 if value.dtype == b"bfloat16" else np.dtype(value.dtype.decode())
        array = np.frombuffer(value.buffer, dtype=dtype).reshape(value.shape)
    except (ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"leaf {name}: the stored array is malformed (shape {value.shape}, dtype "
            f"{value.dtype!r}, {len(value.buffer)} bytes): {error}"
        ) from None
    return array[()] if value.scalar else array


def _restore_leaf(path, template, value):
    name = jax.tree_util.keystr(path)
    value = _materialize(name, value)
    is_key = isinstance(template, jax.Array) and jnp.issubdtype(template.dtype, jax.dtypes.prng_key)
    if is_key:
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


def load_legacy(path: Path, target: Any) -> Any:
    """Read the msgpack checkpoint at ``path`` into the structure of ``target``.

    Raises:
      CorruptCheckpointError: bad header, checksum or msgpack.
      CheckpointError: missing file, or a structure, shape or dtype that differs from
        ``target``'s (the message names the leaf).
    """
    serialization = require("flax.serialization", "reading msgpack checkpoints")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}.") from None
    state = _decode(data, path)
    raw_target = jax.tree_util.tree_map(
        lambda x: (
            jax.random.key_data(x)
            if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
            else x
        ),
        target,
    )
    try:
        restored = serialization.from_state_dict(raw_target, state)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} does not match the target's structure: {error}") from None
    return jax.tree_util.tree_map_with_path(_restore_leaf, target, restored)
