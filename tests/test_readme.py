"""Every ```python block of README.md runs on its own, as a reader would paste it.

Each block runs in a fresh interpreter in an empty directory: it must bring its own imports and
data. Blocks whose lines end in ``# True`` must print ``True`` there; none may print ``False``.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run_block(code: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    """Run ``code`` with ``python -c`` in ``cwd``, the checkout importable, rank promotion raising."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JAX_NUMPY_RANK_PROMOTION": "raise",
        "KERAS_BACKEND": "jax",
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_readme_has_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_alone(index, tmp_path):
    block = BLOCKS[index]
    result = run_block(block, tmp_path)
    assert result.returncode == 0, f"README python block {index} failed:\n{block}\n{result.stderr}"
    assert "False" not in result.stdout, result.stdout
    expected_true = sum(line.rstrip().endswith("# True") for line in block.splitlines())
    assert result.stdout.count("True") >= expected_true, result.stdout


def test_a_failing_block_is_reported(tmp_path):
    """The harness itself: a block that uses a name it did not define fails."""
    assert run_block("import rnnjax\nprint(np.ones(3))", tmp_path).returncode != 0
