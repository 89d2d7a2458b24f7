"""``experiments.benchmarks._parallel`` at a tiny size: the rows' structure, the speed-ups' and
the table's bookkeeping, and that every parallel method computed the sequential answer (outputs
and gradients). No timing assertions (the machine is shared)."""

import pytest

from experiments.benchmarks import _parallel

TINY = {
    "rounds": 1,
    "parallel": {
        "H": 4, "B": 2, "D": 3, "T": [8], "rounds": 2,
        # Compile the associative scans without XLA's optimisations: half the test's time.
        "compiler_options": {"xla_backend_optimization_level": 0},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def rows():
    return _parallel.parallel_rows(TINY)


def test_one_row_per_contender_mode_and_length(rows):
    keys = {(row["cell"], row["method"], row["mode"], row["T"]) for row in rows}
    expected = {
        (cell, method, mode, 8) for cell, method in _parallel.CONTENDERS for mode in _parallel.MODES
    }
    assert keys == expected and len(rows) == len(expected)
    for row in rows:
        assert row["framework"] == "rnnjax"
        assert (row["B"], row["D"], row["H"]) == (2, 3, 4) and row["rounds"] == 2
        assert row["median_ms"] > 0 and row["min_ms"] <= row["median_ms"] and row["compile_s"] > 0


def test_speedups_are_ratios_to_the_same_cells_scan(rows):
    scan = {(row["cell"], row["mode"]): row["median_ms"] for row in rows if row["method"] == "scan"}
    for row in rows:
        expected = scan[row["cell"], row["mode"]] / row["median_ms"]
        assert row["speedup_vs_scan"] == pytest.approx(expected)
        if row["method"] == "scan":
            assert row["speedup_vs_scan"] == 1.0


def test_parallel_methods_match_scan_in_outputs_and_gradients(rows):
    for row in rows:
        assert row["converged"] and not row["fell_back"]
        # float32, default tol 1e-5 on the Newton residual; exact methods at rounding level.
        assert row["max_rel_diff_vs_scan"] < 1e-4, row
        if row["method"] in _parallel.NEWTON:
            # A contractive GRU: a few Newton iterations; the diagonal methods converge linearly.
            assert 1 <= row["iterations_max"] <= (8 if row["method"] in ("deer", "elk") else 60)
            assert row["iterations_mean"] <= row["iterations_max"]
        else:
            assert row["iterations_max"] is None and row["iterations_mean"] is None


def test_markdown_table_has_every_contender(rows):
    text = _parallel.markdown(rows)
    assert "| T | cell | method | fwd ms | fwd vs scan |" in text
    assert "B=2, D=3, H=4" in text
    for cell, method in _parallel.CONTENDERS:
        assert f"| 8 | {cell} | {method} |" in text
    assert _parallel.markdown([]) == ""
