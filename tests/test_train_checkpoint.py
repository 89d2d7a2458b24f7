"""Checkpoints on orbax: bit-for-bit round trips, keep-N, partial templates, the legacy msgpack
format, sharded arrays restored to their sharding (8 simulated devices), and clear errors.

Crash, lock and damage cases are in ``test_checkpoint_faults.py``; two processes in
``test_checkpoint_multihost.py``.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import rnnjax
from rnnjax import train
from tests.multidevice import EIGHT, run_multidevice_cases

LEGACY = Path(__file__).parent / "data" / "legacy_checkpoint"
multidevice = pytest.mark.skipif(
    not EIGHT, reason="needs 8 devices; test_eight_simulated_devices_in_subprocess runs it"
)


def _target():
    params = rnnjax.gru(4).init(jax.random.key(0), 3)  # b_hn is None
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.update(params, optimizer.init(params), params)[1]
    special = np.array([np.nan, -0.0, np.inf, 1e-45], np.float32)
    special = special.view(np.uint32).copy()
    special[0] |= 0x1234  # a NaN payload survives only a byte-exact copy
    return {
        "state": train.TrainState(params, opt_state, jnp.asarray(7, jnp.int32)),
        "special": jnp.asarray(special.view(np.float32)),
        "half": jnp.linspace(0, 1, 5, dtype=jnp.bfloat16),
        "numpy": np.arange(6, dtype=np.int64).reshape(2, 3),
        "key": jax.random.key(42),
        "epoch": 3,
        "best": float("inf"),
        "ratio": 0.1,
        "stopped": True,
        "history": '[{"epoch": 1}]',
    }


def _zeros_like(target):
    return jax.tree_util.tree_map(
        lambda x: jnp.zeros_like(x) if isinstance(x, jax.Array) else 0 * x, target
    )


def assert_bitwise_equal(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_round_trip_is_bit_for_bit(tmp_path):
    target = _target()
    path = train.save_checkpoint(tmp_path, target, 5)
    assert path == tmp_path / "5" and path.is_dir()
    assert train.checkpoint_path(tmp_path, 5) == path
    restored, step = train.restore_checkpoint(tmp_path, _zeros_like(target))
    assert step == 5
    assert_bitwise_equal(restored, target)
    assert restored["best"] == float("inf") and restored["ratio"] == 0.1
    assert isinstance(restored["stopped"], bool) and isinstance(restored["epoch"], int)
    assert jnp.array_equal(
        jax.random.normal(restored["key"], (3,)), jax.random.normal(target["key"], (3,))
    )


def test_float64_round_trip(tmp_path, x64):
    target = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(3, 3)))}
    assert target["w"].dtype == jnp.float64
    train.save_checkpoint(tmp_path, target, 0)
    assert_bitwise_equal(train.restore_checkpoint(tmp_path, target)[0], target)


def test_keep_step_selection_and_replacement(tmp_path):
    for step in range(4):
        train.save_checkpoint(tmp_path, {"step": jnp.asarray(step)}, step, keep=2)
    assert train.checkpoint_steps(tmp_path) == [2, 3]
    assert int(train.restore_checkpoint(tmp_path, {"step": jnp.asarray(0)}, step=2)[0]["step"]) == 2
    train.save_checkpoint(tmp_path, {"step": jnp.asarray(30)}, 3)  # replaces step 3
    assert int(train.restore_checkpoint(tmp_path, {"step": jnp.asarray(0)})[0]["step"]) == 30


def test_manager_saves_in_the_background_and_restores(tmp_path):
    with train.CheckpointManager(tmp_path, keep=3) as manager:
        for step in range(5):
            manager.save(step, {"w": jnp.full(3, float(step))})
        assert manager.steps() == [2, 3, 4]  # steps() waits for the pending saves
        restored, step = manager.restore({"w": jnp.zeros(3)})
    assert step == 4 and restored["w"].tolist() == [4.0] * 3
    with pytest.raises(train.CheckpointError, match="is closed"):
        manager.save(5, {"w": jnp.zeros(3)})


def test_a_template_may_read_part_of_a_checkpoint(tmp_path):
    train.save_checkpoint(tmp_path, {"a": jnp.ones(3), "b": np.arange(2), "c": 5}, 1)
    restored, _ = train.restore_checkpoint(tmp_path, {"b": np.zeros(2, np.int64)})
    assert list(restored) == ["b"] and isinstance(restored["b"], np.ndarray)
    np.testing.assert_array_equal(restored["b"], [0, 1])
    train.save_checkpoint(tmp_path, {"state": {"params": jnp.ones(2), "moments": jnp.ones(2)}}, 2)
    with pytest.raises(
        train.CheckpointError,
        match=r"the target has leaves \[\] that the checkpoint lacks, and lacks leaves "
        r"\[\"\['state'\]\['moments'\]\"\] that the checkpoint has",
    ):  # part of an entry, e.g. params without their optimizer state, is refused
        train.restore_checkpoint(tmp_path, {"state": {"params": jnp.zeros(2)}}, step=2)


def test_legacy_msgpack_checkpoints_still_load():
    """Files written by the msgpack writer of commit c8a7d57 (see tests/data/README.md)."""
    template = {
        "params": rnnjax.LSTMParams(jnp.zeros((3, 4)), jnp.zeros((1, 4)), jnp.zeros(4)),
        "step": jnp.asarray(0, jnp.int32),
        "half": jnp.zeros(2, jnp.bfloat16),
        "numpy": np.zeros((2, 3), np.int64),
        "key": jax.random.key(0),
        "epoch": 0,
        "history": "",
    }
    assert train.checkpoint_steps(LEGACY) == [3, 4]
    assert train.checkpoint_path(LEGACY, 3).name == "checkpoint_3.msgpack"
    restored, step = train.restore_checkpoint(LEGACY, template)
    assert step == 4 and restored["epoch"] == 4 and int(restored["step"]) == 8
    np.testing.assert_array_equal(restored["params"].w_x, np.arange(12.0).reshape(3, 4) / 8)
    np.testing.assert_array_equal(restored["params"].w_h, np.full((1, 4), -0.5))
    np.testing.assert_array_equal(restored["params"].b, [1, 2, 3, 4])
    assert restored["half"].dtype == jnp.bfloat16 and restored["half"].tolist() == [0.5, 1.5]
    assert isinstance(restored["numpy"], np.ndarray) and restored["numpy"].dtype == np.int64
    np.testing.assert_array_equal(restored["numpy"], np.arange(6).reshape(2, 3))
    assert jnp.array_equal(
        jax.random.key_data(restored["key"]), jax.random.key_data(jax.random.key(42))
    )
    assert restored["history"] == '[{"epoch": 1}]'
    older, _ = train.restore_checkpoint(LEGACY, template, step=3)
    assert older["epoch"] == 3 and int(older["step"]) == 7
    with pytest.raises(
        train.CheckpointError,
        match=r"leaf \['params'\]\.w_x: checkpoint holds float32\[3, 4\], the target expects "
        r"float32\[3, 5\]",
    ):
        bad = {**template, "params": template["params"]._replace(w_x=jnp.zeros((3, 5)))}
        train.restore_checkpoint(LEGACY, bad, step=3)


def test_errors(tmp_path):
    train.save_checkpoint(tmp_path, {"w": jnp.ones(3), "n": 1}, 0)
    with pytest.raises(
        train.CheckpointError,
        match=r"leaf \['w'\]: checkpoint holds float32\[3\], the target expects float32\[4\]",
    ):
        train.restore_checkpoint(tmp_path, {"w": jnp.ones(4)})
    with pytest.raises(train.CheckpointError, match=r"leaf \['w'\]: .*float32\[3\].*int32\[3\]"):
        train.restore_checkpoint(tmp_path, {"w": jnp.ones(3, jnp.int32)})
    with pytest.raises(
        train.CheckpointError,
        match=r"does not match the target's structure: the target has leaves \[\"\['v'\]\"\] that "
        r"the checkpoint lacks",
    ):
        train.restore_checkpoint(tmp_path, {"v": jnp.ones(3)})
    with pytest.raises(train.CheckpointError, match=r"leaf \['n'\]: checkpoint holds a Python"):
        train.restore_checkpoint(tmp_path, {"n": jnp.ones(3)})
    with pytest.raises(train.CheckpointError, match=r"leaf \['w'\]: checkpoint holds an array"):
        train.restore_checkpoint(tmp_path, {"w": 0})
    with pytest.raises(
        train.CheckpointError, match=r"no intact checkpoint in .* \(found steps \[\]\)"
    ):
        train.restore_checkpoint(tmp_path / "empty", {"w": jnp.ones(3)})
    with pytest.raises(train.CheckpointError, match=r"no checkpoint at .*9 \(nor checkpoint_9"):
        train.restore_checkpoint(tmp_path, {"w": jnp.ones(3)}, step=9)
    with pytest.raises(TypeError, match=r"step must be an int; got 2\.7 \(float\)"):
        train.restore_checkpoint(tmp_path, {"w": jnp.ones(3)}, step=2.7)
    with pytest.raises(TypeError, match=r"step must be an int; got True"):
        train.restore_checkpoint(tmp_path, {"w": jnp.ones(3)}, step=True)
    with pytest.raises(ValueError, match="step must be a non-negative int; got -1"):
        train.save_checkpoint(tmp_path, {}, -1)
    with pytest.raises(TypeError, match=r"step must be an int; got '3' \(str\)"):
        train.save_checkpoint(tmp_path, {}, "3")
    with pytest.raises(ValueError, match="keep must be a positive int or None; got 0"):
        train.save_checkpoint(tmp_path, {}, 1, keep=0)
    with pytest.raises(ValueError, match="keep must be a positive int or None; got 1.5"):
        train.CheckpointManager(tmp_path, keep=1.5)
    with pytest.raises(TypeError, match=r"leaves must be arrays, .*; got object"):
        train.save_checkpoint(tmp_path, {"w": object()}, 1)


_ISOLATION = """
import sys
import rnnjax, rnnjax.train
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("orbax", "flax", "msgpack"))
assert not loaded, loaded
sys.modules["orbax"] = sys.modules["orbax.checkpoint"] = None  # as if not installed
try:
    rnnjax.train.save_checkpoint(sys.argv[1], {}, 1)
