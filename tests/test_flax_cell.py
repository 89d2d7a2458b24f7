"""Flax where users live: ``rnnjax.flax.NnxCell`` stepped in an NNX decoder, ``from_flax`` of NNX
modules and ``to_flax`` to linen. Each trains a few optax steps; losses and outputs equal plain
rnnjax's (or Flax's own modules')."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import rnnjax
from rnnjax import interop
from rnnjax.flax import NnxCell, NnxLayer
from tests.tolerances import assert_close

STEPS, H, D, T = 4, 5, 2, 6


def _task():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, T, D)), jnp.float32)
    return x, jnp.cumsum(x[..., :1], axis=1)


def _train(loss, params):
    """Plain rnnjax + optax: the losses of ``STEPS`` Adam steps from ``params``."""
    optimizer = optax.adam(3e-2)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    losses = []
    for _ in range(STEPS):
        params, state, value = step(params, state)
        losses.append(value)
    return np.array(losses), params


def _train_nnx(model, loss):
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    return np.array([step(model, optimizer) for _ in range(STEPS)])


# ---- NnxCell: one step per call, in a decoder that feeds its own output back.


class _Decoder(nnx.Module):
    def __init__(self, rngs):
        self.cell = NnxCell(rnnjax.lstm(H), input_size=D + 1, rngs=rngs)
        self.head = nnx.Linear(H, 1, rngs=rngs)

    def __call__(self, x):
        state, previous, outputs = (
            self.cell.initial_state((x.shape[0],)),
            jnp.zeros_like(x[:, 0, :1]),
            [],
        )
        for t in range(x.shape[1]):
            state, h = self.cell(state, jnp.concatenate([x[:, t], previous], axis=-1))
            previous = self.head(h)
            outputs.append(previous)
        return jnp.stack(outputs, axis=1)


def _plain_decoder(params, x):
    cell_params, dense = params
    cell = rnnjax.lstm(H)
    state, previous, outputs = cell.initial_state((x.shape[0],)), jnp.zeros_like(x[:, 0, :1]), []
    for t in range(x.shape[1]):
        state, h = cell.step(cell_params, state, jnp.concatenate([x[:, t], previous], axis=-1))
        previous = h @ dense.w + dense.b[None]
        outputs.append(previous)
    return jnp.stack(outputs, axis=1)


def test_nnx_cell_decoder_trains_like_plain_rnnjax():
    x, y = _task()
    model = _Decoder(nnx.Rngs(0))
    start = (
        model.cell.cell_params(),
        rnnjax.DenseParams(model.head.kernel[...], model.head.bias[...]),
    )
    assert_close(model(x), _plain_decoder(start, x))
    losses = _train_nnx(model, lambda m: jnp.mean((m(x) - y) ** 2))
    expected, trained = _train(lambda p: jnp.mean((_plain_decoder(p, x) - y) ** 2), start)
    assert losses[-1] < losses[0]
    assert_close(losses, expected, scale=10.0)
    assert_close(model.cell.cell_params().w_h, trained[0].w_h, scale=10.0)


def test_nnx_cell_scan_and_step_equal_rnnjax():
    module = NnxCell(rnnjax.gru(H, reset_after=True), input_size=D, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (T, D))
    final, ys = rnnjax.scan(module.cell, module.cell_params(), x, length=4)
    got_final, got_ys = module.scan(x, length=4)
    assert_close(got_ys, ys)
    assert_close(got_final.h, final.h)
    state, y = module(module.initial_state(), x[0])
    assert_close(y, ys[0])


def test_nnx_cell_errors():
    with pytest.raises(TypeError, match="cell must be an rnnjax Cell .*got Layer. For a whole"):
        NnxCell(rnnjax.rnn(rnnjax.lstm(3)), 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="layer must be an rnnjax Layer .*use rnnjax.flax.NnxCell"):
        NnxLayer(rnnjax.lstm(3), (3, 2), rngs=nnx.Rngs(0))


# ---- from_flax of NNX modules.

NNX_CELLS = {
    "lstm": lambda rngs: nnx.LSTMCell(D, H, rngs=rngs),
    "optimized_lstm": lambda rngs: nnx.OptimizedLSTMCell(D, H, rngs=rngs),
    "gru": lambda rngs: nnx.GRUCell(D, H, rngs=rngs),
    "simple_relu": lambda rngs: nnx.SimpleCell(D, H, rngs=rngs, activation_fn=nnx.relu),
}


@pytest.mark.parametrize(
    "name, reverse",
    [
        ("lstm", False),
        ("optimized_lstm", True),
        ("gru", False),
        ("gru", True),
        ("simple_relu", False),
    ],
)
def test_from_flax_nnx_matches_after_training(name, reverse):
    x, y = _task()
    module = nnx.RNN(NNX_CELLS[name](nnx.Rngs(0)), reverse=reverse, keep_order=True)
    losses = _train_nnx(module, lambda m: jnp.mean((m(x)[..., :1] - y) ** 2))
    assert losses[-1] < losses[0]
    model, params = interop.from_flax(module)
    assert model.spec.cell == f"nnx.{type(module.cell).__name__}" and model.spec.reverse == reverse
    assert_close(model.apply(params, x), module(x), scale=5.0)


def test_from_flax_nnx_trains_like_the_nnx_module():
    x, y = _task()
    module = nnx.RNN(nnx.OptimizedLSTMCell(D, H, rngs=nnx.Rngs(2)))
    model, params = interop.from_flax(module)
    losses = _train_nnx(module, lambda m: jnp.mean((m(x)[..., :1] - y) ** 2))
    expected, _ = _train(lambda p: jnp.mean((model.apply(p, x)[..., :1] - y) ** 2), params)
    assert_close(losses, expected, scale=10.0)


def test_from_flax_nnx_errors():
    cell = nnx.GRUCell(D, H, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="variables must be None for a flax.nnx module"):
        interop.from_flax(cell, {"params": {}})
    with pytest.raises(ValueError, match=r"nnx.RNN\(time_major=True\) is not supported"):
        interop.from_flax(nnx.RNN(cell, time_major=True))
    with pytest.raises(ValueError, match="keep_order=False"):
        interop.from_flax(nnx.RNN(cell, reverse=True))
    with pytest.raises(TypeError, match="module must be a flax.linen or flax.nnx RNN.*got str"):
        interop.from_flax("LSTMCell", {"params": {}})
    with pytest.raises(TypeError, match="module must be a flax.nnx RNN or one of .*got Linear"):
        interop.from_flax(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="residual=True"):
        interop.from_flax(nnx.SimpleCell(D, H, rngs=nnx.Rngs(0), residual=True))
    with pytest.raises(ValueError, match="activation_fn='gelu' is not supported"):
        interop.from_flax(nnx.SimpleCell(D, H, rngs=nnx.Rngs(0), activation_fn=jax.nn.gelu))


# ---- to_flax: rnnjax params into a linen nn.RNN.

TO_FLAX = {
    "lstm": (lambda: rnnjax.lstm(H), {}),
    "gru_reset_after": (lambda: rnnjax.gru(H, reset_after=True), {}),
    "simple_sigmoid": (lambda: rnnjax.simple_rnn(H, jax.nn.sigmoid), {"activation": "sigmoid"}),
}


@pytest.mark.parametrize("name", sorted(TO_FLAX))
def test_to_flax_trains_like_plain_rnnjax_and_round_trips(name):
    make, options = TO_FLAX[name]
    x, y = _task()
    model = rnnjax.rnn(make(), return_sequences=True)
    params = model.init(jax.random.key(0), (T, D))
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jnp.ones_like(a), params)
    module, variables = interop.to_flax(model, params, **options)
    assert isinstance(module, nn.RNN)
    assert_close(module.apply(variables, x), model.apply(params, x))
    losses, flax_params = _train(
        lambda v: jnp.mean((module.apply({"params": v}, x)[..., :1] - y) ** 2), variables["params"]
    )
    expected, trained = _train(lambda p: jnp.mean((model.apply(p, x)[..., :1] - y) ** 2), params)
    assert losses[-1] < losses[0]
    assert_close(losses, expected, scale=10.0)
    back_model, back = interop.from_flax(module, {"params": flax_params})
    for got, want in zip(
        jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(trained), strict=True
    ):
        assert_close(got, want, scale=10.0)


def test_to_flax_reverse_from_spec():
    x, _ = _task()
    flax_rnn = nn.RNN(nn.GRUCell(H), reverse=True, keep_order=True)
    variables = flax_rnn.init(jax.random.key(0), x)
    model, params = interop.from_flax(flax_rnn, variables)
    module, again = interop.to_flax(model, params)
    assert module.reverse
    assert_close(module.apply(again, x), flax_rnn.apply(variables, x))


def test_to_flax_errors():
    stack = rnnjax.stack([rnnjax.lstm(H)] * 2)
    params = stack.init(jax.random.key(0), (T, D))
    with pytest.raises(TypeError, match="params must be one cell's params .*got tuple"):
        interop.to_flax(stack, params)
    dense = rnnjax.dense(2)
    with pytest.raises(TypeError, match="got DenseParams"):
        interop.to_flax(dense, dense.init(jax.random.key(0), (D,)))
    gru_params = rnnjax.gru(H).init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"b_hn=None \(reset_after=False\)"):
        interop.to_flax(None, gru_params)
    rnn_params = rnnjax.simple_rnn(H).init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="activation must be one of .*got 'gelu'"):
        interop.to_flax(None, rnn_params, activation="gelu")
