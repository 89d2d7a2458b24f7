"""Sequence to sequence with attention: translate dates written in words to ISO form.

Pairs such as ``"the 3rd of may 1998" -> "1998-05-03"`` are generated on the fly
(:func:`date_pairs`) from random dates in 1900-2099, in six formats: ``"3 may 1998"``,
``"may 3, 1998"``, ``"the 3rd of may 1998"``, ``"the third of may, 1998"``,
``"sunday 3 may 1998"`` and ``"may the third 1998"``. Test dates never occur in training.

The encoder embeds the characters and reads them with a bidirectional GRU (``lengths`` mask the
padding); the decoder is a GRU started from a projection of the encoder's final states, trained
with teacher forcing (masked softmax cross-entropy, Adam on a warmup-cosine schedule,
clipping, early stopping on held-out validation dates) and decoded greedily. Three
decoders are compared by exact-match accuracy on held-out dates:

* ``none``: no attention, the encoder's final states are all the decoder hears (Cho et al., 2014);
* ``bahdanau``: additive attention from the previous decoder state; the context joins the
  decoder's input and its output layer (Bahdanau et al., 2015; :func:`rnnjax.bahdanau_attention`);
* ``luong``: dot-product attention from the current decoder state, ``tanh(W [context; h])``
  before the output layer (Luong et al., 2015, without input feeding;
  :func:`rnnjax.luong_attention`).

The attention weights of a few test dates are drawn as heatmaps (``attention.png``).

    python -m experiments.applications.dates_seq2seq [--quick | --full] [--out DIR]
"""

import datetime

import jax
import matplotlib.pyplot as plt
import numpy as np

import rnnjax.train as train
from experiments import _common
from experiments.applications import _runs, parse_args
from experiments.applications._seq2seq import DECODERS, seq2seq

SIZES = {
    "quick": {"num_train": 4000, "num_test": 1000, "hidden_size": 32, "epochs": 6, "seeds": 1},
    "default": {"num_train": 10000, "num_test": 2000, "hidden_size": 64, "epochs": 8, "seeds": 3},
    "full": {"num_train": 50000, "num_test": 5000, "hidden_size": 128, "epochs": 20, "seeds": 3},
}
LEARNING_RATE = 5e-3
PATIENCE = 3
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")  # fmt: skip
ORDINAL_WORDS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
                 "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth",
                 "sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth")  # fmt: skip
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
INPUT_ALPHABET = " ,-0123456789abcdefghijklmnopqrstuvwxyz"  # id 0 is padding
OUTPUT_ALPHABET = "0123456789-"  # id 11 is the start token
TARGET_LENGTH = 10


def ordinal_word(day: int) -> str:
    """``21 -> "twenty-first"``."""
    if day <= 20:
        return ORDINAL_WORDS[day - 1]
    if day == 30:
        return "thirtieth"
    return ("twenty-" if day < 30 else "thirty-") + ORDINAL_WORDS[day % 10 - 1]


