"""Token embeddings, optionally initialised from pre-trained word2vec or GloVe vectors.

The seed's last "common mistake" is not leveraging pre-trained embeddings. :func:`load_word_vectors`
reads the plain-text format both tools write (one ``word v_1 ... v_E`` line per word; word2vec adds
a ``"V E"`` header line), :func:`embedding_matrix` aligns the vectors with a model's vocabulary,
and :func:`embedding` is a layer over ``[B, T]`` token ids that is trainable or frozen.
"""

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._layers import Layer


class EmbeddingParams(NamedTuple):
    """Embedding table ``[vocab_size, features]``."""

    table: jax.Array


class WordVectors(NamedTuple):
    """Vectors read from a text file: ``words`` (in file order) and ``vectors [V, E]``."""

    words: tuple[str, ...]
    vectors: np.ndarray


def load_word_vectors(path: str | os.PathLike, *, vocabulary=None, dtype=np.float32) -> WordVectors:
    """Read word2vec (text, with a ``"V E"`` header) or GloVe (no header) vectors.

    Args:
      path: the text file (UTF-8).
      vocabulary: optional set of words to keep (others are skipped while reading, which keeps
        memory small for large files).
      dtype: dtype of the vectors.

    Returns:
      :class:`WordVectors`.

    Raises:
      ValueError: the file is empty, a line has the wrong number of values, a value is not a
        number, or the header's count disagrees with the lines.

    >>> words, vectors = rnnjax.train.load_word_vectors("glove.6B.50d.txt", vocabulary=vocab)
    """
    words, rows = [], []
    dims, expected_count = None, None
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                expected_count, dims = int(parts[0]), int(parts[1])
                continue
            if not line.strip():
                continue
            if dims is None:
                dims = len(parts) - 1
            if len(parts) < dims + 1 or dims < 1:
                raise ValueError(
                    f"{path}:{number}: expected a word and {dims} values; got {len(parts)} fields."
                )
            # GloVe's large files hold a few words with spaces: the vector is the last E fields.
            word = " ".join(parts[: len(parts) - dims])
            if vocabulary is not None and word not in vocabulary:
                continue
            try:
                rows.append(np.asarray(parts[len(parts) - dims :], dtype))
            except ValueError as error:
                raise ValueError(f"{path}:{number}: non-numeric value ({error}).") from None
            words.append(word)
    if dims is None:
        raise ValueError(f"{path} holds no word vectors.")
    if expected_count is not None and vocabulary is None and len(words) != expected_count:
        raise ValueError(
            f"{path}: the header announces {expected_count} vectors; the file holds {len(words)}."
        )
    vectors = np.stack(rows) if rows else np.zeros((0, dims), dtype)
    return WordVectors(tuple(words), vectors)


def embedding_matrix(
    vocabulary: Sequence[str] | Mapping[str, int],
    word_vectors: WordVectors,
    *,
    seed: int = 0,
    lowercase: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``[V, E]`` table whose row ``i`` is the pre-trained vector of vocabulary word ``i``.

    Words without a vector get random rows with the pre-trained vectors' mean and standard
    deviation (so they are on the same scale).

    Args:
      vocabulary: words in id order, or a ``{word: id}`` mapping with ids ``0 .. V-1``.
      word_vectors: from :func:`load_word_vectors`.
      seed: seed of the random rows.
      lowercase: look words up lower-cased when their own case has no vector.

    Returns:
      ``(table [V, E], found [V] bool)``.
    """
    if isinstance(vocabulary, Mapping):
        ids = sorted(vocabulary.values())
        if ids != list(range(len(ids))):
            raise ValueError("vocabulary ids must be 0 .. V-1 without gaps.")
        words = [None] * len(ids)
        for word, index in vocabulary.items():
            words[index] = word
    else:
        words = list(vocabulary)
    lookup = {word: i for i, word in enumerate(word_vectors.words)}
    vectors = word_vectors.vectors
    rng = np.random.default_rng(seed)
    mean = vectors.mean() if vectors.size else 0.0
    std = vectors.std() if vectors.size else 1.0
    table = rng.normal(mean, std, (len(words), vectors.shape[1])).astype(vectors.dtype)
    found = np.zeros(len(words), bool)
    for row, word in enumerate(words):
        index = lookup.get(word)
        if index is None and lowercase:
            index = lookup.get(word.lower())
        if index is not None:
            table[row] = vectors[index]
            found[row] = True
    return table, found


def embedding(
    vocab_size: int,
    features: int,
    *,
    pretrained: np.ndarray | jax.Array | None = None,
    trainable: bool = True,
    scale: float = 0.05,
) -> Layer:
    """Embedding layer: integer ids ``[B, T]`` -> vectors ``[B, T, features]``.

    Args:
      vocab_size: ``V``.
      features: ``E``.
      pretrained: optional ``[V, E]`` table (e.g. from :func:`embedding_matrix`) that ``init``
        returns instead of a random one.
      trainable: ``False`` freezes the table: ``apply`` passes it through ``lax.stop_gradient``,
        so its gradient is zero (exclude it from weight decay with ``optax.masked``).
      scale: random tables are uniform in ``[-scale, scale]`` (Keras' default).

    Returns:
      A :class:`rnnjax.Layer` with params :class:`EmbeddingParams`. Given ``lengths``, outputs
      past each length are zero; ids there are ignored.

    Raises:
      ValueError: ``pretrained`` is not ``[V, E]``.

    >>> layer = rnnjax.train.embedding(10_000, 100, pretrained=table, trainable=False)
    >>> model = rnnjax.serial(layer, rnnjax.rnn(rnnjax.lstm(100)), rnnjax.dense(1))
    """
    if pretrained is not None and tuple(np.shape(pretrained)) != (vocab_size, features):
        raise ValueError(
            f"pretrained must have shape (vocab_size, features) = {(vocab_size, features)}; "
            f"got {tuple(np.shape(pretrained))}."
        )

    def init(key, input_shape=None):
        if pretrained is not None:
            return EmbeddingParams(jnp.array(pretrained))
        shape = (vocab_size, features)
        return EmbeddingParams(jax.random.uniform(key, shape, jnp.float32, -scale, scale))

    def apply(params, ids, lengths=None):
        ids = jnp.asarray(ids)
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(f"ids must be integer token ids; got dtype {ids.dtype}.")
        table = params.table if trainable else jax.lax.stop_gradient(params.table)
        # Out-of-range ids read NaN rows (loud), never a silently clipped neighbour.
        vectors = jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)
        if lengths is not None:
            if ids.ndim != 2:
                raise ValueError(f"with lengths, ids must be [batch, T]; got shape {ids.shape}.")
            valid = jnp.arange(ids.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
            vectors = jnp.where(valid[..., None], vectors, jnp.zeros_like(vectors))
        return vectors

    def output_shape(input_shape):
        return (*input_shape, features)

    return Layer(init, apply, output_shape)
