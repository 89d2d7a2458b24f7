"""Hidden-partitioned, feature-major LSTM forward loop: the fused path's primal on XLA:CPU.

At the batch sizes recurrent nets run with, a step's GEMM is too small for XLA:CPU to keep its
threads busy (tenths of a millisecond, split into tiles and joined again), and the gate math
after it runs on one thread. Here the hidden units are split into ``P`` parts, ``P`` the cores
this process may run on: part ``j`` owns units ``j H/P .. (j+1) H/P - 1`` of every gate, so its
step is one GEMM ``[4H/P, D+H] x [D+H, B]`` of the whole ``[x_t; h_{t-1}]`` followed by its own
gate math, independent of the other parts until the next step gathers their ``h``; XLA:CPU's
thunk executor runs the ``P`` chains on different threads. Inside the loop everything is
feature-major (``[H, B]``: units along the rows, the batch along the columns), so the gate math
reads its GEMM's output in place; it is the cell's own code (``rnnjax._cells._lstm_activate``)
under ``vmap`` over the last axis. Only the layout and the order of the work change: the values
are the same products and sums, rounding aside.

Measured on the project's 2-core AMD EPYC, LSTM forward, against the fused loop it replaces
(same process, interleaved medians): ``B=16 T=1000 D=64 H=512`` 1.28-1.35x faster, ``B=64 T=100
D=32 H=256`` 1.18x, ``B=16 H=256`` 1.43x, ``B=32 H=512`` 1.45x, ``B=128 H=512`` 1.15x, ``B=32
H=1024`` 1.06x; slower where a step has little work (``B=1 H=256`` 0.85x, ``B=4 H=128`` 0.65x,
``B=16 H=64`` 0.70x) and at ``B=8 H=1024`` (0.80x), hence :func:`applies`. Tried and not kept:
the same loop for the GRU (0.71-1.11x, slower from ``B=256``) and the vanilla RNN (1.00-1.05x),
and the partitioned derivative (tangent loop per part, weight terms as per-part GEMMs): 0.81-1.09x
(LSTM; 0.81x at ``B=64``, 0.94x at ``B=16`` in the longest rerun) and 0.85-0.93x (GRU) of
``rnnjax._fused``'s rule, whose one GEMM per step XLA:CPU already
splits across its threads as well. So it serves the forward only (inference, and the primal of
the fused custom JVP; the derivative's own forward is ``rnnjax._fused``'s).
"""

import os

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax import _cells

_MIN_UNITS = 32
"""Fewest hidden units per part (smaller GEMMs lose more to overhead than they gain)."""

_MAX_PARTS = 8
"""Most parts (measured only up to 2 cores; more threads are untested)."""

_MIN_BATCH, _MIN_HIDDEN = 16, 256
"""Smallest batch and hidden size where the loop measured faster (module docstring)."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def num_parts(hidden: int) -> int:
    """How many parts ``hidden`` units are split into: the largest ``P`` that divides ``hidden``,
    is at most the cores this process may use (and 8), and leaves at least 32 units per part."""
    for parts in range(min(_cores(), _MAX_PARTS, hidden // _MIN_UNITS), 1, -1):
        if hidden % parts == 0:
            return parts
    return 1


def applies(kind: str | None, xs: jax.Array, hidden: int) -> bool:
    """Whether the fused forward of ``xs`` runs here: an LSTM over a time-major batch
    ``xs [T, B, D]`` on XLA:CPU with ``B >= 16``, ``H >= 256`` and at least two parts (where it
    measured faster; see the module docstring)."""
    return (
        kind == "lstm"
        and xs.ndim == 3
        and xs.shape[1] >= _MIN_BATCH
        and hidden >= _MIN_HIDDEN
        and jax.default_backend() == "cpu"
        and num_parts(hidden) > 1
    )


def _rows(w: jax.Array, parts: int) -> tuple[jax.Array, ...]:
    """``w [In, 4H]`` as ``P`` arrays ``[4H/P, In]``: part ``j`` holds the transposed columns of
    its units, gate-major (``[i units; f units; g units; o units]``), each its own buffer made
    once per sequence (indexing one stacked array inside the loop copies the slice every step)."""
    inputs, width = w.shape
    units = width // 4 // parts
    blocks = w.reshape(inputs, 4, parts, units).transpose(2, 1, 3, 0)
    blocks = blocks.reshape(parts, 4 * units, inputs)
    return lax.optimization_barrier(tuple(blocks[j] for j in range(parts)))


def _matmul(w: jax.Array, a: jax.Array, dtype) -> jax.Array:
    """``w [M, K] @ a [K, B]`` with ``rnnjax._cells._dot``'s ``dtype`` rule (operands cast to
    it, accumulated in their own dtype)."""
    accumulate = jnp.promote_types(a.dtype, w.dtype)
    operands = accumulate if dtype is None else dtype
    return jnp.matmul(w.astype(operands), a.astype(operands), preferred_element_type=accumulate)


def _split_state(state, parts: int):
    """``state`` leaves ``[B, H]`` -> the same type, each leaf a tuple of ``P`` feature-major
    ``[H/P, B]`` arrays."""
    return type(state)(*(tuple(jnp.split(leaf.T, parts, axis=0)) for leaf in state))


def _join_state(state):
    return type(state)(*(jnp.concatenate(leaf, axis=0).T for leaf in state))


def forward(params, xs, state, valid, *, dtype, reverse: bool, unroll):
    """``rnnjax._fused.scan``'s values for an LSTM over a time-major batch ``xs [T, B, D]``
    (state leaves ``[B, H]``, ``valid [T, B]`` or ``None``): ``(final_state, ys [T, B, H])``,
    computed in hidden-unit parts on feature-major arrays (see the module docstring). Not
    differentiated itself: it is the primal of the fused path's custom JVP."""
    parts = num_parts(state.h.shape[-1])
    weights = _rows(jnp.concatenate([params.w_x, params.w_h], axis=0), parts)
    biases = _rows(params.b[None, :], parts)  # [4H/P, 1] columns, broadcast over the batch
    activate = jax.vmap(_cells._lstm_activate, in_axes=-1, out_axes=-1)

    def body(carry, inputs):
        x_t, valid_t = inputs
        h = jnp.concatenate(carry.h, axis=0)
        common = jnp.promote_types(x_t.dtype, h.dtype)
        both = jnp.concatenate([x_t.T.astype(common), h.astype(common)], axis=0)  # [D+H, B]
        news = []
        for j in range(parts):
            old = _cells.LSTMState(carry.h[j], carry.c[j])
            new, _ = activate(old, _matmul(weights[j], both, dtype) + biases[j])
            new = _cells._cast_like(new, old)
            if valid_t is not None:  # rnnjax.scan's mask: keep the state past the length
                new = jax.tree_util.tree_map(
                    lambda n, o: jnp.where(valid_t[None, :], n, o), new, old
                )
            news.append(new)
        new = _cells.LSTMState(*zip(*news, strict=True))
        return new, jnp.concatenate(new.h, axis=0)

    initial = _split_state(state, parts)
    final, hs = lax.scan(body, initial, (xs, valid), reverse=reverse, unroll=unroll)
    if valid is not None:  # zero output past each length
        hs = jnp.where(valid[:, None, :], hs, jnp.zeros_like(hs))
    return _join_state(final), jnp.swapaxes(hs, 1, 2)
