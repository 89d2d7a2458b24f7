"""Parallel-in-time evaluation: when does DEER converge, and when is it faster than a scan?

Part 1 (convergence against dynamics). A random tanh RNN ``s_t = W tanh(s_{t-1}) + u_t`` with
``W ~ N(0, g^2 / D)`` and ``u_t ~ N(0, input_scale^2)`` is swept over the gain ``g`` in
[0.5, 2]. For each gain and seed the sequential trajectory gives the largest Lyapunov exponent
(tangent-vector growth rate along the trajectory, renormalised every step) and the geometric mean
of the step Jacobians' spectral norms ``||diag(tanh'(s_{t-1})) W||_2``; DEER and quasi-DEER
(``rnnjax.parallel_scan``) report their Newton iteration counts and whether they converged within
``max_iter`` (Gonzalez et al. 2025 tie DEER's difficulty to the Lyapunov exponent: contractive
cells, the ones whose gradients vanish, converge in a few iterations; chaotic ones do not).

Part 2 (wall time against T). An untrained GRU (as in Lim et al. 2024) over random inputs:
``rnnjax.scan`` (sequential), DEER, quasi-DEER, and a min-GRU (Feng et al. 2024) both through
``rnnjax.scan`` and through its log-space associative scan; forward pass for every ``T`` and
forward + backward (``jax.grad`` of a sum) for ``T`` up to ``grad_max_steps``. Each number is the
median of ``repeats`` jitted runs after a compile run, batch ``B`` by ``vmap``.

    python -m experiments.parallel_in_time [--quick | --full] [--out DIR]

Writes ``results.json``, ``parallel_in_time.png`` and ``summary.md`` to
``experiments/results/parallel_in_time/``.
"""

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
from experiments import _common
from rnnjax._minimal import min_gru, parallel_minimal_scan
from rnnjax._parallel_scan import parallel_scan

SIZES = {
    "quick": {
        "state_size": 8, "sweep_steps": 200, "gains": 4, "seeds": 2, "max_iter": 50,
        "hidden_size": 8, "input_size": 4, "batch": 2, "steps": [100, 300],
        "grad_max_steps": 100, "repeats": 2, "hidden_sizes": [4, 8], "hidden_steps": 100,
    },
    "default": {
        "state_size": 16, "sweep_steps": 1000, "gains": 7, "seeds": 3, "max_iter": 100,
        "hidden_size": 16, "input_size": 8, "batch": 4, "steps": [100, 1000, 10000],
        "grad_max_steps": 1000, "repeats": 3, "hidden_sizes": [4, 16, 64], "hidden_steps": 1000,
    },
    "full": {
        "state_size": 32, "sweep_steps": 10000, "gains": 16, "seeds": 8, "max_iter": 300,
        "hidden_size": 16, "input_size": 8, "batch": 16, "steps": [100, 1000, 10000, 100000],
        "grad_max_steps": 10000, "repeats": 5, "hidden_sizes": [4, 16, 64, 256],
        "hidden_steps": 10000,
    },
}  # fmt: skip
INPUT_SCALE = 0.5
METHODS = ("deer", "quasi_deer")


class TanhParams(NamedTuple):
    """``w [D, D]`` of ``s_t = tanh(s_{t-1}) @ w + u_t`` (row vectors; ``w.T`` is the column W)."""

    w: jax.Array


def tanh_rnn(state_size: int) -> rnnjax.Cell:
    """The cell ``s_t = W tanh(s_{t-1}) + u_t``: its input is ``u_t`` itself; the state is ``s``."""

    def recur(params, state, u):
        s = jnp.tanh(state.h) @ params.w + u
        return rnnjax.RNNState(s), s

    def init(key, input_size):
        return TanhParams(jax.random.normal(key, (input_size, state_size)) / math.sqrt(state_size))

    return rnnjax.Cell(
        init=init,
        initial_state=lambda batch_shape=(), dtype=jnp.float32: rnnjax.RNNState(
            jnp.zeros((*batch_shape, state_size), dtype)
        ),
        step=lambda params, state, u: recur(params, state, u),
        project_inputs=lambda params, u: u,
        recur=recur,
        hidden_size=state_size,
        num_gates=1,
        name="tanh_rnn",
        config={},
    )


