"""What the C library's allocator settings do to each framework's times and page faults.

``python -m experiments.benchmarks.allocator [--quick | --full] [--out DIR]`` runs, for each
setting of :data:`SETTINGS` in turn and ``repeats`` times over, a fresh process that times
rnnjax, PyTorch and Flax forward and forward+backward, interleaved as in ``experiments.benchmarks``
(and counting each call's minor page faults). The settings are environment variables read when a
process starts, so each needs its own process; alternating them spreads the machine's drift over
all of them. Writes ``results.json`` and ``summary.md`` (default
``experiments/results/benchmarks_allocator``): per setting, the median over processes of each
median time, of the ratios taken within each process, and of the page faults per call.

Each call of a compiled forward+backward allocates its temporaries afresh; on Linux, glibc gives
blocks that large fresh pages from the OS, and each page faults on its first touch. These settings
change that for the whole process, so rnnjax leaves them to its users (README, "Allocator
settings").
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from experiments._common import (
    markdown_table,
    parse_args,
    pick_size,
    progress,
    write_json,
    write_summary,
)
from experiments.benchmarks import _competitors, _timing
from experiments.benchmarks.__main__ import PAPER_SHAPES, start

logger = logging.getLogger("experiments.benchmarks.allocator")

_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": "2000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}
SETTINGS = {
    "glibc defaults": {},
    "huge pages": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "high thresholds": _THRESHOLDS,
    "one arena, high thresholds": {"MALLOC_ARENA_MAX": "1", **_THRESHOLDS},
}
"""Each setting's environment variables (on top of an environment without any of
``_timing.ALLOCATOR_VARIABLES``)."""

FRAMEWORKS = ("rnnjax", "torch", "flax")
_MARKER = "ALLOCATOR-RESULT "

SIZES = {
    "tiny": {"shapes": [{"B": 2, "T": 5, "D": 3, "H": 4}], "cells": ["lstm"], "rounds": 2,
             "repeats": 1, "settings": ["glibc defaults", "huge pages"]},
    "quick": {"shapes": PAPER_SHAPES[:1], "cells": ["lstm"], "rounds": 5, "repeats": 1,
              "settings": list(SETTINGS)},
    "default": {"shapes": PAPER_SHAPES[:1], "cells": ["lstm", "gru"], "rounds": 11,
                "repeats": 3, "settings": list(SETTINGS)},
    "full": {"shapes": PAPER_SHAPES, "cells": ["lstm", "gru"], "rounds": 11, "repeats": 3,
             "settings": list(SETTINGS)},
}  # fmt: skip


def environment(setting: str) -> dict:
    """This process's environment with the allocator variables of ``setting`` only."""
    env = {k: v for k, v in os.environ.items() if k not in _timing.ALLOCATOR_VARIABLES}
    return {**env, **SETTINGS[setting]}


def worker_rows(config: dict) -> dict:
    """In the worker process: ``{"allocator": ..., "rows": [...]}``, one row per (shape, cell,
    framework, mode) with the median ms, the median page faults per call and the per-round ms."""
    start(config, "cpu")
    rows = []
    for shape in config["shapes"]:
        x = np.random.default_rng(0).standard_normal(
            (shape["B"], shape["T"], shape["D"]), np.float32
        )
        for cell in config["cells"]:
            runners = {name: _competitors.build(name, cell, x, shape["H"], "cpu")
                       for name in FRAMEWORKS}  # fmt: skip
            for (name, mode), stats in _competitors.time_runners(runners, config["rounds"]).items():
                rows.append({
                    "framework": name, "cell": cell, "mode": mode, **shape,
                    "median_ms": stats["median_ms"], "page_faults": stats["page_faults"],
                    "round_ms": stats["round_ms"],
                })  # fmt: skip
    return {"allocator": _timing.allocator_environment(), "rows": rows}


