"""Character-level language model on the Python standard library's docstrings, with temperature
sampling.

The corpus (:func:`docstrings`) is the English text that every Python installation carries: the
docstrings of a fixed list of standard-library modules (:data:`MODULES`, all present from Python
3.11 on) and of their public classes, functions and methods (``inspect.getdoc``), de-duplicated
and restricted to printable ASCII. Docstrings change little between Python releases, not at all
between patch releases as a rule; ``results.json`` records the interpreter and the corpus's
SHA-256. :func:`split_docstrings` shuffles the docstrings with a fixed seed (:data:`SPLIT_SEED`,
the same for every training seed) and deals them, by characters, 85% to training, 5% to
validation (early stopping) and 10% to the held-out test; each part is its docstrings joined by
blank lines. No docstring is in two parts, and all parts come from the same modules (a split by
module position would test on other modules than it trains on).

An ``embedding -> LSTM -> dense`` model is trained on non-overlapping windows of ``window``
characters, each read from a zero state, to predict each next character (softmax
cross-entropy; the recipe of :mod:`experiments.applications._runs`: Adam on a warmup-cosine
schedule, clipping, forget bias 1), over several seeds. The metric is bits per character on the
held-out text: the mean next-character negative log-likelihood in nats divided by ``ln 2``, over
every character of the test text but its first. As is standard for language-model perplexity,
the test text is read as one stream (:func:`stream_bits`): in consecutive chunks of
:data:`EVAL_CHUNK` characters with the LSTM state carried from one chunk to the next, so only
its first character is predicted from a zero state. Validation is read the same way. For
comparison, ``results.json`` also gives the test bits with each ``window`` read from a zero
state (:func:`window_bits`, the evaluation of earlier versions), which charges the model for
the missing context at the start of every window. Unigram and add-one bigram models fitted on
the training text are the baselines. Samples at several temperatures (``logits /
temperature``) are saved in ``samples.txt``.

    python -m experiments.applications.char_lm [--quick | --full] [--out DIR]
"""

import hashlib
import importlib
import inspect
import math
import sys
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
    "quick": {"max_chars": 150_000, "window": 100, "hidden_size": 128, "epochs": 3, "seeds": 1},
    "default": {"max_chars": None, "window": 100, "hidden_size": 128, "epochs": 10, "seeds": 3},
    "full": {"max_chars": None, "window": 100, "hidden_size": 256, "epochs": 15, "seeds": 3},
}
LEARNING_RATE = 2e-2
BATCH_SIZE = 16
PATIENCE = 2
SPLIT_SEED = 0
SPLIT = (0.85, 0.05, 0.10)  # train, validation, test: shares of the corpus's characters
EVAL_CHUNK = 1000
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
SEPARATOR = "\n\n"


def docstrings(max_chars: int | None = None) -> list[str]:
    """The distinct docstrings of :data:`MODULES` and their public members, in module order,
    printable ASCII only (others become spaces); with ``max_chars``, the leading ones whose
    :data:`SEPARATOR`-joined text fits in ``max_chars`` characters."""
    seen, texts = set(), []

    def add(obj):
        doc = inspect.getdoc(obj)
        if doc and doc not in seen:
            seen.add(doc)
            texts.append("".join(c if (" " <= c <= "~" or c == "\n") else " " for c in doc))

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
    if max_chars is None:
        return texts
    kept, total = [], -len(SEPARATOR)
    for text in texts:
        total += len(SEPARATOR) + len(text)
        if total > max_chars:
            break
        kept.append(text)
    return kept


def corpus(max_chars: int | None = None) -> str:
    """:func:`docstrings` joined by blank lines, cut at ``max_chars`` characters."""
    text = SEPARATOR.join(docstrings())
    return text if max_chars is None else text[:max_chars]


