"""The one length mask and reset rule shared by every loop (``scan``, the fast path, the minimal
and parallel scans).

A sequence of ``length`` valid steps in a padded ``[T, ...]`` array is run over all ``T`` steps;
at ``t >= length`` the carry keeps its old value and the output is zero, so the final carry is the
state after the last valid step and no ``T x`` state history is stored. Resets (a new segment
starting at step ``t``) put the initial state in the carry before that step.

>>> import jax.numpy as jnp
>>> from rnnjax import _mask
>>> valid = _mask.valid(jnp.array(2), 4)                  # [True, True, False, False]
>>> kept = _mask.keep(valid[3], jnp.ones(3), jnp.zeros(3))  # the old value: zeros
"""

import jax
import jax.numpy as jnp


def valid(length: jax.Array, num_steps: int) -> jax.Array:
    """``t < length`` for every step: ``bool [T]`` for a scalar ``length``, ``[T, B]`` (time-major)
    for ``length [B]``."""
    steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * jnp.ndim(length))
    return steps < jnp.expand_dims(length, 0)


def _spread(flags: jax.Array, leaf: jax.Array) -> jax.Array:
    """``flags [...]`` reshaped to broadcast over ``leaf [..., *trailing]`` (explicitly, for
    ``jax_numpy_rank_promotion="raise"``)."""
    return flags.reshape(flags.shape + (1,) * (jnp.ndim(leaf) - flags.ndim))


def keep(flags: jax.Array, new, old):
    """Per leaf of the pytrees ``new`` and ``old``: ``new`` where ``flags``, else ``old``.

    ``flags`` holds the leading (batch) dims of the leaves: ``[]`` for one sequence, ``[B]`` for a
    batch; the leaves' trailing dims are broadcast. Used for the length mask (``flags`` = valid)
    and for resets (``keep(reset, initial, carry)``).
    """
    return jax.tree_util.tree_map(lambda n, o: jnp.where(_spread(flags, n), n, o), new, old)


def zero_invalid(flags: jax.Array, y: jax.Array) -> jax.Array:
    """``y`` where ``flags``, zeros elsewhere (the output past a sequence's length)."""
    return jnp.where(_spread(flags, y), y, jnp.zeros_like(y))


def step(flags, new, old, y):
    """The masked step: ``(keep(flags, new, old), zero_invalid(flags, y))``; ``flags=None``
    (no lengths) returns ``(new, y)``."""
    if flags is None:
        return new, y
    return keep(flags, new, old), zero_invalid(flags, y)


def zero_padding(xs: jax.Array, flags: jax.Array | None) -> jax.Array:
    """``xs [T, ..., D]`` with the padding (``flags [T, ...]`` false) zeroed, so NaN/inf there
    cannot leak into gradients (``0 * NaN`` is NaN)."""
    return xs if flags is None else zero_invalid(flags, xs)


def reversed_prefix(length: jax.Array, num_steps: int) -> jax.Array:
    """Step order ``[T]`` that reverses the valid prefix ``0 .. length - 1`` and leaves the padding
    in place; it is its own inverse (``xs[order][order] == xs``)."""
    steps = jnp.arange(num_steps)
    return jnp.where(steps < length, length - 1 - steps, steps)


def segment_starts(resets: jax.Array, reverse: bool) -> jax.Array:
    """Where the carry is reset, in the loop's own step order, from ``resets [T, ...]``
    (``resets[t]``: a new segment starts at step ``t``).

    Forward, the state entering step ``t`` is the initial one. A reverse loop runs each segment
    from its last step back to its first, so it resets before step ``t - 1`` wherever
    ``resets[t]``: the result is ``resets`` shifted one step earlier (``False`` at ``T - 1``).
    """
    if not reverse:
        return resets
    return jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)
