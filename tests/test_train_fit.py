"""fit: bit-identical results for one seed, early stopping, evaluation, checkpoints, data kinds,
and resuming a stopped run bit for bit."""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import train

N, T, D, H = 48, 6, 2, 8
LEGACY_FIT = Path(__file__).parent / "data" / "legacy_fit"
_OPTIMIZER = train.with_clipping(optax.adam(1e-2), max_norm=1.0)


def _problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, T, D)).astype(np.float32)
    y = (x[:, :, 0].sum(1, keepdims=True) > 0).astype(np.float32)
    return x, y


def _make_model(key=None):
    cell = train.variational_dropout(rnnjax.gru(H), 0.2, key=key)
    return rnnjax.serial(rnnjax.rnn(cell), rnnjax.dense(1, jax.nn.sigmoid))


def _loss(params, batch, key):
    x, y = batch
    return train.binary_cross_entropy(_make_model(key).apply(params, x), y)


def _metrics(params, batch):
    x, y = batch
    p = _make_model().apply(params, x)
    return {"loss": train.binary_cross_entropy(p, y), "accuracy": train.binary_accuracy(p, y)}


def _fit(seed=0, **kwargs):
    params = _make_model().init(jax.random.key(1), (T, D))
    optimizer = train.with_clipping(optax.adam(1e-2), max_norm=1.0)
    options = {"epochs": 2, "batch_size": 16, "seed": seed, "progress": False, **kwargs}
    return train.fit(_loss, params, optimizer, _problem(), **options)


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


def test_same_seed_same_params_to_the_last_bit():
    first, second, other = _fit(seed=3), _fit(seed=3), _fit(seed=4)
    assert _bits(first.params) == _bits(second.params)
    assert _bits(first.opt_state) == _bits(second.opt_state)
    assert _bits(first.params) != _bits(other.params)
    record = first.history[-1]
    assert (
        record["epoch"] == 2
        and record["grad_norm"] > 0
        and record["grad_norm_max"] >= record["grad_norm"]
    )
    assert record["examples_per_second"] > 0


def test_evaluation_and_early_stopping_restore_best():
    x, y = _problem()
    never_better = lambda params, batch: {"constant": jnp.zeros(())}  # noqa: E731
    result = _fit(
        epochs=10, eval_fn=never_better, eval_data=(x, y), monitor="eval_constant", patience=2
    )
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    one_epoch = _fit(epochs=1)
    assert _bits(result.params) == _bits(one_epoch.params)
    scored = _fit(eval_fn=_metrics, eval_data=(x[:20], y[:20]))  # 20 = 16 + a remainder batch
    assert 0.0 <= scored.history[-1]["eval_accuracy"] <= 1.0
    evaluate = train.make_eval_step(_metrics)
    whole = evaluate(scored.params, (x[:20], y[:20]))
    assert np.isclose(scored.history[-1]["eval_loss"], float(whole["loss"]), rtol=1e-5)


