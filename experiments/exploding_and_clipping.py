"""Exploding gradients and norm clipping (Pascanu, Mikolov & Bengio 2013).

Part 1, the paper's one-unit network (section 2.3): ``x_t = w sigmoid(x_{t-1}) + b``, ``x_0 = 0.5``,
50 steps, loss ``(sigmoid(x_50) - 0.7)^2``. With ``h_t = sigmoid(x_t)`` this is
``h_t = sigmoid(w h_{t-1} + b)``, i.e. ``rnnjax.simple_rnn(1, jax.nn.sigmoid)`` with zero input and
``h_0 = sigmoid(0.5)``. Where the map's fixed point bifurcates the loss falls off a cliff and the
gradient is hundreds of times its typical size. Gradient descent (``optax.sgd``) from points near
the cliff is thrown across it; with ``optax.clip_by_global_norm`` every step is at most
``learning_rate * threshold`` long and the runs reach the valley.

Part 2, a tanh RNN with spectral radius ``rho > 1`` trained by SGD on a delayed-recall task
(predict ``x_{T - delay}`` at the last step) with and without ``optax.clip_by_global_norm``:
gradient-norm spikes and the loss curves.

    python -m experiments.exploding_and_clipping [--quick | --full] [--out DIR]
"""

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import rnnjax
from experiments import _common
from rnnjax import jacobians

SIZES = {
    "quick": {
        "grid": 121,
        "gd_steps": 30,
        "hidden_size": 8,
        "num_steps": 20,
        "batch_size": 8,
        "train_steps": 40,
    },
    "default": {
        "grid": 161,
        "gd_steps": 60,
        "hidden_size": 32,
        "num_steps": 50,
        "batch_size": 32,
        "train_steps": 300,
    },
    "full": {
        "grid": 401,
        "gd_steps": 200,
        "hidden_size": 128,
        "num_steps": 100,
        "batch_size": 64,
        "train_steps": 3000,
    },
}
UNIT = {
    "steps": 50,
    "x0": 0.5,
    "target": 0.7,
    "w_range": (0.0, 8.0),
    "b_range": (-5.0, 4.0),
    "starts": ((5.0, -2.2), (4.0, -3.0), (5.5, -2.8)),
    "learning_rate": 5.0,
    "threshold": 0.5,
}
RNN = {"rho": 1.5, "delay": 10, "learning_rate": 0.1, "threshold": 1.0}
NO_CLIPPING = float("inf")


def unit_loss(w_and_b: jax.Array) -> jax.Array:
    """The one-unit loss ``(h_50 - 0.7)^2`` of ``[w, b]``, computed by ``rnnjax.scan``."""
    cell = rnnjax.simple_rnn(1, jax.nn.sigmoid)
    params = rnnjax.RNNParams(jnp.zeros((1, 1)), w_and_b[0].reshape(1, 1), w_and_b[1].reshape(1))
    initial = rnnjax.RNNState(jax.nn.sigmoid(jnp.full((1,), UNIT["x0"])))
    final, _ = rnnjax.scan(cell, params, jnp.zeros((UNIT["steps"], 1)), initial_state=initial)
    return (final.h[0] - UNIT["target"]) ** 2


def descend(loss, start, learning_rate, threshold, num_steps):
    """SGD (optionally after global-norm clipping) from ``start``; ``threshold=inf`` disables it.

    Returns:
      ``(path [num_steps + 1, P], losses [num_steps], gradient_norms [num_steps])``, the gradient
      norms taken before clipping.
    """
    optimizer = optax.chain(optax.clip_by_global_norm(threshold), optax.sgd(learning_rate))

    def step(carry, _):
        params, opt_state = carry
        value, grad = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grad, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (params, value, optax.tree.norm(grad))

    carry = (start, optimizer.init(start))
    _, (path, losses, norms) = jax.lax.scan(step, carry, None, length=num_steps)
    return jnp.concatenate([start[None], path]), losses, norms


