"""An Equinox module holding an rnnjax cell: params as fields, the cell as a static field.

``rnnjax.equinox`` is imported on demand (``import rnnjax`` does not import Equinox). The module
is an ordinary Equinox pytree whose array leaves are the rnnjax params (``LSTMParams``, ...), so
``eqx.filter_grad``, ``eqx.filter_jit``, optax and ``eqx.tree_serialise_leaves`` see them as
they see any Equinox layer's weights; the math is the cell's own ``step`` and ``rnnjax.scan``.
"""

from typing import Any

import equinox as eqx
import jax

from rnnjax._cells import Cell
from rnnjax._scan import scan

__all__ = ["EqxCell"]


class EqxCell(eqx.Module):
    """An rnnjax cell as an Equinox module, written for one example as Equinox's cells are.

    ``__call__(state, x_t) -> (state, y_t)`` is one step (``cell.step``); :meth:`scan` runs a
    whole sequence ``xs [T, D]`` (``rnnjax.scan``, so lengths, reverse and the fast path come
    with it). Batch with ``jax.vmap``, as with any Equinox layer.

    Attributes:
      params: the rnnjax params pytree (trainable array leaves).
      cell: the rnnjax :class:`~rnnjax.Cell` (a static field).

    Args:
      cell: an rnnjax Cell (``rnnjax.lstm(8)``, ``gru``, ``simple_rnn``, ...).
      input_size: ``D``; with ``key``, the params are ``cell.init(key, input_size)``.
      key: PRNG key for the initial params.
      params: existing params of ``cell`` to hold instead (e.g. trained with plain rnnjax).

    Raises:
      TypeError: ``cell`` is not an rnnjax Cell.
      ValueError: neither ``params`` nor both ``input_size`` and ``key`` are given.

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> from rnnjax.equinox import EqxCell
    >>> module = EqxCell(rnnjax.gru(8), input_size=3, key=jax.random.key(0))
    >>> state, y = module(module.initial_state(), jnp.ones(3))          # one step, y: (8,)
    >>> final, ys = module.scan(jnp.ones((10, 3)))                      # ys: (10, 8)
    >>> ys.shape
    (10, 8)
    """

    params: Any
    cell: Cell = eqx.field(static=True)

    def __init__(
        self,
        cell: Cell,
        input_size: int | None = None,
        *,
        key: jax.Array | None = None,
        params: Any = None,
    ):
        if not isinstance(cell, Cell):
            raise TypeError(
                "cell must be an rnnjax Cell (rnnjax.lstm / gru / simple_rnn / ...); "
                f"got {type(cell).__name__}."
            )
        if params is None:
            if input_size is None or key is None:
                raise ValueError(
                    "EqxCell needs params=, or input_size= and key= to initialise them; got "
                    f"input_size={input_size!r} and key={'None' if key is None else 'a key'}."
                )
            params = cell.init(key, input_size)
        self.cell = cell
        self.params = params

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=None) -> Any:
        """The cell's zero state, leaves ``[*batch_shape, H]`` (dtype of the params)."""
        if dtype is None:
            dtype = jax.tree_util.tree_leaves(self.params)[0].dtype
        return self.cell.initial_state(tuple(batch_shape), dtype=dtype)

    def __call__(self, state: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """One step: ``cell.step(params, state, x_t [..., D]) -> (state, y_t [..., H])``."""
        return self.cell.step(self.params, state, x)

    def scan(
        self, xs: jax.Array, initial_state: Any = None, **options: Any
    ) -> tuple[Any, jax.Array]:
        """``rnnjax.scan(cell, params, xs [T, D], initial_state=..., **options)``: returns
        ``(final_state, ys [T, H])``; ``options`` are ``length``, ``reverse``, ``unroll``, ..."""
        return scan(self.cell, self.params, xs, initial_state=initial_state, **options)
