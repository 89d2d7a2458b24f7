"""The hidden-partitioned forward loop (``rnnjax._partitioned``) against the plain scan.

``rnnjax.rnn`` evaluated without differentiation runs the LSTM (``B >= 16``), the seed-form GRU
(``B >= 8``) and the reset-after GRU (``16 <= B <= 128``) through this loop on XLA:CPU
(``H >= 256``, two or more cores); differentiated, the LSTM (``B <= 64``) and the reset-after
GRU (``B <= 32``) run the derivative's forward through it too, storing what the backward loop
reads. The oracle is the step-by-step path (the same cell with ``recur`` wrapped, so neither
fused nor partitioned), vmapped over the batch; the part count is forced to 2-4 and every cell
made to store through the loop, so that every split is exercised on any machine.
"""

import contextlib
from functools import partial

import jax
import jax.numpy as jnp
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax import _partitioned
from tests.test_fused import _plain
from tests.tolerances import assert_close


@pytest.fixture
def parts(monkeypatch):
    """Force ``P`` parts and lift the minimum sizes, so small test sizes take the loop."""

    def force(count):
        # Any backend: the loop's numerics are tested on a GPU too (it runs only on CPU).
        monkeypatch.setattr(_partitioned, "_BACKENDS", (jax.default_backend(),))
        monkeypatch.setattr(
            _partitioned, "_BATCHES", {kind: (1, None) for kind in _partitioned._BATCHES}
        )
        monkeypatch.setattr(_partitioned, "_MIN_HIDDEN", 1)
        monkeypatch.setattr(
            _partitioned, "_SAVING_BATCHES", {kind: 10**9 for kind in _partitioned._BATCHES}
        )
        monkeypatch.setattr(_partitioned, "num_parts", lambda hidden: count)

    return force


@contextlib.contextmanager
def _taking_the_loop(*, saving: bool = False):
    """Fail unless the code run inside calls the partitioned forward (with ``saving``: as the
    derivative's forward, storing what the backward loop reads)."""
    calls, forward = [], _partitioned.forward

    def spy(*args, **kwargs):
        calls.append(kwargs.get("saved", False))
        return forward(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_partitioned, "forward", spy)
        yield
    assert calls, "the batch forward did not take the partitioned loop"
    assert not saving or any(calls), "the derivative's forward did not take the partitioned loop"


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
    """``(layer, plain, (params, x, initial_state), lengths)``: a 12-unit ``cell`` as a float64
    layer and its step-by-step twin, with perturbed params, a batch of 3 and a random state."""
    cell = cell(12)
    layer, plain = (
        rnnjax.rnn(core, return_sequences=True, return_state=True, reverse=reverse)
        for core in (cell, _plain(cell))
    )
    key = jax.random.key(count)
    params = _perturbed(layer.init(key, (5, 3)), key, jnp.float64)
    x = jax.random.normal(jax.random.fold_in(key, 1), (3, 5, 3), jnp.float64)
    state = jax.tree_util.tree_map(
        lambda s: s + jax.random.normal(jax.random.fold_in(key, 2), s.shape, s.dtype),
        cell.initial_state((3,), jnp.float64),
    )
    return layer, plain, (params, x, state), None if lengths is None else jnp.array(lengths)


