"""Where one forward+backward spends its time: rnnjax's compiled ops beside PyTorch's (CPU).

``python -m experiments.benchmarks.profile [--quick | --full] [--out DIR]`` traces ``rounds``
calls of each cell's forward+backward (``sum(outputs)`` differentiated with respect to the
parameters, as in ``python -m experiments.benchmarks``) and writes ``results.json`` and
``summary.md`` (default ``experiments/results/benchmarks_profile``):

* rnnjax: every XLA op of the compiled gradient, from a ``jax.profiler`` trace read back with
  ``jax.profiler.ProfileData``, with its calls and milliseconds per run. Ops are grouped into
  matmuls run once per time step (the recurrence, forward and backward), other matmuls (the
  weight gradients, hoisted out of the loops) and the rest, per step or once; a matmul's GFLOP/s
  comes from its ``dot``'s shapes in the compiled HLO.
* PyTorch: ``torch.profiler``'s self CPU time per op (the LSTM is oneDNN's fused RNN primitive
  on CPU; the GRU and vanilla RNN are per-step ``aten::mm``). Tracing slows PyTorch's many small
  ops more than its fused ones, so its ops are shown as shares of the traced total.

Beside them, both calls are timed untraced and interleaved (``wall_ms``). An op's time runs from
its start to its end on the thread that launched it: XLA:CPU shares a matmul's work among its
threads while that thread waits, so a matmul's time is wall time; elementwise ops of independent
chains can overlap on two threads, so the groups may add up to more than the wall time. CPU
only: on a GPU the ops are kernels on the device's planes, which this parser has not been
checked against.
"""

import collections
import logging
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    markdown_table,
    parse_args,
    pick_size,
    progress,
    write_json,
    write_summary,
)
from experiments.benchmarks import _competitors, _timing
from experiments.benchmarks.__main__ import PAPER_SHAPES, start

logger = logging.getLogger("experiments.benchmarks.profile")

SIZES = {
    "tiny": {"shapes": [{"B": 2, "T": 5, "D": 3, "H": 4}], "cells": ["lstm", "gru"],
             "rounds": 2, "gemm_size": 64},
    "quick": {"shapes": PAPER_SHAPES[:1], "cells": ["lstm"], "rounds": 3, "gemm_size": 1024},
    "default": {"shapes": PAPER_SHAPES, "cells": ["lstm", "gru", "simple_rnn"], "rounds": 5,
                "gemm_size": 2048},
    "full": {"shapes": PAPER_SHAPES, "cells": ["lstm", "gru", "simple_rnn"], "rounds": 11,
             "gemm_size": 2048},
}  # fmt: skip

_RESULT = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",") if d)


def hlo_matmul_flops(hlo: str) -> dict[str, float]:
    """``{instruction name: FLOPs}`` for every instruction of the compiled ``hlo`` text that is a
    ``dot`` or calls a computation holding one (a fusion), counting ``2 * prod(output dims) *
    prod(contracted dims)`` per dot."""
    shapes, calls, owner = {}, {}, None
    flops, per_computation = {}, collections.defaultdict(float)
    for line in hlo.splitlines():
        header = _COMPUTATION.match(line)
        if header and "=" not in line.split("(")[0]:
            owner = header.group(1)
            continue
        result = _RESULT.match(line)
        if not result:
            continue
        name, dims = result.group(1), _dims(result.group(2))
        shapes[name] = dims
        body = line.split(" metadata=")[0]
        if re.search(r"\bdot\(", body):
            lhs = shapes[re.search(r"\bdot\(%([\w.\-]+)", body).group(1)]
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", body)
            contracted = [lhs[d] for d in _dims(contracting.group(1) if contracting else "")]
            flops[name] = 2.0 * float(np.prod(dims)) * float(np.prod(contracted))
            per_computation[owner] += flops[name]
        called = re.search(r"calls=%([\w.\-]+)", body)
        if called:
            calls[name] = called.group(1)
    for name, computation in calls.items():
        if per_computation.get(computation):
            flops[name] = per_computation[computation]
    return flops


