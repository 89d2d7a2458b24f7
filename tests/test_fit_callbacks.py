"""The open ``fit``: custom steps (plain, data_parallel, truncated BPTT), callbacks, metric
writers, aux metrics and the learning rate in the history, non-finite losses, compile time
apart from throughput, logging, and bad arguments."""

import csv
import json
import logging
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import distributed, train
from rnnjax.train import _fit
from tests.tolerances import assert_close

N, D = 48, 3
W_TRUE = np.array([1.0, -2.0, 0.5], np.float32)


def _data(nan_at=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = x @ W_TRUE
    if nan_at is not None:
        y[nan_at] = np.nan
    return x, y


def _loss(w, batch, key):
    return jnp.mean((batch[0] @ w - batch[1]) ** 2)


def _loss_aux(w, batch, key):
    error = batch[0] @ w - batch[1]
    return jnp.mean(error**2), {"mae": jnp.mean(jnp.abs(error))}


def _run(loss_fn=_loss, data=None, optimizer=None, **kwargs):
    options = {"epochs": 2, "batch_size": 16, "progress": False, **kwargs}
    optimizer = optimizer or optax.sgd(0.1)
    return train.fit(loss_fn, jnp.zeros(D), optimizer, _data() if data is None else data, **options)


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


def test_aux_metrics_reach_the_history():
    x, y = _data()
    result = _run(_loss_aux, has_aux=True, epochs=1, batch_size=N)  # one step, at w = 0
    record = result.history[0]
    assert np.isclose(record["train_mae"], np.mean(np.abs(y)), rtol=1e-6)
    assert np.isclose(record["train_loss"], np.mean(y.astype(np.float64) ** 2), rtol=1e-6)


def test_the_learning_rate_is_logged_when_the_optimizer_exposes_it():
    schedule = optax.piecewise_constant_schedule(0.1, {3: 0.1})  # 0.1, then 0.01 from step 3
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    history = _run(optimizer=optimizer).history  # 3 steps per epoch
    assert np.isclose(history[0]["learning_rate"], 0.1) and np.isclose(
        history[1]["learning_rate"], 0.01
    )
    assert "learning_rate" not in _run(epochs=1).history[0]


def _epochs_with_a_bad_batch(bad_epoch=2, bad_batch=2):
    x, y = _data()
    bad_y = y.copy()
    bad_y[16 * (bad_batch - 1)] = np.nan

    def data(epoch, skip_bad=False):
        batches = []
        for index in range(3):
            targets = bad_y if epoch == bad_epoch and index == bad_batch - 1 else y
            if skip_bad and targets is bad_y:
                continue
            batches.append((x[16 * index : 16 * index + 16], targets[16 * index : 16 * index + 16]))
        return batches

    return data


def test_a_nonfinite_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    data = _epochs_with_a_bad_batch()
    with pytest.raises(
        FloatingPointError,
        match=r"the loss is nan at epoch 2, step 2 of the epoch \(global step 5\).*"
        r"on_nonfinite='skip'",
    ):
        _run(data=data, epochs=3, checkpoint_dir=tmp_path)
    assert train.checkpoint_steps(tmp_path) == [1]
    restored, step = train.restore_checkpoint(
        tmp_path, {"train_state": train.TrainState.create(jnp.zeros(D), optax.sgd(0.1))}
    )
    assert step == 1
    assert _bits(restored["train_state"].params) == _bits(_run(data=data, epochs=1).params)
    train.save_checkpoint(tmp_path, {"w": jnp.zeros(1)}, 9)  # the lock was released


def test_a_second_fit_on_a_directory_in_use_fails_at_once(tmp_path):
    with train.CheckpointManager(tmp_path):
        with pytest.raises(train.CheckpointLockError, match=r"is locked by pid \d+ on host"):
            _run(checkpoint_dir=tmp_path)
    assert train.checkpoint_steps(tmp_path) == []


def test_a_nonfinite_loss_can_be_skipped(caplog):
    data = _epochs_with_a_bad_batch()
    caplog.set_level(logging.WARNING, logger="rnnjax.train._fit")
    skipped = _run(data=data, epochs=3, on_nonfinite="skip")
    assert [r["skipped_steps"] for r in skipped.history] == [0, 1, 0]
    assert "skipping step 2 of epoch 2: the loss is nan" in caplog.text
    clean = _run(data=lambda epoch: data(epoch, skip_bad=True), epochs=3)
    assert _bits(skipped.params) == _bits(clean.params)  # as if the batch were not there
    assert np.all(np.isfinite(skipped.params))


class _Recorder(train.Callback):
    def __init__(self, stop_at_step=None, stop_at_epoch=None):
        self.steps, self.epochs = [], []
        self.stop_at_step, self.stop_at_epoch = stop_at_step, stop_at_epoch

    def on_step_end(self, step, metrics, state):
        self.steps.append((step, float(metrics["loss"]), int(state.step)))
        return step == self.stop_at_step

    def on_epoch_end(self, epoch, record, state):
        self.epochs.append((epoch, record["train_loss"]))
        return epoch == self.stop_at_epoch


def test_callbacks_see_every_step_and_epoch_and_can_stop():
    recorder = _Recorder()
    result = _run(callbacks=[recorder], epochs=2)
    assert [s[0] for s in recorder.steps] == [1, 2, 3, 4, 5, 6] == [s[2] for s in recorder.steps]
    assert [e[0] for e in recorder.epochs] == [1, 2]
    for epoch, record in zip(recorder.epochs, result.history, strict=True):
        assert epoch[1] == record["train_loss"]
    assert np.isclose(result.history[0]["train_loss"], np.mean([s[1] for s in recorder.steps[:3]]))
    by_step = _Recorder(stop_at_step=4)
    stopped = _run(callbacks=[by_step], epochs=5)
    assert stopped.stopped_early and len(stopped.history) == 2 and len(by_step.steps) == 4
    by_epoch = _Recorder(stop_at_epoch=1)
    assert _run(callbacks=[by_epoch], epochs=5).stopped_early and len(by_epoch.epochs) == 1


def _tensorboard_scalars(directory):
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in directory.iterdir():
        data = path.read_bytes()
        while data:  # TFRecord: length, its CRC, the Event proto, its CRC
            (length,) = struct.unpack("<Q", data[:8])
            event = event_pb2.Event.FromString(data[12 : 12 + length])
            data = data[16 + length :]
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_writers_record_every_epoch(tmp_path):
    writers = [train.CSVWriter(tmp_path / "m.csv"), train.JSONLWriter(tmp_path / "m.jsonl")]
    history = _run(writers=writers, epochs=2).history
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [line.pop("step") for line in lines] == [3, 6]
    assert lines == [{k: float(v) for k, v in r.items()} for r in history]
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [int(row["step"]) for row in rows] == [3, 6]
    assert [float(row["train_loss"]) for row in rows] == [r["train_loss"] for r in history]


def test_tensorboard_writer_records_every_epoch(tmp_path):
    pytest.importorskip("tensorboardX")
    writer = train.TensorBoardWriter(tmp_path / "tb")
    history = _run(writers=[writer], epochs=2).history
    writer.close()
    scalars = _tensorboard_scalars(tmp_path / "tb")
    assert [step for step, _ in scalars["train_loss"]] == [3, 6]
    assert np.allclose([v for _, v in scalars["train_loss"]], [r["train_loss"] for r in history])


def test_tensorboard_writer_without_tensorboardx_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(
        ImportError, match=r"TensorBoardWriter needs tensorboardX.*pip install tensorboardX"
    ):
        train.TensorBoardWriter(tmp_path)


def test_any_step_goes_through_fit():
    expected = _run()
    plain = train.fit(None, jnp.zeros(D), optax.sgd(0.1), _data(), epochs=2, batch_size=16,
                      progress=False, step=train.make_train_step(_loss, optax.sgd(0.1)))  # fmt: skip
    assert _bits(plain.params) == _bits(expected.params)

    def per_example(w, batch, key):
        return (batch[0] @ w - batch[1]) ** 2

    mesh = distributed.make_mesh()  # this process's devices
    sharded = distributed.data_parallel(
        train.make_train_step(per_example, optax.sgd(0.1), jit=False), mesh,
        batch_argnums=1, remainder="pad",
    )  # fmt: skip
    result = train.fit(None, jnp.zeros(D), optax.sgd(0.1), _data(), epochs=2, batch_size=12,
                       progress=False, step=sharded)  # fmt: skip
    reference = _run(batch_size=12)
    assert_close(result.params, reference.params, dtype=np.float32, scale=10)
    assert [r["train_loss"] for r in result.history] == pytest.approx(
        [r["train_loss"] for r in reference.history], rel=1e-5
    )


def test_a_truncated_bptt_step_goes_through_fit():
    T, H, K = 6, 4, 3
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(N, T, 2)).astype(np.float32), rng.normal(size=(N, T)).astype(np.float32)
    layer = rnnjax.rnn(rnnjax.gru(H), return_sequences=True, return_state=True)

    def loss_fn(params, state, chunk, key):
        ys, state = layer.apply(params, chunk[0], initial_state=state)
        return jnp.mean((ys[..., 0] - chunk[1]) ** 2), state

    params = layer.init(jax.random.key(0), (T, 2))
    optimizer = optax.adam(1e-2)
    state0 = rnnjax.gru(H).initial_state(batch_shape=(16,))
    chunk_step = train.make_tbptt_step(loss_fn, optimizer, state0)
    step = train.tbptt_train_step(chunk_step, state0, K)
    result = train.fit(None, params, optimizer, (x, y), epochs=2, batch_size=16, progress=False,
                       seed=3, step=step)  # fmt: skip
    # By hand: fit's batches and keys, each batch cut into chunks, the state carried across them.
    train_state, n = train.TrainState.create(params, optimizer), 0
    for epoch in (1, 2):
        order = np.random.default_rng((3, epoch)).permutation(N)
        for start in range(0, N, 16):
            index = order[start : start + 16]
            chunks = train.time_chunks((x[index], y[index]), K)
            key = jax.random.fold_in(jax.random.key(3), n)
            train_state, _, _ = train.run_tbptt(chunk_step, train_state, state0, chunks, key=key)
            n += 1
    assert _bits(result.params) == _bits(train_state.params)
    assert int(train_state.step) == 2 * 3 * (T // K)


class _Clock:
    """A fake ``time.perf_counter`` that only the step moves: 100 s for its first call, 1 s after."""

    def __init__(self):
        self.now, self.calls = 0.0, 0

    def __call__(self):
        return self.now

    def step(self, state, batch, key):
        self.now += 100.0 if self.calls == 0 else 1.0
        self.calls += 1
        return state._replace(step=state.step + 1), {
            "loss": jnp.zeros(()),
            "grad_norm": jnp.ones(()),
        }


def test_compilation_is_timed_apart_from_throughput(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(_fit.time, "perf_counter", clock)
    history = train.fit(None, jnp.zeros(D), optax.sgd(0.1), _data(), epochs=2, batch_size=16,
                        progress=False, step=clock.step).history  # fmt: skip
    assert history[0]["compile_seconds"] == 100.0 and history[1]["compile_seconds"] == 0.0
    assert history[0]["examples_per_second"] == 32 / 2.0  # the steps after the first
    assert history[1]["examples_per_second"] == 48 / 3.0
    assert history[0]["seconds"] == 102.0


def test_epochs_are_logged_at_info_not_printed(caplog, capsys):
    caplog.set_level(logging.INFO, logger="rnnjax.train._fit")
    _run(epochs=2)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert messages[0].startswith("epoch 1/2: grad_norm=") and "train_loss=" in messages[0]
    assert messages[1].startswith("epoch 2/2:")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive int; got 0"),
        ({"batch_size": -4}, ValueError, r"batch_size must be a positive int; got -4"),
        ({"batch_size": 2.5}, TypeError, r"batch_size must be an int or None; got 2\.5 \(float\)"),
        ({"batch_size": True}, TypeError, r"batch_size must be an int or None; got True"),
        ({"epochs": 2.5}, TypeError, r"epochs must be an int; got 2\.5 \(float\)"),
        ({"epochs": -1}, ValueError, r"epochs must be a positive int; got -1"),
        ({"seed": -1}, ValueError, r"seed must be an int >= 0; got -1"),
        ({"seed": "0"}, TypeError, r"seed must be an int; got '0' \(str\)"),
        ({"patience": 0}, ValueError, r"patience must be a positive int; got 0"),
        ({"min_delta": -0.1}, ValueError, r"min_delta must be finite and >= 0; got -0\.1"),
        ({"min_delta": float("nan")}, ValueError, r"min_delta must be finite and >= 0; got nan"),
        ({"min_delta": "0"}, TypeError, r"min_delta must be a real number; got str"),
        ({"monitor": 3}, TypeError, r"monitor must be a metric name \(str\) or None; got 3"),
        ({"mode": "up"}, ValueError, r"mode must be 'min' or 'max'; got 'up'"),
        ({"on_nonfinite": "ignore"}, ValueError, r"on_nonfinite must be one of \('raise', 'skip'\); got 'ignore'"),
        ({"step": 3}, TypeError, r"step must be callable, step\(state, batch, key\).*; got int"),
        ({"step": lambda s, b, k: (s, {})}, ValueError, r"pass loss_fn or step, not both"),
        ({"callbacks": _Recorder()}, TypeError, r"callbacks must be a list or tuple of callbacks; got _Recorder"),
        ({"callbacks": [object()]}, TypeError, r"callbacks\[0\] \(object\) has neither on_step_end nor on_epoch_end"),
        ({"writers": [object()]}, TypeError, r"writers\[0\] \(object\) has no write\(step, metrics\)"),
        ({"writers": "m.csv"}, TypeError, r"writers must be a list or tuple of writers; got str"),
        ({"checkpoint_dir": 3}, TypeError, r"checkpoint_dir must be a path \(str or os\.PathLike\) or None; got int"),
        ({"eval_fn": 3, "eval_data": _data()}, TypeError, r"eval_fn must be callable; got int"),
    ],
)  # fmt: skip
def test_bad_arguments_name_themselves(kwargs, error, match):
    with pytest.raises(error, match=match):
        _run(**kwargs)


def test_a_missing_loss_fn_without_step_and_a_step_without_loss():
    with pytest.raises(TypeError, match=r"loss_fn must be callable; got NoneType"):
        _run(loss_fn=None)
    with pytest.raises(ValueError, match=r"'loss' among the metrics; got metrics \['error'\]"):
        _run(loss_fn=None, step=lambda state, batch, key: (state, {"error": 0.0}))
