"""rnnjax.distributed: the sharded step equals the single-device step, on 1 and 8 devices.

Tests named ``test_multidevice_*`` need 8 devices. ``XLA_FLAGS`` must be set before JAX starts its
backend, so ``test_eight_simulated_devices_in_subprocess`` reruns them in a fresh ``pytest`` with
``--xla_force_host_platform_device_count=8`` (they run directly when the suite already has 8).
"""

import functools
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import rnnjax
from rnnjax import distributed
from tests.multidevice import EIGHT, run_multidevice_cases
from tests.tolerances import assert_close

multidevice = pytest.mark.skipif(
    not EIGHT, reason="needs 8 devices; test_eight_simulated_devices_in_subprocess runs it"
)

MODEL = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(8)), rnnjax.dense(1))
OPTIMIZER = optax.adam(1e-2)


def train_step(params, opt_state, batch, example_mask=None):
    """Mean squared error of an LSTM(8) + Dense(1) regressor; weighted by the mask when given."""

    def loss_fn(p):
        errors = (MODEL.apply(p, batch["x"])[:, 0] - batch["y"]) ** 2
        if example_mask is None:
            return jnp.mean(errors)
        weights = example_mask.astype(errors.dtype)
        return jnp.sum(weights * errors) / jnp.sum(weights)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {"loss": loss}


def make_batch(size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(size, 5, 2)).astype(np.float32),
        "y": rng.normal(size=(size,)).astype(np.float32),
    }


@functools.cache
def initial_params():
    """Host (NumPy) copies, so a donating step never deletes the cached buffers."""
    return jax.tree.map(np.asarray, MODEL.init(jax.random.key(0), (5, 2)))


def run_steps(step, batch, steps: int = 2):
    params = initial_params()
    opt_state = OPTIMIZER.init(params)
    for _ in range(steps):
        params, opt_state, metrics = step(params, opt_state, batch)
    return params, opt_state, metrics


@functools.cache
def expected_training(size: int):
    """The unsharded reference: two steps of the plain jitted ``train_step``."""
    return run_steps(jax.jit(train_step), make_batch(size))


def assert_same_training(sharded, size: int):
    """Params, optimizer state and loss of ``sharded`` match the plain jitted step."""
    expected = expected_training(size)
    actual = run_steps(sharded, make_batch(size))
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert_close(a, e, dtype=np.float32, scale=10)
    return actual


def test_make_mesh_uses_every_device_on_the_data_axis():
    mesh = distributed.make_mesh()
    assert mesh.axis_names == ("data", "model")
    assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": 0}, "model must be a positive int; got 0"),
        ({"data": 2.0}, "data must be a positive int; got 2.0"),
        ({"data": 10**6}, r"needs 1000000 devices; got \d+ devices"),
    ],
)
def test_make_mesh_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.make_mesh(**kwargs)


def test_param_shardings_split_the_last_axis_or_replicate():
    mesh = distributed.make_mesh()
    params = initial_params()
    specs = [s.spec for s in jax.tree.leaves(distributed.param_shardings(params, mesh, "model"))]
    assert specs == [P(None, "model"), P(None, "model"), P("model"), P(None, "model"), P("model")]
    replicated = distributed.param_shardings(params, mesh)
    assert all(s.spec == P() for s in jax.tree.leaves(replicated))
    with pytest.raises(ValueError, match=r"model_axis must be one of the mesh axes .*got 'rows'"):
        distributed.param_shardings(params, mesh, "rows")
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        distributed.param_shardings(params, "mesh")


def test_pad_batch_repeats_the_first_example_and_masks_it():
    batch = {"x": np.arange(6.0).reshape(3, 2), "y": jnp.arange(3.0)}
    padded, mask = distributed.pad_batch(batch, 4)
    np.testing.assert_array_equal(padded["x"], [[0, 1], [2, 3], [4, 5], [0, 1]])
    np.testing.assert_array_equal(padded["y"], [0, 1, 2, 0])
    np.testing.assert_array_equal(mask, [True, True, True, False])
    same, mask = distributed.pad_batch(batch, 3)
    assert same is batch and bool(mask.all())


@pytest.mark.parametrize(
    "batch, multiple, match",
    [
        ({"x": np.ones((3, 2)), "y": np.ones(4)}, 2, r"share their leading .*\['x'\]\": 3"),
        ({"x": np.ones((0, 2))}, 2, "batch is empty"),
        ({"x": np.float32(1.0)}, 2, r"batch\['x'\] is a scalar"),
        ({}, 2, "at least one array"),
        ({"x": np.ones((3, 2))}, 0, "multiple must be a positive int; got 0"),
    ],
)
def test_pad_batch_rejects_bad_batches(batch, multiple, match):
    with pytest.raises(ValueError, match=match):
        distributed.pad_batch(batch, multiple)


def test_shard_batch_places_the_batch_axis_on_data():
    mesh = distributed.make_mesh()
    placed = distributed.shard_batch(make_batch(8), mesh)
    assert placed["x"].sharding.spec == P("data")
    with pytest.raises(ValueError, match="data_axis must be one of the mesh axes"):
        distributed.shard_batch(make_batch(8), mesh, data_axis="batch")


