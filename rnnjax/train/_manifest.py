"""A pytree as orbax stores it for rnnjax: a flat dict of arrays plus a JSON manifest.

orbax writes the arrays (``leaf_00000``, ``leaf_00001``, ...; sharded ones shard by shard, from
every host); the manifest lists each leaf of the target in order with its path
(``jax.tree_util.keystr``), kind, shape, dtype and the SHA-256 of its bytes, and holds Python
scalars and strings itself (floats as ``float.hex``, so they come back bit for bit). Restoring
against a template compares the manifest with the template's leaves first, so a structure,
shape or dtype mismatch is a :class:`CheckpointError` naming the leaf before orbax reads
anything, and the checksums catch a torn or altered file after. Arrays that are not fully
addressable (multi-host) carry no checksum: no one process sees all their bytes.
"""

import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.train._errors import CheckpointError, CorruptCheckpointError

FORMAT = "rnnjax-orbax/1"


def _is_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _host_local(leaf) -> bool:
    """A jax.Array on this process's devices only, in a multi-process run: orbax cannot write
    those as global arrays, so they are stored (and read) as NumPy, like replicated values."""
    return isinstance(leaf, jax.Array) and jax.process_count() > 1 and leaf.is_fully_addressable


def _digest(array) -> str | None:
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        return None
    return hashlib.sha256(np.ascontiguousarray(np.asarray(array)).tobytes()).hexdigest()


def _describe(dtype, shape) -> str:
    return f"{np.dtype(dtype).name}{list(shape)}"


def _encode_value(value) -> dict:
    if isinstance(value, bool | np.bool_):
        return {"type": "bool", "value": bool(value)}
    if isinstance(value, int):
        return {"type": "int", "value": str(value)}
    if isinstance(value, float):
        return {"type": "float", "value": float(value).hex()}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    raise TypeError(
        f"checkpoint leaves must be arrays, typed PRNG keys, bool, int, float or str; got "
        f"{type(value).__name__}."
    )


def _decode_value(entry: dict):
    kind, value = entry["type"], entry["value"]
    return {"bool": bool, "int": int, "float": float.fromhex, "str": str}[kind](value)


def split(target: Any) -> tuple[dict, dict]:
    """``(arrays, manifest)`` for ``target``: arrays keyed ``leaf_<index>``, manifest as JSON."""
    arrays, leaves = {}, []
    for index, (path, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(target)[0]):
        entry = {"path": jax.tree_util.keystr(path)}
        if isinstance(leaf, jax.Array | np.ndarray | np.generic):
            if _is_key(leaf):
                entry["impl"] = str(jax.random.key_impl(leaf))
                leaf = jax.random.key_data(leaf)
            kind = "jax" if isinstance(leaf, jax.Array) else "numpy"
            stored = np.asarray(leaf) if kind == "numpy" or _host_local(leaf) else leaf
            entry.update(
                kind="key" if "impl" in entry else kind,
                shape=list(stored.shape),
                dtype=np.dtype(stored.dtype).name,
                sha256=_digest(stored),
            )
            arrays[f"leaf_{index:05d}"] = stored
        else:
            entry.update(kind="value", **_encode_value(leaf))
        leaves.append(entry)
    return arrays, {"format": FORMAT, "leaves": leaves}


def _template_spec(leaf):
    """``(kind, shape, dtype, sharding)`` the template expects of a leaf."""
    if _is_key(leaf):
        data = jax.random.key_data(leaf)
        return "key", tuple(data.shape), data.dtype, getattr(data, "sharding", None)
    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct):
        return "jax", tuple(leaf.shape), leaf.dtype, getattr(leaf, "sharding", None)
    if isinstance(leaf, np.ndarray | np.generic):
        return "numpy", tuple(np.shape(leaf)), np.asarray(leaf).dtype, None
    return "value", None, None, None


def _inside(name: str, prefix: str) -> bool:
    """Whether leaf path ``name`` lies under the path ``prefix`` (both ``keystr``)."""
    return name == prefix or (name.startswith(prefix) and name[len(prefix)] in ".[")


