"""``lrsl-rt serve``: an HTTP service with dynamic micro-batching, overload control and metrics.

Modules, each one idea: :mod:`.settings` (flags, no server imports), :mod:`.schema` (the request
body), :mod:`.batcher` (asyncio micro-batcher), :mod:`.metrics` (Prometheus, a registry per app),
:mod:`.app` (Starlette endpoints and the process's phases), :mod:`.server` (uvicorn with a drain on
SIGTERM) and :mod:`.main` (binding the port, ``--workers``). The server stack (Starlette, uvicorn,
prometheus-client) comes with the ``serve`` extra and is imported only when a server starts.
"""

from __future__ import annotations


def run(args) -> int:
    """``lrsl-rt serve`` with parsed arguments: the exit code."""
    from .main import require_server_stack, serve
    from .settings import settings_from_args

    require_server_stack()
    return serve(settings_from_args(args))
