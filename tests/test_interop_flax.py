"""rnnjax.interop.from_flax against live flax.linen RNNs, and the rnnjax.flax wrappers in training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import rnnjax
from rnnjax import interop
from rnnjax.flax import LinenLayer, NnxLayer
from tests.tolerances import assert_close

CELLS = {
    "lstm": lambda h: nn.LSTMCell(h),
    "optimized_lstm": lambda h: nn.OptimizedLSTMCell(h),
    "gru": lambda h: nn.GRUCell(h),
    "simple_tanh": lambda h: nn.SimpleCell(h),
    "simple_relu": lambda h: nn.SimpleCell(h, activation_fn=nn.relu),
}


def _case(name, seed, dtype=jnp.float32, **rnn_options):
    """A random nn.RNN over CELLS[name], variables with non-zero biases, and an input."""
    rng = np.random.default_rng(seed)
    batch, steps, input_size, hidden = (
        int(v) for v in rng.integers(1, [4, 6, 4, 5], endpoint=True)
    )
    cell = CELLS[name](hidden)
    if dtype == jnp.float64:
        cell = cell.clone(param_dtype=jnp.float64)
    module = nn.RNN(cell, **rnn_options)
    x = jnp.asarray(rng.normal(size=(batch, steps, input_size)), dtype)
    variables = module.init(jax.random.key(seed), x)
    variables = jax.tree_util.tree_map(
        lambda a: a + jnp.asarray(rng.normal(scale=0.3, size=a.shape), a.dtype), variables
    )
    lengths = jnp.asarray(rng.integers(0, steps, size=batch, endpoint=True))
    return module, variables, x, lengths


@pytest.mark.parametrize("name", CELLS)
def test_outputs_match_flax(name):
    module, variables, x, _ = _case(name, seed=len(name))
    model, params = interop.from_flax(module, variables)
    assert model.spec.cell == type(module.cell).__name__
    assert_close(jax.jit(model.apply)(params, x), jax.jit(module.apply)(variables, x), scale=2.0)


@pytest.mark.parametrize("name", ["optimized_lstm", "gru"])
def test_float64_matches_flax(name, x64):
    module, variables, x, _ = _case(name, seed=3, dtype=jnp.float64)
    model, params = interop.from_flax(module, variables["params"])
    assert params.w_x.dtype == jnp.float64
    assert_close(
        model.apply(params, x), jax.jit(module.apply)(variables, x), "float64", scale=100.0
    )


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_lengths_and_reverse_match_flax_on_valid_steps(name):
    module, variables, x, lengths = _case(name, seed=5, reverse=True, keep_order=True)
    model, params = interop.from_flax(module, variables)
    expected = jax.jit(module.apply)(variables, x, seq_lengths=lengths)
    actual = jax.jit(model.apply)(params, x, lengths)
    valid = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
    assert_close(jnp.where(valid, actual, 0.0), jnp.where(valid, expected, 0.0), scale=2.0)


def test_bare_cell_runs_like_nn_rnn():
    module, variables, x, _ = _case("gru", seed=8)
    model, params = interop.from_flax(module.cell, variables["params"]["cell"])
    assert_close(model.apply(params, x), jax.jit(module.apply)(variables, x), scale=2.0)


def test_errors():
    x = jnp.ones((2, 3, 2))
    cell = nn.GRUCell(3)
    variables = nn.RNN(cell).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"nn.RNN\(time_major=True\) is not supported"):
        interop.from_flax(nn.RNN(cell, time_major=True), variables)
    with pytest.raises(ValueError, match=r"nn.RNN\(return_carry=True\) is not supported"):
        interop.from_flax(nn.RNN(cell, return_carry=True), variables)
    with pytest.raises(ValueError, match="reverse=True, keep_order=False"):
        interop.from_flax(nn.RNN(cell, reverse=True), variables)
    with pytest.raises(ValueError, match="GRUCell.activation_fn='relu' is not supported"):
        interop.from_flax(nn.RNN(nn.GRUCell(3, activation_fn=nn.relu)), variables)
    with pytest.raises(ValueError, match="SimpleCell.residual=True"):
        interop.from_flax(nn.RNN(nn.SimpleCell(3, residual=True)), {"params": {}})
    with pytest.raises(TypeError, match="module must be a flax.linen RNN or one of .*got MGUCell"):
        interop.from_flax(nn.RNN(nn.MGUCell(3)), variables)
    with pytest.raises(TypeError, match="variables must be the dict RNN.init returns"):
        interop.from_flax(nn.RNN(cell), [1, 2])
    with pytest.raises(ValueError, match=r"variables have no params\['ii'\]\['kernel'\]"):
        interop.from_flax(nn.RNN(nn.LSTMCell(3)), variables)
    with pytest.raises(TypeError, match="layer must be an rnnjax Layer"):
        NnxLayer(rnnjax.lstm(3), (3, 2), rngs=nnx.Rngs(0))


# ---- the wrappers: a Flax model holding an rnnjax layer trains as the pure rnnjax model does.

STEPS, HIDDEN = 4, 6


def _task():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 5, 2)), jnp.float32)
    y = jnp.sum(x[:, :, :1], axis=1)  # a sum over time, which the RNN must carry
    return x, y


def _pure_rnnjax_losses(params, x, y):
    """The same model and optimiser in plain rnnjax + optax."""
    model = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(HIDDEN)), rnnjax.dense(1))
    optimizer = optax.adam(3e-2)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply(p, x) - y) ** 2))(params)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(STEPS):
        params, state, loss = step(params, state)
        losses.append(loss)
    return np.array(losses)


class _LinenModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(LinenLayer(rnnjax.rnn(rnnjax.lstm(HIDDEN)))(x))


def test_linen_wrapper_trains_like_pure_rnnjax():
    x, y = _task()
    model = _LinenModel()
    variables = model.init(jax.random.key(0), x)
    optimizer = optax.adam(3e-2)
    params, state = variables["params"], optimizer.init(variables["params"])

    @jax.jit
    def step(params, state):
        loss_fn = lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(STEPS):
        params, state, loss = step(params, state)
        losses.append(loss)
    start = variables["params"]
    dense = rnnjax.DenseParams(start["Dense_0"]["kernel"], start["Dense_0"]["bias"])
    expected = _pure_rnnjax_losses((start["LinenLayer_0"]["rnnjax"], dense), x, y)
    assert losses[-1] < losses[0]
    assert_close(np.array(losses), expected, scale=10.0)


class _NnxModel(nnx.Module):
    def __init__(self, rngs):
        self.rnn = NnxLayer(rnnjax.rnn(rnnjax.lstm(HIDDEN)), (5, 2), rngs=rngs)
        self.head = nnx.Linear(HIDDEN, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(self.rnn(x))


def test_nnx_wrapper_trains_like_pure_rnnjax():
    x, y = _task()
    model = _NnxModel(nnx.Rngs(0))
    start = (
        model.rnn.layer_params(),
        rnnjax.DenseParams(model.head.kernel[...], model.head.bias[...]),
    )
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = np.array([step(model, optimizer) for _ in range(STEPS)])
    assert losses[-1] < losses[0]
    assert_close(losses, _pure_rnnjax_losses(start, x, y), scale=10.0)
