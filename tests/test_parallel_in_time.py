"""Smoke test of ``experiments.parallel_in_time`` at a tiny size: it runs, writes its files, and
shows what it exists to show (contractive cells converge in few Newton iterations, the minimal
RNN's parallel scan agrees with timing bookkeeping)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import parallel_in_time

CONFIG = {
    "state_size": 6, "sweep_steps": 60, "gains": 2, "seeds": 2, "max_iter": 20,
    "hidden_size": 4, "input_size": 3, "batch": 2, "steps": [32], "grad_steps": [],
    "hidden_sizes": [4], "hidden_steps": 32, "repeats": 1,
    "methods": ["scan_gru", "deer_gru", "parallel_min_gru"], "seed": 0,
}  # fmt: skip


def test_tanh_rnn_cell_and_lyapunov_exponent():
    cell = parallel_in_time.tanh_rnn(4)
    params = parallel_in_time.TanhParams(jnp.zeros((4, 4)))
    us = jnp.ones((10, 4))
    state, y = cell.step(params, cell.initial_state(), us[0])
    np.testing.assert_allclose(y, us[0])  # W = 0: s_t = u_t
    # W = a I: every Jacobian is a * tanh'(s_{t-1}); with s = 0 held by zero inputs the exponent
    # is log(a) exactly.
    params = parallel_in_time.TanhParams(0.5 * jnp.eye(4))
    out = parallel_in_time.dynamics(params, jnp.zeros((50, 4)))
    np.testing.assert_allclose(out["lyapunov"], np.log(0.5), rtol=1e-5)
    np.testing.assert_allclose(out["log_jacobian_norm"], np.log(0.5), rtol=1e-5)


@pytest.mark.slow
def test_run_writes_results(tmp_path):
    results = parallel_in_time.run(dict(CONFIG), tmp_path)
    contractive = results["gain_sweep"]["rows"][0]
    assert contractive["gain"] == 0.5
    assert all(contractive["deer_converged"]) and max(contractive["deer_iterations"]) <= 10
    assert max(contractive["lyapunov"]) < 0
    times = results["timing"]
    assert set(times) == set(CONFIG["methods"])
    assert all(t > 0 for name in times for t in times[name]["forward"].values())
    assert min(times["deer_gru"]["iterations"][32]) >= 1
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["stamp"]["jax"] == jax.__version__
    assert (tmp_path / "parallel_in_time.png").stat().st_size > 1000
    assert "![parallel in time](parallel_in_time.png)" in (tmp_path / "summary.md").read_text()