def hlo_instructions(hlo: str) -> set[str]:
    """The instruction names of the compiled ``hlo`` text (what the trace's op events are named)."""
    return {m.group(1) for m in map(_RESULT.match, hlo.splitlines()) if m}


def xla_op_times(call, instructions: set[str], runs: int) -> dict[str, dict]:
    """Trace ``runs`` calls of ``call`` and return ``{op: {"calls", "ms"}}`` per run, for the
    trace's events that are instructions of the compiled program (summed over threads)."""
    from jax.profiler import ProfileData

    call()  # warm
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            for _ in range(runs):
                call()
        trace = next(Path(directory).rglob("*.xplane.pb"))
        data = ProfileData.from_file(str(trace))
    total_ns, count = collections.Counter(), collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in instructions:
                    total_ns[event.name] += event.duration_ns
                    count[event.name] += 1
    return {
        name: {"calls": count[name] / runs, "ms": total_ns[name] / runs / 1e6} for name in total_ns
    }


def torch_op_times(call, runs: int) -> dict[str, dict]:
    """``torch.profiler``'s self CPU time per op over ``runs`` calls: ``{op: {"calls", "ms"}}``
    per run."""
    from torch.profiler import ProfilerActivity, profile

    call()  # warm
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(runs):
            call()
    return {
        event.key: {"calls": event.count / runs, "ms": event.self_cpu_time_total / runs / 1e3}
        for event in profiler.key_averages()
        if event.self_cpu_time_total > 0
    }


def group_ops(ops: dict[str, dict], flops: dict[str, float], steps: int) -> dict[str, dict]:
    """Sum the ops into ``recurrent matmuls`` (matmuls run at least ``steps`` times per run),
    ``other matmuls``, ``other per step`` and ``other once``, with each matmul group's GFLOP/s."""
    groups = {
        name: {"ms": 0.0, "ops": 0, "gflop": 0.0}
        for name in ("recurrent matmuls", "other matmuls", "other per step", "other once")
    }
    for name, op in ops.items():
        per_step = op["calls"] >= steps
        if name in flops:
            group = groups["recurrent matmuls" if per_step else "other matmuls"]
            group["gflop"] += flops[name] * op["calls"] / 1e9
        else:
            group = groups["other per step" if per_step else "other once"]
        group["ms"] += op["ms"]
        group["ops"] += 1
    for name, group in groups.items():
        if "matmul" in name:
            group["gflops"] = group["gflop"] / (1e-3 * group["ms"]) if group["ms"] else None
        else:
            del group["gflop"]
    return groups


def _rnnjax_gradient(cell: str, x: np.ndarray, hidden: int):
    """``(call, hlo)``: the compiled forward+backward of ``rnnjax.rnn`` as the benchmark runs it."""
    import rnnjax

    layer = rnnjax.rnn(_competitors.rnnjax_cell(cell, hidden), return_sequences=True)
    x = jnp.asarray(x)
    params = layer.init(jax.random.key(0), x.shape[1:])
    compiled = (
        jax.jit(jax.grad(lambda params, x: jnp.sum(layer.apply(params, x))))
        .lower(params, x)
        .compile()
    )
    return (lambda: jax.block_until_ready(compiled(params, x))), compiled.as_text()


def profile_rows(config: dict) -> list[dict]:
    """One entry per (shape, cell): wall times, rnnjax's ops and groups, PyTorch's ops."""
    entries = []
    for shape in config["shapes"]:
        x = np.random.default_rng(0).standard_normal(
            (shape["B"], shape["T"], shape["D"]), np.float32
        )
        for cell in progress(config["cells"], f"profile {shape}"):
            rnnjax_call, hlo = _rnnjax_gradient(cell, x, shape["H"])
            torch_call = _competitors.torch_runner(cell, x, shape["H"]).forward_backward
            wall = _timing.interleaved(
                {"rnnjax": rnnjax_call, "torch": torch_call}, config["rounds"]
            )
            flops = hlo_matmul_flops(hlo)
            ops = xla_op_times(rnnjax_call, hlo_instructions(hlo), config["rounds"])
            entries.append({
                "cell": cell, **shape,
                "wall_ms": {name: stats["median_ms"] for name, stats in wall.items()},
                "rnnjax_ops": {
                    name: {**op, **({"gflop": flops[name] / 1e9} if name in flops else {})}
                    for name, op in ops.items()
                },
                "rnnjax_groups": group_ops(ops, flops, shape["T"]),
                "torch_ops": torch_op_times(torch_call, config["rounds"]),
            })  # fmt: skip
            logger.info(
                "%s %s: rnnjax %.1f ms, torch %.1f ms", cell, shape,
                entries[-1]["wall_ms"]["rnnjax"], entries[-1]["wall_ms"]["torch"],
            )  # fmt: skip
    return entries


