"""``rnnjax.scan`` against a Python loop of steps and the NumPy oracle; lengths, reverse, remat."""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import rnnjax
from tests.oracles import numpy_cells as ref
from tests.tolerances import assert_close

CELLS = {
    "simple_rnn": rnnjax.simple_rnn,
    "lstm": rnnjax.lstm,
    "gru": rnnjax.gru,
    "gru_reset_after": partial(rnnjax.gru, reset_after=True),
}
# Hypothesis examples re-trace scan; keep shapes few so compiled programs are reused.
FAST = settings(max_examples=12, deadline=None)


def _setup(name, hidden=4, inputs=3, steps=7, seed=0, dtype=jnp.float32):
    cell = CELLS[name](hidden)
    key = jax.random.key(seed)
    params = cell.init(key, inputs)
    params = params._replace(b=0.3 * jax.random.normal(jax.random.fold_in(key, 5), params.b.shape))
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (steps, inputs), dtype)
    return cell, params, xs


_JITTED = {}


def _jitted_scan(cell):
    """One jitted scan per cell name, so hypothesis examples reuse compiled programs."""
    key = (cell.name, tuple(sorted((k, str(v)) for k, v in cell.config.items())))
    if key not in _JITTED:
        _JITTED[key] = jax.jit(partial(rnnjax.scan, cell), static_argnames=("reverse",))
    return _JITTED[key]


def _loop(cell, params, xs, state=None):
    state = cell.initial_state((), xs.dtype) if state is None else state
    ys = []
    for x in xs:
        state, y = cell.step(params, state, x)
        ys.append(y)
    return state, jnp.stack(ys)


@pytest.mark.parametrize("name", CELLS)
def test_scan_equals_python_loop_of_steps(name):
    cell, params, xs = _setup(name)
    state, ys = rnnjax.scan(cell, params, xs)
    loop_state, loop_ys = _loop(cell, params, xs)
    assert_close(ys, loop_ys)
    jax.tree_util.tree_map(assert_close, state, loop_state)


def test_scan_float64_matches_numpy_reference(x64):
    cell, params, xs = _setup("lstm", hidden=5, inputs=2, steps=12, dtype=jnp.float64)
    state, ys = rnnjax.scan(cell, params, xs)
    states = ref.run(lambda s, x: ref.lstm_step(params, s[0], s[1], x), (np.zeros(5),) * 2, xs)
    assert ys.dtype == jnp.float64
    assert_close(ys, np.stack([s[0] for s in states]))
    assert_close(state.c, states[-1][1])


@pytest.mark.parametrize("name", CELLS)
def test_scan_gradients_order_two(x64, name):
    cell, params, xs = _setup(name, hidden=3, inputs=2, steps=4, dtype=jnp.float64)
    state = jax.tree_util.tree_map(lambda s: s + 0.1, cell.initial_state((), jnp.float64))

    @jax.jit
    def f(params, xs, state):
        final, ys = rnnjax.scan(cell, params, xs, initial_state=state, length=3)
        return final, ys

    check_grads(f, (params, xs, state), order=2, modes=("fwd", "rev"))


def test_bptt_gradient_equals_python_loop_gradient():
    cell, params, xs = _setup("gru", steps=10)

    def loss_scan(p):
        return jnp.sum(rnnjax.scan(cell, p, xs)[1] ** 2)

    def loss_loop(p):
        return jnp.sum(_loop(cell, p, xs)[1] ** 2)

    jax.tree_util.tree_map(
        partial(assert_close, scale=10), jax.grad(loss_scan)(params), jax.grad(loss_loop)(params)
    )


