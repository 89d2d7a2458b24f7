"""Data-parallel training over a device mesh with JAX's SPMD partitioner (``jax.jit`` + shardings).

A train step ``step_fn(params, opt_state, batch) -> (params, opt_state, metrics)`` is written once,
for the whole batch. :func:`data_parallel` places the batch split along its leading axis over the
mesh's ``"data"`` axis and the params and optimizer state replicated (or, with ``model_axis``, their
gate-fused last axis split over ``"model"``), then ``jax.jit`` lets XLA partition the step: each
device runs its slice of the batch, and the gradient of a mean loss becomes a cross-device
all-reduce that XLA inserts. The sharded step therefore computes what the unsharded step computes,
up to the order of floating-point sums.

Multi-host: call ``jax.distributed.initialize()`` first in every process, build the mesh over
``jax.devices()`` (all hosts' devices) and pass each process its own slice of the global batch
(each slice lands on that process's devices; a mean loss does not depend on their order). Params
must start equal on every process (same seed).

>>> mesh = rnnjax.distributed.make_mesh()                  # all devices on the "data" axis
>>> step = rnnjax.distributed.data_parallel(train_step, mesh)
>>> params, opt_state, metrics = step(params, opt_state, batch)
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
"""Name of the mesh axis the batch is split over."""

MODEL_AXIS = "model"
"""Name of the mesh axis the parameters' last (gate-fused) axis is split over."""

REMAINDER_MODES = ("error", "pad")

__all__ = [
    "DATA_AXIS",
    "MODEL_AXIS",
    "data_parallel",
    "make_mesh",
    "pad_batch",
    "param_shardings",
    "shard_batch",
]


def make_mesh(data: int | None = None, model: int = 1, *, devices=None) -> Mesh:
    """A ``(data, model)`` device mesh with axes ``("data", "model")`` in SPMD ``Auto`` mode.

    Args:
      data: devices along the batch axis; default ``len(devices) // model``.
      model: devices along the parameter axis (1: params replicated).
      devices: the devices to use (default ``jax.devices()``, every host's devices when
        ``jax.distributed.initialize()`` has run). The first ``data * model`` are used.

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(data, model)``.

    Raises:
      ValueError: ``data`` or ``model`` is not a positive int, or ``data * model`` exceeds the
        number of devices.

    >>> mesh = rnnjax.distributed.make_mesh(model=2)   # 8 devices -> mesh {"data": 4, "model": 2}
    """
    devices = list(jax.devices() if devices is None else devices)
    for index, device in enumerate(devices):
        if not isinstance(device, jax.Device):
            raise TypeError(
                f"devices must be jax.Device objects (jax.devices()); devices[{index}] is "
                f"{type(device).__name__} {device!r:.40}."
            )
    for name, value in (("model", model), ("data", data)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"{name} must be a positive int; got {value!r}.")
    if data is None:
        data = len(devices) // model
    if data < 1 or data * model > len(devices):
        raise ValueError(
            f"a mesh of data={data} x model={model} needs {max(data, 1) * model} devices; "
            f"got {len(devices)} devices."
        )
    return jax.make_mesh(
        (data, model),
        (DATA_AXIS, MODEL_AXIS),
        axis_types=(AxisType.Auto, AxisType.Auto),
        devices=devices[: data * model],
    )


def _check_axis(mesh: Mesh, axis: str | None, name: str) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (make_mesh()); got {type(mesh).__name__}."
        )
    if axis is not None and axis not in mesh.axis_names:
        raise ValueError(f"{name} must be one of the mesh axes {mesh.axis_names}; got {axis!r}.")


def _leaf_spec(shape: tuple[int, ...], mesh: Mesh, model_axis: str | None) -> P:
    """Split the last axis over ``model_axis`` when it divides evenly, else replicate."""
    if model_axis is None or not shape or shape[-1] % mesh.shape[model_axis]:
        return P()
    return P(*(None,) * (len(shape) - 1), model_axis)


def param_shardings(tree: Any, mesh: Mesh, model_axis: str | None = None) -> Any:
    """Shardings for params or optimizer state: replicated, or split over ``model_axis``.

    With ``model_axis``, every leaf whose last axis divides by the axis size is split along it:
    kernels ``w_x [D, G*H]``, ``w_h [H, G*H]`` and biases ``[G*H]`` become column blocks, and
    optimizer moments (same shapes) follow their params. Other leaves (scalars, odd sizes) are
    replicated. Sharding changes where values live, never what the step computes.

    Args:
      tree: a pytree of arrays (params, optimizer state).
      mesh: the device mesh.
      model_axis: the mesh axis to split over, or ``None`` to replicate everything.

    Returns:
      A pytree of :class:`jax.sharding.NamedSharding` with ``tree``'s structure.

    >>> shardings = rnnjax.distributed.param_shardings(params, mesh, model_axis="model")
    >>> params = jax.device_put(params, shardings)
    """
    _check_axis(mesh, model_axis, "model_axis")
    return jax.tree_util.tree_map(
        lambda leaf: NamedSharding(mesh, _leaf_spec(tuple(jnp.shape(leaf)), mesh, model_axis)), tree
    )


