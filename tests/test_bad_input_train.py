"""Bad input to ``rnnjax.train``: losses, preprocessing, embeddings, dropout, steps, truncated
BPTT, checkpoints and ``fit``. Each case raises the named exception and the message names the
argument; value checks that cannot run under ``jit`` are pinned in the tests after the table.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

import rnnjax
from rnnjax import train

KEY = jax.random.key(0)
LOGITS = jnp.zeros((2, 5))
LABELS = jnp.array([1, 3])
PROBABILITIES = jnp.full((2, 1), 0.5)
TARGETS = jnp.ones((2, 1))
CELL = rnnjax.lstm(4)
CELL_PARAMS = CELL.init(KEY, 3)
SEQUENCES = [np.ones((3, 2)), np.ones((1, 2))]
EMBEDDING = train.embedding(10, 4)
EMBEDDING_PARAMS = EMBEDDING.init(KEY)
STANDARDIZER = train.fit_standardizer(np.arange(12.0).reshape(6, 2))


def _loss(params, batch, key):
    return jnp.mean((batch[0] @ params - batch[1]) ** 2)


def _fit(**options):
    data = (np.ones((8, 3), np.float32), np.ones((8,), np.float32))
    options = {"epochs": 1, "batch_size": 4, "progress": False, **options}
    return train.fit(_loss, jnp.zeros(3), optax.sgd(0.1), data, **options)


CASES = [
    # softmax_cross_entropy / accuracy
    pytest.param(
        lambda: train.softmax_cross_entropy(LOGITS, jnp.array([1, 7])),
        ValueError,
        r"labels must lie in \[0, 5\); got labels\[1\] = 7",
        id="ce-label-too-large",
    ),
    pytest.param(
        lambda: train.softmax_cross_entropy(LOGITS, jnp.array([-1, 2])),
        ValueError,
        r"labels must lie in \[0, 5\); got labels\[0\] = -1",
        id="ce-label-negative",
    ),
    pytest.param(
        lambda: train.softmax_cross_entropy(LOGITS, jnp.array([1.0, 2.0])),
        TypeError,
        "labels",
        id="ce-float-labels",
    ),
    pytest.param(
        lambda: train.softmax_cross_entropy(LOGITS, jnp.array([1, 2, 3])),
        ValueError,
        "labels",
        id="ce-labels-shape",
    ),
    pytest.param(
        lambda: train.softmax_cross_entropy(jnp.zeros((2, 5), int), LABELS),
        TypeError,
        "logits",
        id="ce-int-logits",
    ),
    pytest.param(
        lambda: train.softmax_cross_entropy(LOGITS, LABELS, reduction="avg"),
        ValueError,
        "reduction",
        id="ce-reduction",
    ),
    pytest.param(
        lambda: train.softmax_cross_entropy(LOGITS, LABELS, mask=jnp.ones(3, bool)),
        ValueError,
        "mask",
        id="ce-mask-shape",
    ),
    pytest.param(
        lambda: train.softmax_cross_entropy(
            LOGITS, LABELS, mask=jnp.ones(2, bool), lengths=jnp.array([1, 1])
        ),
        ValueError,
        "mask or lengths",
        id="ce-mask-and-lengths",
    ),
    pytest.param(
        lambda: train.softmax_cross_entropy(
            jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), int), lengths=jnp.array([1])
        ),
        ValueError,
        "lengths",
        id="ce-lengths-short",
    ),
    pytest.param(
        lambda: train.softmax_cross_entropy(
            jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), int), lengths=jnp.array([1.0, 2.0])
        ),
        ValueError,
        "lengths",
        id="ce-lengths-float",
    ),
    pytest.param(
        lambda: train.accuracy(LOGITS, jnp.array([0, 5])),
        ValueError,
        r"labels must lie in \[0, 5\)",
        id="accuracy-label-range",
    ),
    pytest.param(
        lambda: train.accuracy(LOGITS, jnp.array([0.0, 1.0])),
        TypeError,
        "labels",
        id="accuracy-float-labels",
    ),
    # binary losses
    pytest.param(
        lambda: train.binary_cross_entropy(PROBABILITIES, jnp.full((2, 1), 2.0)),
        ValueError,
        r"targets must lie in \[0, 1\]",
        id="bce-target-2",
    ),
    pytest.param(
        lambda: train.binary_cross_entropy(jnp.full((2, 1), 3.0), TARGETS),
        ValueError,
        r"probabilities must lie in \[0, 1\]",
        id="bce-logits-as-probabilities",
    ),
    pytest.param(
        lambda: train.binary_cross_entropy(PROBABILITIES, jnp.ones(2)),
        ValueError,
        "targets",
        id="bce-shape",
    ),
    pytest.param(
        lambda: train.binary_cross_entropy(PROBABILITIES, TARGETS, epsilon=0.7),
        ValueError,
        "epsilon",
        id="bce-epsilon",
    ),
    pytest.param(
        lambda: train.sigmoid_binary_cross_entropy(PROBABILITIES, -TARGETS),
        ValueError,
        r"targets must lie in \[0, 1\]",
        id="sigmoid-bce-target-negative",
    ),
    pytest.param(
        lambda: train.sigmoid_binary_cross_entropy(jnp.ones((2, 1)), jnp.ones((1, 2))),
        ValueError,
        "targets",
        id="sigmoid-bce-shape",
    ),
    pytest.param(
        lambda: train.mean_squared_error(jnp.ones((2, 1)), jnp.ones(2)),
        ValueError,
        "targets",
        id="mse-shape",
    ),
    pytest.param(
        lambda: train.mean_squared_error(jnp.ones(2), jnp.ones(2), reduction=None),
        ValueError,
        "reduction",
        id="mse-reduction-none",
    ),
    pytest.param(
        lambda: train.binary_accuracy(jnp.ones(2), jnp.ones(3)),
        ValueError,
        "targets",
        id="binary-accuracy-shape",
    ),
    pytest.param(
        lambda: train.sequence_mask(jnp.array([[1, 2]]), 3),
        ValueError,
        "lengths",
        id="sequence-mask-rank-2",
    ),
    pytest.param(
        lambda: train.sequence_mask(jnp.array([1.0]), 3),
        ValueError,
        "lengths",
        id="sequence-mask-float",
    ),
    pytest.param(
        lambda: train.sequence_mask(jnp.array([1]), -1),
        ValueError,
        "max_length",
        id="sequence-mask-negative-max",
    ),
    # data
    pytest.param(lambda: train.pad_sequences([]), ValueError, "sequences", id="pad-no-sequences"),
    pytest.param(
        lambda: train.pad_sequences([np.ones((2, 3)), np.ones((2, 4))]),
        ValueError,
        "sequences",
        id="pad-trailing-mismatch",
    ),
    pytest.param(
        lambda: train.pad_sequences(SEQUENCES, max_length=-1),
        ValueError,
        "max_length",
        id="pad-negative-max",
    ),
    pytest.param(
        lambda: train.pad_sequences(SEQUENCES, max_length=2.5),
        (TypeError, ValueError),
        "max_length",
        id="pad-float-max",
    ),
    pytest.param(
        lambda: train.pad_sequences([1.0, 2.0]), ValueError, "sequences", id="pad-scalars"
    ),
    pytest.param(
        lambda: list(train.bucket_by_length(SEQUENCES, 0)),
        ValueError,
        "batch_size",
        id="bucket-batch-0",
    ),
    pytest.param(
        lambda: list(train.bucket_by_length(SEQUENCES, 2.5)),
        ValueError,
        "batch_size",
        id="bucket-batch-float",
    ),
    pytest.param(
        lambda: list(train.bucket_by_length(SEQUENCES, 2, boundaries=[4, 2])),
        ValueError,
        "boundaries",
        id="bucket-boundaries-decreasing",
    ),
    pytest.param(
        lambda: list(train.bucket_by_length(SEQUENCES, 2, boundaries=[])),
        ValueError,
        "boundaries",
        id="bucket-boundaries-empty",
    ),
    pytest.param(
        lambda: train.sliding_windows(np.arange(5.0), 0),
        ValueError,
        "window",
        id="windows-window-0",
    ),
    pytest.param(
        lambda: train.sliding_windows(np.arange(5.0), 3, horizon=0),
        ValueError,
        "horizon",
        id="windows-horizon-0",
    ),
    pytest.param(
        lambda: train.sliding_windows(np.arange(5.0), 3, stride=1.5),
        ValueError,
        "stride",
        id="windows-stride-float",
    ),
    pytest.param(
        lambda: train.sliding_windows(np.arange(5.0), True),
        ValueError,
        "window",
        id="windows-window-bool",
    ),
    pytest.param(
        lambda: list(train.bucket_by_length(SEQUENCES, True)),
        ValueError,
        "batch_size",
        id="bucket-batch-bool",
    ),
    pytest.param(
        lambda: train.sliding_windows(np.arange(3.0), 3),
        ValueError,
        "window",
        id="windows-too-short",
    ),
    pytest.param(
        lambda: train.sliding_windows(np.ones((4, 2, 2)), 2),
        ValueError,
        "series",
        id="windows-rank-3",
    ),
    pytest.param(
        lambda: train.fit_standardizer(np.ones((4, 2)), epsilon=0.0),
        ValueError,
        "epsilon",
        id="standardizer-epsilon-0",
    ),
    pytest.param(
        lambda: train.fit_standardizer(np.array(["a", "b"])),
        TypeError,
        "x",
        id="standardizer-strings",
    ),
    pytest.param(
        lambda: train.fit_standardizer(np.zeros((0, 2))), ValueError, "x", id="standardizer-empty"
    ),
    pytest.param(
        lambda: train.standardize(np.ones((3, 5)), STANDARDIZER),
        ValueError,
        "x",
        id="standardize-width",
    ),
    pytest.param(
        lambda: train.standardize(np.ones((3, 2)), (0.0, 1.0)),
        TypeError,
        "standardizer",
        id="standardize-tuple",
    ),
    pytest.param(
        lambda: train.unstandardize(np.ones((3, 5)), STANDARDIZER),
        ValueError,
        "z",
        id="unstandardize-width",
    ),
    # embedding
    pytest.param(lambda: train.embedding(0, 4), ValueError, "vocab_size", id="embedding-vocab-0"),
    pytest.param(lambda: train.embedding(10, 0), ValueError, "features", id="embedding-features-0"),
    pytest.param(
        lambda: train.embedding(10, 4, pretrained=np.ones((9, 4))),
        ValueError,
        "pretrained",
        id="embedding-pretrained-shape",
    ),
    pytest.param(
        lambda: train.embedding(10, 4, scale=-1.0),
        ValueError,
        "scale",
        id="embedding-scale-negative",
    ),
    pytest.param(
        lambda: EMBEDDING.apply(EMBEDDING_PARAMS, jnp.ones((2, 3))),
        TypeError,
        "ids",
        id="embedding-float-ids",
    ),
    pytest.param(
        lambda: EMBEDDING.apply(EMBEDDING_PARAMS, jnp.array([[1, 10]])),
        ValueError,
        r"ids must lie in \[0, 10\)",
        id="embedding-id-too-large",
    ),
    pytest.param(
        lambda: EMBEDDING.apply(EMBEDDING_PARAMS, jnp.array([[1, -1]])),
        ValueError,
        r"ids must lie in \[0, 10\)",
        id="embedding-id-negative",
    ),
    pytest.param(
        lambda: EMBEDDING.apply(EMBEDDING_PARAMS, jnp.ones(3, int), lengths=jnp.array([1])),
        ValueError,
        "ids",
        id="embedding-lengths-rank-1",
    ),
    pytest.param(
        lambda: EMBEDDING.apply(EMBEDDING_PARAMS, jnp.ones((2, 3), int), lengths=jnp.array([4, 1])),
        ValueError,
        "lengths",
        id="embedding-lengths-past-t",
    ),
    pytest.param(
        lambda: train.embedding_matrix(
            {"a": 0, "b": 2}, train.WordVectors(("a",), np.ones((1, 2)))
        ),
        ValueError,
        "vocabulary",
        id="embedding-matrix-gap",
    ),
    pytest.param(
        lambda: train.embedding_matrix(["a"], np.ones((1, 2))),
        TypeError,
        "word_vectors",
        id="embedding-matrix-array",
    ),
    pytest.param(
        lambda: train.load_word_vectors("/nonexistent/vectors.txt"),
        FileNotFoundError,
        "vectors.txt",
        id="vectors-missing-file",
    ),
    # dropout
    pytest.param(
        lambda: train.dropout(jnp.ones(3), 0.2, KEY),
        TypeError,
        "rate .* signature is dropout\\(key, x, rate\\)",
        id="dropout-swapped-arguments",
    ),
    pytest.param(
        lambda: train.dropout(KEY, 0.2, 0.5),
        TypeError,
        "x must be a floating-point array",
        id="dropout-x-float",
    ),
    pytest.param(
        lambda: train.dropout(jnp.ones(3), jnp.ones(3), 0.5),
        TypeError,
        "key must be a PRNG key",
        id="dropout-array-key",
    ),
    pytest.param(
        lambda: train.dropout(KEY, jnp.ones(3), 1.0),
        ValueError,
        r"rate must lie in \[0, 1\)",
        id="dropout-rate-1",
    ),
    pytest.param(
        lambda: train.dropout(KEY, jnp.ones(3), "0.5"), TypeError, "rate", id="dropout-rate-str"
    ),
    pytest.param(
        lambda: train.dropout(KEY, jnp.ones((2, 3)), 0.5, broadcast_axes=(2,)),
        ValueError,
        "broadcast_axes",
        id="dropout-axis-out-of-range",
    ),
    pytest.param(
        lambda: train.dropout(KEY, jnp.ones(3, int), 0.5), TypeError, "x", id="dropout-int-x"
    ),
    pytest.param(
        lambda: train.drop_connect(KEY, CELL_PARAMS, 0.5, fields=("w_q",)),
        ValueError,
        "fields",
        id="drop-connect-unknown-field",
    ),
    pytest.param(
        lambda: train.drop_connect(CELL_PARAMS, KEY, 0.5),
        TypeError,
        "key",
        id="drop-connect-swapped",
    ),
    pytest.param(
        lambda: train.variational_dropout(CELL, 1.0), ValueError, "rate", id="variational-rate-1"
    ),
    pytest.param(
        lambda: train.variational_dropout("lstm", 0.5), TypeError, "cell", id="variational-cell-str"
    ),
    pytest.param(
        lambda: train.variational_dropout(CELL, 0.5, key=jnp.ones(2)),
        TypeError,
        "key",
        id="variational-float-key",
    ),
    pytest.param(lambda: train.zoneout(CELL, 1.5), ValueError, "rate", id="zoneout-rate"),
    pytest.param(
        lambda: train.zoneout(CELL, 0.1, cell_rate=-0.1),
        ValueError,
        "cell_rate",
        id="zoneout-cell-rate",
    ),
    # steps and truncated BPTT
    pytest.param(
        lambda: train.with_clipping(optax.sgd(0.1)), ValueError, "max_norm", id="clipping-neither"
    ),
    pytest.param(
        lambda: train.with_clipping(optax.sgd(0.1), max_norm=0.0),
        ValueError,
        "max_norm",
        id="clipping-norm-0",
    ),
    pytest.param(
        lambda: train.with_clipping(optax.sgd(0.1), max_value=-1.0),
        ValueError,
        "max_value",
        id="clipping-value-negative",
    ),
    pytest.param(
        lambda: train.time_chunks(jnp.ones((2, 10, 3)), 3),
        ValueError,
        "chunk_length",
        id="chunks-not-dividing",
    ),
    pytest.param(
        lambda: train.time_chunks(jnp.ones((2, 10, 3)), 0),
        ValueError,
        "chunk_length",
        id="chunks-zero",
    ),
    pytest.param(
        lambda: train.time_chunks(jnp.ones((2, 10, 3)), 5, axis=3),
        ValueError,
        "axis",
        id="chunks-axis",
    ),
    # checkpoints and fit (issue 23's first list)
    pytest.param(
        lambda: train.save_checkpoint("/tmp/rnnjax-bad-input-never", {"w": jnp.ones(2)}, step=-1),
        ValueError,
        "step",
        id="checkpoint-save-negative-step",
    ),
    pytest.param(
        lambda: train.save_checkpoint("/tmp/rnnjax-bad-input-never", {"w": jnp.ones(2)}, step=2.7),
        (TypeError, ValueError),
        "step",
        id="checkpoint-save-float-step",
    ),
    pytest.param(
        lambda: train.restore_checkpoint(
            "/tmp/rnnjax-bad-input-never", {"w": jnp.ones(2)}, step=2.7
        ),
        (TypeError, ValueError),
        "step",
        id="checkpoint-restore-float-step",
    ),
    pytest.param(lambda: _fit(batch_size=0), ValueError, "batch_size", id="fit-batch-size-0"),
    pytest.param(
        lambda: _fit(batch_size=2.5),
        (TypeError, ValueError),
        "batch_size",
        id="fit-batch-size-float",
    ),
    pytest.param(lambda: _fit(epochs=-1), ValueError, "epochs", id="fit-epochs-negative"),
    pytest.param(lambda: _fit(mode="lowest"), ValueError, "mode", id="fit-mode"),
    pytest.param(lambda: _fit(patience=0), ValueError, "patience", id="fit-patience-0"),
]


@pytest.mark.parametrize("call, error, match", CASES)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("labels", [[1, 7], [-1, 2]], ids=["too-large", "negative"])
def test_labels_out_of_range_under_jit_give_nan(labels):
    """Traced labels cannot be inspected: the library chooses NaN (never a wrapped-around class,
    which gave a finite loss for -1 before issue 23)."""
    loss = jax.jit(train.softmax_cross_entropy)(LOGITS, jnp.array(labels))
    assert np.isnan(float(loss))
    per_label = jax.jit(partial(train.softmax_cross_entropy, reduction="none"))(
        LOGITS, jnp.array(labels)
    )
    bad = 1 if labels[1] == 7 else 0
    assert np.isnan(float(per_label[bad])) and np.isfinite(float(per_label[1 - bad]))
    assert np.isnan(float(jax.jit(train.accuracy)(LOGITS, jnp.array(labels))))


def test_labels_out_of_range_under_jit_with_checkify():
    checked = checkify.checkify(jax.jit(partial(train.softmax_cross_entropy, check=True)))
    error, loss = checked(LOGITS, jnp.array([1, 7]))
    with pytest.raises(
        checkify.JaxRuntimeError, match=r"labels must lie in \[0, 5\); got values in \[1, 7\]"
    ):
        error.throw()
    error, loss = checked(LOGITS, LABELS)
    error.throw()  # in range: no error
    np.testing.assert_allclose(float(loss), np.log(5.0), rtol=1e-6)


def test_check_under_jit_without_checkify_is_refused_at_trace_time():
    """``check=True`` needs checkify: plain jit refuses it while tracing, before any result."""
    with pytest.raises(ValueError, match="checkify"):
        jax.jit(partial(train.softmax_cross_entropy, check=True))(LOGITS, LABELS)


def test_padding_labels_are_not_checked():
    """-1 is a common padding label: masked positions are ignored by the range check."""
    logits = jnp.zeros((2, 3, 5))
    labels = jnp.array([[1, 2, -1], [4, -1, -1]])
    loss = train.softmax_cross_entropy(logits, labels, lengths=jnp.array([2, 1]))
    np.testing.assert_allclose(float(loss), np.log(5.0), rtol=1e-6)
    jitted = jax.jit(train.softmax_cross_entropy)(logits, labels, mask=labels >= 0)
    np.testing.assert_allclose(float(jitted), np.log(5.0), rtol=1e-6)


def test_binary_targets_out_of_range_under_jit_give_nan():
    loss = jax.jit(train.binary_cross_entropy)(PROBABILITIES, jnp.array([[1.0], [2.0]]))
    assert np.isnan(float(loss))
    loss = jax.jit(train.sigmoid_binary_cross_entropy)(PROBABILITIES, jnp.array([[1.0], [-1.0]]))
    assert np.isnan(float(loss))
    error, _ = checkify.checkify(jax.jit(partial(train.binary_cross_entropy, check=True)))(
        jnp.array([[0.5], [1.5]]), TARGETS
    )
    with pytest.raises(checkify.JaxRuntimeError, match=r"probabilities must lie in \[0, 1\]"):
        error.throw()


def test_embedding_ids_out_of_range_under_jit_give_nan_rows():
    """Traced ids cannot be checked: an out-of-range id reads a NaN row (never a clipped one)."""
    vectors = jax.jit(EMBEDDING.apply)(EMBEDDING_PARAMS, jnp.array([[1, 10, -1]]))
    assert np.isfinite(np.asarray(vectors[0, 0])).all()
    assert np.isnan(np.asarray(vectors[0, 1:])).all()


def test_fit_stops_on_nan_targets():
    """Issue 23: NaN targets trained on silently; fit now stops at the first NaN loss."""
    data = (np.ones((8, 3), np.float32), np.full((8,), np.nan, np.float32))
    with pytest.raises(FloatingPointError, match="the loss is nan"):
        train.fit(_loss, jnp.zeros(3), optax.sgd(0.1), data, epochs=1, batch_size=4, progress=False)


def test_standardizer_refuses_non_finite_data():
    with pytest.raises(ValueError, match="x must be finite; got 1 NaN"):
        train.fit_standardizer(np.array([[1.0, np.nan], [2.0, 3.0]]))
