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
the cells' own code (``rnnjax._gates``) under ``vmap`` over the last axis. Only the layout and
the order of the work change: the values are the same products and sums, rounding aside.

It serves the forward (inference and the fused custom JVP's primal) and, where the plan says so,
the derivative's forward, which also stores each step's state and gate values for the fused
rule's backward loop. Where it runs is decided by ``rnnjax._fast._plan`` (its thresholds and
their measurements are listed there and in ``docs/fast_path.md``).
"""

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax import _gates, _mask


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
    """``w [M, K] @ a [K, B]`` with ``rnnjax._gates.dot``'s ``dtype`` rule (operands cast to
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
    Each step function returns, per part, ``(new state, residuals)`` as ``rnnjax._gates``'s
    updates do (``[H/P, B]`` leaves)."""
    w_both, b = weights
    h = jnp.concatenate(carry.h, axis=0)
    both = _stacked(x_t.T, h)
    activate = jax.vmap(_gates.lstm_activate, in_axes=-1, out_axes=-1)
    news = []
    for j in range(len(carry.h)):
        z = _matmul(w_both[j], both, dtype) + b[j]
        news.append(activate(_gates.LSTMState(carry.h[j], carry.c[j]), z))
    return news


def _gru_step(weights, carry, x_t, dtype):
    """One seed-form GRU step of every part: each part's ``r, z`` from ``[x_t; h]``, then every
    part's candidate reads the gathered ``r * h``: ``tanh(x W_xn + b_n + (r * h) U_n)``."""
    w_rz, b_rz, w_xn, w_hn, b_n = weights
    h = jnp.concatenate(carry.h, axis=0)
    x_column = x_t.T
    both = _stacked(x_column, h)
    reset = jax.vmap(_gates.gru_reset, in_axes=-1, out_axes=-1)
    combine = jax.vmap(_gates.gru_combine, in_axes=-1, out_axes=-1)
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
    activate = jax.vmap(_gates.gru_reset_after, in_axes=(-1, -1, -1, None), out_axes=-1)
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


STEPS = {"lstm": _lstm_step, "gru": _gru_step, "gru_reset_after": _gru_reset_after_step}
"""The kinds with a partitioned loop, and their steps."""


def forward(kind: str, params, xs, state, valid, resets, *, dtype, reverse: bool, plan):
    """The fused forward's values for an LSTM or either GRU (``kind``) over a time-major batch
    ``xs [T, B, D]`` (state leaves ``[B, H]``, ``valid`` and ``resets`` ``[T, B]`` or ``None``):
    ``(final_state, ys [T, B, H])``, computed in ``plan.parts`` hidden-unit parts on
    feature-major arrays (see the module docstring), ``plan.unroll`` steps per iteration.

    With ``plan.saved`` (the derivative's forward), also what the fused rule keeps per step:
    ``(final, ys, previous, residuals)``, ``previous`` the state entering each step (after any
    reset) and ``residuals`` the update's (``rnnjax._gates``), every leaf ``[T, B, H]`` as the
    fused loop stores them."""
    parts, saved = plan.parts, plan.saved
    weights = _weights(kind, params, parts)
    step = STEPS[kind]
    initial = _split_state(state, parts)

    def body(carry, inputs):
        x_t, valid_t, reset_t = inputs
        entering = carry  # the initial state before step t where reset (feature-major)
        if reset_t is not None:
            entering = _mask.keep(reset_t[None, :], initial, carry)
        news, residuals = [], []
        for j, (new, residuals_j) in enumerate(step(weights, entering, x_t, dtype)):
            old = type(carry)(*(leaf[j] for leaf in carry))
            new = _gates.cast_like(new, old)
            if valid_t is not None:  # the length mask: keep the state past the length
                new = _mask.keep(valid_t[None, :], new, old)
            news.append(new)
            residuals.append(residuals_j)
        new = type(carry)(*zip(*news, strict=True))
        h = jnp.concatenate(new.h, axis=0)
        if not saved:
            return new, h
        residuals = tuple(jnp.concatenate(r, axis=0).T for r in zip(*residuals, strict=True))
        return new, (h, _join_state(entering), residuals)

    final, stacked = lax.scan(
        body, initial, (xs, valid, resets), reverse=reverse, unroll=plan.unroll
    )
    hs = stacked[0] if saved else stacked
    ys = _mask.zero_padding(jnp.swapaxes(hs, 1, 2), valid)  # zero output past each length
    if not saved:
        return _join_state(final), ys
    return _join_state(final), ys, stacked[1], stacked[2]
