"""Character-level language model on the Python standard library's docstrings, with temperature
sampling.

The corpus (:func:`corpus`) is the English text that every Python installation carries: the
docstrings of a fixed list of standard-library modules and of their public classes, functions
and methods (``inspect.getdoc``), de-duplicated, joined by blank lines and restricted to printable
ASCII. Its last 10% is held out. An ``embedding -> LSTM -> dense`` model is trained on
non-overlapping windows of ``window`` characters to predict each next character (softmax
cross-entropy, Adam, clipping). Bits per character on the held-out text (each window read from a
zero state) are compared with a unigram and an add-one bigram model fitted on the training
text. Samples at several temperatures (``logits / temperature``) are saved in ``samples.txt``.

    python -m experiments.applications.char_lm [--quick | --full] [--out DIR]
"""

import importlib
import inspect
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import rnnjax
import rnnjax.train as train
from experiments import _common
from experiments.applications import parse_args

SIZES = {
    "quick": {"max_chars": 300_000, "window": 64, "hidden_size": 128, "epochs": 4},
    "default": {"max_chars": 1_000_000, "window": 100, "hidden_size": 256, "epochs": 4},
    "full": {"max_chars": None, "window": 100, "hidden_size": 512, "epochs": 20},
}
MODULES = (
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "doctest",
    "email.message", "enum", "fractions", "functools", "glob", "gzip", "heapq", "http.client",
    "inspect", "io", "ipaddress", "itertools", "json", "logging", "mailbox", "operator",
    "optparse", "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "shlex", "shutil",
    "socket", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "traceback", "typing", "unittest", "urllib.parse", "uuid", "warnings",
    "weakref", "zipfile",
)  # fmt: skip
TEMPERATURES = (0.5, 0.8, 1.0)
PROMPT = "Return the "


def corpus(max_chars: int | None = None) -> str:
    """The docstrings of :data:`MODULES` and their public members, printable ASCII only."""
    seen, texts = set(), []

    def add(obj):
        doc = inspect.getdoc(obj)
        if doc and doc not in seen:
            seen.add(doc)
            texts.append(doc)

    for name in MODULES:
        module = importlib.import_module(name)
        add(module)
        for attribute, member in sorted(vars(module).items()):
            if attribute.startswith("_") or getattr(member, "__module__", None) != name:
                continue
            add(member)
            if inspect.isclass(member):
                for method_name, method in sorted(vars(member).items()):
                    if not method_name.startswith("_") and callable(method):
                        add(method)
    text = "\n\n".join(texts)
    text = "".join(c if (" " <= c <= "~" or c == "\n") else " " for c in text)
    return text if max_chars is None else text[:max_chars]


def ngram_bits(train_ids: np.ndarray, test_ids: np.ndarray, vocab: int) -> dict:
    """Bits per character on ``test_ids`` of add-one unigram and bigram models of ``train_ids``."""
    unigram = (np.bincount(train_ids, minlength=vocab) + 1.0) / (len(train_ids) + vocab)
    pairs = np.zeros((vocab, vocab))
    np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1.0)
    bigram = (pairs + 1.0) / (pairs.sum(axis=1, keepdims=True) + vocab)
    return {
        "unigram": float(-np.mean(np.log2(unigram[test_ids]))),
        "bigram": float(-np.mean(np.log2(bigram[test_ids[:-1], test_ids[1:]]))),
    }


