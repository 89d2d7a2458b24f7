"""``||d s_t / d s_k||_2`` for every pair ``k <= t``: one heat map per cell type.

Each panel shows, for one random input sequence, how strongly the state at step ``k`` (x axis)
still moves the state at a later step ``t`` (y axis), on a log10 colour scale. The per-step
Jacobians ``d s_t / d s_{t-1}`` come from ``jax.jacfwd`` of the cell's own update
(:func:`rnnjax.jacobians.step_jacobians`) and are chained for every pair
(:func:`rnnjax.jacobians.pairwise_jacobians`). A vanishing-gradient cell has a thin bright band
along the diagonal; a cell that remembers has colour far below it. The state is ``h`` for the
RNN, GRU and RG-LRU, ``(h, c)`` for the LSTM and ``(Re h, Im h)`` for the LRU.

The linear recurrent units have closed forms to hold the measurement against: the LRU's entry
``[t, k]`` is ``max|lambda| ** (t - k)`` exactly, the RG-LRU's is ``max_i prod_{j=k+1}^t a_{j, i}``
with ``a_t = a^(c r_t)`` read off its gates along the sequence (bounded by
``(max_{j, i} a_{j, i}) ** (t - k)``).

    python -m experiments.jacobian_heatmap [--quick | --full] [--out DIR]
"""

import math

import jax
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
from experiments import _common
from rnnjax import jacobians
from rnnjax._rg_lru import rg_lru_coefficients

SIZES = {
    "quick": {"hidden_size": 8, "input_size": 4, "num_steps": 20},
    "default": {"hidden_size": 32, "input_size": 16, "num_steps": 60},
    "full": {"hidden_size": 128, "input_size": 64, "num_steps": 150},
}
LRU_RING = {"r_min": 0.9, "r_max": 0.999, "max_phase": math.pi / 10}


def configurations(hidden_size: int) -> list[dict]:
    """Panels: RNN at spectral radius 1.0 and 1.5 (chaotic), LSTM (forget bias 1), GRU, LRU
    (``hidden_size // 2`` complex modes on Orvieto et al.'s ring) and RG-LRU (Griffin's init)."""
    rnn = rnnjax.simple_rnn(hidden_size)
    lru = rnnjax.lru(max(1, hidden_size // 2), **LRU_RING)
    return [
        {"name": "rnn_rho1.0", "title": "tanh RNN, rho = 1.0", "cell": rnn, "rho": 1.0},
        {"name": "rnn_rho1.5", "title": "tanh RNN, rho = 1.5", "cell": rnn, "rho": 1.5},
        {
            "name": "lstm_fb1",
            "title": "LSTM, forget bias 1, (h, c)",
            "cell": rnnjax.lstm(hidden_size),
            "rho": None,
        },
        {"name": "gru", "title": "GRU", "cell": rnnjax.gru(hidden_size), "rho": None},
        {"name": "lru", "title": "LRU, |lambda| in [0.9, 0.999]", "cell": lru, "rho": None},
        {"name": "rg_lru", "title": "RG-LRU", "cell": rnnjax.rg_lru(hidden_size), "rho": None},
    ]


def analytic(cell, params, xs, rho: float | None = None) -> dict:
    """The closed form beside the measurement (``{}`` for the LSTM and GRU).

    ``analytic_rate`` is ``log rho`` (RNN, Pascanu's bound), ``log max|lambda|`` (LRU, exact) or
    ``log max_{t, i} a_t`` (RG-LRU, a bound); ``analytic_norms [T + 1, T + 1]`` are the LRU's and
    RG-LRU's exact norms for every pair (NaN above the diagonal).
    """
    steps = np.arange(xs.shape[0] + 1)
    lower = steps[None, :] <= steps[:, None]
    if cell.name == "simple_rnn":
        return {"analytic": "log rho (Pascanu bound)", "analytic_rate": math.log(rho)}
    if cell.name == "lru":
        rate = float(-np.exp(np.asarray(params.nu_log, np.float64)).min())  # log max|lambda|
        lags = np.where(lower, steps[:, None] - steps[None, :], 0)
        exact = np.where(lower, np.exp(rate * lags), np.nan)
        return {
            "analytic": "log max|lambda| (exact)",
            "analytic_rate": rate,
            "analytic_norms": exact,
        }
    if cell.name == "rg_lru":
        a, _ = rg_lru_coefficients(params, cell.project_inputs(params, xs), cell.config["c"])
        log_a = np.log(np.asarray(a, np.float64))  # [T, H]
        sums = np.concatenate([np.zeros((1, log_a.shape[1])), np.cumsum(log_a, axis=0)])
        exact = np.exp((sums[:, None, :] - sums[None, :, :]).max(-1))  # [t, k]: prod_{k<j<=t}
        return {
            "analytic": "log max a_t (bound)",
            "analytic_rate": float(log_a.max()),
            "analytic_norms": np.where(lower, exact, np.nan),
        }
    return {}


def measure(config: dict) -> dict:
    """The ``[T + 1, T + 1]`` norm matrix (NaN above the diagonal) per configuration."""
    key_params, key_inputs = jax.random.split(jax.random.key(config["seed"]))
    rng = np.random.default_rng(config["seed"])
    xs = rng.standard_normal((config["num_steps"], config["input_size"])).astype(np.float32)
    steps = np.arange(config["num_steps"] + 1)
    lower = steps[None, :] <= steps[:, None]
    results, compiled = {}, {}
    for entry in _common.progress(configurations(config["hidden_size"]), "jacobian_heatmap"):
        cell = entry["cell"]
        params = cell.init(key_params, config["input_size"])
        if entry["rho"] is not None:
            params = jacobians.with_spectral_radius(params, entry["rho"])
        if cell.name not in compiled:

            def products(params, xs, cell=cell):
                return jacobians.pairwise_jacobians(jacobians.step_jacobians(cell, params, xs))

            compiled[cell.name] = jax.jit(products)
        pairs = np.asarray(compiled[cell.name](params, xs), np.float64)
        norms = np.where(lower, np.linalg.norm(pairs, ord=2, axis=(-2, -1)), np.nan)
        by_lag = np.array([np.nanmean(np.diagonal(norms, -lag)) for lag in steps])
        result = {
            "title": entry["title"],
            "norms": norms,
            "mean_norm_by_lag": by_lag,
            "rate_per_step": float(jacobians.decay_rate(by_lag)),
            **analytic(cell, params, xs, entry["rho"]),
        }
        if "analytic_norms" in result:
            error = np.abs(norms / result["analytic_norms"] - 1.0)[lower]
            result["max_relative_error_vs_analytic"] = float(error.max())
        results[entry["name"]] = result
    return results


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}g}" if value else "0"