def test_callable_data_checkpoints_and_progress(tmp_path, capsys):
    x, y = _problem()

    def batches(epoch):
        return [(x[i : i + 16], y[i : i + 16]) for i in range(0, N, 16)]

    result = _fit(epochs=2, checkpoint_dir=str(tmp_path), progress=True, restore_best=False)
    assert train.checkpoint_steps(tmp_path) == [1, 2]
    optimizer = train.with_clipping(optax.adam(1e-2), max_norm=1.0)
    template = {"train_state": train.TrainState.create(result.params, optimizer), "epoch": 0}
    restored, step = train.restore_checkpoint(tmp_path, template)
    assert step == 2 == restored["epoch"]
    assert int(restored["train_state"].step) == 2 * (N // 16)
    assert _bits(restored["train_state"].params) == _bits(result.params)
    callable_result = train.fit(
        _loss, result.params, optax.adam(1e-2), batches, epochs=1, progress=False
    )
    assert callable_result.history[0]["epoch"] == 1
    assert "epoch 2/2" in capsys.readouterr().err


def test_errors():
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'; got 'up'"):
        _fit(mode="up")
    with pytest.raises(ValueError, match="eval_fn and eval_data go together"):
        _fit(eval_fn=_metrics)
    with pytest.raises(ValueError, match="batch_size is required when the data are arrays"):
        _fit(batch_size=None)
    with pytest.raises(ValueError, match="batch_size=64 exceeds the 48 training examples"):
        _fit(batch_size=64)
    with pytest.raises(ValueError, match=r"monitor='eval_loss' is not among the metrics"):
        _fit(monitor="eval_loss")
    with pytest.raises(ValueError, match="epochs must be a positive int; got 0"):
        _fit(epochs=0)
    with pytest.raises(ValueError, match="same leading"):
        train.fit(
            _loss, None, optax.sgd(1.0), (np.ones((3, 2)), np.ones((4, 1))), epochs=1, batch_size=1
        )


_X, _Y = _problem()
# Dropout keys, shuffling, evaluation and a patience counter all cross the resume point.
_RUN = {"epochs": 3, "eval_fn": _metrics, "eval_data": (_X[:20], _Y[:20]), "patience": 5}


def _timeless(history):
    skip = ("seconds", "examples_per_second", "compile_seconds")
    return [{k: v for k, v in record.items() if k not in skip} for record in history]


def _assert_same_run(actual, expected):
    assert _bits(actual.params) == _bits(expected.params)
    assert _bits(actual.opt_state) == _bits(expected.opt_state)
    structure = jax.tree_util.tree_structure
    assert structure(actual.opt_state) == structure(expected.opt_state)
    assert _timeless(actual.history) == _timeless(expected.history)
    assert actual.best_epoch == expected.best_epoch
    assert actual.stopped_early == expected.stopped_early


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """``(result, checkpoint_dir)`` of three epochs trained in one call."""
    directory = tmp_path_factory.mktemp("straight")
    return _fit(**_RUN, checkpoint_dir=str(directory)), directory


def test_stop_and_resume_equals_one_run_bit_for_bit(tmp_path, straight):
    expected, expected_dir = straight
    first = _fit(**{**_RUN, "epochs": 1}, checkpoint_dir=str(tmp_path))  # "killed" after epoch 1
    assert len(first.history) == 1 and _bits(first.params) != _bits(expected.params)
    resumed = _fit(**_RUN, checkpoint_dir=str(tmp_path), resume=True)  # fresh objects
    _assert_same_run(resumed, expected)
    assert resumed.history[0] == first.history[0]  # epoch 1 comes from the checkpoint
    assert train.checkpoint_steps(tmp_path) == [2, 3]
    optimizer = train.with_clipping(optax.adam(1e-2), max_norm=1.0)
    template = {"train_state": train.TrainState.create(expected.params, optimizer), "waited": 0}
    ours, theirs = (train.restore_checkpoint(d, template)[0] for d in (tmp_path, expected_dir))
    assert _bits(ours) == _bits(theirs) and int(ours["train_state"].step) == 3 * (N // 16)
    _assert_same_run(_fit(**_RUN, checkpoint_dir=str(tmp_path), resume=True), expected)  # done


def test_resume_keeps_the_early_stopping_state(tmp_path):
    never_better = lambda params, batch: {"constant": jnp.zeros(())}  # noqa: E731
    options = {"eval_fn": never_better, "eval_data": (_X, _Y), "monitor": "eval_constant"}
    options.update(epochs=10, patience=2, checkpoint_dir=str(tmp_path))
    first = _fit(**{**options, "epochs": 2})  # waited 1 epoch; the best params are epoch 1's
    assert first.best_epoch == 1 and not first.stopped_early
    resumed = _fit(**options, resume=True)  # one more epoch without improvement: stop
    assert resumed.stopped_early and resumed.best_epoch == 1 and len(resumed.history) == 3
    assert _bits(resumed.params) == _bits(first.params)
    assert _timeless(resumed.history[:2]) == _timeless(first.history)
    again = _fit(**options, resume=True)
    assert again.stopped_early and len(again.history) == 3  # a stopped run stays stopped


def test_resume_without_checkpoint_starts_fresh(tmp_path, caplog, straight):
    caplog.set_level("INFO", logger="rnnjax.train._fit")
    (tmp_path / ".checkpoint_1.msgpack.killed.tmp").write_bytes(b"RNNJAXC1 torn")
    _assert_same_run(_fit(**_RUN, checkpoint_dir=str(tmp_path), resume=True), straight[0])
    assert "no checkpoint in" in caplog.text and "starting from epoch 1" in caplog.text


def test_resume_skips_a_torn_checkpoint(tmp_path, caplog, straight):
    """A write killed mid-epoch-3 leaves a temporary directory; a torn file fails to restore."""
    for epoch in (2, 3):
        shutil.copytree(train.checkpoint_path(straight[1], epoch), tmp_path / str(epoch))
    data = max(
        (p for p in (tmp_path / "3" / "arrays").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    data.write_bytes(data.read_bytes()[:-7])
    (tmp_path / "4.orbax-checkpoint-tmp-1").mkdir()
    resumed = _fit(**_RUN, checkpoint_dir=str(tmp_path), resume=True)  # from epoch 2
    _assert_same_run(resumed, straight[0])
    assert "skipping checkpoint 3" in caplog.text


def test_resume_from_a_legacy_msgpack_run(tmp_path, straight):
    """Two epochs written by rnnjax 0.1's fit (tests/data/README.md), continued to three."""
    shutil.copytree(LEGACY_FIT, tmp_path, dirs_exist_ok=True)
    resumed = _fit(
        **{**_RUN, "eval_fn": None, "eval_data": None}, checkpoint_dir=str(tmp_path), resume=True
    )
    assert [record["epoch"] for record in resumed.history] == [1, 2, 3]
    assert train.checkpoint_steps(tmp_path) == [1, 2, 3]  # msgpack files stay; epoch 3 is orbax's
    template = {
        "train_state": train.TrainState.create(resumed.params, _OPTIMIZER),
        "global_step": 0,
    }
    restored, step = train.restore_checkpoint(tmp_path, template)
    assert step == 3 and restored["global_step"] == int(restored["train_state"].step) == 3 * (
        N // 16
    )
    assert _bits(restored["train_state"].params) == _bits(resumed.params)


def test_resume_errors(straight):
    run = str(straight[1])  # each call fails before it could write there
    optimizer = train.with_clipping(optax.adam(1e-2), max_norm=1.0)
    wider = rnnjax.serial(rnnjax.rnn(rnnjax.gru(H + 1)), rnnjax.dense(1, jax.nn.sigmoid))
    with pytest.raises(
        train.CheckpointError,
        match=r"cannot resume from .*: its checkpoint does not match the params and optimizer "
        r"passed to fit: .*step 3: leaf \['train_state'\]\.params.*checkpoint holds "
        r"float32\[2, 24\], the target expects float32\[2, 27\]",
    ):
        train.fit(
            _loss, wider.init(jax.random.key(1), (T, D)), optimizer, _problem(), epochs=2,
            batch_size=16, progress=False, checkpoint_dir=run, resume=True,
        )  # fmt: skip
    deeper = rnnjax.serial(
        rnnjax.rnn(rnnjax.gru(H)), rnnjax.dense(1), rnnjax.dense(1, jax.nn.sigmoid)
    )
    with pytest.raises(
        ValueError, match=r"passed to fit: .* does not match the target's structure"
    ):
        train.fit(
            _loss, deeper.init(jax.random.key(1), (T, D)), optimizer, _problem(), epochs=2,
            batch_size=16, progress=False, checkpoint_dir=run, resume=True,
        )  # fmt: skip
    with pytest.raises(
        ValueError, match=r"passed to fit: .*structure: the target has leaves .*opt_state"
    ):
        train.fit(
            _loss, _make_model().init(jax.random.key(1), (T, D)), optax.sgd(0.1), _problem(),
            epochs=2, batch_size=16, progress=False, checkpoint_dir=run, resume=True,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"seed=4 differs from the seed=0 of the run checkpointed"):
        _fit(seed=4, checkpoint_dir=run, resume=True)
    with pytest.raises(
        ValueError, match="resume=True needs checkpoint_dir; got checkpoint_dir=None"
    ):
        _fit(resume=True)
