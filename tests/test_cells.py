"""Cells against float64 NumPy transcriptions of the seed's equations, gradients, init, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from tests.oracles import numpy_cells as ref
from tests.tolerances import assert_close

CELLS = {
    "simple_rnn": lambda h: rnnjax.simple_rnn(h),
    "simple_rnn_relu": lambda h: rnnjax.simple_rnn(h, activation=jax.nn.relu),
    "lstm": lambda h: rnnjax.lstm(h),
    "gru": lambda h: rnnjax.gru(h),
    "gru_reset_after": lambda h: rnnjax.gru(h, reset_after=True),
}


def _random_params(cell, key, input_size, dtype=jnp.float32):
    """Random params of every field (biases included) so no term can hide behind a zero."""
    params = cell.init(key, input_size)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [0.5 * jax.random.normal(k, leaf.shape, dtype) for k, leaf in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree, leaves)


def _reference_step(name, params, state, x):
    if name.startswith("simple_rnn"):
        act = (lambda a: np.maximum(a, 0.0)) if name.endswith("relu") else np.tanh
        return (ref.rnn_step(params, state[0], x, act),)
    if name == "lstm":
        return ref.lstm_step(params, state[0], state[1], x)
    return (ref.gru_step(params, state[0], x, reset_after=name.endswith("reset_after")),)


def _random_state(cell, key, batch_shape, dtype):
    state = cell.initial_state(batch_shape, dtype)
    keys = jax.random.split(key, len(state))
    return type(state)(*(jax.random.normal(k, s.shape, dtype) for k, s in zip(keys, state)))


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("hidden_size,input_size", [(1, 1), (5, 3), (16, 7)])
def test_step_matches_numpy_reference_float64(x64, name, hidden_size, input_size):
    cell = CELLS[name](hidden_size)
    key = jax.random.key(hidden_size * 31 + input_size)
    params = _random_params(cell, key, input_size, jnp.float64)
    state = _random_state(cell, jax.random.fold_in(key, 2), (), jnp.float64)
    x = jax.random.normal(jax.random.fold_in(key, 3), (input_size,), jnp.float64)
    new_state, y = cell.step(params, state, x)
    expected = _reference_step(name, params, [np.asarray(s) for s in state], np.asarray(x))
    for actual, want in zip(new_state, expected, strict=True):
        assert actual.dtype == jnp.float64
        assert_close(actual, want)
    assert_close(y, expected[0])


@pytest.mark.parametrize("name", CELLS)
def test_step_matches_numpy_reference_float32_with_batch_dims(name):
    cell = CELLS[name](6)
    key = jax.random.key(7)
    params = _random_params(cell, key, 4)
    state = _random_state(cell, jax.random.fold_in(key, 2), (2, 3), jnp.float32)
    xs = jax.random.normal(jax.random.fold_in(key, 3), (2, 3, 4))
    new_state, y = cell.step(params, state, xs)
    assert y.shape == (2, 3, 6) and y.dtype == jnp.float32
    for b, t in itertools.product(range(2), range(3)):
        expected = _reference_step(
            name, params, [np.asarray(s[b, t]) for s in state], np.asarray(xs[b, t])
        )
        for actual, want in zip(new_state, expected, strict=True):
            assert_close(actual[b, t], want, scale=10)


@pytest.mark.parametrize("name", CELLS)
def test_step_gradients(x64, name):
    cell = CELLS[name](3)
    key = jax.random.key(3)
    params = _random_params(cell, key, 2, jnp.float64)
    state = _random_state(cell, jax.random.fold_in(key, 1), (), jnp.float64)
    x = jax.random.normal(jax.random.fold_in(key, 2), (2,), jnp.float64)
    if name == "simple_rnn_relu":  # keep pre-activations away from relu's kink
        params = params._replace(b=params.b + 5.0)

    def f(params, state, x):
        return cell.step(params, state, x)

    check_grads(f, (params, state, x), order=2, modes=("fwd", "rev"))


def test_step_is_jit_vmap_grad_compatible():
    cell = rnnjax.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (5, 3))
    state = cell.initial_state((5,))
    batched = jax.jit(cell.step)(params, state, xs)
    mapped = jax.vmap(cell.step, in_axes=(None, 0, 0))(params, state, xs)
    jax.tree_util.tree_map(lambda a, b: assert_close(a, b), batched, mapped)
    grads = jax.grad(lambda p: cell.step(p, state, xs)[1].sum())(params)
    assert isinstance(grads, rnnjax.LSTMParams)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_gate_orders_are_named_constants():
    assert rnnjax.LSTM_GATES == ("i", "f", "g", "o")
    assert rnnjax.GRU_GATES == ("r", "z", "n")


@pytest.mark.parametrize("name,gates", [("lstm", 4), ("gru", 3), ("simple_rnn", 1)])
def test_init_shapes_orthogonal_blocks_and_glorot_limits(name, gates):
    hidden, inputs = 32, 20
    cell = {"lstm": rnnjax.lstm, "gru": rnnjax.gru, "simple_rnn": rnnjax.simple_rnn}[name](hidden)
    params = cell.init(jax.random.key(0), input_size=inputs)
    assert params.w_x.shape == (inputs, gates * hidden)
    assert params.w_h.shape == (hidden, gates * hidden)
    assert params.b.shape == (gates * hidden,)
    limit = np.sqrt(6.0 / (inputs + hidden))  # Glorot uniform of each [D, H] block
    assert float(jnp.max(jnp.abs(params.w_x))) <= limit
    assert float(jnp.max(jnp.abs(params.w_x))) > 0.8 * limit
    for k in range(gates):
        block = np.asarray(params.w_h[:, k * hidden : (k + 1) * hidden], np.float64)
        np.testing.assert_allclose(block.T @ block, np.eye(hidden), atol=1e-5)
    blocks = [params.w_h[:, k * hidden : (k + 1) * hidden] for k in range(gates)]
    assert all(not jnp.allclose(a, b) for a, b in itertools.combinations(blocks, 2))


def test_lstm_forget_bias_lives_in_the_forget_block():
    params = rnnjax.lstm(4, forget_bias=1.5).init(jax.random.key(0), 2)
    np.testing.assert_array_equal(params.b, np.r_[np.zeros(4), np.full(4, 1.5), np.zeros(8)])
    zero = rnnjax.lstm(4, forget_bias=0.0).init(jax.random.key(0), 2)
    np.testing.assert_array_equal(zero.b, np.zeros(16))


def test_gru_reset_after_adds_recurrent_candidate_bias():
    assert rnnjax.gru(4).init(jax.random.key(0), 2).b_hn is None
    params = rnnjax.gru(4, reset_after=True).init(jax.random.key(0), 2)
    np.testing.assert_array_equal(params.b_hn, np.zeros(4))
    assert params.b.shape == (12,)


def test_param_dtype_and_custom_initializers():
    cell = rnnjax.lstm(
        4, param_dtype=jnp.bfloat16, kernel_init=jax.nn.initializers.ones,
        recurrent_init=jax.nn.initializers.zeros,
    )  # fmt: skip
    params = cell.init(jax.random.key(0), 3)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in params)
    np.testing.assert_array_equal(np.asarray(params.w_x, np.float32), np.ones((3, 16)))
    np.testing.assert_array_equal(np.asarray(params.w_h, np.float32), np.zeros((4, 16)))


@pytest.mark.parametrize("make", [rnnjax.lstm, rnnjax.gru, rnnjax.simple_rnn])
def test_bfloat16_matmuls_keep_float32_state(make):
    key = jax.random.key(0)
    exact = make(8)
    fast = make(8, dtype=jnp.bfloat16)
    params = exact.init(key, 5)
    x = jax.random.normal(jax.random.key(1), (5,))
    state = exact.initial_state()
    for _ in range(3):
        state_bf, y_bf = fast.step(params, state, x)
        state_32, y_32 = exact.step(params, state, x)
        assert all(leaf.dtype == jnp.float32 for leaf in state_bf)
        np.testing.assert_allclose(y_bf, y_32, atol=3e-2)
        state = state_32
    assert float(jnp.max(jnp.abs(y_bf - y_32))) > 0  # bfloat16 rounding really happened


def test_initial_state_shapes_and_dtype():
    state = rnnjax.lstm(3).initial_state((2, 5), dtype=jnp.bfloat16)
    assert isinstance(state, rnnjax.LSTMState)
    assert state.h.shape == state.c.shape == (2, 5, 3) and state.h.dtype == jnp.bfloat16
    assert not jnp.any(state.c)
    assert rnnjax.gru(3).initial_state().h.shape == (3,)


def test_cell_config_records_options():
    cell = rnnjax.gru(5, reset_after=True)
    assert cell.hidden_size == 5 and cell.num_gates == 3 and cell.name == "gru"
    assert cell.config["reset_after"] is True


class TestBadInput:
    cell = rnnjax.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    state = cell.initial_state()

    def test_wrong_feature_size(self):
        with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., input_size=3\).*\(5,\)"):
            self.cell.step(self.params, self.state, jnp.ones(5))

    def test_integer_input(self):
        with pytest.raises(TypeError, match="x must have a floating-point dtype.*int32"):
            self.cell.step(self.params, self.state, jnp.ones(3, jnp.int32))

    def test_params_of_another_cell(self):
        gru_params = rnnjax.gru(4).init(jax.random.key(0), 3)
        with pytest.raises(TypeError, match="params must be LSTMParams.*got GRUParams"):
            self.cell.step(gru_params, self.state, jnp.ones(3))

    def test_integer_params(self):
        params = self.params._replace(w_h=self.params.w_h.astype(jnp.int32))
        with pytest.raises(TypeError, match=r"params.w_h of lstm\(hidden_size=4\) must have a "):
            self.cell.step(params, self.state, jnp.ones(3))
        with pytest.raises(TypeError, match="params.w_h .* floating-point dtype .*got dtype int32"):
            jax.jit(lambda p, xs: rnnjax.scan(self.cell, p, xs))(params, jnp.ones((5, 3)))

    def test_params_of_another_hidden_size(self):
        other = rnnjax.lstm(8).init(jax.random.key(0), 3)
        with pytest.raises(
            ValueError, match=r"expected params.w_h of shape \(4, 16\), got \(8, 32\)"
        ):
            self.cell.step(other, self.state, jnp.ones(3))

    def test_state_batch_mismatch(self):
        with pytest.raises(ValueError, match=r"state.h must have shape \(2, 4\).*got \(4,\)"):
            self.cell.step(self.params, self.state, jnp.ones((2, 3)))

    def test_state_of_another_cell(self):
        with pytest.raises(TypeError, match="state must be LSTMState.*got RNNState"):
            self.cell.step(self.params, rnnjax.RNNState(jnp.zeros(4)), jnp.ones(3))

    def test_gru_missing_recurrent_bias(self):
        cell = rnnjax.gru(4, reset_after=True)
        params = rnnjax.gru(4).init(jax.random.key(0), 3)
        with pytest.raises(ValueError, match=r"params.b_hn of shape \(4,\), got None"):
            cell.step(params, cell.initial_state(), jnp.ones(3))

    def test_gru_unexpected_recurrent_bias(self):
        params = rnnjax.gru(4, reset_after=True).init(jax.random.key(0), 3)
        with pytest.raises(ValueError, match="b_hn must be None"):
            rnnjax.gru(4).step(params, rnnjax.RNNState(jnp.zeros(4)), jnp.ones(3))

    @pytest.mark.parametrize("bad", [0, -3, 2.5, True])
    def test_bad_hidden_size(self, bad):
        with pytest.raises(ValueError, match="hidden_size must be a positive int"):
            rnnjax.lstm(bad)

    @pytest.mark.parametrize("bad", [0, 1.0])
    def test_bad_input_size(self, bad):
        with pytest.raises(ValueError, match="input_size must be a positive int"):
            self.cell.init(jax.random.key(0), bad)


@pytest.mark.parametrize(
    ("batch_shape", "error", "match"),
    [
        (-1, TypeError, r"batch_shape must be a tuple of non-negative ints.*got -1 \(int\)"),
        (3, TypeError, r"batch_shape must be a tuple.*got 3 \(int\)"),
        ("ab", TypeError, r"batch_shape must be a tuple.*got 'ab' \(str\)"),
        ((-1,), ValueError, r"batch_shape must hold non-negative ints; got \(-1,\)"),
        ((2.5,), ValueError, r"batch_shape must hold non-negative ints; got \(2.5,\)"),
        ((True,), ValueError, r"batch_shape must hold non-negative ints"),
    ],
)
def test_initial_state_rejects_bad_batch_shape(batch_shape, error, match):
    for cell in (rnnjax.lstm(3), rnnjax.gru(3), rnnjax.simple_rnn(3)):
        with pytest.raises(error, match=match):
            cell.initial_state(batch_shape)


def test_initial_state_accepts_lists_and_numpy_ints():
    state = rnnjax.lstm(3).initial_state([np.int64(2), 4])
    assert state.h.shape == (2, 4, 3) and state.c.shape == (2, 4, 3)