def _batch_size(batch: Any) -> int:
    """The common leading size of every leaf of ``batch``."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(batch)
    if not leaves:
        raise ValueError("batch must hold at least one array; got an empty pytree.")
    sizes = {}
    for path, leaf in leaves:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise TypeError(
                f"batch leaves must be arrays [B, ...]; batch{jax.tree_util.keystr(path)} is "
                f"{type(leaf).__name__} (convert lists with np.asarray)."
            )
        shape = jnp.shape(leaf)
        if not shape:
            raise ValueError(
                f"batch leaves must have a leading batch axis; batch{jax.tree_util.keystr(path)} "
                f"is a scalar."
            )
        sizes[jax.tree_util.keystr(path)] = shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch leaves must share their leading (batch) size; got {sizes}.")
    return next(iter(sizes.values()))


def pad_batch(batch: Any, multiple: int) -> tuple[Any, jax.Array]:
    """Pad the batch axis up to a multiple of ``multiple`` with copies of the first example.

    Copies (not zeros) keep every padded loss finite; ``example_mask`` marks the real examples, so
    a loss written as ``sum(mask * loss) / sum(mask)`` is unchanged by the padding.

    Args:
      batch: a pytree of arrays ``[B, ...]`` sharing the leading size ``B >= 1``.
      multiple: the padded size is the smallest multiple of it ``>= B``.

    Returns:
      ``(padded_batch, example_mask)`` with leaves ``[B_padded, ...]`` and a bool mask
      ``[B_padded]`` that is ``True`` for the first ``B`` rows.

    Raises:
      ValueError: empty batch, leaves with different leading sizes, or ``multiple < 1``.

    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> padded, mask = rnnjax.distributed.pad_batch({"x": jnp.ones((10, 3))}, 8)  # x: (16, 3)
    """
    if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
        raise ValueError(f"multiple must be a positive int; got {multiple!r}.")
    size = _batch_size(batch)
    if size == 0:
        raise ValueError("batch is empty (leading size 0); there is nothing to pad from.")
    extra = -size % multiple

    def pad(leaf):
        xp = np if isinstance(leaf, np.ndarray) else jnp
        return xp.concatenate([leaf, xp.repeat(leaf[:1], extra, axis=0)], axis=0)

    padded = jax.tree_util.tree_map(pad, batch) if extra else batch
    return padded, jnp.arange(size + extra) < size


def _local_data_size(mesh: Mesh, data_axis: str) -> int:
    """How many positions along ``data_axis`` this process's devices hold."""
    axis = mesh.axis_names.index(data_axis)
    local = {device.id for device in mesh.local_devices}
    return len(
        {index[axis] for index, device in np.ndenumerate(mesh.devices) if device.id in local}
    )


def shard_batch(batch: Any, mesh: Mesh, data_axis: str = DATA_AXIS) -> Any:
    """Place ``batch`` split along its leading axis over ``data_axis`` (replicated elsewhere).

    With one process this is ``jax.device_put``; with several (after ``jax.distributed.initialize``)
    each process passes its own slice and gets global arrays whose batch is the concatenation of
    every process's slice (``jax.make_array_from_process_local_data``).

    Raises:
      ValueError: a leaf is a scalar, the leading sizes differ, or this process's batch size does
        not divide by its number of positions along ``data_axis``.
    """
    _check_axis(mesh, data_axis, "data_axis")
    size, local = _batch_size(batch), _local_data_size(mesh, data_axis)
    if size % local:
        raise ValueError(
            f"batch size {size} must be divisible by the {local} devices along mesh axis "
            f"{data_axis!r}; pad it (pad_batch, or data_parallel(..., remainder='pad')) or "
            f"drop {size % local} examples."
        )
    sharding = NamedSharding(mesh, P(data_axis))
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree_util.tree_map(
        lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), batch
    )


