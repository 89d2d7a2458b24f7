"""Embedding layer and the word2vec/GloVe text loader, on small files written by the tests."""

import gzip

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
    with pytest.raises(
        ValueError, match=r"bad.txt:2: expected a word and 3 values .* got 2 fields"
    ):
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


def _write_binary(path, vectors, newline: bool = True):
    with open(path, "wb") as stream:
        stream.write(f"{len(vectors)} {len(next(iter(vectors.values())))}\n".encode())
        for word, vector in vectors.items():
            stream.write(word.encode() + b" " + np.asarray(vector, "<f4").tobytes())
            stream.write(b"\n" if newline else b"")
    return path


@pytest.mark.parametrize("newline", [True, False], ids=["gensim", "bare"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_load_word_vectors_binary_word2vec(tmp_path, newline, compress):
    vectors = {**VECTORS, "café": [1e-3, -2.5, 7.0]}
    path = _write_binary(tmp_path / "v.bin", vectors, newline)
    if compress:
        path = tmp_path / "v.bin.gz"
        path.write_bytes(gzip.compress((tmp_path / "v.bin").read_bytes()))
    words, table = train.load_word_vectors(path)
    assert words == tuple(vectors)
    np.testing.assert_array_equal(table, np.array(list(vectors.values()), np.float32))
    words, table = train.load_word_vectors(path, vocabulary={"café"})
    assert words == ("café",) and table.shape == (1, 3)


@pytest.mark.parametrize("header", [True, False], ids=["word2vec", "glove"])
def test_load_word_vectors_gzip_text(tmp_path, header):
    text = _write(tmp_path / "v.txt", header).read_bytes()
    (tmp_path / "v.txt.gz").write_bytes(gzip.compress(text))
    words, vectors = train.load_word_vectors(tmp_path / "v.txt.gz")
    assert words == ("the", "cat", "sat")
    np.testing.assert_array_equal(vectors, np.array(list(VECTORS.values()), np.float32))


def test_load_word_vectors_header_is_not_a_word(tmp_path):
    """Issue 23: a ``2 3`` header with rows of 4 values gave words 'a 1', 'b 5'."""
    path = tmp_path / "v.txt"
    path.write_text("2 3\na 1 2 3 4\nb 5 6 7 8\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"v.txt:2: expected a word and 3 values .* got 4 fields"):
        train.load_word_vectors(path)
    path.write_text("a 1 2 3\nb 1 2 3 4\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"v.txt:2: expected a word and 3 values .* got 4 fields"):
        train.load_word_vectors(path)
    path.write_text("2 3\r\na 1 2 3\r\nb 4 5 6\r\n", encoding="utf-8")
    assert train.load_word_vectors(path).words == ("a", "b")
    # GloVe's multi-token words keep working: the surplus fields are not numbers.
    path.write_text("a 1 2 3\n. . . 4 5 6\n", encoding="utf-8")
    assert train.load_word_vectors(path).words == ("a", ". . .")


def test_load_word_vectors_binary_errors(tmp_path):
    path = _write_binary(tmp_path / "v.bin", VECTORS)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"record 3 \('sat'\) holds 6 bytes of values; expected 3"):
        train.load_word_vectors(path)
    path.write_bytes(b"4 3\n" + _write_binary(tmp_path / "w.bin", VECTORS).read_bytes()[4:])
    with pytest.raises(ValueError, match="header announces 4 vectors; the file ends in record 4"):
        train.load_word_vectors(path)
    path.write_bytes(b"a 1 2 3\n")
    with pytest.raises(ValueError, match="binary word2vec files start with a 'V E' header"):
        train.load_word_vectors(path, binary=True)
    # Latin-1 text is told apart from binary records by its number characters, and refused.
    path.write_bytes(b"1 2\ncaf\xe9 0.1 0.2\n")
    with pytest.raises(ValueError, match=r"v.bin:2: not UTF-8 text"):
        train.load_word_vectors(path)


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
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 10\)"):  # concrete: an error
        layer.apply(params[0], jnp.array([[10]]))
    assert np.isnan(jax.jit(layer.apply)(params[0], jnp.array([[10]]))).all()  # traced: NaN
    # Ids past each length are ignored, out of range or not.
    padded = layer.apply(params[0], jnp.array([[1, -1]]), lengths=jnp.array([1]))
    np.testing.assert_array_equal(padded[0, 1], 0.0)


def test_embedding_errors():
    with pytest.raises(
        ValueError,
        match=r"pretrained must have shape \(vocab_size, features\) = \(4, 3\); got \(4, 2\)",
    ):
        train.embedding(4, 3, pretrained=np.zeros((4, 2)))
    layer = train.embedding(4, 3)
    with pytest.raises(TypeError, match="ids must be integer token ids; got dtype float32"):
        layer.apply(layer.init(jax.random.key(0)), jnp.ones((1, 2)))
