"""Embedding layer and the word2vec/GloVe text loader, on small files written by the tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import train

VECTORS = {"the": [0.1, 0.2, 0.3], "cat": [-1.0, 0.5, 2.0], "sat": [0.0, 0.0, 1.5]}


def _write(path, header: bool):
    lines = [f"{len(VECTORS)} 3"] if header else []
    lines += [f"{w} " + " ".join(str(v) for v in vec) for w, vec in VECTORS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("header", [True, False], ids=["word2vec", "glove"])
def test_load_word_vectors(tmp_path, header):
    words, vectors = train.load_word_vectors(_write(tmp_path / "v.txt", header))
    assert words == ("the", "cat", "sat") and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, np.array(list(VECTORS.values()), np.float32))
    words, vectors = train.load_word_vectors(tmp_path / "v.txt", vocabulary={"sat"})
    assert words == ("sat",) and vectors.shape == (1, 3)


def test_load_word_vectors_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2 3\nb 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected a word and 3 values; got 3 fields"):
        train.load_word_vectors(bad)
    bad.write_text("a 1 x 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:1: non-numeric value"):
        train.load_word_vectors(bad)
    bad.write_text("5 3\na 1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header announces 5 vectors; the file holds 1"):
        train.load_word_vectors(bad)
    bad.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no word vectors"):
        train.load_word_vectors(bad)


def test_embedding_matrix_aligns_vocabulary(tmp_path):
    vectors = train.load_word_vectors(_write(tmp_path / "v.txt", True))
    table, found = train.embedding_matrix(["<pad>", "cat", "The", "dog"], vectors, lowercase=True)
    assert found.tolist() == [False, True, True, False]
    np.testing.assert_array_equal(table[1], VECTORS["cat"])
    np.testing.assert_array_equal(table[2], np.float32(VECTORS["the"]))
    same, _ = train.embedding_matrix(
        {"<pad>": 0, "cat": 1, "The": 2, "dog": 3}, vectors, lowercase=True
    )
    np.testing.assert_array_equal(same, table)
    with pytest.raises(ValueError, match="ids must be 0 .. V-1"):
        train.embedding_matrix({"a": 0, "b": 2}, vectors)


@pytest.mark.parametrize("trainable", [True, False])
def test_embedding_layer_frozen_or_trainable(trainable):
    pretrained = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    layer = train.embedding(4, 3, pretrained=pretrained, trainable=trainable)
    params = layer.init(jax.random.key(0), (2,))
    ids = jnp.array([[3, 1], [0, 2]])
    np.testing.assert_array_equal(layer.apply(params, ids), pretrained[np.asarray(ids)])
    grad = jax.grad(lambda p: jnp.sum(layer.apply(p, ids) ** 2))(params).table
    if trainable:
        np.testing.assert_array_equal(grad[3], 2 * pretrained[3])
    else:
        np.testing.assert_array_equal(grad, 0.0)


def test_embedding_in_a_model_with_lengths():
    model = rnnjax.serial(train.embedding(10, 4), rnnjax.rnn(rnnjax.gru(5)), rnnjax.dense(1))
    params = model.init(jax.random.key(0), (6,))
    assert params[0].table.shape == (10, 4) and float(jnp.max(jnp.abs(params[0].table))) <= 0.05
    ids = jnp.array([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9]])
    out = model.apply(params, ids, lengths=jnp.array([3, 6]))
    np.testing.assert_allclose(out[0], model.apply(params, ids[:1, :3])[0], rtol=1e-6)
    layer = train.embedding(10, 4)
    masked = layer.apply(params[0], ids, lengths=jnp.array([3, 6]))
    np.testing.assert_array_equal(masked[0, 3:], 0.0)
    assert np.isnan(layer.apply(params[0], jnp.array([[10]]))).all()  # out of range is loud


def test_embedding_errors():
    with pytest.raises(
        ValueError,
        match=r"pretrained must have shape \(vocab_size, features\) = \(4, 3\); got \(4, 2\)",
    ):
        train.embedding(4, 3, pretrained=np.zeros((4, 2)))
    layer = train.embedding(4, 3)
    with pytest.raises(TypeError, match="ids must be integer token ids; got dtype float32"):
        layer.apply(layer.init(jax.random.key(0)), jnp.ones((1, 2)))
