"""Inference throughput: the bucketed engine against a per-sequence jitted loop and pad-to-max.

A stream of requests, each ``num_sequences`` random sequences with fresh random lengths in
``[1, max_length]``, is run through three ways of computing every sequence's final hidden state
with the same params:

* ``engine``: :class:`rnnjax.inference.InferenceEngine` (power-of-two length buckets, batches of
  power-of-two sizes, sharded over all local devices);
* ``per_sequence``: ``jax.jit(rnnjax.scan)`` called once per sequence, as a thread-pool loop over
  sequences would be written; it compiles once per distinct length;
* ``pad_to_max``: every request padded to ``max_length`` and run as one batch of ``rnnjax.rnn``
  with lengths; it compiles once, and computes every sequence for ``max_length`` steps.

Two length distributions: ``uniform`` on ``[1, max_length]`` and ``long_tail`` (log-uniform: most
sequences short, a few long, as in text or logs). Reported per cell (vanilla RNN, LSTM) and
distribution: sequences per second on the first request (compilations included: ``cold``), over
the whole stream (``stream``), and on the last request run again once everything is compiled
(``warm``, best of five, per wall-clock second and per CPU second of the process); the
compilations after the first request and after the stream; and the largest difference from the
engine's final states (``max_abs_difference``).

    python -m experiments.inference_engine [--quick | --full] [--out DIR]
"""

import time

import jax
import numpy as np

import rnnjax
from experiments import _common
from rnnjax.inference import InferenceEngine

SIZES = {
    "quick": {
        "num_sequences": 64,
        "max_length": 32,
        "hidden_size": 32,
        "input_size": 8,
        "requests": 4,
    },
    "default": {
        "num_sequences": 256,
        "max_length": 100,
        "hidden_size": 64,
        "input_size": 16,
        "requests": 6,
    },
    "full": {
        "num_sequences": 2048,
        "max_length": 512,
        "hidden_size": 128,
        "input_size": 32,
        "requests": 10,
    },
}
CELLS = {"simple_rnn": rnnjax.simple_rnn, "lstm": rnnjax.lstm}


DISTRIBUTIONS = ("uniform", "long_tail")


def requests(config: dict, distribution: str) -> list[list[np.ndarray]]:
    """``requests`` lists of ``num_sequences`` float32 arrays ``[length, input_size]``."""
    rng = np.random.default_rng(config["seed"])
    size, longest = config["num_sequences"], config["max_length"]
    stream = []
    for _ in range(config["requests"]):
        if distribution == "uniform":
            lengths = rng.integers(1, longest + 1, size=size)
        else:
            lengths = np.exp(rng.uniform(0.0, np.log(longest + 1), size=size)).astype(int)
        lengths = np.clip(lengths, 1, longest)
        stream.append(
            [rng.normal(size=(n, config["input_size"])).astype(np.float32) for n in lengths]
        )
    return stream


def engine_method(cell, params, config):
    engine = InferenceEngine(cell, params)
    return (lambda batch: engine.run(batch).final_state.h), lambda: engine.stats.compilations


def per_sequence_method(cell, params, config):
    traces = [0]

    def final_h(p, xs):
        traces[0] += 1
        return rnnjax.scan(cell, p, xs)[0].h

    jitted = jax.jit(final_h)

    def run(batch):
        return np.stack([np.asarray(h) for h in [jitted(params, xs) for xs in batch]])

    return run, lambda: traces[0]


def pad_to_max_method(cell, params, config):
    traces = [0]
    layer = rnnjax.rnn(cell)

    def apply(p, x, lengths):
        traces[0] += 1
        return layer.apply(p, x, lengths)

    jitted = jax.jit(apply)

    def run(batch):
        padded = np.zeros((len(batch), config["max_length"], config["input_size"]), np.float32)
        for row, xs in enumerate(batch):
            padded[row, : len(xs)] = xs
        return np.asarray(jitted(params, padded, np.array([len(xs) for xs in batch])))

    return run, lambda: traces[0]


METHODS = {
    "engine": engine_method,
    "per_sequence": per_sequence_method,
    "pad_to_max": pad_to_max_method,
}


def measure(run, compilations, stream) -> tuple[dict, np.ndarray]:
    """Throughput cold, over the stream and warm (the last request again); compilations."""
    seconds, counts, outputs = [], [], []
    for batch in _common.progress(stream, "requests"):
        start = time.perf_counter()
        outputs.append(run(batch))
        seconds.append(time.perf_counter() - start)
        counts.append(compilations())
    warm = warm_cpu = float("inf")
    for _ in range(5):  # best of five: the least disturbed by other load
        start, start_cpu = time.perf_counter(), time.process_time()
        run(stream[-1])
        warm = min(warm, time.perf_counter() - start)
        warm_cpu = min(warm_cpu, time.process_time() - start_cpu)
    size = len(stream[0])
    return {
        "cold_sequences_per_second": size / seconds[0],
        "stream_sequences_per_second": size * len(seconds) / sum(seconds),
        "warm_sequences_per_second": size / warm,
        "warm_cpu_sequences_per_second": size / warm_cpu,
        "seconds_per_request": seconds,
        "compilations_after_each_request": counts,
        "mean_length": float(np.mean([len(xs) for batch in stream for xs in batch])),
    }, np.concatenate(outputs)


def run(config: dict, out_dir) -> dict:
    results, rows = {}, []
    for distribution in DISTRIBUTIONS:
        stream = requests(config, distribution)
        for name, make_cell in CELLS.items():
            cell = make_cell(config["hidden_size"])
            params = cell.init(jax.random.key(config["seed"]), config["input_size"])
            reference = None
            for method, build in METHODS.items():
                numbers, outputs = measure(*build(cell, params, config), stream)
                reference = outputs if reference is None else reference
                numbers["max_abs_difference"] = float(np.max(np.abs(outputs - reference)))
                results.setdefault(distribution, {}).setdefault(name, {})[method] = numbers
                counts = numbers["compilations_after_each_request"]
                rows.append(
                    [distribution, name, method]
                    + [
                        numbers[f"{k}_sequences_per_second"]
                        for k in ("cold", "stream", "warm", "warm_cpu")
                    ]
                    + [counts[0], counts[-1], numbers["max_abs_difference"]]
                )
    header = ["lengths", "cell", "method", "cold seq/s", "stream seq/s", "warm seq/s"]
    header += ["warm seq/CPU-s"]
    header += ["compiles (1st)", "compiles (all)", "max abs diff"]
    body = [
        f"{config['requests']} requests of {config['num_sequences']} sequences with lengths in "
        f"[1, {config['max_length']}] (uniform, or log-uniform: long_tail), "
        f"H = {config['hidden_size']}, D = {config['input_size']}, float32, "
        f"{jax.local_device_count()} local device(s). Cold: the first request, compilations "
        "included; stream: all requests (fresh lengths each); warm: the last request again, "
        "nothing left to compile (best of 5), per wall-clock second and per second of this "
        "process's CPU time (all threads; steadier than wall time on a shared machine). "
        "Differences are against the engine's final states.",
        "",
        _common.markdown_table(header, rows),
    ]
    _common.write_summary(out_dir, "Inference engine throughput", body)
    _common.write_json(out_dir, {"config": config, "devices": jax.local_device_count(), **results})
    return results


def main(argv=None):
    args = _common.parse_args("inference_engine", __doc__, argv)
    run(_common.pick_size(SIZES, args), args.out)


if __name__ == "__main__":
    main()
