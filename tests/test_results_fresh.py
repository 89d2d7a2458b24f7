"""Committed results are as fresh as their code.

Every ``results.json`` that ``experiments._common.write_json`` writes carries, in its stamp, a
SHA-256 of the experiment's source (``experiment_files``) and of ``rnnjax/``. A result whose
experiment source changed since it was written fails: regenerate it (``python -m
experiments.regenerate --only NAME``, see CONTRIBUTING.md). A result whose library alone changed
warns: the library changes often, and most changes do not move an experiment's numbers, so the
rerun is left to judgement.

Results written before the hashes existed carry none; for them git decides (the experiment
source committed after the result), and they only warn, since some (GPU runs) cannot be
regenerated on every machine.
"""

import json
import pathlib
import shutil
import subprocess
import warnings

import pytest

from experiments import _common

RESULTS = sorted(
    path
    for path in _common.RESULTS.rglob("*.json")
    if "stamp" in json.loads(path.read_text()) and "/quick/" not in path.as_posix()
)


def _label(path: pathlib.Path) -> str:
    return path.relative_to(_common.RESULTS).as_posix()


def _module_file(stamp: dict) -> pathlib.Path | None:
    """The experiment module a result came from: its stamp's source, else its command line."""
    if "source" in stamp:
        return _common.REPOSITORY / stamp["source"]["module"]
    words = stamp.get("command", "").split()
    if len(words) < 3 or words[1] != "-m":
        return None
    dotted = words[2].removesuffix(".__main__")
    base = _common.REPOSITORY.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.exists():
            return candidate
    return None


def _last_commit_time(paths: list[pathlib.Path]) -> int | None:
    out = subprocess.run(
        ["git", "log", "-1", "--format=%ct", "--", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=_common.REPOSITORY,
    )
    return int(out.stdout) if out.returncode == 0 and out.stdout.strip() else None


def test_results_are_found():
    assert len(RESULTS) >= 10, [_label(p) for p in RESULTS]


@pytest.mark.parametrize("path", RESULTS, ids=_label)
def test_result_is_fresh(path):
    stamp = json.loads(path.read_text())["stamp"]
    module = _module_file(stamp)
    assert module is not None and module.exists(), (
        f"{_label(path)}: its experiment module ({stamp.get('command')!r}) is gone; "
        "delete the result or regenerate it with the module that replaced it"
    )
    source = stamp.get("source")
    if source is not None:
        now = _common.source_hashes(module)
        assert now["module_sha256"] == source["module_sha256"], (
            f"{_label(path)} is stale: {source['module']} (or its package's private helpers) "
            f"changed after the result was written at {stamp['utc']}; rerun {stamp['command']!r}"
        )
        if now["rnnjax_sha256"] != source["rnnjax_sha256"]:
            warnings.warn(
                f"{_label(path)}: rnnjax/ changed after this result was written at "
                f"{stamp['utc']}; rerun {stamp['command']!r} if the change can move its numbers",
                stacklevel=1,
            )
        return
    if shutil.which("git") is None:
        pytest.skip("no git to date an unstamped result")
    result_time = _last_commit_time([path])
    module_time = _last_commit_time(_common.experiment_files(module))
    if result_time is None or module_time is None:
        pytest.skip(f"{_label(path)} or its module is not committed yet")
    if module_time > result_time:
        warnings.warn(
            f"{_label(path)} has no source hashes (written before they existed) and "
            f"{module.relative_to(_common.REPOSITORY)} was committed after it; "
            f"rerun {stamp.get('command')!r}",
            stacklevel=1,
        )


def test_stale_result_is_detected(tmp_path, monkeypatch):
    """The check itself: a hash that no longer matches the module fails, a library-only change
    warns."""
    module = _common.EXPERIMENTS / "gradient_decay.py"
    stamp = {"utc": "then", "command": "python -m experiments.gradient_decay"}
    stamp["source"] = {**_common.source_hashes(module), "module_sha256": "0" * 64}
    path = _common.RESULTS / "gradient_decay" / "results.json"
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self: json.dumps({"stamp": stamp}))
    with pytest.raises(AssertionError, match="gradient_decay/results.json is stale"):
        test_result_is_fresh(path)
    stamp["source"] = {**_common.source_hashes(module), "rnnjax_sha256": "0" * 64}
    with pytest.warns(UserWarning, match="rnnjax/ changed after this result"):
        test_result_is_fresh(path)
    stamp["source"] = _common.source_hashes(module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        test_result_is_fresh(path)


def test_write_json_stamps_the_calling_experiment(tmp_path):
    """``write_json`` called from an experiment module records that module's hashes."""
    module = _common.EXPERIMENTS / "gradient_decay.py"
    namespace = {"__name__": "experiments.gradient_decay", "_common": _common, "out": tmp_path}
    exec(compile("_common.write_json(out, {'x': 1})", str(module), "exec"), namespace)
    source = json.loads((tmp_path / "results.json").read_text())["stamp"]["source"]
    assert source == _common.source_hashes(module)
    assert source["module"] == "experiments/gradient_decay.py"
