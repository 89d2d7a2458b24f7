"""Print the README's benchmark section from a results file.

``python -m experiments.benchmarks.report [results.json]`` (default:
``experiments/results/benchmarks/results.json``) prints markdown: the machine, the GEMM rate, one
table per shape with forward and forward+backward times, GFLOP/s and the speedups over PyTorch,
Flax and the plain-autodiff rnnjax, rnnjax's speed-ups with the spread of their per-round ratios,
then the linear-in-T check and peak BPTT memory.
"""

import json
import sys
from pathlib import Path

from experiments._common import RESULTS, markdown_table
from experiments.benchmarks._parallel import markdown as parallel_markdown

DEFAULT = RESULTS / "benchmarks" / "results.json"


def _machine_line(results: dict) -> str:
    machine = results["machine"]
    versions = machine["versions"]
    stamp = results.get("stamp", {})
    load = machine.get("load_average")
    load_text = f", load average {load[0]:.1f} at start" if load else ""
    allocator = machine.get("allocator")  # absent from results written before it was recorded
    if allocator is None:
        allocator_text = ""
    elif allocator:
        settings = ", ".join(f"`{name}={value}`" for name, value in allocator.items())
        allocator_text = f" Allocator settings: {settings}."
    else:
        allocator_text = " Allocator: the C library's defaults."
    return (
        f"{machine['cpu_model']} ({machine['cores']} cores{load_text}; "
        f"{' '.join(machine['cpu_flags'][:4])}), device {results['device']}; "
        f"jax {versions['jax']}, "
        f"torch {versions['torch']} ({machine['torch_threads']} threads), flax {versions['flax']}, "
        f"equinox {versions['equinox']}."
        + allocator_text
        + (f" Command: `{stamp['command']}`, commit {stamp.get('git_commit')}." if stamp else "")
    )


def _ratio_key(row, other):
    """``speedup_vs_<other>``, where ``"torch"`` is PyTorch on either device."""
    key = f"speedup_vs_{other}"
    return "speedup_vs_torch_cudnn" if other == "torch" and key not in row else key


def _speedup(row, other):
    """``other``'s time over this row's."""
    value = row.get(_ratio_key(row, other))
    return f"{value:.2f}x" if value is not None else ""


def _spread(row, other):
    """``other``'s time over this row's with the quartiles of the per-round ratios, e.g.
    ``1.41x (1.33-1.50)``."""
    key = _ratio_key(row, other)
    low, high = row.get(f"{key}_q25"), row.get(f"{key}_q75")
    return _speedup(row, other) + ("" if low is None else f" ({low:.2f}-{high:.2f})")


def spread_table(rows: list[dict]) -> list[str]:
    """rnnjax's speed-ups over PyTorch and Flax with the interquartile range of the per-round
    ratios (nothing for results files from before per-round times were kept)."""
    ours = [r for r in rows if r["framework"] == "rnnjax"]
    if not any("speedup_vs_flax_q25" in r for r in ours):
        return []
    table = [
        [r["cell"], f"B={r['B']} T={r['T']} D={r['D']} H={r['H']}", r["mode"],
         _spread(r, "torch"), _spread(r, "flax")]
        for r in ours
    ]  # fmt: skip
    header = ["cell", "shape", "mode", "rnnjax vs torch", "rnnjax vs flax"]
    return [
        "\nrnnjax's speed-ups with their spread: the ratio of medians, then in brackets the "
        "quartiles of the ratio taken round by round (each round runs every contender back to "
        "back, so its ratio cancels the load the machine had at that moment):\n",
        markdown_table(header, table),
    ]


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _faults(row) -> str:
    faults = row.get("page_faults")
    return "" if faults is None else f"{faults:.0f}"


