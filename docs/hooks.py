"""MkDocs hooks: pages built from files outside ``docs/``, so the site cannot drift from them.

Two markers, each alone on a line of a page's Markdown:

* ``<!-- include PATH -->`` is replaced by the text of ``PATH`` (relative to the repository root),
  for the changelog and the contributing guide.
* ``<!-- results NAME ... -->`` is replaced by ``experiments/results/NAME/summary.md`` for each
  ``NAME``: its title as a section heading, its tables, its figures (copied into the site) and its
  stamp (command, date, machine, jax version, commit). ``tests/test_docs.py`` checks that every
  committed summary appears on some page.
"""

import re
from pathlib import Path

from mkdocs.structure.files import File

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = REPOSITORY / "experiments" / "results"
INCLUDE = re.compile(r"^<!-- include (\S+) -->$", re.M)
RESULTS_MARKER = re.compile(r"^<!-- results ([^>]+?) -->$", re.M)
_IMAGE = re.compile(r"\]\(([^)/:]+\.png)\)")
_HEADING = re.compile(r"^(#+) ", re.M)


def summary_markdown(name: str, root: str = "") -> str:
    """``results/<name>/summary.md`` as a section: headings one level down, figure links into
    ``results/<name>/`` of the site (``root`` leads from the page to the site's root), and where
    the committed file lives."""
    path = RESULTS / name / "summary.md"
    text = path.read_text().strip()
    text = _HEADING.sub(lambda m: "#" * min(len(m.group(1)) + 1, 6) + " ", text)
    text = _IMAGE.sub(lambda m: f"]({root}results/{name}/{m.group(1)})", text)
    source = path.relative_to(REPOSITORY).as_posix()
    return f"{text}\n\n<small>From `{source}`.</small>\n"


def expand(markdown: str, page_uri: str = "index.md") -> str:
    """Both markers replaced on the page ``page_uri`` (a path under ``docs/``); raises
    ``FileNotFoundError`` for a missing file."""
    root = "../" * page_uri.count("/")
    markdown = INCLUDE.sub(lambda m: (REPOSITORY / m.group(1)).read_text(), markdown)
    return RESULTS_MARKER.sub(
        lambda m: "\n".join(summary_markdown(name, root) for name in m.group(1).split()),
        markdown,
    )


def on_files(files, config):
    """Copy the results' figures into the site as ``results/<name>/<figure>.png``."""
    for png in sorted(RESULTS.rglob("*.png")):
        if "quick" in png.relative_to(RESULTS).parts:
            continue
        uri = "results/" + png.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    return expand(markdown, page.file.src_uri)
