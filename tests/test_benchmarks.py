"""Smoke test of ``experiments.benchmarks`` at a tiny size: structure of the results, every
competitor ran, the report renders. No timing assertions (the machine is shared)."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import _competitors, _sweeps, _timing, report
from experiments.benchmarks.__main__ import SIZES, check_device, run


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmarks")
    config = {**SIZES["tiny"], "cells": ["lstm"], "size": "tiny", "seed": 0}
    config["sweeps"] = {"T": [2, 4, 8]}
    run(config, out, "cpu")
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.slow  # the shared fixture runs every competitor (~1 CPU-minute)
def test_results_json_has_machine_gemm_and_every_section(results):
    out, data = results
    assert {
        "config",
        "device",
        "machine",
        "gemm",
        "comparisons",
        "sweeps",
        "memory",
        "stamp",
    } <= set(data)
    assert data["machine"]["cores"] >= 1
    assert {"jax", "jaxlib", "torch", "flax", "equinox"} <= set(data["machine"]["versions"])
    assert data["gemm"]["best_gflops"] > 0
    assert not (out / "results.partial.json").exists()
    for name in (
        "comparisons.csv",
        "sweeps.csv",
        "memory.csv",
        "parallel.csv",
        "sweeps.png",
        "summary.md",
    ):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow  # the shared fixture runs every competitor (~1 CPU-minute)
def test_every_cpu_competitor_ran_forward_and_backward(results):
    out, data = results
    ran = {(row["framework"], row["mode"]) for row in data["comparisons"]}
    expected = {
        (name, mode)
        for name in _competitors.CPU_FRAMEWORKS
        for mode in ("forward", "forward_backward")
    }
    assert ran == expected
    for row in data["comparisons"]:
        assert row["median_ms"] > 0 and row["gflops"] > 0
        assert row["speedup_vs_torch"] > 0 and row["speedup_vs_flax"] > 0
        assert row["framework"] == "torch" or row["compile_s"] > 0
        assert len(row["round_ms"]) == data["config"]["rounds"]
        assert row["median_ms"] == pytest.approx(np.median(row["round_ms"]), abs=1e-3)
        for other in ("torch", "flax"):
            assert 0 < row[f"speedup_vs_{other}_q25"] <= row[f"speedup_vs_{other}_q75"]
    assert "round_ms" not in (out / "comparisons.csv").read_text().splitlines()[0]


@pytest.mark.slow  # the shared fixture runs every competitor (~1 CPU-minute)
def test_sweeps_cover_t_and_report_linearity(results):
    _, data = results
    steps = sorted({row["T"] for row in data["sweeps"]["rows"]["T"]})
    assert steps == [2, 4, 8]
    assert set(data["sweeps"]["linearity"]) == {"rnnjax", "torch"}


@pytest.mark.slow  # the shared fixture runs every competitor (~1 CPU-minute)
def test_memory_rows_compare_default_plain_and_remat(results):
    _, data = results
    variants = {row["variant"]: row for row in data["memory"]}
    assert set(variants) == {"default", "plain", "remat", "remat_chunk=4"}  # tiny T=16
    assert all(row["peak_bytes"] > 0 for row in variants.values())


@pytest.mark.slow  # the shared fixture runs every competitor (~1 CPU-minute)
def test_report_renders_markdown_tables(results):
    _, data = results
    text = report.markdown(data)
    assert "| cell | framework |" in text and "rnnjax_plain" in text and "Linear cost in T" in text
    assert "fwd+bwd page faults |" in text and "llocator" in text
    assert "| cell | shape | mode | rnnjax vs torch | rnnjax vs flax |" in text
    assert re.search(
        r"\| lstm \| B=\d+ T=\d+ D=\d+ H=\d+ \| forward \| [\d.]+x \([\d.]+-[\d.]+\) \|", text
    )


def test_paired_ratios_are_quartiles_of_per_round_ratios():
    """Round ``i``'s ratio is the reference's time in round ``i`` over the other's: a drift
    shared by both cancels (every round 2x here, though the times vary 4x across rounds)."""
    fast = {"round_ms": [1.0, 2.0, 3.0, 4.0, 1.5]}
    slow = {"round_ms": [2.0, 4.0, 6.0, 8.0, 3.0]}
    assert _timing.paired_ratios(slow, fast) == {"q25": 2.0, "q75": 2.0}
    mixed = _timing.paired_ratios({"round_ms": [1.0, 2.0, 3.0, 4.0, 5.0]}, {"round_ms": [1.0] * 5})
    assert mixed == {"q25": 2.0, "q75": 4.0}
    assert _timing.paired_ratios(slow, {"round_ms": [1.0, 2.0]}) is None  # different runs
    assert _timing.paired_ratios(slow, {"median_ms": 1.0}) is None  # results from before


def test_spread_table_shows_ratio_and_quartiles():
    row = {
        "framework": "rnnjax", "cell": "gru", "mode": "forward", "B": 4, "T": 8, "D": 2, "H": 3,
        "speedup_vs_torch": 1.5, "speedup_vs_torch_q25": 1.25, "speedup_vs_torch_q75": 1.75,
        "speedup_vs_flax": 0.9, "speedup_vs_flax_q25": 0.8, "speedup_vs_flax_q75": 1.0,
    }  # fmt: skip
    text = "\n".join(report.spread_table([row, {**row, "framework": "flax"}]))
    assert "| gru | B=4 T=8 D=2 H=3 | forward | 1.50x (1.25-1.75) | 0.90x (0.80-1.00) |" in text
    assert text.count("| gru |") == 1  # rnnjax's rows only
    assert report.spread_table([{k: v for k, v in row.items() if "_q" not in k}]) == []


def test_interleaved_counts_the_pages_each_call_touches_first(monkeypatch):
    """A call that allocates and fills a fresh 64 MiB array (above glibc's largest mmap
    threshold, so fresh pages every call) faults more than one that allocates nothing."""
    if _timing.resource is None:
        pytest.skip("this OS reports no page faults")
    if _timing.allocator_environment():  # e.g. high thresholds: the array reuses heap pages
        pytest.skip("allocator settings in the environment")
    stats = _timing.interleaved(
        {"fresh": lambda: np.ones(16 * 2**20, np.float32), "none": lambda: None}, rounds=3
    )
    assert stats["fresh"]["page_faults"] > stats["none"]["page_faults"]
    assert stats["none"]["page_faults"] <= 16
    monkeypatch.setattr(_timing, "resource", None)
    assert _timing.interleaved({"none": lambda: None}, rounds=2)["none"]["page_faults"] is None


def test_machine_records_the_allocator_settings_and_the_report_names_them(monkeypatch):
    """Allocator variables change every framework's times (unequally), so a result says which
    were set; results from before the field existed print nothing about it."""
    for name in list(os.environ):
        if _timing.is_allocator_variable(name):
            monkeypatch.delenv(name)
    assert _timing.allocator_environment() == {}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    monkeypatch.setenv("MALLOC_CONF", "background_thread:true")  # jemalloc's, by prefix
    monkeypatch.setenv("MALLOC_ARENA_MAX", "")  # set but empty: not a setting
    monkeypatch.setenv("MALLORY", "1")  # not an allocator variable
    assert _timing.allocator_environment() == {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
        "MALLOC_CONF": "background_thread:true",
    }
    machine = {
        "cpu_model": "cpu", "cores": 2, "cpu_flags": ["avx2"], "torch_threads": 2,
        "versions": {"jax": "j", "torch": "t", "flax": "f", "equinox": "e"},
    }  # fmt: skip

    def line(**fields):
        return report._machine_line({"device": "cpu", "machine": {**machine, **fields}})

    assert (
        "Allocator settings: `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, "
        "`MALLOC_CONF=background_thread:true`." in line(allocator=_timing.allocator_environment())
    )
    assert "Allocator: the C library's defaults." in line(allocator={})
    assert "llocator" not in line()


def test_comparison_tables_show_page_faults_only_where_counted():
    def row(framework, mode, ms, faults):
        return {
            "framework": framework, "cell": "lstm", "mode": mode, "B": 2, "T": 3, "D": 1, "H": 4,
            "median_ms": ms, "gflops": 1.0, "gemm_fraction": 0.5, "page_faults": faults,
        }  # fmt: skip

    rows = [row("rnnjax", "forward", 1.0, 0.0), row("rnnjax", "forward_backward", 3.0, 1234.0)]
    text = "\n".join(report.comparison_tables(rows))
    assert text.splitlines()[3].endswith("| fwd+bwd vs plain rnnjax | fwd+bwd page faults |")
    assert text.rstrip().endswith("| 1234 |")
    before = [{k: v for k, v in r.items() if k != "page_faults"} for r in rows]  # older results
    text = "\n".join(report.comparison_tables(before))
    assert "page faults" not in text and text.rstrip().endswith("|  |")


def test_linearity_flags_quadratic_cost():
    rows = [{"framework": "f", "T": t, "median_ms": 1e-3 * t * t} for t in (10, 100, 1000)]
    assert _sweeps.linearity(rows)["f"]["per_step_ratio_longest_to_middle"] == pytest.approx(10)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="a GPU is present")
def test_gpu_device_errors_clearly_without_a_gpu():
    with pytest.raises(SystemExit, match="--device gpu needs a CUDA GPU"):
        check_device("gpu")


@pytest.mark.slow  # 16 compiles and PyTorch (~20 s)
def test_unroll_sweep_runs_every_cell_and_unroll(tmp_path):
    """``experiments.benchmarks.unroll`` at a tiny size: a row per (cell, contender, mode),
    PyTorch for every cell it has, ratios against the first unroll, the summary renders."""
    from experiments.benchmarks import unroll

    # One cell PyTorch has and one it lacks (the seed-form GRU).
    config = {**unroll.SIZES["tiny"], "cells": ["lstm", "gru_seed"], "size": "tiny", "seed": 0}
    data = unroll.run(config, tmp_path, "cpu")
    seen = {(r["cell"], r["contender"], r["mode"]) for r in data["rows"]}
    contenders = {"unroll=1", "unroll=2"}
    expected = {
        (cell, name, mode)
        for cell in ("lstm", "gru_seed")
        for name in contenders | ({"torch"} if cell != "gru_seed" else set())
        for mode in ("forward", "forward_backward")
    }
    assert seen == expected
    times = {(r["cell"], r["contender"], r["mode"]): r["median_ms"] for r in data["rows"]}
    for row in data["rows"]:
        assert row["median_ms"] > 0
        first = times[(row["cell"], "unroll=1", row["mode"])]
        assert row["speedup_vs_first"] == pytest.approx(first / row["median_ms"])
    summary = (tmp_path / "summary.md").read_text()
    assert "| gru_seed | unroll=2 |" in summary and "| lstm | torch |" in summary
    assert json.loads((tmp_path / "results.json").read_text())["device"] == "cpu"


def test_profile_counts_matmul_flops_from_compiled_hlo():
    """``hlo_matmul_flops`` against hand counts: one dot, and rnnjax's LSTM gradient, whose
    loops run ``h W_h``, ``x W_x`` and ``ct W_h^T`` every step and whose weight gradient is one
    ``[D+H, T*B] x [T*B, 4H]`` product."""
    from experiments.benchmarks import profile

    compiled = jax.jit(lambda a, b: a @ b).lower(jnp.ones((8, 16)), jnp.ones((16, 32))).compile()
    assert sorted(set(profile.hlo_matmul_flops(compiled.as_text()).values())) == [2 * 8 * 16 * 32]

    batch, steps, inputs, hidden = 2, 5, 3, 4
    call, hlo = profile._rnnjax_gradient(
        "lstm", np.ones((batch, steps, inputs), np.float32), hidden
    )
    flops = profile.hlo_matmul_flops(hlo)
    ops = profile.xla_op_times(call, profile.hlo_instructions(hlo), runs=2)
    groups = profile.group_ops(ops, flops, steps)
    per_step = 2 * batch * 4 * hidden * (hidden + inputs + hidden)
    assert groups["recurrent matmuls"]["gflop"] * 1e9 == pytest.approx(steps * per_step)
    weight = 2 * (inputs + hidden) * steps * batch * 4 * hidden
    assert groups["other matmuls"]["gflop"] * 1e9 == pytest.approx(weight)
    assert all(op["ms"] > 0 and op["calls"] > 0 for op in ops.values())


@pytest.mark.slow  # two cells, PyTorch and two traces (~15 s)
def test_profile_runs_and_reports_both_frameworks(tmp_path):
    from experiments.benchmarks import profile

    config = {**profile.SIZES["tiny"], "size": "tiny", "seed": 0}
    data = profile.run(config, tmp_path)
    assert [entry["cell"] for entry in data["profiles"]] == ["lstm", "gru"]
    for entry in data["profiles"]:
        assert entry["wall_ms"]["rnnjax"] > 0 and entry["wall_ms"]["torch"] > 0
        assert entry["rnnjax_groups"]["recurrent matmuls"]["ops"] >= 2
        assert entry["torch_ops"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| recurrent matmuls |" in summary and "costliest PyTorch ops" in summary


@pytest.mark.slow  # two fresh processes import jax, torch and flax (~30 s)
def test_allocator_benchmark_runs_each_setting_in_its_own_process(tmp_path, monkeypatch):
    from experiments.benchmarks import allocator

    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # the workers must not inherit it
    config = {**allocator.SIZES["tiny"], "size": "tiny", "seed": 0}
    results = allocator.run(config, tmp_path)
    assert [(r["setting"], r["allocator"]) for r in results["runs"]] == [
        (name, allocator.SETTINGS[name]) for name in config["settings"]
    ]
    for process in results["runs"]:
        assert {(r["framework"], r["mode"]) for r in process["rows"]} == {
            (name, mode)
            for name in allocator.FRAMEWORKS
            for mode in ("forward", "forward_backward")
        }
    assert len(results["summary"]) == 2 * 2  # settings x modes, one shape and cell
    text = (tmp_path / "summary.md").read_text()
    assert "| huge pages | `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` |" in text
    assert "| glibc defaults | lstm |" in text and "| huge pages | lstm |" in text


def _allocator_run(setting, repeat, times, faults=None):
    """A worker's result: ``times`` is ``{(framework, mode): ms}``."""
    return {
        "setting": setting, "repeat": repeat,
        "rows": [
            {"framework": name, "mode": mode, "cell": "lstm", "B": 2, "T": 3, "D": 1, "H": 4,
             "median_ms": ms, "page_faults": faults}
            for (name, mode), ms in times.items()
        ],
    }  # fmt: skip


