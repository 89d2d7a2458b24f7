"""``make_train_step`` steps take ``example_mask``: per-example losses averaged over the mask, so
``data_parallel(make_train_step(...), remainder="pad")`` equals the unpadded step (1 device
here, 8 simulated devices in a subprocess)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import distributed, train
from tests.multidevice import EIGHT, run_multidevice_cases
from tests.tolerances import assert_close

multidevice = pytest.mark.skipif(
    not EIGHT, reason="needs 8 devices; test_eight_simulated_devices_in_subprocess runs it"
)
MODEL = rnnjax.dense(1)  # the step, not the model, is under test: keep compiling cheap
OPTIMIZER = optax.adam(1e-2)


def per_example(params, batch, key):
    """Squared error per example ``[B]``, and the absolute error as a per-example metric."""
    error = MODEL.apply(params, batch["x"])[:, 0] - batch["y"]
    return error**2, {"mae": jnp.abs(error)}


def mean_loss(params, batch, key):
    loss, metrics = per_example(params, batch, key)
    return jnp.mean(loss), {"mae": jnp.mean(metrics["mae"])}


def make_batch(size, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(size, 6)).astype(np.float32),
        "y": rng.normal(size=(size,)).astype(np.float32),
    }


def initial_state():
    return train.TrainState.create(MODEL.init(jax.random.key(0), (6,)), OPTIMIZER)


def reference(batch):
    """The plain step of the batch's mean loss (no mask)."""
    step = train.make_train_step(mean_loss, OPTIMIZER, has_aux=True)
    return step(initial_state(), batch, jax.random.key(1))


def assert_same_step(actual, expected, scale=1):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert_close(np.asarray(a), np.asarray(e), dtype=np.float32, scale=scale)


def test_per_example_losses_are_averaged():
    step = train.make_train_step(per_example, OPTIMIZER, has_aux=True)
    assert_same_step(
        step(initial_state(), make_batch(6), jax.random.key(1)), reference(make_batch(6))
    )


def test_masked_rows_change_nothing():
    batch, padded = make_batch(5), make_batch(8)
    padded = jax.tree.map(lambda p, b: np.concatenate([b, p[5:]]), padded, batch)  # rows 5-7 junk
    mask = jnp.arange(8) < 5
    step = train.make_train_step(per_example, OPTIMIZER, has_aux=True)
    assert_same_step(
        step(initial_state(), padded, jax.random.key(1), example_mask=mask), reference(batch)
    )


def test_a_loss_that_takes_the_mask_gets_it():
    seen = []

    def loss_fn(params, batch, key, example_mask=None):
        seen.append(example_mask)
        errors = (MODEL.apply(params, batch["x"])[:, 0] - batch["y"]) ** 2
        weights = example_mask.astype(errors.dtype)
        return jnp.sum(weights * errors) / jnp.sum(weights)

    batch = make_batch(5)
    padded = jax.tree.map(lambda b: np.concatenate([b, b[:3]]), batch)
    step = train.make_train_step(loss_fn, OPTIMIZER)
    state, metrics = step(
        initial_state(), padded, jax.random.key(1), example_mask=jnp.arange(8) < 5
    )
    assert seen[0].shape == (8,)
    expected_state, expected = reference(batch)
    assert_same_step(state, expected_state)
    assert_close(metrics["loss"], expected["loss"], dtype=np.float32)


def test_mask_errors_name_the_fix():
    batch, mask = make_batch(4), jnp.ones(4, bool)
    scalar = train.make_train_step(lambda p, b, k: mean_loss(p, b, k)[0], OPTIMIZER)
    with pytest.raises(
        TypeError,
        match=r"got an example_mask .* loss_fn returns a scalar and takes no example_mask",
    ):
        scalar(initial_state(), batch, jax.random.key(1), example_mask=mask)
    matrix = train.make_train_step(lambda p, b, k: jnp.zeros((4, 2)) * jnp.sum(p.b), OPTIMIZER)
    with pytest.raises(
        ValueError,
        match=r"loss_fn must return a scalar loss or per-example losses \[batch\]; got shape \(4, 2\)",
    ):
        matrix(initial_state(), batch, jax.random.key(1))
    step = train.make_train_step(lambda p, b, k: per_example(p, b, k)[0], OPTIMIZER)
    with pytest.raises(
        ValueError, match=r"example_mask must be a vector \[batch\]; got shape \(4, 1\)"
    ):
        step(initial_state(), batch, jax.random.key(1), example_mask=jnp.ones((4, 1), bool))
    with pytest.raises(
        ValueError, match=r"per-example losses \(3,\) like example_mask; got shape \(4,\)"
    ):
        step(initial_state(), batch, jax.random.key(1), example_mask=jnp.ones(3, bool))


def test_data_parallel_pads_the_library_step_on_this_process():
    """The failing case of issue 22: remainder='pad' passes example_mask to the step."""
    sharded = distributed.data_parallel(
        train.make_train_step(per_example, OPTIMIZER, has_aux=True, jit=False),
        distributed.make_mesh(), batch_argnums=1, remainder="pad",
    )  # fmt: skip
    assert_same_step(
        sharded(initial_state(), make_batch(13), jax.random.key(1)), reference(make_batch(13))
    )


@multidevice
def test_multidevice_padded_library_step_equals_the_unpadded_step():
    mesh = distributed.make_mesh()
    assert mesh.shape["data"] == 8
    sharded = distributed.data_parallel(
        train.make_train_step(per_example, OPTIMIZER, has_aux=True, jit=False),
        mesh, batch_argnums=1, remainder="pad",
    )  # fmt: skip
    state, metrics = sharded(initial_state(), make_batch(13), jax.random.key(1))  # 13 -> 16
    assert_same_step((state, metrics), reference(make_batch(13)), scale=10)
    assert state.params.w.sharding.is_fully_replicated


@multidevice
def test_multidevice_fit_with_a_padded_data_parallel_step():
    x, y = make_batch(36).values()
    data = {"x": x, "y": y}
    sharded = distributed.data_parallel(
        train.make_train_step(per_example, OPTIMIZER, has_aux=True, jit=False),
        distributed.make_mesh(), batch_argnums=1, remainder="pad",
    )  # fmt: skip
    params = MODEL.init(jax.random.key(0), (6,))
    options = {"epochs": 2, "batch_size": 12, "progress": False}  # 12 does not divide over 8
    result = train.fit(None, params, OPTIMIZER, data, step=sharded, **options)
    expected = train.fit(mean_loss, params, OPTIMIZER, data, has_aux=True, **options)
    assert_same_step(result.params, expected.params, scale=10)
    assert result.history[-1]["train_mae"] == pytest.approx(
        expected.history[-1]["train_mae"], rel=1e-4
    )


def test_eight_simulated_devices_in_subprocess():
    if EIGHT:
        pytest.skip("this process has 8 devices: the multidevice tests ran here")
    run_multidevice_cases(__file__, expected_passed=2)
