"""Sequence classification of scikit-learn's handwritten digits: vanilla RNN vs LSTM vs GRU.

The 1797 8x8 digit images (``sklearn.datasets.load_digits``, shipped with scikit-learn) are
scaled to [0, 1] and read as sequences in two ways:

* ``rows``: 8 steps of 8 pixels (a row per step);
* ``pixels``: 64 steps of one pixel, the small cousin of sequential MNIST, where the label
  depends on inputs up to 64 steps back.

Each cell reads the sequence and a dense layer maps its last hidden state to 10 logits, trained
with softmax cross-entropy, Adam and gradient clipping. Test accuracy (stratified 25% split) is
compared with the majority class and with a logistic regression on the 64 pixels (a
non-sequential model that sees the whole image at once).

    python -m experiments.applications.digits [--quick | --full] [--out DIR]
"""

import os

import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

import rnnjax
import rnnjax.train as train
from experiments import _common
from experiments.applications import parse_args

SIZES = {
    "quick": {"hidden_size": 32, "epochs": {"rows": 12, "pixels": 12}, "batch_size": 64},
    "default": {"hidden_size": 64, "epochs": {"rows": 30, "pixels": 40}, "batch_size": 64},
    "full": {"hidden_size": 128, "epochs": {"rows": 60, "pixels": 150}, "batch_size": 64},
}
CELLS = {
    "rnn": lambda hidden: rnnjax.simple_rnn(hidden),
    "lstm": lambda hidden: rnnjax.lstm(hidden),
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


def train_classifier(cell, x_train, y_train, x_test, y_test, *, epochs, batch_size, seed):
    """Fit ``rnn(cell) -> dense(10)``; returns ``(test accuracy, history)``."""
    model = rnnjax.serial(rnnjax.rnn(cell), rnnjax.dense(10))
    params = model.init(jax.random.key(seed), x_train.shape[1:])

    def loss(params, batch, key):
        return train.softmax_cross_entropy(model.apply(params, batch[0]), batch[1])

    def metrics(params, batch):
        logits = model.apply(params, batch[0])
        return {
            "loss": train.softmax_cross_entropy(logits, batch[1]),
            "accuracy": train.accuracy(logits, batch[1]),
        }

    result = train.fit(
        loss, params, train.with_clipping(optax.adam(3e-3), max_norm=1.0), (x_train, y_train),
        epochs=epochs, batch_size=batch_size, seed=seed, eval_fn=metrics,
        eval_data=(x_test, y_test), restore_best=False,  # the test split never picks the epoch
        progress=not os.environ.get("EXPERIMENTS_NO_PROGRESS"),
    )  # fmt: skip
    return result.history[-1]["eval_accuracy"], result.history


def run(config: dict, out_dir) -> dict:
    """Train every cell on both views; writes ``results.json``, ``digits.png``, ``summary.md``."""
    data = load(config["seed"])
    accuracy, curves = {}, {}
    for view in config.get("views", VIEWS):
        x_train, x_test = (as_sequence(data[f"x_{s}"], view) for s in ("train", "test"))
        for offset, (name, make) in enumerate(CELLS.items()):
            acc, history = train_classifier(
                make(config["hidden_size"]), x_train, data["y_train"], x_test, data["y_test"],
                epochs=config["epochs"][view], batch_size=config["batch_size"],
                seed=config["seed"] + offset,
            )  # fmt: skip
            accuracy[f"{view}/{name}"] = acc
            curves[f"{view}/{name}"] = [h["eval_accuracy"] for h in history]
    results = {
        "config": config,
        "num_train": len(data["y_train"]),
        "num_test": len(data["y_test"]),
        "test_accuracy": accuracy,
        "baselines": baselines(data),
        "test_accuracy_by_epoch": curves,
    }
    _common.write_json(out_dir, results)
    _figure(curves, results["baselines"], out_dir)
    rows = [[key, value] for key, value in accuracy.items()]
    rows += [[f"baseline/{key}", value] for key, value in results["baselines"].items()]
    _common.write_summary(
        out_dir,
        "Digits as sequences: test accuracy",
        _common.markdown_table(["model", "acc"], rows),
    )
    return results


def _figure(curves, baseline, out_dir):
    views = sorted({key.split("/")[0] for key in curves}, key=VIEWS.index)
    fig, axes = plt.subplots(1, len(views), figsize=(5.5 * len(views), 4), squeeze=False)
    for ax, view in zip(axes[0], views, strict=True):
        for key, curve in curves.items():
            if key.startswith(view + "/"):
                ax.plot(np.arange(1, len(curve) + 1), curve, marker=".", label=key.split("/")[1])
        for (name, value), style in zip(baseline.items(), (":", "--"), strict=True):
            ax.axhline(value, color="grey", ls=style, label=name.replace("_", " "))
        steps = "8 steps of 8 pixels" if view == "rows" else "64 steps of 1 pixel"
        ax.set(title=f"{view}: {steps}", xlabel="epoch", ylabel="test accuracy", ylim=(0, 1))
        ax.legend(fontsize=8)
    _common.save_figure(fig, out_dir, "digits.png")


def main(argv=None):
    args = parse_args("digits", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
