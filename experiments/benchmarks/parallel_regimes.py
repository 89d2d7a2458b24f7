"""Where each parallel-in-time method wins: DEER, ELK and the LRU family against ``rnnjax.scan``.

``python -m experiments.benchmarks.parallel_regimes [--quick | --full] [--device cpu|gpu]
[--precision P] [--only all|newton|linear] [--out DIR]`` writes ``results.json``,
``newton.csv``, ``linear.csv`` and ``summary.md`` (default
``experiments/results/benchmarks_parallel/``). Two sections, each interleaved in one process
(``_timing.interleaved``: every round calls every contender once, in rotating order; medians,
and the quartiles of each ratio taken round by round):

* ``newton``: a tanh RNN (``rnnjax.simple_rnn`` with ``W_h ~ N(0, g^2 / H)``, inputs
  ``N(0, 0.1^2)``) at each gain ``g``, forward, by ``rnnjax.scan`` and by
  ``rnnjax.parallel_scan`` with ``"deer"``, ``"quasi_deer"``, ``"elk"`` and ``"quasi_elk"`` (default
  ``max_iter`` and ``tol``); each row carries the gain's largest Lyapunov exponent (QR method, on
  the first 1000 steps), the iterations, convergence, fallback and the largest difference from
  the sequential outputs. ``--full`` adds the reset-after GRU at its default initialisation.
* ``linear``: ``rnnjax.lru`` and ``rnnjax.rg_lru`` by ``rnnjax.scan`` and by the exact
  associative ``rnnjax.parallel_linear_scan``, forward and forward+backward (``grad`` of
  ``sum(ys)`` w.r.t. the params), with the LSTM's and the reset-after GRU's ``rnnjax.scan`` as
  the reference (``speedup_vs_lstm``). ``scan_precomputed`` is no public API: a ``lax.scan`` of
  ``h_t = a_t h_{t-1} + b_t`` over coefficients the library's own functions computed for every
  ``t`` first, the sequential loop without the gate math inside it (``rnnjax.scan`` of these
  cells takes the generic path, which evaluates ``recur`` whole at every step).
"""

import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import rnnjax
from experiments._common import parse_args, pick_size, progress, write_json, write_summary
from experiments.benchmarks import _competitors, _parallel, _timing
from experiments.benchmarks import _regimes_report as report
from experiments.benchmarks.__main__ import PRECISIONS, _write_csv, set_precision, start
from rnnjax._lru import _lru_readout, lru_lambda
from rnnjax._rg_lru import rg_lru_coefficients

logger = logging.getLogger("experiments.benchmarks.parallel_regimes")

NEWTON_METHODS = ("scan", "deer", "quasi_deer", "elk", "quasi_elk")
LINEAR_CONTENDERS = (
    ("lstm", "scan"),
    ("gru", "scan"),
    ("lru", "scan"),
    ("lru", "scan_precomputed"),
    ("lru", "parallel_linear_scan"),
    ("rg_lru", "scan"),
    ("rg_lru", "scan_precomputed"),
    ("rg_lru", "parallel_linear_scan"),
)
MODES = ("forward", "forward_backward")
INPUT_SCALE = 0.1
LYAPUNOV_STEPS = 1000
# XLA without optimisations compiles the associative scans several times faster (tests only:
# the timings are then meaningless).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}

SIZES = {
    "tiny": {  # the smoke test's size (tests/test_benchmarks_parallel_regimes.py)
        "newton": {"B": 1, "D": 2, "H": 3, "T": [6], "gains": [0.5], "cells": ["tanh_rnn"],
                   "rounds": 2, "compiler_options": _FAST_COMPILE},
        "linear": {"B": 1, "D": 2, "H": 3, "T": [6], "rounds": 2,
                   "compiler_options": _FAST_COMPILE},
    },
    "quick": {
        "newton": {"B": 2, "D": 4, "H": 8, "T": [300], "gains": [0.5, 1.0],
                   "cells": ["tanh_rnn"], "rounds": 3},
        "linear": {"B": 4, "D": 16, "H": 32, "T": [1000], "rounds": 3},
    },
    "default": {
        "newton": {"B": 2, "D": 4, "H": 16, "T": [1000, 10000], "gains": [0.5, 1.0],
                   "cells": ["tanh_rnn"], "rounds": 5},
        "linear": {"B": 8, "D": 32, "H": 64, "T": [1000, 10000], "rounds": 7},
    },
    "full": {
        "newton": {"B": 4, "D": 4, "H": 16, "T": [100, 1000, 10000], "gains": [0.5, 1.0, 1.5],
                   "cells": ["tanh_rnn", "gru"], "rounds": 7},
        "linear": {"B": 8, "D": 32, "H": 64, "T": [100, 1000, 10000, 100000], "rounds": 11},
    },
}  # fmt: skip


