"""Long-range dependencies: the adding and copy-memory tasks, from the tanh RNN to the LRU family.

* Adding problem (Hochreiter & Schmidhuber 1997; setup of Le et al. 2015): inputs ``[T, 2]``,
  channel 0 values ``U(0, 1)``, channel 1 a marker with two ones (one in each half of the
  sequence); the target is the sum of the two marked values. Always predicting 1 gives MSE
  ``1/6 = 0.167``, the baseline.
* Copy memory (Arjovsky et al. 2016): 10 symbols from {1..8}, then ``T - 1`` blanks (0), a
  delimiter (9) and 10 blanks, one-hot ``[T + 20, 10]``; the target is ``T + 10`` blanks followed
  by the 10 symbols. Predicting blanks and then uniform symbols gives cross-entropy
  ``10 log 8 / (T + 20)``, the baseline.

Each cell (tanh ``simple_rnn``, ``lstm``, ``gru``, ``min_gru``, ``lru``, ``rg_lru``; one dense
readout) is trained with ``optax.adam`` after ``optax.clip_by_global_norm(1)`` for several seeds at
once (``vmap``), for each ``T`` in the sweep. The LRU is a linear map of its inputs, so it reads
them through a ReLU dense layer of width ``H`` (the paper puts nonlinear per-step maps around its
recurrence too; the gated cells multiply gates by inputs themselves); its ring is
``|lambda| in [0.9, 0.999]``, phases in ``[0, pi / 10]`` (the paper's long-range setting). The
linear recurrences train through their exact associative scans (``parallel_minimal_scan``,
``parallel_linear_scan``), the others through ``rnnjax.scan``. Each (task, cell, T) costs one XLA
compilation of the training loop. Reported: final test loss / baseline (a run "succeeds" when it
is below ``SUCCESS_RATIO``) and the fitted Jacobian decay rate of each trained model on a test
sequence (:func:`rnnjax.jacobians.state_jacobians`; LSTM state ``(h, c)``, LRU state
``(Re h, Im h)``, whose rate is bounded by ``log max|lambda|``, also reported). The default runs
``T`` in {100, 1000} with a small ``H`` and a few hundred steps (about ten minutes on two cores);
``--full`` is paper-scale (10k steps).

    python -m experiments.long_dependencies [--quick | --full] [--out DIR]
"""

import math

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import rnnjax
from experiments import _common
from rnnjax import jacobians
from rnnjax._linear_scan import parallel_linear_scan
from rnnjax._lru import lru, lru_lambda
from rnnjax._rg_lru import rg_lru

SIZES = {
    "quick": {
        "lengths": (5,),
        "hidden_size": 8,
        "num_seeds": 2,
        "train_steps": 30,
        "batch_size": 16,
        "learning_rate": 1e-2,
    },
    "default": {
        "lengths": (100, 1000),
        "hidden_size": 16,
        "num_seeds": 2,
        "train_steps": 500,
        "batch_size": 16,
        "learning_rate": 1e-2,
    },
    "full": {
        "lengths": (100, 200, 500, 1000),
        "hidden_size": 128,
        "num_seeds": 5,
        "train_steps": 10_000,
        "batch_size": 50,
        "learning_rate": 1e-3,
    },
}
CELLS = ("simple_rnn", "lstm", "gru", "min_gru", "lru", "rg_lru")
TASKS = ("adding", "copy")
SUCCESS_RATIO = 0.1
TEST_BATCH = 256
SYMBOLS, COPY_LENGTH = 8, 10
LRU_RING = {"r_min": 0.9, "r_max": 0.999, "max_phase": math.pi / 10}


def make_cell(name: str, hidden_size: int):
    """The cell called ``name`` with ``hidden_size`` units (the LRU on its long-range ring)."""
    if name == "lru":
        return lru(hidden_size, **LRU_RING)
    if name == "rg_lru":
        return rg_lru(hidden_size)
    return getattr(rnnjax, name)(hidden_size)


def _runner(cell):
    """The exact parallel scan for the linear recurrences, ``rnnjax.scan`` for the others."""
    if cell.name in ("lru", "rg_lru"):
        return parallel_linear_scan
    if cell.name == "min_gru":
        return rnnjax.parallel_minimal_scan
    return rnnjax.scan


def adding_batch(key: jax.Array, batch_size: int, length: int):
    """Adding-problem inputs ``[B, T, 2]`` and targets ``[B]``."""
    key_values, key_first, key_second = jax.random.split(key, 3)
    values = jax.random.uniform(key_values, (batch_size, length))
    half = length // 2
    first = jax.random.randint(key_first, (batch_size,), 0, half)
    second = jax.random.randint(key_second, (batch_size,), half, length)
    steps = jnp.arange(length)[None, :]
    markers = ((steps == first[:, None]) | (steps == second[:, None])).astype(values.dtype)
    return jnp.stack([values, markers], axis=-1), jnp.sum(values * markers, axis=-1)


