"""Attention over encoder states for recurrent encoder-decoders: Bahdanau and Luong.

An :class:`Attention` is a NamedTuple of pure functions, like a :class:`rnnjax.Cell`. It is
written for one example: ``keys [T, Dk]`` are one sequence's encoder states, ``query [..., Dq]``
is one decoder state (or several, sharing the same keys); batch with ``jax.vmap``. Given the
alignment scores ``e_j`` of the ``T`` encoder steps,

.. math::

    a_j = \\frac{\\exp(e_j)}{\\sum_{k < L} \\exp(e_k)} \\; (j < L), \\qquad a_j = 0 \\; (j \\ge L),
    \\qquad \\mathrm{context} = \\sum_j a_j v_j

where ``L`` is the number of valid (unpadded) encoder steps and ``v_j`` the values (the keys by
default). The scores are

* Bahdanau et al. (2015), additive: ``e_j = v^T tanh(q W_query + k_j W_key)``;
* Luong et al. (2015), ``"dot"``: ``e_j = q . k_j``; ``"general"``: ``e_j = q W k_j^T``.

Luong's ``"concat"`` score is the additive one. The key-side work (``k_j W_key``, ``W k_j^T``)
does not depend on the query, so :attr:`Attention.project_keys` computes it once per sequence
and ``apply(..., memory=...)`` reuses it at every decoder step.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax import _initializers as inits

LUONG_SCORES = ("dot", "general")


class BahdanauParams(NamedTuple):
    """Additive attention: ``w_query [Dq, A]``, ``w_key [Dk, A]``, ``v [A]``."""

    w_query: jax.Array
    w_key: jax.Array
    v: jax.Array


class LuongParams(NamedTuple):
    """Multiplicative attention: ``w [Dq, Dk]`` for the ``"general"`` score, ``None`` for
    ``"dot"`` (which has no parameters)."""

    w: jax.Array | None = None


class Attention(NamedTuple):
    """An attention mechanism: pure functions over its params.

    Attributes:
      init: ``init(key, query_size, key_size) -> params``.
      project_keys: ``project_keys(params, keys [T, Dk]) -> memory [T, M]``, the query-free
        part of the score.
      score: ``score(params, query [..., Dq], memory [T, M]) -> scores [..., T]``.
      apply: ``apply(params, query, keys, values=None, *, length=None, mask=None,
        memory=None) -> (context [..., Dv], weights [..., T])``.
      name: ``"bahdanau"`` or ``"luong"``.
      config: the constructor's options.
    """

    init: Callable[..., Any]
    project_keys: Callable[[Any, jax.Array], jax.Array]
    score: Callable[[Any, jax.Array, jax.Array], jax.Array]
    apply: Callable[..., tuple[jax.Array, jax.Array]]
    name: str
    config: dict


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")
    return value


def _lead(x: jax.Array, rank: int) -> jax.Array:
    """``x`` with leading unit axes up to ``rank`` (explicit broadcasting)."""
    return x.reshape((1,) * (rank - x.ndim) + x.shape)


def _valid_steps(num_steps: int, length, mask) -> jax.Array | None:
    """``[T]`` bool validity of the encoder steps from ``length`` or ``mask`` (or ``None``)."""
    if length is not None and mask is not None:
        raise ValueError("Pass length or mask, not both.")
    if length is not None:
        length = _checks.lengths(length, (), num_steps, name="length")
        return jnp.arange(num_steps) < length
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_ or mask.shape != (num_steps,):
        raise ValueError(
            f"mask must be a bool array of shape ({num_steps},) (one flag per encoder step); "
            f"got dtype {mask.dtype} and shape {tuple(mask.shape)}."
        )
    return mask


def masked_softmax(scores: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Softmax over the last axis of ``scores [..., T]``, zero where ``valid [T]`` is false.

    With no valid step the weights are all zero (not NaN), so an empty sequence gives a zero
    context and finite gradients.

    Raises:
      TypeError: ``scores`` not floating, or ``valid`` not bool.
      ValueError: ``valid`` does not broadcast to ``scores`` from the right.

    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> weights = rnnjax.masked_softmax(jnp.array([1.0, 2.0, 3.0]), jnp.array([True, True, False]))
    >>> [round(float(w), 3) for w in weights]
    [0.269, 0.731, 0.0]
    """
    scores = _checks.floating_array(scores, "scores")
    if scores.ndim < 1:
        raise ValueError(f"scores must have shape (..., T); got a scalar of shape {scores.shape}.")
    if valid is None:
        return jax.nn.softmax(scores, axis=-1)
    valid = jnp.asarray(valid)
    if valid.dtype != jnp.bool_:
        raise TypeError(
            f"valid must be a bool array (True at valid steps); got dtype {valid.dtype}."
        )
    trailing = scores.shape[scores.ndim - valid.ndim :] if valid.ndim else ()
    if valid.ndim > scores.ndim or any(
        v not in (1, s) for v, s in zip(valid.shape, trailing, strict=True)
    ):
        raise ValueError(
            f"valid must have shape ({scores.shape[-1]},) or broadcast to scores "
            f"{tuple(scores.shape)} from the right; got shape {tuple(valid.shape)}."
        )
    valid = jnp.broadcast_to(_lead(valid, scores.ndim), scores.shape)
    lowest = jnp.finfo(scores.dtype).min
    weights = jax.nn.softmax(jnp.where(valid, scores, lowest), axis=-1)
    return jnp.where(valid, weights, jnp.zeros_like(weights))


