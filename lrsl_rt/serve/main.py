"""Running the server: one uvicorn process, or ``--workers N`` of them, each on its own listening socket.

- The port is bound here, before any worker starts, and its real number is printed on stderr as
  ``lrsl-rt serve: listening on http://HOST:PORT ...`` (so ``--port 0`` is usable: scripts read it).
  Connections that arrive while a worker starts wait in its socket's backlog. A port that is taken
  is a one-line usage error here, before any worker starts.
- ``--workers 1``: uvicorn runs in this process on one socket.
- ``--workers N``: :func:`listeners` binds N sockets to the same address with ``SO_REUSEPORT`` and
  the kernel spreads new connections over them by a hash of each connection's addresses (nginx's
  ``reuseport``). On one shared socket, the worker whose event loop woke first would accept every
  connection pending in the backlog at once, and a burst of connections would land on one worker
  while another sat idle. Before binding them, a plain bind (no ``SO_REUSEPORT``, no listen) checks
  that nobody holds the port, since a second server run by the same user could otherwise join the
  same ``SO_REUSEPORT`` group silently. (Linux only: elsewhere the workers share one socket.) This
  process then becomes a supervisor (:mod:`.supervisor`): it keeps one worker process on each
  socket, replaces one that dies, and forwards SIGTERM/SIGINT.
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


BACKLOG = 2048  # connections each listening socket holds until its worker accepts them


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket, with TCP_NODELAY set so that every accepted connection inherits it.

    asyncio turns Nagle's algorithm off only on sockets whose protocol number is IPPROTO_TCP, and a
    socket made by ``socket.create_server`` has protocol 0: without this, uvicorn's response body
    (written after its headers) waits on a keep-alive connection for the client's delayed ACK.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=reuse_port)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, IndexError) as e:
        raise _cannot_listen(host, port, e) from e
    return sock


def free_port(host: str, port: int) -> int:
    """``port`` (or the one the kernel picks for 0) after a plain bind showed that nobody holds it.

    The probe sets neither ``SO_REUSEPORT`` nor listens, and is closed at once: it fails against any
    socket on the port, a ``SO_REUSEPORT`` listener of another server included.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as create_server does
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind((host, port))
            return probe.getsockname()[1]
    except (OSError, IndexError) as e:
        raise _cannot_listen(host, port, e) from e


def listeners(host: str, port: int, n: int) -> list[socket.socket]:
    """One listening socket per worker: a plain one for one worker, else ``n`` on one port with ``SO_REUSEPORT``.

    Only Linux spreads connections over ``SO_REUSEPORT`` sockets (macOS hands them all to one), so
    elsewhere every worker gets the same plain socket.
    """
    if n == 1 or not sys.platform.startswith("linux"):
        return [bind(host, port)] * n
    port = free_port(host, port)
    return [bind(host, port, reuse_port=True) for _ in range(n)]


def _cannot_listen(host: str, port: int, e: Exception) -> UsageError:
    return UsageError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}")


def serve(settings: ServeSettings) -> int:
    """Bind, announce the port, serve until a signal; the exit code."""
    socks = listeners(settings.host, settings.port, settings.workers)
    host, port = socks[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"lrsl-rt serve: listening on http://{shown}:{port} ({settings.workers} worker(s), "
        f"{settings.threads} ONNX Runtime thread(s) each"
        + (f", {settings.solo_threads} for a batch that runs alone)" if settings.solo_threads else ")"),
        file=sys.stderr,
        flush=True,
    )
    if settings.workers == 1:
        from .server import run_worker

        return run_worker(settings, socks[0])
    from .supervisor import supervise

    return supervise(settings, socks)


def worker_main(argv: list[str] | None = None) -> int:
    """Entry of one ``--workers`` process: the settings from the environment, its socket from --fd."""
    p = argparse.ArgumentParser(prog="python -m lrsl_rt.serve.main")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--parent", type=int, help="the supervisor's pid: drain when it is gone")
    p.add_argument(
        "--load-first",
        action="store_true",
        help="accept connections only once the bundle is loaded (a worker that replaces a dead one)",
    )
    args = p.parse_args(argv)
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    sock = socket.socket(fileno=args.fd)
    try:
        require_server_stack()
        from .server import run_worker

        return run_worker(settings, sock, parent=args.parent, load_first=args.load_first)
    except LrslError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(worker_main())