def _sequence_loss(layer, lengths):
    """``loss(params, x, state)`` reading every output and the final state: ``sum(sin(ys))``
    plus the squares of the final state."""

    def loss(params, x, state):
        ys, final = layer.apply(params, x, lengths, initial_state=state)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(s**2) for s in jax.tree_util.tree_leaves(final))

    return loss


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize(
    ("lengths", "reverse"), [(None, False), ((5, 2, 0), False), ((5, 3, 1), True)]
)
def test_partitioned_forward_equals_plain_scan(x64, parts, cell, count, lengths, reverse):
    parts(count)
    layer, plain, (params, x, state), lengths = _problem(cell, count, lengths, reverse)
    with _taking_the_loop():
        ys, final = layer.apply(params, x, lengths, initial_state=state)
    ys_plain, final_plain = plain.apply(params, x, lengths, initial_state=state)
    assert_close(ys, ys_plain)
    jax.tree_util.tree_map(assert_close, final, final_plain)
    if lengths is not None:  # zero output past each length, state frozen there
        assert float(jnp.max(jnp.abs(ys[2, int(lengths[2]) :]))) == 0.0


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
@pytest.mark.parametrize(
    ("count", "lengths", "reverse"), [(2, None, False), (3, (5, 2, 0), False), (2, (5, 3, 1), True)]
)
def test_derivative_through_partitioned_forward_equals_plain(
    x64, parts, cell, count, lengths, reverse
):
    """Where the derivative's forward runs in parts too (``_partitioned.saves``), the value and
    the gradients for params, inputs and initial state equal plain autodiff's, and both modes
    pass ``check_grads``."""
    parts(count)
    layer, plain, args, lengths = _problem(cell, count, lengths, reverse)
    loss, plain_loss = _sequence_loss(layer, lengths), _sequence_loss(plain, lengths)
    with _taking_the_loop(saving=True):
        grads = jax.grad(loss, argnums=(0, 1, 2))(*args)
    jax.tree_util.tree_map(assert_close, grads, jax.grad(plain_loss, argnums=(0, 1, 2))(*args))
    check_grads(loss, args, order=1, modes=("fwd", "rev"))


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
def test_derivative_through_partitioned_forward_second_order(x64, parts, cell):
    """Second order through the parts (reversed, masked): it differentiates the storing loop."""
    parts(2)
    layer, _, args, lengths = _problem(cell, 2, (5, 3, 1), True)
    loss = _sequence_loss(layer, lengths)
    with _taking_the_loop(saving=True):
        jax.grad(loss)(*args)
    # eps 1e-5: at the default 1e-4 the finite differences of the seed GRU miss by 1.3e-5
    # relative, on the plain path as much as here.
    check_grads(loss, args, order=2, modes=("rev",), eps=1e-5)


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
def test_partitioned_forward_bfloat16_matmuls(parts, cell):
    """With ``dtype=bfloat16`` the loop casts each GEMM's operands as ``rnnjax._cells._dot``."""
    parts(2)
    cell = cell(16, dtype=jnp.bfloat16)
    layer, plain = (rnnjax.rnn(core, return_sequences=True) for core in (cell, _plain(cell)))
    key = jax.random.key(0)
    params = _perturbed(layer.init(key, (7, 4)), key, jnp.float32)  # nonzero biases
    x = jax.random.normal(jax.random.key(1), (2, 7, 4))
    with _taking_the_loop():
        ys = layer.apply(params, x)
    ys_plain = plain.apply(params, x)
    assert ys.dtype == ys_plain.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(ys - ys_plain))) < 2e-2

    def loss(layer):
        return lambda params: jnp.sum(jnp.sin(layer.apply(params, x)))

    with _taking_the_loop(saving=True):
        grads = jax.grad(loss(layer))(params)
    for leaf, leaf_plain in zip(
        jax.tree_util.tree_leaves(grads),
        jax.tree_util.tree_leaves(jax.grad(loss(plain))(params)),
        strict=True,
    ):
        assert leaf.dtype == leaf_plain.dtype == jnp.float32
        scale = float(jnp.max(jnp.abs(leaf_plain)))
        assert float(jnp.max(jnp.abs(leaf - leaf_plain))) < 3e-2 * max(scale, 1.0)


@pytest.mark.parametrize("cell", CELLS.values(), ids=CELLS)
def test_partitioned_forward_under_jit_and_vmap_of_layers(parts, cell):
    parts(2)
    cell = cell(8)
    layer, plain = (rnnjax.rnn(core, return_sequences=True) for core in (cell, _plain(cell)))
    key = jax.random.key(0)
    params = _perturbed(layer.init(key, (4, 3)), key, jnp.float32)
    x = jax.random.normal(jax.random.key(1), (5, 2, 4, 3))  # an outer batch of 5 batches
    with _taking_the_loop():
        ys = jax.jit(jax.vmap(layer.apply, in_axes=(None, 0)))(params, x)
    assert_close(ys, jax.vmap(plain.apply, in_axes=(None, 0))(params, x), dtype=jnp.float32)

    def loss(layer):
        return lambda params: jnp.sum(jnp.sin(jax.vmap(layer.apply, in_axes=(None, 0))(params, x)))

    with _taking_the_loop(saving=True):
        grads = jax.jit(jax.grad(loss(layer)))(params)
    jax.tree_util.tree_map(
        partial(assert_close, dtype=jnp.float32), grads, jax.grad(loss(plain))(params)
    )


