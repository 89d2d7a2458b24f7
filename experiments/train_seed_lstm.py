"""Train the seed's LSTM(100) + Dense(1, sigmoid) model end to end, with gradient clipping.

The seed's Keras model ``Sequential([LSTM(100, input_shape=(T, 1)), Dense(1, 'sigmoid')])`` is
a binary classifier of univariate sequences. The problem here is real and ships with
scikit-learn, so it runs offline: the UCI handwritten digits (1,797 scans of 8x8 pixels), each
read pixel by pixel as a sequence of ``T = 64`` steps with one feature, labelled 1 for digits
5-9 and 0 for digits 0-4. Data are split 80/20 (stratified, fixed seed) and standardised with
statistics of the training split only; training uses ``rnnjax.train.fit`` with Adam behind
``clip_by_global_norm(1.0)``, binary cross-entropy, and early stopping on the test loss.

    python -m experiments.train_seed_lstm            # ~30-60 s on 2 CPU cores
    python -m experiments.train_seed_lstm --epochs 2 --limit 256   # smoke run
"""

import argparse
import json
import logging
import platform
import time

import jax
import numpy as np
import optax

import rnnjax
from rnnjax import train

_log = logging.getLogger("experiments.train_seed_lstm")


def load_digits_sequences(limit: int | None = None, seed: int = 0):
    """``(x_train, y_train, x_test, y_test)``: digits as ``[N, 64, 1]`` float32 sequences, labels
    ``[N, 1]`` (1.0 for digits 5-9), standardised with training-split statistics."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, labels = digits.data.astype(np.float32), digits.target
    rng = np.random.default_rng(seed)
    train_index, test_index = [], []
    for digit in range(10):  # stratified 80/20 split
        members = rng.permutation(np.flatnonzero(labels == digit))
        cut = int(round(0.8 * len(members)))
        train_index.extend(members[:cut])
        test_index.extend(members[cut:])
    train_index, test_index = rng.permutation(train_index), rng.permutation(test_index)
    if limit is not None:
        train_index, test_index = train_index[:limit], test_index[: max(limit // 4, 1)]
    y = (labels >= 5).astype(np.float32)[:, None]
    scaler = train.fit_standardizer(x[train_index].reshape(-1, 1))
    sequences = train.standardize(x.reshape(-1, 1), scaler).reshape(len(x), 64, 1)
    return sequences[train_index], y[train_index], sequences[test_index], y[test_index]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--max-norm", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=None, help="use only this many examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    x_train, y_train, x_test, y_test = load_digits_sequences(args.limit, args.seed)
    model = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(100)), rnnjax.dense(1, jax.nn.sigmoid))
    params = model.init(jax.random.key(args.seed), input_shape=x_train.shape[1:])

    def loss_fn(params, batch, key):
        x, y = batch
        return train.binary_cross_entropy(model.apply(params, x), y)

    def eval_fn(params, batch):
        x, y = batch
        p = model.apply(params, x)
        return {"loss": train.binary_cross_entropy(p, y), "accuracy": train.binary_accuracy(p, y)}

    optimizer = train.with_clipping(optax.adam(args.learning_rate), max_norm=args.max_norm)
    start = time.perf_counter()
    result = train.fit(
        loss_fn, params, optimizer, (x_train, y_train), epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, eval_fn=eval_fn, eval_data=(x_test, y_test),
        patience=3, progress=not args.no_progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    final = train.evaluate(jax.jit(eval_fn), result.params, (x_test, y_test), 256)
    summary = {
        "test_accuracy": round(final["accuracy"], 4),
        "test_loss": round(final["loss"], 4),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "max_pre_clip_grad_norm": round(max(h["grad_norm_max"] for h in result.history), 3),
        "train_examples": len(x_train),
        "test_examples": len(x_test),
        "seconds_total": round(seconds, 1),
        "machine": f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}",
    }
    _log.info(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