@pytest.mark.parametrize(
    "option", [{"remat": True}, {"unroll": 3}, {"unroll": True}, {"unroll": 8}]
)
def test_remat_and_unroll_change_nothing(option):
    cell, params, xs = _setup("lstm", steps=9)

    def loss(p, **kw):
        final, ys = rnnjax.scan(cell, p, xs, length=7, **kw)
        return jnp.sum(ys) + jnp.sum(final.c)

    assert_close(loss(params, **option), loss(params))
    jax.tree_util.tree_map(
        assert_close, jax.grad(partial(loss, **option))(params), jax.grad(loss)(params)
    )


@pytest.mark.parametrize("name", CELLS)
@FAST
@given(length=st.integers(0, 6), pad=st.integers(1, 4), reverse=st.booleans())
def test_padded_with_length_equals_unpadded(name, length, pad, reverse):
    cell, params, xs = _setup(name, steps=10)
    scan = _jitted_scan(cell)
    xs_valid = xs[:length]
    padded = jnp.concatenate([xs_valid, 7.0 * jnp.ones((pad + 6 - length, xs.shape[1]))])
    state, ys = scan(params, padded, length=jnp.int32(length), reverse=reverse)
    if length == 0:
        jax.tree_util.tree_map(assert_close, state, cell.initial_state())
    else:
        want_state, want_ys = scan(params, xs_valid, reverse=reverse)
        assert_close(ys[:length], want_ys)
        jax.tree_util.tree_map(assert_close, state, want_state)
    np.testing.assert_array_equal(ys[length:], 0.0)


@pytest.mark.parametrize("name", ["lstm", "gru"])
@FAST
@given(length=st.integers(1, 8))
def test_reverse_equals_forward_on_the_flipped_valid_prefix(name, length):
    cell, params, xs = _setup(name, steps=8)
    scan = _jitted_scan(cell)
    state, ys = scan(params, xs, length=jnp.int32(length), reverse=True)
    flip_state, flip_ys = scan(params, xs[:length][::-1])
    assert_close(ys[:length][::-1], flip_ys)
    jax.tree_util.tree_map(assert_close, state, flip_state)


def test_reverse_of_reverse_is_identity():
    cell, params, xs = _setup("lstm", steps=6)
    _, ys = rnnjax.scan(cell, params, xs)
    _, twice = rnnjax.scan(cell, params, xs[::-1], reverse=True)
    assert_close(twice[::-1], ys)


@jax.jit
def _vmapped_lstm_scan(params, xs, lengths):
    return jax.vmap(lambda x, n: rnnjax.scan(rnnjax.lstm(4), params, x, length=n))(xs, lengths)


@FAST
@given(lengths=st.lists(st.integers(0, 6), min_size=4, max_size=4))
def test_vmap_equals_loop_over_examples(lengths):
    cell, params, _ = _setup("lstm")
    xs = jax.random.normal(jax.random.key(sum(lengths)), (4, 6, 3))
    lengths = jnp.array(lengths)
    states, ys = _vmapped_lstm_scan(params, xs, lengths)
    scan = _jitted_scan(cell)
    for b in range(len(lengths)):
        state_b, ys_b = scan(params, xs[b], length=lengths[b])
        assert_close(ys[b], ys_b)
        jax.tree_util.tree_map(lambda a, w, b=b: assert_close(a[b], w), states, state_b)


def test_jit_with_traced_length_and_initial_state():
    cell, params, xs = _setup("gru")
    scan = jax.jit(partial(rnnjax.scan, cell), static_argnames=("reverse",))
    init = rnnjax.RNNState(jnp.full((4,), 0.5))
    state, ys = scan(params, xs, initial_state=init, length=jnp.int32(4))
    want_state, want_ys = _loop(cell, params, xs[:4], init)
    assert_close(ys[:4], want_ys)
    assert_close(state.h, want_state.h)


def test_nan_padding_does_not_reach_gradients():
    cell, params, xs = _setup("lstm", steps=6)
    padded = xs.at[4:].set(jnp.nan)

    def loss(p, x):
        final, ys = rnnjax.scan(cell, p, x, length=4)
        return jnp.sum(ys) + jnp.sum(final.h)

    grads = jax.grad(loss, argnums=(0, 1))(params, padded)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    clean = jax.grad(loss)(params, xs)
    jax.tree_util.tree_map(assert_close, grads[0], clean)


