"""Smoke tests of the experiments at tiny sizes: each checks a property the experiment exists to
show (not only that it ran), and that it writes its JSON, figure and summary."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import (
    _common,
    architecture_tradeoffs,
    bptt_contributions,
    exploding_and_clipping,
    gradient_decay,
    jacobian_heatmap,
    long_dependencies,
)


def _written(out_dir, figure):
    data = json.loads((out_dir / "results.json").read_text())
    assert data["stamp"]["jax"] == jax.__version__
    assert (out_dir / figure).stat().st_size > 1000
    assert "![" in (out_dir / "summary.md").read_text()
    return data


def test_gradient_decay_rates(tmp_path):
    config = {"hidden_size": 8, "input_size": 3, "num_steps": 20, "num_seeds": 2, "seed": 0}
    results = gradient_decay.run(config, tmp_path)
    rnn = results["rnn_rho0.5"]
    assert np.all(np.diff(rnn["geometric_mean"]) < 0)  # falls with every lag
    assert rnn["rate_per_step"] < 0
    assert rnn["rate_per_step"] <= math.log(0.5) + 1e-9  # tanh' <= 1: at or under log(rho)
    assert all(results[f"rnn_rho{rho}"]["within_bound"] for rho in gradient_decay.RHOS)
    assert results["lstm_fb1"]["rate_per_step"] > results["rnn_rho1.0"]["rate_per_step"]
    assert results["lstm_fb1"]["rate_per_step"] > results["lstm_fb0"]["rate_per_step"]
    assert results["lstm_fb1"]["state"] == "(h, c)"
    for name in ("lru_r0.9-0.999", "lru_r0.5-0.9"):  # measured against log max|lambda|
        lru = results[name]
        assert lru["state"] == "(Re h, Im h)" and lru["norms_by_lag"].shape == (2, 21)
        assert lru["rate_per_step"] == pytest.approx(lru["analytic_rate"], abs=1e-9)
    # The faster ring decays faster; the LRU family keeps more than an RNN at rho 1.
    assert results["lru_r0.5-0.9"]["rate_per_step"] < results["lru_r0.9-0.999"]["rate_per_step"]
    assert results["rg_lru"]["rate_per_step"] > results["rnn_rho1.0"]["rate_per_step"]
    assert results["rg_lru"]["rate_per_step"] <= results["rg_lru"]["analytic_rate"] + 1e-9
    data = _written(tmp_path, "gradient_decay.png")
    assert data["results"]["gru"]["rate_per_step"] == pytest.approx(results["gru"]["rate_per_step"])
    summary = (tmp_path / "summary.md").read_text()
    assert "| lru_r0.5-0.9 | (Re h, Im h) |" in summary and "log max a_t (bound)" in summary


def _only(monkeypatch, module, cell_names):
    """Restrict ``module.configurations`` to the entries of the given cells (one compile each)."""
    every = module.configurations
    monkeypatch.setattr(
        module,
        "configurations",
        lambda hidden_size: [e for e in every(hidden_size) if e["cell"].name in cell_names],
    )


def _rg_lru_decays(params, xs, c):
    """NumPy reading of Griffin's gate: ``a_t = sigmoid(Lambda)^(c sigmoid(x_t W_a + b_a))``."""
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    hidden = params.a_logit.shape[-1]
    k_r = np.asarray(xs, np.float64) @ params.w_x[:, :hidden] + params.b[:hidden]
    gate = 1.0 / (1.0 + np.exp(-k_r))
    return (1.0 / (1.0 + np.exp(-params.a_logit))) ** (c * gate)  # [T, H]


def test_gradient_decay_lru_rate_is_log_max_modulus(monkeypatch):
    """The measured rate of every seed is log max|lambda| = -min exp(nu_log) to 1e-10, while the
    second-slowest mode is at least 1e-4 away: a Jacobian off by one mode would fail."""
    _only(monkeypatch, gradient_decay, ("lru", "rg_lru"))
    config = {"hidden_size": 12, "input_size": 3, "num_steps": 25, "num_seeds": 3, "seed": 1}
    results = gradient_decay.measure(config)
    lags = np.arange(26)
    for entry in gradient_decay.configurations(12):
        with jax.enable_x64(True):
            params, xs = gradient_decay.draw(config, entry)
        r = results[entry["name"]]
        if entry["cell"].name == "lru":
            log_modulus = np.sort(-np.exp(np.asarray(params.nu_log, np.float64)), axis=-1)
            slowest, runner_up = log_modulus[:, -1], log_modulus[:, -2]
            assert np.all(slowest - runner_up > 1e-4)
            np.testing.assert_allclose(r["rate_seeds"], slowest, rtol=0, atol=1e-10)
            exact = np.exp(slowest[:, None] * lags[None])
            np.testing.assert_allclose(r["norms_by_lag"], exact, rtol=1e-12)
        else:  # RG-LRU: the norms are products of the gates' a_t along each trajectory
            c = entry["cell"].config["c"]
            for seed in range(3):
                one = jax.tree.map(lambda a, s=seed: a[s], params)
                log_a = np.log(_rg_lru_decays(one, xs[seed], c))
                by_lag = np.concatenate([[0.0], np.cumsum(log_a[::-1], 0).max(-1)])
                np.testing.assert_allclose(r["norms_by_lag"][seed], np.exp(by_lag), rtol=1e-12)
                assert r["analytic_rate_seeds"][seed] == pytest.approx(log_a.max(), abs=1e-12)
            assert np.all(r["rate_seeds"] <= r["analytic_rate_seeds"] + 1e-12)  # the bound