def test_num_parts(monkeypatch):
    monkeypatch.setattr(_partitioned, "_cores", lambda: 2)
    assert [_partitioned.num_parts(h) for h in (16, 63, 64, 96, 512)] == [1, 1, 2, 2, 2]
    monkeypatch.setattr(_partitioned, "_cores", lambda: 16)
    assert [_partitioned.num_parts(h) for h in (64, 96, 100, 512)] == [2, 3, 2, 8]
    monkeypatch.setattr(_partitioned, "_cores", lambda: 1)
    assert _partitioned.num_parts(1024) == 1


def test_applies_to_time_major_batches_on_cpu_where_measured_faster(monkeypatch):
    monkeypatch.setattr(_partitioned, "_cores", lambda: 2)
    on_cpu = jax.default_backend() == "cpu"
    batch = jnp.zeros((4, 16, 3))
    assert _partitioned.applies("lstm", batch, 256) == on_cpu
    assert _partitioned.applies("gru", jnp.zeros((4, 8, 3)), 256) == on_cpu  # seed-form GRU
    assert _partitioned.applies("gru_reset_after", batch, 256) == on_cpu
    assert _partitioned.applies("gru_reset_after", jnp.zeros((4, 128, 3)), 256) == on_cpu
    assert not _partitioned.applies("gru_reset_after", jnp.zeros((4, 129, 3)), 256)  # too big
    assert not _partitioned.applies("gru_reset_after", jnp.zeros((4, 8, 3)), 256)
    assert _partitioned.applies("lstm", jnp.zeros((4, 512, 3)), 256) == on_cpu  # no upper bound
    assert not _partitioned.applies("simple_rnn", batch, 256)
    assert not _partitioned.applies("lstm", jnp.zeros((4, 8, 3)), 256)  # small batch
    assert not _partitioned.applies("lstm", batch, 128)  # small hidden size
    assert not _partitioned.applies("lstm", jnp.zeros((4, 3)), 256)  # one sequence
    monkeypatch.setattr(_partitioned, "_cores", lambda: 1)
    assert not _partitioned.applies("lstm", batch, 256)  # one part: nothing to overlap


def test_derivative_forward_saves_in_parts_where_measured_faster(monkeypatch):
    monkeypatch.setattr(_partitioned, "_cores", lambda: 2)
    on_cpu = jax.default_backend() == "cpu"
    assert _partitioned.saves("lstm", jnp.zeros((4, 64, 3)), 256) == on_cpu
    assert not _partitioned.saves("lstm", jnp.zeros((4, 65, 3)), 256)
    assert _partitioned.saves("gru_reset_after", jnp.zeros((4, 32, 3)), 256) == on_cpu
    assert not _partitioned.saves("gru_reset_after", jnp.zeros((4, 33, 3)), 256)
    assert not _partitioned.saves("gru", jnp.zeros((4, 16, 3)), 256)  # seed-form GRU: no gain
    assert not _partitioned.saves("lstm", jnp.zeros((4, 8, 3)), 256)  # where applies() is not
    assert not _partitioned.saves("lstm", jnp.zeros((4, 16, 3)), 128)


def test_reset_after_gru_forward_unrolls_by_default(parts, scan_unrolls):
    """``unroll=None``: the partitioned reset-after GRU forward unrolls its measured default
    (``_DEFAULT_UNROLL``), the derivative's loops keep the backend's default, and an explicit
    ``unroll`` reaches every loop (a spy on ``lax.scan``)."""
    from rnnjax import _checks

    parts(2)
    seen = scan_unrolls
    cell = rnnjax.gru(8, reset_after=True)
    x = jax.random.normal(jax.random.key(1), (3, 9, 4))
    for unroll, forward, derivative in (
        (None, _partitioned._DEFAULT_UNROLL["gru_reset_after"], _checks.unroll(None)),
        (2, 2, 2),
    ):
        layer = rnnjax.rnn(cell, return_sequences=True, unroll=unroll)
        params = layer.init(jax.random.key(0), x.shape[1:])
        seen.clear()
        with _taking_the_loop():
            layer.apply(params, x)
        # Last the partitioned loop; before it only the shape checks' trace of one sequence.
        assert seen[-1] == forward and set(seen[:-1]) <= {derivative}, (unroll, seen)
        seen.clear()
        with _taking_the_loop(saving=True):  # the derivative's forward: its loops' default
            jax.grad(lambda p, layer=layer: jnp.sum(layer.apply(p, x)))(params)
        assert seen and set(seen) == {derivative}, (unroll, seen)
    assert _partitioned._DEFAULT_UNROLL["gru_reset_after"] == 4
