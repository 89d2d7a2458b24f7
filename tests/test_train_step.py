"""Train step: optax update, clipping through optax, pre-clip gradient norm in the metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import train
from tests.tolerances import assert_close


def _quadratic(params, batch, key):
    """Gradient ``batch * params``: its norm is known in closed form."""
    return 0.5 * batch * jnp.sum(params["w"] ** 2)


def test_step_matches_manual_optax_update():
    params = {"w": jnp.array([3.0, 4.0])}
    optimizer = optax.adam(0.1)
    step = train.make_train_step(_quadratic, optimizer)
    state, metrics = step(train.TrainState.create(params, optimizer), 2.0, jax.random.key(0))
    grads = {"w": 2.0 * params["w"]}
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    assert_close(state.params["w"], params["w"] + updates["w"])
    assert_close(metrics["loss"], 25.0)
    assert int(state.step) == 1


def test_grad_norm_is_measured_before_clipping():
    params = {"w": jnp.array([3.0, 4.0])}  # gradient 1000 * w, norm 5000
    optimizer = train.with_clipping(optax.sgd(1.0), max_norm=0.5)
    step = train.make_train_step(_quadratic, optimizer)
    state, metrics = step(train.TrainState.create(params, optimizer), 1000.0, jax.random.key(0))
    assert_close(metrics["grad_norm"], 5000.0)
    assert_close(jnp.linalg.norm(state.params["w"] - params["w"]), 0.5)


def test_value_clipping_and_both():
    params = {"w": jnp.array([3.0, -0.001])}
    optimizer = train.with_clipping(optax.sgd(1.0), max_value=0.01)
    step = train.make_train_step(_quadratic, optimizer, jit=False)
    state, _ = step(train.TrainState.create(params, optimizer), 1.0, None)
    assert_close(state.params["w"], [3.0 - 0.01, 0.0])
    both = train.with_clipping(optax.sgd(1.0), max_value=1.0, max_norm=0.1)
    updates, _ = both.update({"w": jnp.array([30.0, 40.0])}, both.init(params))
    assert_close(jnp.linalg.norm(updates["w"]), 0.1)


def test_exploding_rnn_is_contained_by_clipping():
    cell = rnnjax.simple_rnn(8)
    params = cell.init(jax.random.key(0), 1)
    params = params._replace(w_h=3.0 * params.w_h)  # spectral radius 3: gradients explode

    def loss_fn(params, batch, key):
        _, ys = rnnjax.scan(cell, params, batch)
        return jnp.sum(ys[-1]) + 0.0 * jnp.sum(ys)

    optimizer = train.with_clipping(optax.sgd(0.1), max_norm=1.0)
    step = train.make_train_step(loss_fn, optimizer)
    xs = 0.01 * jnp.ones((30, 1))
    state, metrics = step(train.TrainState.create(params, optimizer), xs, None)
    raw = optax.tree.norm(jax.grad(loss_fn)(params, xs, None))
    assert_close(metrics["grad_norm"], raw)
    assert float(raw) > 100.0
    moved = optax.tree.norm(jax.tree_util.tree_map(jnp.subtract, state.params, params))
    assert float(moved) <= 0.1 + 1e-6


def test_aux_metrics_and_eval_step():
    def loss_fn(params, batch, key):
        loss = jnp.sum((params - batch) ** 2)
        return loss, {"error": jnp.max(jnp.abs(params - batch))}

    step = train.make_train_step(loss_fn, optax.sgd(0.1), has_aux=True)
    _, metrics = step(train.TrainState.create(jnp.zeros(2), optax.sgd(0.1)), jnp.ones(2), None)
    assert sorted(metrics) == ["error", "grad_norm", "loss"]
    assert_close(metrics["error"], 1.0)
    evaluate = train.make_eval_step(lambda p, b: {"sum": jnp.sum(p + b)})
    assert_close(evaluate(jnp.ones(2), jnp.ones(2))["sum"], 4.0)


def test_errors():
    with pytest.raises(ValueError, match="needs max_norm or max_value"):
        train.with_clipping(optax.sgd(1.0))
    with pytest.raises(ValueError, match="max_norm must be positive; got -1"):
        train.with_clipping(optax.sgd(1.0), max_norm=-1)
    with pytest.raises(TypeError, match="loss_fn must be callable; got int"):
        train.make_train_step(3, optax.sgd(1.0))
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation"):
        train.make_train_step(_quadratic, "adam")
    step = train.make_train_step(lambda p, b, k: (jnp.sum(p), 1.0), optax.sgd(1.0), has_aux=True)
    with pytest.raises(TypeError, match=r"must return \(loss, dict\)"):
        step(train.TrainState.create(jnp.zeros(2), optax.sgd(1.0)), None, None)
    with pytest.raises(TypeError, match="metric_fn must return a dict"):
        train.make_eval_step(lambda p, b: 1.0)(np.zeros(1), None)
    with pytest.raises(TypeError, match="metric_fn must be callable"):
        train.make_eval_step(None)