def _systems(settings: dict, key) -> list[dict]:
    """``{"cell", "gain", "model", "params"}`` per system: a tanh RNN per gain (one ``W_h`` draw,
    scaled), and the GRU at its default initialisation when ``"gru"`` is in ``cells``."""
    systems = []
    key_init, key_w = jax.random.split(key)
    if "tanh_rnn" in settings["cells"]:
        model = rnnjax.simple_rnn(settings["H"])
        base = model.init(key_init, settings["D"])
        draw = jax.random.normal(key_w, base.w_h.shape) / np.sqrt(settings["H"])
        for gain in settings["gains"]:
            params = base._replace(w_h=gain * draw)
            systems.append({"cell": "tanh_rnn", "gain": gain, "model": model, "params": params})
    if "gru" in settings["cells"]:
        model = _competitors.rnnjax_cell("gru", settings["H"])
        params = model.init(key_init, settings["D"])
        systems.append({"cell": "gru", "gain": None, "model": model, "params": params})
    return systems


def _aot(function, args, options):
    """``jax.jit(function)`` compiled for ``args`` with XLA ``options``: ``(executable, seconds)``.

    The executable takes any params of the same structure, so systems that differ only in their
    params share one compilation."""
    start_time = time.perf_counter()
    executable = jax.jit(function).lower(*args).compile(compiler_options=options)
    return executable, time.perf_counter() - start_time


def _add_ratios(rows: list[dict], name: str, reference_of) -> None:
    """``{name}`` = the reference row's median / this median, ``{name}_q25``/``_q75`` the
    quartiles of the same ratio round by round (``_timing.paired_ratios``)."""
    for row in rows:
        reference = reference_of(row)
        if reference is None:
            continue
        row[name] = reference["median_ms"] / row["median_ms"]
        for quartile, value in (_timing.paired_ratios(reference, row) or {}).items():
            row[f"{name}_{quartile}"] = value


def _newton_point(settings: dict, steps: int, seed: int) -> list[dict]:
    """Every (system, method) at one ``T``, forward, interleaved."""
    shape = {axis: settings[axis] for axis in ("B", "D", "H")} | {"T": steps}
    key = jax.random.key(seed)
    x = INPUT_SCALE * jax.random.normal(
        jax.random.fold_in(key, steps), (shape["B"], steps, shape["D"])
    )
    systems = _systems(settings, key)
    options = settings.get("compiler_options")
    methods = settings.get("methods", NEWTON_METHODS)
    compiled, calls, outputs = {}, {}, {}
    for index, system in enumerate(systems):
        for method in methods:
            fn = jax.vmap(_parallel._one_sequence(system["model"], method), in_axes=(None, 0))
            slot = (system["cell"], method)
            if slot not in compiled:
                compiled[slot] = _aot(fn, (system["params"], x), options)
            executable = compiled[slot][0]
            params = system["params"]
            calls[index, method] = lambda e=executable, p=params: jax.block_until_ready(e(p, x))
            outputs[index, method] = calls[index, method]()
    # The call that produced ``outputs`` was each contender's warm-up.
    times = _timing.interleaved(calls, settings["rounds"], warmup=0)
    prefix = x[0, : min(steps, LYAPUNOV_STEPS)]
    lyapunov = [
        float(rnnjax.jacobians.largest_lyapunov_exponent(s["model"], s["params"], prefix))
        for s in systems
    ]
    rows = []
    for (index, method), stats in times.items():
        system = systems[index]
        ys, iterations, converged, fell_back = outputs[index, method]
        newton = method != "scan"
        rows.append({
            "section": "newton", "cell": system["cell"], "gain": system["gain"],
            "lyapunov": lyapunov[index], "method": method, "mode": "forward", **shape, **stats,
            "compile_s": compiled[system["cell"], method][1],
            "iterations_max": int(np.max(iterations)) if newton else None,
            "iterations_mean": float(np.mean(iterations)) if newton else None,
            "converged": bool(np.all(converged)), "fell_back": bool(np.any(fell_back)),
            "max_rel_diff_vs_scan": _parallel._relative_difference(ys, outputs[index, "scan"][0]),
            "_system": index,
        })  # fmt: skip
    scan = {row["_system"]: row for row in rows if row["method"] == "scan"}
    _add_ratios(rows, "speedup_vs_scan", lambda row: scan[row["_system"]])
    for row in rows:
        del row["_system"]
    return rows


