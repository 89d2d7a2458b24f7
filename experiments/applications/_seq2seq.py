"""A GRU encoder-decoder with optional attention, built from rnnjax parts.

Encoder: embedding -> ``rnnjax.bidirectional(gru(H), return_sequences=True)`` -> annotations
``[B, T, 2H]`` (zero past each length). The decoder is a ``gru(2H)`` cell stepped by
``lax.scan`` over the output positions; its initial state is ``tanh(dense(final states))``.
Attention runs per example under ``jax.vmap`` with the encoder lengths as masks, and the key
projection (``attention.project_keys``) is computed once per sequence, not once per step.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import rnnjax
import rnnjax.train as train
from rnnjax._attention import bahdanau_attention, luong_attention

DECODERS = ("none", "bahdanau", "luong")
EMBED_SIZE = 16


class Seq2SeqParams(NamedTuple):
    """All weights: embeddings, encoder, bridge, decoder cell, attention, combine and output."""

    embed_in: Any
    encoder: Any
    bridge: Any
    embed_out: Any
    decoder: Any
    attention: Any
    combine: Any
    output: Any


class Seq2SeqModel(NamedTuple):
    """``init(key)``, ``teacher_forced(params, inputs, lengths, targets) -> logits [B, L, V]``
    and ``greedy(params, inputs, lengths) -> (ids [B, L], weights [B, L, T])``."""

    init: Any
    teacher_forced: Any
    greedy: Any
    kind: str


def seq2seq(kind, in_vocab, out_vocab, hidden_size, *, start_id, target_length=10):
    """Build a model; ``kind`` is ``"none"``, ``"bahdanau"`` or ``"luong"``."""
    if kind not in DECODERS:
        raise ValueError(f"kind must be one of {DECODERS}; got {kind!r}.")
    width = 2 * hidden_size  # annotations and decoder state
    embed_in = train.embedding(in_vocab, EMBED_SIZE)
    encoder = rnnjax.bidirectional(rnnjax.gru(hidden_size), return_sequences=True,
                                   return_state=True)  # fmt: skip
    bridge = rnnjax.dense(width, jnp.tanh)
    embed_out = train.embedding(out_vocab, EMBED_SIZE)
    cell = rnnjax.gru(width)
    attention = {"none": None, "bahdanau": bahdanau_attention(width),
                 "luong": luong_attention("dot")}[kind]  # fmt: skip
    combine = rnnjax.dense(width, jnp.tanh) if kind == "luong" else None
    output = rnnjax.dense(out_vocab)

    def init(key):
        keys = jax.random.split(key, 8)
        decoder_input = EMBED_SIZE + (width if kind == "bahdanau" else 0)
        output_input = 2 * width if kind == "bahdanau" else width
        return Seq2SeqParams(
            embed_in.init(keys[0]),
            encoder.init(keys[1], (None, EMBED_SIZE)),
            bridge.init(keys[2], (width,)),
            embed_out.init(keys[3]),
            cell.init(keys[4], decoder_input),
            None if attention is None else attention.init(keys[5], width, width),
            None if combine is None else combine.init(keys[6], (2 * width,)),
            output.init(keys[7], (output_input,)),
        )

    def encode(params, inputs, lengths):
        x = embed_in.apply(params.embed_in, inputs, lengths)
        annotations, (forward, backward) = encoder.apply(params.encoder, x, lengths)
        state = bridge.apply(params.bridge, jnp.concatenate([forward.h, backward.h], axis=-1))
        memory = None
        if attention is not None:
            memory = jax.vmap(lambda k: attention.project_keys(params.attention, k))(annotations)
        return rnnjax.GRUState(state), annotations, memory

    def attend(params, query, annotations, memory, lengths):
        def one(q, k, m, n):
            return attention.apply(params.attention, q, k, length=n, memory=m)

        return jax.vmap(one)(query, annotations, memory, lengths)

    def step(params, state, token_vectors, annotations, memory, lengths):
        """One decoder step for the batch: ``(state, logits [B, V], weights [B, T])``."""
        num_steps = annotations.shape[1]
        if kind == "bahdanau":
            context, weights = attend(params, state.h, annotations, memory, lengths)
            x = jnp.concatenate([token_vectors, context], axis=-1)
            state, h = cell.step(params.decoder, state, x)
            features = jnp.concatenate([h, context], axis=-1)
        else:
            state, h = cell.step(params.decoder, state, token_vectors)
            if kind == "luong":
                context, weights = attend(params, h, annotations, memory, lengths)
                features = combine.apply(params.combine, jnp.concatenate([context, h], axis=-1))
            else:
                features = h
                weights = jnp.zeros((h.shape[0], num_steps), h.dtype)
        return state, output.apply(params.output, features), weights

    def shifted(targets):
        start = jnp.full((targets.shape[0], 1), start_id, targets.dtype)
        return jnp.concatenate([start, targets[:, :-1]], axis=1)

    def teacher_forced(params, inputs, lengths, targets):
        state, annotations, memory = encode(params, inputs, lengths)
        vectors = embed_out.apply(params.embed_out, shifted(targets))  # [B, L, E]

        def body(state, vectors_t):
            state, logits, _ = step(params, state, vectors_t, annotations, memory, lengths)
            return state, logits

        _, logits = jax.lax.scan(body, state, jnp.swapaxes(vectors, 0, 1))
        return jnp.swapaxes(logits, 0, 1)

    def greedy(params, inputs, lengths):
        state, annotations, memory = encode(params, inputs, lengths)
        tokens = jnp.full((inputs.shape[0],), start_id, jnp.int32)

        def body(carry, _):
            state, tokens = carry
            vectors = embed_out.apply(params.embed_out, tokens)
            state, logits, weights = step(params, state, vectors, annotations, memory, lengths)
            tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            return (state, tokens), (tokens, weights)

        _, (ids, weights) = jax.lax.scan(body, (state, tokens), None, length=target_length)
        return jnp.swapaxes(ids, 0, 1), jnp.swapaxes(weights, 0, 1)

    return Seq2SeqModel(init, teacher_forced, greedy, kind)
