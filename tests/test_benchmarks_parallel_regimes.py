"""``experiments.benchmarks.parallel_regimes`` at a tiny size: the rows' structure, the ratios'
bookkeeping, the files and the summary, and that every parallel method computed the sequential
answer. No timing assertions (the machine is shared)."""

import csv
import json

import numpy as np
import pytest

from experiments.benchmarks import _regimes_report, parallel_regimes

# Structure checks of a benchmark (about 40 s of compiles): the CI's slow step runs them.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel_regimes")
    config = {**parallel_regimes.SIZES["tiny"], "size": "tiny", "seed": 0}
    return parallel_regimes.run(config, out), out


def test_results_record_machine_precision_and_stamp(results):
    data, out = results
    written = json.loads((out / "results.json").read_text())
    assert written["dtype"] == "float32"
    assert written["precision"]["requested"] == "default"
    assert "jax" in written["machine"]["versions"] and written["machine"]["cores"] >= 1
    assert written["stamp"]["source"]["module"] == "experiments/benchmarks/parallel_regimes.py"
    assert len(written["newton"]) == len(data["newton"])


def test_newton_rows_cover_every_method_and_match_scan(results):
    rows = results[0]["newton"]
    keys = {(row["cell"], row["gain"], row["method"], row["T"]) for row in rows}
    assert keys == {("tanh_rnn", 0.5, m, 6) for m in parallel_regimes.NEWTON_METHODS}
    assert len(rows) == len(keys)
    scan = next(row for row in rows if row["method"] == "scan")
    assert scan["iterations_max"] is None and scan["max_rel_diff_vs_scan"] == 0.0
    for row in rows:
        assert row["mode"] == "forward" and row["rounds"] == 2
        assert row["lyapunov"] < 0  # g = 0.5 contracts
        assert row["speedup_vs_scan"] == pytest.approx(scan["median_ms"] / row["median_ms"])
        assert row["speedup_vs_scan_q25"] <= row["speedup_vs_scan_q75"]
        if row["method"] != "scan":
            assert row["converged"] and not row["fell_back"], row
            assert row["iterations_max"] >= 1
            assert row["max_rel_diff_vs_scan"] < 1e-4, row


def test_linear_rows_cover_every_contender_and_match_scan(results):
    rows = results[0]["linear"]
    keys = {(row["cell"], row["method"], row["mode"]) for row in rows}
    assert keys == {
        (cell, method, mode)
        for cell, method in parallel_regimes.LINEAR_CONTENDERS
        for mode in parallel_regimes.MODES
    }
    by_key = {(row["cell"], row["method"], row["mode"]): row for row in rows}
    for row in rows:
        scan = by_key[row["cell"], "scan", row["mode"]]
        lstm = by_key["lstm", "scan", row["mode"]]
        assert row["speedup_vs_scan"] == pytest.approx(scan["median_ms"] / row["median_ms"])
        assert row["speedup_vs_lstm"] == pytest.approx(lstm["median_ms"] / row["median_ms"])
        # Outputs forward, gradients w.r.t. every param forward+backward.
        assert row["max_rel_diff_vs_scan"] < 1e-5, row


def test_csv_files_hold_the_scalar_fields(results):
    data, out = results
    for section in ("newton", "linear"):
        with open(out / f"{section}.csv") as f:
            table = list(csv.DictReader(f))
        assert len(table) == len(data[section])
        assert "median_ms" in table[0] and "round_ms" not in table[0]


def test_summary_shows_every_contender_and_the_winners(results):
    data, out = results
    summary = (out / "summary.md").read_text()
    for method in parallel_regimes.NEWTON_METHODS:
        assert f"| tanh_rnn g=0.5 | {data['newton'][0]['lyapunov']:+.3f} | {method} |" in summary
    for cell, method in parallel_regimes.LINEAR_CONTENDERS:
        assert f"| {cell} | {method} |" in summary
    assert "**Fastest per system**" in summary and "_Produced by" in summary


def _row(method, median, **extra):
    return {"cell": "lru", "mode": "forward", "T": 10, "method": method, "median_ms": median,
            **extra}  # fmt: skip


def test_winners_pick_the_fastest_and_its_margin():
    results = {"linear": [_row("scan", 3.0), _row("parallel_linear_scan", 2.0)],
               "newton": [{**_row("deer", 1.0), "cell": "tanh_rnn", "gain": 1.0}]}  # fmt: skip
    (found,) = _regimes_report.winners(results)  # a lone contender has no winner row
    assert found["fastest"] == "parallel_linear_scan" and found["next"] == "scan"
    assert found["margin"] == pytest.approx(1.5)


def test_ratio_shows_the_median_ratio_and_its_quartiles():
    row = {"speedup_vs_scan": 0.1234, "speedup_vs_scan_q25": 0.11, "speedup_vs_scan_q75": 0.13}
    assert _regimes_report.ratio(row, "speedup_vs_scan") == "0.123x [0.11-0.13]"
    assert _regimes_report.ratio({"speedup_vs_scan": 2.0}, "speedup_vs_scan") == "2x"
    assert _regimes_report.ratio({}, "speedup_vs_lstm") == ""


def test_only_linear_writes_the_linear_section_alone(tmp_path, monkeypatch):
    tiny = parallel_regimes.SIZES["tiny"]
    small = {**tiny, "linear": {**tiny["linear"], "rounds": 1}}
    monkeypatch.setitem(parallel_regimes.SIZES, "quick", small)
    parallel_regimes.main(["--quick", "--only", "linear", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "results.json").read_text())
    assert "newton" not in data and len(data["linear"]) == 16
    assert (tmp_path / "linear.csv").exists() and not (tmp_path / "newton.csv").exists()
    assert np.isfinite([row["median_ms"] for row in data["linear"]]).all()
