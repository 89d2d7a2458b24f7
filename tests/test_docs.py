"""The documentation runs: docstring examples, the docs' code blocks, and complete API pages.

* Every ``>>>`` example in ``rnnjax`` runs in an empty namespace (its own imports and data), as
  a reader would paste it; expected output, where shown, must match.
* Every ```python block under ``docs/`` runs in a namespace of its own (```py blocks are shown,
  not run: for fragments that need devices or files the page does not build); marked slow.
* Every public name of ``rnnjax`` has an API page, and every committed ``summary.md`` appears on
  a docs page (``docs/hooks.py`` inserts them), so new code and results cannot go unpublished.

``mkdocs build --strict`` itself runs in ``.ci/run``.
"""

import doctest
import importlib
import os
import pathlib
import pkgutil
import re

import pytest

import rnnjax

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "experiments" / "results"

# Examples not yet self-contained (they use names they do not define, or need several
# devices). Remove a name once its example runs alone: the test is strict and says so.
INCOMPLETE = {
    "rnnjax.distributed",
    "rnnjax.distributed.data_parallel",
    "rnnjax.distributed.make_mesh",
    "rnnjax.distributed.param_shardings",
}
OPTIONAL = {
    "rnnjax.flax": "flax",
    "rnnjax.interop._torch": "torch",
    "rnnjax.interop._keras": "keras",
}


def _docstring_tests() -> list:
    """Each docstring with examples, or ``(name, error)`` for a module whose docstrings doctest
    cannot even parse (so one bad docstring fails one test, not the collection)."""
    package = pathlib.Path(rnnjax.__file__).parent
    names = ["rnnjax", *(m.name for m in pkgutil.walk_packages(rnnjax.__path__, "rnnjax."))]
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in names:
        if name in OPTIONAL and importlib.util.find_spec(OPTIONAL[name]) is None:
            continue
        module = importlib.import_module(name)
        try:
            found = finder.find(module, name, globs={})
        except ValueError as error:
            tests.append((name, str(error)))
            continue
        tests += [
            test
            for test in found
            if test.examples
            and test.filename
            and pathlib.Path(test.filename).is_relative_to(package)
        ]
    return sorted(tests, key=lambda t: t[0] if isinstance(t, tuple) else t.name)


DOCTESTS = _docstring_tests()


def _name(test) -> str:
    return test[0] if isinstance(test, tuple) else test.name


def test_docstring_examples_are_found():
    assert len(DOCTESTS) >= 40


@pytest.mark.parametrize("test", DOCTESTS, ids=_name)
def test_docstring_example_runs_alone(test, monkeypatch, request):
    if isinstance(test, tuple):
        pytest.fail(f"doctest cannot parse a docstring of {test[0]}: {test[1]}")
    if test.name in INCOMPLETE:
        request.applymarker(pytest.mark.xfail(strict=True, reason="example not self-contained"))
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    test.globs = {}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)


def _code_blocks() -> list[tuple[str, int, str]]:
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((page.relative_to(DOCS).as_posix(), line, match.group(1)))
    return blocks


BLOCKS = _code_blocks()


# The pages' blocks take minutes together (each compiles its own models; PyTorch, Keras and Flax
# imports alone take tens of seconds): they run in CI's slow step.
@pytest.mark.slow
@pytest.mark.parametrize("page, line, code", BLOCKS, ids=[f"{p}:{n}" for p, n, _ in BLOCKS])
def test_docs_code_block_runs_alone(page, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    exec(compile(code, f"docs/{page}:{line}", "exec"), {"__name__": "__docs__"})


def _api_pages() -> str:
    return "\n".join(p.read_text() for p in sorted((DOCS / "api").glob("*.md")))


def test_every_public_name_has_an_api_entry():
    pages = _api_pages()
    # `::: rnnjax.NAME`, or `::: rnnjax._module.NAME` for a name documented at its definition
    documented = set(re.findall(r"^::: rnnjax\.(?:_\w+\.)?(\w+)$", pages, re.M))
    missing = sorted(set(rnnjax.__all__) - documented)
    assert not missing, f"add these to a page under docs/api/: {missing}"


def test_every_committed_summary_is_on_a_page():
    shown = set()
    for page in DOCS.rglob("*.md"):
        for names in re.findall(r"^<!-- results ([^>]+?) -->$", page.read_text(), re.M):
            shown |= set(names.split())
    committed = {
        path.parent.relative_to(RESULTS).as_posix()
        for path in RESULTS.rglob("summary.md")
        if "quick" not in path.relative_to(RESULTS).parts
    }
    missing = sorted(committed - shown)
    assert not missing, f"add <!-- results NAME --> markers for: {missing}"


def test_docs_hook_expands_results_and_includes():
    hooks = importlib.import_module("docs.hooks") if (DOCS / "__init__.py").exists() else None
    if hooks is None:
        spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
        hooks = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(hooks)
    page = hooks.expand("<!-- results gradient_decay -->\n<!-- include LICENSE -->\n", "guide/x.md")
    assert "## Gradient decay" in page
    assert "](../results/gradient_decay/gradient_decay.png)" in page
    assert "Apache License" in page
    with pytest.raises(FileNotFoundError):
        hooks.expand("<!-- results no_such_experiment -->\n")
    assert os.path.exists(RESULTS / "gradient_decay" / "summary.md")


def test_api_reference_fences_docstring_examples():
    spec = importlib.util.spec_from_file_location("griffe_doctest", DOCS / "griffe_doctest.py")
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)
    text = 'Sum.\n\n>>> x = [1]\n>>> x[-1]["a"]\n1\n\nAfter.\n\n```python\n>>> kept\n```'
    assert extension.fence_doctests(text) == (
        'Sum.\n\n```python\n>>> x = [1]\n>>> x[-1]["a"]\n1\n```\n\nAfter.\n\n```python\n>>> kept\n```'
    )