def _top(ops: dict[str, dict], count: int) -> list[tuple[str, dict]]:
    return sorted(ops.items(), key=lambda item: -item[1]["ms"])[:count]


def markdown(results: dict) -> str:
    """Per shape and cell: wall times, rnnjax's groups, and both frameworks' costliest ops."""
    machine = results["machine"]
    lines = [
        f"{machine['cpu_model']} ({machine['cores']} cores), jax {machine['versions']['jax']}, "
        f"torch {machine['versions']['torch']} ({machine['torch_threads']} threads). Large GEMM "
        f"({results['gemm']['size']}^2 float32): XLA {results['gemm']['jax_gflops']:.0f} "
        f"GFLOP/s, PyTorch {results['gemm']['torch_gflops']:.0f} GFLOP/s. Forward+backward, "
        f"ms per call: wall times are medians of {results['config']['rounds']} untraced, "
        "interleaved calls; op times are from a trace of as many calls (see the module "
        "docstring for what they add up to)."
    ]
    for entry in results["profiles"]:
        wall = entry["wall_ms"]
        lines.append(
            f"\n**{entry['cell']}, B={entry['B']} T={entry['T']} D={entry['D']} H={entry['H']}**"
            f": rnnjax {wall['rnnjax']:.3g} ms, PyTorch {wall['torch']:.3g} ms "
            f"(rnnjax {wall['torch'] / wall['rnnjax']:.2f}x)\n"
        )
        lines.append(
            markdown_table(
                ["rnnjax ops", "count", "ms", "share of wall", "GFLOP/s"],
                [
                    [
                        name,
                        group["ops"],
                        f"{group['ms']:.3g}",
                        f"{group['ms'] / wall['rnnjax']:.0%}",
                        f"{group['gflops']:.0f}" if group.get("gflops") else "",
                    ]
                    for name, group in entry["rnnjax_groups"].items()
                ],
            )
        )
        lines.append("")
        lines.append(
            markdown_table(
                ["costliest rnnjax ops", "calls", "ms", "GFLOP/s"],
                [
                    [
                        name,
                        f"{op['calls']:.0f}",
                        f"{op['ms']:.3g}",
                        f"{op['gflop'] * op['calls'] / (1e-3 * op['ms']):.0f}"
                        if "gflop" in op and op["ms"]
                        else "",
                    ]
                    for name, op in _top(entry["rnnjax_ops"], 8)
                ],
            )
        )
        lines.append("")
        traced = sum(op["ms"] for op in entry["torch_ops"].values())
        lines.append(
            markdown_table(
                ["costliest PyTorch ops (self CPU)", "calls", "ms traced", "share of traced"],
                [
                    [name, f"{op['calls']:.0f}", f"{op['ms']:.3g}", f"{op['ms'] / traced:.0%}"]
                    for name, op in _top(entry["torch_ops"], 5)
                ],
            )
        )
    return "\n".join(lines)


def run(config: dict, out_dir: Path) -> dict:
    """Profile ``config``'s cells on the CPU; write ``results.json`` and ``summary.md``."""
    results = start(config, "cpu")
    results["gemm"] = _timing.gemm_rate(config["gemm_size"], 3)
    results["profiles"] = profile_rows(config)
    path = write_json(out_dir, results)
    write_summary(out_dir, "Where forward+backward spends its time (CPU)", markdown(results))
    logger.info("wrote %s", path)
    return results


def main(argv=None):
    args = parse_args("benchmarks_profile", __doc__, argv)
    run(pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