def data_parallel(
    step_fn: Callable[..., Any],
    mesh: Mesh,
    *,
    batch_argnums: int | Sequence[int] = 2,
    data_axis: str = DATA_AXIS,
    model_axis: str | None = None,
    remainder: str = "error",
    donate: bool = False,
) -> Callable[..., Any]:
    """Jit a train step with its batch split over ``data_axis`` and its params replicated.

    ``step_fn(params, opt_state, batch) -> (params, opt_state, metrics)`` is written for the whole
    batch; averaging gradients over devices is the all-reduce XLA emits for a mean loss, so the
    result equals the single-device step to float tolerance. Every argument other than the batch
    (params, optimizer state, a PRNG key, ``rnnjax.train.TrainState``) and every output is
    replicated, or split over ``model_axis`` (see :func:`param_shardings`) for large ``H``.
    Other step signatures work through ``batch_argnums``: for ``rnnjax.train``'s
    ``step(state, batch, key)`` (built with ``jit=False``) pass ``batch_argnums=1``.

    A batch whose size does not divide the number of devices along ``data_axis``:

    * ``remainder="error"`` (default): ``ValueError`` naming the batch size and device count.
    * ``remainder="pad"``: the batch is padded with copies of its first example
      (:func:`pad_batch`) and the step is called with an extra keyword,
      ``step_fn(..., example_mask=mask)``, a bool ``[B_padded]`` mask, on every call (divisible
      or not); the step must weight its loss by the mask, ``sum(mask * loss) / sum(mask)``, to
      match the unpadded step.

    Args:
      step_fn: the train step, traceable by ``jax.jit``.
      mesh: the device mesh (:func:`make_mesh`).
      batch_argnums: position(s) of the batch argument(s), pytrees of ``[B, ...]`` arrays.
      data_axis: mesh axis the batch's leading axis is split over.
      model_axis: mesh axis to split params and optimizer state over; ``None`` replicates them.
      remainder: ``"error"`` or ``"pad"``, as above.
      donate: donate the buffers of the non-batch arguments (params, optimizer state) to the
        outputs; the arrays passed in are invalid afterwards.

    Returns:
      ``step(*args)`` with ``step_fn``'s signature and results, jit-compiled once per batch shape;
      params and optimizer state stay on the mesh between calls.

    Raises:
      ValueError: unknown mesh axis or ``remainder``; at call time, a batch that does not divide
        (with ``remainder="error"``) or leaves of different leading sizes.

    >>> mesh = rnnjax.distributed.make_mesh()
    >>> step = rnnjax.distributed.data_parallel(train_step, mesh, remainder="pad")
    >>> params, opt_state, metrics = step(params, opt_state, {"x": x, "y": y})
    """
    if not callable(step_fn):
        raise TypeError(f"step_fn must be a callable train step; got {type(step_fn).__name__}.")
    _check_axis(mesh, data_axis, "data_axis")
    _check_axis(mesh, model_axis, "model_axis")
    if data_axis is None or data_axis == model_axis:
        raise ValueError(
            f"data_axis must name a mesh axis other than model_axis; got {data_axis!r}."
        )
    if remainder not in REMAINDER_MODES:
        raise ValueError(f"remainder must be one of {REMAINDER_MODES}; got {remainder!r}.")
    if isinstance(batch_argnums, int):
        batch_argnums = (batch_argnums,)
    batch_argnums = tuple(batch_argnums) if isinstance(batch_argnums, Sequence) else batch_argnums
    if (
        not isinstance(batch_argnums, tuple)
        or not batch_argnums
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in batch_argnums)
    ):
        raise ValueError(
            f"batch_argnums must be one or more non-negative ints; got {batch_argnums!r}."
        )
    multiple = _local_data_size(mesh, data_axis)

    def global_step(mask, *args):
        options = {} if mask is None else {"example_mask": mask}
        outputs = step_fn(*args, **options)
        return jax.lax.with_sharding_constraint(outputs, param_shardings(outputs, mesh, model_axis))

    def step(*args):
        if max(batch_argnums) >= len(args):
            raise ValueError(
                f"batch_argnums {batch_argnums} point past the {len(args)} arguments given."
            )
        batches = tuple(args[i] for i in batch_argnums)
        mask = None
        if remainder == "pad":
            batches, mask = pad_batch(batches, multiple)
            mask = shard_batch(mask, mesh, data_axis)
        batches = iter(shard_batch(batches, mesh, data_axis))
        placed = [
            next(batches)
            if index in batch_argnums
            else jax.device_put(arg, param_shardings(arg, mesh, model_axis))
            for index, arg in enumerate(args)
        ]
        if len(args) not in compiled:
            donated = [i + 1 for i in range(len(args)) if i not in batch_argnums] if donate else []
            compiled[len(args)] = jax.jit(global_step, donate_argnums=tuple(donated))
        return compiled[len(args)](mask, *placed)

    compiled = {}  # one jit per argument count: the donated positions depend on it
    return step
