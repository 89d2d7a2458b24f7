"""The fast path's fused derivative (``rnnjax._fast``) against step-by-step autodiff of the scan.

The oracle is the plain path: the same cell with ``recur`` wrapped, which ``rnnjax.scan`` does not
recognise as built-in and therefore differentiates step by step through ``lax.scan``. Values,
first derivatives in both modes (``jax.test_util.check_grads``) and the vmapped batch with
per-example lengths must agree; the fused rule must also keep the cell's error messages.
"""

from functools import partial

import jax
import jax.numpy as jnp
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax import _fast, _scan
from rnnjax._fast import Plan
from tests.tolerances import assert_close

CELLS = {
    "simple_rnn": rnnjax.simple_rnn,
    "simple_rnn_relu": partial(rnnjax.simple_rnn, activation=jax.nn.relu),
    "lstm": rnnjax.lstm,
    "gru": rnnjax.gru,
    "gru_reset_after": partial(rnnjax.gru, reset_after=True),
}


def _plain(cell):
    """The same cell on the step-by-step autodiff path (its ``recur`` is no longer built-in)."""
    recur = cell.recur
    return cell._replace(recur=lambda params, state, projected: recur(params, state, projected))


def forced(cell, forward: Plan, derivative: Plan, reverse: bool = False):
    """``apply(params, x, lengths=None, initial_state=None, resets=None) -> (ys, final)`` through
    the fast path over a batch with the given plans (tests force a path by passing a Plan)."""

    def apply(params, x, lengths=None, initial_state=None, resets=None):
        if initial_state is None:
            initial_state = cell.initial_state((x.shape[0],), x.dtype)
        final, ys = _scan.scan_batch(
            cell, params, x, initial_state, lengths, reverse=reverse, unroll=None, remat=False,
            remat_chunk=None, resets=resets, plans=(forward, derivative),
        )  # fmt: skip
        return ys, final

    return apply


def _setup(name, hidden=3, inputs=2, steps=6, dtype=jnp.float64, seed=0):
    cell = CELLS[name](hidden)
    key = jax.random.key(seed)
    params = cell.init(key, inputs)
    params = jax.tree_util.tree_map(
        lambda a: (a + 0.2 * jax.random.normal(jax.random.fold_in(key, a.size), a.shape)).astype(
            dtype
        ),
        params,
    )
    xs = jax.random.normal(jax.random.fold_in(key, 1), (steps, inputs), dtype)
    state = jax.tree_util.tree_map(lambda s: s + 0.3, cell.initial_state((), dtype))
    return cell, params, xs, state


def _loss(cell, length, reverse):
    def loss(params, xs, state):
        final, ys = rnnjax.scan(cell, params, xs, initial_state=state, length=length,
                                reverse=reverse)  # fmt: skip
        leaves = jax.tree_util.tree_leaves(final)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in leaves)

    return loss


@pytest.mark.parametrize("name", CELLS)
def test_builtin_cells_take_the_fast_path_and_replaced_recur_does_not(name):
    cell = CELLS[name](4)
    assert _fast.record(cell) is not None
    assert _fast.record(_plain(cell)) is None


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(("length", "reverse"), [(None, False), (4, True), (0, False)])
def test_fused_values_and_gradients_equal_plain_autodiff(x64, name, length, reverse):
    cell, params, xs, state = _setup(name)
    fused = jax.jit(jax.value_and_grad(_loss(cell, length, reverse), argnums=(0, 1, 2)))
    plain = jax.jit(jax.value_and_grad(_loss(_plain(cell), length, reverse), argnums=(0, 1, 2)))
    (value, grads), (plain_value, plain_grads) = fused(params, xs, state), plain(params, xs, state)
    assert_close(value, plain_value)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(plain_grads)
    jax.tree_util.tree_map(partial(assert_close, scale=10), grads, plain_grads)


