"""Token embeddings, optionally initialised from pre-trained word2vec or GloVe vectors.

The seed's last "common mistake" is not leveraging pre-trained embeddings. :func:`load_word_vectors`
reads the plain-text format both tools write (one ``word v_1 ... v_E`` line per word; word2vec adds
a ``"V E"`` header line), word2vec's binary format and gzipped files of either;
:func:`embedding_matrix` aligns the vectors with a model's vocabulary, and :func:`embedding` is a
layer over ``[B, T]`` token ids that is trainable or frozen.
"""

import gzip
import itertools
import os
from collections.abc import Mapping, Sequence
from typing import BinaryIO, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks
from rnnjax._layers import Layer


class EmbeddingParams(NamedTuple):
    """Embedding table ``[vocab_size, features]``."""

    table: jax.Array


class WordVectors(NamedTuple):
    """Vectors read from a text file: ``words`` (in file order) and ``vectors [V, E]``."""

    words: tuple[str, ...]
    vectors: np.ndarray


def _open_bytes(path) -> BinaryIO:
    """The file as a byte stream, gunzipped when it starts with gzip's magic bytes."""
    stream = open(path, "rb")  # noqa: SIM115 - returned to the caller's ``with``
    if stream.peek(2)[:2] != b"\x1f\x8b":
        return stream
    stream.close()
    return gzip.open(path, "rb")


def _header(line: bytes) -> tuple[int, int] | None:
    """``(count, dims)`` from a word2vec header line ``"V E"``, else ``None``."""
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _looks_binary(stream, dims: int) -> bool:
    """True when the first record after the header is word2vec's binary layout: the ``4 * dims``
    bytes after the first word are not all characters of decimal numbers (as text values are)."""
    sample = stream.peek(4096 + 8 * dims)
    space = sample.find(b" ")
    if space < 0:
        return False
    window = sample[space + 1 : space + 1 + 4 * dims]
    values = window.split(b"\n")[0] or window  # a text row may be shorter than the window
    return not set(values) <= set(b"0123456789.eE+-naifNAIF \t\r\n")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _text_records(stream, path, dims: int | None, first_number: int):
    """``(line number, word, value strings)`` of each text line, widths checked."""
    for number, raw in enumerate(stream, start=first_number):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}:{number}: not UTF-8 text ({error}).") from None
        parts = line.rstrip("\r\n").rstrip(" ").split(" ")
        if not line.strip():
            continue
        if dims is None:
            dims = len(parts) - 1
        # GloVe's large files hold a few words with spaces: the vector is the last E fields; a
        # numeric field in the word's place means the row is wider than the others.
        surplus = parts[1 : len(parts) - dims]
        if dims < 1 or len(parts) < dims + 1 or any(_is_number(p) for p in surplus):
            raise ValueError(
                f"{path}:{number}: expected a word and {dims} values (the width of the header or "
                f"the first row); got {len(parts) - 1} fields after the word {parts[0]!r}."
            )
        yield number, " ".join(parts[: len(parts) - dims]), parts[len(parts) - dims :]


def _binary_records(stream, path, count: int, dims: int):
    """``(record number, word, float32 values)`` of word2vec's binary format: per word, its UTF-8
    bytes, a space, ``dims`` little-endian float32 values, optionally a newline."""
    for number in range(1, count + 1):
        word = bytearray()
        while (byte := stream.read(1)) != b" ":
            if not byte:
                raise ValueError(
                    f"{path}: the header announces {count} vectors; the file ends in record "
                    f"{number}."
                )
            if byte != b"\n" or word:
                word += byte
        data = stream.read(4 * dims)
        if len(data) != 4 * dims:
            raise ValueError(
                f"{path}: record {number} ({word.decode('utf-8', 'replace')!r}) holds "
                f"{len(data)} bytes of values; expected {dims} float32 values ({4 * dims} bytes)."
            )
        yield number, word.decode("utf-8", "replace"), np.frombuffer(data, "<f4")


