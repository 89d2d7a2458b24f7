"""Bad input to the layers (``rnn``, ``bidirectional``, ``stack``, ``dense``, ``serial``) and the
attention mechanisms: each case raises the named exception, and the message names the argument.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax

KEY = jax.random.key(0)
X = jnp.ones((2, 5, 3))
RNN_LAYER = rnnjax.rnn(rnnjax.lstm(4))
RNN_PARAMS = RNN_LAYER.init(KEY, (5, 3))
BI = rnnjax.bidirectional(rnnjax.lstm(4), merge="sum")
BI_PARAMS = BI.init(KEY, (5, 3))
STACK = rnnjax.stack([rnnjax.lstm(4), rnnjax.lstm(4)], dropout=0.5)
STACK_PARAMS = STACK.init(KEY, (5, 3))
DENSE = rnnjax.dense(2)
DENSE_PARAMS = DENSE.init(KEY, (3,))
BAHDANAU = rnnjax.bahdanau_attention(8)
BAHDANAU_PARAMS = BAHDANAU.init(KEY, query_size=4, key_size=3)
LUONG = rnnjax.luong_attention("general")
LUONG_PARAMS = LUONG.init(KEY, query_size=4, key_size=3)
KEYS = jnp.ones((6, 3))
QUERY = jnp.ones(4)


def _apply(**options):
    return RNN_LAYER.apply(RNN_PARAMS, X, **options)


def _attend(**options):
    return BAHDANAU.apply(BAHDANAU_PARAMS, QUERY, KEYS, **options)


CASES = [
    # rnn
    pytest.param(lambda: rnnjax.rnn("lstm"), TypeError, "cell", id="rnn-cell-str"),
    pytest.param(
        lambda: rnnjax.rnn(rnnjax.lstm(4), unroll=0), ValueError, "unroll", id="rnn-unroll-0"
    ),
    pytest.param(
        lambda: RNN_LAYER.init(KEY, 3), ValueError, "input_shape", id="rnn-init-int-shape"
    ),
    pytest.param(
        lambda: RNN_LAYER.init(KEY, ()), ValueError, "input_shape", id="rnn-init-empty-shape"
    ),
    pytest.param(
        lambda: RNN_LAYER.init(KEY, (5, 0)), ValueError, "input_size", id="rnn-init-zero-features"
    ),
    pytest.param(
        lambda: RNN_LAYER.apply(RNN_PARAMS, jnp.ones((5, 3))),
        ValueError,
        "x",
        id="rnn-apply-unbatched",
    ),
    pytest.param(
        lambda: RNN_LAYER.apply(RNN_PARAMS, jnp.ones((2, 5, 4))),
        ValueError,
        "x",
        id="rnn-apply-wrong-width",
    ),
    pytest.param(
        lambda: RNN_LAYER.apply(RNN_PARAMS, jnp.ones((2, 5, 3), int)),
        TypeError,
        "x",
        id="rnn-apply-int-x",
    ),
    pytest.param(lambda: RNN_LAYER.apply(RNN_PARAMS, (X, X)), TypeError, "x", id="rnn-apply-pair"),
    pytest.param(
        lambda: _apply(lengths=jnp.array([5])), ValueError, "lengths", id="rnn-lengths-short"
    ),
    pytest.param(
        lambda: _apply(lengths=jnp.array([6, 1])), ValueError, "lengths", id="rnn-lengths-past-t"
    ),
    pytest.param(
        lambda: _apply(lengths=jnp.array([-1, 1])), ValueError, "lengths", id="rnn-lengths-negative"
    ),
    pytest.param(
        lambda: _apply(lengths=jnp.array([2.0, 1.0])), TypeError, "lengths", id="rnn-lengths-float"
    ),
    pytest.param(
        lambda: _apply(lengths=jnp.array([True, False])),
        TypeError,
        "lengths",
        id="rnn-lengths-bool",
    ),
    pytest.param(
        lambda: _apply(initial_state=rnnjax.lstm(4).initial_state()),
        ValueError,
        "initial_state",
        id="rnn-state-unbatched",
    ),
    pytest.param(
        lambda: _apply(initial_state=rnnjax.lstm(4).initial_state((3,))),
        ValueError,
        "initial_state",
        id="rnn-state-wrong-batch",
    ),
    pytest.param(
        lambda: RNN_LAYER.apply(BI_PARAMS, X), TypeError, "params", id="rnn-bidirectional-params"
    ),
    # bidirectional
    pytest.param(
        lambda: rnnjax.bidirectional(rnnjax.lstm(4), merge="add"),
        ValueError,
        "merge",
        id="bi-merge-unknown",
    ),
    pytest.param(
        lambda: rnnjax.bidirectional(rnnjax.lstm(4), rnnjax.lstm(5), merge="sum"),
        ValueError,
        "merge",
        id="bi-sum-size-mismatch",
    ),
    pytest.param(
        lambda: rnnjax.bidirectional(rnnjax.lstm(4), rnnjax.lstm(5), merge="mul"),
        ValueError,
        "merge",
        id="bi-mul-size-mismatch",
    ),
    pytest.param(
        lambda: rnnjax.bidirectional(rnnjax.lstm(4), "gru"), TypeError, "cell", id="bi-backward-str"
    ),
    pytest.param(lambda: BI.apply(RNN_PARAMS, X), TypeError, "params", id="bi-single-params"),
    pytest.param(
        lambda: BI.apply(BI_PARAMS, X, initial_state=rnnjax.lstm(4).initial_state((2,))),
        ValueError,
        "initial_state",
        id="bi-state-not-pair",
    ),
    # stack
    pytest.param(lambda: rnnjax.stack([]), ValueError, "layers", id="stack-empty"),
    pytest.param(
        lambda: rnnjax.stack([rnnjax.lstm(4)], dropout=1.0),
        ValueError,
        "dropout",
        id="stack-dropout-1",
    ),
    pytest.param(
        lambda: rnnjax.stack([rnnjax.lstm(4)], dropout=-0.1),
        ValueError,
        "dropout",
        id="stack-dropout-negative",
    ),
    pytest.param(
        lambda: rnnjax.stack([(rnnjax.lstm(4),) * 3]), ValueError, r"layers\[0\]", id="stack-triple"
    ),
    pytest.param(
        lambda: STACK.apply(STACK_PARAMS[:1], X), ValueError, "params", id="stack-params-short"
    ),
    pytest.param(
        lambda: STACK.apply(STACK_PARAMS, X, key=jnp.ones(2)),
        TypeError,
        "key",
        id="stack-float-key",
    ),
    pytest.param(
        lambda: STACK.apply(STACK_PARAMS, X, initial_state=(None,)),
        ValueError,
        "initial_state",
        id="stack-state-short",
    ),
    # dense
    pytest.param(lambda: rnnjax.dense(0), ValueError, "features", id="dense-features-0"),
    pytest.param(lambda: rnnjax.dense(2.5), ValueError, "features", id="dense-features-float"),
    pytest.param(
        lambda: rnnjax.dense(2, "relu"), TypeError, "activation", id="dense-activation-str"
    ),
    pytest.param(
        lambda: DENSE.apply(DENSE_PARAMS, jnp.ones((2, 4))), ValueError, "x", id="dense-wrong-width"
    ),
    pytest.param(
        lambda: DENSE.apply(DENSE_PARAMS, jnp.ones((2, 3), int)), TypeError, "x", id="dense-int-x"
    ),
    pytest.param(
        lambda: DENSE.init(KEY, ((5, 4), (5, 4))), ValueError, "input_shape", id="dense-pair-shape"
    ),
    # serial
    pytest.param(
        lambda: rnnjax.serial(RNN_LAYER, "dense"), TypeError, r"layers\[1\]", id="serial-str-layer"
    ),
    pytest.param(
        lambda: rnnjax.serial(RNN_LAYER, rnnjax.lstm(3)),
        TypeError,
        r"layers\[1\]",
        id="serial-cell-not-layer",
    ),
    pytest.param(
        lambda: rnnjax.serial(RNN_LAYER, DENSE).apply((RNN_PARAMS,), X),
        ValueError,
        "params",
        id="serial-params-short",
    ),
    # attention
    pytest.param(
        lambda: rnnjax.bahdanau_attention(0), ValueError, "attention_size", id="bahdanau-size-0"
    ),
    pytest.param(
        lambda: rnnjax.luong_attention("concat"), ValueError, "score", id="luong-unknown-score"
    ),
    pytest.param(
        lambda: rnnjax.luong_attention().init(KEY, 4, 3),
        ValueError,
        "query_size",
        id="luong-dot-unequal",
    ),
    pytest.param(
        lambda: BAHDANAU.init(KEY, 0, 3), ValueError, "query_size", id="bahdanau-query-size-0"
    ),
    pytest.param(lambda: _attend(length=7), ValueError, "length", id="attention-length-past-t"),
    pytest.param(lambda: _attend(length=-1), ValueError, "length", id="attention-length-negative"),
    pytest.param(lambda: _attend(length=2.0), TypeError, "length", id="attention-length-float"),
    pytest.param(
        lambda: _attend(length=3, mask=jnp.ones(6, bool)),
        ValueError,
        "length or mask",
        id="attention-length-and-mask",
    ),
    pytest.param(
        lambda: _attend(mask=jnp.ones(5, bool)), ValueError, "mask", id="attention-mask-short"
    ),
    pytest.param(lambda: _attend(mask=jnp.ones(6)), ValueError, "mask", id="attention-mask-float"),
    pytest.param(
        lambda: BAHDANAU.apply(BAHDANAU_PARAMS, jnp.ones(5), KEYS),
        ValueError,
        "query",
        id="attention-query-width",
    ),
    pytest.param(
        lambda: BAHDANAU.apply(BAHDANAU_PARAMS, QUERY, jnp.ones((2, 6, 3))),
        ValueError,
        "keys",
        id="attention-batched-keys",
    ),
    pytest.param(
        lambda: BAHDANAU.apply(BAHDANAU_PARAMS, QUERY, jnp.ones((6, 4))),
        ValueError,
        "keys",
        id="attention-keys-width",
    ),
    pytest.param(
        lambda: BAHDANAU.apply(BAHDANAU_PARAMS, QUERY, jnp.ones((6, 3), int)),
        TypeError,
        "keys",
        id="attention-int-keys",
    ),
    pytest.param(
        lambda: BAHDANAU.apply(BAHDANAU_PARAMS, QUERY, KEYS, jnp.ones((5, 2))),
        ValueError,
        "values",
        id="attention-values-rows",
    ),
    pytest.param(
        lambda: _attend(memory=jnp.ones((5, 8))), ValueError, "memory", id="attention-memory-rows"
    ),
    pytest.param(
        lambda: _attend(memory=jnp.ones((6, 7))), ValueError, "memory", id="attention-memory-width"
    ),
    pytest.param(
        lambda: BAHDANAU.apply(LUONG_PARAMS, QUERY, KEYS),
        TypeError,
        "params",
        id="attention-luong-params",
    ),
    pytest.param(
        lambda: LUONG.apply(LUONG_PARAMS, QUERY, jnp.ones((6, 5))),
        ValueError,
        "keys",
        id="luong-keys-width",
    ),
    pytest.param(
        lambda: rnnjax.masked_softmax(jnp.ones(4), jnp.ones(3, bool)),
        ValueError,
        "valid",
        id="masked-softmax-valid-short",
    ),
    pytest.param(
        lambda: rnnjax.masked_softmax(jnp.ones(4), jnp.ones(4)),
        TypeError,
        "valid",
        id="masked-softmax-float-valid",
    ),
]


@pytest.mark.parametrize("call, error, match", CASES)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_attention_to_an_empty_sequence_gives_zero_context():
    """Length 0 is not an error: zero weights and a zero context (never NaN)."""
    context, weights = _attend(length=0)
    np.testing.assert_array_equal(np.asarray(weights), np.zeros(6))
    np.testing.assert_array_equal(np.asarray(context), np.zeros(3))


def test_traced_lengths_out_of_range_are_clipped():
    """Under jit lengths cannot be checked: 7 > T reads as T and -1 as 0 (documented choice)."""
    apply = jax.jit(RNN_LAYER.apply)
    clipped = apply(RNN_PARAMS, X, jnp.array([7, -1]))
    expected = apply(RNN_PARAMS, X, jnp.array([5, 0]))
    np.testing.assert_array_equal(np.asarray(clipped), np.asarray(expected))
    np.testing.assert_array_equal(np.asarray(clipped[1]), np.zeros(4))