def test_empty_sequence_returns_initial_state():
    cell, params, _ = _setup("lstm")
    state, ys = rnnjax.scan(cell, params, jnp.zeros((0, 3)))
    assert ys.shape == (0, 4)
    np.testing.assert_array_equal(state.h, 0.0)


class TestBadInput:
    cell, params, xs = _setup("lstm")

    def test_batched_xs(self):
        with pytest.raises(ValueError, match=r"xs must have rank 2.*got shape \(2, 7, 3\)"):
            rnnjax.scan(self.cell, self.params, jnp.stack([self.xs, self.xs]))

    def test_wrong_features(self):
        with pytest.raises(ValueError, match=r"input_size=3.*got shape \(7, 2\)"):
            rnnjax.scan(self.cell, self.params, self.xs[:, :2])

    def test_integer_xs(self):
        with pytest.raises(TypeError, match="xs must have a floating-point dtype"):
            rnnjax.scan(self.cell, self.params, jnp.ones((7, 3), jnp.int32))

    def test_not_a_cell(self):
        with pytest.raises(TypeError, match="cell must be an rnnjax Cell"):
            rnnjax.scan(lambda s, x: (s, x), self.params, self.xs)

    def test_length_out_of_range(self):
        with pytest.raises(ValueError, match=r"length must lie in \[0, 7\].*\[8, 8\]"):
            rnnjax.scan(self.cell, self.params, self.xs, length=8)

    def test_length_not_scalar(self):
        with pytest.raises(ValueError, match=r"length must have shape \(\).*got shape \(2,\)"):
            rnnjax.scan(self.cell, self.params, self.xs, length=jnp.array([3, 4]))

    def test_length_float(self):
        with pytest.raises(TypeError, match="length must have an integer dtype; got dtype float32"):
            rnnjax.scan(self.cell, self.params, self.xs, length=jnp.float32(3))

    def test_batched_initial_state(self):
        state = self.cell.initial_state((2,))
        with pytest.raises(
            ValueError, match=r"initial_state leaves must have shape \(4,\).*\(2, 4\)"
        ):
            rnnjax.scan(self.cell, self.params, self.xs, initial_state=state)