def newton_rows(config: dict) -> list[dict]:
    """The ``newton`` section at each ``T`` of ``config["newton"]``.

    Args:
      config: a size; ``config["newton"]`` holds ``B``, ``D``, ``H``, ``T`` (a list), ``gains``,
        ``cells`` (``"tanh_rnn"``, ``"gru"``), ``rounds`` and optionally ``methods`` (default
        all of :data:`NEWTON_METHODS`, ``"scan"`` first) and ``compiler_options`` (tests only).

    Returns:
      One dict per (system, method, T): ``section``, ``cell``, ``gain`` (``None`` for the GRU),
      ``lyapunov``, ``method``, ``mode``, ``B``, ``D``, ``H``, ``T``, the interleaved statistics,
      ``compile_s``, ``iterations_max``/``iterations_mean`` (``None`` for ``scan``),
      ``converged``, ``fell_back``, ``max_rel_diff_vs_scan`` and ``speedup_vs_scan`` with its
      quartiles.
    """
    settings = config["newton"]
    rows = []
    for steps in progress(settings["T"], "newton T"):
        rows += _newton_point(settings, steps, config.get("seed", 0))
    for row in rows:
        logger.info(
            "%-8s g=%-4s %-11s T=%-6d %9.2f ms %6.3fx vs scan, iterations %s%s",
            row["cell"], row["gain"], row["method"], row["T"], row["median_ms"],
            row["speedup_vs_scan"], row["iterations_max"], " (fell back)" * row["fell_back"],
        )  # fmt: skip
    return rows


def _linear_cells(hidden: int) -> dict:
    return {
        "lstm": rnnjax.lstm(hidden),
        "gru": _competitors.rnnjax_cell("gru", hidden),
        # The paper's long-range setting (Orvieto et al. 2023, Sec. 3.3).
        "lru": rnnjax.lru(hidden, r_min=0.9, r_max=0.999, max_phase=0.314),
        "rg_lru": rnnjax.rg_lru(hidden),
    }


def _linear_loop(a: jax.Array, b: jax.Array) -> jax.Array:
    """``h_t = a_t h_{t-1} + b_t`` from ``h_0 = 0``, one step at a time: ``[T, N]``."""

    def body(h, coefficients):
        h = coefficients[0] * h + coefficients[1]
        return h, h

    return lax.scan(body, jnp.zeros_like(b[0]), (a, b))[1]


def _precomputed(cell):
    """``fn(params, xs) -> ys``: the cell's coefficients for all ``t`` at once, then
    :func:`_linear_loop` (complex for the LRU), then the LRU's readout."""
    n = cell.hidden_size
    if cell.name == "rg_lru":
        return lambda params, xs: _linear_loop(
            *rg_lru_coefficients(params, cell.project_inputs(params, xs), cell.config["c"])
        )

    def lru(params, xs):
        projected = cell.project_inputs(params, xs)
        b = lax.complex(projected[:, :n], projected[:, n : 2 * n])
        a = jnp.broadcast_to(lax.complex(*lru_lambda(params))[None], b.shape)
        h = _linear_loop(a, b)
        return _lru_readout(params, jnp.real(h), jnp.imag(h), projected[:, 2 * n :])

    return lru


def _linear_sequence(cell, method: str):
    if method == "scan":
        return lambda params, xs: rnnjax.scan(cell, params, xs)[1]
    if method == "scan_precomputed":
        return _precomputed(cell)
    return lambda params, xs: rnnjax.parallel_linear_scan(cell, params, xs)[1]


