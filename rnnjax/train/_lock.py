"""One writer per checkpoint directory: a lock file naming its owner, held with ``flock``.

The lock is ``<directory>/.rnnjax-writer-<process>.lock`` (one per process index, so the processes
of one multi-host job do not exclude each other while a second job's do). Its owner holds an
exclusive ``fcntl.flock`` on it for as long as it writes, and its contents name the owner
(``{"pid", "host", "since"}``) for the error a second writer gets. The kernel drops a ``flock``
when its holder dies, SIGKILL included, so a lock left by a dead run is taken over at once; the
file itself is never deleted (deleting it would let two writers lock two different files).

Holding the lock is what makes cleaning temporaries safe: any temporary directory found by the
holder was left by an earlier holder that died or failed (orbax's ``cleanup_tmp_directories``).
"""

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

HOST = socket.gethostname()


class CheckpointLockError(RuntimeError):
    """Another live process writes to this checkpoint directory."""


class DirectoryLock:
    """An exclusive writer lock on ``directory`` for process ``process_index``.

    >>> import tempfile
    >>> from rnnjax.train._lock import CheckpointLockError, DirectoryLock
    >>> directory = tempfile.mkdtemp()
    >>> with DirectoryLock(directory):
    ...     try:
    ...         DirectoryLock(directory).acquire()
    ...     except CheckpointLockError as error:
    ...         print("second writer refused")
    second writer refused
    """

    def __init__(self, directory: str | os.PathLike, process_index: int = 0):
        self.path = Path(directory) / f".rnnjax-writer-{int(process_index)}.lock"
        self._fd: int | None = None

    def acquire(self) -> "DirectoryLock":
        """Take the lock, or raise :class:`CheckpointLockError` naming the owner at once."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise CheckpointLockError(self._locked_message()) from None
        owner = {"pid": os.getpid(), "host": HOST, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _locked_message(self) -> str:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            owner = {}
        since = owner.get("since")
        when = ""
        if since is not None:
            when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since))
        return (
            f"checkpoint directory {self.path.parent} is locked by pid {owner.get('pid', '?')} on "
            f"host {owner.get('host', '?')}{when} (lock file {self.path.name}): another run is "
            "writing there. Use another directory, or stop that run first."
        )

    def release(self) -> None:
        """Drop the lock (the file stays, emptied)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
