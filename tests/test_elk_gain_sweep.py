"""Smoke test of ``experiments.elk_gain_sweep`` at its quick size: it runs, writes its files, and
both methods match ``scan`` on a contracting cell."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import elk_gain_sweep


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("elk_gain_sweep")
    config = {**elk_gain_sweep.SIZES["quick"], "size": "quick", "seed": 0}
    return out, elk_gain_sweep.run(config, out)


@pytest.mark.slow  # the quick run compiles both methods (about 30 s); the CI's slow step
def test_writes_results_and_summary(result):
    out, data = result
    written = json.loads((out / "results.json").read_text())
    assert written["config"]["methods"] == ["deer", "elk"] and "stamp" in written
    rows = written["sweeps"]["float64"]
    assert [row["gain"] for row in rows] == [0.5, 2.0]
    assert set(written["compile_seconds"]["float64"]) == {"deer", "elk"}
    summary = (out / "summary.md").read_text()
    assert "## float64" in summary and "elk it." in summary


@pytest.mark.slow
def test_contracting_cell_converges_to_scan(result):
    _, data = result
    row = data["sweeps"]["float64"][0]
    assert row["gain"] == 0.5 and row["lyapunov"] < 0 and row["sensitivity"] < 1e-14
    for method in ("deer", "elk"):
        assert row[method]["converged"], method
        assert row[method]["iterations"] <= 8, (method, row[method]["iterations"])
        assert row[method]["error"] < 1e-10, (method, row[method]["error"])


def test_both_precisions_solve_the_same_problem():
    w32, u32 = elk_gain_sweep.problem(2.0, 0, 4, 8, jnp.float32)
    with jax.enable_x64(True):
        w64, u64 = elk_gain_sweep.problem(2.0, 0, 4, 8, jnp.float64)
        assert w64.w.dtype == jnp.float64 and u64.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(w32.w, np.float64), np.asarray(w64.w))
    np.testing.assert_array_equal(np.asarray(u32, np.float64), np.asarray(u64))