def single_unit(config: dict) -> dict:
    """The loss surface over ``(w, b)`` and SGD paths with and without clipping."""
    w = np.linspace(*UNIT["w_range"], config["grid"])
    b = np.linspace(*UNIT["b_range"], config["grid"])
    grid = np.stack(np.meshgrid(w, b), -1).reshape(-1, 2).astype(np.float32)
    losses, grads = jax.jit(jax.vmap(jax.value_and_grad(unit_loss)))(grid)
    grad_norm = np.linalg.norm(np.asarray(grads, np.float64), axis=-1)
    starts = jnp.asarray(UNIT["starts"], jnp.float32)
    thresholds = jnp.asarray([NO_CLIPPING, UNIT["threshold"]], jnp.float32)
    run = jax.jit(
        jax.vmap(
            jax.vmap(
                lambda s, t: descend(unit_loss, s, UNIT["learning_rate"], t, config["gd_steps"]),
                in_axes=(None, 0),
            ),
            in_axes=(0, None),
        )
    )
    paths, path_losses, _ = (np.asarray(a, np.float64) for a in run(starts, thresholds))
    step_lengths = np.linalg.norm(np.diff(paths, axis=2), axis=-1)  # [start, clip, step]
    return {
        "w": w,
        "b": b,
        "loss": np.asarray(losses).reshape(len(b), len(w)),
        "grad_norm": grad_norm.reshape(len(b), len(w)),
        "max_grad_norm": float(grad_norm.max()),
        "median_grad_norm": float(np.median(grad_norm)),
        "paths": {"unclipped": paths[:, 0], "clipped": paths[:, 1]},
        "final_loss": {"unclipped": path_losses[:, 0, -1], "clipped": path_losses[:, 1, -1]},
        "longest_step": {
            "unclipped": float(step_lengths[:, 0].max()),
            "clipped": float(step_lengths[:, 1].max()),
        },
        "step_limit": UNIT["learning_rate"] * UNIT["threshold"],
    }


