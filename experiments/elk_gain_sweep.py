"""DEER against ELK on the gain sweep of a random tanh RNN, in float32 and float64.

The cell is :func:`experiments.parallel_in_time.tanh_rnn`, ``s_t = W tanh(s_{t-1}) + u_t`` with
``W ~ N(0, g^2 / H)`` and ``u_t ~ N(0, 0.1^2)``. For each precision, gain and seed:

* the sequential trajectory (``rnnjax.scan``) and its largest Lyapunov exponent;
* the *sensitivity* of the dynamics: ``max |scan(u) - scan(u (1 + eps))|`` with ``eps`` the
  precision's machine epsilon, i.e. how far two sequential runs of the same problem may drift
  apart. On a contracting cell it is of order ``eps``; on a chaotic one it grows to ``O(1)``, and
  no method can be asked to match ``scan`` more closely than that;
* for each method (``rnnjax.parallel_scan(..., on_failure="raise")`` under ``jit``, so nothing
  falls back): the iterations, whether it converged within ``max_iter``, the final residual,
  ``max |ys - scan's ys|`` and the wall time of the call (each method is compiled once per
  precision, before the sweep; the compile times are recorded apart).

The ``full`` size is the issue's setting (H=64, T=1000); the default keeps T=1000 at H=16 so that
it runs in minutes on two CPU cores (ELK's Kalman smoother costs ``O(T H^3)`` per iteration).
``max_iter`` exceeds ``T``: on a chaotic cell every method needs of order ``T`` iterations (each
DEER iteration makes at least one more time step exact), and the sweep reports how many.

    python -m experiments.elk_gain_sweep [--quick | --full] [--out DIR]

Writes ``results.json`` and ``summary.md`` to ``experiments/results/elk_gain_sweep/``.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from experiments import _common
from experiments.parallel_in_time import INPUT_SCALE, TanhParams, dynamics, tanh_rnn

SIZES = {
    "quick": {"state_size": 4, "steps": 32, "gains": [0.5, 2.0], "seeds": 1, "max_iter": 64,
              "methods": ["deer", "elk"], "precisions": ["float64"]},
    "default": {"state_size": 16, "steps": 1000, "gains": [0.5, 1.0, 1.5, 2.0], "seeds": 2,
                "max_iter": 1200, "methods": ["deer", "elk"], "precisions": ["float32", "float64"]},
    "full": {"state_size": 64, "steps": 1000, "gains": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0],
             "seeds": 3, "max_iter": 1200, "methods": ["deer", "quasi_deer", "elk", "quasi_elk"],
             "precisions": ["float32", "float64"]},
}  # fmt: skip


def problem(gain: float, seed: int, size: int, steps: int, dtype) -> tuple[TanhParams, jax.Array]:
    """The tanh RNN's params (``W`` scaled by ``gain``) and inputs ``u [T, H]`` in ``dtype``.

    Both are drawn in float32 and then cast, so the float32 and float64 rows of a gain and seed
    are the same problem (under ``enable_x64`` a float64 draw gives other numbers).
    """
    key = jax.random.key(seed)
    w = jax.random.normal(key, (size, size), jnp.float32) / np.sqrt(size)
    us = INPUT_SCALE * jax.random.normal(jax.random.fold_in(key, 1), (steps, size), jnp.float32)
    return TanhParams((gain * w).astype(dtype)), us.astype(dtype)


def compile_methods(config: dict, dtype) -> tuple[dict, dict]:
    """Each method's ``parallel_scan`` compiled once for this size and dtype; compile times."""
    size, steps = config["state_size"], config["steps"]
    cell = tanh_rnn(size)
    params, us = problem(1.0, 0, size, steps, dtype)
    compiled, seconds = {}, {}
    for method in config["methods"]:
        start = time.perf_counter()
        compiled[method] = (
            jax.jit(
                lambda p, u, method=method: rnnjax.parallel_scan(
                    cell, p, u, method=method, max_iter=config["max_iter"], on_failure="raise"
                )
            )
            .lower(params, us)
            .compile()
        )
        seconds[method] = time.perf_counter() - start
    return compiled, seconds


def measure(config: dict, compiled: dict, gain: float, seed: int, dtype) -> dict:
    """One problem: its dynamics, sensitivity, and each method's iterations, error and time."""
    size, steps = config["state_size"], config["steps"]
    cell = tanh_rnn(size)
    params, us = problem(gain, seed, size, steps, dtype)
    _, reference = rnnjax.scan(cell, params, us)
    _, nudged = rnnjax.scan(cell, params, us * (1 + jnp.finfo(dtype).eps))
    row = {
        "gain": gain,
        "seed": seed,
        "lyapunov": float(dynamics(params, us)["lyapunov"]),
        "sensitivity": float(jnp.max(jnp.abs(nudged - reference))),
    }
    for method, run in compiled.items():
        start = time.perf_counter()
        _, ys, info = jax.block_until_ready(run(params, us))
        seconds = time.perf_counter() - start
        converged = bool(info.converged)
        row[method] = {
            "iterations": int(info.iterations),
            "converged": converged,
            "residual": float(info.residual),
            # Unconverged runs return NaN trajectories under jit: no error to report.
            "error": float(jnp.max(jnp.abs(ys - reference))) if converged else None,
            "seconds": seconds,
        }
    return row


def run(config: dict, out_dir) -> dict:
    """Every precision, gain and seed; writes ``results.json`` and ``summary.md``."""
    sweeps, compile_seconds = {}, {}
    for precision in config["precisions"]:
        with jax.enable_x64(precision == "float64"):
            dtype = jnp.dtype(precision)
            compiled, compile_seconds[precision] = compile_methods(config, dtype)
            rows = []
            for gain in _common.progress(config["gains"], f"gain sweep ({precision})"):
                for seed in range(config["seed"], config["seed"] + config["seeds"]):
                    rows.append(measure(config, compiled, float(gain), seed, dtype))
            sweeps[precision] = rows
    result = {"config": config, "sweeps": sweeps, "compile_seconds": compile_seconds}
    _common.write_json(out_dir, result)
    _common.write_summary(out_dir, "DEER against ELK on the tanh-RNN gain sweep", summary(result))
    return result


def summary(result: dict) -> list[str]:
    """One markdown table per precision: iterations (and convergence) per method and gain."""
    config = result["config"]
    methods = config["methods"]
    lines = [
        f"Random tanh RNN, H={config['state_size']}, T={config['steps']}, "
        f'{config["seeds"]} seed(s), max_iter={config["max_iter"]}, `on_failure="raise"` under '
        "`jit` (nothing falls back). Iterations, `*` where the method did not converge; error is "
        "`max |ys - scan|`; sensitivity is how far `scan` itself moves when `u` is scaled by "
        "`1 + eps`; seconds are one call after compilation.",
    ]
    for precision, rows in result["sweeps"].items():
        header = ["g", "seed", "Lyapunov", "sensitivity"]
        header += [f"{m} it." for m in methods] + [f"{m} error" for m in methods]
        header += [f"{m} s" for m in methods]
        table = []
        for row in rows:
            line = [row["gain"], row["seed"], row["lyapunov"], row["sensitivity"]]
            line += [f"{row[m]['iterations']}{'' if row[m]['converged'] else '*'}" for m in methods]
            line += [np.nan if row[m]["error"] is None else row[m]["error"] for m in methods]
            line += [row[m]["seconds"] for m in methods]
            table.append(line)
        lines += ["", f"## {precision}", "", _common.markdown_table(header, table)]
    return lines


def main(argv=None):
    args = _common.parse_args("elk_gain_sweep", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
