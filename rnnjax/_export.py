"""Serving: a trained model exported through ``jax.export`` with symbolic batch and time axes.

:func:`export` traces ``model.apply`` with its trained params baked in as constants, for inputs
``x [b, t, input_size]`` (and optionally ``lengths [b]``) where ``b`` and ``t`` are symbolic, and
serialises the StableHLO: one artifact serves every batch size and sequence length, in any
process with JAX installed (no Python model code, no params file). :func:`load` turns the bytes
back into a function.
"""

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import export as jax_export

from rnnjax._cells import Cell, LSTMState, RNNState
from rnnjax._layers import BidirectionalParams, Layer, rnn

for _type in (LSTMState, RNNState, BidirectionalParams):
    # Outputs with return_state are NamedTuples: name them so a fresh process can rebuild them.
    jax_export.register_namedtuple_serialization(_type, serialized_name=f"rnnjax.{_type.__name__}")


def _dim(value, name: str, symbol: str) -> str:
    if value is None:
        return symbol
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None (symbolic); got {value!r}.")
    return str(value)


def export(
    model: Layer | Cell,
    params: Any,
    input_size: int,
    *,
    dtype=jnp.float32,
    lengths: bool = False,
    batch_size: int | None = None,
    time_steps: int | None = None,
    platforms: tuple[str, ...] | None = None,
) -> bytearray:
    """Export ``model.apply(params, x[, lengths])`` as serialised StableHLO.

    Args:
      model: an rnnjax Layer (``rnn``, ``bidirectional``, ``stack``, ``dense``, ``serial``) or a
        Cell (exported as ``rnnjax.rnn(cell, return_sequences=True)``).
      params: the trained params, baked into the artifact as constants.
      input_size: ``D``, the feature size of ``x``.
      dtype: dtype of ``x``.
      lengths: also take ``lengths [b]`` (int32), passed to ``model.apply``.
      batch_size: a fixed batch size; ``None`` keeps it symbolic (``b``).
      time_steps: a fixed sequence length; ``None`` keeps it symbolic (``t``).
      platforms: platforms to lower for (``("cpu", "cuda")``); default the current backend.

    Returns:
      The serialised ``jax.export.Exported``; :func:`load` (in any process) calls it.

    Raises:
      TypeError: ``model`` is neither a Layer nor a Cell.
      ValueError: a bad ``input_size``, ``batch_size`` or ``time_steps``.

    >>> import jax, rnnjax
    >>> model = rnnjax.serial(rnnjax.rnn(rnnjax.gru(8)), rnnjax.dense(1))
    >>> params = model.init(jax.random.key(0), (10, 3))
    >>> data = rnnjax.export(model, params, input_size=3)
    >>> served = rnnjax.load(data)
    >>> served(jax.numpy.ones((5, 17, 3))).shape                  # any batch, any length
    (5, 1)
    """
    if isinstance(model, Cell):
        model = rnn(model, return_sequences=True)
    if not isinstance(model, Layer):
        raise TypeError(
            f"model must be an rnnjax Layer (rnn, bidirectional, stack, dense, serial) or Cell; "
            f"got {type(model).__name__}."
        )
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive int; got {input_size!r}.")
    batch, time = jax_export.symbolic_shape(
        f"{_dim(batch_size, 'batch_size', 'b')}, {_dim(time_steps, 'time_steps', 't')}"
    )
    specs = [jax.ShapeDtypeStruct((batch, time, input_size), jnp.dtype(dtype))]
    if lengths:
        specs.append(jax.ShapeDtypeStruct((batch,), jnp.int32))

        def function(x, lengths_):
            return model.apply(params, x, lengths_)
    else:

        def function(x):
            return model.apply(params, x)

    exported = jax_export.export(jax.jit(function), platforms=platforms)(*specs)
    return exported.serialize()


def load(source: bytes | bytearray | str | os.PathLike) -> Callable[..., Any]:
    """A function that runs an :func:`export` ed model: ``served(x[, lengths])``.

    Args:
      source: the bytes :func:`export` returned, or the path of a file holding them.

    Returns:
      ``served(x, lengths=None)``, jit-able; ``served.exported`` is the ``jax.export.Exported``
      (``in_avals``, ``out_avals``, ``platforms``).

    Raises:
      TypeError: ``source`` is neither bytes nor a path.
      ValueError: ``lengths`` given to a model exported without them, or missing.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            source = file.read()
    if not isinstance(source, bytes | bytearray):
        raise TypeError(
            f"source must be the bytes rnnjax.export returned or a file path; "
            f"got {type(source).__name__}."
        )
    exported = jax_export.deserialize(bytearray(source))
    takes_lengths = len(exported.in_avals) == 2

    def served(x, lengths=None):
        if (lengths is not None) != takes_lengths:
            raise ValueError(
                f"this model was exported with lengths={takes_lengths}: "
                f"{'pass' if takes_lengths else 'do not pass'} lengths; got "
                f"{'None' if lengths is None else 'lengths'}."
            )
        if takes_lengths:
            return exported.call(x, jnp.asarray(lengths, jnp.int32))
        return exported.call(x)

    served.exported = exported
    return served
