"""Part 3 of ``experiments.parallel_in_time``: predict DEER's and ELK's iterations, test "auto".

For tanh RNNs over the gains, untrained and briefly trained GRUs and LSTMs, seeds and lengths
``T``, each run records the largest Lyapunov exponent (QR method on the trajectory's step
Jacobians, ``rnnjax.jacobians.largest_lyapunov_exponent``), the gradient-decay rate
(``rnnjax.jacobians.decay_rate`` of ``||d s_T / d s_k||``, the tooling of
``experiments.gradient_decay``), DEER's and ELK's iteration counts and the best wall time of
``scan``, DEER and ELK. A least-squares model of ``log(iterations)`` on
``[1, lambda, max(lambda, 0) log T, log T]`` is fitted on three quarters of the runs and scored on
the held-out quarter (median relative error of the predicted iterations). "auto"'s pick
(``rnnjax._parallel_auto``, with this fit) is then compared with the fastest of the three.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from experiments import _common
from rnnjax import _parallel_auto, jacobians
from rnnjax._parallel_scan import parallel_scan

FEATURES = ("1", "lambda", "max(lambda,0) log T", "log T")


def _cells(config):
    """``name -> (kind, params_fn(key))``: tanh RNNs per gain, GRU and LSTM, untrained/trained.

    One cell object per kind, so that each kind compiles once per ``T``.
    """
    hidden, size = config["predictor_hidden"], config["input_size"]
    kinds = {
        "tanh": rnnjax.simple_rnn(hidden),
        "gru": rnnjax.gru(hidden),
        "lstm": rnnjax.lstm(hidden),
    }
    cells = {}
    for gain in config["predictor_gains"]:

        def tanh_params(key, gain=gain):
            params = kinds["tanh"].init(key, size)
            w_h = gain * jax.random.normal(jax.random.fold_in(key, 7), params.w_h.shape)
            return params._replace(w_h=w_h / np.sqrt(hidden))

        cells[f"tanh g={gain}"] = ("tanh", tanh_params)
    for name in ("gru", "lstm"):
        cells[name] = (name, functools.partial(kinds[name].init, input_size=size))
        cells[f"{name} trained"] = (name, functools.partial(_trained, kinds[name], size))
    return kinds, cells


def _trained(cell, size, key, steps=20):
    """A few Adam steps on a toy task (predict the running mean of the inputs' first feature)."""
    params = cell.init(key, size)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (8, 50, size))
    target = jnp.cumsum(xs[..., 0], axis=1) / jnp.arange(1, 51)
    optimiser = optax.adam(3e-2)

    def loss(params):
        ys = jax.vmap(lambda x: rnnjax.scan(cell, params, x)[1])(xs)
        return jnp.mean((ys[..., 0] - target) ** 2)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = optimiser.update(grads, state)
        return optax.apply_updates(params, updates), state

    state = optimiser.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params


def _runners(cell, config):
    """Jitted scan, DEER and ELK of one cell (compiled once per shape, reused across seeds)."""
    runners = {"scan": jax.jit(lambda p, x: rnnjax.scan(cell, p, x)[1])}
    for method in ("deer", "elk"):
        runners[method] = jax.jit(
            lambda p, x, m=method: parallel_scan(
                cell, p, x, method=m, max_iter=config["predictor_max_iter"], on_failure="raise"
            )
        )
    return runners