def test_jacobian_heatmap_structure(tmp_path):
    config = {"hidden_size": 6, "input_size": 3, "num_steps": 12, "seed": 0}
    results = jacobian_heatmap.run(config, tmp_path)
    for r in results.values():
        norms = r["norms"]
        np.testing.assert_allclose(np.diag(norms), 1.0, rtol=1e-5)
        assert np.all(np.isnan(norms[np.triu_indices(13, 1)]))
        assert np.all(np.isfinite(norms[np.tril_indices(13)]))
    by_lag = results["rnn_rho1.0"]["mean_norm_by_lag"]
    assert by_lag[-1] < 0.5 * by_lag[1] and results["rnn_rho1.0"]["rate_per_step"] < 0
    assert results["rnn_rho1.5"]["rate_per_step"] > results["rnn_rho1.0"]["rate_per_step"]
    lru = results["lru"]  # float32: every pair equals max|lambda|^(t - k)
    assert lru["max_relative_error_vs_analytic"] < 1e-5
    assert lru["rate_per_step"] == pytest.approx(lru["analytic_rate"], abs=1e-5)
    assert results["rg_lru"]["max_relative_error_vs_analytic"] < 1e-5
    assert lru["rate_per_step"] > results["gru"]["rate_per_step"]
    _written(tmp_path, "jacobian_heatmap.png")


def test_jacobian_heatmap_lru_closed_forms(monkeypatch):
    """Independent NumPy closed forms: max|lambda|^(t - k) and the RG-LRU's gate products."""
    _only(monkeypatch, jacobian_heatmap, ("lru", "rg_lru"))
    config = {"hidden_size": 6, "input_size": 3, "num_steps": 15, "seed": 2}
    results = jacobian_heatmap.measure(config)
    key_params = jax.random.split(jax.random.key(2))[0]
    xs = np.random.default_rng(2).standard_normal((15, 3)).astype(np.float32)
    t, k = np.tril_indices(16)
    for entry in jacobian_heatmap.configurations(6):
        params = entry["cell"].init(key_params, 3)
        norms = results[entry["name"]]["norms"][t, k]
        if entry["cell"].name == "lru":
            modulus = np.exp(-np.exp(np.asarray(params.nu_log, np.float64))).max()
            np.testing.assert_allclose(norms, modulus ** (t - k), rtol=1e-5)
        else:
            log_a = np.log(_rg_lru_decays(params, xs, entry["cell"].config["c"]))
            sums = np.concatenate([np.zeros((1, 6)), np.cumsum(log_a, 0)])
            np.testing.assert_allclose(norms, np.exp((sums[t] - sums[k]).max(-1)), rtol=1e-5)


def test_bptt_contributions_sum_to_grad(tmp_path):
    config = {"hidden_size": 6, "input_size": 3, "num_steps": 30, "num_seeds": 1, "seed": 0}
    results = bptt_contributions.run(config, tmp_path)
    for r in results.values():
        assert r["max_relative_error_vs_grad"] < 1e-4
    assert results["rnn_rho0.8"]["share_last_10_steps"] > 0.9  # vanishing: only recent steps
    assert results["rnn_rho0.8"]["horizon_90"] <= results["rnn_rho1.2"]["horizon_90"]
    assert bptt_contributions.horizon(np.array([0.0, 0.0, 1.0, 9.0])) == 1
    _written(tmp_path, "bptt_contributions.png")


def test_exploding_and_clipping(tmp_path):
    config = dict(exploding_and_clipping.SIZES["quick"], seed=0, grid=161)  # resolves the cliff
    results = exploding_and_clipping.run(config, tmp_path)
    unit, rnn = results["single_unit"], results["rnn"]
    assert unit["max_grad_norm"] > 100 * unit["median_grad_norm"]  # the cliff
    assert unit["longest_step"]["clipped"] <= unit["step_limit"] * (1 + 1e-5)
    assert unit["longest_step"]["unclipped"] > unit["step_limit"]
    limit = exploding_and_clipping.RNN["learning_rate"] * exploding_and_clipping.RNN["threshold"]
    assert rnn["clipped"]["max_update_norm"] <= limit * (1 + 1e-5)
    assert not rnn["clipped"]["diverged"]
    _written(tmp_path, "exploding_and_clipping.png")


def test_descend_clips_to_threshold():
    def loss(p):
        return 50.0 * jnp.sum(p**2)

    path, _, norms = exploding_and_clipping.descend(loss, jnp.ones(2), 0.1, 0.5, 5)
    steps = np.linalg.norm(np.diff(np.asarray(path), axis=0), axis=-1)
    assert np.all(np.asarray(norms) > 0.5)
    np.testing.assert_allclose(steps, 0.05, rtol=1e-5)