def _run_worker(config: dict, setting: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "experiments.benchmarks.allocator",
        "--worker",
        json.dumps(config),
    ]
    done = subprocess.run(
        command, env=environment(setting), capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"the worker for setting {setting!r} failed (exit {done.returncode}):\n"
            f"{done.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len(_MARKER) :])


def _key(row) -> tuple:
    return (row["cell"], row["B"], row["T"], row["D"], row["H"], row["mode"])


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (setting, shape, cell, mode): each framework's median ms and page faults,
    and rnnjax's speed-ups over PyTorch and Flax, each the median over the setting's processes
    (a process's speed-up is its ratio of medians: the contenders ran interleaved in it)."""
    grouped: dict[tuple, list[dict]] = {}
    for run in runs:
        by_key: dict[tuple, dict] = {}
        for row in run["rows"]:
            by_key.setdefault(_key(row), {})[row["framework"]] = row
        for key, frameworks in by_key.items():
            grouped.setdefault((run["setting"], *key), []).append(frameworks)
    rows = []
    for (setting, cell, b, t, d, h, mode), processes in grouped.items():
        row = {"setting": setting, "cell": cell, "B": b, "T": t, "D": d, "H": h, "mode": mode,
               "processes": len(processes)}  # fmt: skip
        for name in FRAMEWORKS:
            row[f"{name}_ms"] = float(np.median([p[name]["median_ms"] for p in processes]))
            faults = [p[name]["page_faults"] for p in processes]
            row[f"{name}_page_faults"] = None if None in faults else float(np.median(faults))
        for other in ("torch", "flax"):
            row[f"speedup_vs_{other}"] = float(
                np.median([p[other]["median_ms"] / p["rnnjax"]["median_ms"] for p in processes])
            )
        rows.append(row)
    return rows


def markdown(results: dict) -> str:
    """A table per mode and shape: each setting's times, rnnjax's speed-ups and page faults."""
    config, rows = results["config"], results["summary"]
    lines = [
        f"Medians over {config['repeats']} process(es) per setting, run alternately; in each, "
        f"medians of {config['rounds']} interleaved rounds. Speed-up: the other's time / "
        "rnnjax's, taken within each process. Page faults: minor faults per call.\n",
        markdown_table(
            ["setting", "environment"],
            [
                [name, " ".join(f"`{k}={v}`" for k, v in SETTINGS[name].items()) or "(none set)"]
                for name in config["settings"]
            ],
        ),  # fmt: skip
    ]
    for mode in ("forward_backward", "forward"):
        for shape in {(r["B"], r["T"], r["D"], r["H"]): None for r in rows}:
            table = [
                [r["setting"], r["cell"],
                 *(f"{r[f'{name}_ms']:.3g}" for name in FRAMEWORKS),
                 f"{r['speedup_vs_torch']:.2f}x", f"{r['speedup_vs_flax']:.2f}x",
                 " / ".join("" if r[f"{name}_page_faults"] is None
                            else f"{r[f'{name}_page_faults']:.0f}" for name in FRAMEWORKS)]
                for r in rows
                if r["mode"] == mode and (r["B"], r["T"], r["D"], r["H"]) == shape
            ]  # fmt: skip
            lines.append(f"\n**{mode}, B={shape[0]} T={shape[1]} D={shape[2]} H={shape[3]}**\n")
            lines.append(
                markdown_table(
                    [
                        "setting",
                        "cell",
                        "rnnjax ms",
                        "PyTorch ms",
                        "Flax ms",
                        "rnnjax vs PyTorch",
                        "rnnjax vs Flax",
                        "page faults rnnjax / PyTorch / Flax",
                    ],
                    table,
                )  # fmt: skip
            )
    return "\n".join(lines)


def run(config: dict, out_dir: Path) -> dict:
    """Every setting of ``config`` in its own process, ``repeats`` times in turn; writes
    ``results.json`` and ``summary.md`` to ``out_dir``."""
    results = start(config, "cpu")
    runs = []
    for repeat in range(config["repeats"]):
        for setting in progress(config["settings"], f"allocator settings, round {repeat + 1}"):
            runs.append({"setting": setting, "repeat": repeat, **_run_worker(config, setting)})
            logger.info("%s (round %d) done", setting, repeat + 1)
    results["runs"] = runs
    results["summary"] = summarise(runs)
    path = write_json(out_dir, results)
    write_summary(out_dir, "Allocator settings (CPU)", markdown(results))
    logger.info("wrote %s", path)
    return results


def main(argv=None):
    args = parse_args("benchmarks_allocator", __doc__, argv)
    run(pick_size(SIZES, args), args.out)


def _worker_main(config_json: str) -> None:
    print(_MARKER + json.dumps(worker_rows(json.loads(config_json))), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2])
    else:
        main()
