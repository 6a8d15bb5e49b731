"""Running the server: one uvicorn process, or ``--workers N`` of them on one listening socket.

- The port is bound here, before any worker starts, and its real number is printed on stderr as
  ``lrsl-rt serve: listening on http://HOST:PORT ...`` (so ``--port 0`` is usable: scripts read it).
  Connections that arrive while a worker starts wait in the socket's backlog.
- ``--workers 1``: uvicorn runs in this process on that socket.
- ``--workers N``: this process becomes a supervisor. It starts N ``python -m lrsl_rt.serve.main
  --fd FD`` workers that inherit the socket (the kernel spreads connections among their accept
  calls) and get the settings in ``$LRSL_RT_SERVE_SETTINGS``; each loads its own bundle copy with
  an explicit ONNX Runtime thread count (ONNX Runtime ignores OMP_NUM_THREADS and the like, so the
  count must be set per process). SIGTERM/SIGINT are forwarded to every worker; a worker that dies
  on its own stops the others and the supervisor exits 1.
- Shutdown (:class:`.server.DrainingServer`): the first SIGTERM or SIGINT starts the drain
  (:meth:`ServeState.drain`: ``/health`` 503, queued texts run, accepted requests answered,
  ``--drain-delay`` kept), then uvicorn stops listening and exits; exit 0 when every accepted
  request was answered within ``--drain-timeout``, else 1. A second signal stops at once.
  uvicorn's own handler is replaced because it stops listening first and re-raises the signal
  after shutdown (so the process would die by SIGTERM rather than exit 0).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from ..errors import LrslError, UsageError
from .settings import SETTINGS_ENV, ServeSettings

EXTRA_HINT = "pip install 'lrsl-rt[serve]'"


def require_server_stack() -> None:
    """LrslError naming the extra when Starlette, uvicorn or prometheus-client is missing."""
    missing = []
    for module in ("starlette", "uvicorn", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise LrslError(f"`lrsl-rt serve` needs {', '.join(missing)}: {EXTRA_HINT}")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, with TCP_NODELAY set so that every accepted connection inherits it.

    asyncio turns Nagle's algorithm off only on sockets whose protocol number is IPPROTO_TCP, and a
    socket made by ``socket.create_server`` has protocol 0: without this, uvicorn's response body
    (written after its headers) waits on a keep-alive connection for the client's delayed ACK.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.create_server((host, port), family=family, backlog=2048)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, IndexError) as e:
        raise UsageError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from e
    return sock


def serve(settings: ServeSettings) -> int:
    """Bind, announce the port, serve until a signal; the exit code."""
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"lrsl-rt serve: listening on http://{shown}:{port} ({settings.workers} worker(s), "
        f"{settings.threads} ONNX Runtime thread(s) each)",
        file=sys.stderr,
        flush=True,
    )
    if settings.workers == 1:
        from .server import run_worker

        return run_worker(settings, sock)
    return supervise(settings, sock)


# ---- --workers N -----------------------------------------------------------------------------------
def supervise(settings: ServeSettings, sock: socket.socket) -> int:
    fd = sock.fileno()
    os.set_inheritable(fd, True)
    env = {**os.environ, SETTINGS_ENV: settings.to_json()}
    cmd = [sys.executable, "-m", "lrsl_rt.serve.main", "--fd", str(fd)]
    workers = [
        subprocess.Popen(cmd, env=env, pass_fds=[fd], start_new_session=True) for _ in range(settings.workers)
    ]
    stopping = []

    def forward(sig, frame) -> None:
        stopping.append(sig)
        for w in workers:
            if w.poll() is None:
                w.send_signal(sig)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _watch(workers, stopping)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()


def _watch(workers: list[subprocess.Popen], stopping: list) -> int:
    failed = False
    while any(w.poll() is None for w in workers):
        dead = [w for w in workers if w.poll() is not None]
        if dead and not stopping:  # a worker died on its own: stop the rest
            failed = True
            print(
                f"lrsl-rt serve: worker {dead[0].pid} exited with {dead[0].returncode}; stopping the others",
                file=sys.stderr,
                flush=True,
            )
            stopping.append(signal.SIGTERM)
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
        time.sleep(0.1)
    codes = [w.returncode for w in workers]
    return 1 if failed or any(codes) else 0


def worker_main(argv: list[str] | None = None) -> int:
    """Entry of one ``--workers`` process: the settings from the environment, the socket from --fd."""
    p = argparse.ArgumentParser(prog="python -m lrsl_rt.serve.main")
    p.add_argument("--fd", type=int, required=True)
    args = p.parse_args(argv)
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    sock = socket.socket(fileno=args.fd)
    try:
        require_server_stack()
        from .server import run_worker

        return run_worker(settings, sock)
    except LrslError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(worker_main())