def copy_batch(key: jax.Array, batch_size: int, length: int):
    """Copy-memory one-hot inputs ``[B, T + 20, 10]`` and integer targets ``[B, T + 20]``."""
    symbols = jax.random.randint(key, (batch_size, COPY_LENGTH), 1, SYMBOLS + 1)
    blanks = jnp.zeros((batch_size, length - 1), symbols.dtype)
    delimiter = jnp.full((batch_size, 1), SYMBOLS + 1, symbols.dtype)
    tail = jnp.zeros((batch_size, COPY_LENGTH), symbols.dtype)
    sequence = jnp.concatenate([symbols, blanks, delimiter, tail], axis=1)
    targets = jnp.concatenate(
        [jnp.zeros((batch_size, length + COPY_LENGTH), symbols.dtype), symbols], axis=1
    )
    return jax.nn.one_hot(sequence, SYMBOLS + 2), targets


def baseline(task: str, length: int) -> float:
    """Loss of the best input-independent guess: MSE 1/6, or ``10 log 8 / (T + 20)``."""
    if task == "adding":
        return 1.0 / 6.0
    return COPY_LENGTH * math.log(SYMBOLS) / (length + 2 * COPY_LENGTH)


def _model(cell, task):
    outputs = 1 if task == "adding" else SYMBOLS + 1
    make_batch = adding_batch if task == "adding" else copy_batch
    hidden, run = cell.hidden_size, _runner(cell)
    encoded = cell.name == "lru"  # a linear recurrence on linear inputs cannot multiply them

    def init(key, input_size):
        key_cell, key_readout, key_encoder = jax.random.split(key, 3)
        scale = 1.0 / math.sqrt(hidden)
        readout = scale * jax.random.normal(key_readout, (hidden, outputs))
        params = {"w": readout, "b": jnp.zeros(outputs)}
        if encoded:
            w_in = jax.random.normal(key_encoder, (input_size, hidden)) / math.sqrt(input_size)
            params["encoder"] = {"w": w_in, "b": jnp.zeros(hidden)}
            input_size = hidden
        return {"cell": cell.init(key_cell, input_size), **params}

    def cell_inputs(params, xs):
        """The sequence the cell reads: ``xs``, or the LRU's ReLU encoding of it."""
        if not encoded:
            return xs
        encoder = params["encoder"]
        return jax.nn.relu(xs @ encoder["w"] + encoder["b"].reshape((1,) * (xs.ndim - 1) + (-1,)))

    def loss(params, xs, targets):
        _, ys = jax.vmap(lambda x: run(cell, params["cell"], x))(cell_inputs(params, xs))
        if task == "adding":
            prediction = ys[:, -1] @ params["w"][:, 0] + params["b"][0]
            return jnp.mean((prediction - targets) ** 2)
        logits = ys @ params["w"] + params["b"].reshape(1, 1, outputs)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))

    return init, loss, make_batch, cell_inputs


