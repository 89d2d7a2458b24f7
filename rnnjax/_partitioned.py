"""Hidden-partitioned, feature-major forward loops (LSTM, both GRU forms) on XLA:CPU.

At the batch sizes recurrent nets run with, a step's GEMM is too small for XLA:CPU to keep its
threads busy (tenths of a millisecond, split into tiles and joined again), and the gate math
after it runs on one thread. Here the hidden units are split into ``P`` parts, ``P`` the cores
this process may run on: part ``j`` owns units ``j H/P .. (j+1) H/P - 1`` of every gate, so its
LSTM step is one GEMM ``[4H/P, D+H] x [D+H, B]`` of the whole ``[x_t; h_{t-1}]`` followed by its
own gate math, independent of the other parts until the next step gathers their ``h``; XLA:CPU's
thunk executor runs the ``P`` chains on different threads. (The seed-form GRU gathers once more
inside the step: every part's candidate reads the whole ``r * h``. The reset-after GRU does two
GEMMs per part, ``[3H/P, D] x [D, B]`` and ``[3H/P, H] x [H, B]``, because its reset gate scales
``h W_hn + b_hn`` alone.) Inside the loop everything is feature-major (``[H, B]``: units along
the rows, the batch along the columns), so the gate math reads its GEMM's output in place; it is
the cells' own code (``rnnjax._cells``) under ``vmap`` over the last axis. Only the layout and
the order of the work change: the values are the same products and sums, rounding aside.

Measured on the project's 2-core AMD EPYC against the fused loop it replaces (same process,
interleaved medians, forward). LSTM: ``B=16 T=1000 D=64 H=512`` 1.13-1.35x, ``B=64 T=100 D=32
H=256`` 1.18-1.32x, ``B=16 H=256`` 1.43x, ``B=32 H=512`` 1.45x, ``B=128 H=512`` 1.15x, ``B=32
H=1024`` 1.06x; slower where a step has little work (``B=1 H=256`` 0.85x, ``B=4 H=128`` 0.65x,
``B=16 H=64`` 0.70x) and at ``B=8 H=1024`` (0.80x). Seed-form GRU (``rnnjax.gru``'s default,
whose fused loop pays two dependent matmuls per step): ``B=16 T=1000 H=512`` 1.61-1.82x,
``B=64 T=100 H=256`` 1.18-1.30x, ``B=8 H=512`` 1.30-1.72x, ``B=32 H=512`` 1.63x, ``B=128 H=256``
0.99-1.04x, ``B=4 H=512`` 0.96x. Reset-after GRU (``gru(..., reset_after=True)``, PyTorch's and
Flax's form; two sweeps, 9-11 rounds): ``B=64 T=100 D=32 H=256`` 1.16-1.23x, ``B=16 T=1000 D=64
H=512`` 1.07-1.19x, ``B=16 H=256`` 1.24-1.33x, ``B=32 H=256`` 1.51x, ``B=32 H=512`` 1.03x,
``B=128 H=256`` 1.19-1.20x, ``B=128 H=512`` 1.23x; no gain at ``H=1024`` (1.00-1.01x) and
slower at ``B=8`` (0.88-0.91x) and ``B=256`` (0.92-0.95x); an earlier attempt, timed without a
batch bound, was dropped as 0.92-1.37x. Hence :func:`applies`. Tried and not kept: the same loop
for the vanilla RNN (1.00-1.05x), hoisting the reset-after GRU's ``x W_x`` out of the
partitioned loop as one ``[T, 3H, B]`` product (0.44-0.58x), and the partitioned derivative
(tangent loop per part, weight terms as per-part GEMMs): 0.81-1.09x (LSTM; 0.81x at ``B=64``,
0.94x at ``B=16`` in the longest rerun) and 0.85-0.93x (GRU) of ``rnnjax._fused``'s rule, whose
one GEMM per step XLA:CPU already splits across its threads as well. So it serves the forward:
inference, the primal of the fused custom JVP, and (:func:`saves`: the LSTM at ``B <= 64``, the
reset-after GRU at ``B <= 32``) the derivative's forward, which also stores each step's state
and gate values for the fused rule's backward loop; elsewhere that forward is
``rnnjax._fused``'s own loop.
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

_BATCHES = {"lstm": (16, None), "gru": (8, None), "gru_reset_after": (16, 128)}
"""Per cell, the smallest and largest batch (``None``: no limit) where the loop measured faster
(module docstring)."""

_SAVING_BATCHES = {"lstm": 64, "gru_reset_after": 32}
"""Per cell, the largest batch where the derivative's forward also runs here (:func:`saves`)."""

