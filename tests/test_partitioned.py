"""The hidden-partitioned forward loop (``rnnjax._fast._partitioned``) against the plain scan.

The fast path runs the LSTM and both GRUs through this loop where its plan says so
(``rnnjax._fast.plan``: XLA:CPU, several cores, large ``H``); differentiated, its derivative's
forward may run in parts too, storing what the backward loop reads. Here the path is forced by
passing plans with 2-4 parts, so every split is exercised on any machine and backend. The oracle
is the step-by-step path (the same cell with ``recur`` wrapped, so neither fused nor
partitioned), vmapped over the batch.
"""

from functools import partial

import jax
import jax.numpy as jnp
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax._fast import Plan
from tests.test_fused import _plain, forced
from tests.tolerances import assert_close


def _parts(cell, count, *, saving=True, reverse=False, unroll=1):
    """``cell`` forced through ``count`` parts (and its derivative's forward too, ``saving``)."""
    derivative = Plan(parts=count if saving else 1, saved=True, unroll=unroll)
    return forced(cell, Plan(parts=count, unroll=unroll), derivative, reverse)


def _perturbed(params, key, dtype):
    return jax.tree_util.tree_map(
        lambda a: (a + 0.3 * jax.random.normal(jax.random.fold_in(key, a.size), a.shape)).astype(
            dtype
        ),
        params,
    )


CELLS = {
    "lstm": rnnjax.lstm,
    "gru": rnnjax.gru,
    "gru_reset_after": partial(rnnjax.gru, reset_after=True),
}


def _problem(cell, count, lengths, reverse):
    """``(apply, plain, (params, x, initial_state), lengths)``: a 12-unit ``cell`` forced through
    ``count`` parts and its step-by-step twin (float64), with perturbed params, a batch of 3 and
    a random state."""
    cell = cell(12)
    plain = rnnjax.rnn(_plain(cell), return_sequences=True, return_state=True, reverse=reverse)
    key = jax.random.key(count)
    params = _perturbed(plain.init(key, (5, 3)), key, jnp.float64)
    x = jax.random.normal(jax.random.fold_in(key, 1), (3, 5, 3), jnp.float64)
    state = jax.tree_util.tree_map(
        lambda s: s + jax.random.normal(jax.random.fold_in(key, 2), s.shape, s.dtype),
        cell.initial_state((3,), jnp.float64),
    )
    lengths = None if lengths is None else jnp.array(lengths)
    return _parts(cell, count, reverse=reverse), plain.apply, (params, x, state), lengths