def test_allocator_summary_takes_ratios_within_processes_and_gains_by_repeat():
    """Three repeats whose median of ratios differs from the ratio of medians."""
    from experiments.benchmarks import allocator

    def times(rnnjax, torch, flax):
        return {
            ("rnnjax", "forward"): rnnjax,
            ("torch", "forward"): torch,
            ("flax", "forward"): flax,
        }

    runs = [
        _allocator_run("glibc defaults", 0, times(10, 10, 20), faults=100),
        _allocator_run("glibc defaults", 1, times(20, 60, 20), faults=300),
        _allocator_run("glibc defaults", 2, times(40, 40, 20), faults=200),
        _allocator_run("huge pages", 0, times(5, 10, 10)),
        _allocator_run("huge pages", 1, times(20, 20, 10)),
        _allocator_run("huge pages", 2, times(10, 40, 10)),
    ]
    base, huge = allocator.summarise(runs, baseline="glibc defaults")
    assert base["rnnjax_ms"] == 20 and base["torch_ms"] == 40  # medians of the medians
    # Within each process torch / rnnjax: 1, 3, 1 (the medians' ratio would be 2).
    assert base["speedup_vs_torch"] == {"median": 1.0, "min": 1.0, "max": 3.0}
    assert base["rnnjax_page_faults"] == 200 and "rnnjax_gain" not in base
    # Gains paired by repeat: 10/5, 20/20, 40/10 -> 2, 1, 4 (the medians' ratio would be 2).
    assert huge["rnnjax_gain"] == {"median": 2.0, "min": 1.0, "max": 4.0}
    assert huge["flax_gain"] == {"median": 2.0, "min": 2.0, "max": 2.0}
    assert huge["rnnjax_page_faults"] is None  # an OS that counts none
    text = allocator.markdown({
        "config": {"settings": list(allocator.SETTINGS), "repeats": 3, "rounds": 1},
        "summary": [base, huge],
    })  # fmt: skip
    assert (
        "| huge pages | lstm | 10 | 20 | 10 | 2.00x (1.00-4.00) | 1.00x (0.50-2.00) "
        "| 2.00x (1.00-4.00) | 1.00x (1.00-3.00) | 2.00x |" in text
    )
    assert (
        "| glibc defaults | lstm | 20 | 40 | 20 | 1.00x (1.00-3.00) | 1.00x (0.50-2.00) |" in text
    )


def test_allocator_worker_failure_is_reported_with_its_setting():
    from experiments.benchmarks import allocator

    with pytest.raises(RuntimeError, match="worker for setting 'huge pages' failed"):
        allocator._run_worker({}, "huge pages", module="experiments.no_such_module")
