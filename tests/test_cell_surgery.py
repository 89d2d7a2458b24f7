"""Cells changed with ``._replace`` run as their own functions say (``rnnjax.Cell``'s contract).

A built-in cell whose ``step``, ``project_inputs`` or ``recur`` was replaced loses its kernel record
and takes the generic path: its truth is its own ``step`` when only ``step`` was replaced, else
``recur(project_inputs(x))``. Each case is checked against a Python loop over the replaced cell's
own functions, under plain evaluation, ``jvp``, ``grad``, ``remat``, ``remat_chunk``, ``vmap``
and the batch layer ``rnnjax.rnn``.
"""

from functools import partial

import jax
import jax.numpy as jnp
import pytest

import rnnjax
from rnnjax import _fast
from tests.tolerances import assert_close

CELLS = {
    "lstm": rnnjax.lstm,
    "gru": rnnjax.gru,
    "gru_reset_after": partial(rnnjax.gru, reset_after=True),
    "simple_rnn": rnnjax.simple_rnn,
}


def _surgeries(cell):
    """The three replacements, each changing the numbers (so the built-in path would be wrong)."""
    return {
        "project_inputs": cell._replace(
            project_inputs=lambda p, x: 2.0 * cell.project_inputs(p, x)
        ),
        "recur": cell._replace(recur=lambda p, s, z: cell.recur(p, s, 0.5 * z - 0.1)),
        "step": cell._replace(step=lambda p, s, x: cell.step(p, s, jnp.sin(3.0 * x))),
    }


def _truth(changed, replaced):
    """One step of the replaced cell as its contract says."""
    if replaced == "step":
        return changed.step
    return lambda p, s, x: changed.recur(p, s, changed.project_inputs(p, x))


def _loop(changed, replaced, params, xs, state):
    step, ys = _truth(changed, replaced), []
    for x in xs:
        state, y = step(params, state, x)
        ys.append(y)
    return state, jnp.stack(ys) if ys else jnp.zeros((0, changed.hidden_size), xs.dtype)


def _loss(final_and_ys):
    final, ys = final_and_ys
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(final))


def _setup(name):
    cell = CELLS[name](3)
    key = jax.random.key(0)
    params = cell.init(key, 2)
    params = jax.tree_util.tree_map(
        lambda a: a + 0.3 * jax.random.normal(jax.random.fold_in(key, a.size), a.shape), params
    )
    xs = jax.random.normal(jax.random.fold_in(key, 1), (5, 2))
    state = jax.tree_util.tree_map(lambda s: s + 0.2, cell.initial_state((), xs.dtype))
    return cell, params, xs, state


@pytest.mark.parametrize("replaced", ["project_inputs", "recur", "step"])
@pytest.mark.parametrize(
    "name", ["lstm", "gru", pytest.param("gru_reset_after", marks=pytest.mark.slow),
             pytest.param("simple_rnn", marks=pytest.mark.slow)],
)  # fmt: skip
def test_replaced_cell_runs_its_own_functions(x64, name, replaced):
    cell, params, xs, state = _setup(name)
    changed = _surgeries(cell)[replaced]
    assert _fast.record(cell) is cell.kernels and _fast.record(changed) is None
    expected = _loop(changed, replaced, params, xs, state)
    expected_grad = jax.grad(lambda p: _loss(_loop(changed, replaced, p, xs, state)))(params)
    tangent = jax.tree_util.tree_map(jnp.ones_like, params)
    expected_jvp = jax.jvp(lambda p: _loop(changed, replaced, p, xs, state), (params,), (tangent,))
    for options in ({}, {"remat": True}, {"remat_chunk": 2}):

        def run(p, options=options):
            return rnnjax.scan(changed, p, xs, initial_state=state, **options)

        jax.tree_util.tree_map(assert_close, run(params), expected)
        jax.tree_util.tree_map(
            assert_close, jax.grad(lambda p: _loss(run(p)))(params), expected_grad
        )
        jax.tree_util.tree_map(assert_close, jax.jvp(run, (params,), (tangent,)), expected_jvp)