def load_word_vectors(
    path: str | os.PathLike, *, vocabulary=None, dtype=np.float32, binary: bool | None = None
) -> WordVectors:
    r"""Read word2vec (text or binary, with a ``"V E"`` header) or GloVe (text, no header) vectors.

    Gzipped files (``.gz``, detected by their magic bytes) are read as they stream.

    Args:
      path: the file: UTF-8 text lines ``word v_1 ... v_E``, or word2vec's binary format (the
        header line, then per word its bytes, a space and ``E`` little-endian float32 values).
      vocabulary: optional set of words to keep (others are skipped while reading, which keeps
        memory small for large files).
      dtype: dtype of the vectors.
      binary: ``True`` or ``False`` to force the format; ``None`` tells them apart by whether the
        ``4 E`` bytes after the first word following a header are characters of numbers.

    Returns:
      :class:`WordVectors`.

    Raises:
      ValueError: the file is empty, a line has the wrong number of values (the message gives
        the line number), a value is not a number, or the header's count disagrees with the file.

    >>> import pathlib, tempfile, rnnjax
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "vectors.txt"
    >>> _ = path.write_text("2 3\nthe 0.1 0.2 0.3\ncat 0.4 0.5 0.6\n")
    >>> rnnjax.train.load_word_vectors(path).vectors.shape
    (2, 3)
    """
    words, rows = [], []
    with _open_bytes(path) as stream:
        first = stream.readline()
        header = _header(first)
        expected_count, dims = header if header else (None, None)
        if binary is None:
            binary = header is not None and _looks_binary(stream, dims)
        if binary:
            if header is None:
                raise ValueError(
                    f"{path}: binary word2vec files start with a 'V E' header line; got "
                    f"{first[:40]!r}."
                )
            records = _binary_records(stream, path, expected_count, dims)
        else:
            lines = itertools.chain([] if header else [first], stream)
            records = _text_records(lines, path, dims, 2 if header else 1)
        for number, word, values in records:
            dims = len(values)
            if vocabulary is not None and word not in vocabulary:
                continue
            try:
                rows.append(np.asarray(values, np.float64).astype(dtype))
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
    if not isinstance(word_vectors, WordVectors):
        raise TypeError(
            f"word_vectors must be WordVectors (from load_word_vectors); got "
            f"{type(word_vectors).__name__}."
        )
    if isinstance(vocabulary, str) or not isinstance(vocabulary, Sequence | Mapping):
        raise TypeError(
            f"vocabulary must be a sequence of words or a {{word: id}} mapping; got "
            f"{type(vocabulary).__name__}."
        )
    if isinstance(vocabulary, Mapping):
        ids = sorted(vocabulary.values())
        if ids != list(range(len(ids))):
            raise ValueError(
                f"vocabulary ids must be 0 .. V-1 without gaps; got {len(ids)} ids from "
                f"{ids[0] if ids else None} to {ids[-1] if ids else None}."
            )
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
      past each length are zero; ids there are ignored. Ids outside ``[0, V)`` raise
      ``ValueError`` when concrete; under ``jit`` they read a row of NaN (never a clipped or
      wrapped-around neighbour), so the loss turns NaN.

    Raises:
      ValueError: a size is not a positive int, ``scale`` is not positive, ``pretrained`` is not
        ``[V, E]``; at ``apply``, concrete ids out of range or ``lengths`` out of ``[0, T]``.
      TypeError: at ``apply``, ids that are not integers.

    >>> import numpy as np
    >>> import rnnjax
    >>> table = np.random.default_rng(0).normal(size=(10_000, 100)).astype(np.float32)
    >>> layer = rnnjax.train.embedding(10_000, 100, pretrained=table, trainable=False)
    >>> model = rnnjax.serial(layer, rnnjax.rnn(rnnjax.lstm(100)), rnnjax.dense(1))
    """
    for name, value in (("vocab_size", vocab_size), ("features", features)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}.")
    if not scale > 0:
        raise ValueError(
            f"scale must be positive (random tables are uniform in +-scale); got {scale!r}."
        )
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
        vocab = table.shape[0]
        valid = None
        if lengths is not None:
            if ids.ndim != 2:
                raise ValueError(f"with lengths, ids must be [batch, T]; got shape {ids.shape}.")
            lengths = _checks.lengths(lengths, (ids.shape[0],), ids.shape[1])
            valid = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
        inside = (ids >= 0) & (ids < vocab)
        if valid is not None:
            inside = inside | ~valid  # ids past each length are ignored
        if _checks.is_concrete(ids) and (valid is None or _checks.is_concrete(valid)):
            bad = np.argwhere(~np.asarray(inside))
            if bad.size:
                index = tuple(int(i) for i in bad[0])
                raise ValueError(
                    f"ids must lie in [0, {vocab}) (the table's rows); got ids{list(index)} = "
                    f"{np.asarray(ids)[index]} ({len(bad)} id(s) out of range)."
                )
        # Traced out-of-range ids read NaN rows (loud), never a clipped or wrapped-around one.
        vectors = jnp.take(table, jnp.clip(ids, 0, vocab - 1), axis=0)
        nan = jnp.full_like(vectors, jnp.nan)
        vectors = jnp.where(((ids >= 0) & (ids < vocab))[..., None], vectors, nan)
        if valid is not None:
            vectors = jnp.where(valid[..., None], vectors, jnp.zeros_like(vectors))
        return vectors

    def output_shape(input_shape):
        return (*input_shape, features)

    return Layer(init, apply, output_shape)
