"""Where experiments write, what they print, how quiet they are, and the regenerate command."""

import logging
import subprocess
import sys

from experiments import _common, regenerate


def test_default_out_is_in_the_checkout_and_quick_runs_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: the default must not follow the CWD
    args = _common.parse_args("gradient_decay", None, [])
    assert args.out == _common.REPOSITORY / "experiments" / "results" / "gradient_decay"
    quick = _common.parse_args("gradient_decay", None, ["--quick"])
    assert quick.out == args.out / "quick"
    nested = _common.parse_args("applications.digits", None, ["--quick"])
    assert nested.out == _common.RESULTS / "applications" / "digits" / "quick"
    explicit = _common.parse_args("gradient_decay", None, ["--quick", "--out", str(tmp_path)])
    assert explicit.out == tmp_path


def test_logging_is_quiet_unless_verbose():
    _common.parse_args("demo", None, [])
    assert not logging.getLogger("rnnjax.train").isEnabledFor(logging.INFO)
    assert not logging.getLogger("jax._src.xla_bridge").isEnabledFor(logging.INFO)
    assert logging.getLogger("experiments.demo").isEnabledFor(logging.INFO)
    _common.parse_args("demo", None, ["-v"])
    assert logging.getLogger("rnnjax.train").isEnabledFor(logging.INFO)
    assert not logging.getLogger("jax._src.xla_bridge").isEnabledFor(logging.INFO)
    _common.configure_logging(False)


def test_progress_bar_is_off_without_a_terminal(monkeypatch):
    monkeypatch.delenv("EXPERIMENTS_NO_PROGRESS", raising=False)
    assert _common.progress(range(3), "x").disable  # pytest's stderr is not a terminal
    monkeypatch.setenv("EXPERIMENTS_NO_PROGRESS", "1")
    assert _common.progress(range(3), "x").disable


def test_a_run_prints_the_directory_it_wrote(tmp_path):
    code = (
        "import sys; sys.argv = ['x', '--out', sys.argv[1]];"
        "from experiments import _common;"
        "args = _common.parse_args('demo', None, sys.argv[1:]);"
        "_common._written.clear();"
        "_common._record(args.out / 'results.json');"
        "_common._report_written()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=_common.REPOSITORY,
        check=True,
    ).stdout
    assert out.strip() == f"wrote {tmp_path}/: results.json"


def test_rerun_command_replaces_out():
    argv = regenerate._rerun_argv(
        "python -m experiments.benchmarks.__main__ --device gpu --out /root/out/bench",
        _common.RESULTS / "benchmarks_gpu",
    )
    assert argv[1:] == [
        "-m",
        "experiments.benchmarks",
        "--device",
        "gpu",
        "--out",
        str(_common.RESULTS / "benchmarks_gpu"),
    ]


def test_regenerate_lists_every_committed_result():
    jobs = regenerate.jobs(backend="cpu")
    names = [job.name for job in jobs]
    assert "gradient_decay" in names and names[-1].startswith("benchmarks")
    committed = {
        p.parent.relative_to(_common.RESULTS).as_posix()
        for p in _common.RESULTS.rglob("results.json")
        if "quick" not in p.relative_to(_common.RESULTS).parts
    }
    assert set(names) <= committed
    gpu = [job for job in jobs if job.skip]
    assert all("gpu" in job.skip for job in gpu)
