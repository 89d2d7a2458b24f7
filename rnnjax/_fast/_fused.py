"""The fast path's loops for the built-in cells: one custom JVP for the whole sequence.

Differentiating ``lax.scan`` step by step makes BPTT pay, at every step, a ``[H, B] x [B, G*H]``
matmul into a ``dW_h`` accumulator carried through the backward loop, and saves whatever each
step's linearisation happens to hold. Here the sequence has a :func:`jax.custom_jvp` whose rule

* runs the forward loop once, saving per step only the state entering it and the update's
  residuals (``rnnjax._gates``), each as its own stacked array;
* projects ``x_t W_x + b`` inside the loop in the forward pass (on XLA:CPU storing and
  transposing a hoisted ``[T, B, G*H]`` projection costs more than the small per-step matmul);
* moves every weight term out of the time loop (``rnnjax._fast._kinds``: one GEMM over the saved
  features, which JAX transposes into one GEMM giving ``dW_x`` and ``dW_h``);
* runs the tangent recurrence linear in the tangents, so the transposed (backward) loop does one
  matmul per step (``dz W_h^T``) plus elementwise work.

Being a JVP rule (not a VJP), it keeps forward mode, ``vmap`` and higher orders. Each call runs
by a :class:`rnnjax._fast._plan.Plan` for the forward and one for the derivative's forward
(layout, hidden-unit parts, unroll). Lengths and resets use ``rnnjax._mask``.

One sequence (``rnnjax.scan``) runs :func:`scan_one`: under ``jax.vmap`` its loops see the
whole batch (:func:`jax.custom_batching.custom_vmap`) and run time-major as ``rnnjax.rnn`` does,
with the plan for that batch size. Each such loop is wrapped in a ``custom_jvp`` that
differentiates the plain loop, so no derivative ever goes through the custom batching rule.
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap
from jax.custom_derivatives import SymbolicZero

from rnnjax import _gates, _mask
from rnnjax._fast import _layout, _partitioned
from rnnjax._fast._kinds import KINDS, is_zero
from rnnjax._fast._plan import Plan


def _loop(kernels, params, xs, state, valid, resets, *, reverse: bool, plan: Plan):
    """The forward loop over a time-major ``xs [T, ..., D]``: ``(final, ys)``, and with
    ``plan.saved`` ``(final, ys, previous, residuals)`` stacked ``[T, ...]`` (``previous``: the
    state entering each step, after any reset)."""
    kind, options = KINDS[kernels.kind], kernels.options
    if plan.parts > 1:
        return _partitioned.forward(
            kernels.kind, params, xs, state, valid, resets,
            dtype=options["dtype"], reverse=reverse, plan=plan,
        )  # fmt: skip
    loop_params = _layout.params_for_loop(params, plan.layout)
    matmul = _layout.LoopMatmul(options["dtype"])

    def body(carry, inputs):
        x_t, valid_t, reset_t = inputs
        entering = carry if reset_t is None else _mask.keep(reset_t, state, carry)
        projected = _gates.add_bias(matmul(x_t, loop_params.w_x), params.b)
        new, residuals = kind.update(loop_params, entering, projected, matmul, options)
        new = _gates.cast_like(new, entering)
        new, y = _mask.step(valid_t, new, carry, new.h)  # padding keeps the carry, resets too
        return new, ((y, entering, residuals) if plan.saved else y)

    final, out = lax.scan(body, state, (xs, valid, resets), reverse=reverse, unroll=plan.unroll)
    return (final, *out) if plan.saved else (final, out)


def scan(kernels, params, xs, state, valid, resets, *, reverse, forward: Plan, derivative: Plan,
         loop: Callable | None = None):  # fmt: skip
    """Run the built-in cell of record ``kernels`` over ``xs [T, ..., D]`` from ``state``.

    ``valid`` and ``resets`` (``bool [T, ...]`` or ``None``) mark the steps before each
    sequence's length and the steps whose entering state is ``state`` (already in loop order,
    ``rnnjax._mask.segment_starts``); the ``...`` batch dims (none for one sequence, ``[B]``
    time-major) are shared by ``xs``, ``valid``, ``resets`` and the state's leading dims. Returns
    ``(final_state, ys [T, ..., H])`` exactly as the plain masked ``lax.scan`` of the cell's
    ``step`` does, computed by the ``forward`` plan, with the derivative of the module docstring
    whose forward runs by ``derivative`` (a plan with ``saved``). ``loop(plan)`` builds the loop
    function (default: :func:`_loop` bound to ``kernels`` and ``reverse``).
    """
    if not derivative.saved:
        raise ValueError(f"derivative must be a Plan with saved=True; got {derivative}.")
    kind, options = KINDS[kernels.kind], kernels.options
    if loop is None:
        loop = _bound_loop(kernels, reverse)

    def primal(params, xs, state, valid, resets):
        return loop(forward)(params, xs, state, valid, resets)

    def rule(primals, tangents):
        params, xs, state, valid, resets = primals
        d_params, d_xs, d_state, _, _ = tangents
        final, ys, previous, residuals = loop(derivative)(params, xs, state, valid, resets)
        d_in, d_hn = kind.inputs(params, d_params, xs, d_xs, previous, residuals, options)
        tangent_params = _layout.params_for_loop(params, derivative.layout, tangent=True)
        matmul = _layout.LoopMatmul(options["dtype"])
        d_state = jax.tree_util.tree_map(
            lambda t, s: jnp.zeros_like(s) if is_zero(t) else t, d_state, state,
            is_leaf=lambda t: isinstance(t, SymbolicZero),
        )  # fmt: skip

        def tangent_body(d_carry, inputs):
            d_in_t, d_hn_t, previous_t, residuals_t, valid_t, reset_t = inputs
            d_entering = d_carry if reset_t is None else _mask.keep(reset_t, d_state, d_carry)
            d_new = kind.tangent(
                tangent_params, d_entering, d_in_t, d_hn_t, previous_t, residuals_t, options, matmul
            )
            d_new = _gates.cast_like(d_new, d_carry)
            return _mask.step(valid_t, d_new, d_carry, d_new.h)

        d_final, d_ys = lax.scan(
            tangent_body, d_state, (d_in, d_hn, previous, residuals, valid, resets),
            reverse=reverse, unroll=derivative.unroll,
        )  # fmt: skip
        return (final, ys), (d_final, d_ys)

    fused = jax.custom_jvp(primal)
    fused.defjvp(rule, symbolic_zeros=True)
    return fused(params, xs, state, valid, resets)


def _bound_loop(kernels, reverse):
    def loop(plan):
        return partial(_loop, kernels, reverse=reverse, plan=plan)

    return loop


class Planner(NamedTuple):
    """``planner(batch, differentiated) -> Plan``: ``rnnjax._fast._plan.plan`` for one cell and
    machine, with the caller's ``unroll`` (``None``: the plan's)."""

    kind: str
    hidden: int
    backend: str
    cores: int
    unroll: int | bool | None

    def __call__(self, batch, differentiated: bool) -> Plan:
        from rnnjax._fast._plan import plan

        chosen = plan(self.kind, batch, self.hidden, self.backend, self.cores, differentiated)
        return chosen if self.unroll is None else chosen._replace(unroll=self.unroll)


def scan_one(kernels, params, xs, state, valid, resets, *, reverse: bool, planner: Planner):
    """:func:`scan` over one sequence ``xs [T, D]`` whose loops, under ``jax.vmap``, run
    time-major over the whole batch with ``planner``'s plan for its size."""

    def loop(plan):
        plain = partial(_loop, kernels, reverse=reverse, plan=plan)
        return _batch_aware(plain, partial(_loop, kernels, reverse=reverse), planner, plan.saved)

    return scan(
        kernels, params, xs, state, valid, resets, reverse=reverse,
        forward=planner(None, False), derivative=planner(None, True), loop=loop,
    )  # fmt: skip