_MIN_HIDDEN = 256
"""Smallest hidden size where the loop measured faster."""

_DEFAULT_UNROLL = {"gru_reset_after": 4}
"""Steps per loop iteration when the caller leaves ``unroll`` to its default (``None``); 1 for
the kinds not listed. Forward, interleaved medians against ``unroll=1`` on 2 cores: reset-after
GRU 1.13-1.22x at ``B=64 T=100 H=256``, 1.14x at ``B=16 T=1000 H=512`` (two runs each), 1.08-1.14x
at ``B=32 H=256``, ``B=128 H=256``, ``B=16 H=256``; not kept for the LSTM (1.03-1.04x) or the
seed-form GRU (0.87-1.06x)."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_BACKENDS = ("cpu",)
"""Backends it runs on: XLA:CPU runs the parts' chains on separate threads. Not measured on a
GPU, whose one stream would run them one after another (it runs the fused loop unrolled,
``rnnjax._checks.unroll``)."""


def num_parts(hidden: int) -> int:
    """How many parts ``hidden`` units are split into: the largest ``P`` that divides ``hidden``,
    is at most the cores this process may use (and 8), and leaves at least 32 units per part."""
    for parts in range(min(_cores(), _MAX_PARTS, hidden // _MIN_UNITS), 1, -1):
        if hidden % parts == 0:
            return parts
    return 1


def applies(kind: str | None, xs: jax.Array, hidden: int) -> bool:
    """Whether the fused forward of ``xs`` runs here: an LSTM (``B >= 16``), seed-form GRU
    (``B >= 8``) or reset-after GRU (``16 <= B <= 128``) over a time-major batch ``xs [T, B, D]``
    on XLA:CPU with ``H >= 256`` and at least two parts (where it measured faster; see the
    module docstring)."""
    if kind not in _BATCHES or xs.ndim != 3:
        return False
    smallest, largest = _BATCHES[kind]
    return (
        smallest <= xs.shape[1]
        and (largest is None or xs.shape[1] <= largest)
        and hidden >= _MIN_HIDDEN
        and jax.default_backend() in _BACKENDS
        and num_parts(hidden) > 1
    )


def saves(kind: str | None, xs: jax.Array, hidden: int) -> bool:
    """Whether the fused derivative's forward (which also stores each step's state and gate
    values) runs here too: where :func:`applies`, for an LSTM with ``B <= 64`` or a reset-after
    GRU with ``B <= 32``. Forward+backward against the fused rule's own forward loop (2 cores,
    interleaved medians, two runs each): LSTM ``B=64 T=100 D=32 H=256`` 1.03-1.06x (four runs),
    ``B=16 T=200 H=256`` 1.07-1.14x, ``B=16 T=1000 D=64 H=512`` 1.00-1.11x; reset-after GRU
    ``B=16 T=200 H=256`` 1.06-1.13x, ``B=16 T=1000 H=512`` 0.96-1.08x. Not used where it
    measured slower or no faster: LSTM ``B=128 H=512`` 0.90-0.91x, reset-after GRU ``B=64``
    0.95-1.04x and ``B=128`` 0.91-0.92x, seed-form GRU 0.90-0.94x at ``B=64`` and 0.95-1.09x
    at ``B <= 32`` (each step transposes its stored values to the fused loop's ``[B, H]``)."""
    return applies(kind, xs, hidden) and xs.shape[1] <= _SAVING_BATCHES.get(kind, 0)


def _rows(w: jax.Array, parts: int, gates: int) -> tuple[jax.Array, ...]:
    """``w [In, G*H]`` as ``P`` arrays ``[G*H/P, In]``: part ``j`` holds the transposed columns
    of its units, gate-major (``[gate 0 units; gate 1 units; ...]``), each its own buffer made
    once per sequence (indexing one stacked array inside the loop copies the slice every step)."""
    inputs, width = w.shape
    units = width // gates // parts
    blocks = w.reshape(inputs, gates, parts, units).transpose(2, 1, 3, 0)
    blocks = blocks.reshape(parts, gates * units, inputs)
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


def _lstm_step(weights, carry, x_t, dtype):
    """One LSTM step of every part: ``z = [W_x; W_h]_j^T [x_t; h] + b_j``, then the gates.
    Each step function returns, per part, ``(new state, residuals)`` as ``rnnjax._cells``'s
    updates do (``[H/P, B]`` leaves)."""
    w_both, b = weights
    h = jnp.concatenate(carry.h, axis=0)
    both = _stacked(x_t.T, h)
    activate = jax.vmap(_cells._lstm_activate, in_axes=-1, out_axes=-1)
    news = []
    for j in range(len(carry.h)):
        z = _matmul(w_both[j], both, dtype) + b[j]
        news.append(activate(_cells.LSTMState(carry.h[j], carry.c[j]), z))
    return news


def _gru_step(weights, carry, x_t, dtype):
    """One seed-form GRU step of every part: each part's ``r, z`` from ``[x_t; h]``, then every
    part's candidate reads the gathered ``r * h``: ``tanh(x W_xn + b_n + (r * h) U_n)``."""
    w_rz, b_rz, w_xn, w_hn, b_n = weights
    h = jnp.concatenate(carry.h, axis=0)
    x_column = x_t.T
    both = _stacked(x_column, h)
    reset = jax.vmap(_cells._gru_reset, in_axes=-1, out_axes=-1)
    combine = jax.vmap(_cells._gru_combine, in_axes=-1, out_axes=-1)
    parts = len(carry.h)
    gates = [reset(carry.h[j], _matmul(w_rz[j], both, dtype) + b_rz[j]) for j in range(parts)]
    m = jnp.concatenate([m_j for _, _, m_j in gates], axis=0)
    news = []
    for j in range(parts):
        r_j, z_j, m_j = gates[j]
        pre_n = _matmul(w_xn[j], x_column, dtype) + b_n[j] + _matmul(w_hn[j], m, dtype)
        new, candidate = combine(carry.h[j], z_j, pre_n)
        news.append((new, (r_j, z_j, candidate, m_j)))
    return news


def _gru_reset_after_step(weights, carry, x_t, dtype):
    """One reset-after GRU step of every part: ``W_x,j^T x_t + b_j`` and ``W_h,j^T h`` (the
    part's rows of all three gates, ``[3H/P, B]`` each), then its gates (the reset gate scales
    ``h W_hn + b_hn``, so the two products stay apart)."""
    w_x, w_h, b, b_hn = weights
    h = jnp.concatenate(carry.h, axis=0)
    x_column = x_t.T
    activate = jax.vmap(_cells._gru_reset_after, in_axes=(-1, -1, -1, None), out_axes=-1)
    news = []
    for j in range(len(carry.h)):
        projected = _matmul(w_x[j], x_column, dtype) + b[j]
        news.append(activate(carry.h[j], projected, _matmul(w_h[j], h, dtype), b_hn[j][:, 0]))
    return news


def _stacked(x_column, h):
    """``[x_t^T; h]`` ``[D+H, B]`` in the wider of the two dtypes."""
    common = jnp.promote_types(x_column.dtype, h.dtype)
    return jnp.concatenate([x_column.astype(common), h.astype(common)], axis=0)


def _weights(kind: str, params, parts: int):
    if kind == "lstm":
        both = jnp.concatenate([params.w_x, params.w_h], axis=0)
        return _rows(both, parts, 4), _rows(params.b[None, :], parts, 4)
    if kind == "gru_reset_after":
        return (
            _rows(params.w_x, parts, 3),
            _rows(params.w_h, parts, 3),
            _rows(params.b[None, :], parts, 3),
            _rows(params.b_hn[None, :], parts, 1),
        )
    hidden = params.w_h.shape[0]
    rz = jnp.concatenate([params.w_x[:, : 2 * hidden], params.w_h[:, : 2 * hidden]], axis=0)
    return (
        _rows(rz, parts, 2),
        _rows(params.b[None, : 2 * hidden], parts, 2),  # [2H/P, 1] columns, over the batch
        _rows(params.w_x[:, 2 * hidden :], parts, 1),
        _rows(params.w_h[:, 2 * hidden :], parts, 1),
        _rows(params.b[None, 2 * hidden :], parts, 1),
    )


def forward(kind: str, params, xs, state, valid, *, dtype, reverse: bool, unroll, saved=False):
    """``rnnjax._fused.scan``'s values for an LSTM or either GRU (``kind``) over a time-major
    batch ``xs [T, B, D]`` (state leaves ``[B, H]``, ``valid [T, B]`` or ``None``):
    ``(final_state, ys [T, B, H])``, computed in hidden-unit parts on feature-major arrays (see
    the module docstring). ``unroll=None`` takes the kind's measured default
    (``_DEFAULT_UNROLL``; the derivative passes its loops' own value).

    With ``saved`` (the derivative's forward, where :func:`saves`), also what the fused rule
    keeps per step: ``(final, ys, previous, residuals)``, ``previous`` the state entering each
    step and ``residuals`` the update's (``rnnjax._cells``), every leaf ``[T, B, H]`` as the
    fused loop stores them."""
    if unroll is None:
        unroll = _DEFAULT_UNROLL.get(kind, 1)
    parts = num_parts(state.h.shape[-1])
    weights = _weights(kind, params, parts)
    step = {"lstm": _lstm_step, "gru": _gru_step, "gru_reset_after": _gru_reset_after_step}[kind]

    def body(carry, inputs):
        x_t, valid_t = inputs
        news, residuals = [], []
        for j, (new, residuals_j) in enumerate(step(weights, carry, x_t, dtype)):
            old = type(carry)(*(leaf[j] for leaf in carry))
            new = _cells._cast_like(new, old)
            if valid_t is not None:  # rnnjax.scan's mask: keep the state past the length
                new = jax.tree_util.tree_map(
                    lambda n, o: jnp.where(valid_t[None, :], n, o), new, old
                )
            news.append(new)
            residuals.append(residuals_j)
        new = type(carry)(*zip(*news, strict=True))
        h = jnp.concatenate(new.h, axis=0)
        if not saved:
            return new, h
        residuals = tuple(jnp.concatenate(r, axis=0).T for r in zip(*residuals, strict=True))
        return new, (h, _join_state(carry), residuals)

    initial = _split_state(state, parts)
    final, stacked = lax.scan(body, initial, (xs, valid), reverse=reverse, unroll=unroll)
    hs = stacked[0] if saved else stacked
    if valid is not None:  # zero output past each length
        hs = jnp.where(valid[:, None, :], hs, jnp.zeros_like(hs))
    ys = jnp.swapaxes(hs, 1, 2)
    if not saved:
        return _join_state(final), ys
    return _join_state(final), ys, stacked[1], stacked[2]
