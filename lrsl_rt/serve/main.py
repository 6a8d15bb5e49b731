"""Running the server: one uvicorn process, or ``--workers N`` of them on one listening socket.

- The port is bound here, before any worker starts, and its real number is printed on stderr as
  ``lrsl-rt serve: listening on http://HOST:PORT ...`` (so ``--port 0`` is usable: scripts read it).
  Connections that arrive while a worker starts wait in the socket's backlog.
- ``--workers 1``: uvicorn runs in this process on that socket.
- ``--workers N``: this process becomes a supervisor (:mod:`.supervisor`): it keeps N worker
  processes on the socket, replaces one that dies, and forwards SIGTERM/SIGINT.
- Shutdown (:class:`.server.DrainingServer`): the first SIGTERM or SIGINT starts the drain
  (:meth:`ServeState.drain`: ``/health`` 503, queued texts run, accepted requests answered,
  ``--drain-delay`` kept), then uvicorn stops listening and exits; exit 0 when every accepted
  request was answered within ``--drain-timeout``, else 1. A second signal answers the requests still
  in flight with 503 and stops (exit 1 if there were any). uvicorn's own handler is replaced because
  it stops listening first and re-raises the signal after shutdown (so the process would die by
  SIGTERM rather than exit 0).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from ..errors import LrslError, UsageError
from .settings import SETTINGS_ENV, ServeSettings

EXTRA_HINT = "pip install 'lrsl-rt[serve]'"


def require_server_stack() -> None:
    """LrslError naming the extra when Starlette, uvicorn, httptools or prometheus-client is missing."""
    missing = []
    for module in ("starlette", "uvicorn", "httptools", "prometheus_client"):
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
    from .supervisor import supervise

    return supervise(settings, sock)


def worker_main(argv: list[str] | None = None) -> int:
    """Entry of one ``--workers`` process: the settings from the environment, the socket from --fd."""
    p = argparse.ArgumentParser(prog="python -m lrsl_rt.serve.main")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--parent", type=int, help="the supervisor's pid: drain when it is gone")
    args = p.parse_args(argv)
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    sock = socket.socket(fileno=args.fd)
    try:
        require_server_stack()
        from .server import run_worker

        return run_worker(settings, sock, parent=args.parent)
    except LrslError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(worker_main())