def test_data_parallel_rejects_bad_arguments():
    mesh = distributed.make_mesh()
    with pytest.raises(
        ValueError, match=r"remainder must be one of \('error', 'pad'\); got 'drop'"
    ):
        distributed.data_parallel(train_step, mesh, remainder="drop")
    with pytest.raises(ValueError, match="data_axis must name a mesh axis other than model_axis"):
        distributed.data_parallel(train_step, mesh, data_axis="model", model_axis="model")
    with pytest.raises(ValueError, match=r"batch_argnums must be one or more non-negative ints"):
        distributed.data_parallel(train_step, mesh, batch_argnums=())
    step = distributed.data_parallel(train_step, mesh, batch_argnums=3)
    with pytest.raises(ValueError, match=r"batch_argnums \(3,\) point past the 3 arguments"):
        step(initial_params(), OPTIMIZER.init(initial_params()), make_batch(2))


@pytest.mark.parametrize("remainder", ["error", "pad"])
def test_data_parallel_matches_the_plain_step_on_this_process(remainder):
    step = distributed.data_parallel(train_step, distributed.make_mesh(), remainder=remainder)
    assert_same_training(step, 8)


@multidevice
def test_multidevice_batch_that_divides_eight():
    step = distributed.data_parallel(train_step, distributed.make_mesh(), donate=True)
    params, _, metrics = assert_same_training(step, 16)
    assert params[0].w_h.sharding.is_fully_replicated
    assert metrics["loss"].sharding.is_fully_replicated


@multidevice
def test_multidevice_batch_that_does_not_divide_is_padded_and_masked():
    step = distributed.data_parallel(train_step, distributed.make_mesh(), remainder="pad")
    assert_same_training(step, 10)


@multidevice
def test_multidevice_batch_that_does_not_divide_is_an_error_by_default():
    step = distributed.data_parallel(train_step, distributed.make_mesh())
    params = initial_params()
    with pytest.raises(ValueError, match=r"batch size 10 must be divisible by the 8 devices"):
        step(params, OPTIMIZER.init(params), make_batch(10))


@multidevice
def test_multidevice_model_axis_splits_kernels_and_matches():
    mesh = distributed.make_mesh(model=2)
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    step = distributed.data_parallel(train_step, mesh, model_axis="model")
    params, opt_state, _ = assert_same_training(step, 8)
    assert params[0].w_h.sharding.spec == P(None, "model")
    assert opt_state[0].mu[0].w_h.sharding.spec == P(None, "model")
    assert params[1].w.sharding.is_fully_replicated  # Dense(1): last axis 1 does not split


def toolkit_step():
    """``rnnjax.train``'s ``step(state, batch, key)``, unjitted, on the same model and loss."""
    from rnnjax import train

    def loss_fn(params, batch, key):
        return jnp.mean((MODEL.apply(params, batch["x"])[:, 0] - batch["y"]) ** 2)

    return train.make_train_step(loss_fn, OPTIMIZER, jit=False), train.TrainState


@multidevice
def test_multidevice_wraps_the_train_toolkit_step():
    step_fn, train_state = toolkit_step()
    sharded = distributed.data_parallel(step_fn, distributed.make_mesh(), batch_argnums=1)
    plain = jax.jit(step_fn)
    batch, key = make_batch(16), jax.random.key(1)
    expected = plain(train_state.create(initial_params(), OPTIMIZER), batch, key)
    actual = sharded(train_state.create(initial_params(), OPTIMIZER), batch, key)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert_close(a, e, dtype=np.float32, scale=10)
    assert actual[0].params[0].w_h.sharding.is_fully_replicated


def multihost_worker():
    """One of two processes (4 CPU devices each): each passes its half of a batch of 16."""
    process = jax.process_index()
    step = distributed.data_parallel(train_step, distributed.make_mesh())
    local = jax.tree.map(lambda leaf: leaf[8 * process : 8 * (process + 1)], make_batch(16))
    actual = run_steps(step, local)
    expected = run_steps(jax.jit(train_step, device=jax.local_devices()[0]), make_batch(16))
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert_close(np.asarray(a.addressable_data(0)), e, dtype=np.float32, scale=10)


@pytest.mark.slow
def test_two_processes_train_on_one_global_batch():
    """The multi-host path (jax.distributed.initialize, process-local batches) on one machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import jax; jax.config.update('jax_cpu_collectives_implementation', 'gloo'); "
        f"jax.distributed.initialize('127.0.0.1:{port}', num_processes=2, process_id={{}}); "
        "from tests.test_distributed import multihost_worker; multihost_worker()"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    root = Path(__file__).resolve().parents[1]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code.format(pid)],
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    for worker in workers:
        _, errors = worker.communicate(timeout=600)
        assert worker.returncode == 0, errors[-4000:]


@pytest.mark.slow
def test_eight_simulated_devices_in_subprocess():
    if EIGHT:
        pytest.skip("this process has 8 devices: the multidevice tests ran here")
    run_multidevice_cases(__file__, expected_passed=5)
