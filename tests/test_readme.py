"""README's ```python examples run as written, so they cannot drift from the code.

Fragments that need data or devices the README does not build are fenced as ```py and not run.
"""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_examples_run_in_order():
    assert len(BLOCKS) >= 2
    namespace: dict = {}
    for index, block in enumerate(BLOCKS):  # later blocks may use names defined earlier
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