def plot(results: dict):
    columns = min(3, len(results))
    rows = math.ceil(len(results) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(results) :]:
        ax.set_visible(False)
    for ax, (_, r) in zip(axes.flat, results.items(), strict=False):
        with np.errstate(divide="ignore"):
            image = np.log10(r["norms"])
        shown = ax.imshow(
            image, origin="lower", cmap="magma", vmin=-8, vmax=4, interpolation="nearest"
        )
        title = f"{r['title']}\nrate {r['rate_per_step']:+.3g} / step"
        if "analytic_rate" in r:
            title += f"\n{r['analytic']}: {_signed(r['analytic_rate'], 3)}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("source step k")
    for ax in axes[:, 0]:
        ax.set_ylabel("target step t")
    fig.colorbar(shown, ax=axes, shrink=0.8, label="log10 ||d s_t / d s_k||_2")
    return fig


def run(config: dict, out_dir) -> dict:
    """Measure, plot and write ``results.json``, ``jacobian_heatmap.png`` and ``summary.md``."""
    results = measure(config)
    _common.save_figure(plot(results), out_dir, "jacobian_heatmap.png")
    rows = []
    for name, r in results.items():
        by_lag = r["mean_norm_by_lag"]
        at = {lag: by_lag[lag] if lag < len(by_lag) else float("nan") for lag in (1, 10, 50)}
        analytic_rate = _signed(r["analytic_rate"], 4) if "analytic_rate" in r else "-"
        rows.append(
            [name, r["rate_per_step"], analytic_rate, r.get("analytic", "-"), at[1], at[10], at[50]]
        )
    table = _common.markdown_table(
        [
            "configuration",
            "rate / step (mean over t)",
            "analytic rate",
            "analytic quantity",
            "mean norm, lag 1",
            "lag 10",
            "lag 50",
        ],
        rows,
    )
    body = [
        f"H = {config['hidden_size']}, D = {config['input_size']}, T = {config['num_steps']}, "
        "one N(0, 1) input sequence, zero initial state, float32. Entry [t, k] is "
        "||d s_t / d s_k||_2; the table averages each diagonal (fixed lag t - k) and fits its "
        "per-step rate. The LRU has H / 2 complex modes (H real state variables).",
        "",
        table,
        "",
        "Every entry of the LRU's map equals max|lambda|^(t - k) within "
        f"{results['lru']['max_relative_error_vs_analytic']:.1e} (relative); every entry of the "
        "RG-LRU's equals the product of its gates' a_j over k < j <= t (max over units) within "
        f"{results['rg_lru']['max_relative_error_vs_analytic']:.1e}.",
        "",
        "![jacobian heat maps](jacobian_heatmap.png)",
    ]
    _common.write_summary(out_dir, "Jacobian heat maps: ||d s_t / d s_k|| for all k <= t", body)
    summary = {
        name: {k: v for k, v in r.items() if k != "analytic_norms"} for name, r in results.items()
    }
    _common.write_json(out_dir, {"config": config, "results": summary})
    return results


def main(argv=None):
    args = _common.parse_args("jacobian_heatmap", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