def _positions(template: Any, manifest: dict, source: str) -> list[tuple[int, dict]]:
    """For each leaf of ``template``, the index and entry of the stored leaf of that path.

    The template may leave out whole top-level entries of the checkpoint, not parts of one.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptCheckpointError(f"{source} has no rnnjax manifest (format {FORMAT}).")
    stored = {entry["path"]: (index, entry) for index, entry in enumerate(manifest["leaves"])}
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(template)[0]]
    names = [jax.tree_util.keystr(path) for path in paths]
    tops = {jax.tree_util.keystr(path[:1]) for path in paths if path}
    missing = [name for name in names if name not in stored]
    partial = [
        name
        for name in stored
        if name not in names and (not tops or any(_inside(name, top) for top in tops))
    ]
    if missing or partial:
        raise CheckpointError(
            f"{source} does not match the target's structure: the target has leaves {missing} "
            f"that the checkpoint lacks, and lacks leaves {partial} that the checkpoint has."
        )
    return [stored[name] for name in names]


def match(template: Any, manifest: dict, source: str) -> dict:
    """The abstract arrays orbax should restore for ``template``, after checking the manifest.

    The template may leave out whole top-level entries of the checkpoint (e.g. read only
    ``{"train_state": ...}``); every leaf it has must be stored with its kind, shape and dtype.

    Raises:
      CheckpointError: another format, structure, kind, shape or dtype (naming the leaf).
    """
    abstract = {}
    leaves = jax.tree_util.tree_leaves(template)
    for leaf, (index, entry) in zip(leaves, _positions(template, manifest, source), strict=True):
        kind, shape, dtype, sharding = _template_spec(leaf)
        name = entry["path"]
        if (kind == "value") != (entry["kind"] == "value"):
            what = "a Python value" if entry["kind"] == "value" else "an array"
            raise CheckpointError(f"leaf {name}: checkpoint holds {what}, the target does not.")
        if kind == "value":
            continue
        if (kind == "key") != (entry["kind"] == "key"):
            raise CheckpointError(
                f"leaf {name}: a typed PRNG key in only one of the checkpoint and the target."
            )
        if tuple(entry["shape"]) != shape or np.dtype(entry["dtype"]) != np.dtype(dtype):
            raise CheckpointError(
                f"leaf {name}: checkpoint holds {_describe(entry['dtype'], entry['shape'])}, "
                f"the target expects {_describe(dtype, shape)}."
            )
        if kind == "numpy" or _host_local(jax.random.key_data(leaf) if kind == "key" else leaf):
            abstract[f"leaf_{index:05d}"] = np.zeros(shape, dtype)
        else:
            abstract[f"leaf_{index:05d}"] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    return abstract


def assemble(template: Any, manifest: dict, arrays: dict, source: str) -> Any:
    """The restored pytree in ``template``'s structure; checksums verified.

    Raises:
      CorruptCheckpointError: an array's bytes differ from its checksum (naming the leaf).
    """
    flat, treedef = jax.tree_util.tree_flatten(template)
    out = []
    for leaf, (index, entry) in zip(flat, _positions(template, manifest, source), strict=True):
        if entry["kind"] == "value":
            out.append(_decode_value(entry))
            continue
        value = arrays[f"leaf_{index:05d}"]
        expected = entry.get("sha256")
        if expected is not None and _digest(value) != expected:
            raise CorruptCheckpointError(
                f"{source}: leaf {entry['path']} does not match its checksum (a torn or altered "
                "file)."
            )
        if entry["kind"] != "numpy" and not isinstance(value, jax.Array):  # host-local
            value = jax.device_put(value, getattr(leaf, "sharding", None))
        if entry["kind"] == "key":
            impl = jax.random.key_impl(leaf) if _is_key(leaf) else entry["impl"]
            value = jax.random.wrap_key_data(value, impl=impl)
        elif entry["kind"] == "numpy":
            value = np.asarray(value)
            value = value[()] if isinstance(leaf, np.generic) else value
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)
