"""Shared helpers for experiments: command line, sizes, progress bars, JSON/PNG/markdown output.

An experiment module defines ``SIZES = {"quick": {...}, "default": {...}, "full": {...}}``, a
``run(config, out_dir) -> dict`` that does the work and writes its files, and
``main(argv=None)``::

    def main(argv=None):
        args = parse_args("gradient_decay", __doc__, argv)
        run(pick_size(SIZES, args), args.out)

What every experiment gets from :func:`parse_args` and the writers:

* Output goes to ``--out``, by default ``experiments/results/<name>/`` of the checkout this file
  lives in (whatever the working directory); a dotted name (``applications.digits``) nests
  (``results/applications/digits/``). ``--quick`` defaults to ``results/<name>/quick/``, so a
  smoke test never overwrites the committed default-size results.
* Quiet by default: logging at WARNING except the ``experiments`` loggers at INFO (``-v`` shows
  INFO from everything, such as ``rnnjax.train``'s per-epoch records; JAX's backend probing stays
  at WARNING), progress bars only when stderr is a terminal.
* When a run launched as ``python -m experiments.NAME`` ends, it prints the directories it wrote.
* Every JSON written with :func:`write_json` carries a :func:`stamp` (machine, versions, git
  commit, UTC time, command line) and :func:`source_hashes` of the experiment module and of
  ``rnnjax/``, which ``tests/test_results_fresh.py`` compares with the code in the checkout.
"""

import argparse
import atexit
import datetime
import hashlib
import inspect
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
from tqdm.std import tqdm  # noqa: E402

EXPERIMENTS = Path(__file__).resolve().parent
REPOSITORY = EXPERIMENTS.parent
RESULTS = EXPERIMENTS / "results"
LIBRARY = REPOSITORY / "rnnjax"
SIZE_NAMES = ("quick", "default", "full")

logger = logging.getLogger("experiments")

_written: dict[Path, list[str]] = {}
"""Directories written by this process and the file names in each, for the end-of-run line."""