def _measure_one(cell, runners, params, xs, config):
    lyapunov = float(
        jacobians.largest_lyapunov_exponent(cell, params, xs, burn_in=xs.shape[0] // 4)
    )
    window = xs[: config["decay_window"]]
    norms = jacobians.spectral_norm(jacobians.state_jacobians(cell, params, window))[::-1]
    decay = float(jacobians.decay_rate(norms))
    row = {"lyapunov": lyapunov, "decay_rate": decay}
    for method in ("deer", "elk"):
        info = runners[method](params, xs)[2]
        row[f"{method}_iterations"] = int(info.iterations)
        row[f"{method}_converged"] = bool(info.converged)
    for name, fn in runners.items():
        row[f"{name}_seconds"] = _common_best(fn, params, xs, repeats=config["repeats"])
    return row


def _common_best(fn, *args, repeats):
    from experiments.parallel_in_time import _best_time

    return _best_time(fn, *args, repeats=repeats, budget_s=0.1)


def dataset(config) -> list[dict]:
    rows = []
    kinds, cells = _cells(config)
    compiled = {kind: _runners(cell, config) for kind, cell in kinds.items()}
    for name in _common.progress(list(cells), "predictor cells"):
        kind, make = cells[name]
        cell, runners = kinds[kind], compiled[kind]
        for seed in range(config["predictor_seeds"]):
            key = jax.random.key(1000 + seed)
            params = make(key)
            for steps in config["predictor_steps"]:
                xs = jax.random.normal(
                    jax.random.fold_in(key, steps), (steps, config["input_size"])
                )
                row = _measure_one(cell, runners, params, xs, config)
                rows.append({"cell": name, "seed": seed, "T": steps, "H": cell.hidden_size, **row})
    return rows


def _features(rows):
    lam = np.array([r["lyapunov"] for r in rows])
    log_t = np.log([r["T"] for r in rows])
    return np.stack([np.ones_like(lam), lam, np.maximum(lam, 0) * log_t, log_t], axis=1)


def fit(rows, method: str) -> dict:
    """Fit on runs with index % 4 != 0, score the others (converged runs only)."""
    usable = [r for r in rows if r[f"{method}_converged"]]
    train = [r for i, r in enumerate(usable) if i % 4 != 0]
    held = [r for i, r in enumerate(usable) if i % 4 == 0]
    target = np.log([max(r[f"{method}_iterations"], 1) for r in train])
    coef, *_ = np.linalg.lstsq(_features(train), target, rcond=None)
    predicted = np.exp(_features(held) @ coef)
    actual = np.array([max(r[f"{method}_iterations"], 1) for r in held])
    errors = np.abs(predicted - actual) / actual
    return {
        "coefficients": coef.tolist(), "features": FEATURES, "train_runs": len(train),
        "held_out_runs": len(held), "held_out_median_relative_error": float(np.median(errors)),
        "held_out_max_relative_error": float(np.max(errors)),
    }  # fmt: skip


def auto_pick_rate(rows, fits, backend: str, max_iter: int) -> dict:
    """How often the auto rule (with ``fits``) picks the fastest of scan, DEER and ELK."""
    saved = dict(_parallel_auto.ITERATION_MODEL)
    _parallel_auto.ITERATION_MODEL.update({m: tuple(fits[m]["coefficients"]) for m in fits})
    try:
        hits, picks = 0, []
        for r in rows:
            costs = _parallel_auto.predicted_costs(
                jnp.asarray(r["lyapunov"]), r["T"], r["H"], backend, max_iter
            )
            pick = _parallel_auto.CHOICES[int(jnp.argmin(costs))]
            times = {m: r[f"{m}_seconds"] for m in _parallel_auto.CHOICES}
            fastest = min(times, key=times.get)
            hits += pick == fastest
            picks.append({"cell": r["cell"], "T": r["T"], "pick": pick, "fastest": fastest})
    finally:
        _parallel_auto.ITERATION_MODEL.update(saved)
    return {"backend": backend, "runs": len(rows), "picked_fastest": hits, "picks": picks}


def run(config) -> dict:
    rows = dataset(config)
    fits = {m: fit(rows, m) for m in ("deer", "elk")}
    backend = jax.default_backend()
    return {
        "rows": rows, "fits": fits,
        "auto": auto_pick_rate(rows, fits, backend, config["predictor_max_iter"]),
    }  # fmt: skip


def summary(result: dict) -> list[str]:
    table = [
        [r["cell"], r["seed"], r["T"], r["lyapunov"], r["decay_rate"], r["deer_iterations"],
         r["elk_iterations"], r["scan_seconds"], r["deer_seconds"], r["elk_seconds"]]
        for r in result["rows"]
    ]  # fmt: skip
    header = ["cell", "seed", "T", "Lyapunov", "decay rate", "DEER it.", "ELK it.", "scan s",
              "DEER s", "ELK s"]  # fmt: skip
    fits = [
        [m, *(f"{c:.3g}" for c in f["coefficients"]), f["held_out_runs"],
         f"{f['held_out_median_relative_error']:.2f}", f"{f['held_out_max_relative_error']:.2f}"]
        for m, f in result["fits"].items()
    ]  # fmt: skip
    auto = result["auto"]
    return [
        "## Iteration predictor and method='auto'",
        "",
        _common.markdown_table(header, table),
        "",
        "Fit of log(iterations) on [1, lambda, max(lambda,0) log T, log T] (held-out quarter):",
        "",
        _common.markdown_table(
            ["method", *FEATURES, "held-out runs", "median rel. error", "max rel. error"], fits
        ),
        "",
        f"`method='auto'` picked the fastest of scan/DEER/ELK in {auto['picked_fastest']} of "
        f"{auto['runs']} runs on {auto['backend']}.",
    ]


SIZES = {
    "quick": {
        "predictor_hidden": 4, "input_size": 3, "predictor_gains": [0.5, 2.0], "predictor_seeds": 1,
        "predictor_steps": [32], "predictor_max_iter": 64, "decay_window": 16, "repeats": 1,
    },
    "default": {
        "predictor_hidden": 6, "input_size": 3, "predictor_gains": [0.5, 1.0, 1.5, 2.0],
        "predictor_seeds": 2, "predictor_steps": [48, 160], "predictor_max_iter": 160,
        "decay_window": 24, "repeats": 3,
    },
    # The GPU check (a few minutes on one GPU, mostly compilation): --full.
    "full": {
        "predictor_hidden": 16, "input_size": 4, "predictor_gains": [0.5, 1.0, 1.5, 2.0],
        "predictor_seeds": 1, "predictor_steps": [100, 1000], "predictor_max_iter": 300,
        "decay_window": 32, "repeats": 3,
    },
}  # fmt: skip


def main(argv=None):
    """``python -m experiments._iteration_predictor [--quick|--full] [--out DIR]``: part 3 alone
    (the GPU check: ``--out experiments/results/parallel_in_time/gpu``)."""
    args = _common.parse_args("parallel_in_time.predictor", __doc__, argv)
    config = {**_common.pick_size(SIZES, args), "seed": args.seed}
    result = run(config)
    _common.write_json(args.out, {"config": config, "predictor": result})
    _common.write_summary(args.out, "Parallel in time: iteration predictor", summary(result))


if __name__ == "__main__":
    main()
