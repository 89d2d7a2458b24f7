"""README's Python examples run as written, so the quick start cannot drift from the code."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_examples_run_in_order():
    assert len(BLOCKS) >= 2
    namespace: dict = {}
    for index, block in enumerate(BLOCKS):  # later blocks may use names defined earlier
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
