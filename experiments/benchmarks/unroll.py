"""How many steps per loop iteration (``unroll``) each cell wants, on this device.

``python -m experiments.benchmarks.unroll [--quick | --full] [--device cpu|gpu] [--out DIR]``
times ``rnnjax.rnn(cell, unroll=u)`` forward and forward+backward for every ``u`` of the size,
interleaved with PyTorch's layer (oneDNN on CPU, cuDNN on a GPU) where it has the cell, and
writes ``results.json`` and ``summary.md`` (default ``experiments/results/benchmarks_unroll/
<device>``). Its CPU run backs ``rnnjax.scan``'s CPU default (``unroll=None`` -> 1) and a GPU
run its GPU default, the ``gpu_unroll`` row of ``rnnjax._fast._plan.THRESHOLDS`` (a one-off H100
sweep is stored under ``experiments/results/benchmarks_unroll/gpu``).
"""

import logging
from pathlib import Path

import numpy as np

from experiments._common import (
    RESULTS,
    markdown_table,
    pick_size,
    progress,
    write_json,
    write_summary,
)
from experiments.benchmarks import _competitors
from experiments.benchmarks.__main__ import PAPER_SHAPES, parse_device_args, start

logger = logging.getLogger("experiments.benchmarks.unroll")

CELLS = ["lstm", "gru", "gru_seed", "simple_rnn"]
"""``gru`` is the reset-after GRU (PyTorch's form), ``gru_seed`` ``rnnjax.gru``'s default."""

SIZES = {
    "tiny": {"shapes": [{"B": 2, "T": 6, "D": 3, "H": 4}], "cells": CELLS, "unrolls": [1, 2],
             "rounds": 2},
    "quick": {"shapes": PAPER_SHAPES[:1], "cells": ["lstm", "gru"], "unrolls": [1, 8],
              "rounds": 5},
    "default": {"shapes": PAPER_SHAPES, "cells": CELLS, "unrolls": [1, 4, 8, 16],
                "rounds": 7},
    "full": {"shapes": PAPER_SHAPES + [{"B": 256, "T": 100, "D": 128, "H": 512}],
             "cells": CELLS, "unrolls": [1, 2, 4, 8, 16, 32], "rounds": 15},
}  # fmt: skip


def unroll_rows(config: dict, device: str) -> list[dict]:
    """One row per (shape, cell, contender, mode): median ms and the ratio to ``unroll=1``."""
    rows = []
    for shape in config["shapes"]:
        x = np.random.default_rng(0).standard_normal(
            (shape["B"], shape["T"], shape["D"]), np.float32
        )
        for cell in progress(config["cells"], f"unroll {shape}"):
            runners = {
                f"unroll={u}": _competitors.rnnjax_runner(cell, x, shape["H"], unroll=u)
                for u in config["unrolls"]
            }
            if cell != "gru_seed":  # PyTorch has only the reset-after GRU
                runners["torch"] = _competitors.torch_runner(cell, x, shape["H"], device=device)
            times = _competitors.time_runners(runners, config["rounds"])
            for (name, mode), stats in times.items():
                base = times[(f"unroll={config['unrolls'][0]}", mode)]["median_ms"]
                rows.append({
                    "cell": cell, "contender": name, "mode": mode, **shape,
                    "median_ms": stats["median_ms"], "speedup_vs_first": base / stats["median_ms"],
                    "compile_s": runners[name].compile_s[mode],
                })  # fmt: skip
    return rows


def markdown(results: dict) -> str:
    """A table per shape: each contender's forward and forward+backward ms, and ratios."""
    rows, first = results["rows"], f"unroll={results['config']['unrolls'][0]}"
    lines = [
        f"Device {results['device']} ({', '.join(results['machine']['jax_devices'])}); "
        f"median ms of {results['config']['rounds']} interleaved rounds; "
        f"speed-up = {first}'s time / this time (> 1: faster)."
    ]
    for shape in {(r["B"], r["T"], r["D"], r["H"]): None for r in rows}:
        lines.append(f"\n**B={shape[0]}, T={shape[1]}, D={shape[2]}, H={shape[3]}**\n")
        table = {}
        for r in rows:
            if (r["B"], r["T"], r["D"], r["H"]) == shape:
                entry = table.setdefault((r["cell"], r["contender"]), {})
                entry[r["mode"]] = r
        lines.append(
            markdown_table(
                ["cell", "contender", "fwd ms", "fwd speed-up", "fwd+bwd ms", "fwd+bwd speed-up"],
                [
                    [
                        cell,
                        name,
                        f"{m['forward']['median_ms']:.3g}",
                        f"{m['forward']['speedup_vs_first']:.2f}x",
                        f"{m['forward_backward']['median_ms']:.3g}",
                        f"{m['forward_backward']['speedup_vs_first']:.2f}x",
                    ]
                    for (cell, name), m in table.items()
                ],  # fmt: skip
            )
        )
    return "\n".join(lines)


def run(config: dict, out_dir: Path, device: str = "cpu") -> dict:
    """Run the sweep of ``config`` on ``device``; write ``results.json`` and ``summary.md``."""
    results = start(config, device)
    results["rows"] = unroll_rows(config, device)
    path = write_json(out_dir, results)
    write_summary(out_dir, f"unroll sweep ({device})", markdown(results))
    logger.info("wrote %s", path)
    return results


def main(argv=None):
    args = parse_device_args("benchmarks_unroll", __doc__, argv)
    out = args.out
    if out == RESULTS / "benchmarks_unroll":
        out = out / args.device
    run(pick_size(SIZES, args), out, args.device)


if __name__ == "__main__":
    main()
