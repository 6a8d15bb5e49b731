"""One server process: uvicorn over the app, with a drain on SIGTERM/SIGINT (see :mod:`.main`).

Imported only by a process that serves, since it imports uvicorn at the top.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from .app import ServeState, build_app
from .settings import ServeSettings


class DrainingServer(uvicorn.Server):
    """uvicorn's Server whose first SIGTERM/SIGINT drains before uvicorn stops listening.

    uvicorn's own handler stops listening at once and re-raises the signal after its shutdown (the
    process would then die by SIGTERM, not exit 0); this one lets :meth:`ServeState.drain` finish,
    then sets ``should_exit``. A second signal stops at once (``force_exit``).
    """

    def __init__(self, config: uvicorn.Config, state: ServeState) -> None:
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig, frame) -> None:
        if self._draining or self._loop is None:
            self.should_exit = self.force_exit = True
            return
        self._draining = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        s = self.state.settings
        await self.state.drain(s.drain_timeout, s.drain_delay)
        self.should_exit = True


def run_worker(settings: ServeSettings, sock: socket.socket) -> int:
    """Serve on ``sock`` until drained or the bundle fails to load; the exit code."""
    server: DrainingServer | None = None

    def fatal() -> None:
        if server is not None:
            server.should_exit = True

    state = ServeState(settings, on_fatal=fatal)
    config = uvicorn.Config(
        build_app(state),
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=max(1.0, settings.drain_timeout),
    )
    server = DrainingServer(config, state)
    server.run(sockets=[sock])
    return state.exit_code
