"""``lrsl-rt serve``: an HTTP service with dynamic micro-batching, overload control and metrics.

Modules, each one idea: :mod:`.settings` (flags, no server imports), :mod:`.env` (each flag from
an ``LRSL_RT_*`` variable), :mod:`.schema` (the ``/predict`` body), :mod:`.v2_schema` (the Open
Inference Protocol's inference body and answer), :mod:`.batcher` (asyncio micro-batcher),
:mod:`.runner` (where a batch runs), :mod:`.metrics` (Prometheus, a registry per app or one
directory per ``--workers`` server), :mod:`.state` (the process's phases, its requests in flight,
the drain), :mod:`.endpoint` (the path every text endpoint shares: body, limits, batcher, answer),
:mod:`.v2` (the Open Inference Protocol's endpoints), :mod:`.app` (the other endpoints, the routes
and the per-request middleware),
:mod:`.protocol` (the connection guard over uvicorn's httptools protocol), :mod:`.server` (uvicorn
with a drain on SIGTERM), :mod:`.supervisor` (``--workers N``: replace dead workers) and
:mod:`.main` (binding the port). The server stack (Starlette, uvicorn, httptools, prometheus-client)
comes with the ``serve`` extra and is imported only when a server starts.
"""

from __future__ import annotations


def run(args) -> int:
    """``lrsl-rt serve`` with parsed arguments: the exit code."""
    from .main import require_server_stack, serve
    from .settings import settings_from_args

    require_server_stack()
    return serve(settings_from_args(args))
