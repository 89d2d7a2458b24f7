"""Vanishing and exploding gradients: ``||d s_T / d s_k||_2`` against the lag ``T - k``.

For a vanilla tanh RNN whose orthogonal ``W_hh`` is scaled to spectral radius ``rho`` in
{0.5, 0.8, 1.0, 1.2, 1.5}, an LSTM with forget bias 0 and 1, a GRU (seed convention), an LRU on
two rings of ``|lambda|`` and an RG-LRU (Griffin's initialisation), the state Jacobian
``d s_T / d s_k`` is computed by reverse-mode autodiff through ``rnnjax.scan``
(:func:`rnnjax.jacobians.state_jacobians`) on random ``N(0, 1)`` input sequences, for several
seeds at once (``jit`` + ``vmap``). The state is ``h`` for the RNN, GRU and RG-LRU, ``(h, c)`` for
the LSTM (the full ``[2H, 2H]`` Jacobian; the ``h``-block rate is reported too) and
``(Re h, Im h)`` for the LRU. For each configuration the per-step decay rate is the least-squares
slope of ``log ||d s_T / d s_k||`` against the lag, drawn against an analytic rate:

* RNN: Pascanu et al. (2013)'s bound ``(gamma * sigma_max(W_hh)) ** (T - k)`` with ``gamma = 1``
  for tanh, i.e. rate ``log(rho)`` (an upper bound).
* LRU: ``d h_T / d h_k = diag(lambda^(T-k))``, so the norm is ``max|lambda| ** (T - k)`` and the
  rate is ``log max|lambda| = -min exp(nu_log)`` exactly.
* RG-LRU: ``d h_T / d h_k = diag(a_{k+1} ... a_T)`` with ``a_t = a^(c r_t)`` set by the input's
  gate, so the rate depends on the input. ``log max_{t, i} a_t`` over the trajectory bounds it
  from above; the products of the gates' ``a_t`` themselves give the exact norms, fitted alike.

    python -m experiments.gradient_decay [--quick | --full] [--out DIR]
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
from experiments import _common
from rnnjax import jacobians
from rnnjax._rg_lru import rg_lru_coefficients

SIZES = {
    "quick": {"hidden_size": 16, "input_size": 4, "num_steps": 30, "num_seeds": 3},
    "default": {"hidden_size": 64, "input_size": 16, "num_steps": 100, "num_seeds": 8},
    "full": {
        "hidden_size": 256,
        "input_size": 64,
        "num_steps": 300,
        "num_seeds": 32,
        "seed_chunk": 2,
    },
}
RHOS = (0.5, 0.8, 1.0, 1.2, 1.5)
LRU_RINGS = ((0.9, 0.999), (0.5, 0.9))
"""``(r_min, r_max)`` of the LRU's ring: Orvieto et al.'s long-range ring and a faster one."""
LRU_MAX_PHASE = math.pi / 10
INPUT_SCALE = 1.0
STATES = {"lstm": "(h, c)", "lru": "(Re h, Im h)"}
ANALYTIC = {
    "simple_rnn": "log rho (Pascanu bound)",
    "lru": "log max|lambda| (exact)",
    "rg_lru": "log max a_t (bound)",
}


def configurations(hidden_size: int) -> list[dict]:
    """The cells compared: name, cell, and ``rho`` (RNN only).

    The LRU gets ``hidden_size // 2`` complex modes: ``hidden_size`` real state variables, as
    many as the RNN's, GRU's and RG-LRU's ``h``.
    """
    cell = rnnjax.simple_rnn(hidden_size)
    rnn = [{"name": f"rnn_rho{rho}", "cell": cell, "rho": rho} for rho in RHOS]
    gated = [
        {"name": "lstm_fb0", "cell": rnnjax.lstm(hidden_size, forget_bias=0.0), "rho": None},
        {"name": "lstm_fb1", "cell": rnnjax.lstm(hidden_size, forget_bias=1.0), "rho": None},
        {"name": "gru", "cell": rnnjax.gru(hidden_size), "rho": None},
    ]
    linear = [
        {
            "name": f"lru_r{r_min}-{r_max}",
            "cell": rnnjax.lru(max(1, hidden_size // 2), r_min, r_max, LRU_MAX_PHASE),
            "rho": None,
        }
        for r_min, r_max in LRU_RINGS
    ]
    linear.append({"name": "rg_lru", "cell": rnnjax.rg_lru(hidden_size), "rho": None})
    return rnn + gated + linear


def _log_stats(norms: np.ndarray) -> dict:
    """Geometric mean and 10/90% quantiles over seeds, ignoring underflowed (zero) norms."""
    logs = np.where(norms > 0, np.log(np.where(norms > 0, norms, 1.0)), np.nan)
    return {
        "geometric_mean": np.exp(np.nanmean(logs, axis=0)),
        "q10": np.exp(np.nanquantile(logs, 0.1, axis=0)),
        "q90": np.exp(np.nanquantile(logs, 0.9, axis=0)),
    }


def _spectral_norms(matrices) -> np.ndarray:
    """Spectral norms in NumPy (float64): faster to start than a compiled SVD for one call."""
    return np.linalg.norm(np.asarray(matrices, np.float64), ord=2, axis=(-2, -1))


def draw(config: dict, entry: dict):
    """Per-seed float64 ``params`` (leaves stacked ``[seeds, ...]``) and inputs ``[seeds, T, D]``.

    Call under ``jax.enable_x64(True)``.
    """
    cell, rho = entry["cell"], entry["rho"]
    key_params, key_inputs = jax.random.split(jax.random.key(config["seed"]))
    seeds, steps, inputs = config["num_seeds"], config["num_steps"], config["input_size"]
    params = jax.vmap(lambda key: cell.init(key, inputs))(jax.random.split(key_params, seeds))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    if rho is not None:
        scaled = [
            jacobians.with_spectral_radius(jax.tree.map(lambda a, i=i: a[i], params), rho)
            for i in range(seeds)
        ]
        params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *scaled)
    xs = INPUT_SCALE * jax.random.normal(key_inputs, (seeds, steps, inputs), jnp.float64)
    return params, xs


def _seed_norms(config: dict, cell, params, xs, jacobian_fn) -> tuple[np.ndarray, np.ndarray]:
    """Norms by lag ``[seeds, T + 1]``: the full state and the ``h`` block."""
    hidden, chunk = cell.hidden_size, config.get("seed_chunk", config["num_seeds"])
    full, h_block = [], []
    for start in range(0, config["num_seeds"], chunk):
        part = jax.tree.map(lambda a, s=start: a[s : s + chunk], params)
        jac = np.asarray(jacobian_fn(part, xs[start : start + chunk]))[:, ::-1]  # by lag
        full.append(_spectral_norms(jac))
        h_block.append(_spectral_norms(jac[..., :hidden, :hidden]))
    return np.concatenate(full), np.concatenate(h_block)


def _rg_lru_decays(cell):
    """``a_t [seeds, T, H]`` of an RG-LRU from its own gate math, one compiled call."""

    def decays(params, xs):
        projected = cell.project_inputs(params, xs)
        return rg_lru_coefficients(params, projected, cell.config["c"])[0]

    return jax.jit(jax.vmap(decays))


def analytic(cell, params, xs, norms: np.ndarray, rho: float | None = None) -> dict:
    """The analytic side of one configuration's norms ``[seeds, T + 1]`` (``{}`` for LSTM, GRU).

    RNN: ``log_rho`` and Pascanu's bound by lag. LRU: ``analytic_rate_seeds [seeds]``
    ``= log max|lambda|`` and the norms it gives exactly. RG-LRU: ``log max_{t, i} a_t`` (a bound)
    and ``gate_product_norms``, ``max_i prod_{j > T - lag} a_{j, i}`` from its own gates.
    """
    lags = np.arange(norms.shape[-1])
    if cell.name == "simple_rnn":
        sigma = _spectral_norms(params.w_h)  # = rho: W_hh is a scaled orthogonal matrix
        bound = sigma[:, None] ** lags[None]  # gamma = 1: tanh' <= 1
        return {
            "analytic": ANALYTIC[cell.name],
            "analytic_rate": math.log(rho),
            "log_rho": math.log(rho),
            "sigma_max": float(sigma.mean()),
            "pascanu_bound": bound,
            "within_bound": bool(np.all(norms <= bound * (1 + 1e-4))),
        }
    if cell.name == "lru":
        rates = -np.exp(np.asarray(params.nu_log, np.float64)).min(-1)  # log|lambda| = -exp(nu)
        exact = np.exp(rates[:, None] * lags[None])
        return {
            "analytic": ANALYTIC[cell.name],
            "analytic_rate": float(rates.mean()),
            "analytic_rate_seeds": rates,
            "analytic_norms": exact,
            "max_relative_error_vs_analytic": float(np.max(np.abs(norms / exact - 1.0))),
        }
    if cell.name == "rg_lru":
        log_a = np.log(np.asarray(_rg_lru_decays(cell)(params, xs), np.float64))
        rates = log_a.max(axis=(1, 2))  # [seeds]: log max_{t, i} a_t
        by_lag = np.cumsum(log_a[:, ::-1], axis=1).max(-1)  # max_i sum of the last `lag` logs
        gates = np.exp(np.concatenate([np.zeros_like(by_lag[:, :1]), by_lag], axis=1))
        return {
            "analytic": ANALYTIC[cell.name],
            "analytic_rate": float(rates.mean()),
            "analytic_rate_seeds": rates,
            "gate_product_norms": gates,
            "gate_product_rate": float(jacobians.decay_rate(_log_stats(gates)["geometric_mean"])),
            "max_relative_error_vs_gate_product": float(np.max(np.abs(norms / gates - 1.0))),
        }
    return {}


def measure(config: dict) -> dict:
    """Norms by lag for every configuration; returns ``{name: {...}}`` of NumPy arrays/floats.

    Computed in float64 so that norms of ``rho = 0.5`` at lag 100 (~1e-40) do not underflow.
    """
    with jax.enable_x64(True):
        return _measure(config)


def _measure(config: dict) -> dict:
    results, compiled = {}, {}
    for entry in _common.progress(configurations(config["hidden_size"]), "gradient_decay"):
        cell, rho = entry["cell"], entry["rho"]
        if cell.name not in compiled:  # one compilation per cell type (same update function)
            one = partial(jacobians.state_jacobians, cell)
            compiled[cell.name] = jax.jit(jax.vmap(lambda p, x, one=one: one(p, x)))
        params, xs = draw(config, entry)
        full, h_block = _seed_norms(config, cell, params, xs, compiled[cell.name])
        rates = np.asarray(jacobians.decay_rate(full))
        stats = _log_stats(full)
        result = {
            "cell": cell.name,
            "state": STATES.get(cell.name, "h"),
            "rho": rho,
            "norms_by_lag": full,
            "rate_per_step": float(jacobians.decay_rate(stats["geometric_mean"])),
            "rate_seeds": rates,
            "rate_seed_mean": float(np.nanmean(rates)),
            "rate_seed_std": float(np.nanstd(rates)),
            "half_life_steps": None,
            **stats,
            **analytic(cell, params, xs, full, rho),
        }
        if result["rate_per_step"] < 0:
            result["half_life_steps"] = math.log(2.0) / -result["rate_per_step"]
        if cell.name == "lstm":
            h_mean = _log_stats(h_block)["geometric_mean"]
            result["rate_h_block"] = float(jacobians.decay_rate(h_mean))
        if cell.name == "lru":
            error = np.abs(rates - result["analytic_rate_seeds"])
            result["max_rate_error_vs_analytic"] = float(error.max())
        results[entry["name"]] = result
    return results


def plot(results: dict, num_steps: int):
    """Three panels: the RNN rho sweep with Pascanu's bounds, the gated cells, the LRU family."""
    lags = np.arange(num_steps + 1)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.8))
    middle.sharey(left)
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(RHOS)))
    for color, rho in zip(colors, RHOS, strict=True):
        r = results[f"rnn_rho{rho}"]
        left.plot(
            lags,
            r["geometric_mean"],
            color=color,
            label=f"rho={rho}: rate {r['rate_per_step']:+.3f} (log rho {math.log(rho):+.3f})",
        )
        left.fill_between(lags, r["q10"], r["q90"], color=color, alpha=0.2)
        left.plot(lags, r["pascanu_bound"].mean(0), color=color, linestyle="--", linewidth=0.9)
    left.set_title("tanh RNN, orthogonal W_hh scaled to rho\n(dashed: Pascanu bound rho^(T-k))")
    gated = [
        ("rnn_rho1.0", "RNN rho=1.0", "k"),
        ("lstm_fb0", "LSTM forget bias 0", "C1"),
        ("lstm_fb1", "LSTM forget bias 1", "C3"),
        ("gru", "GRU", "C2"),
    ]
    for name, label, color in gated:
        r = results[name]
        middle.plot(
            lags, r["geometric_mean"], color=color, label=f"{label}: rate {r['rate_per_step']:+.3f}"
        )
        middle.fill_between(lags, r["q10"], r["q90"], color=color, alpha=0.2)
    middle.set_title("gated cells (LSTM: full (h, c) Jacobian)")
    floor = max(1e-300, min(np.nanmin(results["rnn_rho0.5"]["geometric_mean"]), 1e-3) / 10)
    left.set_ylim(floor, 1e12)
    _plot_linear(right, results, lags)
    for ax in (left, middle, right):
        ax.set_yscale("log")
        ax.set_xlabel("lag T - k (steps)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    left.set_ylabel("||d s_T / d s_k||_2 (geometric mean, 10-90% band)")
    fig.tight_layout()
    return fig


def _plot_linear(ax, results: dict, lags: np.ndarray) -> None:
    """The LRU family: measured (solid), exact norms (dashed) and the RG-LRU's bound (dotted)."""
    linear = [name for name, r in results.items() if r["cell"] in ("lru", "rg_lru")]
    for color, name in zip(("C0", "C4", "C5", "C6"), linear, strict=False):
        r = results[name]
        ax.plot(
            lags, r["geometric_mean"], color=color, label=f"{name}: rate {r['rate_per_step']:+.4f}"
        )
        ax.fill_between(lags, r["q10"], r["q90"], color=color, alpha=0.2)
        if r["cell"] == "lru":
            exact = _log_stats(r["analytic_norms"])["geometric_mean"]
            ax.plot(lags, exact, color="k", linestyle="--", linewidth=0.9)
        else:
            gates = _log_stats(r["gate_product_norms"])["geometric_mean"]
            ax.plot(lags, gates, color="k", linestyle="--", linewidth=0.9)
            ax.plot(lags, np.exp(r["analytic_rate"] * lags), color=color, linestyle=":")
    ax.set_title("LRU family (dashed: exact, from lambda or the gates;\ndotted: RG-LRU bound)")


def run(config: dict, out_dir) -> dict:
    """Measure, plot and write ``results.json``, ``gradient_decay.png`` and ``summary.md``."""
    results = measure(config)
    _common.save_figure(plot(results, config["num_steps"]), out_dir, "gradient_decay.png")
    rows = []
    for name, r in results.items():
        has = "analytic" in r
        rows.append(
            [
                name,
                r["state"],
                r["rate_per_step"],
                f"{r['rate_seed_std']:.2g}",
                (f"{r['analytic_rate']:+.4g}" if r["analytic_rate"] else "0") if has else "-",
                r["analytic"] if has else "-",
                r["half_life_steps"] if r["half_life_steps"] else "-",
            ]
        )
    table = _common.markdown_table(
        [
            "configuration",
            "state",
            "fitted rate / step",
            "seed std",
            "analytic rate",
            "analytic quantity",
            "half-life (steps)",
        ],
        rows,
    )
    lstm_h = results["lstm_fb1"]["rate_h_block"]
    lrus = [r for r in results.values() if r["cell"] == "lru"]
    rg = results["rg_lru"]
    body = [
        f"H = {config['hidden_size']}, D = {config['input_size']}, T = {config['num_steps']}, "
        f"{config['num_seeds']} seeds, inputs N(0, {INPUT_SCALE}^2), zero initial state, "
        "float64. Rate = least-squares slope of log ||d s_T / d s_k||_2 against the lag "
        "(geometric mean over seeds); the norm behaves like exp(rate * lag). The analytic rate "
        "is the mean over seeds.",
        "",
        table,
        "",
        f"The LSTM's hidden-only block d h_T / d h_k (c_k held fixed) decays at {lstm_h:+.4f} "
        "per step with forget bias 1. Every RNN norm lies under Pascanu's bound: "
        f"{all(r.get('within_bound', True) for r in results.values())}.",
        "",
        "LRU (N = H / 2 complex modes, rings of |lambda| as named, phases up to pi/10): "
        "d h_T / d h_k = diag(lambda^(T-k)), so the measured rate is log max|lambda| itself; "
        "per seed they differ by at most "
        f"{max(r['max_rate_error_vs_analytic'] for r in lrus):.1e}, and every norm equals "
        f"max|lambda|^(T-k) within {max(r['max_relative_error_vs_analytic'] for r in lrus):.1e} "
        "(relative).",
        "",
        "RG-LRU (Griffin's c = 8, a^c on [0.9, 0.999]): d h_T / d h_k = diag(a_{k+1} ... a_T) "
        "with a_t = a^(c r_t) chosen by the input's gate r_t, so no input-free rate exists. "
        f"log max a_t over the trajectory ({rg['analytic_rate']:+.3g}) bounds the rate from "
        "above; the products of the gates' own a_t fit to "
        f"{rg['gate_product_rate']:+.4g} per step (measured {rg['rate_per_step']:+.4g}; the "
        "autodiff norms equal the gate products within "
        f"{rg['max_relative_error_vs_gate_product']:.1e}).",
        "",
        "![gradient decay](gradient_decay.png)",
    ]
    _common.write_summary(out_dir, "Gradient decay: ||d s_T / d s_k|| against the lag", body)
    arrays = ("norms_by_lag", "pascanu_bound", "analytic_norms", "gate_product_norms")
    summary = {name: {k: v for k, v in r.items() if k not in arrays} for name, r in results.items()}
    _common.write_json(out_dir, {"config": config, "results": summary})
    return results


def main(argv=None):
    args = _common.parse_args("gradient_decay", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
