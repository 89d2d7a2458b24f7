"""fit: bit-identical results for one seed, early stopping, evaluation, checkpoints, data kinds."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import train

N, T, D, H = 48, 6, 2, 8


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
    template = train.TrainState.create(result.params, optimizer)
    restored, step = train.restore_checkpoint(tmp_path, template)
    assert step == 2 and int(restored.step) == 2 * (N // 16)
    assert _bits(restored.params) == _bits(result.params)
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
