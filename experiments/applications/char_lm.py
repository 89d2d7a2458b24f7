"""Character-level language model on the Python standard library's docstrings, with temperature
sampling.

The corpus (:func:`corpus`) is the English text that every Python installation carries: the
docstrings of a fixed list of standard-library modules and of their public classes, functions
and methods (``inspect.getdoc``), de-duplicated, joined by blank lines and restricted to printable
ASCII. Its last 10% is held out for the test and the 5% before it for validation (early
stopping). An ``embedding -> LSTM -> dense`` model is trained on non-overlapping windows of
``window`` characters to predict each next character (softmax cross-entropy and the recipe of
:mod:`experiments.applications._runs`: Adam on a warmup-cosine schedule, clipping), over
several seeds. Bits per character on the held-out text (each window read from a
zero state) are compared with a unigram and an add-one bigram model fitted on the training
text. Samples at several temperatures (``logits / temperature``) are saved in ``samples.txt``.

    python -m experiments.applications.char_lm [--quick | --full] [--out DIR]
"""

import importlib
import inspect
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
import rnnjax.train as train
from experiments import _common
from experiments.applications import _runs, parse_args

SIZES = {
    "quick": {"max_chars": 300_000, "window": 64, "hidden_size": 128, "epochs": 4, "seeds": 1},
    "default": {"max_chars": None, "window": 100, "hidden_size": 128, "epochs": 12, "seeds": 3},
    "full": {"max_chars": None, "window": 100, "hidden_size": 256, "epochs": 15, "seeds": 3},
}
LEARNING_RATE = 5e-3
BATCH_SIZE = 32
PATIENCE = 2
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


def train_model(data: dict, vocab: int, config: dict, seed: int):
    """Fit :func:`language_model` on ``data["train"]`` windows with early stopping on
    ``data["validation"]``; returns ``(model, cell, params, history)``."""
    model, cell = language_model(vocab, config["hidden_size"])
    params = model.init(jax.random.key(seed), (config["window"],))

    def loss(params, batch, key):
        return train.softmax_cross_entropy(model.apply(params, batch[0]), batch[1])

    def metrics(params, batch):
        return {"loss": loss(params, batch, None)}

    batch_size = config.get("batch_size", BATCH_SIZE)
    steps = config["epochs"] * _runs.steps_per_epoch(len(data["train"][0]), batch_size)
    result = train.fit(
        loss, params, _runs.optimizer(config.get("learning_rate", LEARNING_RATE), steps),
        data["train"], epochs=config["epochs"], batch_size=batch_size, seed=seed,
        eval_fn=metrics, eval_data=data["validation"], patience=PATIENCE, restore_best=True,
        progress=_common.show_progress(),
    )  # fmt: skip
    return model, cell, result.params, result.history


def run(config: dict, out_dir) -> dict:
    """Train over ``seeds`` seeds, score and sample; writes ``results.json``, ``samples.txt``,
    ``char_lm.png``."""
    text = corpus(config["max_chars"])
    alphabet = sorted(set(text))
    index = {c: i for i, c in enumerate(alphabet)}
    ids = np.array([index[c] for c in text], np.int32)
    validation_start, test_start = int(len(ids) * 0.85), int(len(ids) * 0.9)
    data = {
        "train": windows(ids[:validation_start], config["window"]),
        "validation": windows(ids[validation_start:test_start], config["window"]),
    }
    x_test, y_test = windows(ids[test_start:], config["window"])
    lstm_bits, seconds, histories, first = [], [], [], None
    for seed in [config["seed"] + k for k in range(config["seeds"])]:
        (model, cell, params, history), wall = _runs.timed(
            train_model, data, len(alphabet), config, seed
        )
        test_loss = train.evaluate(
            jax.jit(lambda p, b, model=model: {"loss": train.softmax_cross_entropy(
                model.apply(p, b[0]), b[1])}), params, (x_test, y_test), 256,
        )["loss"]  # fmt: skip
        lstm_bits.append(test_loss / math.log(2))
        seconds.append(wall)
        histories.append(history)
        first = (cell, params) if first is None else first
        _common.logger.info("seed %d: held-out %.3f bits/char (%d epochs, %.0f s)", seed,
                            lstm_bits[-1], len(history), wall)  # fmt: skip
    bits = {"lstm": float(np.mean(lstm_bits))}
    bits.update(ngram_bits(ids[:validation_start], ids[test_start:], len(alphabet)))
    prompt = np.array([index.get(c, 0) for c in PROMPT], np.int32)
    samples = {}
    for temperature in TEMPERATURES:
        key = jax.random.key(config["seed"] + int(100 * temperature))
        tokens = sample(
            first[1], first[0], prompt, config.get("sample_length", 300), temperature, key
        )
        samples[str(temperature)] = PROMPT + "".join(alphabet[int(t)] for t in tokens)
    results = {
        "config": {**config, "learning_rate": config.get("learning_rate", LEARNING_RATE),
                   "batch_size": config.get("batch_size", BATCH_SIZE), "patience": PATIENCE},
        "corpus": {"characters": len(text), "vocabulary": len(alphabet), "modules": MODULES,
                   "split": {"train": validation_start, "validation": test_start - validation_start,
                             "test": len(ids) - test_start}},
        "test_bits_per_character": bits,
        "lstm_bits_over_seeds": _runs.spread(lstm_bits),
        "seconds": _runs.spread(seconds),
        "history": histories,
        "samples": samples,
    }  # fmt: skip
    _common.write_json(out_dir, results)
    _write_samples(out_dir, samples)
    _figure(bits, histories, out_dir)
    rows = [["lstm", _runs.show(results["lstm_bits_over_seeds"]), _runs.minutes(sum(seconds))]]
    rows += [[name, f"{bits[name]:.3f}", ""] for name in ("bigram", "unigram")]
    _common.write_summary(
        out_dir, "Character LM on stdlib docstrings: held-out bits per character",
        [f"LSTM: mean ± std (min-max) over {config['seeds']} seeds; time is the total over "
         "seeds. Samples (first seed) in `samples.txt`.", "",
         _common.markdown_table(["model", "bits/char", "time"], rows)],
    )  # fmt: skip
    return results


def _write_samples(out_dir, samples: dict) -> None:
    lines = []
    for temperature, text in samples.items():
        lines += [f"=== temperature {temperature} ===", text, ""]
    (Path(out_dir) / "samples.txt").write_text("\n".join(lines))


def _figure(bits: dict, histories: list[list[dict]], out_dir) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for number, history in enumerate(histories):
        epochs = [h["epoch"] for h in history]
        first = number == 0
        ax.plot(
            epochs,
            [h["train_loss"] / math.log(2) for h in history],
            color="C0",
            marker=".",
            lw=1,
            label="LSTM train" if first else None,
        )
        ax.plot(epochs, [h["eval_loss"] / math.log(2) for h in history], color="C1", marker="o",
                lw=1, label="LSTM validation" if first else None)  # fmt: skip
    for name, style in (("bigram", "--"), ("unigram", ":")):
        ax.axhline(bits[name], color="black", ls=style, label=f"{name} (test)")
    ax.set(title="character LM, each seed", xlabel="epoch", ylabel="bits/char")
    ax.legend(fontsize=8)
    _common.save_figure(fig, out_dir, "char_lm.png")


def main(argv=None):
    args = parse_args("char_lm", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
