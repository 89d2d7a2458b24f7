"""Shared helpers for experiments: command line, sizes, progress bars, JSON/PNG/markdown output.

An experiment module defines ``SIZES = {"quick": {...}, "default": {...}, "full": {...}}``, a
``run(config, out_dir) -> dict`` that does the work and writes its files, and
``main(argv=None)``::

    def main(argv=None):
        args = parse_args("gradient_decay", __doc__, argv)
        run(pick_size(SIZES, args), args.out)

Every JSON written with :func:`write_json` carries a :func:`stamp` (machine, versions, git commit,
UTC time, command line) so numbers in the README can be traced to the run that made them.
"""

import argparse
import datetime
import json
import logging
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZE_NAMES = ("quick", "default", "full")

logger = logging.getLogger("experiments")


def parse_args(
    name: str, description: str | None, argv: list[str] | None = None, extra=None
) -> argparse.Namespace:
    """Parse ``[--quick | --full] [--out DIR] [--seed N]`` (plus ``extra(parser)``'s options).

    Returns:
      A namespace with ``size`` (``"quick"``, ``"default"`` or ``"full"``), ``out`` (a ``Path``,
      default ``experiments/results/<name>``) and ``seed``.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}",
        description=(description or "").strip().splitlines()[0] if description else None,
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="size",
        help="smoke-test size (seconds)",
    )
    group.add_argument(
        "--full",
        action="store_const",
        const="full",
        dest="size",
        help="paper-scale size (minutes to hours)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / name,
        help=f"output directory (default: experiments/results/{name})",
    )
    parser.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    args.size = args.size or "default"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args


def pick_size(sizes: Mapping[str, Mapping[str, Any]], args: argparse.Namespace) -> dict:
    """The configuration for ``args.size`` with ``size`` and ``seed`` added."""
    return {**sizes[args.size], "size": args.size, "seed": args.seed}


def progress(iterable: Iterable, desc: str, total: int | None = None, **kwargs):
    """A tqdm progress bar on stderr (silenced when ``EXPERIMENTS_NO_PROGRESS`` is set)."""
    disable = bool(os.environ.get("EXPERIMENTS_NO_PROGRESS"))
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, **kwargs)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _command() -> str:
    """The command line as typed: ``python -m experiments.NAME ARGS`` for module runs."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"-m {spec.name}" if spec is not None else sys.argv[0]
    return " ".join(["python", program, *sys.argv[1:]])


def stamp() -> dict:
    """Where and with what a result was produced: machine, versions, commit, time, command."""
    import rnnjax

    device = jax.devices()[0]
    return {
        "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": _command(),
        "git_commit": _git_commit(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "rnnjax": rnnjax.__version__,
        "numpy": np.__version__,
    }


def to_jsonable(value: Any) -> Any:
    """Arrays, NumPy scalars, tuples and paths to JSON types; non-finite floats to ``None``."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return to_jsonable(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if callable(value):
        return getattr(value, "__name__", repr(value))
    return value


def write_json(out_dir: Path, data: Mapping[str, Any], name: str = "results.json") -> Path:
    """Write ``data`` plus a ``"stamp"`` as indented JSON; returns the path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    payload = {**to_jsonable(dict(data)), "stamp": stamp()}
    path.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    return path


def save_figure(fig, out_dir: Path, name: str) -> Path:
    """Save a matplotlib figure as ``out_dir/name`` (PNG, 120 dpi) and close it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_summary(out_dir: Path, title: str, body: str | list[str]) -> Path:
    """Write ``summary.md``: a title, the body (markdown) and the stamp's machine line."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = stamp()
    text = body if isinstance(body, str) else "\n".join(body)
    footer = (
        f"\n\n_Produced by `{info['command']}` at {info['utc']} on {info['platform']} "
        f"({info['cpu_count']} CPUs, jax {info['jax']} on {info['device']}, "
        f"commit {info['git_commit']})._\n"
    )
    path = out_dir / "summary.md"
    path.write_text(f"# {title}\n\n{text.strip()}{footer}")
    return path


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats printed with 4 significant digits."""

    def cell(value):
        if isinstance(value, (float, np.floating)):
            return "nan" if not math.isfinite(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