def split_docstrings(texts: list[str], fractions=SPLIT, seed: int = SPLIT_SEED) -> tuple[str, ...]:
    """``(train, validation, test)`` texts: ``texts`` shuffled with ``seed`` and dealt in that
    order, by cumulative characters, into parts of about ``fractions`` of the whole; each part
    is its docstrings joined by :data:`SEPARATOR`.

    >>> from experiments.applications.char_lm import SEPARATOR, split_docstrings
    >>> parts = split_docstrings([f"docstring {i}" for i in range(100)], seed=0)
    >>> [len(part.split(SEPARATOR)) for part in parts]
    [85, 5, 10]
    """
    order = np.random.default_rng(seed).permutation(len(texts))
    sizes = np.array([len(texts[i]) + len(SEPARATOR) for i in order], np.float64)
    ends = np.cumsum(sizes) / sizes.sum()  # share of the corpus up to each docstring's end
    bounds = np.cumsum(fractions)
    part = np.minimum(np.searchsorted(bounds, ends - 1e-12), len(fractions) - 1)
    return tuple(SEPARATOR.join(texts[i] for i in order[part == k]) for k in range(len(fractions)))


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


def stream_bits(params, cell, ids: np.ndarray, chunk: int = EVAL_CHUNK) -> float:
    """Bits per character of :func:`language_model`'s next-character predictions along ``ids
    [N]`` (every id but the first), read as one stream: consecutive chunks of ``chunk`` ids,
    the LSTM state zero before the first chunk and carried from each chunk to the next. The
    value does not depend on ``chunk`` (it bounds the compiled scan's length)."""
    embedding, lstm, output = params
    layer = rnnjax.rnn(cell, return_sequences=True, return_state=True)

    @jax.jit
    def nats(state, x, y, length):
        h, state = layer.apply(lstm, embedding.table[x], initial_state=state)
        logits = h @ output.w + output.b[None, None, :]
        return state, train.softmax_cross_entropy(logits, y, lengths=length, reduction="sum")

    inputs, targets = np.asarray(ids[:-1], np.int32), np.asarray(ids[1:], np.int32)
    state, total = cell.initial_state((1,), jnp.float32), 0.0
    for start in range(0, len(inputs), chunk):
        x, y = inputs[start : start + chunk], targets[start : start + chunk]
        pad = chunk - len(x)  # the last chunk is padded (and masked) to keep one compiled shape
        state, value = nats(state, np.pad(x, (0, pad))[None], np.pad(y, (0, pad))[None],
                            np.array([len(x)]))  # fmt: skip
        total += float(value)
    return total / len(targets) / math.log(2)


def window_bits(model, params, ids: np.ndarray, window: int) -> float:
    """Bits per character over :func:`windows` of ``ids``, each window read from a zero state."""
    inputs, targets = windows(ids, window)
    step = jax.jit(lambda p, b: {"loss": train.softmax_cross_entropy(model.apply(p, b[0]), b[1])})
    return train.evaluate(step, params, (inputs, targets), 256)["loss"] / math.log(2)


def train_model(data: dict, vocab: int, config: dict, seed: int):
    """Fit :func:`language_model` on ``data["train"]`` windows with early stopping on
    ``data["validation"]`` (arrays ``[N, T]`` of inputs and targets, e.g. one row: the whole
    validation text as one stream); returns ``(model, cell, params, history)``."""
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


def _one_seed(data: dict, test_ids: np.ndarray, vocab: int, config: dict, seed: int):
    model, cell, params, history = train_model(data, vocab, config, seed)
    bits = stream_bits(params, cell, test_ids)
    return cell, params, history, bits, window_bits(model, params, test_ids, config["window"])