def _batch_aware(plain, time_major, planner, saved):
    """``plain(params, xs, state, valid, resets)`` for one sequence; under ``vmap``, the batch's
    time-major loop ``time_major(..., plan=planner(batch, saved))``. Its derivative is the plain
    loop's (a ``custom_jvp``), so transformations other than ``vmap`` never meet the rule."""
    batched = custom_vmap(plain)

    @batched.def_vmap
    def _rule(axis_size, in_batched, params, xs, state, valid, resets):
        args = (params, xs, state, valid, resets)
        if any(jax.tree_util.tree_leaves(in_batched[0])):  # per-example params: plain vmap
            axes = jax.tree_util.tree_map(lambda b: 0 if b else None, in_batched)
            out = jax.vmap(plain, in_axes=tuple(axes))(*args)
            return out, jax.tree_util.tree_map(lambda _: True, out)

        def batch(value, is_batched):
            return value if is_batched else jnp.broadcast_to(value, (axis_size, *value.shape))

        xs, state, valid, resets = jax.tree_util.tree_map(batch, args[1:], tuple(in_batched[1:]))
        swap = partial(jax.tree_util.tree_map, partial(jnp.swapaxes, axis1=0, axis2=1))
        plan = planner(axis_size, saved)
        final, *stacked = time_major(params, swap(xs), state, swap(valid), swap(resets), plan=plan)
        out = (final, *swap(tuple(stacked)))
        return out, jax.tree_util.tree_map(lambda _: True, out)

    @jax.custom_jvp
    def loop(params, xs, state, valid, resets):
        return batched(params, xs, state, valid, resets)

    @loop.defjvp
    def _jvp(primals, tangents):
        return jax.jvp(plain, primals, tangents)

    return loop
