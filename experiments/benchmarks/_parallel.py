"""Parallel-in-time rows: sequential ``rnnjax.scan`` against DEER, ELK (and quasi forms), min-GRU.

At each ``T`` of ``config["parallel"]`` (``{"H", "B", "D", "T": [...], "rounds"}``) seven
contenders run on the same batch, forward and forward+backward (``grad`` of ``sum(ys)`` with
respect to the params), interleaved as the rest of the suite (``_timing.interleaved``):

* ``gru/scan``: ``rnnjax.scan`` of the reset-after GRU the comparisons use (fused path);
* ``gru/deer``, ``gru/quasi_deer``, ``gru/elk`` and ``gru/quasi_elk``: ``rnnjax.parallel_scan``
  of the same cell and params (ELK: damped Newton steps through a parallel Kalman smoother);
* ``min_gru/scan`` and ``min_gru/parallel_minimal_scan``: the min-GRU one step at a time and as
  one associative scan in log space.

Each row carries ``speedup_vs_scan`` (the same cell's sequential median over this median), the
Newton iterations and convergence of the batch, and the largest difference from the sequential
result relative to its size (outputs forward, gradients forward+backward): a speed-up is only
worth reporting next to the evidence that the answer is the same.
"""

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from experiments._common import markdown_table, progress
from experiments.benchmarks import _competitors, _timing

CONTENDERS = (
    ("gru", "scan"),
    ("gru", "deer"),
    ("gru", "quasi_deer"),
    ("gru", "elk"),
    ("gru", "quasi_elk"),
    ("min_gru", "scan"),
    ("min_gru", "parallel_minimal_scan"),
)
MODES = ("forward", "forward_backward")
NEWTON = ("deer", "quasi_deer", "elk", "quasi_elk")

logger = logging.getLogger("experiments.benchmarks")


def _one_sequence(cell, method: str):
    """``fn(params, xs [T, D]) -> (ys [T, H], iterations, converged, fell_back)``."""
    never = jnp.zeros((), bool)

    def fn(params, xs):
        if method == "scan":
            ys = rnnjax.scan(cell, params, xs)[1]
            return ys, jnp.zeros((), jnp.int32), ~never, never
        if method == "parallel_minimal_scan":
            ys = rnnjax.parallel_minimal_scan(cell, params, xs)[1]
            return ys, jnp.zeros((), jnp.int32), ~never, never
        _, ys, info = rnnjax.parallel_scan(cell, params, xs, method=method)
        return ys, info.iterations, info.converged, info.fell_back

    return fn


def _compiled(function, args, options):
    """AOT-compile ``jax.jit(function)`` with XLA ``options``; return ``(call, seconds)``."""
    start = time.perf_counter()
    compiled = jax.jit(function).lower(*args).compile(compiler_options=options)
    seconds = time.perf_counter() - start
    return (lambda: jax.block_until_ready(compiled(*args))), seconds


def _runner(cell, method, params, x, options) -> tuple[_competitors.Runner, dict]:
    """Compiled forward / forward+backward of the batch, and the outputs of one call of each."""
    batched = jax.vmap(_one_sequence(cell, method), in_axes=(None, 0))

    def loss(params, x):
        return jnp.sum(batched(params, x)[0])

    forward, forward_s = _compiled(batched, (params, x), options)
    backward, backward_s = _compiled(jax.grad(loss), (params, x), options)
    runner = _competitors.Runner(
        forward, backward, {"forward": forward_s, "forward_backward": backward_s}
    )
    return runner, {"forward": forward(), "forward_backward": backward()}


def _relative_difference(actual, expected) -> float:
    """``max |actual - expected| / max |expected|`` over all leaves (float64 on the host)."""
    actual = [np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(actual)]
    expected = [np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(expected)]
    error = max(float(np.max(np.abs(a - e))) for a, e in zip(actual, expected, strict=True))
    size = max(float(np.max(np.abs(e))) for e in expected)
    return error / max(size, np.finfo(np.float32).tiny)


