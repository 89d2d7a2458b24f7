"""What the C library's allocator settings do to each framework's times and page faults.

``python -m experiments.benchmarks.allocator [--quick | --full] [--out DIR]`` runs, for each
setting of :data:`SETTINGS` in turn and ``repeats`` times over, a fresh process that times
rnnjax, PyTorch and Flax forward and forward+backward, interleaved as in ``experiments.benchmarks``
(and counting each call's minor page faults). The settings are environment variables read when a
process starts, so each needs its own process; alternating them spreads the machine's drift over
all of them. Writes ``results.json`` and ``summary.md`` (default
``experiments/results/benchmarks_allocator``): per setting, the median over processes of each
median time and of the page faults per call, rnnjax's speed-ups taken within each process and
each framework's gain over the first setting, paired by repeat (both with their range).

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
from experiments.benchmarks import _timing
from experiments.benchmarks.__main__ import PAPER_SHAPES, compare, start

logger = logging.getLogger("experiments.benchmarks.allocator")

_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": "2000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}
SETTINGS = {
    "glibc defaults": {},
    "huge pages": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "high thresholds": _THRESHOLDS,
    "one arena, high thresholds": {"MALLOC_ARENA_MAX": "1", **_THRESHOLDS},
}
"""Each setting's environment variables, on top of this process's environment stripped of every
allocator variable (``_timing.is_allocator_variable``). The first is the baseline of the gains."""

FRAMEWORKS = ("rnnjax", "torch", "flax")
_MARKER = "ALLOCATOR-RESULT "
_WORKER_TIMEOUT_S = 3600

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
    env = {k: v for k, v in os.environ.items() if not _timing.is_allocator_variable(k)}
    return {**env, **SETTINGS[setting]}


def worker_rows(config: dict) -> dict:
    """In the worker process: ``{"allocator": ..., "rows": [...]}``, the rows of
    ``experiments.benchmarks``' comparison (median ms, page faults per call, per-round ms, ...)
    for rnnjax, PyTorch and Flax."""
    start(config, "cpu")
    rows = compare(config, "cpu", gemm_gflops=None, frameworks=FRAMEWORKS)
    return {"allocator": _timing.allocator_environment(), "rows": rows}


def _run_worker(
    config: dict, setting: str, module: str = "experiments.benchmarks.allocator"
) -> dict:
    """Run ``python -m module --worker CONFIG`` under ``setting``'s environment; its result."""
    command = [sys.executable, "-m", module, "--worker", json.dumps(config)]
    try:
        done = subprocess.run(
            command, env=environment(setting), capture_output=True, text=True, check=False,
            timeout=_WORKER_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(
            f"the worker for setting {setting!r} ran past {_WORKER_TIMEOUT_S} s"
        ) from error
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"the worker for setting {setting!r} failed (exit {done.returncode}):\n"
            f"{done.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len(_MARKER) :])


def _key(row) -> tuple:
    return (row["cell"], row["B"], row["T"], row["D"], row["H"], row["mode"])


def _spread(values: list[float]) -> dict:
    return {
        "median": float(np.median(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    }


def summarise(runs: list[dict], baseline: str) -> list[dict]:
    """One row per (setting, shape, cell, mode), each figure taken over the setting's processes:
    each framework's median ms and page faults per call (medians), rnnjax's speed-ups over
    PyTorch and Flax (within each process, the contenders having run interleaved in it) and
    each framework's gain over ``baseline`` (the baseline's time over this setting's, paired by
    repeat, since the settings ran in turn), each as ``{"median", "min", "max"}``."""
    grouped: dict[tuple, dict[int, dict]] = {}
    for run in runs:
        for row in run["rows"]:
            processes = grouped.setdefault((run["setting"], *_key(row)), {})
            processes.setdefault(run["repeat"], {})[row["framework"]] = row
    rows = []
    for (setting, *key), by_repeat in grouped.items():
        cell, b, t, d, h, mode = key
        processes = list(by_repeat.values())
        row = {"setting": setting, "cell": cell, "B": b, "T": t, "D": d, "H": h, "mode": mode,
               "processes": len(processes)}  # fmt: skip
        base = grouped.get((baseline, *key)) if setting != baseline else None
        for name in FRAMEWORKS:
            row[f"{name}_ms"] = float(np.median([p[name]["median_ms"] for p in processes]))
            faults = [p[name]["page_faults"] for p in processes]
            row[f"{name}_page_faults"] = None if None in faults else float(np.median(faults))
            if base is not None:
                row[f"{name}_gain"] = _spread([
                    base[repeat][name]["median_ms"] / process[name]["median_ms"]
                    for repeat, process in by_repeat.items() if repeat in base
                ])  # fmt: skip
        for other in ("torch", "flax"):
            row[f"speedup_vs_{other}"] = _spread(
                [p[other]["median_ms"] / p["rnnjax"]["median_ms"] for p in processes]
            )
        rows.append(row)
    return rows


def _ratio(spread: dict | None) -> str:
    if spread is None:
        return ""
    if spread["min"] == spread["max"]:
        return f"{spread['median']:.2f}x"
    return f"{spread['median']:.2f}x ({spread['min']:.2f}-{spread['max']:.2f})"


def markdown(results: dict) -> str:
    """A table per mode and shape: each setting's times, rnnjax's speed-ups, each framework's
    gain over the baseline setting, and page faults."""
    config, rows = results["config"], results["summary"]
    baseline = config["settings"][0]
    lines = [
        f"Medians over {config['repeats']} process(es) per setting, the settings run in turn; "
        f"in each process, medians of {config['rounds']} interleaved rounds. Speed-up: the "
        "other's time / rnnjax's, within each process. Gain: the time under "
        f"{baseline!r} / the time under this setting, paired by repeat. Brackets: the lowest "
        "and highest over the processes. Page faults: minor faults per call.\n",
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
                 _ratio(r["speedup_vs_torch"]), _ratio(r["speedup_vs_flax"]),
                 *(_ratio(r.get(f"{name}_gain")) for name in FRAMEWORKS),
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
                        "rnnjax gain",
                        "PyTorch gain",
                        "Flax gain",
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
    results["summary"] = summarise(runs, baseline=config["settings"][0])
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
