"""``experiments._iteration_predictor``: the fit recovers a known model from synthetic runs and
scores only held-out runs; the auto pick rate is counted against the fastest method."""

import numpy as np

from experiments import _iteration_predictor


def _rows(coefficients, noise=0.0):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        lyapunov, steps = rng.uniform(-1, 0.3), int(rng.choice([64, 256, 1024]))
        features = [1.0, lyapunov, max(lyapunov, 0.0) * np.log(steps), np.log(steps)]
        iterations = np.exp(np.dot(coefficients, features) + noise * rng.standard_normal())
        rows.append({
            "cell": f"c{i}", "T": steps, "H": 64, "lyapunov": lyapunov,
            "deer_iterations": iterations, "deer_converged": True,
            "elk_iterations": iterations, "elk_converged": i % 5 != 0,
            "scan_seconds": 1.0, "deer_seconds": 2.0 if i % 2 else 0.5, "elk_seconds": 3.0,
        })  # fmt: skip
    return rows


def test_fit_recovers_an_exact_model():
    coefficients = [3.0, 2.0, 0.5, 0.2]
    fit = _iteration_predictor.fit(_rows(coefficients), "deer")
    np.testing.assert_allclose(fit["coefficients"], coefficients, atol=1e-8)
    assert fit["held_out_median_relative_error"] < 1e-8
    assert fit["train_runs"] == 30 and fit["held_out_runs"] == 10


def test_fit_uses_converged_runs_only_and_reports_noise():
    fit = _iteration_predictor.fit(_rows([1.0, 2.0, 0.5, 0.2], noise=0.3), "elk")
    assert fit["train_runs"] + fit["held_out_runs"] == 32  # 8 of 40 did not converge
    assert 0.01 < fit["held_out_median_relative_error"] < 1.0


def test_auto_pick_rate_counts_the_fastest():
    rows = _rows([1.0, 2.0, 0.5, 0.2])
    fits = {m: {"coefficients": [3.0, 0.0, 0.0, 0.0]} for m in ("deer", "elk")}  # 20 iterations
    result = _iteration_predictor.auto_pick_rate(rows, fits, "cpu", 100)
    # Twenty predicted iterations cost more than a scan on the CPU: auto always picks scan, which is
    # the fastest exactly where DEER took 2.0 s (odd rows).
    assert [p["pick"] for p in result["picks"]] == ["scan"] * 40
    assert result["picked_fastest"] == 20 and result["runs"] == 40
