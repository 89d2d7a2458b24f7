"""``python -m experiments.benchmarks --precision`` sets both frameworks alike and records it;
``--only compare`` runs the comparison alone (no timing assertions)."""

import json

import jax
import pytest
import torch

from experiments.benchmarks import report
from experiments.benchmarks.__main__ import SIZES, parse_device_args, run, set_precision


@pytest.fixture
def restore_precision():
    saved = (
        jax.config.jax_default_matmul_precision,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    yield
    jax.config.update("jax_default_matmul_precision", saved[0])
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:]


@pytest.mark.parametrize(
    ("precision", "jax_value", "tf32"),
    [("highest", "highest", False), ("tf32", "tensorfloat32", True)],
)
def test_set_precision_sets_both_frameworks_alike(restore_precision, precision, jax_value, tf32):
    recorded = set_precision(precision)
    assert jax.config.jax_default_matmul_precision == jax_value
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    assert recorded == {
        "requested": precision,
        "jax_default_matmul_precision": jax_value,
        "torch_matmul_allow_tf32": tf32,
        "torch_cudnn_allow_tf32": tf32,
    }


def test_default_precision_changes_nothing(restore_precision):
    before = jax.config.jax_default_matmul_precision
    assert set_precision("default")["jax_default_matmul_precision"] == before


def test_bad_precision_is_refused():
    with pytest.raises(SystemExit, match="--precision must be one of"):
        set_precision("bf16")
    with pytest.raises(SystemExit):
        parse_device_args("benchmarks", "x", ["--precision", "bf16"])


def test_only_compare_writes_the_comparison_and_its_precision(tmp_path, restore_precision):
    args = parse_device_args("benchmarks", "x", ["--precision", "highest", "--only", "compare"])
    assert (args.precision, args.only) == ("highest", "compare")
    config = {**SIZES["tiny"], "cells": ["simple_rnn"], "size": "tiny", "seed": 0}
    run(config, tmp_path, "cpu", "highest", "compare")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["precision"]["requested"] == "highest"
    assert "sweeps" not in data and data["comparisons"]
    assert "Precision: `highest`" in report.markdown(data)
