"""Multi-host checkpoints: 2 processes x 4 CPU devices (``jax.distributed.initialize`` on
localhost). Each process writes the shards it holds, one commits, and each restores its shards
into the template's sharding."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def worker(directory: str) -> None:
    """One of two processes: save a (data x model)-sharded array and restore it two ways."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from rnnjax import distributed, train

    mesh = distributed.make_mesh(model=2)  # data 4 x model 2 over both processes' 8 devices
    expected = np.arange(8 * 6, dtype=np.float32).reshape(8, 6)
    sharding = NamedSharding(mesh, P("data", "model"))
    w = jax.make_array_from_callback(expected.shape, sharding, lambda index: expected[index])
    assert not w.is_fully_addressable
    target = {"w": w, "step": jnp.asarray(3, jnp.int32), "epoch": 3}
    with train.CheckpointManager(directory) as manager:  # each process its own lock
        manager.save(3, target)
    restored, step = train.restore_checkpoint(directory, target)
    assert step == 3 and restored["epoch"] == 3 and int(restored["step"]) == 3
    assert restored["w"].sharding == sharding
    for shard in restored["w"].addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), expected[shard.index])
    other = NamedSharding(mesh, P(None, "model"))  # another layout: columns only
    abstract = {"w": jax.ShapeDtypeStruct(expected.shape, jnp.float32, sharding=other)}
    again, _ = train.restore_checkpoint(directory, abstract)
    for shard in again["w"].addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), expected[shard.index])
    print(f"process {jax.process_index()} ok", flush=True)


@pytest.mark.slow
def test_two_processes_write_their_shards_and_one_commits(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import jax; jax.config.update('jax_cpu_collectives_implementation', 'gloo'); "
        f"jax.distributed.initialize('127.0.0.1:{port}', num_processes=2, process_id={{}}); "
        f"from tests.test_checkpoint_multihost import worker; worker({str(tmp_path)!r})"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code.format(pid)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for pid in range(2)
    ]
    for pid, process in enumerate(workers):
        out, errors = process.communicate(timeout=600)
        assert process.returncode == 0, errors[-4000:]
        assert f"process {pid} ok" in out
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["3"]
    assert sorted(p.name for p in tmp_path.glob(".rnnjax-writer-*.lock")) == [
        ".rnnjax-writer-0.lock", ".rnnjax-writer-1.lock",
    ]  # fmt: skip
    ocdbt = sorted(p.name for p in (tmp_path / "3" / "arrays").glob("ocdbt.process_*"))
    assert ocdbt == ["ocdbt.process_0", "ocdbt.process_1"]  # each process wrote its shards
    assert (tmp_path / "3" / "commit_success.txt").exists()
