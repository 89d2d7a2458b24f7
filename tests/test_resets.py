"""Resets inside a sequence: ``rnnjax.scan(..., resets=bool[T])`` and the layers' ``resets=[B, T]``.

``resets[t]`` starts a new segment at step ``t``: the result equals running each segment on its
own from the initial state (values and gradients), forward and reversed, with lengths, on the
generic path, the fused path and the forced partitioned and feature-major loops.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax._fast import Plan
from tests.test_fused import _plain, forced
from tests.tolerances import assert_close

CELLS = {
    "lstm": rnnjax.lstm,
    "gru": rnnjax.gru,
    "gru_reset_after": partial(rnnjax.gru, reset_after=True),
    "simple_rnn": rnnjax.simple_rnn,
}
STEPS, STARTS = 9, (3, 4, 7)


def _segments(cell, params, xs, state, starts, reverse, length=None):
    """Each segment run on its own (``rnnjax.scan`` without resets); padding past ``length``."""
    length = xs.shape[0] if length is None else length
    bounds = [0, *[s for s in starts if s < length], length]
    finals, ys = [], []
    for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
        final, y = rnnjax.scan(cell, params, xs[begin:end], initial_state=state, reverse=reverse)
        finals.append(final)
        ys.append(y)
    ys.append(jnp.zeros((xs.shape[0] - length, cell.hidden_size), xs.dtype))
    final = finals[0] if reverse else finals[-1]
    return final, jnp.concatenate(ys)


def _loss(final_and_ys):
    final, ys = final_and_ys
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(final))


def _setup(name, batch=None):
    cell = CELLS[name](4)
    key = jax.random.key(1)
    shape = (STEPS, 3) if batch is None else (batch, STEPS, 3)
    xs = jax.random.normal(jax.random.fold_in(key, 2), shape)  # float64 under the x64 fixture
    params = jax.tree_util.tree_map(
        lambda a: (a + 0.3 * jax.random.normal(jax.random.fold_in(key, a.size), a.shape)).astype(
            xs.dtype
        ),
        cell.init(key, 3),
    )
    state = jax.tree_util.tree_map(
        lambda s: s + 0.5, cell.initial_state(() if batch is None else (batch,), xs.dtype)
    )
    return cell, params, xs, state


def _resets(starts=STARTS):
    return jnp.zeros(STEPS, bool).at[jnp.array(starts)].set(True)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "name", ["lstm", "gru", pytest.param("gru_reset_after", marks=pytest.mark.slow),
             pytest.param("simple_rnn", marks=pytest.mark.slow)],
)  # fmt: skip
@pytest.mark.parametrize("path", ["fast", "generic", "remat"])
def test_scan_resets_equal_separate_segments(x64, name, path, reverse):
    cell, params, xs, state = _setup(name)
    run_cell = _plain(cell) if path == "generic" else cell
    options = {"remat": True} if path == "remat" else {}

    def run(p):
        return rnnjax.scan(run_cell, p, xs, initial_state=state, resets=_resets(), reverse=reverse,
                           **options)  # fmt: skip

    def separate(p):
        return _segments(cell, p, xs, state, STARTS, reverse)

    jax.tree_util.tree_map(assert_close, run(params), separate(params))
    jax.tree_util.tree_map(
        assert_close,
        jax.grad(lambda p: _loss(run(p)))(params),
        jax.grad(lambda p: _loss(separate(p)))(params),
    )
    # The initial state's gradient collects from every segment.
    grad_state = jax.grad(lambda s: _loss(rnnjax.scan(run_cell, params, xs, initial_state=s,
                                                      resets=_resets(), reverse=reverse)))(state)  # fmt: skip
    expected = jax.grad(lambda s: _loss(_segments(cell, params, xs, s, STARTS, reverse)))(state)
    jax.tree_util.tree_map(assert_close, grad_state, expected)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_resets_with_length_ignore_the_padding(x64, reverse):
    cell, params, xs, state = _setup("lstm")
    resets = _resets((3, 6, 8))  # 8 lies in the padding
    got = rnnjax.scan(
        cell, params, xs, initial_state=state, resets=resets, length=7, reverse=reverse
    )
    expected = _segments(cell, params, xs, state, (3, 6), reverse, length=7)
    jax.tree_util.tree_map(assert_close, got, expected)


PLANS = {
    "row_major": (Plan(), Plan(saved=True)),
    "feature_major": (Plan("feature_major"), Plan("feature_major", saved=True)),
    "partitioned": (Plan(parts=2), Plan(parts=2, saved=True)),
}


@pytest.mark.parametrize(
    ("name", "plan", "reverse"),
    [("lstm", "row_major", True), ("lstm", "feature_major", False), ("lstm", "partitioned", True),
     ("gru", "partitioned", False), ("gru_reset_after", "partitioned", True),
     pytest.param("gru_reset_after", "feature_major", True, marks=pytest.mark.slow),
     pytest.param("gru", "row_major", True, marks=pytest.mark.slow)],
)  # fmt: skip
def test_forced_loops_with_resets_equal_separate_segments(x64, name, plan, reverse):
    cell, params, x, state = _setup(name, batch=3)
    starts = [(3, 4, 7), (), (1,)]
    resets = jnp.stack([_resets(s) if s else jnp.zeros(STEPS, bool) for s in starts])
    lengths = jnp.array([9, 6, 4])
    apply = forced(cell, *PLANS[plan], reverse=reverse)

    def run(p):
        ys, final = apply(p, x, lengths, initial_state=state, resets=resets)
        return final, ys

    def separate(p):
        results = [
            _segments(
                cell,
                p,
                x[b],
                jax.tree_util.tree_map(lambda s, b=b: s[b], state),
                starts[b],
                reverse,
                length=int(lengths[b]),
            )  # fmt: skip
            for b in range(3)
        ]
        return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *results)

    jax.tree_util.tree_map(assert_close, run(params), separate(params))
    jax.tree_util.tree_map(
        assert_close,
        jax.grad(lambda p: _loss(run(p)))(params),
        jax.grad(lambda p: _loss(separate(p)))(params),
    )


def test_layers_take_resets():
    cell, params, x, _ = _setup("gru", batch=2)
    resets = jnp.zeros((2, STEPS), bool).at[0, 4].set(True)
    layer = rnnjax.rnn(cell, return_sequences=True)
    ys = layer.apply(params, x, resets=resets)
    expected = jnp.concatenate(
        [rnnjax.scan(cell, params, x[0, :4])[1], rnnjax.scan(cell, params, x[0, 4:])[1]]
    )
    assert_close(ys[0], expected)
    assert_close(ys[1], rnnjax.scan(cell, params, x[1])[1])
    both = rnnjax.bidirectional(cell, cell, return_sequences=True, merge=None)
    bi_params = both.init(jax.random.key(0), (STEPS, 3))
    forward, backward = both.apply(bi_params, x, resets=resets)
    first, second = (
        rnnjax.scan(cell, bi_params.backward, x[0, part], reverse=True)[1]
        for part in (slice(0, 4), slice(4, None))
    )
    assert_close(backward[0], jnp.concatenate([first, second]))
    stacked = rnnjax.stack([cell, cell], return_sequences=True)
    stack_params = stacked.init(jax.random.key(2), (STEPS, 3))
    out = stacked.apply(stack_params, x, resets=resets)
    segment = rnnjax.stack([cell, cell], return_sequences=True).apply(stack_params, x[:1, 4:])
    assert_close(out[0, 4:], segment[0])


def test_bad_resets_are_clear_errors():
    cell, params, xs, _ = _setup("lstm")
    with pytest.raises(TypeError, match="resets must have dtype bool"):
        rnnjax.scan(cell, params, xs, resets=jnp.zeros(STEPS, jnp.int32))
    with pytest.raises(ValueError, match=r"resets must have shape \(9,\); got \(8,\)"):
        rnnjax.scan(cell, params, xs, resets=jnp.zeros(8, bool))
    layer = rnnjax.rnn(cell)
    with pytest.raises(ValueError, match=r"resets must have shape \(2, 9\)"):
        layer.apply(params, jnp.stack([xs, xs]), resets=np.zeros((9,), bool))
