"""Every core for a batch that runs alone: the workers of one server share a lock file.

One single-thread worker per core serves the most under concurrent load (no synchronisation between
threads, a long batch holds one core only), but a lone request then runs on one core while the others
idle; one worker with every core answers it sooner and serves less under load. With ``--solo-threads``
a worker keeps a second set of ONNX Runtime sessions with that many threads and picks per batch:

- a batch runs *alone*, on the solo sessions, when the worker takes the server's lock file
  exclusively without waiting (``flock``: no other worker is running a batch) and every other worker
  has been quiet -- no batch ending -- for ``QUIET_SECONDS``. The lock file holds each worker's last
  batch end (``CLOCK_MONOTONIC``, one slot per worker index). The quiet window keeps a busy server on
  one thread per worker: under load a worker is between two batches for a moment only, and a solo
  batch then would make the other workers wait for it.
- otherwise the batch takes the lock shared (every worker's batches do) and runs on the worker's own
  ``--threads`` sessions; while a solo batch runs, it first waits for that batch to end, so a solo
  batch and another worker's batch never share the cores.

The lock is released after each batch; the kernel releases it too when a worker dies, so a killed
worker never blocks the others, and its slot only ages. The thread count changes no answer: ONNX
Runtime splits a run's work by output rows and columns, so every value is computed the same way on one
thread or several (the serve tests compare the records of a solo server with a single-thread one's).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import time
from collections.abc import Iterator

CORES_ENV = "LRSL_RT_SERVE_CORES_LOCK"  # the lock file's path, set by a --workers supervisor
INDEX_ENV = "LRSL_RT_SERVE_WORKER_INDEX"  # this worker's slot in it
QUIET_SECONDS = 0.01  # how long the other workers must have run no batch before one runs alone
_SLOT = struct.Struct("d")


def create_lock_file(path: str | os.PathLike, workers: int) -> None:
    """The lock file of ``workers`` workers: one slot each, every worker quiet since the clock's start."""
    with open(path, "wb") as f:
        f.write(_SLOT.pack(0.0) * workers)


class CoreLease:
    """Worker ``index``'s handle on the server's lock file (its own open file, as ``flock`` needs)."""

    def __init__(self, path: str | os.PathLike, index: int) -> None:
        self._fd = os.open(path, os.O_RDWR)
        self._slots = mmap.mmap(self._fd, 0)
        self._others = [i for i in range(len(self._slots) // _SLOT.size) if i != index]
        self._index = index

    def others_quiet(self, now: float) -> bool:
        """No other worker has ended a batch within QUIET_SECONDS before ``now``."""
        return all(
            now - _SLOT.unpack_from(self._slots, i * _SLOT.size)[0] >= QUIET_SECONDS for i in self._others
        )

    def try_alone(self) -> bool:
        """Take the lock exclusively if this batch can run alone now, without waiting; True if taken
        (then :meth:`release` after the batch)."""
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another worker is running a batch
        if self.others_quiet(time.monotonic()):
            return True
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return False

    def share(self) -> None:
        """Take the lock shared for a batch on the worker's own threads: waits only while a solo batch runs."""
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        """After a batch: note its end in this worker's slot and let go of the lock."""
        import fcntl

        _SLOT.pack_into(self._slots, self._index * _SLOT.size, time.monotonic())
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def batch(self) -> Iterator[bool]:
        """Hold the lock for one batch; yields True when the batch runs alone (on every core)."""
        alone = self.try_alone()
        if not alone:
            self.share()
        try:
            yield alone
        finally:
            self.release()

    def close(self) -> None:
        self._slots.close()
        os.close(self._fd)
