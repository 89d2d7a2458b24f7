"""Batch-major layers against per-example ``rnnjax.scan`` runs; padding, merge modes, errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnjax
from tests.tolerances import assert_close

KEY = jax.random.key(0)


def _batch(batch=3, steps=6, features=2, seed=1):
    return jax.random.normal(jax.random.key(seed), (batch, steps, features))


def test_seed_keras_models_in_a_few_lines():
    rnn_cell, lstm_cell = rnnjax.simple_rnn(50, activation=jnp.tanh), rnnjax.lstm(100)
    rnn_model = rnnjax.serial(rnnjax.rnn(rnn_cell), rnnjax.dense(1, activation=jax.nn.sigmoid))
    lstm_model = rnnjax.serial(rnnjax.rnn(lstm_cell), rnnjax.dense(1, activation=jax.nn.sigmoid))
    x = _batch(batch=2, steps=100, features=1)
    for model, cell in ((rnn_model, rnn_cell), (lstm_model, lstm_cell)):
        params = model.init(KEY, input_shape=(100, 1))
        y = jax.jit(model.apply)(params, x)
        assert y.shape == (2, 1) == (2, *model.output_shape((100, 1)))
        assert bool(jnp.all((y > 0) & (y < 1)))
        rnn_params, dense_params = params
        state, _ = rnnjax.scan(cell, rnn_params, x[1])
        want = jax.nn.sigmoid(state.h @ dense_params.w + dense_params.b)
        assert_close(y[1], want)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_rnn_layer_equals_scan_per_example(return_sequences):
    cell = rnnjax.gru(5, reset_after=True)
    layer = rnnjax.rnn(cell, return_sequences=return_sequences, return_state=True)
    params = layer.init(KEY, (6, 2))
    x, lengths = _batch(), jnp.array([6, 0, 3])
    out, state = layer.apply(params, x, lengths=lengths)
    assert out.shape == (3, *layer.output_shape((6, 2)))
    for b in range(3):
        state_b, ys_b = rnnjax.scan(cell, params, x[b], length=lengths[b])
        assert_close(state.h[b], state_b.h)
        assert_close(out[b], ys_b if return_sequences else state_b.h)


def test_rnn_layer_initial_state_and_reverse():
    cell = rnnjax.lstm(3)
    layer = rnnjax.rnn(cell, return_sequences=True, reverse=True)
    params = layer.init(KEY, (6, 2))
    x = _batch()
    init = rnnjax.LSTMState(jnp.full((3, 3), 0.2), jnp.full((3, 3), -0.1))
    ys = layer.apply(params, x, initial_state=init)
    _, want = rnnjax.scan(cell, params, x[2], initial_state=jax.tree.map(lambda a: a[2], init),
                          reverse=True)  # fmt: skip
    assert_close(ys[2], want)


@pytest.mark.parametrize("merge", ["concat", "sum", "mean", "mul", None])
def test_bidirectional_merges_forward_and_valid_prefix_backward(merge):
    fwd, bwd = rnnjax.lstm(4), rnnjax.gru(4)
    layer = rnnjax.bidirectional(fwd, bwd, merge=merge, return_sequences=True)
    params = layer.init(KEY, (6, 2))
    assert isinstance(params, rnnjax.BidirectionalParams)
    x, lengths = _batch(), jnp.array([6, 4, 1])
    out = layer.apply(params, x, lengths=lengths)
    _, ys_f = rnnjax.scan(fwd, params.forward, x[1], length=4)
    _, ys_b = rnnjax.scan(bwd, params.backward, x[1], length=4, reverse=True)
    want = {
        "concat": jnp.concatenate([ys_f, ys_b], -1),
        "sum": ys_f + ys_b,
        "mean": (ys_f + ys_b) / 2,
        "mul": ys_f * ys_b,
        None: (ys_f, ys_b),
    }[merge]
    got = jax.tree.map(lambda a: a[1], out)
    jax.tree.map(assert_close, got, want)


@settings(max_examples=8, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=3, max_size=3))
def test_bidirectional_on_padded_input_equals_unpadded(lengths):
    layer = rnnjax.bidirectional(rnnjax.lstm(3), return_sequences=True, return_state=True)
    params = layer.init(KEY, (6, 2))
    x = _batch()
    ys, (state_f, state_b) = _apply_bidirectional(params, x, jnp.array(lengths))
    for b, n in enumerate(lengths):
        ys_b, (sf, sb) = _apply_bidirectional(params, x[b : b + 1, :n], None)
        assert_close(ys[b, :n], ys_b[0])
        np.testing.assert_array_equal(ys[b, n:], 0.0)
        assert_close(state_f.h[b], sf.h[0])
        assert_close(state_b.c[b], sb.c[0])


@jax.jit
def _apply_bidirectional(params, x, lengths):
    layer = rnnjax.bidirectional(rnnjax.lstm(3), return_sequences=True, return_state=True)
    return layer.apply(params, x, lengths=lengths)


def test_bidirectional_last_output_pairs_final_states():
    layer = rnnjax.bidirectional(rnnjax.simple_rnn(3), return_state=True)
    params = layer.init(KEY, (6, 2))
    last, (state_f, state_b) = layer.apply(params, _batch(), lengths=jnp.array([2, 6, 5]))
    assert_close(last, jnp.concatenate([state_f.h, state_b.h], -1))
    assert layer.output_shape((6, 2)) == (6,)


def test_stack_equals_layers_chained_by_hand():
    cells = [rnnjax.lstm(4), (rnnjax.gru(3), rnnjax.gru(3)), rnnjax.simple_rnn(2)]
    model = rnnjax.stack(cells, return_sequences=True, return_state=True)
    params = model.init(KEY, (6, 2))
    x, lengths = _batch(), jnp.array([6, 2, 5])
    ys, states = model.apply(params, x, lengths=lengths)
    assert ys.shape == (3, 6, 2) and len(states) == 3
    h1 = rnnjax.rnn(cells[0], return_sequences=True).apply(params[0], x, lengths=lengths)
    h2 = rnnjax.bidirectional(*cells[1], return_sequences=True).apply(params[1], h1, lengths)
    h3, s3 = rnnjax.rnn(cells[2], return_sequences=True, return_state=True).apply(
        params[2], h2, lengths
    )
    assert_close(ys, h3)
    assert_close(states[2].h, s3.h)
    last = rnnjax.stack(cells).apply(params, x, lengths=lengths)
    assert_close(last, s3.h)


def test_dense_masks_padded_steps_and_serial_passes_lengths():
    model = rnnjax.serial(
        rnnjax.rnn(rnnjax.gru(4), return_sequences=True), rnnjax.dense(3, activation=jnp.tanh)
    )
    params = model.init(KEY, (6, 2))
    y = model.apply(params, _batch(), lengths=jnp.array([6, 2, 0]))
    assert y.shape == (3, 6, 3)
    np.testing.assert_array_equal(y[1, 2:], 0.0)
    np.testing.assert_array_equal(y[2], 0.0)
    assert bool(jnp.all(y[0] != 0.0))


def test_serial_passes_a_folded_key_to_layers_that_take_one():
    stack = rnnjax.stack([rnnjax.lstm(4), rnnjax.lstm(4)], dropout=0.5, return_sequences=True)
    head = rnnjax.dense(3)
    model = rnnjax.serial(head, stack, head)  # the stack is layer 1: it gets fold_in(key, 1)
    key = jax.random.key(7)
    x = jnp.ones((3, 6, 2))
    params = model.init(KEY, (6, 2))
    y = model.apply(params, x, key=key)
    h = stack.apply(params[1], head.apply(params[0], x), key=jax.random.fold_in(key, 1))
    assert_close(y, head.apply(params[2], h))
    no_dropout = model.apply(params, x)
    assert_close(
        no_dropout, head.apply(params[2], stack.apply(params[1], head.apply(params[0], x)))
    )
    assert not np.allclose(y, no_dropout)  # the key reached the stack's dropout


def test_dense_without_bias():
    layer = rnnjax.dense(2, use_bias=False)
    params = layer.init(KEY, (5,))
    assert params.b is None
    x = jnp.ones((3, 5))
    assert_close(layer.apply(params, x), x @ params.w)


def test_layers_under_grad_and_jit():
    model = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(4)), rnnjax.dense(1))
    params = model.init(KEY, (6, 2))
    x, lengths = _batch(), jnp.array([6, 3, 1])

    def loss(p):
        return jnp.mean(model.apply(p, x, lengths=lengths) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


class TestBadInput:
    layer = rnnjax.rnn(rnnjax.lstm(4))
    params = layer.init(KEY, (6, 2))

    def test_unbatched_input(self):
        with pytest.raises(
            ValueError, match=r"x must have rank 3 with shape \(batch, T, input_size\)"
        ):
            self.layer.apply(self.params, jnp.ones((6, 2)))

    def test_lengths_wrong_shape(self):
        with pytest.raises(ValueError, match=r"lengths must have shape \(3,\).*got shape \(2,\)"):
            self.layer.apply(self.params, _batch(), lengths=jnp.array([1, 2]))

    def test_lengths_out_of_range(self):
        with pytest.raises(ValueError, match=r"lengths must lie in \[0, 6\].*\[-1, 7\]"):
            self.layer.apply(self.params, _batch(), lengths=jnp.array([7, -1, 2]))

    def test_lengths_float(self):
        with pytest.raises(TypeError, match="lengths must have an integer dtype"):
            self.layer.apply(self.params, _batch(), lengths=jnp.array([1.0, 2.0, 3.0]))

    def test_bad_merge(self):
        with pytest.raises(ValueError, match=r"merge must be one of .* got 'max'"):
            rnnjax.bidirectional(rnnjax.lstm(2), merge="max")

    def test_bidirectional_params_mismatch(self):
        layer = rnnjax.bidirectional(rnnjax.lstm(4))
        with pytest.raises(TypeError, match="must be BidirectionalParams; got LSTMParams"):
            layer.apply(self.params, _batch())

    def test_serial_params_count(self):
        model = rnnjax.serial(self.layer, rnnjax.dense(1))
        with pytest.raises(ValueError, match=r"one entry per layer \(2\); got 1"):
            model.apply((self.params,), _batch())

    def test_serial_rejects_a_key_that_is_not_a_prng_key(self):
        model = rnnjax.serial(self.layer, rnnjax.dense(1))
        params = model.init(KEY, (6, 2))
        with pytest.raises(TypeError, match=r"key must be a PRNG key .* got int"):
            model.apply(params, _batch(), key=0)
        with pytest.raises(TypeError, match=r"key must be a PRNG key .* shape \(2,\)"):
            model.apply(params, _batch(), key=jax.random.split(KEY))  # two keys, not one

    def test_serial_rejects_non_layers(self):
        with pytest.raises(TypeError, match=r"layers\[0\] must be an rnnjax Layer; got Cell"):
            rnnjax.serial(rnnjax.lstm(3))

    def test_stack_rejects_triples(self):
        with pytest.raises(
            ValueError, match=r"layers\[0\] must be a cell or a \(forward, backward\)"
        ):
            rnnjax.stack([(rnnjax.lstm(2),) * 3])

    def test_dense_feature_mismatch(self):
        layer = rnnjax.dense(2)
        params = layer.init(KEY, (5,))
        with pytest.raises(
            ValueError, match=r"x must have shape \(\.\.\., 5\).*got shape \(3, 4\)"
        ):
            layer.apply(params, jnp.ones((3, 4)))

    @pytest.mark.parametrize("batch_shape", [(), (3,)], ids=["unbatched", "batch_3"])
    def test_rnn_initial_state_batch_mismatch(self, batch_shape):
        state = rnnjax.lstm(4).initial_state(batch_shape)
        got = re.escape(str((batch_shape + (4,),) * 2))
        with pytest.raises(
            ValueError,
            match=rf"initial_state leaves must have shapes \(\(2, 4\), \(2, 4\)\).*got {got}",
        ):
            jax.jit(self.layer.apply)(self.params, _batch(batch=2), initial_state=state)

    def test_bidirectional_initial_state_not_a_pair(self):
        cell = rnnjax.lstm(4)
        layer = rnnjax.bidirectional(cell)
        params = layer.init(KEY, (6, 2))
        x = _batch(batch=2)
        with pytest.raises(
            ValueError,
            match=r"initial_state of a bidirectional layer must be a pair "
            r"\(forward_state, backward_state\).*got LSTMState",
        ):
            layer.apply(params, x, initial_state=cell.initial_state((2,)))
        with pytest.raises(ValueError, match=r"must be a pair .*got a tuple of length 3"):
            layer.apply(params, x, initial_state=(cell.initial_state((2,)),) * 3)
        with pytest.raises(
            ValueError, match=r"initial_state\[1\] leaves must have shapes .*got \(\(4,\), \(4,\)\)"
        ):
            layer.apply(params, x, initial_state=(None, cell.initial_state()))

    @pytest.mark.parametrize("num_states", [1, 3])
    def test_stack_initial_state_count(self, num_states):
        cell = rnnjax.gru(3)
        model = rnnjax.stack([cell, (cell, cell)])
        params = model.init(KEY, (6, 2))
        with pytest.raises(
            ValueError,
            match=rf"initial_state must be a tuple with one state per layer \(2; .*"
            rf"got a tuple of length {num_states}",
        ):
            model.apply(params, _batch(), initial_state=(None,) * num_states)

    def test_dense_after_unmerged_bidirectional(self):
        unmerged = rnnjax.bidirectional(rnnjax.lstm(4), rnnjax.gru(3), merge=None)
        assert unmerged.output_shape((6, 2)) == ((4,), (3,))
        model = rnnjax.serial(unmerged, rnnjax.dense(1))
        with pytest.raises(
            ValueError, match=r"input_shape must be one example's shape.*got \(\(4,\), \(3,\)\)"
        ) as info:
            model.init(KEY, (6, 2))
        assert "layers[1].init" in "".join(info.value.__notes__)
        pair = unmerged.apply(unmerged.init(KEY, (6, 2)), _batch())
        dense = rnnjax.dense(1)
        with pytest.raises(
            TypeError, match=r"x must be one array \[\.\.\., 4\]; got a tuple of 2 arrays"
        ):
            dense.apply(dense.init(KEY, (4,)), pair)


def test_rnn_layer_chunked_remat_equals_default():
    x, lengths = _batch(steps=7), jnp.array([7, 3, 0])
    plain = rnnjax.rnn(rnnjax.gru(4), return_sequences=True)
    chunked = rnnjax.rnn(rnnjax.gru(4), return_sequences=True, remat_chunk=3)
    params = plain.init(KEY, (7, 2))

    def loss(layer, p):
        return jnp.sum(jnp.cos(layer.apply(p, x, lengths=lengths)))

    assert_close(chunked.apply(params, x, lengths=lengths), plain.apply(params, x, lengths))
    jax.tree.map(
        assert_close,
        jax.grad(lambda p: loss(chunked, p))(params),
        jax.grad(lambda p: loss(plain, p))(params),
    )


@pytest.mark.parametrize("merge", ["sum", "mean", "mul"])
def test_bidirectional_elementwise_merge_needs_equal_sizes(merge):
    with pytest.raises(ValueError, match=rf"merge='{merge}'.*forward 4 and backward 5"):
        rnnjax.bidirectional(rnnjax.lstm(4), rnnjax.lstm(5), merge=merge)
    layer = rnnjax.bidirectional(rnnjax.lstm(4), rnnjax.lstm(5), merge="concat")
    assert layer.output_shape((7, 3)) == (9,)
