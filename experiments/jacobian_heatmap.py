"""``||d s_t / d s_k||_2`` for every pair ``k <= t``: one heat map per cell type.

Each panel shows, for one random input sequence, how strongly the state at step ``k`` (x axis)
still moves the state at a later step ``t`` (y axis), on a log10 colour scale. The per-step
Jacobians ``d s_t / d s_{t-1}`` come from ``jax.jacfwd`` of the cell's own update
(:func:`rnnjax.jacobians.step_jacobians`) and are chained for every pair
(:func:`rnnjax.jacobians.pairwise_jacobians`). A vanishing-gradient cell has a thin bright band
along the diagonal; a cell that remembers has colour far below it. The state is ``h`` for the RNN
and GRU and ``(h, c)`` for the LSTM.

    python -m experiments.jacobian_heatmap [--quick | --full] [--out DIR]
"""

import jax
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
from experiments import _common
from rnnjax import jacobians

SIZES = {
    "quick": {"hidden_size": 8, "input_size": 4, "num_steps": 20},
    "default": {"hidden_size": 32, "input_size": 16, "num_steps": 60},
    "full": {"hidden_size": 128, "input_size": 64, "num_steps": 150},
}


def configurations(hidden_size: int) -> list[dict]:
    """Panels: RNN at spectral radius 1.0 and 1.5 (chaotic), LSTM (forget bias 1), GRU."""
    rnn = rnnjax.simple_rnn(hidden_size)
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
    ]


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
        results[entry["name"]] = {
            "title": entry["title"],
            "norms": norms,
            "mean_norm_by_lag": by_lag,
            "rate_per_step": float(jacobians.decay_rate(by_lag)),
        }
    return results


def plot(results: dict):
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.0))
    axes = np.atleast_1d(axes)
    for ax, (_, r) in zip(axes, results.items(), strict=True):
        with np.errstate(divide="ignore"):
            image = np.log10(r["norms"])
        shown = ax.imshow(
            image, origin="lower", cmap="magma", vmin=-8, vmax=4, interpolation="nearest"
        )
        ax.set_title(f"{r['title']}\nrate {r['rate_per_step']:+.3f} / step", fontsize=9)
        ax.set_xlabel("source step k")
    axes[0].set_ylabel("target step t")
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
        rows.append([name, r["rate_per_step"], at[1], at[10], at[50]])
    table = _common.markdown_table(
        ["configuration", "rate / step (mean over t)", "mean norm, lag 1", "lag 10", "lag 50"], rows
    )
    body = [
        f"H = {config['hidden_size']}, D = {config['input_size']}, T = {config['num_steps']}, "
        "one N(0, 1) input sequence, zero initial state. Entry [t, k] is ||d s_t / d s_k||_2; the "
        "table averages each diagonal (fixed lag t - k) and fits its per-step rate.",
        "",
        table,
        "",
        "![jacobian heat maps](jacobian_heatmap.png)",
    ]
    _common.write_summary(out_dir, "Jacobian heat maps: ||d s_t / d s_k|| for all k <= t", body)
    _common.write_json(out_dir, {"config": config, "results": results})
    return results


def main(argv=None):
    args = _common.parse_args("jacobian_heatmap", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
