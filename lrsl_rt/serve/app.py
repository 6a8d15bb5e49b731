"""The ASGI app: ``POST /predict``, the Open Inference Protocol under ``/v2`` (:mod:`.v2`), ``GET /health``,
``GET /info``, ``GET /metrics``.

``/predict`` takes :mod:`.schema`'s body and answers a JSON array with one record per input, in
order, with the fields of the CLI's JSONL records (``Prediction.to_dict``); its body, limits and
batching are :func:`.endpoint.serve_texts`', which ``POST /v2/models/{name}/infer`` shares.

The outermost app is :class:`_RequestGuard`, which tracks every request; it answers the two text
endpoints itself, as plain ASGI, and hands everything else (the other endpoints, 404s, 405s, the
lifespan) to a Starlette app. Every request pays for what runs on its way on the event loop, and
Starlette's layers (middleware, routing, a Request object, a response class) would cost a served
text more than its own JSON does; the other endpoints are not hot and keep Starlette's conveniences.

Every answer of the app is JSON: ``{"error": "..."}`` with 400/404/405/408/413/415/422/429/500/503,
one line, quoting at most a few dozen characters of what the client sent. An unexpected exception is
a 500 with the exception's type, never a traceback. Paths are matched exactly (``/predict/`` is a
404: no redirect built from the client's Host header).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from . import v2
from .endpoint import error as _error
from .endpoint import serve_texts, unavailable
from .metrics import ServeMetrics
from .schema import SHOWN, parse_predict
from .state import ServeState, log

ENDPOINTS_HINT = "endpoints: POST /predict, GET /health, GET /info, GET /metrics, and the Open Inference Protocol under /v2"


# ---- endpoints ----------------------------------------------------------------------------------
async def health(request):
    from starlette.responses import JSONResponse

    state: ServeState = request.app.state.serve
    if state.phase != "ready":
        return unavailable(state)
    return JSONResponse({"status": "ready"})


async def info(request):
    from starlette.responses import JSONResponse

    return JSONResponse(request.app.state.serve.info())


async def metrics(request):
    from starlette.responses import Response

    body, content_type = request.app.state.serve.metrics.render()
    return Response(body, media_type=content_type)


async def predict(state: ServeState, scope, receive, send) -> None:
    """``POST /predict`` as plain ASGI (the module docstring says why not through Starlette)."""
    s = state.settings

    def parse(body: bytes):
        texts, explain = parse_predict(body, s.max_request_texts, s.max_text_chars)
        return texts, explain, state.abstain, None

    await serve_texts(state, scope, receive, send, parse, _records)


def _records(preds: list, context) -> list:
    return [p.to_dict() for p in preds]


# ---- every request: errors, metrics, the drain's bookkeeping --------------------------------------
async def _http_error(request, exc):
    path = request.url.path
    shown = path if len(path) <= SHOWN else path[:SHOWN] + "..."
    if exc.status_code == 404:
        message = f"no endpoint {request.method} {shown}; {ENDPOINTS_HINT}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} not allowed on {shown}; use {allowed}"
    else:
        message = str(exc.detail)
    return _error(exc.status_code, message, headers=exc.headers)


async def _internal_error(request, exc):
    """Starlette's answer to an unexpected exception (the guard around it logs it)."""
    return _error(500, f"internal error ({type(exc).__name__})")


class _RequestGuard:
    """The outermost app: tracks, counts and times every HTTP request, and serves ``POST /predict``.

    - The request is in ``state.active`` until its answer starts: the drain waits for it, and
      :meth:`ServeState.abort` cancels it, which this middleware turns into a JSON 503 (or, if the
      answer had started, into closing the connection), never an exception for uvicorn to print.
    - An unexpected exception becomes a 500 ``{"error": ...}`` and one log line here, so no traceback
      reaches the client or the log (Starlette's outer error middleware would print one).
    """

    def __init__(self, app, state: ServeState, metrics: ServeMetrics) -> None:
        self.app, self.state, self.metrics = app, state, metrics  # app: the Starlette app of the rest
        self.v2_infer = v2.infer_path(state.settings.model_name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, task = time.perf_counter(), [None], asyncio.current_task()

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.state.active[task] = status
        try:
            if scope["method"] == "POST" and scope["path"] == "/predict":
                await predict(self.state, scope, receive, send_status)
            elif scope["method"] == "POST" and scope["path"] == self.v2_infer:
                await v2.infer(self.state, scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            if self.state.stop_reason is None:
                raise
            _uncancel(task)
            if status[0] is None:
                message = f"server shutting down: {self.state.stop_reason}; retry on another server"
                await _error(503, message, headers={"Connection": "close"})(scope, receive, send_status)
        except Exception as e:
            log(f"Error: {scope['method']} {scope['path'][:SHOWN]}: {type(e).__name__}: {e}")
            if status[0] is None:  # no response started yet
                await _error(500, f"internal error ({type(e).__name__})")(scope, receive, send_status)
        finally:
            self.state.active.pop(task, None)
            self.metrics.request(scope["path"], status[0] or 500, time.perf_counter() - start)


def _uncancel(task) -> None:
    if hasattr(task, "uncancel"):  # Python 3.11+: this task goes on after its cancellation
        task.uncancel()


def build_app(state: ServeState, load_first: bool = False):
    """The ASGI app over ``state`` (the guard around a Starlette app); the lifespan loads the bundle in the background.

    With ``load_first`` the lifespan's startup waits for the load, and uvicorn accepts no connection
    before it: a worker that replaces a dead one (:mod:`.supervisor`) leaves the connections on its
    socket waiting in the backlog until it can serve them, rather than answering them 503 "loading"
    while the other workers serve.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loader = asyncio.ensure_future(state.load())
        try:
            if load_first:
                await asyncio.shield(loader)
            yield
        finally:
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            await state.close()

    app = Starlette(
        routes=[
            Route("/predict", _predict_elsewhere, methods=["POST"]),  # the guard answers POST /predict
            Route("/health", health, methods=["GET"]),
            Route("/info", info, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *v2.routes(),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.serve = state
    return _RequestGuard(app, state, state.metrics)


async def _predict_elsewhere(request):  # never reached: the route only makes GET /predict a 405
    raise RuntimeError("POST /predict is answered by the request guard")