def _linear_point(settings: dict, steps: int, seed: int) -> list[dict]:
    """Every linear contender at one ``T``, forward and forward+backward, interleaved."""
    shape = {axis: settings[axis] for axis in ("B", "D", "H")} | {"T": steps}
    key = jax.random.key(seed)
    x = jax.random.normal(jax.random.fold_in(key, steps), (shape["B"], steps, shape["D"]))
    cells = _linear_cells(shape["H"])
    options = settings.get("compiler_options")
    calls, outputs, compile_s = {}, {}, {}
    for name, method in LINEAR_CONTENDERS:
        params = cells[name].init(key, shape["D"])
        batched = jax.vmap(_linear_sequence(cells[name], method), in_axes=(None, 0))

        def loss(params, x, batched=batched):
            return jnp.sum(batched(params, x))

        for mode, function in (("forward", batched), ("forward_backward", jax.grad(loss))):
            call, seconds = _parallel._compiled(function, (params, x), options)
            calls[name, method, mode], compile_s[name, method, mode] = call, seconds
            outputs[name, method, mode] = call()
    times = _timing.interleaved(calls, settings["rounds"], warmup=0)
    rows = []
    for (name, method, mode), stats in times.items():
        rows.append({
            "section": "linear", "cell": name, "method": method, "mode": mode, **shape, **stats,
            "compile_s": compile_s[name, method, mode],
            "max_rel_diff_vs_scan": _parallel._relative_difference(
                outputs[name, method, mode], outputs[name, "scan", mode]
            ),
        })  # fmt: skip
    by_key = {(row["cell"], row["method"], row["mode"]): row for row in rows}
    _add_ratios(rows, "speedup_vs_scan", lambda row: by_key[row["cell"], "scan", row["mode"]])
    _add_ratios(rows, "speedup_vs_lstm", lambda row: by_key["lstm", "scan", row["mode"]])
    return rows


def linear_rows(config: dict) -> list[dict]:
    """The ``linear`` section at each ``T`` of ``config["linear"]``.

    Args:
      config: a size; ``config["linear"]`` holds ``B``, ``D``, ``H``, ``T`` (a list),
        ``rounds`` and optionally ``compiler_options`` (tests only).

    Returns:
      One dict per (cell, method, mode, T): ``section``, ``cell``, ``method``, ``mode``, ``B``,
      ``D``, ``H``, ``T``, the interleaved statistics, ``compile_s``,
      ``max_rel_diff_vs_scan`` (outputs forward, gradients forward+backward), and
      ``speedup_vs_scan`` (the same cell's scan) and ``speedup_vs_lstm`` with their quartiles.
    """
    settings = config["linear"]
    rows = []
    for steps in progress(settings["T"], "linear T"):
        rows += _linear_point(settings, steps, config.get("seed", 0))
    for row in rows:
        logger.info(
            "%-7s %-21s %-16s T=%-6d %9.2f ms %6.2fx vs scan %6.2fx vs LSTM",
            row["cell"], row["method"], row["mode"], row["T"], row["median_ms"],
            row["speedup_vs_scan"], row["speedup_vs_lstm"],
        )  # fmt: skip
    return rows


def run(
    config: dict, out_dir: Path, device: str = "cpu", precision: str = "default", only="all"
) -> dict:
    """Run the sections of ``config`` (``only``: ``"all"``, ``"newton"`` or ``"linear"``) on
    ``device`` at ``precision``; write ``results.json``, the CSVs and ``summary.md``."""
    results = start(config, device)
    results["precision"] = set_precision(precision)
    results["dtype"] = "float32"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if only in ("all", "newton"):
        results["newton"] = newton_rows(config)
        _write_csv(out_dir / "newton.csv", results["newton"])
    if only in ("all", "linear"):
        results["linear"] = linear_rows(config)
        _write_csv(out_dir / "linear.csv", results["linear"])
    path = write_json(out_dir, results)
    write_summary(out_dir, "Parallel in time: regimes", report.markdown(results))
    logger.info("wrote %s", path)
    return results


def main(argv=None):
    def extra(parser):
        parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
        parser.add_argument("--precision", choices=PRECISIONS, default="default")
        parser.add_argument("--only", choices=("all", "newton", "linear"), default="all")

    args = parse_args("benchmarks_parallel", __doc__, argv, extra=extra)
    run(pick_size(SIZES, args), args.out, args.device, args.precision, args.only)


if __name__ == "__main__":
    main()