def comparison_tables(rows: list[dict]) -> list[str]:
    """One table per shape: rows are (cell, framework), columns forward and forward+backward."""
    lines = []
    shapes = sorted({(r["B"], r["T"], r["D"], r["H"]) for r in rows})
    # Results written before page faults were counted have no such column.
    faults = any(r.get("page_faults") is not None for r in rows)
    for shape in shapes:
        lines.append(
            f"\n**B={shape[0]}, T={shape[1]}, D={shape[2]}, H={shape[3]}** (median ms; speedup = "
            "other's time / this time"
            + ("; page faults: median minor faults per call, each a first touch of a fresh page"
               if faults else "")
            + ")\n"
        )  # fmt: skip
        table = []
        # On a GPU: a column against cuDNN through jax.experimental.rnn (LSTM only).
        cudnn = any("speedup_vs_jax_cudnn" in r for r in rows)
        for row in rows:
            if (row["B"], row["T"], row["D"], row["H"]) != shape or row["mode"] != "forward":
                continue
            backward = next(
                r for r in rows
                if r["framework"] == row["framework"] and r["cell"] == row["cell"]
                and r["mode"] == "forward_backward" and (r["B"], r["T"], r["D"], r["H"]) == shape
            )  # fmt: skip
            table.append([
                row["cell"], row["framework"],
                _ms(row["median_ms"]),
                f"{row['gflops']:.3g} ({100 * row['gemm_fraction']:.0f}%)",
                _speedup(row, "torch"), _speedup(row, "flax"),
                *([_speedup(row, "jax_cudnn")] if cudnn else []),
                _ms(backward["median_ms"]),
                f"{backward['gflops']:.3g} ({100 * backward['gemm_fraction']:.0f}%)",
                _speedup(backward, "torch"), _speedup(backward, "flax"),
                *([_speedup(backward, "jax_cudnn")] if cudnn else []),
                _speedup(backward, "rnnjax_plain"),
                *([_faults(backward)] if faults else []),
            ])  # fmt: skip
        header = [
            "cell", "framework", "fwd ms", "fwd GFLOP/s (of GEMM)", "fwd vs torch", "fwd vs flax",
            *(["fwd vs jax cuDNN"] if cudnn else []),
            "fwd+bwd ms", "fwd+bwd GFLOP/s", "fwd+bwd vs torch", "fwd+bwd vs flax",
            *(["fwd+bwd vs jax cuDNN"] if cudnn else []),
            "fwd+bwd vs plain rnnjax", *(["fwd+bwd page faults"] if faults else []),
        ]  # fmt: skip
        lines.append(markdown_table(header, table))
    return lines


def linearity_table(sweeps: dict) -> list[str]:
    rows = [
        [name, f"{v['ms_per_step']:.3f}", f"{v['per_step_ratio_longest_to_middle']:.2f}",
         f"{v['T_middle']} -> {v['T_longest']}"]
        for name, v in sweeps["linearity"].items()
    ]  # fmt: skip
    header = ["framework", "ms per step (fit)", "per-step cost ratio", "T"]
    return [
        "\nLinear cost in T (LSTM forward+backward; a ratio near 1 is linear, a quadratic scan "
        "would grow it with T):\n",
        markdown_table(header, rows),
    ]


def memory_table(rows: list[dict]) -> list[str]:
    table = [
        [r["cell"], r["variant"], f"B={r['B']} T={r['T']} H={r['H']}",
         f"{r['peak_bytes'] / 2**20:.1f}", f"{r['peak_bytes'] / r['state_history_bytes']:.2f}"]
        for r in rows
    ]  # fmt: skip
    header = ["cell", "BPTT variant", "shape", "peak MiB", "x state history"]
    return [
        "\nPeak memory of one forward+backward (compiled temporaries + outputs; `default` is the "
        "fused path, `plain` step-by-step autodiff, `remat` `rnn(..., remat=True)`):\n",
        markdown_table(header, table),
    ]


def markdown(results: dict) -> str:
    """The benchmark section as markdown."""
    gemm = results["gemm"]
    lines = [
        _machine_line(results),
        f"\nLarge GEMM ({gemm['size']}^2 float32): XLA {gemm['jax_gflops']:.0f} GFLOP/s, "
        f"PyTorch {gemm['torch_gflops']:.0f} GFLOP/s; percentages below are of the larger. "
        "FLOPs counted as 2 B T (D + H) G H forward and 3x that forward+backward.",
    ]
    precision = results.get("precision")  # absent from results written before it was recorded
    if precision:
        lines.append(
            f"\nPrecision: `{precision['requested']}` (JAX `jax_default_matmul_precision="
            f"{precision['jax_default_matmul_precision']}`, PyTorch matmul TF32 "
            f"{precision['torch_matmul_allow_tf32']}, "
            f"cuDNN TF32 {precision['torch_cudnn_allow_tf32']})."
        )
    lines += comparison_tables(results["comparisons"])
    lines += spread_table(results["comparisons"])
    if "sweeps" in results:  # absent with --only compare
        lines += linearity_table(results["sweeps"])
        lines += memory_table(results["memory"])
    if results.get("parallel"):  # results.json files before the parallel row have none
        lines.append(parallel_markdown(results["parallel"]))
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT
    print(markdown(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