def rnn_training(config: dict) -> dict:
    """Train a rho > 1 tanh RNN with and without clipping (one compilation, vmapped)."""
    hidden, steps, batch = config["hidden_size"], config["num_steps"], config["batch_size"]
    cell = rnnjax.simple_rnn(hidden)
    key_cell, key_readout, key_data = jax.random.split(jax.random.key(config["seed"]), 3)
    params = {
        "cell": jacobians.with_spectral_radius(cell.init(key_cell, 1), RNN["rho"]),
        "readout": jax.random.normal(key_readout, (hidden,)) / jnp.sqrt(hidden),
    }

    def loss(params, xs):
        final, _ = jax.vmap(lambda x: rnnjax.scan(cell, params["cell"], x))(xs)
        prediction = final.h @ params["readout"]
        return jnp.mean((prediction - xs[:, steps - RNN["delay"], 0]) ** 2)

    def train(threshold):
        def step(carry, key):
            params, opt_state = carry
            xs = jax.random.normal(key, (batch, steps, 1))
            value, grad = jax.value_and_grad(loss)(params, xs)
            updates, opt_state = optimizer.update(grad, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (
                value,
                optax.tree.norm(grad),
                optax.tree.norm(updates),
            )

        optimizer = optax.chain(
            optax.clip_by_global_norm(threshold), optax.sgd(RNN["learning_rate"])
        )
        keys = jax.random.split(key_data, config["train_steps"])
        _, history = jax.lax.scan(step, (params, optimizer.init(params)), keys)
        return history

    thresholds = jnp.asarray([NO_CLIPPING, RNN["threshold"]], jnp.float32)
    losses, grad_norms, update_norms = (
        np.asarray(a, np.float64) for a in jax.jit(jax.vmap(train))(thresholds)
    )
    names = ("unclipped", "clipped")
    results = {}
    for i, name in enumerate(names):
        tail = losses[i][-max(1, len(losses[i]) // 10) :]
        finite = np.isfinite(losses[i]) & np.isfinite(grad_norms[i])
        results[name] = {
            "loss": losses[i],
            "grad_norm": grad_norms[i],
            "update_norm": update_norms[i],
            "diverged": bool(not finite.all()),
            "first_non_finite_step": None if finite.all() else int(np.argmin(finite)),
            "final_loss": float(tail.mean()) if np.isfinite(tail).all() else float("nan"),
            "max_grad_norm": float(np.max(grad_norms[i][finite], initial=0.0)),
            "median_grad_norm": float(np.median(grad_norms[i][finite])),
            "max_update_norm": float(np.max(update_norms[i][finite], initial=0.0)),
        }
    return results


def plot(unit: dict, rnn: dict):
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    extent = [*UNIT["w_range"], *UNIT["b_range"]]
    shown = ax.imshow(unit["loss"], origin="lower", extent=extent, aspect="auto", cmap="viridis")
    fig.colorbar(shown, ax=ax, label="loss (h_50 - 0.7)^2")
    for i in range(len(UNIT["starts"])):
        for kind, style in (("unclipped", "r--o"), ("clipped", "w-o")):
            path = unit["paths"][kind][i]
            ax.plot(
                path[:, 0],
                path[:, 1],
                style,
                markersize=2.5,
                linewidth=1.2,
                label=kind if i == 0 else None,
            )
    ax.set_xlim(UNIT["w_range"])
    ax.set_ylim(UNIT["b_range"])
    ax.set_xlabel("w")
    ax.set_ylabel("b")
    ax.set_title(
        f"one unit, 50 steps: SGD lr {UNIT['learning_rate']}, clip {UNIT['threshold']}\n"
        f"max |grad| {unit['max_grad_norm']:.3g} vs median {unit['median_grad_norm']:.2g}",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper right")
    for name, color in (("unclipped", "C3"), ("clipped", "C0")):
        r = rnn[name]
        axes[1].plot(r["loss"], color=color, label=name, linewidth=1.0)
        axes[2].plot(r["grad_norm"], color=color, label=name, linewidth=1.0)
    axes[2].axhline(RNN["threshold"], color="k", linestyle=":", label="clip threshold")
    for ax, label in ((axes[1], "training loss (MSE)"), (axes[2], "global gradient norm")):
        ax.set_yscale("log")
        ax.set_xlabel("SGD step")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_title(
        f"tanh RNN, rho = {RNN['rho']}, delayed recall ({RNN['delay']} steps)", fontsize=9
    )
    axes[2].set_title("gradient norm before clipping (missing: non-finite)", fontsize=9)
    fig.tight_layout()
    return fig


def run(config: dict, out_dir) -> dict:
    """Both parts; writes ``results.json``, ``exploding_and_clipping.png`` and ``summary.md``."""
    stages = _common.progress(range(2), "exploding_and_clipping")
    unit = single_unit(config)
    stages.update()
    rnn = rnn_training(config)
    stages.update()
    stages.close()
    _common.save_figure(plot(unit, rnn), out_dir, "exploding_and_clipping.png")
    rows = [
        [
            kind,
            unit["longest_step"][kind],
            float(np.mean(unit["final_loss"][kind])),
            rnn[kind]["max_grad_norm"],
            rnn[kind]["max_update_norm"],
            f"diverged at step {rnn[kind]['first_non_finite_step']}"
            if rnn[kind]["diverged"]
            else rnn[kind]["final_loss"],
        ]
        for kind in ("unclipped", "clipped")
    ]
    table = _common.markdown_table(
        [
            "SGD",
            "one unit: longest step",
            "one unit: mean final loss",
            "RNN: max finite grad norm",
            "RNN: longest update",
            "RNN: final loss (last 10%)",
        ],
        rows,
    )
    body = [
        f"One unit: {config['grid']}^2 grid over w in {UNIT['w_range']}, b in {UNIT['b_range']}; "
        f"the largest gradient norm is {unit['max_grad_norm']:.4g}, the median "
        f"{unit['median_grad_norm']:.3g} (the cliff). SGD with learning rate "
        f"{UNIT['learning_rate']} for {config['gd_steps']} steps from {list(UNIT['starts'])}; "
        f"clipping at {UNIT['threshold']} caps every step at {unit['step_limit']}.",
        "",
        f"RNN: H = {config['hidden_size']}, T = {config['num_steps']}, batch "
        f"{config['batch_size']}, spectral radius {RNN['rho']}, SGD lr {RNN['learning_rate']}, "
        f"{config['train_steps']} steps, clip threshold {RNN['threshold']}.",
        "",
        table,
        "",
        "![exploding gradients and clipping](exploding_and_clipping.png)",
    ]
    _common.write_summary(out_dir, "Exploding gradients and gradient-norm clipping", body)
    # The loss surface is in the figure; the JSON keeps its summary numbers and the paths.
    surface_free = {k: v for k, v in unit.items() if k not in ("loss", "grad_norm", "w", "b")}
    _common.write_json(
        out_dir,
        {
            "config": config,
            "unit_setup": UNIT,
            "rnn_setup": RNN,
            "single_unit": surface_free,
            "rnn": rnn,
        },
    )
    return {"single_unit": unit, "rnn": rnn}


def main(argv=None):
    args = _common.parse_args("exploding_and_clipping", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
