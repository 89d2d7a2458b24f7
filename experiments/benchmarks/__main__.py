"""Benchmark rnnjax against PyTorch, Flax and Equinox (and cuDNN on a GPU).

``python -m experiments.benchmarks [--quick | --full] [--device cpu|gpu] [--precision P]
[--only compare] [--out DIR]`` writes ``results.json``, ``comparisons.csv``, ``sweeps.csv``,
``memory.csv``, ``parallel.csv``, ``sweeps.png`` and ``summary.md`` (the markdown of
``python -m experiments.benchmarks.report``) under ``experiments/results/benchmarks/``.
``--precision`` sets both frameworks' float32 matmul precision alike (``highest``: full float32,
``tf32``: TensorFloat-32 on GPUs; ``default``: each framework's own default) and the results
record what ran; ``--only compare`` runs the framework comparison alone.
"""

import csv
import logging
from pathlib import Path

import jax
import numpy as np

from experiments._common import (
    parse_args,
    pick_size,
    progress,
    save_figure,
    write_json,
    write_summary,
)
from experiments.benchmarks import _competitors, _parallel, _sweeps, _timing, report

logger = logging.getLogger("experiments.benchmarks")

PAPER_SHAPES = [{"B": 64, "T": 100, "D": 32, "H": 256}, {"B": 16, "T": 1000, "D": 64, "H": 512}]
CELLS = ["lstm", "gru", "simple_rnn"]
PARTIAL = "results.partial.json"
"""Written after each section and removed once ``results.json`` is complete (git-ignored)."""

SIZES = {
    "tiny": {  # the smoke test's size (tests/test_benchmarks.py)
        "shapes": [{"B": 2, "T": 5, "D": 3, "H": 4}], "cells": CELLS, "rounds": 2,
        "gemm_size": 64, "gemm_rounds": 2, "sweep_cell": "lstm",
        "sweep_frameworks": ["rnnjax", "torch"], "sweep_rounds": 1,
        "sweep_base": {"B": 2, "T": 4, "D": 3, "H": 4},
        "sweeps": {"T": [2, 4, 8], "B": [1, 2], "H": [4, 8]},
        "memory_shape": {"B": 2, "T": 16, "D": 3, "H": 4},
        "parallel": {"H": 4, "B": 2, "D": 3, "T": [8], "rounds": 2},
    },
    "quick": {
        "shapes": PAPER_SHAPES[:1], "cells": CELLS, "rounds": 7,
        "gemm_size": 1024, "gemm_rounds": 5, "sweep_cell": "lstm",
        "sweep_frameworks": ["rnnjax", "torch"], "sweep_rounds": 3,
        "sweep_base": {"B": 16, "T": 100, "D": 32, "H": 128},
        "sweeps": {"T": [10, 100, 1000], "B": [1, 16, 128], "H": [64, 256]},
        "memory_shape": {"B": 16, "T": 4096, "D": 32, "H": 128},
        "parallel": {"H": 16, "B": 4, "D": 4, "T": [100, 1000], "rounds": 5},
    },
    "default": {
        "shapes": PAPER_SHAPES, "cells": CELLS, "rounds": 11,
        "gemm_size": 2048, "gemm_rounds": 7, "sweep_cell": "lstm",
        "sweep_frameworks": ["rnnjax", "torch", "flax"], "sweep_rounds": 5,
        "sweep_base": {"B": 16, "T": 100, "D": 32, "H": 128},
        "sweeps": {"T": [10, 100, 1000, 10000], "B": [1, 8, 64, 512], "H": [64, 256, 1024]},
        "memory_shape": {"B": 64, "T": 4096, "D": 32, "H": 256},
        "parallel": {"H": 16, "B": 4, "D": 4, "T": [100, 1000, 10000], "rounds": 7},
    },
    "full": {
        "shapes": PAPER_SHAPES, "cells": CELLS, "rounds": 21,
        "gemm_size": 2048, "gemm_rounds": 11, "sweep_cell": "lstm",
        "sweep_frameworks": ["rnnjax", "torch", "flax"], "sweep_rounds": 7,
        "sweep_base": {"B": 16, "T": 100, "D": 32, "H": 128},
        "sweeps": {
            "T": [10, 30, 100, 300, 1000, 3000, 10000], "B": [1, 4, 16, 64, 256, 512],
            "H": [64, 128, 256, 512, 1024],
        },
        "memory_shape": {"B": 64, "T": 4096, "D": 32, "H": 256},
        "parallel": {"H": 16, "B": 4, "D": 4, "T": [100, 1000, 10000, 100000], "rounds": 7},
    },
}  # fmt: skip


