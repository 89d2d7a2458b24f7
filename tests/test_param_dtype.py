"""``param_dtype=jnp.bfloat16`` / ``float16`` with the default initialisers: parameters are drawn
in float32 and cast (the orthogonal initialiser's QR has no bfloat16 kernel on CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import _initializers as inits
from tests.tolerances import assert_close

LOW = (jnp.bfloat16, jnp.float16)
CELLS = {
    "simple_rnn": lambda **kw: rnnjax.simple_rnn(6, **kw),
    "lstm": lambda **kw: rnnjax.lstm(6, **kw),
    "gru": lambda **kw: rnnjax.gru(6, **kw),
    "gru_reset_after": lambda **kw: rnnjax.gru(6, reset_after=True, **kw),
    "layer_norm_lstm": lambda **kw: rnnjax.layer_norm_lstm(6, **kw),
    "layer_norm_gru": lambda **kw: rnnjax.layer_norm_gru(6, **kw),
    "min_gru": lambda **kw: rnnjax.min_gru(6, **kw),
    "min_lstm": lambda **kw: rnnjax.min_lstm(6, **kw),
}


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_low_precision_init_is_the_float32_draw_rounded(name, dtype):
    key = jax.random.key(3)
    low = CELLS[name](param_dtype=dtype).init(key, 5)
    full = CELLS[name](param_dtype=jnp.float32).init(key, 5)
    assert jax.tree_util.tree_structure(low) == jax.tree_util.tree_structure(full)
    for got, want in zip(
        jax.tree_util.tree_leaves(low), jax.tree_util.tree_leaves(full), strict=True
    ):
        assert got.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want.astype(dtype)))


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
def test_low_precision_recurrent_blocks_are_orthogonal(dtype):
    params = rnnjax.lstm(8, param_dtype=dtype).init(jax.random.key(0), 3)
    for block in np.split(np.asarray(params.w_h, np.float64), 4, axis=1):
        assert_close(block.T @ block, np.eye(8), dtype=dtype, scale=2.0)
    np.testing.assert_array_equal(np.asarray(params.b[8:16], np.float32), np.ones(8))


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
def test_low_precision_model_runs_and_matches_float32(dtype):
    model = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(8, param_dtype=dtype)), rnnjax.dense(1))
    head = rnnjax.rnn(rnnjax.lstm(8, param_dtype=dtype))
    params = model.init(jax.random.key(1), (7, 3))
    x = jax.random.normal(jax.random.key(2), (4, 7, 3))
    y = model.apply(params, x.astype(dtype))
    reference = model.apply(jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params), x)
    assert head.apply(params[0], x.astype(dtype)).dtype == jnp.dtype(dtype)
    assert_close(y, reference, dtype=dtype, scale=5.0)
    grads = jax.grad(lambda p: model.apply(p, x.astype(dtype)).astype(jnp.float32).sum())(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


def test_compute_dtype():
    assert inits.compute_dtype(jnp.bfloat16) == jnp.float32
    assert inits.compute_dtype(jnp.float16) == jnp.float32
    assert inits.compute_dtype(jnp.float32) == jnp.float32
    assert inits.compute_dtype(jnp.int8) == jnp.int8


def test_float64_init_stays_float64(x64):
    params = rnnjax.lstm(4, param_dtype=jnp.float64).init(jax.random.key(0), 3)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float64)}