def _time_point(shape: dict, rounds: int, options: dict | None) -> list[dict]:
    """Every contender at one shape, interleaved; rows without the speed-ups yet."""
    x = jnp.asarray(
        np.random.default_rng(0).standard_normal((shape["B"], shape["T"], shape["D"]), np.float32)
    )
    cells = {
        "gru": _competitors.rnnjax_cell("gru", shape["H"]),
        "min_gru": rnnjax.min_gru(shape["H"]),
    }
    params = {name: cell.init(jax.random.key(0), shape["D"]) for name, cell in cells.items()}
    runners, outputs = {}, {}
    for name, method in CONTENDERS:
        runners[name, method], outputs[name, method] = _runner(
            cells[name], method, params[name], x, options
        )
    calls = {
        (name, method, mode): getattr(runner, mode)
        for (name, method), runner in runners.items()
        for mode in MODES
    }
    times = _timing.interleaved(calls, rounds)
    rows = []
    for (name, method, mode), stats in times.items():
        ys, iterations, converged, fell_back = outputs[name, method]["forward"]
        newton = method in NEWTON
        result = outputs[name, method][mode]
        reference = outputs[name, "scan"][mode]
        rows.append({
            "framework": "rnnjax", "cell": name, "method": method, "mode": mode, **shape,
            **stats, "compile_s": runners[name, method].compile_s[mode],
            "iterations_max": int(np.max(iterations)) if newton else None,
            "iterations_mean": float(np.mean(iterations)) if newton else None,
            "converged": bool(np.all(converged)),
            "fell_back": bool(np.any(fell_back)),
            "max_rel_diff_vs_scan": _relative_difference(
                result[0] if mode == "forward" else result,
                reference[0] if mode == "forward" else reference,
            ),
        })  # fmt: skip
    return rows


def _add_speedups(rows: list[dict]) -> None:
    """``speedup_vs_scan`` = the same cell's ``rnnjax.scan`` median / this row's median."""

    def key(row):
        return (row["cell"], row["mode"], row["B"], row["T"], row["D"], row["H"])

    scan = {key(row): row["median_ms"] for row in rows if row["method"] == "scan"}
    for row in rows:
        row["speedup_vs_scan"] = scan[key(row)] / row["median_ms"]


def parallel_rows(config: dict) -> list[dict]:
    """Forward and forward+backward of every contender at each ``T`` of ``config["parallel"]``.

    Args:
      config: a benchmark size; ``config["parallel"]`` holds ``H``, ``B``, ``D``, ``T`` (a list)
        and optionally ``rounds`` (default ``config["rounds"]``) and ``compiler_options`` for
        XLA (only for tests: ``{"xla_backend_optimization_level": 0}`` halves the compile time
        of the associative scans on CPU, and makes the timings meaningless).

    Returns:
      One dict per (cell, method, mode, T): ``framework``, ``cell``, ``method``, ``mode``, ``B``,
      ``T``, ``D``, ``H``, the :func:`_timing.interleaved` statistics (``median_ms``, ...),
      ``compile_s``, ``iterations_max``/``iterations_mean`` (Newton methods, else ``None``),
      ``converged``, ``fell_back``, ``max_rel_diff_vs_scan`` and ``speedup_vs_scan``.
    """
    settings = config["parallel"]
    rounds = settings.get("rounds", config.get("rounds", 5))
    base = {axis: settings[axis] for axis in ("B", "D", "H")}
    rows = []
    for steps in progress(settings["T"], "parallel in time T"):
        rows += _time_point({**base, "T": steps}, rounds, settings.get("compiler_options"))
    _add_speedups(rows)
    for row in rows:
        logger.info(
            "%-8s %-22s %-16s T=%-6d %9.2f ms %6.2fx vs scan, iterations %s",
            row["cell"], row["method"], row["mode"], row["T"], row["median_ms"],
            row["speedup_vs_scan"], row["iterations_max"],
        )  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    """One table: per cell, method and T, forward and forward+backward times and speed-ups."""
    if not rows:
        return ""
    shape = rows[0]
    order = {contender: index for index, contender in enumerate(CONTENDERS)}
    forward = sorted(
        (row for row in rows if row["mode"] == "forward"),
        key=lambda row: (row["T"], order[row["cell"], row["method"]]),
    )
    table = []
    for row in forward:
        backward = next(
            r for r in rows
            if r["mode"] == "forward_backward" and r["cell"] == row["cell"]
            and r["method"] == row["method"] and r["T"] == row["T"]
        )  # fmt: skip
        newton = row["iterations_max"] is not None
        table.append([
            row["T"], row["cell"], row["method"],
            f"{row['median_ms']:.3g}", f"{row['speedup_vs_scan']:.2f}x",
            f"{backward['median_ms']:.3g}", f"{backward['speedup_vs_scan']:.2f}x",
            f"{row['iterations_max']} (mean {row['iterations_mean']:.1f})" if newton else "",
            ("yes" if row["converged"] else "no") if newton else "",
            f"{row['max_rel_diff_vs_scan']:.1e} / {backward['max_rel_diff_vs_scan']:.1e}",
        ])  # fmt: skip
    header = [
        "T", "cell", "method", "fwd ms", "fwd vs scan", "fwd+bwd ms", "fwd+bwd vs scan",
        "Newton iterations (max)", "converged", "rel. diff vs scan (ys / grads)",
    ]  # fmt: skip
    intro = (
        f"\nParallel in time (B={shape['B']}, D={shape['D']}, H={shape['H']}, float32; median ms; "
        "speed-up = the same cell's `rnnjax.scan` time / this time; gradients w.r.t. the params "
        "of sum(ys)):\n"
    )
    return intro + "\n" + markdown_table(header, table) + "\n"
