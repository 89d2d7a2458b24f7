"""Masked losses and metrics: padding never counts, NaN in padding never leaks, NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import train
from tests.tolerances import assert_close

B, T, C = 3, 6, 4
LENGTHS = np.array([6, 2, 0])


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(B, T, C)).astype(np.float32)
    labels = rng.integers(0, C, size=(B, T))
    for b, n in enumerate(LENGTHS):  # garbage in the padding
        logits[b, n:] = np.nan
        labels[b, n:] = -7
    return logits, labels


def _valid(array):
    return np.concatenate([array[b, :n] for b, n in enumerate(LENGTHS)])


def test_cross_entropy_padded_equals_unpadded(batch):
    logits, labels = batch
    loss = train.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), lengths=LENGTHS)
    flat_logits, flat_labels = _valid(logits), _valid(labels)
    expected = -_log_softmax(flat_logits.astype(np.float64))[
        np.arange(len(flat_labels)), flat_labels
    ]
    assert_close(loss, expected.mean())
    unpadded = train.softmax_cross_entropy(jnp.asarray(flat_logits), jnp.asarray(flat_labels))
    assert_close(loss, unpadded)
    mask = train.sequence_mask(jnp.asarray(LENGTHS), T)
    assert_close(train.softmax_cross_entropy(logits, labels, mask=mask), loss)


def test_cross_entropy_gradient_ignores_padding(batch):
    logits, labels = batch
    grad = jax.grad(lambda z: train.softmax_cross_entropy(z, labels, lengths=LENGTHS))(logits)
    grad = np.asarray(grad)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[1, 2:], 0.0)
    flat_grad = jax.grad(lambda z: train.softmax_cross_entropy(z, _valid(labels)))(_valid(logits))
    assert_close(_valid(grad), flat_grad)


def test_sum_and_none_reductions(batch):
    logits, labels = batch
    per_token = train.softmax_cross_entropy(logits, labels, lengths=LENGTHS, reduction="none")
    assert per_token.shape == (B, T)
    np.testing.assert_array_equal(per_token[2], 0.0)
    total = train.softmax_cross_entropy(logits, labels, lengths=LENGTHS, reduction="sum")
    assert_close(total, np.sum(per_token))


def test_all_padding_gives_zero_not_nan(batch):
    logits, labels = batch
    loss = train.softmax_cross_entropy(logits, labels, lengths=np.zeros(B, np.int32))
    assert float(loss) == 0.0


def test_mean_squared_error_mask_covers_features():
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(2, B, T, 2)).astype(np.float32)
    pred[1, 2:] = np.inf
    loss = train.mean_squared_error(pred, target, lengths=LENGTHS)
    expected = np.mean((_valid(pred) - _valid(target)).astype(np.float64) ** 2)
    assert_close(loss, expected)


def test_binary_cross_entropy_matches_numpy_and_logit_form():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(B, T)).astype(np.float32)
    targets = (rng.random((B, T)) > 0.5).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    per = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    assert_close(train.binary_cross_entropy(jax.nn.sigmoid(logits), targets, lengths=LENGTHS),
                 _valid(per).mean(), scale=10)  # fmt: skip
    assert_close(train.sigmoid_binary_cross_entropy(logits, targets, lengths=LENGTHS),
                 _valid(per).mean())  # fmt: skip
    assert np.isfinite(
        float(train.binary_cross_entropy(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0])))
    )


def test_accuracies():
    logits = jnp.array([[[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]]])
    labels = jnp.array([[0, 0, 1]])
    assert_close(train.accuracy(logits, labels), 1 / 3)
    assert_close(train.accuracy(logits, labels, lengths=jnp.array([2])), 0.5)
    probabilities = jnp.array([[0.9], [0.2], [0.6]])
    targets = jnp.array([[1.0], [0.0], [0.0]])
    assert_close(train.binary_accuracy(probabilities, targets), 2 / 3)
    assert_close(train.binary_accuracy(probabilities, targets, mask=jnp.array([1, 1, 0])), 1.0)
    assert_close(
        train.binary_accuracy(jnp.array([3.0, -1.0]), jnp.array([1.0, 1.0]), threshold=0.0), 0.5
    )


def test_errors(batch):
    logits, labels = batch
    with pytest.raises(ValueError, match="mask or lengths, not both"):
        train.softmax_cross_entropy(logits, labels, mask=np.ones((B, T), bool), lengths=LENGTHS)
    with pytest.raises(ValueError, match=r"must have the same shape; got \(4, 1\) and \(4,\)"):
        train.binary_cross_entropy(jnp.ones((4, 1)) / 2, jnp.ones(4))
    with pytest.raises(TypeError, match="labels must be integer class ids; got dtype float32"):
        train.softmax_cross_entropy(logits, labels.astype(np.float32))
    with pytest.raises(ValueError, match=r"labels must have shape \(3, 6\)"):
        train.accuracy(logits, labels[:, :2])
    with pytest.raises(ValueError, match="reduction must be one of"):
        train.mean_squared_error(jnp.ones(3), jnp.ones(3), reduction="avg")
    with pytest.raises(ValueError, match=r"mask must have shape \(3, 6\) or a prefix of it"):
        train.softmax_cross_entropy(logits, labels, mask=np.ones((B, 2), bool))
    with pytest.raises(ValueError, match=r"lengths must be a rank-1 integer array"):
        train.sequence_mask(jnp.array([1.5]), 3)
    with pytest.raises(ValueError, match=r"lengths must have shape \(3,\)"):
        train.softmax_cross_entropy(logits, labels, lengths=np.array([1, 2]))
    with pytest.raises(ValueError, match="lengths needs per-step values"):
        train.mean_squared_error(jnp.ones(3), jnp.ones(3), lengths=np.array([1, 2, 3]))