except ImportError as error:
    print(error)
"""


def test_import_rnnjax_loads_no_orbax_and_missing_orbax_names_the_extra(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", _ISOLATION, str(tmp_path)],
        env=env, cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rnnjax's checkpoints needs orbax" in result.stdout
    assert "pip install 'rnnjax[flax]'" in result.stdout


@multidevice
def test_multidevice_sharded_params_restore_to_their_sharding(tmp_path):
    mesh = rnnjax.distributed.make_mesh(model=2)  # data 4 x model 2
    params = rnnjax.lstm(8).init(jax.random.key(0), 3)
    shardings = rnnjax.distributed.param_shardings(params, mesh, model_axis="model")
    sharded = jax.device_put(params, shardings)
    assert sharded.w_h.sharding.spec == P(None, "model")
    train.save_checkpoint(tmp_path, {"params": sharded}, 1)
    template = {"params": jax.device_put(jax.tree.map(jnp.zeros_like, params), shardings)}
    restored, _ = train.restore_checkpoint(tmp_path, template)
    for name in ("w_x", "w_h", "b"):
        leaf = getattr(restored["params"], name)
        assert leaf.sharding == getattr(sharded, name).sharding
        assert len(leaf.addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(getattr(params, name)))
    # An abstract template (ShapeDtypeStruct) restores into another sharding: replicated.
    replicated = NamedSharding(mesh, P())
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), params
    )
    again, _ = train.restore_checkpoint(tmp_path, {"params": abstract})
    assert again["params"].w_h.sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(again["params"].w_h), np.asarray(params.w_h))


def test_eight_simulated_devices_in_subprocess():
    if EIGHT:
        pytest.skip("this process has 8 devices: the multidevice tests ran here")
    run_multidevice_cases(__file__, expected_passed=1)
