"""Cells and layers are values: equal configurations compare equal, hash alike, and serve as
static arguments of ``jax.jit`` without retracing when re-created."""

from functools import partial

import jax
import jax.numpy as jnp
import pytest

import rnnjax

BUILDERS = {
    "lstm": lambda: rnnjax.lstm(4, forget_bias=0.5),
    "gru": lambda: rnnjax.gru(4, reset_after=True),
    "simple_rnn": lambda: rnnjax.simple_rnn(4, jax.nn.relu, dtype=jnp.bfloat16),
    "rnn": lambda: rnnjax.rnn(rnnjax.lstm(4), return_sequences=True),
    "bidirectional": lambda: rnnjax.bidirectional(rnnjax.gru(4), merge="sum"),
    "stack": lambda: rnnjax.stack([rnnjax.lstm(4), [rnnjax.gru(3), rnnjax.gru(3)]], dropout=0.1),
    "serial": lambda: rnnjax.serial(rnnjax.rnn(rnnjax.lstm(4)), rnnjax.dense(2, jax.nn.tanh)),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_equal_configurations_are_equal_and_hash_alike(name):
    first, second = BUILDERS[name](), BUILDERS[name]()
    assert first == second and hash(first) == hash(second)


def test_different_configurations_differ():
    assert rnnjax.lstm(4) != rnnjax.lstm(5)
    assert rnnjax.lstm(4) != rnnjax.lstm(4, forget_bias=0.0)
    assert rnnjax.gru(4) != rnnjax.gru(4, reset_after=True)
    assert rnnjax.simple_rnn(4) != rnnjax.simple_rnn(4, jax.nn.relu)
    assert rnnjax.rnn(rnnjax.lstm(4)) != rnnjax.rnn(rnnjax.lstm(4), reverse=True)
    cell = rnnjax.lstm(4)
    assert cell._replace(step=lambda p, s, x: cell.step(p, s, x)) != cell


def test_cell_config_is_a_read_only_mapping():
    config = rnnjax.gru(4, reset_after=True).config
    assert config["reset_after"] is True and config.get("dtype") is None
    assert {**config}["reset_after"] is True
    with pytest.raises(TypeError):
        config["dtype"] = jnp.float16


def test_scan_jits_with_the_cell_static():
    cell = rnnjax.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((5, 3))
    final, ys = jax.jit(rnnjax.scan, static_argnums=0)(cell, params, xs)
    assert ys.shape == (5, 4)
    assert jnp.allclose(ys, rnnjax.scan(cell, params, xs)[1])


def test_recreated_cells_and_layers_do_not_retrace():
    traces = []

    @partial(jax.jit, static_argnums=0)
    def run(cell, params, xs):
        traces.append(cell)
        return rnnjax.scan(cell, params, xs)[1]

    params = rnnjax.gru(4).init(jax.random.key(0), 3)
    for _ in range(3):
        run(rnnjax.gru(4), params, jnp.ones((5, 3)))
    assert len(traces) == 1

    layer_traces = []

    @partial(jax.jit, static_argnums=0)
    def apply(layer, params, x):
        layer_traces.append(layer)
        return layer.apply(params, x)

    layer_params = rnnjax.rnn(rnnjax.gru(4)).init(jax.random.key(0), (5, 3))
    for _ in range(3):
        apply(rnnjax.rnn(rnnjax.gru(4)), layer_params, jnp.ones((2, 5, 3)))
    assert len(layer_traces) == 1


@pytest.mark.parametrize(
    ("name", "wrap", "options"),
    [
        ("variational_dropout", lambda c: rnnjax.train.variational_dropout(c, 0.2), {"rate": 0.2}),
        ("zoneout", lambda c: rnnjax.train.zoneout(c, 0.1, cell_rate=0.05),
         {"rate": 0.1, "cell_rate": 0.05}),
    ],
)  # fmt: skip
def test_wrapped_cells_are_hashable_static_arguments(name, wrap, options):
    cell = wrap(rnnjax.lstm(4))
    assert cell.config[name] == options and cell.config["forget_bias"] == 1.0
    with pytest.raises(TypeError):
        cell.config[name]["rate"] = 0.5  # read-only, like the wrapped cell's own options
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((5, 3))
    _, ys = jax.jit(rnnjax.scan, static_argnums=0)(cell, params, xs)  # needs hash(cell)
    assert jnp.allclose(ys, rnnjax.scan(cell, params, xs)[1])
