"""Fault injection on checkpoints: two writers, SIGKILL mid-write, torn and forged files, a full
disk. After each, the newest good checkpoint restores bit for bit and the reason is clear."""

import errno
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import msgpack
import numpy as np
import pytest

from rnnjax import train

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = {"w": jnp.zeros(1000), "epoch": 0}


def _child(code: str, *args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE,
        text=True, **kwargs,
    )  # fmt: skip


def _save(directory, step, value):
    return train.save_checkpoint(directory, {"w": jnp.arange(1000.0) + value, "epoch": step}, step)


def _assert_restores(directory, step, value):
    restored, got = train.restore_checkpoint(directory, TEMPLATE)
    assert got == step and restored["epoch"] == step
    assert (
        np.asarray(restored["w"]).tobytes()
        == (np.arange(1000.0, dtype=np.float32) + value).tobytes()
    )


_HOLDER = """
import sys
from rnnjax import train
manager = train.CheckpointManager(sys.argv[1])
(manager.directory / "7.orbax-checkpoint-tmp-1").mkdir()  # as if a save were in flight
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_second_writer_fails_at_once_and_a_dead_ones_lock_is_taken_over(tmp_path):
    holder = _child(_HOLDER, tmp_path)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        lock = json.loads((tmp_path / ".rnnjax-writer-0.lock").read_text())
        assert lock["pid"] == holder.pid and lock["host"] == socket.gethostname()
        with pytest.raises(
            train.CheckpointLockError,
            match=rf"checkpoint directory {tmp_path} is locked by pid {holder.pid} on host "
            rf"{socket.gethostname()} since .*another run is writing there",
        ):
            _save(tmp_path, 1, 0)
        assert (tmp_path / "7.orbax-checkpoint-tmp-1").is_dir()  # the live writer's is kept
        assert train.checkpoint_steps(tmp_path) == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=60)
    _save(tmp_path, 1, 0)  # the kernel dropped the dead holder's lock
    assert not (tmp_path / "7.orbax-checkpoint-tmp-1").exists()  # stale: its owner is dead
    _assert_restores(tmp_path, 1, 0)


def test_two_writers_in_one_process(tmp_path):
    with train.CheckpointManager(tmp_path) as manager:
        with pytest.raises(train.CheckpointLockError, match=rf"locked by pid {os.getpid()}"):
            train.CheckpointManager(tmp_path)
        manager.save(1, TEMPLATE)
    with train.CheckpointManager(tmp_path):  # released on close
        pass


_KILLED = """
import os, signal, sys
import jax.numpy as jnp
from rnnjax import train
from orbax.checkpoint._src.handlers import json_checkpoint_handler
from orbax.checkpoint._src.path import async_path

directory, mode = sys.argv[1], sys.argv[2]
train.save_checkpoint(directory, {"w": jnp.arange(1000.0), "epoch": 1}, 1)

