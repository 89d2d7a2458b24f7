"""``rnnjax.scan`` over the built-in ``rg_lru``: its ``project_inputs`` computes every gate.

The cell's ``project_inputs`` returns the coefficients ``[a_t, b_t]`` of ``h_t = a_t h_{t-1} + b_t``
for all steps at once and ``recur`` is only that update, so ``scan`` must still equal a Python loop
over ``cell.step`` (with ``length``, ``resets`` and ``reverse``, values and gradients), and a cell
changed with ``._replace`` must run as its own functions say, or raise: never a silently wrong
answer. The step itself is checked against a NumPy reading of Griffin in ``tests/test_lru.py``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax._rg_lru import rg_lru_coefficients

HIDDEN, INPUT, STEPS = 4, 3, 12
EXACT = {"rtol": 1e-12, "atol": 1e-12}


def _setup(seed=0):
    cell = rnnjax.rg_lru(HIDDEN, param_dtype=jnp.float64)
    keys = jax.random.split(jax.random.key(seed), 4)
    params = cell.init(keys[0], INPUT)
    params = params._replace(b=jax.random.normal(keys[1], params.b.shape, jnp.float64))
    xs = jax.random.normal(keys[2], (STEPS, INPUT), jnp.float64)
    state = rnnjax.RNNState(jax.random.normal(keys[3], (HIDDEN,), jnp.float64))
    return cell, params, xs, state


def _segment(step, params, state, xs, order):
    """Run ``step`` over ``xs[t]`` for ``t`` in ``order``: the final state and ``{t: y_t}``."""
    ys = {}
    for t in order:
        state, ys[t] = step(params, state, xs[t])
    return state, ys


def _loop(step, params, xs, state, length, resets, reverse):
    """``scan``'s documented semantics, one Python step at a time: each segment (split where
    ``resets`` is set) of the valid prefix runs on its own from ``state``, in reverse if asked;
    outputs past ``length`` are zeros and the final state is the last one computed."""
    length = xs.shape[0] if length is None else length
    starts = [0] + [t for t in range(1, length) if resets is not None and resets[t]]
    bounds = list(zip(starts, starts[1:] + [length], strict=True)) if length else []
    final, ys = state, np.zeros((xs.shape[0], HIDDEN))
    for lo, hi in reversed(bounds) if reverse else bounds:
        order = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
        final, outputs = _segment(step, params, state, xs, order)
        for t, y in outputs.items():
            ys[t] = np.asarray(y)
    return final, ys


CASES = {
    "plain": (None, None, False),
    "reverse": (None, None, True),
    "length": (8, None, False),
    "length_zero": (0, None, False),
    "resets": (None, (0, 3, 4, 9), False),
    "resets_reverse": (None, (0, 3, 4, 9), True),
    "length_resets_reverse": (9, (2, 5, 10), True),
}


@pytest.mark.parametrize("case", CASES)
def test_scan_equals_a_loop_over_step(case, x64):
    length, reset_steps, reverse = CASES[case]
    cell, params, xs, state = _setup()
    resets = None
    if reset_steps is not None:
        resets = jnp.zeros(STEPS, bool).at[jnp.array(reset_steps)].set(True)
    run = functools.partial(rnnjax.scan, cell, initial_state=state, reverse=reverse)
    final, ys = jax.jit(lambda p, x: run(p, x, length=length, resets=resets))(params, xs)
    want_final, want_ys = _loop(jax.jit(cell.step), params, xs, state, length, resets, reverse)
    np.testing.assert_allclose(ys, want_ys, **EXACT)
    np.testing.assert_allclose(final.h, want_final.h, **EXACT)


def test_scan_gradients_equal_the_step_loop(x64):
    cell, params, xs, state = _setup(1)
    resets = jnp.zeros(STEPS, bool).at[5].set(True)

    def loss(runner, params, xs, state):
        final, ys = runner(params, xs, state)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h**2)

    def scanned(params, xs, state):
        return rnnjax.scan(cell, params, xs, initial_state=state, length=10, resets=resets)

    def looped(params, xs, state):
        final, ys = state, []
        for t in range(STEPS):
            entering = state if t == 5 else final
            new, y = cell.step(params, entering, xs[t])
            final, ys = (new, [*ys, y]) if t < 10 else (final, [*ys, jnp.zeros_like(y)])
        return final, jnp.stack(ys)

    grads = jax.grad(functools.partial(loss, scanned), argnums=(0, 1, 2))(params, xs, state)
    want = jax.grad(functools.partial(loss, looped), argnums=(0, 1, 2))(params, xs, state)
    for leaf, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(leaf, expected, **EXACT)


def test_project_inputs_is_the_coefficients(x64):
    cell, params, xs, _ = _setup(2)
    projected = cell.project_inputs(params, xs)
    assert projected.shape == (STEPS, 2 * HIDDEN)
    a, b = rg_lru_coefficients(params, xs @ params.w_x + params.b[None])
    np.testing.assert_allclose(projected, np.concatenate([a, b], -1), **EXACT)
    split = rg_lru_coefficients(params, projected)  # the cell's output is split, not recomputed
    for leaf, expected in zip(split, (a, b), strict=True):
        np.testing.assert_allclose(leaf, expected, rtol=0, atol=0)


def test_coefficients_reject_other_widths(x64):
    _, params, xs, _ = _setup()
    with pytest.raises(ValueError, match=r"projected must have shape \(\.\.\., 12\).*\(12, 5\)"):
        rg_lru_coefficients(params, jnp.ones((12, 5)))


def _surgeries(cell):
    """Each replacement changes the numbers, so running the built-in functions would be wrong."""
    return {
        "project_inputs": cell._replace(
            project_inputs=lambda p, x: 0.5 * cell.project_inputs(p, x) + 0.25
        ),
        "recur": cell._replace(recur=lambda p, s, z: cell.recur(p, s, 0.5 * z - 0.1)),
        "step": cell._replace(step=lambda p, s, x: cell.step(p, s, jnp.sin(3.0 * x))),
    }


@pytest.mark.parametrize("replaced", ["project_inputs", "recur", "step"])
def test_replaced_functions_are_honoured(replaced, x64):
    cell, params, xs, state = _setup(3)
    changed = _surgeries(cell)[replaced]
    if replaced == "step":
        truth = changed.step
    else:
        truth = lambda p, s, x: changed.recur(p, s, changed.project_inputs(p, x))  # noqa: E731
    resets = jnp.zeros(STEPS, bool).at[6].set(True)
    final, ys = rnnjax.scan(changed, params, xs, initial_state=state, length=10, resets=resets)
    want_final, want_ys = _loop(truth, params, xs, state, 10, resets, False)
    np.testing.assert_allclose(ys, want_ys, **EXACT)
    np.testing.assert_allclose(final.h, want_final.h, **EXACT)
    built_in = rnnjax.scan(cell, params, xs, initial_state=state, length=10, resets=resets)[1]
    assert float(jnp.abs(built_in - ys).max()) > 1e-3  # the change is visible


def test_replaced_project_inputs_reaches_parallel_linear_scan(x64):
    cell, params, xs, state = _setup(4)
    changed = _surgeries(cell)["project_inputs"]
    _, ys = rnnjax.scan(changed, params, xs, initial_state=state)
    _, p_ys = rnnjax.parallel_linear_scan(changed, params, xs, initial_state=state)
    np.testing.assert_allclose(p_ys, ys, rtol=1e-10, atol=1e-10)


def test_gate_preactivations_in_place_of_coefficients_raise(x64):
    """A ``project_inputs`` still returning ``x W_x + b`` ``[..., 3H]`` is refused by ``recur``."""
    cell, params, xs, _ = _setup()
    changed = cell._replace(project_inputs=lambda p, x: x @ p.w_x + p.b[None])
    with pytest.raises(ValueError, match=r"projected must be \[a_t, b_t\] of shape \(\.\.\., 8\)"):
        rnnjax.scan(changed, params, xs)
