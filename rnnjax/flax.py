"""Thin Flax wrappers that let a Flax model hold an rnnjax layer and train it with Flax's tools.

Both wrappers keep rnnjax's parameter pytree (``LSTMParams``, a tuple for ``stack``/``serial``,
...) as the Flax parameters, so ``optax``, checkpointing and ``nnx.Optimizer`` see ordinary
arrays, and the math stays in rnnjax's one implementation.
"""

from typing import Any

import jax
from flax import linen, nnx

from rnnjax._layers import Layer

__all__ = ["LinenLayer", "NnxLayer"]


def _check_layer(layer) -> Layer:
    if not isinstance(layer, Layer):
        raise TypeError(
            "layer must be an rnnjax Layer (rnnjax.rnn / bidirectional / stack / serial / dense); "
            f"got {type(layer).__name__}."
        )
    return layer


class LinenLayer(linen.Module):
    """A ``flax.linen`` module running an rnnjax layer.

    Its one parameter, ``"rnnjax"``, is the layer's params pytree, made by ``layer.init`` from
    the first input's shape (without the batch axis).

    Attributes:
      layer: an rnnjax :class:`~rnnjax.Layer`.

    >>> model = LinenLayer(rnnjax.rnn(rnnjax.lstm(16)))
    >>> variables = model.init(jax.random.key(0), jnp.ones((4, 10, 3)))
    >>> y = model.apply(variables, jnp.ones((4, 10, 3)))              # (4, 16)
    """

    layer: Layer

    @linen.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None = None, **options: Any):
        """``layer.apply(params, x [B, T, D], lengths [B], **options)``."""
        layer = _check_layer(self.layer)
        params = self.param("rnnjax", lambda key: layer.init(key, tuple(x.shape[1:])))
        return layer.apply(params, x, lengths, **options)


class NnxLayer(nnx.Module):
    """A ``flax.nnx`` module running an rnnjax layer.

    Each array of the layer's params pytree is an ``nnx.Param`` under ``self.params`` (same
    structure), so ``nnx.Optimizer(module, tx, wrt=nnx.Param)`` trains it.

    Args:
      layer: an rnnjax :class:`~rnnjax.Layer`.
      input_shape: one example's input shape, without the batch axis, e.g. ``(T, D)``.
      rngs: ``nnx.Rngs``; the ``params`` stream initialises the layer.

    >>> module = NnxLayer(rnnjax.rnn(rnnjax.gru(16)), (10, 3), rngs=nnx.Rngs(0))
    >>> y = module(jnp.ones((4, 10, 3)))                              # (4, 16)
    """

    def __init__(self, layer: Layer, input_shape: tuple[int, ...], *, rngs: nnx.Rngs):
        self.layer = nnx.static(_check_layer(layer))
        params = layer.init(rngs.params(), tuple(input_shape))
        self.params = nnx.data(jax.tree_util.tree_map(nnx.Param, params))

    def layer_params(self) -> Any:
        """The rnnjax params pytree (plain arrays) held by this module."""
        return jax.tree_util.tree_map(
            lambda v: v[...], self.params, is_leaf=lambda v: isinstance(v, nnx.Variable)
        )

    def __call__(self, x: jax.Array, lengths: jax.Array | None = None, **options: Any):
        """``layer.apply(params, x [B, T, D], lengths [B], **options)``."""
        return self.layer.apply(self.layer_params(), x, lengths, **options)
