"""Sequence classification of scikit-learn's handwritten digits: vanilla RNN vs LSTM vs GRU.

The 1797 8x8 digit images (``sklearn.datasets.load_digits``, shipped with scikit-learn) are
scaled to [0, 1] and read as sequences in two ways:

* ``rows``: 8 steps of 8 pixels (a row per step);
* ``pixels``: 64 steps of one pixel, the small cousin of sequential MNIST, where the label
  depends on inputs up to 64 steps back: the seed's case for gates.

Each cell reads the sequence and a dense layer maps its last hidden state to 10 logits, trained
with softmax cross-entropy and the recipe of :mod:`experiments.applications._runs` (Adam on a
warmup-cosine schedule, clipping at global norm 1, LSTM forget bias 1, early stopping on a 15%
validation split of the training images). The stratified 25% test split is fixed (``split_seed``)
so that every seed is scored on the same images as the baselines: the majority class and a
logistic regression on the 64 pixels (a non-sequential model that sees the whole image at once).

    python -m experiments.applications.digits [--quick | --full] [--out DIR]
"""

import jax
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
import rnnjax.train as train
from experiments import _common
from experiments.applications import _runs, parse_args

SIZES = {
    "quick": {"hidden_size": {"rows": 32, "pixels": 64}, "epochs": {"rows": 20, "pixels": 25},
              "seeds": 1},
    "default": {"hidden_size": {"rows": 128, "pixels": 128},
                "epochs": {"rows": 60, "pixels": 120}, "seeds": 3},
    "full": {"hidden_size": {"rows": 128, "pixels": 128}, "epochs": {"rows": 100, "pixels": 300},
             "seeds": 5},
}  # fmt: skip
# Peak learning rate of each cell and view: the best validation accuracy (mean of 3 seeds) among
# 1e-3, 3e-3, 5e-3 and 1e-2 at the default size (rows: 3e-3 and 1e-2). The vanilla RNN diverges
# or stalls above 3e-3 on pixels, where the gated cells do best at 1e-2 (docs/applications.md).
LEARNING_RATE = {
    "rows": {"rnn": 3e-3, "lstm": 1e-2, "gru": 1e-2},
    "pixels": {"rnn": 1e-3, "lstm": 1e-2, "gru": 1e-2},
}
BATCH_SIZE = 32
PATIENCE = 25
CELLS = {
    "rnn": lambda hidden: rnnjax.simple_rnn(hidden),
    "lstm": lambda hidden: rnnjax.lstm(hidden, forget_bias=1.0),
    "gru": lambda hidden: rnnjax.gru(hidden),
}
VIEWS = ("rows", "pixels")


def load(seed: int = 0) -> dict:
    """Images scaled to [0, 1], split 75/25 stratified: ``{"x_train": [N, 8, 8], ...}``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int32), test_size=0.25, random_state=seed,
        stratify=digits.target,
    )  # fmt: skip
    return {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}


def as_sequence(images: np.ndarray, view: str) -> np.ndarray:
    """``[N, 8, 8]`` images as ``[N, 8, 8]`` (rows) or ``[N, 64, 1]`` (pixels) sequences."""
    if view == "rows":
        return images
    if view == "pixels":
        return images.reshape(images.shape[0], 64, 1)
    raise ValueError(f"view must be one of {VIEWS}; got {view!r}.")


def baselines(data: dict) -> dict:
    """Test accuracy of the majority class and of a logistic regression on the flat pixels."""
    from sklearn.linear_model import LogisticRegression

    majority = np.bincount(data["y_train"]).argmax()
    flat = {split: data[f"x_{split}"].reshape(-1, 64) for split in ("train", "test")}
    logistic = LogisticRegression(max_iter=2000).fit(flat["train"], data["y_train"])
    return {
        "majority_class": float(np.mean(data["y_test"] == majority)),
        "logistic_regression": float(logistic.score(flat["test"], data["y_test"])),
    }


def train_classifier(
    cell, x_train, y_train, x_test, y_test, *, epochs, seed, learning_rate=3e-3,
    batch_size=BATCH_SIZE, patience=PATIENCE, validation_fraction=0.15,
):  # fmt: skip
    """Fit ``rnn(cell) -> dense(10)`` with early stopping on a validation split of the training
    data; returns ``(test accuracy of the restored best epoch, history)``, where each history
    record also holds that epoch's ``test_accuracy`` (for the learning curves only)."""
    model = rnnjax.serial(rnnjax.rnn(cell), rnnjax.dense(10))
    params = model.init(jax.random.key(seed), x_train.shape[1:])
    fit_index, validation_index = _runs.split_validation(len(y_train), validation_fraction, seed)

    def loss(params, batch, key):
        return train.softmax_cross_entropy(model.apply(params, batch[0]), batch[1])

    def metrics(params, batch):
        logits = model.apply(params, batch[0])
        return {
            "loss": train.softmax_cross_entropy(logits, batch[1]),
            "accuracy": train.accuracy(logits, batch[1]),
        }

    steps = epochs * _runs.steps_per_epoch(len(fit_index), batch_size)
    result = train.fit(
        loss, params, _runs.optimizer(learning_rate, steps),
        (x_train[fit_index], y_train[fit_index]), epochs=epochs, batch_size=batch_size,
        seed=seed, eval_fn=metrics, eval_data=(x_train[validation_index],
                                               y_train[validation_index]),
        monitor="eval_loss", patience=patience, restore_best=True,
        progress=_common.show_progress(),
    )  # fmt: skip
    test_accuracy = jax.jit(lambda p: train.accuracy(model.apply(p, x_test), y_test))
    return float(test_accuracy(result.params)), result.history


