"""Scaling sweeps over T, B and H, the linear-in-T check, and peak BPTT memory.

The T sweep fits ``time = a + b T`` and reports the ratio of the per-step cost at the longest T to
that at the middle T: a scan whose cost grows faster than linearly in T (as XLA:CPU did in jaxlib
0.11.1 for scans stacking outputs, jax-ml/jax#40101) shows up as a ratio well above 1.

Memory is the compiled program's own account (``Compiled.memory_analysis()``): the temporaries
plus outputs of one forward+backward at T=4096, with and without ``remat``; nothing has to run.
"""

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from experiments._common import progress
from experiments.benchmarks import _competitors, _timing


def _inputs(batch, steps, inputs, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, steps, inputs), np.float32)


def _time_point(frameworks, cell, batch, steps, inputs, hidden, rounds, device):
    """Interleaved forward+backward timings of ``frameworks`` at one shape."""
    x = _inputs(batch, steps, inputs)
    calls = {}
    for name in frameworks:
        runner = _competitors.build(name, cell, x, hidden, device)
        if runner is not None:
            calls[name] = runner.forward_backward
    times = _timing.interleaved(calls, rounds)
    work = _timing.flops(cell, batch, steps, inputs, hidden, "forward_backward")
    return [
        {
            "framework": name, "cell": cell, "B": batch, "T": steps, "D": inputs, "H": hidden,
            **stats, "gflops": work / (1e-3 * stats["median_ms"]) / 1e9,
        }
        for name, stats in times.items()
    ]  # fmt: skip


def sweep(config: dict, device: str) -> dict:
    """Forward+backward time against T, B and H (others at ``config["sweep_base"]``)."""
    base = config["sweep_base"]
    rows = {}
    for axis, values in config["sweeps"].items():
        rows[axis] = []
        for value in progress(values, f"sweep {axis}"):
            shape = {**base, axis: value}
            rows[axis] += _time_point(
                config["sweep_frameworks"], config["sweep_cell"], shape["B"], shape["T"],
                shape["D"], shape["H"], config["sweep_rounds"], device,
            )  # fmt: skip
    return {"rows": rows, "linearity": linearity(rows.get("T", []))}


def linearity(rows: list[dict]) -> dict:
    """Per framework: least-squares ``ms = a + b T`` and the per-step cost ratio (longest / middle).

    A ratio near 1 means linear cost in T; a quadratic term would make it grow with T.
    """
    result = {}
    for name in sorted({row["framework"] for row in rows}):
        points = sorted((row["T"], row["median_ms"]) for row in rows if row["framework"] == name)
        if len(points) < 2:
            continue
        steps, ms = np.array(points, dtype=float).T
        slope, intercept = np.polyfit(steps, ms, 1)
        per_step = ms / steps
        middle = len(steps) // 2
        result[name] = {
            "ms_per_step": float(slope),
            "intercept_ms": float(intercept),
            "per_step_ratio_longest_to_middle": float(per_step[-1] / per_step[middle]),
            "T_longest": int(steps[-1]),
            "T_middle": int(steps[middle]),
        }
    return result


def _bptt_memory(cell, batch, steps, inputs, hidden, remat, plain=False, chunk=None):
    """Compiled temporaries and outputs of ``grad(sum(rnn(x)))`` in bytes, without running it."""
    core = _competitors.rnnjax_cell(cell, hidden, plain=plain)
    layer = rnnjax.rnn(core, return_sequences=True, remat=remat, remat_chunk=chunk)
    shape = jax.ShapeDtypeStruct((batch, steps, inputs), jnp.float32)
    params = jax.eval_shape(lambda: layer.init(jax.random.key(0), (steps, inputs)))

    def loss(params, x):
        return jnp.sum(layer.apply(params, x))

    analysis = jax.jit(jax.grad(loss)).lower(params, shape).compile().memory_analysis()
    temp = int(analysis.temp_size_in_bytes)
    output = int(analysis.output_size_in_bytes)
    return {"temp_bytes": temp, "output_bytes": output, "peak_bytes": temp + output}


def memory(config: dict) -> list[dict]:
    """Peak BPTT memory at ``config["memory_shape"]``: fused (default), plain autodiff, remat."""
    shape = config["memory_shape"]
    rows = []
    for cell in config["cells"]:
        chunk = max(1, round(shape["T"] ** 0.5))  # sqrt(T) checkpoints
        for variant, remat, plain, remat_chunk in (
            ("default", False, False, None), ("plain", False, True, None),
            ("remat", True, False, None), (f"remat_chunk={chunk}", False, False, chunk),
        ):  # fmt: skip
            measured = _bptt_memory(
                cell, shape["B"], shape["T"], shape["D"], shape["H"], remat, plain, remat_chunk
            )
            states = (2 if cell == "lstm" else 1) * shape["B"] * shape["T"] * shape["H"] * 4
            rows.append({
                "cell": cell, "variant": variant, **shape, **measured,
                "state_history_bytes": states,
            })  # fmt: skip
    return rows