PRECISIONS = ("default", "highest", "tf32")


def set_precision(precision: str) -> dict:
    """Set JAX's and PyTorch's float32 matmul precision alike and return what is in effect.

    ``highest``: ``jax_default_matmul_precision="highest"`` and PyTorch's TF32 off (cuBLAS and
    cuDNN); ``tf32``: ``"tensorfloat32"`` and PyTorch's TF32 on; ``default`` changes nothing
    (XLA uses TF32 on GPUs by default, PyTorch's cuBLAS does not). CPUs compute float32 either
    way.
    """
    import torch

    if precision not in PRECISIONS:
        raise SystemExit(f"--precision must be one of {PRECISIONS}; got {precision!r}.")
    if precision != "default":
        tf32 = precision == "tf32"
        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return {
        "requested": precision,
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        "torch_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "torch_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }


def check_device(device: str) -> None:
    """Raise ``SystemExit`` with the reason when ``device`` is not usable here."""
    if device == "cpu":
        return
    if device != "gpu":
        raise SystemExit(f"--device must be 'cpu' or 'gpu'; got {device!r}.")
    import torch

    if jax.default_backend() != "gpu" or not torch.cuda.is_available():
        raise SystemExit(
            f"--device gpu needs a CUDA GPU visible to both JAX and PyTorch; JAX's backend is "
            f"{jax.default_backend()!r} and torch.cuda.is_available() is "
            f"{torch.cuda.is_available()}. Install jax[cuda12] and a CUDA torch, or use "
            f"--device cpu."
        )


def compare(
    config: dict, device: str, gemm_gflops: float | None, frameworks: tuple | None = None
) -> list[dict]:
    """``frameworks`` (default: every one of ``device``) on every shape and cell, forward and
    forward+backward, interleaved. Without ``gemm_gflops`` the rows carry no ``gemm_fraction``."""
    if frameworks is None:
        frameworks = _competitors.GPU_FRAMEWORKS if device == "gpu" else _competitors.CPU_FRAMEWORKS
    rows = []
    for shape in config["shapes"]:
        x = np.random.default_rng(0).standard_normal(
            (shape["B"], shape["T"], shape["D"]), np.float32
        )
        for cell in progress(config["cells"], f"compare {shape}"):
            runners = {}
            for name in frameworks:
                runner = _competitors.build(name, cell, x, shape["H"], device)
                if runner is not None:
                    runners[name] = runner
            times = _competitors.time_runners(runners, config["rounds"])
            for (name, mode), stats in times.items():
                work = _timing.flops(cell, shape["B"], shape["T"], shape["D"], shape["H"], mode)
                gflops = work / (1e-3 * stats["median_ms"]) / 1e9
                row = {
                    "framework": name, "cell": cell, "mode": mode, **shape, **stats,
                    "compile_s": runners[name].compile_s[mode], "gflops": gflops,
                }  # fmt: skip
                of_gemm = ""
                if gemm_gflops:
                    row["gemm_fraction"] = gflops / gemm_gflops
                    of_gemm = f" ({100 * row['gemm_fraction']:.0f}% of GEMM)"
                rows.append(row)
                logger.info(
                    "%-13s %-10s %-16s %s %9.2f ms %7.1f GFLOP/s%s",
                    name, cell, mode, shape, stats["median_ms"], gflops, of_gemm,
                )  # fmt: skip
    _add_ratios(rows)
    return rows


def _add_ratios(rows: list[dict]) -> None:
    """``speedup_vs_X = X's median / this row's median`` (> 1: faster than X), same shape/mode,
    and ``speedup_vs_X_q25`` / ``_q75``: the quartiles of the same ratio taken round by round
    (``_timing.paired_ratios``), the spread a single run's ratio carries."""

    def key(row):
        return (row["cell"], row["mode"], row["B"], row["T"], row["D"], row["H"])

    by_key = {(row["framework"],) + key(row): row for row in rows}
    for row in rows:
        for other in ("torch", "torch_cudnn", "flax", "rnnjax_plain", "jax_cudnn"):
            reference = by_key.get((other,) + key(row))
            if reference is None:
                continue
            row[f"speedup_vs_{other}"] = reference["median_ms"] / row["median_ms"]
            spread = _timing.paired_ratios(reference, row) or {}
            for quartile, value in spread.items():
                row[f"speedup_vs_{other}_{quartile}"] = value


