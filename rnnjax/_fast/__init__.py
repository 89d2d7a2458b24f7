"""Where rnnjax's speed lives: one seam between the cells and their fast loops.

``rnnjax.scan`` and the layers ask :func:`record` whether a cell may take the fast path: only a
built-in cell whose ``step``, ``project_inputs`` and ``recur`` are still the ones its
:class:`rnnjax._cells.Kernels` record was built with (a ``._replace`` of any of them, or a cell
you build yourself, takes the generic ``lax.scan`` path). The path then runs by a
:class:`Plan` from :func:`plan`, a pure function of the cell's kind, the batch and hidden sizes,
the backend, the core count and whether the call is differentiated, reading one table of
thresholds (``_plan.THRESHOLDS``). The package holds:

* ``_plan``: :class:`Plan`, :func:`plan` and the thresholds, each with its measured reason;
* ``_kinds``: the table of kinds (update, tangent, weight terms of the fused derivative);
* ``_fused``: the loops and the custom JVP over the whole sequence; ``scan_one`` makes
  ``jax.vmap`` of a one-sequence scan run time-major over the batch;
* ``_partitioned``: hidden-unit-partitioned forward loops (XLA:CPU, several cores);
* ``_layout``: feature-major weight storage for small batches (XLA:CPU).

See ``docs/fast_path.md``.
"""

from rnnjax._fast._fused import Planner, scan, scan_one
from rnnjax._fast._kinds import KINDS
from rnnjax._fast._plan import THRESHOLDS, Plan, cores, default_unroll, plan

__all__ = [
    "KINDS", "THRESHOLDS", "Plan", "Planner", "cores", "default_unroll", "plan", "record",
    "scan", "scan_one",
]  # fmt: skip


def record(cell):
    """The cell's :class:`rnnjax._cells.Kernels` record if it still holds, else ``None``.

    It holds while the record names a kind of :data:`KINDS` and the cell's ``step``,
    ``project_inputs`` and ``recur`` equal the functions the record was built with.
    """
    kernels = getattr(cell, "kernels", None)
    if kernels is None or kernels.kind not in KINDS:
        return None
    if (cell.step, cell.project_inputs, cell.recur) != (
        kernels.step,
        kernels.project_inputs,
        kernels.recur,
    ):
        return None
    return kernels