async def half_then_die(self, x, directory):
    text = __import__("json").dumps(x)
    (directory / "metadata").write_text(text[: len(text) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

async def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "mid_write":
    json_checkpoint_handler.JsonCheckpointHandler._save_fn = half_then_die
else:
    async_path.rename = die
train.save_checkpoint(directory, {"w": jnp.arange(1000.0) + 1, "epoch": 2}, 2)
"""


@pytest.mark.parametrize("mode", ["mid_write", "before_rename"])
def test_killed_mid_write_keeps_the_last_good_checkpoint(tmp_path, mode):
    child = _child(_KILLED, tmp_path, mode)
    _, errors = child.communicate(timeout=180)
    assert child.returncode == -signal.SIGKILL, errors[-3000:]
    leftovers = [p.name for p in tmp_path.iterdir() if "tmp" in p.name]
    assert leftovers and train.checkpoint_steps(tmp_path) == [1]
    _assert_restores(tmp_path, 1, 0)
    _save(tmp_path, 2, 1)  # the resumed run writes step 2 again; the dead writer's temporary goes
    assert not [p.name for p in tmp_path.iterdir() if "tmp" in p.name]
    _assert_restores(tmp_path, 2, 1)


def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["torn", "bit_flip"])
def test_a_damaged_file_falls_back_to_the_previous_checkpoint(tmp_path, caplog, damage):
    """A torn data file fails in orbax's reader; one flipped bit only in the SHA-256."""
    _save(tmp_path, 1, 0)
    newest = _save(tmp_path, 2, 1)
    data = _largest_file(newest / "arrays")  # the chunk holding w's 4000 bytes
    content = bytearray(data.read_bytes())
    if damage == "torn":
        content = content[: len(content) // 2]
    else:
        content[len(content) // 2] ^= 0x10
    data.write_bytes(bytes(content))
    caplog.set_level(logging.WARNING, logger="rnnjax.train._checkpoint")
    _assert_restores(tmp_path, 1, 0)
    assert "skipping checkpoint 2" in caplog.text
    reason = "cannot be read" if damage == "torn" else r"leaf \['w'\] does not match its checksum"
    with pytest.raises(train.CorruptCheckpointError, match=rf"{newest}.*{reason}"):
        train.restore_checkpoint(tmp_path, TEMPLATE, step=2)


def test_a_forged_manifest_with_other_shapes_is_a_checkpoint_error_and_falls_back(tmp_path, caplog):
    _save(tmp_path, 1, 0)
    newest = _save(tmp_path, 2, 1)
    manifest_file = newest / "manifest" / "metadata"
    manifest = json.loads(manifest_file.read_text())
    manifest["leaves"][1]["shape"] = [10, 100]
    manifest_file.write_text(json.dumps(manifest))
    caplog.set_level(logging.WARNING, logger="rnnjax.train._checkpoint")
    _assert_restores(tmp_path, 1, 0)
    assert "skipping checkpoint 2" in caplog.text and "leaf ['w']" in caplog.text
    with pytest.raises(
        train.CheckpointError,
        match=r"leaf \['w'\]: checkpoint holds float32\[10, 100\], the target expects "
        r"float32\[1000\]",
    ):
        train.restore_checkpoint(tmp_path, TEMPLATE, step=2)


def test_forged_data_fail_their_checksum(tmp_path, caplog):
    """Step 2's arrays replaced by another checkpoint's (same shapes, other values)."""
    _save(tmp_path, 1, 0)
    newest = _save(tmp_path, 2, 1)
    manifest = json.loads((newest / "manifest" / "metadata").read_text())
    expected = hashlib.sha256((np.arange(1000.0, dtype=np.float32) + 1).tobytes()).hexdigest()
    assert manifest["leaves"][1]["sha256"] == expected  # an independent digest of the data
    manifest["leaves"][1]["sha256"] = hashlib.sha256(b"forged").hexdigest()
    (newest / "manifest" / "metadata").write_text(json.dumps(manifest))
    caplog.set_level(logging.WARNING, logger="rnnjax.train._checkpoint")
    _assert_restores(tmp_path, 1, 0)
    with pytest.raises(
        train.CorruptCheckpointError, match=r"leaf \['w'\] does not match its checksum"
    ):
        train.restore_checkpoint(tmp_path, TEMPLATE, step=2)


def _legacy_file(path: Path, payload: bytes) -> None:
    path.write_bytes(b"RNNJAXC1" + hashlib.sha256(payload).digest() + payload)


def test_a_forged_legacy_file_with_a_valid_checksum_names_the_leaf(tmp_path, caplog):
    """msgpack written here by hand in flax's layout: ``(shape, dtype, bytes)`` per array."""

    def array(shape, data: bytes):
        return msgpack.ExtType(1, msgpack.packb((shape, "float32", data)))

    good = np.arange(3, dtype=np.float32).tobytes()
    _legacy_file(tmp_path / "checkpoint_1.msgpack", msgpack.packb({"w": array((3,), good)}))
    _legacy_file(tmp_path / "checkpoint_2.msgpack", msgpack.packb({"w": array((4,), good)}))
    caplog.set_level(logging.WARNING, logger="rnnjax.train._checkpoint")
    restored, step = train.restore_checkpoint(tmp_path, {"w": jnp.zeros(3)})
    assert step == 1 and restored["w"].tolist() == [0.0, 1.0, 2.0]
    assert "skipping checkpoint 2" in caplog.text
    with pytest.raises(train.CheckpointError, match=r"leaf \['w'\]: the stored array is malformed"):
        train.restore_checkpoint(tmp_path, {"w": jnp.zeros(3)}, step=2)
    (tmp_path / "checkpoint_2.msgpack").write_bytes(b"RNNJAXC1 torn")
    with pytest.raises(train.CorruptCheckpointError, match="is not an rnnjax checkpoint"):
        train.restore_checkpoint(tmp_path, {"w": jnp.zeros(3)}, step=2)


def test_a_full_disk_fails_the_save_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    _save(tmp_path, 1, 0)

    async def full_disk(self, x, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        _save(tmp_path, 2, 1)
    monkeypatch.undo()
    assert train.checkpoint_steps(tmp_path) == [1]
    _assert_restores(tmp_path, 1, 0)
    _save(tmp_path, 2, 1)  # the lock was released and the failed temporary is cleaned
    assert not [p.name for p in tmp_path.iterdir() if "tmp" in p.name]
    _assert_restores(tmp_path, 2, 1)


_FIT_KILLED = """
import os, signal, sys
from orbax.checkpoint._src.path import async_path
from tests.test_fit_callbacks import _run

real_rename = async_path.rename

async def die_on_the_third(src, dst):
    if dst.name == "3":  # the commit of epoch 3's checkpoint
        os.kill(os.getpid(), signal.SIGKILL)
    return await real_rename(src, dst)

async_path.rename = die_on_the_third
_run(epochs=3, checkpoint_dir=sys.argv[1])
"""


def test_fit_killed_while_checkpointing_resumes_bit_for_bit(tmp_path):
    from tests.test_fit_callbacks import _bits, _run

    child = _child(_FIT_KILLED, tmp_path)
    _, errors = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, errors[-3000:]
    assert train.checkpoint_steps(tmp_path) == [1, 2]  # epoch 3's write never committed
    resumed = _run(epochs=3, checkpoint_dir=tmp_path, resume=True)
    straight = _run(epochs=3)
    assert _bits(resumed.params) == _bits(straight.params)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    assert train.checkpoint_steps(tmp_path) == [2, 3]
