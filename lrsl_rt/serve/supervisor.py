"""``--workers N``: a supervisor process that keeps one server process on each of N listening sockets.

- The N sockets are bound by :func:`.main.listeners` to one port with ``SO_REUSEPORT``: the kernel
  hands each new connection to one of them, so a burst of connections is spread over the workers
  rather than taken by whichever worker woke first (on Linux; elsewhere they are one shared socket). The supervisor keeps every socket open for its
  whole life, so a socket stays in the kernel's group, and keeps its accept queue, while its worker
  is replaced.
- Worker ``i`` is ``python -m lrsl_rt.serve.main --fd FD --parent PID``, FD being socket ``i`` (the
  only one it inherits); it gets the settings in ``$LRSL_RT_SERVE_SETTINGS`` and loads its own bundle
  copy with an explicit ONNX Runtime thread count (ONNX Runtime ignores OMP_NUM_THREADS and the like).
- The workers share one directory of metric files (``$PROMETHEUS_MULTIPROC_DIR``, removed at exit),
  so ``/metrics`` counts the whole server whichever worker answers (:mod:`.metrics`), and, with
  ``--solo-threads``, the lock file that tells a worker whether it runs alone (:mod:`.cores`).
- SIGTERM/SIGINT are forwarded to every worker (a second one too: it makes the workers give up their
  drain). Handlers only record the signal; the watch loop forwards it, so a worker started meanwhile
  is not missed.
- A worker that dies while the server is not stopping -- killed by a signal (the OOM killer,
  ``kill -9``, a crash) or exited 0 -- is replaced while the others keep serving. The requests it
  was answering are lost with it; nobody else's are. Its replacement inherits its socket and starts
  with ``--load-first``: it accepts only once its bundle is loaded, so the connections the kernel
  sends to that socket meanwhile wait in its backlog (they are delayed by the restart, not lost and
  not answered 503). A worker that exits with any other code failed on its own (a bundle that does
  not load, bad settings): the others are stopped and the supervisor exits 1, as it does after
  ``MAX_RESTARTS`` replacements within ``RESTART_WINDOW`` seconds.
- A worker whose supervisor disappears (``kill -9`` of the supervisor) notices its new parent and
  drains as on SIGTERM (:class:`.server.DrainingServer`), so no orphan keeps the port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque

from .cores import CORES_ENV, INDEX_ENV, create_lock_file
from .metrics import MULTIPROC_ENV
from .settings import SETTINGS_ENV, ServeSettings

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
POLL = 0.05  # seconds between looks at the workers


def say(message: str) -> None:
    print(f"lrsl-rt serve: {message}", file=sys.stderr, flush=True)


def describe_exit(code: int) -> str:
    """How a worker ended, from its return code.

    >>> describe_exit(-9), describe_exit(3)
    ('was killed by SIGKILL', 'exited with 3')
    """
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


def supervise(settings: ServeSettings, socks: list[socket.socket]) -> int:
    """Run one worker on each socket of ``socks`` until they have all stopped; the exit code."""
    shared = tempfile.mkdtemp(prefix="lrsl-serve-metrics-")
    env = {**os.environ, SETTINGS_ENV: settings.to_json(), MULTIPROC_ENV: shared}
    if settings.solo_threads:
        env[CORES_ENV] = os.path.join(shared, "cores.lock")
        create_lock_file(env[CORES_ENV], len(socks))
    cmd = [sys.executable, "-m", "lrsl_rt.serve.main", "--parent", str(os.getpid())]
    pool = WorkerPool(cmd, env, [s.fileno() for s in socks], shared)
    previous = {s: signal.signal(s, pool.record_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        pool.start()
        return pool.watch()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        pool.kill_all()  # only if the supervisor itself failed; the workers have stopped otherwise
        for sock in socks:
            sock.close()
        shutil.rmtree(shared, ignore_errors=True)


class WorkerPool:
    """``workers[i]`` serves on the socket ``fds[i]``; a replacement takes the same index."""

    def __init__(self, cmd: list[str], env: dict, fds: list[int], shared: str) -> None:
        self.cmd, self.env, self.fds, self.shared = cmd, env, fds, shared
        self.workers: list[subprocess.Popen] = []
        self.received: list[int] = []  # signals to forward, in order
        self.forwarded = 0
        self.failed = False
        self.restarts: deque[float] = deque()

    def start(self) -> None:
        self.workers = [self._spawn(i) for i in range(len(self.fds))]

    def _spawn(self, i: int, replacement: bool = False) -> subprocess.Popen:
        fd = self.fds[i]
        cmd = self.cmd + ["--fd", str(fd)] + (["--load-first"] if replacement else [])
        env = {**self.env, INDEX_ENV: str(i)}
        return subprocess.Popen(cmd, env=env, pass_fds=[fd], start_new_session=True)

    def record_signal(self, sig, frame) -> None:
        self.received.append(sig)

    def watch(self) -> int:
        while True:
            self._forward()
            for i, w in enumerate(self.workers):
                if w.poll() is not None and not self.received and not self.failed:
                    self._replace_or_stop(i)
            if all(w.poll() is not None for w in self.workers):
                break
            time.sleep(POLL)
        return 1 if self.failed or any(w.returncode for w in self.workers) else 0

    def _forward(self) -> None:
        while self.forwarded < len(self.received):
            sig = self.received[self.forwarded]
            self.forwarded += 1
            self._send(sig)

    def _send(self, sig: int) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(sig)

    def _replace_or_stop(self, i: int) -> None:
        dead = self.workers[i]
        self._forget(dead.pid)
        how = describe_exit(dead.returncode)
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        if dead.returncode > 0 or len(self.restarts) >= MAX_RESTARTS:
            why = "" if dead.returncode > 0 else f" ({MAX_RESTARTS} replacements in {RESTART_WINDOW:g} s)"
            say(f"Error: worker {dead.pid} {how}{why}; stopping the others")
            self.failed = True
            self._send(signal.SIGTERM)
            return
        self.restarts.append(now)
        self.workers[i] = self._spawn(i, replacement=True)
        say(f"worker {dead.pid} {how}; started worker {self.workers[i].pid} in its place")

    def _forget(self, pid: int) -> None:
        """Drop a dead worker's live gauges from the shared metrics (its counters stay counted)."""
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.shared)

    def kill_all(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.kill()
                w.wait()
