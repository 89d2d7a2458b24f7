"""Rerun every committed result, then re-execute the notebooks: one command for all of it.

    python -m experiments.regenerate                  # every result this machine can produce
    python -m experiments.regenerate --list           # the commands, without running them
    python -m experiments.regenerate gradient_decay applications/digits   # some results
    python -m experiments.regenerate --no-notebooks
    python -m experiments.regenerate --notebooks-only

The commands come from the committed results themselves: each ``results.json`` under
``experiments/results/`` holds the command line that wrote it (its stamp), rerun here with
``--out`` pointing back at that result's directory. Results made on another backend (the GPU
benchmark on a CPU machine) are skipped and reported. The notebooks are then re-executed in place
by ``notebooks/build.py``, which also refreshes their thumbnails. Benchmarks run last and take
the longest (about 20 minutes at the default size on 2 cores); run the whole under ``nice`` on a
shared machine, with nothing else running when timings matter.
"""

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from experiments import _common


class Job(NamedTuple):
    name: str  # the result's directory under experiments/results/
    argv: list[str]  # the command to run, starting with the interpreter
    skip: str | None  # why it cannot run here, or None


def _rerun_argv(command: str, out_dir: Path) -> list[str]:
    """``python -m MODULE ARGS`` from a stamp, with ``--out`` replaced by ``out_dir``."""
    words = shlex.split(command)
    if len(words) < 3 or words[1] != "-m":
        raise ValueError(f"not a 'python -m MODULE ...' command: {command!r}")
    module, args, kept, index = words[2].removesuffix(".__main__"), words[3:], [], 0
    while index < len(args):
        if args[index] == "--out":
            index += 2
            continue
        if not args[index].startswith("--out="):
            kept.append(args[index])
        index += 1
    return [sys.executable, "-m", module, *kept, "--out", str(out_dir)]


def jobs(names: list[str] | None = None, backend: str | None = None) -> list[Job]:
    """One job per committed ``results.json`` (quick runs excluded), benchmarks last.

    Args:
      names: result directories relative to ``experiments/results/`` to keep (default: all).
      backend: this machine's JAX backend (default: ``jax.default_backend()``); results stamped
        with another are skipped.
    """
    if backend is None:
        import jax

        backend = jax.default_backend()
    found = []
    for path in sorted(_common.RESULTS.rglob("results.json")):
        name = path.parent.relative_to(_common.RESULTS).as_posix()
        if "quick" in name.split("/") or (names and name not in names):
            continue
        stamp = json.loads(path.read_text()).get("stamp", {})
        if "command" not in stamp:
            continue
        made_on = stamp.get("jax_backend")
        skip = None if made_on in (None, backend) else f"made on {made_on}, here {backend}"
        out = path.parent.relative_to(_common.REPOSITORY)  # the jobs run in the checkout
        found.append(Job(name, _rerun_argv(stamp["command"], out), skip))
    missing = sorted(set(names or ()) - {job.name for job in found})
    if missing:
        raise SystemExit(f"no committed results.json for {missing}")
    return sorted(found, key=lambda job: (job.name.startswith("benchmarks"), job.name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.regenerate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("names", nargs="*", help="result directories, e.g. gradient_decay")
    parser.add_argument("--list", action="store_true", help="print the commands and stop")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--no-notebooks", action="store_true", help="results only")
    group.add_argument("--notebooks-only", action="store_true", help="notebooks only")
    args = parser.parse_args(argv)
    todo = [] if args.notebooks_only else jobs(args.names or None)
    notebooks = not args.no_notebooks and not args.names
    failed = []
    for job in todo:
        shown = shlex.join(["python", *job.argv[1:]])
        if job.skip:
            print(f"skip {job.name}: {job.skip} ({shown})", flush=True)
        elif args.list:
            print(shown)
        else:
            print(f"run  {shown}", flush=True)
            if subprocess.run(job.argv, cwd=_common.REPOSITORY).returncode != 0:
                failed.append(job.name)
    build = [sys.executable, "notebooks/build.py"]
    if notebooks and args.list:
        print(shlex.join(["python", *build[1:]]))
    elif notebooks:
        print("run  python notebooks/build.py", flush=True)
        if subprocess.run(build, cwd=_common.REPOSITORY).returncode != 0:
            failed.append("notebooks")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
