"""The seed's architecture table, measured: parameters, time per step and BPTT memory.

For a vanilla RNN, an LSTM and a GRU (``rnnjax`` cells over ``rnnjax.scan``, batched with ``vmap``)
and a single-head self-attention layer of the same width (``softmax(Q K^T / sqrt(H)) V`` followed by
an output projection, written here in ``jax.numpy``), all with input width ``D = H``:

* parameter count (RNN ``H(D + H + 1)``, LSTM 4x, GRU 3x, attention ``4H^2 + 4H``);
* time per sequence step of a jitted forward + backward pass (``jax.grad`` of a sum of squares),
  median of several calls, divided by ``T``;
* the temporary memory XLA plans for that backward pass (``compiled.memory_analysis()``), for ``T``
  in a sweep, and its growth exponent ``d log(memory) / d log(T)`` between the two longest ``T``:
  about 1 for the recurrent cells (BPTT stores one state per step), about 2 for attention
  (the ``T x T`` score matrix).

    python -m experiments.architecture_tradeoffs [--quick | --full] [--out DIR]
"""

import math
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
from experiments import _common

SIZES = {
    "quick": {
        "hidden_size": 16,
        "batch_size": 4,
        "lengths": (16, 32, 64),
        "timing_length": 32,
        "repeats": 2,
    },
    "default": {
        "hidden_size": 64,
        "batch_size": 8,
        "lengths": (64, 128, 256, 512, 1024),
        "timing_length": 256,
        "repeats": 5,
    },
    "full": {
        "hidden_size": 256,
        "batch_size": 32,
        "lengths": (128, 256, 512, 1024, 2048, 4096),
        "timing_length": 1024,
        "repeats": 20,
    },
}
MODELS = ("simple_rnn", "lstm", "gru", "self_attention")
GATES = {"simple_rnn": 0, "lstm": 4, "gru": 3, "self_attention": 0}


def attention_init(key: jax.Array, hidden_size: int) -> dict:
    """Single-head self-attention parameters: ``w_q, w_k, w_v, w_o [H, H]`` and biases ``[H]``."""
    keys = jax.random.split(key, 4)
    scale = 1.0 / math.sqrt(hidden_size)
    params = {}
    for name, k in zip(("q", "k", "v", "o"), keys, strict=True):
        params[f"w_{name}"] = scale * jax.random.normal(k, (hidden_size, hidden_size))
        params[f"b_{name}"] = jnp.zeros(hidden_size)
    return params


def attention_apply(params: dict, x: jax.Array) -> jax.Array:
    """``[B, T, H] -> [B, T, H]``: ``softmax(Q K^T / sqrt(H)) V W_o`` (no mask, one head)."""

    def project(name):
        return x @ params[f"w_{name}"] + params[f"b_{name}"].reshape(1, 1, -1)

    q, k, v = project("q"), project("k"), project("v")
    scores = jnp.einsum("btd,bsd->bts", q, k) / math.sqrt(x.shape[-1])
    mixed = jnp.einsum("bts,bsd->btd", jax.nn.softmax(scores, axis=-1), v)
    return mixed @ params["w_o"] + params["b_o"].reshape(1, 1, -1)


def build(name: str, hidden_size: int, key: jax.Array):
    """``(params, apply)`` with ``apply(params, x [B, T, H]) -> [B, T, H]``."""
    if name == "self_attention":
        return attention_init(key, hidden_size), attention_apply
    cell = getattr(rnnjax, name)(hidden_size)

    def apply(params, x):
        return jax.vmap(lambda xs: rnnjax.scan(cell, params, xs)[1])(x)

    return cell.init(key, hidden_size), apply


def _grad_fn(apply):
    return jax.jit(jax.grad(lambda params, x: jnp.sum(apply(params, x) ** 2)))


def measure(config: dict) -> dict:
    hidden, batch = config["hidden_size"], config["batch_size"]
    key = jax.random.key(config["seed"])
    results = {}
    jobs = [(name, length) for name in MODELS for length in config["lengths"]]
    bar = _common.progress(range(len(jobs) + len(MODELS)), "architecture_tradeoffs")
    for name in MODELS:
        params, apply = build(name, hidden, key)
        grad = _grad_fn(apply)
        memory = {}
        for length in config["lengths"]:
            x = jax.ShapeDtypeStruct((batch, length, hidden), jnp.float32)
            stats = grad.lower(params, x).compile().memory_analysis()
            memory[length] = int(stats.temp_size_in_bytes)
            bar.update()
        x = jax.random.normal(key, (batch, config["timing_length"], hidden))
        jax.block_until_ready(grad(params, x))  # compile and warm up
        times = []
        for _ in range(config["repeats"]):
            start = time.perf_counter()
            jax.block_until_ready(grad(params, x))
            times.append(time.perf_counter() - start)
        bar.update()
        lengths = sorted(memory)
        growth = math.log(memory[lengths[-1]] / memory[lengths[-2]]) / math.log(
            lengths[-1] / lengths[-2]
        )
        results[name] = {
            "num_gates": GATES[name],
            "parameters": int(sum(leaf.size for leaf in jax.tree.leaves(params))),
            "microseconds_per_step": 1e6 * float(np.median(times)) / config["timing_length"],
            "bptt_temp_bytes": memory,
            "memory_growth_exponent": growth,
        }
    bar.close()
    return results


def plot(results: dict, lengths):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, r in results.items():
        memory = [r["bptt_temp_bytes"][t] / 2**20 for t in lengths]
        axes[0].plot(
            lengths, memory, "o-", label=f"{name} (slope {r['memory_growth_exponent']:.2f})"
        )
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("sequence length T")
    axes[0].set_ylabel("XLA temporary memory of forward+backward (MiB)")
    axes[0].set_title("BPTT memory against T")
    axes[0].legend(fontsize=8)
    axes[0].grid(True, alpha=0.3)
    names = list(results)
    axes[1].bar(
        names, [results[n]["microseconds_per_step"] for n in names], color=["C0", "C1", "C2", "C3"]
    )
    axes[1].set_ylabel("forward+backward time per step (us)")
    axes[1].set_title("time per sequence step (CPU, median)")
    fig.tight_layout()
    return fig


def run(config: dict, out_dir) -> dict:
    results = measure(config)
    lengths = list(config["lengths"])
    _common.save_figure(plot(results, lengths), out_dir, "architecture_tradeoffs.png")
    rows = [
        [
            name,
            r["num_gates"],
            r["parameters"],
            r["microseconds_per_step"],
            r["bptt_temp_bytes"][lengths[-1]] / 2**20,
            r["memory_growth_exponent"],
        ]
        for name, r in results.items()
    ]
    table = _common.markdown_table(
        [
            "model",
            "gate blocks",
            "parameters",
            "us / step (fwd+bwd)",
            f"BPTT temp MiB at T={lengths[-1]}",
            "memory growth exponent",
        ],
        rows,
    )
    body = [
        f"H = D = {config['hidden_size']}, batch {config['batch_size']}; time at T = "
        f"{config['timing_length']} (median of {config['repeats']}), memory for T in {lengths}. "
        "Timings come from a shared CPU and are indicative only.",
        "",
        table,
        "",
        "![architecture trade-offs](architecture_tradeoffs.png)",
    ]
    _common.write_summary(out_dir, "Architecture trade-offs: RNN, LSTM, GRU, self-attention", body)
    _common.write_json(out_dir, {"config": config, "results": results})
    return results


def main(argv=None):
    args = _common.parse_args("architecture_tradeoffs", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