def _sequence_loss(apply, lengths):
    """``loss(params, x, state)`` reading every output and the final state: ``sum(sin(ys))``
    plus the squares of the final state."""

    def loss(params, x, state):
        ys, final = apply(params, x, lengths, initial_state=state)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(s**2) for s in jax.tree_util.tree_leaves(final))

    return loss


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize(
    ("lengths", "reverse"), [(None, False), ((5, 2, 0), False), ((5, 3, 1), True)]
)
def test_partitioned_forward_equals_plain_scan(x64, cell, count, lengths, reverse):
    apply, plain, (params, x, state), lengths = _problem(cell, count, lengths, reverse)
    ys, final = apply(params, x, lengths, initial_state=state)
    ys_plain, final_plain = plain(params, x, lengths, initial_state=state)
    assert_close(ys, ys_plain)
    jax.tree_util.tree_map(assert_close, final, final_plain)
    if lengths is not None:  # zero output past each length, state frozen there
        assert float(jnp.max(jnp.abs(ys[2, int(lengths[2]) :]))) == 0.0


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
@pytest.mark.parametrize(
    ("count", "lengths", "reverse"), [(2, None, False), (3, (5, 2, 0), False), (2, (5, 3, 1), True)]
)
def test_derivative_through_partitioned_forward_equals_plain(x64, cell, count, lengths, reverse):
    """Where the derivative's forward runs in parts too, the value and the gradients for params,
    inputs and initial state equal plain autodiff's, and both modes pass ``check_grads``."""
    apply, plain, args, lengths = _problem(cell, count, lengths, reverse)
    loss, plain_loss = _sequence_loss(apply, lengths), _sequence_loss(plain, lengths)
    grads = jax.grad(loss, argnums=(0, 1, 2))(*args)
    jax.tree_util.tree_map(assert_close, grads, jax.grad(plain_loss, argnums=(0, 1, 2))(*args))
    check_grads(loss, args, order=1, modes=("fwd", "rev"))


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
def test_derivative_through_partitioned_forward_second_order(x64, cell):
    """Second order through the parts (reversed, masked): it differentiates the storing loop."""
    apply, _, args, lengths = _problem(cell, 2, (5, 3, 1), True)
    loss = _sequence_loss(apply, lengths)
    # eps 1e-5: at the default 1e-4 the finite differences of the seed GRU miss by 1.3e-5
    # relative, on the plain path as much as here.
    check_grads(loss, args, order=2, modes=("rev",), eps=1e-5)


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
def test_partitioned_forward_bfloat16_matmuls(cell):
    """With ``dtype=bfloat16`` the loop casts each GEMM's operands as ``rnnjax._gates.dot``."""
    cell = cell(16, dtype=jnp.bfloat16)
    plain = rnnjax.rnn(_plain(cell), return_sequences=True)
    apply = _parts(cell, 2)
    key = jax.random.key(0)
    params = _perturbed(plain.init(key, (7, 4)), key, jnp.float32)  # nonzero biases
    x = jax.random.normal(jax.random.key(1), (2, 7, 4))
    ys = apply(params, x)[0]
    ys_plain = plain.apply(params, x)
    assert ys.dtype == ys_plain.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(ys - ys_plain))) < 2e-2

    def loss(apply):
        return lambda params: jnp.sum(jnp.sin(apply(params, x)))

    grads = jax.grad(loss(lambda p, x: apply(p, x)[0]))(params)
    for leaf, leaf_plain in zip(
        jax.tree_util.tree_leaves(grads),
        jax.tree_util.tree_leaves(jax.grad(loss(plain.apply))(params)),
        strict=True,
    ):
        assert leaf.dtype == leaf_plain.dtype == jnp.float32
        scale = float(jnp.max(jnp.abs(leaf_plain)))
        assert float(jnp.max(jnp.abs(leaf - leaf_plain))) < 3e-2 * max(scale, 1.0)


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
def test_partitioned_forward_under_jit_and_vmap_of_layers(cell):
    cell = cell(8)
    plain = rnnjax.rnn(_plain(cell), return_sequences=True)
    forced_apply = _parts(cell, 2)

    def apply(params, x):
        return forced_apply(params, x)[0]

    key = jax.random.key(0)
    params = _perturbed(plain.init(key, (4, 3)), key, jnp.float32)
    x = jax.random.normal(jax.random.key(1), (5, 2, 4, 3))  # an outer batch of 5 batches
    ys = jax.jit(jax.vmap(apply, in_axes=(None, 0)))(params, x)
    assert_close(ys, jax.vmap(plain.apply, in_axes=(None, 0))(params, x), dtype=jnp.float32)

    def loss(apply):
        return lambda params: jnp.sum(jnp.sin(jax.vmap(apply, in_axes=(None, 0))(params, x)))

    grads = jax.jit(jax.grad(loss(apply)))(params)
    jax.tree_util.tree_map(
        partial(assert_close, dtype=jnp.float32), grads, jax.grad(loss(plain.apply))(params)
    )


def test_partitioned_forward_takes_the_plans_unroll(scan_unrolls):
    """The plan's ``unroll`` reaches the partitioned loop and the derivative's loops (a spy on
    ``lax.scan``)."""
    cell = rnnjax.gru(8, reset_after=True)
    x = jax.random.normal(jax.random.key(1), (3, 9, 4))
    params = cell.init(jax.random.key(0), 4)
    apply = forced(cell, Plan(parts=2, unroll=4), Plan(parts=2, saved=True, unroll=3))
    scan_unrolls.clear()
    apply(params, x)
    assert scan_unrolls[-1] == 4, scan_unrolls
    scan_unrolls.clear()
    jax.grad(lambda p: jnp.sum(apply(p, x)[0]))(params)
    assert scan_unrolls[-2:] == [3, 3], scan_unrolls  # the storing forward, the tangent loop
