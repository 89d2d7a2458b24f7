"""Thin Flax wrappers that let a Flax model hold an rnnjax layer or cell and train it with Flax's
tools.

:class:`LinenLayer` and :class:`NnxLayer` run a whole layer over sequences; :class:`NnxCell` runs
one step of a cell, for NNX models that drive the recurrence themselves (a decoder feeding back
its own output, attention over an encoder at every step). All keep rnnjax's parameter pytree
(``LSTMParams``, a tuple for ``stack``/``serial``, ...) as the Flax parameters, so ``optax``,
checkpointing and ``nnx.Optimizer`` see ordinary arrays, and the math stays in rnnjax's one
implementation. ``rnnjax.interop`` converts Flax's own cells (``from_flax``, ``to_flax``).
"""

from typing import Any

import jax
from flax import linen, nnx

from rnnjax._cells import Cell
from rnnjax._layers import Layer
from rnnjax._scan import scan

__all__ = ["LinenLayer", "NnxCell", "NnxLayer"]


def _check_layer(layer) -> Layer:
    if not isinstance(layer, Layer):
        raise TypeError(
            "layer must be an rnnjax Layer (rnnjax.rnn / bidirectional / stack / serial / dense); "
            f"got {type(layer).__name__}."
            + (
                " For a cell stepped by hand use rnnjax.flax.NnxCell."
                if isinstance(layer, Cell)
                else ""
            )
        )
    return layer


class LinenLayer(linen.Module):
    """A ``flax.linen`` module running an rnnjax layer.

    Its one parameter, ``"rnnjax"``, is the layer's params pytree, made by ``layer.init`` from
    the first input's shape (without the batch axis).

    Attributes:
      layer: an rnnjax :class:`~rnnjax.Layer`.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> from rnnjax.flax import LinenLayer
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

    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> from flax import nnx
    >>> from rnnjax.flax import NnxLayer
    >>> module = NnxLayer(rnnjax.rnn(rnnjax.gru(16)), (10, 3), rngs=nnx.Rngs(0))
    >>> y = module(jnp.ones((4, 10, 3)))                              # (4, 16)
    """

    def __init__(self, layer: Layer, input_shape: tuple[int, ...], *, rngs: nnx.Rngs):
        self.layer = nnx.static(_check_layer(layer))
        params = layer.init(rngs.params(), tuple(input_shape))
        self.params = nnx.data(jax.tree_util.tree_map(nnx.Param, params))

    def layer_params(self) -> Any:
        """The rnnjax params pytree (plain arrays) held by this module."""
        return _variables_to_arrays(self.params)

    def __call__(self, x: jax.Array, lengths: jax.Array | None = None, **options: Any):
        """``layer.apply(params, x [B, T, D], lengths [B], **options)``."""
        return self.layer.apply(self.layer_params(), x, lengths, **options)


def _variables_to_arrays(tree) -> Any:
    return jax.tree_util.tree_map(
        lambda v: v[...], tree, is_leaf=lambda v: isinstance(v, nnx.Variable)
    )


class NnxCell(nnx.Module):
    """A ``flax.nnx`` module holding an rnnjax cell: one recurrent step per call.

    Each array of the cell's params (``LSTMParams``, ...) is an ``nnx.Param`` under
    ``self.params``; the step is the cell's own ``step``, so the math is rnnjax's.
    ``__call__(state, x_t) -> (state, y_t)`` takes ``x_t [..., D]`` and a state with the same
    leading (batch) dims, as ``cell.step`` does.

    Args:
      cell: an rnnjax :class:`~rnnjax.Cell` (``rnnjax.lstm(8)``, ``gru``, ``simple_rnn``, ...).
      input_size: ``D``.
      rngs: ``nnx.Rngs``; the ``params`` stream initialises the cell.

    >>> import jax.numpy as jnp, rnnjax
    >>> from flax import nnx
    >>> from rnnjax.flax import NnxCell
    >>> cell = NnxCell(rnnjax.lstm(8), input_size=3, rngs=nnx.Rngs(0))
    >>> state = cell.initial_state((4,))
    >>> state, y = cell(state, jnp.ones((4, 3)))                      # y: (4, 8)
    >>> y.shape
    (4, 8)
    """

    def __init__(self, cell: Cell, input_size: int, *, rngs: nnx.Rngs):
        if not isinstance(cell, Cell):
            raise TypeError(
                "cell must be an rnnjax Cell (rnnjax.lstm / gru / simple_rnn / ...); got "
                f"{type(cell).__name__}. For a whole layer use rnnjax.flax.NnxLayer."
            )
        self.cell = nnx.static(cell)
        self.params = nnx.data(
            jax.tree_util.tree_map(nnx.Param, cell.init(rngs.params(), input_size))
        )

    def cell_params(self) -> Any:
        """The rnnjax params pytree (plain arrays) held by this module."""
        return _variables_to_arrays(self.params)

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=None) -> Any:
        """The cell's zero state with leaves ``[*batch_shape, H]`` (dtype of the params)."""
        if dtype is None:
            dtype = jax.tree_util.tree_leaves(self.cell_params())[0].dtype
        return self.cell.initial_state(tuple(batch_shape), dtype=dtype)

    def __call__(self, state: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """``cell.step(params, state, x_t)``: ``(state, y_t)``."""
        return self.cell.step(self.cell_params(), state, x)

    def scan(
        self, xs: jax.Array, initial_state: Any = None, **options: Any
    ) -> tuple[Any, jax.Array]:
        """``rnnjax.scan(cell, params, xs [T, D], initial_state=..., **options)`` over one
        sequence: ``(final_state, ys [T, H])`` (``jax.vmap`` or ``NnxLayer`` for batches)."""
        return scan(self.cell, self.cell_params(), xs, initial_state=initial_state, **options)