@pytest.mark.parametrize("name", ["lstm", "gru_reset_after"])
def test_fused_check_grads_forward_and_reverse(x64, name):
    cell, params, xs, state = _setup(name, hidden=2, steps=3)

    @jax.jit
    def f(params, xs, state):
        return rnnjax.scan(cell, params, xs, initial_state=state, length=2)

    check_grads(f, (params, xs, state), order=1, modes=("fwd", "rev"))


def test_fused_second_order(x64):
    cell, params, xs, state = _setup("lstm", hidden=2, steps=3)
    check_grads(jax.jit(_loss(cell, 2, False)), (params, xs, state), order=2, modes=("rev",))


@pytest.mark.parametrize("name", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_fused_batch_with_lengths_equals_plain(name):
    """``rnnjax.rnn`` vmaps the scan: the hoisted dW_h matmul then covers the whole batch."""
    cell = CELLS[name](5)
    x = jax.random.normal(jax.random.key(3), (4, 7, 3))
    lengths = jnp.array([7, 3, 0, 5])

    def grads(core):
        layer = rnnjax.rnn(core, return_sequences=True)
        params = layer.init(jax.random.key(0), (7, 3))

        def loss(params, x):
            return jnp.sum(jnp.tanh(layer.apply(params, x, lengths)) ** 2)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)

    (value, grad), (plain_value, plain_grad) = grads(cell), grads(_plain(cell))
    assert_close(value, plain_value, scale=10)
    jax.tree_util.tree_map(partial(assert_close, scale=30), grad, plain_grad)


def test_fused_bfloat16_matmuls_match_plain():
    cell = rnnjax.lstm(8, dtype=jnp.bfloat16)
    params = cell.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (9, 4))

    def grad(core):
        return jax.jit(jax.grad(lambda p: jnp.sum(rnnjax.scan(core, p, xs)[1] ** 2)))(params)

    jax.tree_util.tree_map(
        lambda a, b: assert_close(a, b, dtype=jnp.bfloat16, scale=3), grad(cell), grad(_plain(cell))
    )


def test_fused_gradient_with_respect_to_inputs_only():
    """Zero parameter tangents skip the hoisted matmul; the input gradient is unchanged."""
    cell, params, xs, state = _setup("gru", dtype=jnp.float32)
    loss, plain_loss = _loss(cell, None, False), _loss(_plain(cell), None, False)
    assert_close(jax.grad(loss, argnums=1)(params, xs, state),
                 jax.grad(plain_loss, argnums=1)(params, xs, state), scale=10)  # fmt: skip


def test_fused_path_keeps_the_cells_error_messages():
    cell, params, xs, _ = _setup("lstm", dtype=jnp.float32)
    bad_state = rnnjax.LSTMState(jnp.zeros(5), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"initial_state leaves must have shape \(3,\)"):
        jax.grad(lambda p: jnp.sum(rnnjax.scan(cell, p, xs, initial_state=bad_state)[1]))(params)
    bad_params = params._replace(w_h=jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"expected params.w_h of shape \(3, 12\)"):
        jax.grad(lambda p: jnp.sum(rnnjax.scan(cell, p, xs)[1]))(bad_params)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(("lengths", "reverse"), [(None, False), ((6, 2, 0), True)])
