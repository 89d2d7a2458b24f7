"""Smoke test of the README example ``python -m experiments.train_seed_lstm``."""

import json

import numpy as np

from experiments import train_seed_lstm


def test_data_are_standardised_binary_pixel_sequences():
    data = train_seed_lstm.load_digit_sequences(limit=64)
    assert data["x_train"].shape == (64, 64, 1) and data["y_train"].shape == (64, 1)
    assert set(np.unique(data["y_train"])) == {0.0, 1.0}
    full = train_seed_lstm.load_digit_sequences()
    assert len(full["x_train"]) + len(full["x_val"]) + len(full["x_test"]) == 1797
    assert (
        abs(float(full["x_train"].mean())) < 1e-4 and abs(float(full["x_train"].std()) - 1) < 1e-3
    )


def test_quick_run_writes_results(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPERIMENTS_NO_PROGRESS", "1")
    results = train_seed_lstm.main(["--quick", "--out", str(tmp_path)])
    assert 0.0 <= results["test_accuracy"] <= 1.0 and np.isfinite(results["test_loss"])
    assert results["max_pre_clip_grad_norm"] > 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["epochs_run"] == 1 and "stamp" in data
    assert (tmp_path / "training.png").stat().st_size > 1000
    assert "![training curves](training.png)" in (tmp_path / "summary.md").read_text()
