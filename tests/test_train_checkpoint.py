"""Checkpoints: bit-for-bit round trips, and a crash mid-write never loses the last good one."""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import train


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
    }


def _assert_bitwise_equal(a, b):
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
    assert path.name == "checkpoint_5.msgpack"
    template = jax.tree_util.tree_map(
        lambda x: jnp.zeros_like(x) if isinstance(x, jax.Array) else 0 * x, target
    )
    restored, step = train.restore_checkpoint(tmp_path, template)
    assert step == 5
    _assert_bitwise_equal(restored, target)
    assert jnp.array_equal(
        jax.random.normal(restored["key"], (3,)), jax.random.normal(target["key"], (3,))
    )


def test_float64_round_trip(tmp_path, x64):
    target = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(3, 3)))}
    assert target["w"].dtype == jnp.float64
    train.save_checkpoint(tmp_path, target, 0)
    _assert_bitwise_equal(train.restore_checkpoint(tmp_path, target)[0], target)


def test_keep_and_step_selection(tmp_path):
    for step in range(4):
        train.save_checkpoint(tmp_path, {"step": jnp.asarray(step)}, step, keep=2)
    assert train.checkpoint_steps(tmp_path) == [2, 3]
    assert int(train.restore_checkpoint(tmp_path, {"step": jnp.asarray(0)}, step=2)[0]["step"]) == 2


_CHILD = """
import os, signal, sys
import jax.numpy as jnp
from rnnjax import train
from rnnjax.train import _checkpoint

directory, mode = sys.argv[1], sys.argv[2]
train.save_checkpoint(directory, {"w": jnp.arange(1000.0)}, 1)
real_fdopen = os.fdopen

class HalfWriter:
    def __init__(self, file):
        self.file = file
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False
    def write(self, data):
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        os.kill(os.getpid(), signal.SIGKILL)

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "mid_write":
    _checkpoint.os.fdopen = lambda fd, mode: HalfWriter(real_fdopen(fd, mode))
elif mode == "before_rename":
    _checkpoint.os.replace = die
train.save_checkpoint(directory, {"w": jnp.arange(1000.0) + 1}, 2)
"""


@pytest.mark.parametrize("mode", ["mid_write", "before_rename"])
def test_killed_mid_write_keeps_last_good_checkpoint(tmp_path, mode):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    directory = tmp_path / "ckpt"
    child = subprocess.run(
        [sys.executable, str(script), str(directory), mode],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    leftovers = [p.name for p in directory.iterdir()]
    assert "checkpoint_2.msgpack" not in leftovers and any(n.endswith(".tmp") for n in leftovers)
    restored, step = train.restore_checkpoint(directory, {"w": jnp.zeros(1000)})
    assert step == 1
    np.testing.assert_array_equal(restored["w"], np.arange(1000.0))
    # The resumed run writes step 2 again: the killed write's temporary goes, a later step's stays.
    (directory / ".checkpoint_9.msgpack.abc.tmp").write_bytes(b"another writer")
    train.save_checkpoint(directory, {"w": jnp.arange(1000.0) + 1}, 2)
    assert sorted(p.name for p in directory.iterdir()) == [
        ".checkpoint_9.msgpack.abc.tmp", "checkpoint_1.msgpack", "checkpoint_2.msgpack",
    ]  # fmt: skip


def test_failed_write_cleans_up_and_keeps_old(tmp_path, monkeypatch):
    train.save_checkpoint(tmp_path, {"w": jnp.ones(3)}, 1)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        train.save_checkpoint(tmp_path, {"w": jnp.zeros(3)}, 1)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_1.msgpack"]
    np.testing.assert_array_equal(
        train.restore_checkpoint(tmp_path, {"w": jnp.zeros(3)})[0]["w"], 1.0
    )


def test_damaged_newest_falls_back_to_previous(tmp_path, caplog):
    train.save_checkpoint(tmp_path, {"w": jnp.ones(3)}, 1)
    path = train.save_checkpoint(tmp_path, {"w": jnp.full(3, 2.0)}, 2)
    path.write_bytes(path.read_bytes()[:-5])  # torn by something other than us
    restored, step = train.restore_checkpoint(tmp_path, {"w": jnp.zeros(3)})
    assert step == 1 and "skipping damaged checkpoint" in caplog.text
    with pytest.raises(
        train.CorruptCheckpointError, match="checkpoint_2.msgpack is corrupt or truncated"
    ):
        train.restore_checkpoint(tmp_path, {"w": jnp.zeros(3)}, step=2)
    path.write_bytes(b"garbage")
    with pytest.raises(train.CorruptCheckpointError, match="is not an rnnjax checkpoint"):
        train.restore_checkpoint(tmp_path, {"w": jnp.zeros(3)}, step=2)


def test_errors(tmp_path):
    train.save_checkpoint(tmp_path, {"w": jnp.ones(3)}, 0)
    with pytest.raises(
        train.CheckpointError,
        match=r"leaf \['w'\]: checkpoint holds float32\[3\], the target expects float32\[4\]",
    ):
        train.restore_checkpoint(tmp_path, {"w": jnp.ones(4)})
    with pytest.raises(train.CheckpointError, match="does not match the target's structure"):
        train.restore_checkpoint(tmp_path, {"v": jnp.ones(3)})
    with pytest.raises(
        train.CheckpointError, match=r"no intact checkpoint in .* \(found steps \[\]\)"
    ):
        train.restore_checkpoint(tmp_path / "empty", {"w": jnp.ones(3)})
    with pytest.raises(train.CheckpointError, match="no checkpoint at"):
        train.restore_checkpoint(tmp_path, {"w": jnp.ones(3)}, step=9)
    with pytest.raises(ValueError, match="step must be a non-negative int; got -1"):
        train.save_checkpoint(tmp_path, {}, -1)
    with pytest.raises(ValueError, match="keep must be a positive int or None; got 0"):
        train.save_checkpoint(tmp_path, {}, 1, keep=0)
