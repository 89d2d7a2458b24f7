"""``rnnjax.equinox.EqxCell``: params as fields, the cell static; steps and sequences equal plain
rnnjax, and a few optax steps through ``eqx.filter_value_and_grad`` train as plain rnnjax does."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax.equinox import EqxCell
from tests.tolerances import assert_close

STEPS, H, D, T = 4, 5, 2, 6
CELLS = {
    "lstm": lambda: rnnjax.lstm(H),
    "gru": lambda: rnnjax.gru(H),
    "gru_reset_after": lambda: rnnjax.gru(H, reset_after=True),
    "simple_rnn": lambda: rnnjax.simple_rnn(H),
}


def _task():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, T, D)), jnp.float32)
    return x, jnp.sum(x[..., 0], axis=1)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_step_and_scan_equal_rnnjax(name):
    cell = CELLS[name]()
    module = EqxCell(cell, D, key=jax.random.key(0))
    params = cell.init(jax.random.key(0), D)
    assert jax.tree_util.tree_structure(module.params) == jax.tree_util.tree_structure(params)
    x = jax.random.normal(jax.random.key(1), (T, D))
    final, ys = rnnjax.scan(cell, params, x, length=4, reverse=True)
    got_final, got_ys = module.scan(x, length=4, reverse=True)
    assert_close(got_ys, ys)
    assert_close(got_final.h, final.h)
    state, y = module(module.initial_state(), x[0])
    assert_close(y, cell.step(params, cell.initial_state(), x[0])[1])
    # Leaves are exactly the params: the cell is static, not a leaf.
    assert len(jax.tree_util.tree_leaves(module)) == len(jax.tree_util.tree_leaves(params))


class _Model(eqx.Module):
    cell: EqxCell
    head: eqx.nn.Linear

    def __init__(self, key):
        key_cell, key_head = jax.random.split(key)
        self.cell = EqxCell(rnnjax.lstm(H), D, key=key_cell)
        self.head = eqx.nn.Linear(H, "scalar", key=key_head)

    def __call__(self, xs):
        _, ys = self.cell.scan(xs)
        return self.head(ys[-1])


def test_trains_like_plain_rnnjax():
    x, y = _task()
    model = _Model(jax.random.key(0))
    optimizer = optax.adam(3e-2)
    state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state):
        loss = lambda m: jnp.mean((jax.vmap(m)(x) - y) ** 2)
        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, state = optimizer.update(grads, state)
        return eqx.apply_updates(model, updates), state, value

    start = (
        model.cell.params,
        rnnjax.DenseParams(model.head.weight.reshape(H, 1), model.head.bias.reshape(1)),
    )
    losses = []
    for _ in range(STEPS):
        model, state, value = step(model, state)
        losses.append(value)

    plain = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(H)), rnnjax.dense(1))
    plain_optimizer = optax.adam(3e-2)
    params, plain_state = start, plain_optimizer.init(start)
    expected = []
    for _ in range(STEPS):
        value, grads = jax.value_and_grad(lambda p: jnp.mean((plain.apply(p, x)[:, 0] - y) ** 2))(
            params
        )
        updates, plain_state = plain_optimizer.update(grads, plain_state)
        params = optax.apply_updates(params, updates)
        expected.append(value)
    assert losses[-1] < losses[0]
    assert_close(np.array(losses), np.array(expected), scale=10.0)
    assert_close(model.cell.params.w_h, params[0].w_h, scale=10.0)


def test_wraps_existing_params_and_serialises(tmp_path):
    cell = rnnjax.gru(H)
    params = cell.init(jax.random.key(3), D)
    module = EqxCell(cell, params=params)
    path = tmp_path / "cell.eqx"
    eqx.tree_serialise_leaves(path, module)
    like = EqxCell(cell, D, key=jax.random.key(9))
    loaded = eqx.tree_deserialise_leaves(path, like)
    np.testing.assert_array_equal(loaded.params.w_h, params.w_h)


def test_errors():
    with pytest.raises(TypeError, match="cell must be an rnnjax Cell .*got Layer"):
        EqxCell(rnnjax.rnn(rnnjax.lstm(H)), D, key=jax.random.key(0))
    with pytest.raises(ValueError, match="EqxCell needs params=, or input_size= and key="):
        EqxCell(rnnjax.lstm(H), D)


def test_import_rnnjax_does_not_import_flax_or_equinox():
    import subprocess
    import sys

    code = (
        "import sys, rnnjax, rnnjax.interop, rnnjax.train; "
        "print(sorted(m for m in ('flax', 'equinox', 'keras', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