def _make_attention(name, init, project_keys, score, query_size_of, config) -> Attention:
    def apply(params, query, keys, values=None, *, length=None, mask=None, memory=None):
        query = _checks.floating_array(query, "query")
        keys = _checks.floating_array(keys, "keys")
        _checks.rank(keys, 2, "keys", "(T, key_size) for one sequence; batch with jax.vmap")
        if query.ndim < 1 or query.shape[-1] != query_size_of(params, keys):
            raise ValueError(
                f"query must have shape (..., {query_size_of(params, keys)}) to match the "
                f"params and keys {tuple(keys.shape)}; got shape {tuple(query.shape)}."
            )
        num_steps = keys.shape[0]
        values = keys if values is None else _checks.floating_array(values, "values")
        if values.ndim != 2 or values.shape[0] != num_steps:
            raise ValueError(
                f"values must have shape ({num_steps}, value_size) (one row per key); "
                f"got shape {tuple(values.shape)}."
            )
        valid = _valid_steps(num_steps, length, mask)
        if valid is not None:
            # Zero the padding so NaN/inf there cannot leak into gradients (0 * NaN is NaN).
            keys = jnp.where(valid[:, None], keys, jnp.zeros_like(keys))
            values = jnp.where(valid[:, None], values, jnp.zeros_like(values))
        if memory is None:
            memory = project_keys(params, keys)
        else:
            expected = jax.eval_shape(project_keys, params, keys).shape
            if tuple(jnp.shape(memory)) != tuple(expected):
                raise ValueError(
                    f"memory must have shape {tuple(expected)} (project_keys(params, keys)); "
                    f"got shape {tuple(jnp.shape(memory))}."
                )
        weights = masked_softmax(score(params, query, memory), valid)
        return weights @ values, weights

    return Attention(init, project_keys, score, apply, name, config)


