"""One server process: uvicorn over the app, with a drain on SIGTERM/SIGINT (see :mod:`.main`).

Imported only by a process that serves, since it imports uvicorn at the top. The HTTP/1.1 parser is
httptools (llhttp), behind :mod:`.protocol`'s connection guard.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket

import uvicorn

from .app import build_app
from .protocol import guarded_protocol
from .settings import ServeSettings
from .state import ServeState, log

SHUTDOWN_GRACE = 2.0  # seconds uvicorn waits for connections after the drain, which answered every request
SPARE_FILES = 64  # open files beyond the connections: the bundle, the listening socket, the log


class DrainingServer(uvicorn.Server):
    """uvicorn's Server whose first SIGTERM/SIGINT drains before uvicorn stops listening.

    uvicorn's own handler stops listening at once and re-raises the signal after its shutdown (the
    process would then die by SIGTERM, not exit 0); this one lets :meth:`ServeState.drain` finish,
    then sets ``should_exit``. A second signal answers the requests still in flight with 503 now
    (:meth:`ServeState.abort`, exit code 1) and exits. A worker whose supervisor is gone (``parent``:
    the pid it was started by) drains as on SIGTERM, so no orphan holds the port.
    """

    def __init__(self, config: uvicorn.Config, state: ServeState, parent: int | None = None) -> None:
        super().__init__(config)
        self.state = state
        self.parent = parent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task | None = None
        self._signals = 0

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig, frame) -> None:
        self._signals += 1
        if self._loop is None:
            self.should_exit = True
        elif self._signals == 1:
            self._loop.call_soon_threadsafe(self._start_drain)
        else:
            self._loop.call_soon_threadsafe(self._stop_now)

    async def on_tick(self, counter: int) -> bool:
        if self.parent is not None and self._signals == 0 and os.getppid() != self.parent:
            log(f"the supervisor {self.parent} is gone; draining")
            self._signals = 1
            self._start_drain()
        return await super().on_tick(counter)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        s = self.state.settings
        await self.state.drain(s.drain_timeout, s.drain_delay)
        self.should_exit = True

    def _stop_now(self) -> None:
        self.state.abort("stopped by a second signal")
        if self._drain_task is not None:
            self._drain_task.cancel()
        self.should_exit = True


def raise_file_limit(needed: int) -> None:
    """Raise the soft open-file limit towards ``needed`` (up to the hard limit); warn when it falls short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < needed:
        log(f"warning: the open-file limit ({hard}) is below --max-connections + {SPARE_FILES}")


def run_worker(
    settings: ServeSettings, sock: socket.socket, parent: int | None = None, load_first: bool = False
) -> int:
    """Serve on ``sock`` until drained or the bundle fails to load; the exit code.

    ``load_first``: accept connections only once the bundle is loaded, rather than answering 503
    while it loads (:func:`.app.build_app`).
    """
    server: DrainingServer | None = None

    def fatal() -> None:
        if server is not None:
            server.should_exit = True

    raise_file_limit(settings.max_connections + SPARE_FILES)
    state = ServeState(settings, on_fatal=fatal)
    config = uvicorn.Config(
        build_app(state, load_first),
        http=guarded_protocol(settings, state.metrics),
        ws="none",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # nothing here reads the client's address: no middleware to rewrite it
        log_level="warning",
        timeout_keep_alive=settings.idle_timeout,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    server = DrainingServer(config, state, parent)
    server.run(sockets=[sock])
    return state.exit_code
