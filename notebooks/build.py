"""Re-execute the notebooks in place, write their thumbnails, or check they are in sync.

    python notebooks/build.py              # execute every notebook in place + notebooks/figures/
    python notebooks/build.py 02 04        # only the notebooks whose names start with 02 or 04
    python notebooks/build.py --check      # execute in memory; exit 1 if the text outputs
                                           # differ from the committed ones (nothing is written)

Each notebook runs top to bottom in a fresh ``python3`` kernel whose working directory is
``notebooks/`` and whose ``PYTHONPATH`` starts with the checkout's root (``experiments`` is not
installed). The committed notebooks keep their outputs (so they render on a code host) and
their text outputs are deterministic, which is what ``--check`` and ``tests/test_notebooks.py``
compare: stdout and ``text/plain`` results, cell by cell, with numbers compared to a relative
tolerance so that last-digit differences between CPUs do not count. Images and stderr (warnings)
are not compared. The cell tagged ``main-figure`` supplies ``figures/<notebook>.png``, the
thumbnail the README links.
"""

import argparse
import base64
import io
import math
import os
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
FIGURES = NOTEBOOKS / "figures"
KERNEL = "python3"
MAIN_FIGURE_TAG = "main-figure"
THUMBNAIL_WIDTH = 1200  # the README's thumbnails stay readable; smaller figures keep their size
TIMEOUT_S = 600
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def notebook_paths(prefixes: list[str] | None = None) -> list[Path]:
    """The notebooks ``notebooks/NN_*.ipynb`` in order, optionally only those named ``prefixes``."""
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in prefixes)]
    return paths


def execute(path: Path, timeout: int = TIMEOUT_S) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` top to bottom in a fresh kernel; return it with outputs.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first cell that fails.
    """
    notebook = nbformat.read(path, as_version=4)
    # The kernelspec runs `python` from PATH: make that this interpreter (the project's venv).
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    # `experiments` is run from the checkout, never installed: put its root on the kernel's path.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(NOTEBOOKS.parent) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(NOTEBOOKS.parent), *paths])
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=KERNEL,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return notebook


def text_outputs(notebook: nbformat.NotebookNode) -> list[str]:
    """The deterministic text of each code cell: stdout plus ``text/plain`` results."""
    texts = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stdout":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                parts.append(output.get("data", {}).get("text/plain", "") + "\n")
            elif output.output_type == "error":
                parts.append(f"{output.ename}: {output.evalue}\n")
        texts.append("".join(parts))
    return texts


def _numbers_match(a: str, b: str, rtol: float, atol: float) -> bool:
    x, y = float(a), float(b)
    return math.isclose(x, y, rel_tol=rtol, abs_tol=atol)


def texts_match(expected: str, actual: str, *, rtol: float = 2e-3, atol: float = 1e-6) -> bool:
    """Whether two outputs are equal, numbers compared to ``rtol``/``atol`` and the rest exactly.

    >>> texts_match("loss 0.12345", "loss 0.12346")
    True
    """
    if _NUMBER.sub("#", expected) != _NUMBER.sub("#", actual):
        return False
    pairs = zip(_NUMBER.findall(expected), _NUMBER.findall(actual), strict=True)
    return all(_numbers_match(a, b, rtol, atol) for a, b in pairs)


def differences(committed: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> list[str]:
    """Human-readable list of code cells whose text output changed (empty when in sync)."""
    before, after = text_outputs(committed), text_outputs(executed)
    if len(before) != len(after):
        return [f"{len(before)} code cells committed, {len(after)} executed"]
    return [
        f"code cell {index}:\n--- committed\n{old}--- re-executed\n{new}"
        for index, (old, new) in enumerate(zip(before, after, strict=True))
        if not texts_match(old, new)
    ]


def structure_problems(notebook: nbformat.NotebookNode) -> list[str]:
    """What shows a committed notebook was not executed top to bottom in one kernel, if anything.

    Every code cell must have run, in order (execution counts 1, 2, 3, ...), without an error
    output, and exactly one cell must be tagged ``main-figure`` and show an image.
    """
    problems = []
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.get("execution_count") for cell in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"execution counts are {counts}, not 1..{len(code)} (re-run build.py)")
    for index, cell in enumerate(code):
        if any(output.output_type == "error" for output in cell.get("outputs", [])):
            problems.append(f"code cell {index} has an error output")
    tagged = [cell for cell in code if MAIN_FIGURE_TAG in cell.metadata.get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{len(tagged)} cells are tagged {MAIN_FIGURE_TAG!r}; expected 1")
    elif main_figure(notebook) is None:
        problems.append(f"the {MAIN_FIGURE_TAG!r} cell shows no PNG image")
    return problems


def main_figure(notebook: nbformat.NotebookNode) -> bytes | None:
    """PNG bytes of the last image shown by the cell tagged ``main-figure`` (None if none)."""
    for cell in notebook.cells:
        if MAIN_FIGURE_TAG not in cell.metadata.get("tags", []):
            continue
        images = [
            output.data["image/png"]
            for output in cell.get("outputs", [])
            if "image/png" in output.get("data", {})
        ]
        if images:
            return base64.b64decode(images[-1])
    return None


def write_thumbnail(notebook: nbformat.NotebookNode, path: Path) -> Path:
    """Save the main figure, at most ``THUMBNAIL_WIDTH`` pixels wide, as the PNG ``path``.

    Notebooks draw their figures at a resolution that leaves the thumbnail at least ~1000 pixels
    wide (``%config InlineBackend.figure_format = "retina"`` where a figure is small).
    """
    from PIL import Image  # Pillow, a dependency of matplotlib

    png = main_figure(notebook)
    if png is None:
        raise ValueError(f"the notebook has no {MAIN_FIGURE_TAG!r} cell with a PNG output")
    image = Image.open(io.BytesIO(png))
    image.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH * image.height // image.width))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path


def build(path: Path) -> None:
    """Execute ``path`` in place and write its thumbnail ``figures/<stem>.png``."""
    notebook = execute(path)
    nbformat.write(notebook, path)
    write_thumbnail(notebook, FIGURES / f"{path.stem}.png")


def check(path: Path) -> list[str]:
    """Problems with the committed ``path``: structure, then text outputs that re-execution changes."""
    committed = nbformat.read(path, as_version=4)
    return structure_problems(committed) + differences(committed, execute(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "prefixes", nargs="*", help="notebook name prefixes, e.g. 02 (default: all)"
    )
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    paths = notebook_paths(args.prefixes)
    if not paths:
        parser.error(f"no notebook matches {args.prefixes}")
    failed = False
    for path in paths:
        if args.check:
            problems = check(path)
            failed |= bool(problems)
            print(f"{path.name}: {'in sync' if not problems else 'OUT OF SYNC'}")
            for problem in problems:
                print(problem)
        else:
            build(path)
            print(f"{path.name}: executed, thumbnail figures/{path.stem}.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