@pytest.mark.parametrize("replaced", ["project_inputs", "recur", "step"])
def test_replaced_cell_in_the_batch_layer_and_under_vmap(x64, replaced):
    cell, params, _, _ = _setup("lstm")
    changed = _surgeries(cell)[replaced]
    x = jax.random.normal(jax.random.key(4), (3, 5, 2))
    lengths = jnp.array([5, 2, 0])
    layer = rnnjax.rnn(changed, return_sequences=True, return_state=True)

    def looped(p):
        def one(xs, length):
            state, ys = _loop(
                changed, replaced, p, xs[:length], changed.initial_state((), xs.dtype)
            )
            return state, jnp.concatenate([ys, jnp.zeros((5 - length, 3))])

        results = [one(x[b], int(lengths[b])) for b in range(3)]
        final = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *[r[0] for r in results])
        return final, jnp.stack([r[1] for r in results])

    expected = looped(params)
    expected_grad = jax.grad(lambda p: _loss(looped(p)))(params)
    ys, final = layer.apply(params, x, lengths)
    jax.tree_util.tree_map(assert_close, (final, ys), expected)
    grad = jax.grad(lambda p: _loss(layer.apply(p, x, lengths)[::-1]))(params)
    jax.tree_util.tree_map(assert_close, grad, expected_grad)

    def vmapped(p):
        return jax.vmap(lambda xs, n: rnnjax.scan(changed, p, xs, length=n))(x, lengths)

    jax.tree_util.tree_map(assert_close, vmapped(params), expected)
    jax.tree_util.tree_map(
        assert_close, jax.grad(lambda p: _loss(vmapped(p)))(params), expected_grad
    )


def test_issue_quoted_project_inputs_case_is_consistent(x64):
    """Issue 20: plain evaluation, ``jvp`` and ``remat`` of a doubled ``project_inputs`` agree."""
    cell = rnnjax.lstm(8)
    params = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (6, 3))
    changed = cell._replace(project_inputs=lambda p, x: 2.0 * cell.project_inputs(p, x))
    plain = rnnjax.scan(changed, params, xs)[1].sum()
    under_jvp = jax.jvp(lambda p: rnnjax.scan(changed, p, xs)[1].sum(), (params,), (params,))[0]
    rematted = rnnjax.scan(changed, params, xs, remat=True)[1].sum()
    expected = _loop(changed, "project_inputs", params, xs, cell.initial_state((), xs.dtype))[
        1
    ].sum()
    for value in (plain, under_jvp, rematted):
        assert_close(value, expected)


def test_user_cells_take_the_generic_path():
    cell = rnnjax.lstm(4)
    assert _fast.record(cell) is not None
    assert _fast.record(cell._replace(kernels=None)) is None
    mine = rnnjax.Cell(*cell[:9])  # a cell built by hand: no record
    assert mine.kernels is None and _fast.record(mine) is None
    params = cell.init(jax.random.key(0), 2)
    xs = jnp.ones((4, 2))
    assert_close(rnnjax.scan(mine, params, xs)[1], rnnjax.scan(cell, params, xs)[1])


OTHER_CELLS = {
    "lru": rnnjax.lru,
    "rg_lru": rnnjax.rg_lru,
    "min_gru": rnnjax.min_gru,
    "min_lstm": rnnjax.min_lstm,
    "layer_norm_gru": rnnjax.layer_norm_gru,
    "layer_norm_lstm": rnnjax.layer_norm_lstm,
}


@pytest.mark.parametrize("replaced", ["project_inputs", "recur", "step"])
@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.slow) if name.startswith(("layer_norm", "min_lstm"))
     else name for name in OTHER_CELLS],
)  # fmt: skip
def test_every_built_in_cell_honours_its_replaced_functions(x64, name, replaced):
    """The cells outside the fast path too: a replaced ``step`` was once silently ignored."""
    cell = OTHER_CELLS[name](3)
    key = jax.random.key(0)
    params = cell.init(key, 2)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (5, 2))
    state = cell.initial_state((), xs.dtype)
    changed = _surgeries(cell)[replaced]
    expected = _loop(changed, replaced, params, xs, state)
    unchanged = _loop(cell, "step", params, xs, state)
    assert not jnp.allclose(expected[1], unchanged[1])  # the surgery changes the numbers
    jax.tree_util.tree_map(assert_close, rnnjax.scan(changed, params, xs), expected)
    expected_grad = jax.grad(lambda p: _loss(_loop(changed, replaced, p, xs, state)))(params)
    grad = jax.grad(lambda p: _loss(rnnjax.scan(changed, p, xs)))(params)
    jax.tree_util.tree_map(assert_close, grad, expected_grad)


@pytest.mark.parametrize(
    ("name", "solver"),
    [("min_gru", rnnjax.parallel_minimal_scan), ("lru", rnnjax.parallel_linear_scan),
     ("rg_lru", rnnjax.parallel_linear_scan)],
)  # fmt: skip
@pytest.mark.parametrize("replaced", ["recur", "step"])
def test_closed_form_scans_refuse_a_replaced_recurrence(name, solver, replaced):
    cell = OTHER_CELLS[name](3)
    params = cell.init(jax.random.key(0), 2)
    changed = _surgeries(cell)[replaced]
    with pytest.raises(ValueError, match=r"closed form, but this cell's step or recur was"):
        solver(changed, params, jnp.ones((4, 2)))
    solver(cell, params, jnp.ones((4, 2)))  # the built-in cell still runs
