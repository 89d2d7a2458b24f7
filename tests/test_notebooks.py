"""The notebooks run top to bottom without error and the committed ones are in sync.

Each notebook is executed once in a fresh ``python3`` kernel (``notebooks/build.py``'s
``execute``, nbclient); any failing cell fails the test. The committed notebook must show that it
was executed top to bottom (execution counts 1..n, no error outputs, a main figure) and its text
outputs must be what re-execution prints: ``python notebooks/build.py`` refreshes them.
"""

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

NOTEBOOKS = build.notebook_paths()
EXPECTED = [
    "01_cells_and_scan",
    "02_vanishing_gradients",
    "03_exploding_gradients_and_clipping",
    "04_long_term_dependencies",
    "05_benchmarks",
]


def _notebook(cells):
    notebook = nbformat.v4.new_notebook()
    for source, outputs, count, tags in cells:
        cell = nbformat.v4.new_code_cell(source, execution_count=count)
        cell.outputs = [nbformat.from_dict(output) for output in outputs]
        if tags:
            cell.metadata["tags"] = tags
        notebook.cells.append(cell)
    return notebook


def _stdout(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_every_notebook_is_there():
    assert [path.stem for path in NOTEBOOKS] == EXPECTED


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem[:2] for path in NOTEBOOKS])
def test_notebook_runs_and_committed_outputs_are_in_sync(path):
    committed = nbformat.read(path, as_version=4)
    assert build.structure_problems(committed) == []
    executed = build.execute(path)  # raises CellExecutionError on the first failing cell
    problems = build.differences(committed, executed)
    assert not problems, "re-run `python notebooks/build.py`:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem[:2] for path in NOTEBOOKS])
def test_committed_notebook_has_its_thumbnail_and_no_local_paths(path):
    thumbnail = build.FIGURES / f"{path.stem}.png"
    assert thumbnail.is_file(), f"missing {thumbnail}: run python notebooks/build.py"
    assert thumbnail.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    notebook = nbformat.read(path, as_version=4)
    text = "".join(build.text_outputs(notebook))
    stderr = "".join(
        output.text
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stderr"
    )
    assert str(ROOT) not in text + stderr
    assert "site-packages" not in stderr, "a warning leaks a local install path"


def test_texts_match_tolerates_last_digits_only():
    assert build.texts_match("loss 0.123456, step 3", "loss 0.123457, step 3")
    assert build.texts_match("rate -1.5e-08", "rate -1.5000001e-08")
    assert not build.texts_match("loss 0.1235", "loss 0.1300")
    assert not build.texts_match("loss 0.1235", "loss 0.1235 nan")
    assert not build.texts_match("clipped: True", "clipped: False")


def test_differences_names_the_changed_cell():
    committed = _notebook([("a", [_stdout("x = 1\n")], 1, None), ("b", [_stdout("y\n")], 2, None)])
    same = _notebook(
        [("a", [_stdout("x = 1.0000001\n")], 1, None), ("b", [_stdout("y\n")], 2, None)]
    )
    changed = _notebook([("a", [_stdout("x = 2\n")], 1, None), ("b", [_stdout("y\n")], 2, None)])
    assert build.differences(committed, same) == []
    (problem,) = build.differences(committed, changed)
    assert problem.startswith("code cell 0:")
    assert build.differences(committed, _notebook([("a", [], 1, None)])) == [
        "2 code cells committed, 1 executed"
    ]


def test_text_outputs_skip_stderr_and_images():
    image = {"output_type": "display_data", "data": {"image/png": "iVBO", "text/plain": "<Figure>"}}
    stderr = {"output_type": "stream", "name": "stderr", "text": "a warning\n"}
    notebook = _notebook([("a", [_stdout("out\n"), stderr, image], 1, None)])
    assert build.text_outputs(notebook) == ["out\n<Figure>\n"]


def test_structure_problems_catch_unexecuted_and_out_of_order_cells():
    png = {"output_type": "display_data", "data": {"image/png": "iVBO"}}
    good = _notebook([("a", [], 1, None), ("b", [png], 2, ["main-figure"])])
    assert build.structure_problems(good) == []
    unexecuted = _notebook([("a", [], None, None), ("b", [png], 2, ["main-figure"])])
    assert "execution counts are [None, 2]" in build.structure_problems(unexecuted)[0]
    error = {"output_type": "error", "ename": "E", "evalue": "v", "traceback": []}
    failed = _notebook([("a", [error], 1, None), ("b", [png], 2, ["main-figure"])])
    assert build.structure_problems(failed) == ["code cell 0 has an error output"]
    no_figure = _notebook([("a", [], 1, None), ("b", [], 2, ["main-figure"])])
    assert build.structure_problems(no_figure) == ["the 'main-figure' cell shows no PNG image"]


def test_write_thumbnail_scales_the_main_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import base64
    import io

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(16, 8), dpi=100)  # 1600 px: shrunk to THUMBNAIL_WIDTH
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    png = {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(buffer.getvalue()).decode()},
    }
    notebook = _notebook([("plot", [png], 1, ["main-figure"])])
    path = build.write_thumbnail(notebook, tmp_path / "figure.png")
    from PIL import Image

    assert Image.open(path).size == (build.THUMBNAIL_WIDTH, build.THUMBNAIL_WIDTH // 2)
    with pytest.raises(ValueError, match="no 'main-figure' cell with a PNG output"):
        build.write_thumbnail(_notebook([("a", [], 1, None)]), tmp_path / "none.png")


def test_notebooks_use_the_python3_kernel():
    for path in NOTEBOOKS:
        metadata = json.loads(path.read_text())["metadata"]
        assert metadata["kernelspec"]["name"] == build.KERNEL, path.name
