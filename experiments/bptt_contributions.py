r"""Which steps does the gradient hear? The seed's BPTT sum, term by term.

The gradient of a loss of the final state splits into one term per step,

.. math::
    \frac{\partial J_T}{\partial W_{hh}} = \sum_{k=1}^{T}
    \frac{\partial J_T}{\partial h_T} \frac{\partial h_T}{\partial h_k}
    \frac{\partial^+ h_k}{\partial W_{hh}},

(:func:`rnnjax.jacobians.bptt_terms`; for the LSTM ``h`` is the full state ``(h, c)``). This
experiment plots the Frobenius norm of each term against ``k`` for a tanh RNN at three spectral
radii, an LSTM (forget bias 1) and a GRU, with loss ``J_T = (h_T . v - 1)^2 / 2`` for a random
unit readout ``v``, and checks that the terms add up to ``jax.grad``'s answer. The "horizon" is the
number of final steps that carry 90% of the summed term norms.

    python -m experiments.bptt_contributions [--quick | --full] [--out DIR]
"""

import jax
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
from experiments import _common
from rnnjax import jacobians

SIZES = {
    "quick": {"hidden_size": 8, "input_size": 4, "num_steps": 20, "num_seeds": 2},
    "default": {"hidden_size": 32, "input_size": 16, "num_steps": 100, "num_seeds": 4},
    "full": {"hidden_size": 128, "input_size": 64, "num_steps": 300, "num_seeds": 16},
}


def configurations(hidden_size: int) -> list[dict]:
    rnn = rnnjax.simple_rnn(hidden_size)
    return [
        {"name": "rnn_rho0.8", "cell": rnn, "rho": 0.8},
        {"name": "rnn_rho1.0", "cell": rnn, "rho": 1.0},
        {"name": "rnn_rho1.2", "cell": rnn, "rho": 1.2},
        {"name": "lstm_fb1", "cell": rnnjax.lstm(hidden_size), "rho": None},
        {"name": "gru", "cell": rnnjax.gru(hidden_size), "rho": None},
    ]


def loss_of_final_state(cell, readout):
    """``J_T(s_T) = (h_T . v - 1)^2 / 2`` on the flattened final state (``h`` comes first)."""

    def loss(flat_state):
        return 0.5 * (flat_state[: cell.hidden_size] @ readout - 1.0) ** 2

    return loss


def contributions(cell, params, xs, readout):
    """Per-step terms of ``dJ_T / d w_h`` (``[T, H, G*H]``) and ``jax.grad``'s ``dJ_T / d w_h``."""
    loss = loss_of_final_state(cell, readout)
    final, _ = rnnjax.scan(cell, params, xs)
    cotangent = jax.grad(loss)(jacobians.flatten_state(final))
    terms = jacobians.bptt_terms(cell, params, xs, cotangent)

    def total(params):
        state, _ = rnnjax.scan(cell, params, xs)
        return loss(jacobians.flatten_state(state))

    return terms.w_h, jax.grad(total)(params).w_h


def horizon(term_norms: np.ndarray, share: float = 0.9) -> int:
    """The number of final steps whose term norms sum to ``share`` of the total."""
    from_end = np.cumsum(term_norms[::-1]) / term_norms.sum()
    return int(np.searchsorted(from_end, share) + 1)


def measure(config: dict) -> dict:
    hidden, steps, inputs = config["hidden_size"], config["num_steps"], config["input_size"]
    rng = np.random.default_rng(config["seed"])
    keys = jax.random.split(jax.random.key(config["seed"]), config["num_seeds"])
    data = [
        (
            rng.standard_normal((steps, inputs)).astype(np.float32),
            (lambda v: v / np.linalg.norm(v))(rng.standard_normal(hidden)).astype(np.float32),
        )
        for _ in keys
    ]
    results, compiled = {}, {}
    for entry in _common.progress(configurations(hidden), "bptt_contributions"):
        cell = entry["cell"]
        if cell.name not in compiled:
            compiled[cell.name] = jax.jit(lambda p, x, v, cell=cell: contributions(cell, p, x, v))
        norms, errors = [], []
        for key, (xs, readout) in zip(keys, data, strict=True):
            params = cell.init(key, inputs)
            if entry["rho"] is not None:
                params = jacobians.with_spectral_radius(params, entry["rho"])
            outputs = compiled[cell.name](params, xs, readout)
            terms, grad = (np.asarray(a, np.float64) for a in outputs)
            norms.append(np.linalg.norm(terms.reshape(steps, -1), axis=-1))
            scale = max(np.abs(grad).max(), 1e-30)
            errors.append(np.abs(terms.sum(0) - grad).max() / scale)
        norms = np.stack(norms)  # [seeds, T], index k - 1
        mean = norms.mean(0)
        results[entry["name"]] = {
            "term_norms": norms,
            "mean_term_norm": mean,
            "horizon_90": horizon(mean),
            "share_last_10_steps": float(mean[-10:].sum() / mean.sum()),
            "max_relative_error_vs_grad": float(max(errors)),
        }
    return results


def plot(results: dict, num_steps: int):
    fig, ax = plt.subplots(figsize=(7, 4.4))
    k = np.arange(1, num_steps + 1)
    for name, r in results.items():
        # Term 1 of dJ/dW_hh is exactly zero (h_0 = 0): leave it off the log axis.
        shown = np.where(r["mean_term_norm"] > 0, r["mean_term_norm"], np.nan)
        ax.plot(k, shown, label=f"{name} (90% from last {r['horizon_90']} steps)")
    ax.set_yscale("log")
    ax.set_xlabel("step k")
    ax.set_ylabel("||dJ_T/dh_T . dh_T/dh_k . d+h_k/dW_hh||_F")
    ax.set_title(f"BPTT terms of dJ_T/dW_hh (T = {num_steps}), mean over seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run(config: dict, out_dir) -> dict:
    results = measure(config)
    _common.save_figure(plot(results, config["num_steps"]), out_dir, "bptt_contributions.png")
    rows = [
        [name, r["horizon_90"], r["share_last_10_steps"], r["max_relative_error_vs_grad"]]
        for name, r in results.items()
    ]
    table = _common.markdown_table(
        [
            "configuration",
            "steps carrying 90%",
            "share of last 10 steps",
            "max abs(sum of terms - jax.grad) / max abs(grad)",
        ],
        rows,
    )
    body = [
        f"H = {config['hidden_size']}, D = {config['input_size']}, T = {config['num_steps']}, "
        f"{config['num_seeds']} seeds, N(0, 1) inputs, J_T = (h_T . v - 1)^2 / 2.",
        "",
        table,
        "",
        "![BPTT contributions](bptt_contributions.png)",
    ]
    _common.write_summary(out_dir, "BPTT contributions: which steps the gradient hears", body)
    _common.write_json(out_dir, {"config": config, "results": results})
    return results


def main(argv=None):
    args = _common.parse_args("bptt_contributions", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
