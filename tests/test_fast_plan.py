"""``rnnjax._fast.plan``: the truth table of the one place that picks the fast path's loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import rnnjax
from rnnjax._fast import THRESHOLDS, Plan, plan
from rnnjax._fast._plan import num_parts

# (kind, batch, hidden, backend, cores, differentiated) -> (layout, parts, unroll)
TRUTH = [
    # CPU, two cores: the LSTM's partitioned forward from B=16 and its storing forward to B=64.
    (("lstm", 16, 256, "cpu", 2, False), ("feature_major", 2, 1)),
    (("lstm", 16, 256, "cpu", 2, True), ("feature_major", 2, 1)),
    (("lstm", 64, 256, "cpu", 2, False), ("row_major", 2, 1)),
    (("lstm", 64, 256, "cpu", 2, True), ("row_major", 2, 1)),
    (("lstm", 65, 256, "cpu", 2, True), ("row_major", 1, 1)),
    (("lstm", 512, 256, "cpu", 2, False), ("row_major", 2, 1)),
    (("lstm", 8, 256, "cpu", 2, False), ("feature_major", 1, 1)),
    (("lstm", 16, 128, "cpu", 2, False), ("row_major", 1, 1)),
    (("lstm", 16, 256, "cpu", 1, False), ("feature_major", 1, 1)),
    (("lstm", 1, 256, "cpu", 2, False), ("row_major", 1, 1)),  # B*H too small to matter
    (("lstm", 2, 256, "cpu", 2, True), ("feature_major", 1, 1)),
    (("lstm", None, 256, "cpu", 2, False), ("row_major", 1, 1)),  # one sequence
    # Seed-form GRU: forward in parts from B=8, derivative never.
    (("gru", 8, 256, "cpu", 2, False), ("feature_major", 2, 1)),
    (("gru", 8, 256, "cpu", 2, True), ("feature_major", 1, 1)),
    (("gru", 4, 256, "cpu", 2, False), ("feature_major", 1, 1)),
    # Reset-after GRU: 16 <= B <= 128 forward (unrolled 4), storing forward to B=32.
    (("gru_reset_after", 16, 256, "cpu", 2, False), ("feature_major", 2, 4)),
    (("gru_reset_after", 32, 256, "cpu", 2, True), ("feature_major", 2, 1)),
    (("gru_reset_after", 33, 256, "cpu", 2, True), ("row_major", 1, 1)),
    (("gru_reset_after", 128, 256, "cpu", 2, False), ("row_major", 2, 4)),
    (("gru_reset_after", 129, 256, "cpu", 2, False), ("row_major", 1, 1)),
    (("gru_reset_after", 8, 256, "cpu", 2, False), ("feature_major", 1, 1)),
    # The vanilla RNN has no partitioned loop.
    (("simple_rnn", 16, 256, "cpu", 2, False), ("feature_major", 1, 1)),
    # More cores: more parts, up to the table's maximum and a divisor of H.
    (("lstm", 64, 512, "cpu", 16, False), ("row_major", 8, 1)),
    (("lstm", 64, 96 * 4, "cpu", 3, False), ("row_major", 3, 1)),
    # GPU: no layout change, no parts, 8 steps per iteration.
    (("lstm", 16, 256, "gpu", 2, False), ("row_major", 1, 8)),
    (("gru_reset_after", 64, 256, "cuda", 2, True), ("row_major", 1, 8)),
    (("lstm", 16, 256, "tpu", 2, False), ("row_major", 1, 1)),
    # A cell with no kernel record: the generic path's unroll only.
    ((None, 16, 256, "cpu", 2, False), ("row_major", 1, 1)),
    ((None, 16, 256, "gpu", 2, True), ("row_major", 1, 8)),
]


@pytest.mark.parametrize(("args", "expected"), TRUTH, ids=[str(a) for a, _ in TRUTH])
def test_plan_truth_table(args, expected):
    chosen = plan(*args)
    assert isinstance(chosen, Plan)
    assert (chosen.layout, chosen.parts, chosen.unroll) == expected
    assert chosen.saved == args[-1]


def test_plan_accepts_numpy_batch_sizes():
    assert plan("lstm", np.int64(16), 256, "cpu", 2, False) == plan(
        "lstm", 16, 256, "cpu", 2, False
    )


def test_symbolic_batch_is_never_compared():
    """A ``jax.export`` symbolic batch takes the path valid for any batch size (row-major, one
    part), whatever the hidden size, instead of raising InconclusiveDimensionOperation."""
    (batch,) = export.symbolic_shape("b")
    for hidden in (8, 256, 512):
        for differentiated in (False, True):
            assert plan("lstm", batch, hidden, "cpu", 2, differentiated)[:2] == ("row_major", 1)


def test_export_with_symbolic_batch_of_the_layer():
    """``jax.export`` of ``rnnjax.rnn(lstm).apply`` at ``"b, 10, 3"`` (issue 22's failing case,
    at a hidden size where the plan would compare the batch) serialises and runs at two sizes."""
    layer = rnnjax.rnn(rnnjax.lstm(256))
    params = layer.init(jax.random.key(0), (10, 3))
    shape = export.symbolic_shape("b, 10, 3")
    exported = export.export(jax.jit(layer.apply))(params, jax.ShapeDtypeStruct(shape, jnp.float32))
    for size in (2, 17):
        x = jax.random.normal(jax.random.key(size), (size, 10, 3))
        np.testing.assert_allclose(
            exported.call(params, x), layer.apply(params, x), rtol=2e-5, atol=2e-6
        )


def test_num_parts():
    assert [num_parts(h, 2) for h in (16, 63, 64, 96, 512)] == [1, 1, 2, 2, 2]
    assert [num_parts(h, 16) for h in (64, 96, 100, 512)] == [2, 3, 2, 8]
    assert num_parts(1024, 1) == 1


def test_every_threshold_has_a_reason():
    names = [row.name for row in THRESHOLDS]
    assert len(names) == len(set(names))
    for row in THRESHOLDS:
        assert row.reason and len(row.reason) <= 100, row