class ScanVariantsTest(chex.TestCase):
    """The same scan under chex's with/without-jit variants gives the same numbers."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_scan_with_and_without_jit(self):
        cell, params, xs = _setup("lstm")
        scan = self.variant(lambda p, x, n: rnnjax.scan(cell, p, x, length=n))
        state, ys = scan(params, xs, jnp.int32(5))
        loop_state, loop_ys = _loop(cell, params, xs[:5])
        assert_close(ys[:5], loop_ys)
        assert_close(state.c, loop_state.c)


def test_bfloat16_scan_smoke():
    cell, params, xs = _setup("gru", steps=20)
    fast = rnnjax.gru(4, dtype=jnp.bfloat16)
    state, ys = rnnjax.scan(fast, params, xs)
    _, exact = rnnjax.scan(cell, params, xs)
    assert ys.dtype == jnp.float32 and state.h.dtype == jnp.float32
    np.testing.assert_allclose(ys, exact, atol=5e-2)
    bf16_params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    state, ys = rnnjax.scan(cell, bf16_params, xs.astype(jnp.bfloat16))
    assert ys.dtype == jnp.bfloat16
    np.testing.assert_allclose(ys.astype(jnp.float32), exact, atol=1e-1)


def test_initial_state_of_another_cell_is_rejected():
    cell, params, xs = _setup("lstm")
    with pytest.raises(
        ValueError, match="initial_state must have the structure.*LSTMState.*RNNState"
    ):
        rnnjax.scan(cell, params, xs, initial_state=rnnjax.RNNState(jnp.zeros(4)))


@pytest.mark.parametrize(
    "chunk,length,reverse", [(3, None, False), (4, None, True), (3, 5, False), (2, 6, True)]
)
def test_chunked_remat_changes_nothing(chunk, length, reverse):
    cell, params, xs = _setup("lstm", steps=9)  # 9 steps: chunks of 3 fit, of 2 and 4 do not

    def loss(p, x, **kw):
        final, ys = rnnjax.scan(cell, p, x, length=length, reverse=reverse, **kw)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.c), ys

    (value, ys), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        params, xs, remat_chunk=chunk
    )
    (want_value, want_ys), want_grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        params, xs
    )
    assert ys.shape == (9, 4)
    assert_close(ys, want_ys)
    assert_close(value, want_value)
    jax.tree_util.tree_map(assert_close, grads, want_grads)


def test_chunked_remat_rejects_bad_chunk():
    cell, params, xs = _setup("gru")
    with pytest.raises(ValueError, match="remat_chunk must be a positive int or None; got 0"):
        rnnjax.scan(cell, params, xs, remat_chunk=0)


def test_remat_chunk_keeps_no_per_step_projection():
    """With ``remat_chunk`` each checkpointed chunk projects its own inputs, so the compiled
    gradient holds neither the ``[T, 4H]`` projection nor its cotangent: its temporaries fall
    well below the unchunked ``remat`` path's (XLA's own memory analysis, not a timing)."""
    cell = rnnjax.lstm(32)
    params = cell.init(jax.random.key(0), 8)
    xs = jnp.ones((2048, 8))

    def temp_bytes(**options):
        def loss(params):
            return jnp.sum(rnnjax.scan(cell, params, xs, **options)[0].h)

        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    projection_bytes = 2048 * 4 * 32 * 4
    chunked, remat = temp_bytes(remat_chunk=45), temp_bytes(remat=True)
    assert chunked < projection_bytes < remat


def test_unroll_default_is_chosen_per_backend(monkeypatch, scan_unrolls):
    """``unroll=None`` (the default): the plan's 8 steps per iteration on a GPU, 1 elsewhere; the
    loop really gets it (a spy on ``lax.scan``), in ``rnnjax.scan`` and in the batched layers."""
    from rnnjax import _fast

    seen = scan_unrolls
    cell, params, xs = _setup("lstm", steps=9)
    layer = rnnjax.rnn(cell, return_sequences=True)
    for backend, expected in (("gpu", 8), ("cuda", 8), ("cpu", 1), ("tpu", 1)):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert _fast.default_unroll(backend) == expected
        seen.clear()
        rnnjax.scan(cell, params, xs)
        layer.apply(params, xs[None])
        assert seen and set(seen) == {expected}, (backend, seen)


@pytest.mark.parametrize("unroll", [0, -2, 2.5, "8"])
def test_bad_unroll_is_a_clear_error(unroll):
    cell, params, xs = _setup("gru", steps=4)
    with pytest.raises(ValueError, match=r"unroll must be a positive int.*got"):
        rnnjax.scan(cell, params, xs, unroll=unroll)
    # Layers fail when built, before any data.
    for build in (
        lambda: rnnjax.rnn(cell, unroll=unroll),
        lambda: rnnjax.bidirectional(cell, cell, unroll=unroll),
        lambda: rnnjax.stack([cell, cell], unroll=unroll),
    ):
        with pytest.raises(ValueError, match=r"unroll must be a positive int"):
            build()


def test_unroll_accepts_numpy_ints_and_bools():
    from rnnjax import _checks

    assert _checks.unroll(np.int64(4)) == 4 and type(_checks.unroll(np.int64(4))) is int
    assert _checks.unroll(np.bool_(True)) is True and _checks.unroll(False) is False
    assert _checks.unroll(None) is None  # the plan picks it