def test_adding_problem_data_and_baseline():
    inputs, targets = long_dependencies.adding_batch(jax.random.key(0), 20_000, 12)
    markers = np.asarray(inputs[..., 1])
    assert inputs.shape == (20_000, 12, 2)
    np.testing.assert_array_equal(markers.sum(1), 2)
    np.testing.assert_array_equal(markers[:, :6].sum(1), 1)  # one marker in each half
    np.testing.assert_allclose(targets, (inputs[..., 0] * markers).sum(1), rtol=1e-6)
    mse_of_predicting_one = float(np.mean((np.asarray(targets) - 1.0) ** 2))
    assert mse_of_predicting_one == pytest.approx(
        long_dependencies.baseline("adding", 12), abs=0.01
    )


def test_copy_task_data_and_baseline():
    length = 7
    inputs, targets = long_dependencies.copy_batch(jax.random.key(1), 64, length)
    symbols = np.argmax(np.asarray(inputs), -1)
    assert inputs.shape == (64, length + 20, 10)
    assert np.all((symbols[:, :10] >= 1) & (symbols[:, :10] <= 8))
    assert np.all(symbols[:, 10 + length - 1] == 9)
    np.testing.assert_array_equal(targets[:, -10:], symbols[:, :10])
    assert np.all(np.asarray(targets[:, : length + 10]) == 0)
    # The baseline guess: certain blank, then uniform over the 8 symbols.
    blank = jnp.where(jnp.arange(9) == 0, 0.0, -1e9)
    uniform = jnp.where(jnp.arange(9) == 0, -1e9, 0.0)
    logits = jnp.where((jnp.arange(length + 20) < length + 10)[:, None], blank, uniform)
    logits = jnp.broadcast_to(logits, (64, length + 20, 9))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    assert float(loss) == pytest.approx(long_dependencies.baseline("copy", length), rel=1e-5)


@pytest.mark.slow  # two compilations of a training loop: ~1 CPU-minute
def test_long_dependencies_tiny_run(tmp_path, monkeypatch):
    monkeypatch.setattr(long_dependencies, "CELLS", ("lstm",))  # one compilation per task
    config = dict(long_dependencies.SIZES["quick"], seed=0, train_steps=60)
    results = long_dependencies.run(config, tmp_path)
    lstm = results["adding"]["lstm"][5]
    assert lstm["baseline"] == pytest.approx(1.0 / 6.0)
    assert np.all(np.isfinite(lstm["test_loss"]))
    assert np.all(np.isfinite(lstm["trained_decay_rate"]))
    curve = results["copy"]["lstm"][5]["loss_curve_mean"]
    assert curve[-1] < 0.5 * curve[0]  # learns the blanks within 60 steps
    _written(tmp_path, "long_dependencies.png")


@pytest.mark.slow
def test_architecture_tradeoffs(tmp_path):
    config = {
        "hidden_size": 8,
        "batch_size": 2,
        "lengths": (64, 128),
        "timing_length": 8,
        "repeats": 1,
        "seed": 0,
    }
    results = architecture_tradeoffs.run(config, tmp_path)
    h = d = 8
    assert results["simple_rnn"]["parameters"] == h * (d + h + 1)
    assert results["lstm"]["parameters"] == 4 * h * (d + h + 1)
    assert results["gru"]["parameters"] == 3 * h * (d + h + 1)
    assert results["self_attention"]["parameters"] == 4 * h * h + 4 * h
    assert results["self_attention"]["memory_growth_exponent"] > 1.5
    assert results["lstm"]["memory_growth_exponent"] < 1.2
    _written(tmp_path, "architecture_tradeoffs.png")


def test_attention_matches_a_loop_over_queries():
    params = architecture_tradeoffs.attention_init(jax.random.key(0), 4)
    x = jax.random.normal(jax.random.key(1), (1, 5, 4))
    got = architecture_tradeoffs.attention_apply(params, x)[0]
    q = x[0] @ params["w_q"]
    k = x[0] @ params["w_k"]
    v = x[0] @ params["w_v"]
    for t in range(5):
        weights = jax.nn.softmax(k @ q[t] / 2.0)
        np.testing.assert_allclose(got[t], (weights @ v) @ params["w_o"], rtol=1e-5, atol=1e-6)


def test_common_cli_and_json(tmp_path):
    args = _common.parse_args("demo", "Demo.", ["--quick", "--out", str(tmp_path)])
    assert (args.size, args.out, args.seed) == ("quick", tmp_path, 0)
    assert _common.parse_args("demo", None, []).size == "default"
    with pytest.raises(SystemExit):
        _common.parse_args("demo", None, ["--quick", "--full"])
    config = _common.pick_size({"quick": {"a": 1}}, args)
    assert config == {"a": 1, "size": "quick", "seed": 0}
    path = _common.write_json(tmp_path, {"x": np.arange(3.0), "bad": float("nan")})
    data = json.loads(path.read_text())
    assert data["x"] == [0.0, 1.0, 2.0] and data["bad"] is None
    assert "| a |" in _common.markdown_table(["a"], [[1.0]])
