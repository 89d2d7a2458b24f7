"""A griffe extension for the API reference: docstring ``>>>`` examples render as code.

The library's docstrings end with bare doctest lines (``>>> ys = layer.apply(...)``), which
Markdown would read as prose (``x[-1]["loss"]`` even as a reference link). This wraps each run of
``>>>`` / ``...`` lines, and the expected output after them, in a fenced ``python`` block.
"""

import re

import griffe

_PROMPT = re.compile(r"^(\s*)(>>>|\.\.\.)( |$)")


def fence_doctests(text: str) -> str:
    """``text`` with every doctest run fenced; text already inside a fence is left alone."""
    lines, out, fenced, index = text.split("\n"), [], False, 0
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else _PROMPT.match(line)
        if match is None or match.group(2) != ">>>":
            out.append(line)
            index += 1
            continue
        indent = match.group(1)
        out.append(f"{indent}```python")
        while index < len(lines) and lines[index].strip() and lines[index].startswith(indent):
            out.append(lines[index])
            index += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFence(griffe.Extension):
    """Fence the doctest examples of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
