"""Bad input to ``rnnjax.distributed``: meshes, shardings, batch padding and placement, and the
data-parallel step wrapper. Each case raises the named exception and the message names the
argument. (Cases that need several devices live in test_distributed's subprocess.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import distributed

MESH = distributed.make_mesh()
BATCH = {"x": jnp.ones((4, 3)), "y": jnp.ones((4,))}


def _step(params, opt_state, batch):
    return params, opt_state, {"loss": jnp.mean(batch["x"])}


CASES = [
    pytest.param(lambda: distributed.make_mesh(0), ValueError, "data", id="mesh-data-0"),
    pytest.param(lambda: distributed.make_mesh(model=0), ValueError, "model", id="mesh-model-0"),
    pytest.param(lambda: distributed.make_mesh(1.5), ValueError, "data", id="mesh-data-float"),
    pytest.param(lambda: distributed.make_mesh(True), ValueError, "data", id="mesh-data-bool"),
    pytest.param(
        lambda: distributed.make_mesh(len(jax.devices()) + 1),
        ValueError,
        "devices",
        id="mesh-too-many",
    ),
    pytest.param(
        lambda: distributed.make_mesh(devices=[]), ValueError, "devices", id="mesh-no-devices"
    ),
    pytest.param(
        lambda: distributed.make_mesh(devices=["cpu:0"]),
        TypeError,
        "devices",
        id="mesh-device-names",
    ),
    pytest.param(
        lambda: distributed.param_shardings(BATCH, "mesh"),
        TypeError,
        "mesh",
        id="shardings-mesh-str",
    ),
    pytest.param(
        lambda: distributed.param_shardings(BATCH, MESH, model_axis="tensor"),
        ValueError,
        "model_axis",
        id="shardings-unknown-axis",
    ),
    pytest.param(
        lambda: distributed.pad_batch(BATCH, 0), ValueError, "multiple", id="pad-multiple-0"
    ),
    pytest.param(
        lambda: distributed.pad_batch(BATCH, 2.0), ValueError, "multiple", id="pad-multiple-float"
    ),
    pytest.param(
        lambda: distributed.pad_batch(BATCH, True), ValueError, "multiple", id="pad-multiple-bool"
    ),
    pytest.param(lambda: distributed.pad_batch({}, 2), ValueError, "batch", id="pad-empty-tree"),
    pytest.param(
        lambda: distributed.pad_batch({"x": jnp.ones((0, 3))}, 2),
        ValueError,
        "batch",
        id="pad-zero-examples",
    ),
    pytest.param(
        lambda: distributed.pad_batch({"x": jnp.ones(())}, 2),
        ValueError,
        r"batch\['x'\]",
        id="pad-scalar-leaf",
    ),
    pytest.param(
        lambda: distributed.pad_batch({"x": jnp.ones((4, 3)), "y": jnp.ones(3)}, 2),
        ValueError,
        "batch",
        id="pad-unequal-leaves",
    ),
    pytest.param(
        lambda: distributed.pad_batch({"x": [1, 2]}, 2),
        TypeError,
        r"batch\['x'\]",
        id="pad-list-leaf",
    ),
    pytest.param(
        lambda: distributed.shard_batch(BATCH, MESH, data_axis="batch"),
        ValueError,
        "data_axis",
        id="shard-unknown-axis",
    ),
    pytest.param(
        lambda: distributed.shard_batch(BATCH, None), TypeError, "mesh", id="shard-no-mesh"
    ),
    pytest.param(
        lambda: distributed.shard_batch({"x": jnp.ones(())}, MESH),
        ValueError,
        "batch",
        id="shard-scalar",
    ),
    pytest.param(
        lambda: distributed.data_parallel(_step, MESH, remainder="drop"),
        ValueError,
        "remainder",
        id="dp-remainder",
    ),
    pytest.param(
        lambda: distributed.data_parallel(_step, MESH, data_axis="model", model_axis="model"),
        ValueError,
        "data_axis",
        id="dp-same-axes",
    ),
    pytest.param(
        lambda: distributed.data_parallel(_step, MESH, batch_argnums=-1),
        ValueError,
        "batch_argnums",
        id="dp-negative-argnum",
    ),
    pytest.param(
        lambda: distributed.data_parallel(_step, MESH, batch_argnums=()),
        ValueError,
        "batch_argnums",
        id="dp-no-argnums",
    ),
    pytest.param(
        lambda: distributed.data_parallel(_step, MESH, batch_argnums=1.0),
        ValueError,
        "batch_argnums",
        id="dp-float-argnum",
    ),
    pytest.param(
        lambda: distributed.data_parallel("step", MESH),
        TypeError,
        "step_fn",
        id="dp-step-not-callable",
    ),
    pytest.param(
        lambda: distributed.data_parallel(_step, jax.devices()),
        TypeError,
        "mesh",
        id="dp-device-list",
    ),
    pytest.param(
        lambda: distributed.data_parallel(_step, MESH)(jnp.ones(2), None),
        ValueError,
        "batch_argnums",
        id="dp-too-few-arguments",
    ),
    pytest.param(
        lambda: distributed.data_parallel(_step, MESH)(
            jnp.ones(2), None, {"x": jnp.ones((4, 3)), "y": jnp.ones(5)}
        ),
        ValueError,
        "batch",
        id="dp-unequal-batch-leaves",
    ),
]


@pytest.mark.parametrize("call, error, match", CASES)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_pad_batch_keeps_numpy_leaves_numpy():
    padded, mask = distributed.pad_batch({"x": np.arange(3.0)}, 2)
    assert isinstance(padded["x"], np.ndarray)
    np.testing.assert_array_equal(padded["x"], [0.0, 1.0, 2.0, 0.0])
    np.testing.assert_array_equal(np.asarray(mask), [True, True, True, False])