def ordinal_number(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def spell(date: datetime.date, style: int) -> str:
    """``date`` written in one of six styles (``style`` in 0..5)."""
    d, month, y = date.day, MONTHS[date.month - 1], date.year
    return (
        f"{d} {month} {y}",
        f"{month} {d}, {y}",
        f"the {ordinal_number(d)} of {month} {y}",
        f"the {ordinal_word(d)} of {month}, {y}",
        f"{WEEKDAYS[date.weekday()]} {d} {month} {y}",
        f"{month} the {ordinal_word(d)} {y}",
    )[style]


def date_pairs(num: int, seed: int, exclude: set | None = None):
    """``num`` pairs ``(text, iso, date)`` of random dates in 1900-2099 not in ``exclude``."""
    rng = np.random.default_rng(seed)
    start, span = datetime.date(1900, 1, 1).toordinal(), 365 * 200
    pairs = []
    while len(pairs) < num:
        date = datetime.date.fromordinal(start + int(rng.integers(span)))
        if exclude is not None and date in exclude:
            continue
        pairs.append((spell(date, int(rng.integers(6))), date.isoformat(), date))
    return pairs


def encode(pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(inputs [N, T] ids padded with 0, lengths [N], targets [N, 10] ids)``."""
    index = {c: i + 1 for i, c in enumerate(INPUT_ALPHABET)}
    inputs, lengths = train.pad_sequences([[index[c] for c in text] for text, _, _ in pairs])
    targets = np.array([[OUTPUT_ALPHABET.index(c) for c in iso] for _, iso, _ in pairs])
    return inputs.astype(np.int32), lengths, targets.astype(np.int32)


def decode_text(ids) -> str:
    return "".join(OUTPUT_ALPHABET[int(i)] if i < len(OUTPUT_ALPHABET) else "?" for i in ids)


def train_decoder(kind, data, config):
    """Fit one :func:`seq2seq` model on ``data["train"]`` (early stopping on
    ``data["validation"]`` when given); returns ``(model, params, history)``."""
    model = seq2seq(
        kind, len(INPUT_ALPHABET) + 1, len(OUTPUT_ALPHABET) + 1, config["hidden_size"],
        start_id=len(OUTPUT_ALPHABET),
    )  # fmt: skip
    params = model.init(jax.random.key(config["seed"]))

    def loss(params, batch, key):
        inputs, lengths, targets = batch
        return train.softmax_cross_entropy(model.teacher_forced(params, inputs, lengths, targets),
                                           targets)  # fmt: skip

    def metrics(params, batch):
        return {"loss": loss(params, batch, None)}

    batch_size = config.get("batch_size", 64)
    steps = config["epochs"] * _runs.steps_per_epoch(len(data["train"][0]), batch_size)
    validation = data.get("validation")
    result = train.fit(
        loss, params, _runs.optimizer(config.get("learning_rate", LEARNING_RATE), steps),
        data["train"], epochs=config["epochs"], batch_size=batch_size, seed=config["seed"],
        eval_fn=None if validation is None else metrics, eval_data=validation,
        patience=PATIENCE, restore_best=validation is not None,
        progress=_common.show_progress(),
    )  # fmt: skip
    return model, result.params, result.history


def run(config: dict, out_dir) -> dict:
    """Train the three decoders over ``seeds`` seeds; writes ``results.json``, ``attention.png``,
    ``summary.md``."""
    train_pairs = date_pairs(config["num_train"], config["seed"])
    seen = {date for _, _, date in train_pairs}
    test_pairs = date_pairs(config["num_test"], config["seed"] + 1, exclude=seen)
    validation_pairs = date_pairs(
        config["num_test"] // 2, config["seed"] + 2, exclude=seen | {d for _, _, d in test_pairs}
    )
    data = {"train": encode(train_pairs), "validation": encode(validation_pairs)}
    inputs, lengths, targets = encode(test_pairs)
    accuracy, character_accuracy, examples, heatmaps = {}, {}, {}, {}
    seconds, histories = {}, {}
    seeds = [config["seed"] + k for k in range(config["seeds"])]
    for kind in config.get("decoders", DECODERS):
        accuracy[kind], character_accuracy[kind], seconds[kind], histories[kind] = [], [], [], []
        for seed in seeds:
            (model, params, history), wall = _runs.timed(
                train_decoder, kind, data, {**config, "seed": seed}
            )
            predicted, weights = jax.jit(model.greedy)(params, inputs, lengths)
            predicted = np.asarray(predicted)
            accuracy[kind].append(float(np.mean(np.all(predicted == targets, axis=1))))
            character_accuracy[kind].append(float(np.mean(predicted == targets)))
            seconds[kind].append(wall)
            histories[kind].append(history)
            _common.logger.info("%s seed %d: exact match %.4f (%.0f s)", kind, seed,
                                accuracy[kind][-1], wall)  # fmt: skip
            if seed != seeds[0]:
                continue
            examples[kind] = [
                {"input": text, "target": iso, "output": decode_text(row)}
                for (text, iso, _), row in zip(test_pairs[:8], predicted[:8], strict=True)
            ]
            if kind != "none":
                heatmaps[kind] = np.asarray(weights[:3])
    results = {
        "config": {
            **config,
            "learning_rate": config.get("learning_rate", LEARNING_RATE),
            "patience": PATIENCE,
            "num_validation": len(validation_pairs),
        },  # fmt: skip
        "exact_match": {kind: _runs.spread(v) for kind, v in accuracy.items()},
        "character_accuracy": {kind: _runs.spread(v) for kind, v in character_accuracy.items()},
        "seconds": {kind: _runs.spread(v) for kind, v in seconds.items()},
        "baseline_most_common_output": _baseline(train_pairs, test_pairs),
        "history": histories,
        "examples": examples,
    }
    _common.write_json(out_dir, results)
    if heatmaps:
        _figure(heatmaps, test_pairs[:3], lengths[:3], out_dir)
    _curves(histories, out_dir)
    rows = [[kind, _runs.show(results["exact_match"][kind]),
             _runs.show(results["character_accuracy"][kind]), _runs.minutes(sum(seconds[kind]))]
            for kind in accuracy]  # fmt: skip
    baseline = results["baseline_most_common_output"]
    rows.append(["most common output", f"{baseline['exact_match']:.3f}",
                 f"{baseline['character_accuracy']:.3f}", ""])  # fmt: skip
    _common.write_summary(
        out_dir, "Dates in words to ISO: held-out accuracy",
        [f"Mean ± std (min-max) over seeds {seeds}; time is the total over seeds.", "",
         _common.markdown_table(["decoder", "exact match", "per character", "time"], rows)],
    )  # fmt: skip
    return results


def _curves(histories, out_dir):
    """Validation loss by epoch for each decoder and seed (``curves.png``)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for index, (kind, runs) in enumerate(histories.items()):
        for number, history in enumerate(runs):
            if "eval_loss" in history[0]:
                ax.plot(
                    [h["epoch"] for h in history],
                    [h["eval_loss"] for h in history],
                    color=f"C{index}",
                    marker=".",
                    label=kind if number == 0 else None,
                )
    ax.set(title="dates: validation cross-entropy per character", xlabel="epoch",
           ylabel="nats", yscale="log")  # fmt: skip
    ax.legend(fontsize=8)
    _common.save_figure(fig, out_dir, "curves.png")


def _baseline(train_pairs, test_pairs) -> dict:
    """Per-position most common training character: what a decoder that ignores its input gets."""
    train_ids = np.array([[OUTPUT_ALPHABET.index(c) for c in iso] for _, iso, _ in train_pairs])
    test_ids = np.array([[OUTPUT_ALPHABET.index(c) for c in iso] for _, iso, _ in test_pairs])
    guess = np.array([np.bincount(column).argmax() for column in train_ids.T])
    return {
        "exact_match": float(np.mean(np.all(test_ids == guess[None, :], axis=1))),
        "character_accuracy": float(np.mean(test_ids == guess[None, :])),
    }


def _figure(heatmaps, pairs, lengths, out_dir):
    kinds = list(heatmaps)
    fig, axes = plt.subplots(
        len(pairs), len(kinds), figsize=(6.5 * len(kinds), 2.6 * len(pairs)), squeeze=False
    )
    for row, ((text, iso, _), length) in enumerate(zip(pairs, lengths, strict=True)):
        for col, kind in enumerate(kinds):
            ax = axes[row, col]
            ax.imshow(heatmaps[kind][row][:, :length], cmap="viridis", aspect="auto", vmin=0)
            ax.set_xticks(range(length), list(text), fontsize=7)
            ax.set_yticks(range(TARGET_LENGTH), list(iso), fontsize=7)
            ax.set_title(f"{kind}: {text!r}", fontsize=9)
    fig.tight_layout()
    _common.save_figure(fig, out_dir, "attention.png")


def main(argv=None):
    args = parse_args("dates_seq2seq", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