def _write_csv(path: Path, rows: list[dict]) -> None:
    """The rows' scalar fields as CSV (the per-round ``round_ms`` lists stay in the JSON)."""
    if not rows:
        return
    fields = list(
        dict.fromkeys(
            field for row in rows for field, value in row.items() if not isinstance(value, list)
        )
    )
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _plot(sweeps: dict, out_dir: Path) -> None:
    import matplotlib.pyplot as plt

    axes_names = list(sweeps["rows"])
    fig, axes = plt.subplots(1, len(axes_names), figsize=(4.5 * len(axes_names), 3.6))
    for ax, axis in zip(np.atleast_1d(axes), axes_names, strict=True):
        rows = sweeps["rows"][axis]
        for name in sorted({row["framework"] for row in rows}):
            points = sorted(
                (row[axis], row["median_ms"]) for row in rows if row["framework"] == name
            )
            ax.loglog(*zip(*points, strict=True), marker="o", label=name)
        ax.set_xlabel(axis)
        ax.set_ylabel("forward+backward (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("LSTM forward+backward time (log-log; slope 1 in T = linear cost)")
    save_figure(fig, out_dir, "sweeps.png")


def start(config: dict, device: str) -> dict:
    """Check ``device``, give PyTorch as many threads as JAX has cores, and return the results'
    header: ``{"config", "device", "machine"}``."""
    check_device(device)
    import torch

    torch.set_num_threads(_timing.cores())
    return {"config": config, "device": device, "machine": _timing.machine()}


def parse_device_args(name: str, description: str, argv=None):
    """``parse_args`` of ``experiments._common`` plus ``--device cpu|gpu``,
    ``--precision default|highest|tf32`` and ``--only all|compare``."""

    def extra(parser):
        parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
        parser.add_argument("--precision", choices=PRECISIONS, default="default")
        parser.add_argument("--only", choices=("all", "compare"), default="all")

    return parse_args(name, description, argv, extra=extra)


def run(
    config: dict, out_dir: Path, device: str = "cpu", precision: str = "default", only="all"
) -> dict:
    """Run the benchmark of ``config`` on ``device`` at ``precision`` (``set_precision``) and
    write its files to ``out_dir``; ``only="compare"`` runs the framework comparison alone."""
    results = start(config, device)
    results["precision"] = set_precision(precision)
    # A GPU needs a far larger product than a CPU to reach its rate.
    gemm_size = config["gemm_size"] if device == "cpu" else max(config["gemm_size"], 8192)
    results["gemm"] = _timing.gemm_rate(gemm_size, config["gemm_rounds"], device)
    out_dir = Path(out_dir)
    # Each section is saved as soon as it is done, so a run cut short keeps what it measured.
    results["comparisons"] = compare(config, device, results["gemm"]["best_gflops"])
    write_json(out_dir, results, PARTIAL)
    if only == "all":
        results["sweeps"] = _sweeps.sweep(config, device)
        write_json(out_dir, results, PARTIAL)
        results["memory"] = _sweeps.memory(config)
        write_json(out_dir, results, PARTIAL)
        results["parallel"] = _parallel.parallel_rows(config)
    path = write_json(out_dir, results)
    (out_dir / PARTIAL).unlink()
    _write_csv(out_dir / "comparisons.csv", results["comparisons"])
    if only == "all":
        _write_csv(
            out_dir / "sweeps.csv",
            [r for rows in results["sweeps"]["rows"].values() for r in rows],
        )
        _write_csv(out_dir / "memory.csv", results["memory"])
        _write_csv(out_dir / "parallel.csv", results["parallel"])
        _plot(results["sweeps"], out_dir)
    write_summary(out_dir, "Benchmarks", report.markdown(results))
    logger.info("wrote %s", path)
    return results


def main(argv=None):
    args = parse_device_args("benchmarks", __doc__, argv)
    run(pick_size(SIZES, args), args.out, args.device, args.precision, args.only)


if __name__ == "__main__":
    main()