def dynamics(params: TanhParams, us: jax.Array) -> dict:
    """Largest Lyapunov exponent and Jacobian norms along the sequential trajectory."""
    cell = tanh_rnn(us.shape[-1])
    _, states = rnnjax.scan(cell, params, us)
    prev = jnp.concatenate([jnp.zeros_like(states[:1]), states[:-1]])
    slopes = 1 - jnp.tanh(prev) ** 2  # row form: delta_t = (delta_{t-1} * slope_t) @ w

    def tangent(v, slope):
        v = (v * slope) @ params.w
        norm = jnp.linalg.norm(v)
        return v / norm, jnp.log(norm)

    v0 = jnp.ones(us.shape[-1]) / math.sqrt(us.shape[-1])
    _, log_growth = jax.lax.scan(tangent, v0, slopes)
    burn_in = us.shape[0] // 10
    every = max(1, us.shape[0] // 200)
    norms = jnp.linalg.norm(slopes[::every, :, None] * params.w[None], ord=2, axis=(1, 2))
    return {
        "lyapunov": jnp.mean(log_growth[burn_in:]),
        "log_jacobian_norm": jnp.mean(jnp.log(norms)),
    }


def gain_sweep(config: dict) -> dict:
    """Part 1: DEER / quasi-DEER iterations against the gain, Lyapunov exponent, Jacobian norm."""
    size, steps = config["state_size"], config["sweep_steps"]
    cell = tanh_rnn(size)

    @jax.jit
    @functools.partial(jax.vmap, in_axes=(0, 0))
    def measure(params, us):
        out = dynamics(params, us)
        for method in METHODS:
            # on_failure="raise" under jit: no fallback work, the info reports the failure.
            _, _, info = parallel_scan(
                cell, params, us, method=method, max_iter=config["max_iter"], on_failure="raise"
            )
            out[f"{method}_iterations"] = info.iterations
            out[f"{method}_converged"] = info.converged
        return out

    gains = np.linspace(0.5, 2.0, config["gains"])
    rows = []
    for gain in _common.progress(gains, "gain sweep"):
        keys = jax.random.split(jax.random.key(config["seed"] + int(1000 * gain)), config["seeds"])
        params = jax.vmap(lambda k: cell.init(k, size))(keys)
        params = TanhParams(gain * params.w)
        us = INPUT_SCALE * jax.vmap(lambda k: jax.random.normal(k, (steps, size)))(
            jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        )
        out = jax.device_get(measure(params, us))
        rows.append({"gain": float(gain), **{k: np.asarray(v).tolist() for k, v in out.items()}})
    return {"rows": rows, "state_size": size, "steps": steps, "max_iter": config["max_iter"]}


def _median_time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def runners(hidden_size: int, input_size: int, key) -> dict:
    """``name -> (params, fn(params, xs [T, D]) -> ys)`` for one sequence; the timing vmaps them."""
    gru, mgru = rnnjax.gru(hidden_size), min_gru(hidden_size)
    gru_params, mgru_params = gru.init(key, input_size), mgru.init(key, input_size)
    return {
        "scan_gru": (gru_params, lambda p, xs: rnnjax.scan(gru, p, xs)[1]),
        "deer_gru": (gru_params, lambda p, xs: parallel_scan(gru, p, xs)[1]),
        "quasi_deer_gru": (
            gru_params,
            lambda p, xs: parallel_scan(gru, p, xs, method="quasi_deer")[1],
        ),
        "scan_min_gru": (mgru_params, lambda p, xs: rnnjax.scan(mgru, p, xs)[1]),
        "parallel_min_gru": (mgru_params, lambda p, xs: parallel_minimal_scan(mgru, p, xs)[1]),
    }


def timing(config: dict) -> dict:
    """Part 2: median wall time of forward (and forward + backward) passes against ``T``."""
    key = jax.random.key(config["seed"])
    methods = runners(config["hidden_size"], config["input_size"], key)
    gru = rnnjax.gru(config["hidden_size"])
    results = {name: {"forward": {}, "grad": {}, "iterations": {}} for name in methods}
    for steps in _common.progress(config["steps"], "timing T"):
        xs = jax.random.normal(key, (config["batch"], steps, config["input_size"]))
        for name, (params, fn) in methods.items():
            forward = jax.jit(jax.vmap(fn, in_axes=(None, 0)))
            results[name]["forward"][steps] = _median_time(
                forward, params, xs, repeats=config["repeats"]
            )
            if steps <= config["grad_max_steps"]:
                grad = jax.jit(
                    jax.grad(lambda p, xs, fn=fn: jnp.sum(jax.vmap(fn, (None, 0))(p, xs)))
                )
                results[name]["grad"][steps] = _median_time(
                    grad, params, xs, repeats=config["repeats"]
                )
        for method in METHODS:
            run = jax.jit(jax.vmap(functools.partial(parallel_scan, gru, method=method), (None, 0)))
            info = run(methods["scan_gru"][0], xs)[2]
            results[f"{method}_gru"]["iterations"][steps] = np.asarray(info.iterations).tolist()
    return results


def hidden_sweep(config: dict) -> dict:
    """Forward wall time of scan, DEER and quasi-DEER GRUs against ``H`` at ``hidden_steps``."""
    key = jax.random.key(config["seed"] + 1)
    steps = config["hidden_steps"]
    xs = jax.random.normal(key, (config["batch"], steps, config["input_size"]))
    results = {}
    for hidden in _common.progress(config["hidden_sizes"], "timing H"):
        methods = runners(hidden, config["input_size"], key)
        results[hidden] = {
            name: _median_time(
                jax.jit(jax.vmap(methods[name][1], in_axes=(None, 0))),
                methods[name][0],
                xs,
                repeats=config["repeats"],
            )
            for name in ("scan_gru", "deer_gru", "quasi_deer_gru")
        }
    return {"steps": steps, "seconds": results}


def plot(sweep: dict, times: dict, out_dir) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rows = sweep["rows"]
    lyapunov = np.concatenate([r["lyapunov"] for r in rows])
    for method, marker in zip(METHODS, "os", strict=True):
        iterations = np.concatenate([r[f"{method}_iterations"] for r in rows])
        converged = np.concatenate([r[f"{method}_converged"] for r in rows]).astype(bool)
        gains = np.concatenate([[r["gain"]] * len(r["lyapunov"]) for r in rows])
        for ax, x in ((axes[0], gains), (axes[1], lyapunov)):
            ax.scatter(x[converged], iterations[converged], marker=marker, label=f"{method}")
            ax.scatter(x[~converged], iterations[~converged], marker="x", color="red")
    axes[0].set(xlabel="gain g", ylabel="Newton iterations", yscale="log")
    axes[0].set_title(f"DEER iterations (red x: not converged, max_iter={sweep['max_iter']})")
    axes[1].axvline(0.0, color="gray", lw=0.8)
    axes[1].set(xlabel="largest Lyapunov exponent", ylabel="Newton iterations", yscale="log")
    axes[0].legend()
    for name, series in times.items():
        steps = sorted(series["forward"], key=int)
        axes[2].plot(steps, [series["forward"][s] for s in steps], marker="o", label=name)
    axes[2].set(xscale="log", yscale="log", xlabel="T", ylabel="forward seconds (median)")
    axes[2].set_title(f"wall time on {jax.devices()[0].device_kind}")
    axes[2].legend(fontsize=8)
    _common.save_figure(fig, out_dir, "parallel_in_time.png")


def summary(sweep: dict, times: dict, hidden: dict, config: dict) -> list[str]:
    rows = []
    for r in sweep["rows"]:
        row = [
            r["gain"],
            float(np.mean(r["lyapunov"])),
            float(np.exp(np.mean(r["log_jacobian_norm"]))),
        ]
        for method in METHODS:
            row += [
                float(np.mean(r[f"{method}_iterations"])),
                int(np.sum(r[f"{method}_converged"])),
            ]
        rows.append(row)
    header = ["gain", "Lyapunov", "geo-mean ||J||"]
    header += [f"{m} {k}" for m in METHODS for k in ("iters", f"conv/{config['seeds']}")]
    lines = [
        f"## Newton iterations against dynamics (D={sweep['state_size']}, T={sweep['steps']})",
        "",
        _common.markdown_table(header, rows),
        "",
        "![parallel in time](parallel_in_time.png)",
        "",
        f"## Wall time (GRU H={config['hidden_size']}, batch {config['batch']}, seconds, median)",
        "",
    ]
    steps = config["steps"]
    table = [
        [name, *[series["forward"].get(s, math.nan) for s in steps]]
        for name, series in times.items()
    ]
    lines += [_common.markdown_table(["forward", *[f"T={s}" for s in steps]], table), ""]
    grad_steps = [s for s in steps if s <= config["grad_max_steps"]]
    table = [
        [name, *[series["grad"].get(s, math.nan) for s in grad_steps]]
        for name, series in times.items()
    ]
    lines += [
        _common.markdown_table(["forward+backward", *[f"T={s}" for s in grad_steps]], table),
        "",
    ]
    base = times["scan_gru"]["forward"]
    ratios = [[name, *[base[s] / times[name]["forward"][s] for s in steps]] for name in times]
    lines += ["Speed-up over `rnnjax.scan` (GRU), forward (>1: faster):", ""]
    lines += [_common.markdown_table(["method", *[f"T={s}" for s in steps]], ratios), ""]
    names = ("scan_gru", "deer_gru", "quasi_deer_gru")
    table = [[h, *[hidden["seconds"][h][n] for n in names]] for h in hidden["seconds"]]
    lines += [f"GRU forward seconds against H at T={hidden['steps']}:", ""]
    lines += [_common.markdown_table(["H", *names], table)]
    return lines


def run(config: dict, out_dir) -> dict:
    """Run both parts, write ``results.json``, ``parallel_in_time.png``, ``summary.md``."""
    sweep = gain_sweep(config)
    times = timing(config)
    hidden = hidden_sweep(config)
    results = {"config": config, "gain_sweep": sweep, "timing": times, "hidden_sweep": hidden}
    _common.write_json(out_dir, results)
    plot(sweep, times, out_dir)
    _common.write_summary(
        out_dir, "Parallel-in-time evaluation", summary(sweep, times, hidden, config)
    )
    return results


def main(argv=None):
    args = _common.parse_args("parallel_in_time", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