def default_out(name: str, size: str) -> Path:
    """Where a run of experiment ``name`` at ``size`` writes unless ``--out`` says otherwise.

    ``results/<name>/`` (a dotted name nests: ``applications.digits`` ->
    ``results/applications/digits/``) and, for ``--quick``, ``results/<name>/quick/``.
    """
    out = RESULTS.joinpath(*name.split("."))
    return out / "quick" if size == "quick" else out


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
    default = default_out(name, "default").relative_to(REPOSITORY)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output directory (default: {default}/ here, {default}/quick/ with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log INFO from everything (per-epoch records)"
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    args.size = args.size or "default"
    if args.out is None:
        args.out = default_out(name, args.size)
    configure_logging(args.verbose)
    if _launched_as_experiment() and not _written:
        atexit.unregister(_report_written)  # once per process, however often this is called
        atexit.register(_report_written)
    return args


def configure_logging(verbose: bool = False) -> None:
    """WARNING for everything, INFO for the ``experiments`` loggers (and all of it if ``verbose``).

    JAX logs its backend probing ("Unable to initialize backend 'tpu'") at INFO; it stays hidden
    either way.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("experiments").setLevel(logging.INFO)
    logging.getLogger("jax").setLevel(logging.WARNING)


def _launched_as_experiment() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name.startswith("experiments.")


def _report_written() -> None:
    for directory, names in _written.items():
        try:
            shown = directory.relative_to(Path.cwd())
        except ValueError:
            shown = directory
        print(f"wrote {shown}/: {', '.join(sorted(set(names)))}", flush=True)
    _written.clear()


def _record(path: Path) -> Path:
    _written.setdefault(path.parent.resolve(), []).append(path.name)
    return path


def pick_size(sizes: Mapping[str, Mapping[str, Any]], args: argparse.Namespace) -> dict:
    """The configuration for ``args.size`` with ``size`` and ``seed`` added."""
    return {**sizes[args.size], "size": args.size, "seed": args.seed}


def show_progress() -> bool:
    """Whether progress bars may be shown: not when ``EXPERIMENTS_NO_PROGRESS`` is set, and
    :func:`progress` itself shows them only when stderr is a terminal."""
    return not os.environ.get("EXPERIMENTS_NO_PROGRESS") and sys.stderr.isatty()


def progress(iterable: Iterable, desc: str, total: int | None = None, **kwargs):
    """A tqdm progress bar on stderr, shown only on a terminal (tqdm's ``disable=None``) and
    never when ``EXPERIMENTS_NO_PROGRESS`` is set."""
    disable = True if os.environ.get("EXPERIMENTS_NO_PROGRESS") else None
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


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _command() -> str:
    """The command line as typed: ``python -m experiments.NAME ARGS`` for module runs."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"-m {spec.name.removesuffix('.__main__')}" if spec is not None else sys.argv[0]
    return " ".join(["python", program, *sys.argv[1:]])


def _tree_sha256(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(REPOSITORY).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def experiment_files(module_file: str | Path) -> list[Path]:
    """The source files a result of ``module_file`` depends on, for :func:`source_hashes`.

    The module itself and, when it lives in a sub-package (``experiments/benchmarks/``,
    ``experiments/applications/``), that package's private ``_*.py`` helpers and ``__init__.py``.
    ``experiments/_common.py`` (output plumbing) is not counted.
    """
    path = Path(module_file).resolve()
    files = {path}
    if path.parent != EXPERIMENTS:
        files |= {p for p in path.parent.glob("_*.py")}
    return sorted(files)


def source_hashes(module_file: str | Path) -> dict:
    """SHA-256 of an experiment's source (:func:`experiment_files`) and of ``rnnjax/*.py``."""
    files = experiment_files(module_file)
    return {
        "module": Path(module_file).resolve().relative_to(REPOSITORY).as_posix(),
        "module_sha256": _tree_sha256(files),
        "rnnjax_sha256": _tree_sha256(LIBRARY.rglob("*.py")),
    }


def _calling_experiment() -> Path | None:
    """The file of the nearest caller outside this module that lives under ``experiments/``."""
    for frame_info in inspect.stack()[1:]:
        path = Path(frame_info.filename).resolve()
        if path != Path(__file__).resolve() and path.is_relative_to(EXPERIMENTS):
            return path
    return None


def stamp() -> dict:
    """Where and with what a result was produced: machine, versions, commit, time, command."""
    import rnnjax

    device = jax.devices()[0]
    return {
        "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": _command(),
        "git_commit": _git_commit(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
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
    """Write ``data`` plus a ``"stamp"`` as indented JSON; returns the path.

    The stamp's ``"source"`` holds :func:`source_hashes` of the experiment module that called
    this function (found on the call stack), so a stale result can be detected later.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    info = stamp()
    module = _calling_experiment()
    if module is not None:
        info["source"] = source_hashes(module)
    payload = {**to_jsonable(dict(data)), "stamp": info}
    path.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    return _record(path)


def save_figure(fig, out_dir: Path, name: str) -> Path:
    """Save a matplotlib figure as ``out_dir/name`` (PNG, 120 dpi) and close it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return _record(path)


def write_summary(out_dir: Path, title: str, body: str | list[str]) -> Path:
    """Write ``summary.md``: a title, the body (markdown) and the stamp's machine line."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = stamp()
    text = body if isinstance(body, str) else "\n".join(body)
    footer = (
        f"\n\n_Produced by `{info['command']}` at {info['utc']} on {info['platform']} "
        f"({info['processor']}, {info['cpu_count']} CPUs, jax {info['jax']} on {info['device']}, "
        f"commit {info['git_commit']})._\n"
    )
    path = out_dir / "summary.md"
    path.write_text(f"# {title}\n\n{text.strip()}{footer}")
    return _record(path)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats printed with 4 significant digits."""

    def cell(value):
        if isinstance(value, (float, np.floating)):
            return "nan" if not math.isfinite(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
