"""Attention (Bahdanau additive, Luong dot/general) against float64 NumPy readings of the papers'
equations, with masks for padded encoder steps and gradient checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnjax._attention import (
    BahdanauParams,
    LuongParams,
    bahdanau_attention,
    luong_attention,
    masked_softmax,
)
from tests.tolerances import assert_close

T, DQ, DK, DV, A = 7, 5, 6, 4, 8


def _reference(scores: np.ndarray, values: np.ndarray, length: int):
    """Softmax over the first ``length`` steps, zero weight after; context = weights @ values."""
    weights = np.zeros_like(scores)
    if length > 0:
        e = np.exp(scores[..., :length] - scores[..., :length].max(axis=-1, keepdims=True))
        weights[..., :length] = e / e.sum(axis=-1, keepdims=True)
    return weights @ values, weights


def _bahdanau_scores(p: BahdanauParams, q, k):
    p = [np.asarray(a, np.float64) for a in p]
    return np.array(
        [[p[2] @ np.tanh(qi @ p[0] + kj @ p[1]) for kj in k] for qi in np.atleast_2d(q)]
    ).reshape(np.shape(q)[:-1] + (len(k),))


def _setup(kind):
    key_p, key_q, key_k, key_v = jax.random.split(jax.random.key(0), 4)
    if kind == "bahdanau":
        attention, dq = bahdanau_attention(A), DQ
    elif kind == "general":
        attention, dq = luong_attention("general"), DQ
    else:
        attention, dq = luong_attention("dot"), DK
    params = attention.init(key_p, dq, DK)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    query = jax.random.normal(key_q, (3, dq), jnp.float64)
    keys = jax.random.normal(key_k, (T, DK), jnp.float64)
    values = jax.random.normal(key_v, (T, DV), jnp.float64)
    return attention, params, query, keys, values


def _scores(kind, params, query, keys):
    q, k = np.asarray(query), np.asarray(keys)
    if kind == "bahdanau":
        return _bahdanau_scores(params, q, k)
    if kind == "general":
        return q @ np.asarray(params.w) @ k.T
    return q @ k.T


KINDS = ("bahdanau", "dot", "general")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length", [T, 4, 1, 0])
def test_matches_numpy_reference(x64, kind, length):
    attention, params, query, keys, values = _setup(kind)
    context, weights = attention.apply(params, query, keys, values, length=length)
    expected_context, expected_weights = _reference(
        _scores(kind, params, query, keys), np.asarray(values), length
    )
    assert_close(weights, expected_weights)
    assert_close(context, expected_context)
    # One query (rank 1) gives the same row; keys double as values by default.
    one_context, one_weights = attention.apply(params, query[1], keys, length=length)
    assert_close(one_weights, expected_weights[1])
    assert_close(one_context, _reference(_scores(kind, params, query, keys), keys, length)[0][1])


@pytest.mark.parametrize("kind", KINDS)
def test_padding_is_ignored_even_when_nan(x64, kind):
    attention, params, query, keys, values = _setup(kind)
    padded_keys = keys.at[5:].set(jnp.nan)
    padded_values = values.at[5:].set(jnp.inf)
    context, weights = attention.apply(params, query, padded_keys, padded_values, length=5)
    short_context, short_weights = attention.apply(params, query, keys[:5], values[:5])
    assert_close(context, short_context)
    assert_close(weights[:, :5], short_weights)
    assert np.all(np.asarray(weights[:, 5:]) == 0)

    def loss(p, k):
        return jnp.sum(attention.apply(p, query, k, padded_values, length=5)[0] ** 2)

    grads = jax.grad(loss, argnums=(0, 1))(params, padded_keys)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert np.all(np.asarray(grads[1][5:]) == 0)


def test_mask_equals_length_and_memory_reuse(x64):
    attention, params, query, keys, values = _setup("bahdanau")
    mask = jnp.arange(T) < 3
    by_mask = attention.apply(params, query, keys, values, mask=mask)
    by_length = attention.apply(params, query, keys, values, length=3)
    memory = attention.project_keys(params, keys)
    by_memory = attention.apply(params, query, keys, values, length=3, memory=memory)
    for a, b, c in zip(by_mask, by_length, by_memory, strict=True):
        assert_close(a, b)
        assert_close(c, b)


def test_vmap_over_a_batch_with_lengths(x64):
    attention, params, _, keys, values = _setup("general")
    queries = jax.random.normal(jax.random.key(3), (2, DQ), jnp.float64)
    batch_keys, batch_values = jnp.stack([keys, keys[::-1]]), jnp.stack([values, values[::-1]])
    lengths = jnp.array([T, 2])
    context, weights = jax.vmap(lambda q, k, v, n: attention.apply(params, q, k, v, length=n))(
        queries, batch_keys, batch_values, lengths
    )
    for b in range(2):
        c, w = attention.apply(
            params, queries[b], batch_keys[b][: lengths[b]], batch_values[b][: lengths[b]]
        )
        assert np.all(np.asarray(weights[b, lengths[b] :]) == 0)
        weights_b = weights[b, : lengths[b]]
        assert_close(context[b], c)
        assert_close(weights_b, w)


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads(x64, kind):
    attention, params, query, keys, values = _setup(kind)

    def f(params, query, keys, values):
        return attention.apply(params, query, keys, values, length=5)[0]

    check_grads(f, (params, query, keys, values), order=2, modes=["rev"])


def test_masked_softmax_all_masked_is_zero_with_finite_grad():
    scores = jnp.array([1.0, -2.0, 0.5])
    assert np.all(np.asarray(masked_softmax(scores, jnp.zeros(3, bool))) == 0)
    grad = jax.grad(lambda s: jnp.sum(masked_softmax(s, jnp.zeros(3, bool)) * s))(scores)
    assert np.all(np.isfinite(grad))
    assert_close(masked_softmax(scores), jax.nn.softmax(scores))


def test_float32_default_dtype():
    attention = bahdanau_attention(4)
    params = attention.init(jax.random.key(0), 3, 2)
    context, weights = attention.apply(params, jnp.ones(3), jnp.ones((5, 2)), length=2)
    assert context.dtype == jnp.float32 and weights.dtype == jnp.float32
    assert_close(weights, [0.5, 0.5, 0, 0, 0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="attention_size must be a positive int"):
        bahdanau_attention(0)
    with pytest.raises(ValueError, match="score must be one of"):
        luong_attention("concat")
    with pytest.raises(ValueError, match="the dot score needs query_size == key_size"):
        luong_attention("dot").init(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match="query_size must be a positive int"):
        bahdanau_attention(4).init(jax.random.key(0), 0, 4)
    attention = bahdanau_attention(4)
    params = attention.init(jax.random.key(0), 3, 2)
    keys = jnp.ones((5, 2))
    with pytest.raises(ValueError, match=r"query must have shape \(\.\.\., 3\)"):
        attention.apply(params, jnp.ones(4), keys)
    with pytest.raises(ValueError, match=r"keys must have rank 2"):
        attention.apply(params, jnp.ones(3), jnp.ones((2, 5, 2)))
    with pytest.raises(ValueError, match=r"keys must have shape \(T, 2\)"):
        attention.apply(params, jnp.ones(3), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"values must have shape \(5, value_size\)"):
        attention.apply(params, jnp.ones(3), keys, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"length must lie in \[0, 5\]"):
        attention.apply(params, jnp.ones(3), keys, length=6)
    with pytest.raises(ValueError, match="Pass length or mask, not both"):
        attention.apply(params, jnp.ones(3), keys, length=2, mask=jnp.ones(5, bool))
    with pytest.raises(ValueError, match=r"mask must be a bool array of shape \(5,\)"):
        attention.apply(params, jnp.ones(3), keys, mask=jnp.ones(5))
    with pytest.raises(ValueError, match=r"memory must have shape \(5, \d+\) \(project_keys"):
        attention.apply(params, jnp.ones(3), keys, memory=jnp.ones((4, 4)))
    with pytest.raises(TypeError, match="query must have a floating-point dtype"):
        attention.apply(params, jnp.ones(3, jnp.int32), keys)
    with pytest.raises(TypeError, match="params must be BahdanauParams"):
        attention.apply(LuongParams(None), jnp.ones(3), keys)
    with pytest.raises(TypeError, match="params must be LuongParams with w"):
        luong_attention("general").apply(LuongParams(None), jnp.ones(2), keys)
