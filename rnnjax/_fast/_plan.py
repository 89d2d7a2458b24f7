"""Where the fast path's choices live: one table of thresholds and one pure :func:`plan`.

Every number that picks a path is a row of :data:`THRESHOLDS`, with the measurement that set it
(2-core AMD EPYC with AVX-512 for CPU rows, H100 for the GPU row; interleaved medians; the full
sweeps are in ``docs/fast_path.md`` and ``experiments/results``). :func:`plan` reads only its
arguments and the table, so a test covers it as a truth table and forces a path by passing the
:class:`Plan` it wants; nothing else in the package decides.
"""

import os
from typing import NamedTuple

import numpy as np


class Threshold(NamedTuple):
    """One row: ``name``, its ``value`` (per cell kind where a dict) and the measured ``reason``."""

    name: str
    value: object
    reason: str


THRESHOLDS = (
    Threshold(
        "gpu_unroll",
        8,
        "H100: 8 steps per iteration ran 1.6-2.7x fwd, 1.4-2.6x fwd+bwd (kernel launches)",
    ),
    Threshold(
        "feature_major_min_hidden",
        256,
        "B=16: H=512 82->52 ms, H=1024 578->184 ms (T=100 step loop); no gain below",
    ),
    Threshold(
        "feature_major_max_batch",
        32,
        "from B=64 on the row-major [B, H] x [H, G*H] GEMM is as fast or faster",
    ),
    Threshold(
        "feature_major_min_work", 512, "B*H below this is too small a GEMM for the layout to matter"
    ),
    Threshold(
        "partitioned_min_hidden",
        256,
        "below H=256 the per-part GEMMs lose: B=16 H=64 0.70x, B=4 H=128 0.65x",
    ),
    Threshold(
        "partitioned_min_units",
        32,
        "fewest hidden units per part: smaller GEMMs lose more to overhead than they gain",
    ),
    Threshold("partitioned_max_parts", 8, "measured up to 2 cores only; more threads untested"),
    Threshold(
        "partitioned_batches",
        {"lstm": (16, None), "gru": (8, None), "gru_reset_after": (16, 128)},
        "fwd gains: LSTM 1.13-1.45x, GRU 1.18-1.82x, reset-after 1.07-1.51x; B=8/256 lose",
    ),
    Threshold(
        "partitioned_saving_max_batch",
        {"lstm": 64, "gru_reset_after": 32},
        "derivative's forward in parts: LSTM B<=64 1.00-1.14x, reset-after B<=32 0.96-1.13x",
    ),
    Threshold(
        "partitioned_unroll",
        {"gru_reset_after": 4},
        "reset-after GRU partitioned fwd 1.08-1.22x at unroll 4; LSTM/GRU no gain",
    ),
)
"""The one table; :func:`threshold` reads it by name."""

_TABLE = {row.name: row.value for row in THRESHOLDS}

GPU_BACKENDS = ("gpu", "cuda", "rocm")
PARALLEL_BACKENDS = ("cpu",)
"""Backends whose loops run the parts' chains on separate threads (XLA:CPU's thunk executor)."""


def threshold(name: str):
    """The value of row ``name`` of :data:`THRESHOLDS`."""
    return _TABLE[name]


class Plan(NamedTuple):
    """How the fast path runs one call.

    Attributes:
      layout: ``"row_major"`` (``[B, H] x [H, G*H]``) or ``"feature_major"`` (``[G*H, H] x
        [H, B]``, the weight stored transposed) for the fused loops' matmuls.
      parts: hidden-unit parts of the forward loop (1: the fused loop; more: the partitioned
        loop, one part per core).
      saved: whether the forward loop also stores each step's state and gate values (the
        derivative's forward).
      unroll: steps per loop iteration (``lax.scan``'s ``unroll``).
    """

    layout: str = "row_major"
    parts: int = 1
    saved: bool = False
    unroll: int | bool = 1


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def num_parts(hidden: int, cores: int) -> int:
    """The largest ``P`` that divides ``hidden``, is at most ``cores`` (and the table's maximum)
    and leaves the table's fewest units per part; 1 when none does."""
    most = min(
        cores, threshold("partitioned_max_parts"), hidden // threshold("partitioned_min_units")
    )
    for parts in range(most, 1, -1):
        if hidden % parts == 0:
            return parts
    return 1


def _known(batch) -> bool:
    """A concrete batch size: not ``None`` (one sequence) nor symbolic (``jax.export``)."""
    return isinstance(batch, int | np.integer) and not isinstance(batch, bool)


def default_unroll(backend: str) -> int:
    """Steps per iteration when the caller leaves ``unroll`` to the library."""
    return threshold("gpu_unroll") if backend in GPU_BACKENDS else 1


def plan(kind, batch, hidden: int, backend: str, cores: int, differentiated: bool) -> Plan:
    """The :class:`Plan` for a cell of ``kind`` (``None``: no fast path) over ``batch`` sequences.

    ``batch`` is ``None`` for one sequence; a symbolic size (``jax.export``) is never compared,
    and the hidden-size rows are tested first, so it takes the path valid for any batch.
    ``differentiated`` plans the derivative's forward (which saves states) instead of the
    forward alone.
    """
    unroll = default_unroll(backend)
    if kind is None:
        return Plan("row_major", 1, differentiated, unroll)
    cpu, known = backend in PARALLEL_BACKENDS, _known(batch)
    feature_major = (
        cpu
        and hidden >= threshold("feature_major_min_hidden")
        and known
        and batch <= threshold("feature_major_max_batch")
        and batch * hidden >= threshold("feature_major_min_work")
    )
    parts = num_parts(hidden, cores) if cpu else 1
    partitioned = (
        hidden >= threshold("partitioned_min_hidden")
        and parts > 1
        and kind in threshold("partitioned_batches")
        and known
        and _within(batch, threshold("partitioned_batches")[kind])
    )
    if differentiated:
        partitioned = partitioned and batch <= threshold("partitioned_saving_max_batch").get(
            kind, 0
        )
    elif partitioned:
        unroll = threshold("partitioned_unroll").get(kind, 1)
    layout = "feature_major" if feature_major else "row_major"
    return Plan(layout, parts if partitioned else 1, differentiated, unroll)


def _within(batch: int, bounds) -> bool:
    smallest, largest = bounds
    return smallest <= batch and (largest is None or batch <= largest)