def test_time_major_batch_path_equals_vmapped_scan(x64, name, lengths, reverse):
    """``rnnjax.rnn`` runs built-in cells time-major (``scan_batch``), not under ``vmap``: values
    and gradients for params, inputs and initial state equal ``jax.vmap(rnnjax.scan)``."""
    cell = CELLS[name](3)
    _, params, _, _ = _setup(name)
    x = jax.random.normal(jax.random.key(5), (3, 6, 2), jnp.float64)
    state = jax.tree_util.tree_map(lambda s: s + 0.3, cell.initial_state((3,), jnp.float64))
    lengths = None if lengths is None else jnp.array(lengths)
    layer = rnnjax.rnn(cell, return_sequences=True, return_state=True, reverse=reverse)

    def loss(run):
        def value(params, x, state):
            ys, final = run(params, x, state)
            return jnp.sum(jnp.sin(ys)) + sum(
                jnp.sum(s**2) for s in jax.tree_util.tree_leaves(final)
            )

        return value

    def batched(params, x, state):
        return layer.apply(params, x, lengths, initial_state=state)

    def vmapped(params, x, state):
        def one(xs, s, length):
            return rnnjax.scan(cell, params, xs, initial_state=s, length=length, reverse=reverse)

        final, ys = jax.vmap(one)(x, state, lengths)
        return ys, final

    args = (params, x, state)
    assert_close(loss(batched)(*args), loss(vmapped)(*args))
    jax.tree_util.tree_map(
        assert_close,
        jax.grad(loss(batched), argnums=(0, 1, 2))(*args),
        jax.grad(loss(vmapped), argnums=(0, 1, 2))(*args),
    )
    check_grads(loss(batched), args, order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", CELLS)
def test_feature_major_small_batch_path_equals_plain(x64, name):
    """Forced feature-major loops (``rnnjax._fast._layout``: matmuls computed transposed, on any
    backend): values and both modes of derivative still equal plain autodiff."""
    cell = CELLS[name](8)
    plain = rnnjax.rnn(_plain(cell), return_sequences=True, return_state=True)
    layer = forced(cell, Plan("feature_major"), Plan("feature_major", saved=True))
    params = plain.init(jax.random.key(0), (4, 3))
    x = jax.random.normal(jax.random.key(1), (2, 4, 3), jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    lengths = jnp.array([4, 2])

    def loss(apply):
        def value(params, x):
            ys, final = apply(params, x, lengths)
            return jnp.sum(jnp.sin(ys)) + sum(
                jnp.sum(s**2) for s in jax.tree_util.tree_leaves(final)
            )

        return value

    assert_close(loss(layer)(params, x), loss(plain.apply)(params, x))
    jax.tree_util.tree_map(
        assert_close,
        jax.grad(loss(layer), argnums=(0, 1))(params, x),
        jax.grad(loss(plain.apply), argnums=(0, 1))(params, x),
    )
    check_grads(loss(layer), (params, x), order=1, modes=("fwd", "rev"), eps=1e-6)


def test_feature_major_is_planned_for_small_batches_on_cpu():
    """The real layer at ``H = 256``, ``B = 2`` is planned feature-major on XLA:CPU."""
    assert _fast.plan("lstm", 2, 256, "cpu", 2, False).layout == "feature_major"
    assert _fast.plan("lstm", 2, 256, "gpu", 2, False).layout == "row_major"


def test_derivative_plan_must_save(x64):
    cell, params, xs, state = _setup("lstm")
    with pytest.raises(ValueError, match="derivative must be a Plan with saved=True"):
        forced(cell, Plan(), Plan())(params, xs[None], initial_state=None)


def test_vmap_of_scan_runs_the_batch_wide_loops():
    """``jax.vmap`` of a one-sequence scan reaches the time-major loops planned for the whole
    batch: at ``B = 16``, ``H = 256`` on a multi-core CPU the plan splits the hidden units into
    parts, whose feature-major ``[H/P, B]`` carries appear in the traced program."""
    if jax.default_backend() != "cpu" or _fast.cores() < 2:
        pytest.skip("the partitioned plan needs XLA:CPU and two cores")
    cell = rnnjax.lstm(256)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), 8))
    x = jax.ShapeDtypeStruct((16, 5, 8), jnp.float32)
    parts = _fast.plan("lstm", 16, 256, "cpu", _fast.cores(), False).parts
    assert parts > 1

    def vmapped(params, x):
        return jax.vmap(lambda xs: rnnjax.scan(cell, params, xs)[1])(x)

    text = str(jax.make_jaxpr(vmapped)(params, x))
    assert f"f32[{256 // parts},16]" in text
    one = jax.make_jaxpr(lambda p, xs: rnnjax.scan(cell, p, xs)[1])(params, jnp.zeros((5, 8)))
    assert f"f32[{256 // parts},16]" not in str(one)