def train_seeds(cell, task: str, length: int, config: dict):
    """Train ``num_seeds`` models at once; returns test losses, loss curves, the Jacobian decay
    rates of the trained models and, for the LRU, their ``log max|lambda|``."""
    init, loss, make_batch, cell_inputs = _model(cell, task)
    input_size = 2 if task == "adding" else SYMBOLS + 2
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config["learning_rate"]))

    def one_seed(key):
        key_init, key_data, key_test = jax.random.split(key, 3)
        params = init(key_init, input_size)

        def step(carry, key):
            params, opt_state = carry
            value, grad = jax.value_and_grad(loss)(
                params, *make_batch(key, config["batch_size"], length)
            )
            updates, opt_state = optimizer.update(grad, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        keys = jax.random.split(key_data, config["train_steps"])
        (params, _), curve = jax.lax.scan(step, (params, optimizer.init(params)), keys)
        test_inputs, test_targets = make_batch(key_test, TEST_BATCH, length)
        test_loss = loss(params, test_inputs, test_targets)
        sequence = cell_inputs(params, test_inputs[0])
        state_jacobians = jacobians.state_jacobians(cell, params["cell"], sequence)
        bound = jnp.nan
        if cell.name == "lru":
            bound = jnp.log(jnp.max(jnp.hypot(*lru_lambda(params["cell"]))))
        return test_loss, curve, state_jacobians, bound

    keys = jax.random.split(jax.random.key(config["seed"]), config["num_seeds"])
    test_loss, curves, state_jacobians, bounds = jax.jit(jax.vmap(one_seed))(keys)
    norms = np.linalg.norm(np.asarray(state_jacobians, np.float64), ord=2, axis=(-2, -1))
    rates = np.asarray(jacobians.decay_rate(norms[:, ::-1]))
    return (
        np.asarray(test_loss, np.float64),
        np.asarray(curves, np.float64),
        rates,
        np.asarray(bounds, np.float64),
    )


def measure(config: dict) -> dict:
    """``{task: {cell: {T: {...}}}}`` with test losses, ratios to baseline and decay rates."""
    jobs = [
        (task, name, length) for task in TASKS for name in CELLS for length in config["lengths"]
    ]
    results = {task: {name: {} for name in CELLS} for task in TASKS}
    for task, name, length in _common.progress(jobs, "long_dependencies"):
        cell = make_cell(name, config["hidden_size"])
        test_loss, curves, rates, log_max_lambda = train_seeds(cell, task, length, config)
        reference = baseline(task, length)
        ratio = test_loss / reference
        results[task][name][length] = {
            "baseline": reference,
            "test_loss": test_loss,
            "loss_over_baseline": ratio,
            "success_rate": float(np.mean(ratio < SUCCESS_RATIO)),
            "loss_curve_mean": curves.mean(0),
            "trained_decay_rate": rates,
            "trained_log_max_lambda": log_max_lambda,
        }
    return results


def plot(results: dict, lengths):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {name: f"C{i}" for i, name in enumerate(CELLS)}
    for ax, task in zip(axes[:2], TASKS, strict=True):
        for name in CELLS:
            ratios = np.stack([results[task][name][t]["loss_over_baseline"] for t in lengths])
            ax.plot(lengths, ratios.mean(1), "o-", color=colors[name], label=name)
            ax.plot(
                np.repeat(lengths, ratios.shape[1]),
                ratios.ravel(),
                ".",
                color=colors[name],
                alpha=0.4,
            )
        ax.axhline(1.0, color="k", linestyle="--", label="baseline")
        ax.axhline(SUCCESS_RATIO, color="k", linestyle=":", label="success")
        ax.set_yscale("log")
        ax.set_xticks(lengths)
        ax.set_xlabel("T (steps to remember)")
        ax.set_ylabel("test loss / baseline")
        ax.set_title(f"{task}: baseline {'MSE 0.167' if task == 'adding' else '10 log 8/(T+20)'}")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    for task, marker in zip(TASKS, ("o", "s"), strict=True):
        for name in CELLS:
            rates = [np.nanmean(results[task][name][t]["trained_decay_rate"]) for t in lengths]
            axes[2].plot(
                lengths,
                rates,
                marker=marker,
                color=colors[name],
                linestyle="-" if task == "adding" else "--",
                label=f"{name}, {task}",
            )
    axes[2].set_xticks(lengths)
    axes[2].set_xlabel("T")
    axes[2].set_ylabel("fitted rate of ||d s_T / d s_k|| (per step)")
    axes[2].set_title("Jacobian decay of the trained models")
    axes[2].legend(fontsize=7)
    axes[2].grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def run(config: dict, out_dir) -> dict:
    """Train the sweep; writes ``results.json``, ``long_dependencies.png`` and ``summary.md``."""
    results = measure(config)
    lengths = list(config["lengths"])
    _common.save_figure(plot(results, lengths), out_dir, "long_dependencies.png")
    rows = []
    for task in TASKS:
        for name in CELLS:
            for t in lengths:
                r = results[task][name][t]
                rows.append(
                    [
                        task,
                        name,
                        t,
                        r["baseline"],
                        float(np.mean(r["test_loss"])),
                        float(np.mean(r["loss_over_baseline"])),
                        r["success_rate"],
                        float(np.nanmean(r["trained_decay_rate"])),
                        _mean_or_dash(r["trained_log_max_lambda"]),
                    ]
                )
    table = _common.markdown_table(
        [
            "task",
            "cell",
            "T",
            "baseline",
            "test loss (mean)",
            "loss / baseline",
            "success rate",
            "trained decay rate / step",
            "log max|lambda| (LRU)",
        ],
        rows,
    )
    solved = _common.markdown_table(
        ["cell", *(f"{task}, T = {t}" for task in TASKS for t in lengths)],
        [
            [name, *(_solved(results[task][name][t]) for task in TASKS for t in lengths)]
            for name in CELLS
        ],
    )
    body = [
        f"H = {config['hidden_size']}, {config['num_seeds']} seeds, {config['train_steps']} Adam "
        f"steps (lr {config['learning_rate']}, clip 1.0), batch {config['batch_size']}, test "
        f"batch {TEST_BATCH}. Success: test loss < {SUCCESS_RATIO} x baseline.",
        "",
        "Which models solve which T (seeds below the success threshold / seeds):",
        "",
        solved,
        "",
        table,
        "",
        "![long dependencies](long_dependencies.png)",
    ]
    _common.write_summary(out_dir, "Long-range dependencies: adding and copy-memory tasks", body)
    _common.write_json(
        out_dir, {"config": config, "success_ratio": SUCCESS_RATIO, "results": results}
    )
    return results


def _mean_or_dash(values) -> float | str:
    values = np.asarray(values, np.float64)
    return float(np.mean(values)) if np.all(np.isfinite(values)) else "-"


def _solved(result: dict) -> str:
    ratios = np.asarray(result["loss_over_baseline"])
    return f"{int(np.sum(ratios < SUCCESS_RATIO))}/{ratios.size}"


def _add_lengths(parser):
    parser.add_argument(
        "--lengths", type=int, nargs="+", help="override the sweep of T (e.g. --lengths 10 30)"
    )


def main(argv=None):
    args = _common.parse_args("long_dependencies", __doc__, argv, extra=_add_lengths)
    config = _common.pick_size(SIZES, args)
    if args.lengths:
        config["lengths"] = tuple(args.lengths)
    run(config, args.out)


if __name__ == "__main__":
    main()