def run(config: dict, out_dir) -> dict:
    """Train every cell on both views over ``seeds`` seeds; writes ``results.json``,
    ``digits.png`` and ``summary.md``."""
    data = load(config.get("split_seed", 0))
    seeds = [config["seed"] + k for k in range(config["seeds"])]
    accuracy, curves, seconds, best_epochs = {}, {}, {}, {}
    for view in config.get("views", VIEWS):
        x_train, x_test = (as_sequence(data[f"x_{s}"], view) for s in ("train", "test"))
        for name, make in CELLS.items():
            key = f"{view}/{name}"
            accuracy[key], curves[key], seconds[key], best_epochs[key] = [], [], [], []
            for seed in seeds:
                (acc, history), wall = _runs.timed(
                    train_classifier, make(config["hidden_size"][view]), x_train,
                    data["y_train"], x_test, data["y_test"], epochs=config["epochs"][view],
                    seed=seed, learning_rate=LEARNING_RATE[view][name],
                )  # fmt: skip
                accuracy[key].append(acc)
                curves[key].append([h["eval_accuracy"] for h in history])
                seconds[key].append(wall)
                best_epochs[key].append(int(np.argmin([h["eval_loss"] for h in history])) + 1)
                _common.logger.info("%s seed %d: test accuracy %.4f (%.0f s)", key, seed, acc,
                                    wall)  # fmt: skip
    results = {
        "config": {
            **config,
            "learning_rate": LEARNING_RATE,
            "batch_size": BATCH_SIZE,
            "patience": PATIENCE,
            "validation_fraction": 0.15,
        },  # fmt: skip
        "num_train": len(data["y_train"]),
        "num_test": len(data["y_test"]),
        "test_accuracy": {key: _runs.spread(values) for key, values in accuracy.items()},
        "seconds": {key: _runs.spread(values) for key, values in seconds.items()},
        "best_epoch": best_epochs,
        "baselines": baselines(data),
        "validation_accuracy_by_epoch": curves,
    }
    _common.write_json(out_dir, results)
    _figure(curves, results["baselines"], out_dir)
    rows = [[key, _runs.show(results["test_accuracy"][key]), _runs.minutes(sum(seconds[key]))]
            for key in accuracy]  # fmt: skip
    rows += [[f"baseline/{key}", f"{value:.3f}", ""] for key, value in results["baselines"].items()]
    _common.write_summary(
        out_dir,
        "Digits as sequences: test accuracy",
        [f"Mean ± std (min-max) over seeds {seeds}; time is the total over seeds.", "",
         _common.markdown_table(["model", "test accuracy", "time"], rows)],
    )  # fmt: skip
    return results


def _figure(curves, baseline, out_dir):
    views = sorted({key.split("/")[0] for key in curves}, key=VIEWS.index)
    fig, axes = plt.subplots(1, len(views), figsize=(5.5 * len(views), 4), squeeze=False)
    for ax, view in zip(axes[0], views, strict=True):
        for index, (key, runs) in enumerate(curves.items()):
            if not key.startswith(view + "/"):
                continue
            for number, curve in enumerate(runs):
                ax.plot(np.arange(1, len(curve) + 1), curve, color=f"C{index % 3}", lw=1,
                        alpha=0.8, label=key.split("/")[1] if number == 0 else None)  # fmt: skip
        for (name, value), style in zip(baseline.items(), (":", "--"), strict=True):
            ax.axhline(value, color="black", ls=style, label=f"{name.replace('_', ' ')} (test)")
        steps = "8 steps of 8 pixels" if view == "rows" else "64 steps of 1 pixel"
        ax.set(title=f"{view}: {steps}", xlabel="epoch", ylabel="validation accuracy",
               ylim=(0.5, 1.0))  # fmt: skip
        ax.legend(fontsize=8, loc="lower right")
    _common.save_figure(fig, out_dir, "digits.png")


def main(argv=None):
    args = parse_args("digits", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