def bahdanau_attention(attention_size: int) -> Attention:
    """Additive attention (Bahdanau, Cho and Bengio, 2015): ``e_j = v^T tanh(q W_q + k_j W_k)``.

    Args:
      attention_size: ``A``, the width of the hidden layer of the alignment model.

    Returns:
      An :class:`Attention` with params :class:`BahdanauParams` (Glorot-uniform kernels, ``v``
      uniform in ``+-1/sqrt(A)``); ``memory = keys W_key`` of shape ``[T, A]``.

    Raises:
      ValueError: ``attention_size`` is not a positive int.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> attention = rnnjax.bahdanau_attention(32)
    >>> params = attention.init(jax.random.key(0), query_size=16, key_size=24)
    >>> context, weights = attention.apply(params, jnp.ones(16), jnp.ones((10, 24)), length=7)
    """
    size = _positive_int(attention_size, "attention_size")

    def init(key, query_size: int, key_size: int) -> BahdanauParams:
        _positive_int(query_size, "query_size")
        _positive_int(key_size, "key_size")
        key_q, key_k, key_v = jax.random.split(key, 3)
        bound = 1.0 / size**0.5
        return BahdanauParams(
            inits.glorot_uniform(key_q, (query_size, size), jnp.float32),
            inits.glorot_uniform(key_k, (key_size, size), jnp.float32),
            jax.random.uniform(key_v, (size,), jnp.float32, -bound, bound),
        )

    def check(params):
        if not isinstance(params, BahdanauParams):
            raise TypeError(f"params must be BahdanauParams; got {type(params).__name__}.")

    def project_keys(params, keys):
        check(params)
        if keys.shape[-1] != params.w_key.shape[0]:
            raise ValueError(
                f"keys must have shape (T, {params.w_key.shape[0]}) to match params.w_key "
                f"{tuple(params.w_key.shape)}; got shape {tuple(keys.shape)}."
            )
        return keys @ params.w_key

    def score(params, query, memory):
        check(params)
        hidden = (query @ params.w_query)[..., None, :]  # [..., 1, A]
        rank = max(hidden.ndim, memory.ndim)
        hidden = jnp.tanh(_lead(hidden, rank) + _lead(memory, rank))  # [..., T, A]
        return hidden @ params.v

    def query_size_of(params, keys):
        check(params)
        return params.w_query.shape[0]

    return _make_attention(
        "bahdanau", init, project_keys, score, query_size_of, {"attention_size": size}
    )


def luong_attention(score: str = "dot") -> Attention:
    """Multiplicative attention (Luong, Pham and Manning, 2015).

    Args:
      score: ``"dot"`` (``e_j = q . k_j``, no params, needs ``query_size == key_size``) or
        ``"general"`` (``e_j = q W k_j^T`` with ``W [Dq, Dk]``).

    Returns:
      An :class:`Attention` with params :class:`LuongParams`; ``memory`` is ``keys`` for
      ``"dot"`` and ``keys W^T`` (``[T, Dq]``) for ``"general"``.

    Raises:
      ValueError: ``score`` is unknown, or (at ``init``) ``"dot"`` with unequal sizes.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> attention = rnnjax.luong_attention("general")
    >>> params = attention.init(jax.random.key(0), query_size=16, key_size=24)
    >>> context, weights = attention.apply(params, jnp.ones((5, 16)), jnp.ones((10, 24)))
    """
    if score not in LUONG_SCORES:
        raise ValueError(f"score must be one of {LUONG_SCORES}; got {score!r}.")
    general = score == "general"

    def init(key, query_size: int, key_size: int) -> LuongParams:
        _positive_int(query_size, "query_size")
        _positive_int(key_size, "key_size")
        if not general:
            if query_size != key_size:
                raise ValueError(
                    f"the dot score needs query_size == key_size; got {query_size} and "
                    f"{key_size}. Use luong_attention('general') for different sizes."
                )
            return LuongParams(None)
        return LuongParams(inits.glorot_uniform(key, (query_size, key_size), jnp.float32))

    def check(params):
        if not isinstance(params, LuongParams) or (params.w is None) == general:
            raise TypeError(
                f"params must be LuongParams with w {'[Dq, Dk]' if general else 'None'} for the "
                f"{score!r} score; got {params!r:.80}."
            )

    def project_keys(params, keys):
        check(params)
        if general and keys.shape[-1] != params.w.shape[1]:
            raise ValueError(
                f"keys must have shape (T, {params.w.shape[1]}) to match params.w "
                f"{tuple(params.w.shape)}; got shape {tuple(keys.shape)}."
            )
        return keys @ params.w.T if general else keys

    def score_fn(params, query, memory):
        check(params)
        return query @ memory.T

    def query_size_of(params, keys):
        check(params)
        return params.w.shape[0] if general else keys.shape[-1]

    return _make_attention("luong", init, project_keys, score_fn, query_size_of, {"score": score})
