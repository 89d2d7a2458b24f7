"""Train the seed's LSTM(100) + Dense(1, sigmoid) model end to end, with gradient clipping.

The seed's Keras model ``Sequential([LSTM(100, input_shape=(T, 1)), Dense(1, 'sigmoid')])`` is a
binary classifier of univariate sequences. The problem here is real and ships with scikit-learn,
so it runs offline: the UCI handwritten digits (1,797 scans of 8x8 pixels), each read pixel by
pixel as a sequence of ``T = 64`` steps with one feature, labelled 1 for digits 5-9 and 0 for
digits 0-4. The data are split 80/20 into training and test sets (stratified, fixed seed), a
tenth of the training set is held out for validation, and everything is standardised with
statistics of the remaining training data only (``rnnjax.train.fit_standardizer``).
``rnnjax.train.fit`` trains with Adam behind ``clip_by_global_norm(1.0)``
(``rnnjax.train.with_clipping``) on binary cross-entropy, logs the pre-clip gradient norm, and
stops early on the validation loss (restoring the best epoch); the test set is used once, at the
end.

    python -m experiments.train_seed_lstm [--quick | --full] [--out DIR]
"""


import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

import rnnjax
from experiments import _common
from rnnjax import train

SIZES = {
    "quick": {"epochs": 1, "limit": 96, "batch_size": 32, "patience": 1},
    "default": {"epochs": 20, "limit": None, "batch_size": 32, "patience": 4},
    "full": {"epochs": 60, "limit": None, "batch_size": 32, "patience": 10},
}
LEARNING_RATE = 3e-3
MAX_NORM = 1.0


def load_digit_sequences(limit: int | None = None, seed: int = 0) -> dict:
    """Digits as ``[N, 64, 1]`` float32 pixel sequences with labels ``[N, 1]`` (1.0 for 5-9).

    Returns ``x_train, y_train, x_val, y_val, x_test, y_test`` (standardised with the training
    split's mean and standard deviation); ``limit`` keeps the first ``limit`` training and
    ``limit // 4`` validation and test examples.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels, labels = digits.data.astype(np.float32), digits.target
    rng = np.random.default_rng(seed)
    train_index, test_index = [], []
    for digit in range(10):  # stratified 80/20 split
        members = rng.permutation(np.flatnonzero(labels == digit))
        cut = int(round(0.8 * len(members)))
        train_index.extend(members[:cut])
        test_index.extend(members[cut:])
    train_index, test_index = rng.permutation(train_index), rng.permutation(test_index)
    held_out = len(train_index) // 10
    val_index, train_index = train_index[:held_out], train_index[held_out:]
    if limit is not None:
        small = max(limit // 4, 1)
        train_index, val_index, test_index = (
            train_index[:limit],
            val_index[:small],
            test_index[:small],
        )
    scaler = train.fit_standardizer(pixels[train_index].reshape(-1, 1))
    x = train.standardize(pixels.reshape(-1, 1), scaler).reshape(len(pixels), 64, 1)
    y = (labels >= 5).astype(np.float32)[:, None]
    return {
        "x_train": x[train_index], "y_train": y[train_index],
        "x_val": x[val_index], "y_val": y[val_index],
        "x_test": x[test_index], "y_test": y[test_index],
    }  # fmt: skip


def seed_model() -> rnnjax.Layer:
    """The seed's ``LSTM(100)`` + ``Dense(1, sigmoid)``."""
    return rnnjax.serial(rnnjax.rnn(rnnjax.lstm(100)), rnnjax.dense(1, jax.nn.sigmoid))


def run(config: dict, out_dir) -> dict:
    """Train, evaluate, and write ``results.json``, ``training.png`` and ``summary.md``."""
    data = load_digit_sequences(config["limit"], config["seed"])
    model = seed_model()
    params = model.init(jax.random.key(config["seed"]), input_shape=data["x_train"].shape[1:])

    def loss_fn(params, batch, key):
        x, y = batch
        return train.binary_cross_entropy(model.apply(params, x), y)

    def eval_fn(params, batch):
        x, y = batch
        p = model.apply(params, x)
        return {"loss": train.binary_cross_entropy(p, y), "accuracy": train.binary_accuracy(p, y)}

    optimizer = train.with_clipping(optax.adam(LEARNING_RATE), max_norm=MAX_NORM)
    test = (data["x_test"], data["y_test"])
    result = train.fit(
        loss_fn, params, optimizer, (data["x_train"], data["y_train"]),
        epochs=config["epochs"], batch_size=config["batch_size"], seed=config["seed"],
        eval_fn=eval_fn, eval_data=(data["x_val"], data["y_val"]), patience=config["patience"],
        progress=_common.show_progress(),
    )  # fmt: skip
    final = train.evaluate(train.make_eval_step(eval_fn), result.params, test, 256)
    history = result.history
    results = {
        "config": {**config, "learning_rate": LEARNING_RATE, "max_norm": MAX_NORM},
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        "majority_accuracy": float(max(data["y_test"].mean(), 1 - data["y_test"].mean())),
        "best_epoch": result.best_epoch,
        "epochs_run": len(history),
        "train_seconds": float(sum(h["seconds"] for h in history)),
        "max_pre_clip_grad_norm": max(h["grad_norm_max"] for h in history),
        "clipped_epochs": sum(h["grad_norm_max"] > MAX_NORM for h in history),
        "train_examples": len(data["x_train"]),
        "validation_examples": len(data["x_val"]),
        "test_examples": len(data["x_test"]),
        "history": history,
    }
    _common.write_json(out_dir, results)
    _common.save_figure(plot(history), out_dir, "training.png")
    _common.write_summary(out_dir, "The seed's LSTM(100) + Dense(1, sigmoid), trained", [
        f"Digits 5-9 vs 0-4, read pixel by pixel (T = 64, one feature); "
        f"{results['train_examples']} training, {results['validation_examples']} validation "
        f"(early stopping) and {results['test_examples']} test sequences.",
        "",
        f"* test accuracy **{final['accuracy']:.3f}** (majority class "
        f"{results['majority_accuracy']:.3f}), test loss {final['loss']:.3f}, best epoch "
        f"{result.best_epoch} of {len(history)}",
        f"* Adam {LEARNING_RATE} behind clip_by_global_norm({MAX_NORM}): the pre-clip gradient "
        f"norm reached {results['max_pre_clip_grad_norm']:.2f}; clipping acted in "
        f"{results['clipped_epochs']} of {len(history)} epochs",
        f"* {results['train_seconds']:.1f} s of training (compilation included)",
        "",
        "![training curves](training.png)",
    ])  # fmt: skip
    return results


def plot(history: list[dict]):
    """Loss and accuracy per epoch (left); pre-clip gradient norm against the threshold (right)."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    left.plot(epochs, [h["eval_loss"] for h in history], "s-", label="validation loss")
    left.plot(epochs, [h["eval_accuracy"] for h in history], "^-", label="validation accuracy")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(epochs, [h["grad_norm"] for h in history], "o-", label="mean pre-clip norm")
    right.plot(epochs, [h["grad_norm_max"] for h in history], "s-", label="max pre-clip norm")
    right.axhline(MAX_NORM, color="k", linestyle="--", label="clip threshold")
    right.set_yscale("log")
    right.set_xlabel("epoch")
    right.legend()
    fig.suptitle("seed LSTM(100) + Dense(1, sigmoid) on digit pixel sequences")
    return fig


def main(argv=None) -> dict:
    args = _common.parse_args("train_seed_lstm", __doc__, argv)
    return run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