def windows(ids: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``(inputs [N, window], targets [N, window])``, targets shifted by one."""
    count = (len(ids) - 1) // window
    inputs = ids[: count * window].reshape(count, window)
    targets = ids[1 : count * window + 1].reshape(count, window)
    return inputs.astype(np.int32), targets.astype(np.int32)


def language_model(vocab: int, hidden_size: int, embed_size: int = 32):
    """``(model, cell)``: ids ``[B, T]`` -> logits ``[B, T, vocab]``; the cell for sampling."""
    cell = rnnjax.lstm(hidden_size)
    model = rnnjax.serial(
        train.embedding(vocab, embed_size),
        rnnjax.rnn(cell, return_sequences=True),
        rnnjax.dense(vocab),
    )
    return model, cell


def sample(params, cell, prompt: np.ndarray, length: int, temperature: float, key) -> jax.Array:
    """``length`` ids drawn one at a time from ``softmax(logits / temperature)`` after reading
    ``prompt`` (at least one id); the LSTM state is carried between steps."""
    embedding, lstm, output = params
    inputs = embedding.table[jnp.asarray(prompt)]
    state, _ = rnnjax.scan(cell, lstm, inputs[:-1]) if len(prompt) > 1 else (None, None)

    def body(carry, key):
        state, x = carry
        state, h = cell.step(lstm, state, x)
        token = jax.random.categorical(key, (h @ output.w + output.b) / temperature)
        return (state, embedding.table[token]), token

    state = cell.initial_state((), inputs.dtype) if state is None else state
    _, tokens = jax.lax.scan(body, (state, inputs[-1]), jax.random.split(key, length))
    return tokens


def run(config: dict, out_dir) -> dict:
    """Train, score and sample; writes ``results.json``, ``samples.txt``, ``char_lm.png``."""
    text = corpus(config["max_chars"])
    alphabet = sorted(set(text))
    index = {c: i for i, c in enumerate(alphabet)}
    ids = np.array([index[c] for c in text], np.int32)
    split = int(len(ids) * 0.9)
    x_train, y_train = windows(ids[:split], config["window"])
    x_test, y_test = windows(ids[split:], config["window"])
    model, cell = language_model(len(alphabet), config["hidden_size"])
    params = model.init(jax.random.key(config["seed"]), (config["window"],))

    def loss(params, batch, key):
        return train.softmax_cross_entropy(model.apply(params, batch[0]), batch[1])

    def metrics(params, batch):
        return {"loss": loss(params, batch, None)}

    result = train.fit(
        loss, params, train.with_clipping(optax.adam(5e-3), max_norm=1.0), (x_train, y_train),
        epochs=config["epochs"], batch_size=config.get("batch_size", 32), seed=config["seed"],
        eval_fn=metrics, eval_data=(x_test, y_test), restore_best=False,
        progress=not os.environ.get("EXPERIMENTS_NO_PROGRESS"),
    )  # fmt: skip
    bits = {"lstm": result.history[-1]["eval_loss"] / math.log(2)}
    bits.update(ngram_bits(ids[:split], ids[split:], len(alphabet)))
    prompt = np.array([index.get(c, 0) for c in PROMPT], np.int32)
    samples = {}
    for temperature in TEMPERATURES:
        key = jax.random.key(config["seed"] + int(100 * temperature))
        tokens = sample(
            result.params, cell, prompt, config.get("sample_length", 300), temperature, key
        )
        samples[str(temperature)] = PROMPT + "".join(alphabet[int(t)] for t in tokens)
    results = {
        "config": config,
        "corpus": {"characters": len(text), "vocabulary": len(alphabet), "modules": MODULES},
        "test_bits_per_character": bits,
        "history": result.history,
        "samples": samples,
    }
    _common.write_json(out_dir, results)
    _write_samples(out_dir, samples)
    _figure(bits, result.history, out_dir)
    rows = [[name, value] for name, value in sorted(bits.items(), key=lambda item: item[1])]
    _common.write_summary(
        out_dir, "Character LM on stdlib docstrings: held-out bits per character",
        _common.markdown_table(["model", "bits/char"], rows),
    )  # fmt: skip
    return results


def _write_samples(out_dir, samples: dict) -> None:
    lines = []
    for temperature, text in samples.items():
        lines += [f"=== temperature {temperature} ===", text, ""]
    (Path(out_dir) / "samples.txt").write_text("\n".join(lines))


def _figure(bits: dict, history: list[dict], out_dir) -> None:
    fig, (ax_bits, ax_curve) = plt.subplots(1, 2, figsize=(10, 3.5))
    names = sorted(bits, key=bits.get, reverse=True)
    ax_bits.bar(names, [bits[n] for n in names], color=["grey", "silver", "tab:blue"][: len(names)])
    ax_bits.set(title="held-out bits per character", ylabel="bits/char")
    epochs = [h["epoch"] for h in history]
    ax_curve.plot(
        epochs, [h["train_loss"] / math.log(2) for h in history], marker="o", label="train"
    )
    ax_curve.plot(epochs, [h["eval_loss"] / math.log(2) for h in history], marker="o", label="test")
    ax_curve.set(title="LSTM", xlabel="epoch", ylabel="bits/char")
    ax_curve.legend()
    _common.save_figure(fig, out_dir, "char_lm.png")


def main(argv=None):
    args = parse_args("char_lm", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