def run(config: dict, out_dir) -> dict:
    """Train over ``seeds`` seeds, score and sample; writes ``results.json``, ``samples.txt``,
    ``char_lm.png``."""
    texts = docstrings(config["max_chars"])
    parts = split_docstrings(texts)
    alphabet = sorted(set("".join(parts)))
    index = {c: i for i, c in enumerate(alphabet)}
    train_ids, validation_ids, test_ids = (np.array([index[c] for c in p], np.int32) for p in parts)
    data = {"train": windows(train_ids, config["window"]),
            "validation": (validation_ids[None, :-1], validation_ids[None, 1:])}  # fmt: skip
    lstm_bits, zero_state_bits, seconds, histories, first = [], [], [], [], None
    for seed in [config["seed"] + k for k in range(config["seeds"])]:
        (cell, params, history, bits, cold), wall = _runs.timed(
            _one_seed, data, test_ids, len(alphabet), config, seed
        )
        lstm_bits.append(bits)
        zero_state_bits.append(cold)
        seconds.append(wall)
        histories.append(history)
        first = (cell, params) if first is None else first
        _common.logger.info("seed %d: held-out %.3f bits/char (%.3f from zero-state windows; %d "
                            "epochs, %.0f s)", seed, bits, cold, len(history), wall)  # fmt: skip
    bits = {"lstm": float(np.mean(lstm_bits))}
    bits.update(ngram_bits(train_ids, test_ids, len(alphabet)))
    prompt = np.array([index.get(c, 0) for c in PROMPT], np.int32)
    samples = {}
    for temperature in TEMPERATURES:
        key = jax.random.key(config["seed"] + int(100 * temperature))
        tokens = sample(
            first[1], first[0], prompt, config.get("sample_length", 300), temperature, key
        )
        samples[str(temperature)] = PROMPT + "".join(alphabet[int(t)] for t in tokens)
    text = SEPARATOR.join(texts)
    results = {
        "config": {**config, "learning_rate": config.get("learning_rate", LEARNING_RATE),
                   "batch_size": config.get("batch_size", BATCH_SIZE), "patience": PATIENCE},
        "corpus": {"characters": len(text), "docstrings": len(texts), "vocabulary": len(alphabet),
                   "sha256": hashlib.sha256(text.encode("ascii")).hexdigest(),
                   "python": ".".join(map(str, sys.version_info[:3])), "modules": MODULES,
                   "split": {"by": "docstring, shuffled", "seed": SPLIT_SEED,
                             "fractions": SPLIT, "characters": {
                                 name: len(part) for name, part in
                                 zip(("train", "validation", "test"), parts, strict=True)}}},
        "evaluation": (
            "bits/char = mean next-character negative log-likelihood (nats) / ln 2 over the "
            "held-out test text (every character but its first), read as one stream in chunks "
            f"of {EVAL_CHUNK} characters with the LSTM state carried across chunks; "
            "lstm_zero_state_window_bits_over_seeds reads each window of the test text from a "
            "zero state instead"),
        "test_bits_per_character": bits,
        "lstm_bits_over_seeds": _runs.spread(lstm_bits),
        "lstm_zero_state_window_bits_over_seeds": _runs.spread(zero_state_bits),
        "seconds": _runs.spread(seconds),
        "history": histories,
        "samples": samples,
    }  # fmt: skip
    _common.write_json(out_dir, results)
    _write_samples(out_dir, samples)
    _figure(bits, histories, out_dir)
    rows = [["LSTM, test read as one stream", _runs.show(results["lstm_bits_over_seeds"]),
             _runs.minutes(sum(seconds))],
            ["LSTM, each window from a zero state",
             _runs.show(results["lstm_zero_state_window_bits_over_seeds"]), ""]]  # fmt: skip
    rows += [[name, f"{bits[name]:.3f}", ""] for name in ("bigram", "unigram")]
    _common.write_summary(
        out_dir, "Character LM on stdlib docstrings: held-out bits per character",
        [f"LSTM ({config['hidden_size']} units): mean ± std (min-max) over {config['seeds']} "
         "seeds; time is the total over seeds (training, early stopping and test evaluation). "
         "Held-out text: 10% of the docstrings by characters, shuffled with a fixed seed. "
         "Samples (first seed) in `samples.txt`.", "",
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
        ax.plot(epochs, [h["train_loss"] / math.log(2) for h in history], color="C0", marker=".",
                lw=1, label="LSTM train" if first else None)  # fmt: skip
        ax.plot(epochs, [h["eval_loss"] / math.log(2) for h in history], color="C1", marker="o",
                lw=1, label="LSTM validation (one stream)" if first else None)  # fmt: skip
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
