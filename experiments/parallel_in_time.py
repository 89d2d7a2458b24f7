"""Parallel-in-time evaluation: when does DEER converge, and when is it faster than a scan?

Part 1 (convergence against dynamics). A random tanh RNN ``s_t = W tanh(s_{t-1}) + u_t`` with
``W ~ N(0, g^2 / D)`` and ``u_t ~ N(0, input_scale^2)`` is swept over the gain ``g`` in
[0.5, 2]. For each gain and seed the sequential trajectory gives the largest Lyapunov exponent
(tangent-vector growth rate along the trajectory, renormalised every step) and the geometric mean
of the step Jacobians' spectral norms ``||diag(tanh'(s_{t-1})) W||_2``; DEER and quasi-DEER
(``rnnjax.parallel_scan``) report their Newton iteration counts and whether they converged within
``max_iter`` (Gonzalez et al. 2025 tie DEER's difficulty to the Lyapunov exponent: contractive
cells, the ones whose gradients vanish, converge in a few iterations; chaotic ones do not).

Part 3 (``experiments._iteration_predictor``): DEER's and ELK's iterations predicted from the
largest Lyapunov exponent across cells, seeds and ``T``; how often ``method="auto"`` picks the
fastest of scan, DEER and ELK.

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
from experiments import _common, _iteration_predictor
from rnnjax._minimal import min_gru, parallel_minimal_scan
from rnnjax._parallel_scan import parallel_scan

SIZES = {
    "quick": {
        "state_size": 8, "sweep_steps": 100, "gains": 3, "seeds": 2, "max_iter": 30,
        "hidden_size": 8, "input_size": 4, "batch": 2, "steps": [64], "grad_steps": [64],
        "hidden_sizes": [4], "hidden_steps": 64, "repeats": 2,
        "methods": ["scan_gru", "deer_gru", "parallel_min_gru"],
    },
    "default": {
        "state_size": 32, "sweep_steps": 1000, "gains": 7, "seeds": 3, "max_iter": 100,
        "hidden_size": 16, "input_size": 8, "batch": 4, "steps": [100, 1000, 10000],
        "grad_steps": [1000], "hidden_sizes": [4, 64], "hidden_steps": 1000, "repeats": 5,
    },
    "full": {
        "state_size": 64, "sweep_steps": 10000, "gains": 16, "seeds": 8, "max_iter": 300,
        "hidden_size": 16, "input_size": 8, "batch": 16, "steps": [100, 1000, 10000, 100000],
        "grad_steps": [1000, 10000], "hidden_sizes": [4, 64, 256], "hidden_steps": 10000,
        "repeats": 5,
    },
}  # fmt: skip
INPUT_SCALE = 0.1
METHODS = ("deer", "quasi_deer")
METHOD_NAMES = ("scan_gru", "deer_gru", "quasi_deer_gru", "scan_min_gru", "parallel_min_gru")


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


def _best_time(fn, *args, repeats: int, budget_s: float = 0.5) -> float:
    """Fastest of at least ``repeats`` runs (more while under ``budget_s``) after a compile run.

    The minimum resists other load on the machine better than the median: every run computes
    the same thing, so slower runs only measure interference.
    """
    jax.block_until_ready(fn(*args))
    times, spent = [], 0.0
    while len(times) < repeats or (spent < budget_s and len(times) < 100):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return min(times)


def runners(hidden_size: int, input_size: int, key) -> dict:
    """``name -> (params, fn(params, xs [T, D]) -> (ys, iterations))`` for one sequence."""
    gru, mgru = rnnjax.gru(hidden_size), min_gru(hidden_size)
    gru_params, mgru_params = gru.init(key, input_size), mgru.init(key, input_size)
    none = jnp.zeros((), jnp.int32)

    def deer(method):
        def fn(params, xs):
            _, ys, info = parallel_scan(gru, params, xs, method=method)
            return ys, info.iterations

        return gru_params, fn

    return {
        "scan_gru": (gru_params, lambda p, xs: (rnnjax.scan(gru, p, xs)[1], none)),
        "deer_gru": deer("deer"),
        "quasi_deer_gru": deer("quasi_deer"),
        "scan_min_gru": (mgru_params, lambda p, xs: (rnnjax.scan(mgru, p, xs)[1], none)),
        "parallel_min_gru": (
            mgru_params,
            lambda p, xs: (parallel_minimal_scan(mgru, p, xs)[1], none),
        ),
    }


def _forward(fn):
    return jax.jit(jax.vmap(fn, in_axes=(None, 0)))


def _gradient(fn):
    return jax.jit(jax.grad(lambda p, xs: jnp.sum(jax.vmap(fn, in_axes=(None, 0))(p, xs)[0])))


def timing(config: dict) -> dict:
    """Part 2: best wall time of forward (and forward + backward) passes against ``T``."""
    key = jax.random.key(config["seed"])
    methods = runners(config["hidden_size"], config["input_size"], key)
    names = config.get("methods", list(methods))
    results = {name: {"forward": {}, "grad": {}, "iterations": {}} for name in names}
    for steps in _common.progress(config["steps"], "timing T"):
        xs = jax.random.normal(key, (config["batch"], steps, config["input_size"]))
        for name in names:
            params, fn = methods[name]
            forward = _forward(fn)
            results[name]["forward"][steps] = _best_time(
                forward, params, xs, repeats=config["repeats"]
            )
            results[name]["iterations"][steps] = np.asarray(forward(params, xs)[1]).tolist()
            if steps in config["grad_steps"]:
                results[name]["grad"][steps] = _best_time(
                    _gradient(fn), params, xs, repeats=config["repeats"]
                )
    return results


def hidden_sweep(config: dict) -> dict:
    """Forward wall time of scan, DEER and quasi-DEER GRUs against ``H`` at ``hidden_steps``."""
    key = jax.random.key(config["seed"] + 1)
    steps = config["hidden_steps"]
    xs = jax.random.normal(key, (config["batch"], steps, config["input_size"]))
    names = [
        n for n in config.get("methods", METHOD_NAMES) if n.endswith("_gru") and "min" not in n
    ]
    results = {}
    for hidden in _common.progress(config["hidden_sizes"], "timing H"):
        methods = runners(hidden, config["input_size"], key)
        results[hidden] = {
            name: _best_time(
                _forward(methods[name][1]), methods[name][0], xs, repeats=config["repeats"]
            )
            for name in names
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
            ax.scatter(x[converged], iterations[converged], marker=marker, label=method)
            ax.scatter(
                x[~converged],
                iterations[~converged],
                marker=marker,
                facecolors="none",
                edgecolors="red",
                label=f"{method}: not converged",
            )
    axes[0].set(xlabel="gain g", ylabel="Newton iterations", yscale="log")
    axes[0].set_title(f"Newton iterations (max_iter={sweep['max_iter']})")
    axes[1].axvline(0.0, color="gray", lw=0.8)
    axes[1].set(xlabel="largest Lyapunov exponent", ylabel="Newton iterations", yscale="log")
    axes[0].legend(fontsize=8)
    for name, series in times.items():
        steps = sorted(series["forward"], key=int)
        axes[2].plot(steps, [series["forward"][s] for s in steps], marker="o", label=name)
    axes[2].set(xscale="log", yscale="log", xlabel="T", ylabel="forward seconds (best run)")
    axes[2].set_title(f"wall time on {jax.devices()[0].device_kind}")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    _common.save_figure(fig, out_dir, "parallel_in_time.png")


def _table(times: dict, kind: str, steps: list[int], label: str) -> str:
    rows = [
        [name, *[series[kind].get(t, math.nan) for t in steps]] for name, series in times.items()
    ]
    return _common.markdown_table([label, *[f"T={t}" for t in steps]], rows)


def summary(sweep: dict, times: dict, hidden: dict, config: dict) -> list[str]:
    """Markdown: the gain-sweep table, the figure, wall times, speed-ups, times against H."""
    rows = []
    for r in sweep["rows"]:
        row = [r["gain"], np.mean(r["lyapunov"]), np.exp(np.mean(r["log_jacobian_norm"]))]
        for method in METHODS:
            row += [np.mean(r[f"{method}_iterations"]), int(np.sum(r[f"{method}_converged"]))]
        rows.append(row)
    header = ["gain", "Lyapunov exp.", "geo-mean J norm"]
    header += [f"{m} {k}" for m in METHODS for k in ("iters", f"conv/{config['seeds']}")]
    steps, base = config["steps"], times.get("scan_gru", {}).get("forward", {})
    speedups = [[n, *[base[t] / s["forward"][t] for t in steps]] for n, s in times.items() if base]
    iterations = [
        [n, *[f"{min(s['iterations'][t])}-{max(s['iterations'][t])}" for t in steps]]
        for n, s in times.items()
        if n.startswith(("deer", "quasi"))
    ]
    names = list(next(iter(hidden["seconds"].values()), {}))
    by_hidden = [[h, *[seconds[n] for n in names]] for h, seconds in hidden["seconds"].items()]
    return [
        f"## Newton iterations against dynamics (D={sweep['state_size']}, T={sweep['steps']}, "
        f"max_iter={sweep['max_iter']}, inputs N(0, {INPUT_SCALE}^2))",
        "",
        _common.markdown_table(header, rows),
        "",
        "![parallel in time](parallel_in_time.png)",
        "",
        f"## Wall time: GRU H={config['hidden_size']}, D={config['input_size']}, batch "
        f"{config['batch']} (vmap), seconds, best of {config['repeats']} jitted runs",
        "",
        _table(times, "forward", steps, "forward"),
        "",
        _table(times, "grad", config["grad_steps"], "forward+backward"),
        "",
        "Speed-up of the forward pass over `rnnjax.scan` of the GRU (>1: faster):",
        "",
        _common.markdown_table(["method", *[f"T={t}" for t in steps]], speedups),
        "",
        "Newton iterations over the batch (min-max):",
        "",
        _common.markdown_table(["method", *[f"T={t}" for t in steps]], iterations),
        "",
        f"GRU forward seconds against H at T={hidden['steps']}:",
        "",
        _common.markdown_table(["H", *names], by_hidden),
    ]


def run(config: dict, out_dir) -> dict:
    """Run both parts, write ``results.json``, ``parallel_in_time.png``, ``summary.md``."""
    sweep = gain_sweep(config)
    times = timing(config)
    hidden = hidden_sweep(config)
    results = {"config": config, "gain_sweep": sweep, "timing": times, "hidden_sweep": hidden}
    lines = summary(sweep, times, hidden, config)
    if "predictor_steps" in config:
        results["predictor"] = _iteration_predictor.run(config)
        lines += ["", *_iteration_predictor.summary(results["predictor"])]
    _common.write_json(out_dir, results)
    plot(sweep, times, out_dir)
    _common.write_summary(out_dir, "Parallel-in-time evaluation", lines)
    return results


def main(argv=None):
    args = _common.parse_args("parallel_in_time", __doc__, argv)
    config = {**_iteration_predictor.SIZES[args.size], **_common.pick_size(SIZES, args)}
    run(config, args.out)


if __name__ == "__main__":
    main()
