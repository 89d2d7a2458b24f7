"""Fast path of ``rnnjax.scan`` for the built-in cells: one custom JVP for the whole sequence.

Differentiating ``lax.scan`` step by step makes BPTT pay, at every step, a ``[H, B] x [B, G*H]``
matmul into a ``dW_h`` accumulator carried through the backward loop, and saves whatever each
step's linearisation happens to hold. Here the sequence has a :func:`jax.custom_jvp` whose rule

* runs the forward scan once, saving per step only the previous state and the activated gates
  (LSTM: ``i, f, g, o, tanh c``; GRU: ``r, z, candidate`` and one more ``[H]`` vector; RNN: the
  pre-activation), each as its own stacked array;
* projects ``x_t W_x + b`` inside the loop in the forward pass (on XLA:CPU storing and
  transposing a hoisted ``[T, B, G*H]`` projection costs more than the small per-step matmul);
* moves every weight term out of the time loop: ``x_t dW_x + h_{t-1} dW_h`` is one
  ``[T*B, D+H] x [D+H, G*H]`` matmul over the saved features (stored transposed, see
  ``_transposed``), which JAX transposes into one GEMM giving ``dW_x`` and ``dW_h``;
* writes the tangent recurrence with every operation linear in the tangents, so partial
  evaluation saves nothing beyond the arrays above, and the transposed (backward) loop does one
  matmul per step (``dz W_h^T``) plus elementwise work.

Being a JVP rule (not a VJP), it keeps forward mode, ``vmap`` and higher orders. ``rnnjax.rnn``
calls it time-major on the whole batch (``xs [T, B, D]``), where small batches run the loops'
matmuls feature-major (``rnnjax._layout``). The primal is the plain scan of ``cell.step`` (for
the LSTM and the GRUs over such a batch, the same gate math in hidden-unit parts, one per core:
``rnnjax._partitioned``, which for some of them also runs the derivative's forward), so the
gate math keeps one source (``rnnjax._cells``); only the derivative lives here.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from rnnjax import _cells, _checks, _layout, _partitioned
from rnnjax._cells import LSTMState, RNNState, _dot


def fast_kind(cell) -> str | None:
    """The built-in update behind ``cell.recur`` (``"lstm"``, ``"gru"``, ...), or ``None``."""
    return getattr(cell.recur, "_rnnjax_fast_path", None)


def _is_zero(tangent) -> bool:
    return tangent is None or isinstance(tangent, SymbolicZero)


def _sum(*terms):
    """Sum of the terms that are not ``None`` (absent tangents)."""
    present = [t for t in terms if t is not None]
    total = present[0]
    for term in present[1:]:
        total = total + term
    return total


def _sigmoid_tangent(tangent, s):
    """``tangent * s * (1 - s)``, written linear in ``tangent`` (nothing new to save)."""
    scaled = tangent * s
    return scaled - scaled * s


def _tanh_tangent(tangent, t):
    scaled = tangent * t
    return tangent - scaled * t


def _update(kind, config):
    """``update(params, state, projected_t) -> (state, residuals)`` from ``rnnjax._cells``."""
    dtype = config.get("dtype")
    if kind == "lstm":
        return partial(_cells._lstm_update, dtype=dtype)
    if kind == "simple_rnn":
        return partial(_cells._rnn_update, dtype=dtype, activation=config["activation"])
    return partial(_cells._gru_update, dtype=dtype, reset_after=kind == "gru_reset_after")


def _transposed(a: jax.Array) -> jax.Array:
    """``a [..., K]`` as a ``[K, N]`` matrix stored transposed (``N`` = all leading dims).

    The weight gradients are sums over every step and example, ``a^T ct``. Written as that,
    XLA folds the transpose into the dot and XLA:CPU runs the "contract dim 0 of both" form on
    its slow generic path (plus a transposed copy of the ``[N, G*H]`` cotangent); the barrier
    keeps ``a`` physically transposed, so the gradient is a plain ``[K, N] x [N, G*H]`` GEMM
    (2x faster for LSTM ``dW_h`` at ``B=64, T=100, H=256``, measured in ``experiments/benchmarks``).
    """
    return lax.optimization_barrier(a.reshape(-1, a.shape[-1]).T)


def _gemm(pairs, leading: tuple, dtype):
    """``sum_k a_k @ d_w_k`` over the pairs whose ``d_w_k`` is not zero, or ``None``.

    One matmul of the features ``[a_1 .. a_n]`` (concatenated, stored transposed) with the
    stacked ``d_w_k``: transposed, it yields all those weight gradients in one GEMM (``dW_x`` and
    ``dW_h`` together; alone, ``dW_x``'s ``[D, T*B]`` GEMM is too thin to run fast).
    """
    pairs = [(a, d_w) for a, d_w in pairs if not _is_zero(d_w)]
    if not pairs:
        return None
    a_t = _transposed(jnp.concatenate([a for a, _ in pairs], axis=-1))
    d_w = jnp.concatenate([d_w for _, d_w in pairs], axis=0)
    return _dot(a_t.T, d_w, dtype).reshape(*leading, d_w.shape[-1])


def _columns(d_w, start: int, stop: int | None = None):
    return d_w if _is_zero(d_w) else d_w[:, start:stop]


def _blocks(blocks, leading: tuple, widths):
    """Concatenate column blocks (``None``: zero), or ``None`` if every block is."""
    if all(block is None for block in blocks):
        return None
    return jnp.concatenate(
        [
            jnp.zeros((*leading, width), next(b for b in blocks if b is not None).dtype)
            if block is None
            else block
            for block, width in zip(blocks, widths, strict=True)
        ],
        axis=-1,
    )


def _step_inputs(kind, params, d_params, xs, d_xs, previous, residuals, dtype):
    """The tangents entering every step's pre-activations other than through the state.

    Returns ``(d_in [T, ..., G*H], d_hn [T, ..., H])`` (``None`` where zero): ``d_in`` is
    ``dx W_x + x dW_x + h_{t-1} dW_h + db`` (for the GRU's candidate ``(r h_{t-1}) dW_hn``), all
    steps at once; ``d_hn = h_{t-1} dW_hn`` only for the reset-after GRU, whose cell scales that
    term by ``r``.
    """
    leading, h = xs.shape[:-1], previous.h
    hidden = h.shape[-1]
    d_w_x, d_w_h, d_hn = d_params.w_x, d_params.w_h, None
    if kind == "lstm" or kind == "simple_rnn":
        d_in = _gemm([(xs, d_w_x), (h, d_w_h)], leading, dtype)
    else:
        gates = _gemm(
            [(xs, _columns(d_w_x, 0, 2 * hidden)), (h, _columns(d_w_h, 0, 2 * hidden))],
            leading, dtype,
        )  # fmt: skip
        candidate = [(xs, _columns(d_w_x, 2 * hidden))]
        if kind == "gru":  # the candidate reads (r * h_{t-1}) W_hn
            candidate.append((residuals[3], _columns(d_w_h, 2 * hidden)))
        else:
            d_hn = _gemm([(h, _columns(d_w_h, 2 * hidden))], leading, dtype)
        d_in = _blocks([gates, _gemm(candidate, leading, dtype)], leading, (2 * hidden, hidden))
    if not _is_zero(d_xs):
        d_in = _sum(d_in, _dot(d_xs, params.w_x, dtype))
    if kind == "gru_reset_after" and not _is_zero(d_params.b_hn):
        if d_hn is None:
            d_hn = jnp.zeros(leading + d_params.b_hn.shape, d_params.b_hn.dtype)
        d_hn = _cells._add_bias(d_hn, d_params.b_hn)
    if not _is_zero(d_params.b):
        if d_in is None:
            d_in = jnp.zeros(leading + d_params.b.shape, d_params.b.dtype)
        d_in = _cells._add_bias(d_in, d_params.b)
    return d_in, d_hn


def _lstm_tangent(params, d_state, d_in, d_hn, previous, residuals, config):
    i, f, g, o, tanh_c = residuals
    dz = _sum(_dot(d_state.h, params.w_h, config.get("dtype")), d_in)
    di, df, dg, do = _cells._split(dz, 4)
    di, df, do = _sigmoid_tangent(di, i), _sigmoid_tangent(df, f), _sigmoid_tangent(do, o)
    dg = _tanh_tangent(dg, g)
    dc = df * previous.c + f * d_state.c + di * g + i * dg
    return LSTMState(do * tanh_c + _tanh_tangent(o * dc, tanh_c), dc)


def _gru_tangent(params, d_state, d_in, d_hn, previous, residuals, config):
    r, z, candidate, m = residuals
    dtype, h, dh = config.get("dtype"), previous.h, d_state.h
    hidden = h.shape[-1]
    # jnp.split (not slices): transposed, it is one concatenate rather than pads and adds.
    d_in_rz, d_in_n = (None, None) if d_in is None else jnp.split(d_in, [2 * hidden], axis=-1)
    if config["reset_after"]:
        d_hidden_rz, d_hidden_n = jnp.split(_dot(dh, params.w_h, dtype), [2 * hidden], axis=-1)
        dr, dz = _cells._split(_sum(d_hidden_rz, d_in_rz), 2)
        dr, dz = _sigmoid_tangent(dr, r), _sigmoid_tangent(dz, z)
        dm = _sum(d_hidden_n, d_hn)  # d_hn carries d b_hn too
        d_pre = _sum(d_in_n, dr * m, r * dm)
    else:
        w_rz, w_n = params.w_h[:, : 2 * hidden], params.w_h[:, 2 * hidden :]
        dr, dz = _cells._split(_sum(_dot(dh, w_rz, dtype), d_in_rz), 2)
        dr, dz = _sigmoid_tangent(dr, r), _sigmoid_tangent(dz, z)
        d_pre = _sum(d_in_n, _dot(dr * h + r * dh, w_n, dtype))
    d_candidate = _tanh_tangent(d_pre, candidate)
    return RNNState(dh - z * dh + dz * candidate - dz * h + z * d_candidate)


def _rnn_tangent(params, d_state, d_in, d_hn, previous, residuals, config):
    (a,) = residuals
    da = _sum(_dot(d_state.h, params.w_h, config.get("dtype")), d_in)
    return RNNState(jax.jvp(config["activation"], (a,), (da,))[1])


_TANGENTS = {
    "lstm": _lstm_tangent,
    "gru": _gru_tangent,
    "gru_reset_after": _gru_tangent,
    "simple_rnn": _rnn_tangent,
}


def _masked(valid, new, old):
    """Per-step mask of ``rnnjax.scan``: keep ``old`` past the length, output zeros there."""
    if valid is None:
        return new, new.h
    valid = valid[..., None]  # [...] -> [..., 1], explicit for rank-promotion "raise"
    new = jax.tree_util.tree_map(lambda n, o: jnp.where(valid, n, o), new, old)
    return new, jnp.where(valid, new.h, jnp.zeros_like(new.h))


def _saving_scan(update, cell, params, xs, state, valid, feature_major, reverse, unroll):
    """The derivative's forward loop: ``(final, (ys, previous, residuals))``, stacked ``[T, ...]``
    (``previous``: the state entering each step; ``residuals``: ``update``'s)."""
    loop_params = _layout.params_for_loop(params, feature_major)

    def body(carry, inputs):
        x_t, valid_t = inputs
        new, residuals = update(loop_params, carry, cell.project_inputs(loop_params, x_t))
        new, y = _masked(valid_t, _cells._cast_like(new, carry), carry)
        return new, (y, carry, residuals)

    return lax.scan(body, state, (xs, valid), reverse=reverse, unroll=unroll)


def scan(cell, params, xs, state, valid, *, reverse: bool, unroll):
    """Run the built-in ``cell`` over ``xs [T, ..., D]`` from ``state``.

    ``valid [T, ...]`` (bool, or ``None``) marks the steps before each sequence's length; the
    ``...`` batch dims (none for one sequence, ``[B]`` time-major from ``rnnjax.rnn``) are shared
    by ``xs``, ``valid`` and the state's leading dims. Returns
    ``(final_state, ys [T, ..., H])`` exactly as the plain masked ``lax.scan`` of ``cell.step``
    does, with the fused derivative described in the module docstring. The forward projects each
    ``x_t`` inside the loop: on XLA:CPU that beats one hoisted ``[T*B, D] x [D, G*H]`` matmul,
    whose ``[T, B, G*H]`` result must be stored and transposed (measured in
    ``experiments/benchmarks``); the derivative still hoists the input terms out of the loop.
    ``unroll`` is a checked value or ``None`` (each loop's default: ``rnnjax._checks.unroll``;
    the partitioned primal takes its own, the derivative's loops the backend's).
    """
    kind, config = fast_kind(cell), cell.config
    loop_unroll = _checks.unroll(unroll)
    update, tangent_step = _update(kind, config), _TANGENTS[kind]
    config = {**config, "reset_after": kind == "gru_reset_after"}
    # Only the time-major batch of ``scan_batch`` (``xs [T, B, D]``): under a user's ``vmap`` of
    # one-sequence scans the batch size is unknown here.
    feature_major = xs.ndim == 3 and _layout.use_feature_major(xs.shape[1], cell.hidden_size)

    def primal(params, xs, state, valid):
        if _partitioned.applies(kind, xs, cell.hidden_size):
            return _partitioned.forward(
                kind, params, xs, state, valid,
                dtype=config.get("dtype"), reverse=reverse, unroll=unroll,
            )  # fmt: skip
        loop_params = _layout.params_for_loop(params, feature_major)

        def body(carry, inputs):
            x_t, valid_t = inputs
            new, _ = cell.step(loop_params, carry, x_t)
            return _masked(valid_t, new, carry)

        return lax.scan(body, state, (xs, valid), reverse=reverse, unroll=loop_unroll)

    def rule(primals, tangents):
        params, xs, state, valid = primals
        d_params, d_xs, d_state, _ = tangents
        if _partitioned.saves(kind, xs, cell.hidden_size):
            final, ys, previous, residuals = _partitioned.forward(
                kind, params, xs, state, valid,
                dtype=config.get("dtype"), reverse=reverse, unroll=loop_unroll, saved=True,
            )  # fmt: skip
        else:
            final, (ys, previous, residuals) = _saving_scan(
                update, cell, params, xs, state, valid, feature_major, reverse, loop_unroll
            )
        d_in, d_hn = _step_inputs(
            kind, params, d_params, xs, d_xs, previous, residuals, config.get("dtype")
        )
        tangent_params = _layout.params_for_loop(params, feature_major, tangent=True)
        d_state = jax.tree_util.tree_map(
            lambda t, s: jnp.zeros_like(s) if _is_zero(t) else t, d_state, state,
            is_leaf=lambda t: isinstance(t, SymbolicZero),
        )  # fmt: skip

        def tangent_body(d_carry, inputs):
            d_in_t, d_hn_t, previous_t, residuals_t, valid_t = inputs
            d_new = tangent_step(
                tangent_params, d_carry, d_in_t, d_hn_t, previous_t, residuals_t, config
            )
            return _masked(valid_t, _cells._cast_like(d_new, d_carry), d_carry)

        d_final, d_ys = lax.scan(
            tangent_body, d_state, (d_in, d_hn, previous, residuals, valid),
            reverse=reverse, unroll=loop_unroll,
        )  # fmt: skip
        return (final, ys), (d_final, d_ys)

    fused = jax.custom_jvp(primal)
    fused.defjvp(rule, symbolic_zeros=True)
    return fused(params, xs, state, valid)
