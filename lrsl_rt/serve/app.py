"""The ASGI app: ``POST /predict``, ``GET /health``, ``GET /info``, ``GET /metrics``.

``/predict`` reads the body (within ``--body-timeout``, else 408 and close), parses it
(:mod:`.schema`), tokenizes the texts once (:meth:`ServeState.tokenize`) and hands the rows to the
:class:`~.batcher.MicroBatcher`; the answer is a JSON array with one record per input, in order, with
the fields of the CLI's JSONL records (``Prediction.to_dict``).

The outermost app is :class:`_RequestGuard`, which tracks every request; it answers ``POST /predict``
itself, as plain ASGI, and hands everything else (the other endpoints, 404s, 405s, the lifespan) to a
Starlette app. Every request pays for what runs on its way on the event loop, and Starlette's layers
(middleware, routing, a Request object, a response class) would cost a served text more than its own
JSON does; the other endpoints are not hot and keep Starlette's conveniences.

Every answer of the app is JSON: ``{"error": "..."}`` with 404/405/408/413/422/429/500/503, one line,
quoting at most a few dozen characters of what the client sent. An unexpected exception is a 500 with
the exception's type, never a traceback. A client that disconnects while its request is read or waits
is counted with status 499 and its queued texts leave the queue. Paths are matched exactly
(``/predict/`` is a 404: no redirect built from the client's Host header).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from .batcher import BatchFailed, Draining, QueueFull
from .metrics import ServeMetrics
from .schema import SHOWN, ApiError, parse_predict
from .state import ServeState, log

ENDPOINTS_HINT = "endpoints: POST /predict, GET /health, GET /info, GET /metrics"


def _error(code: int, message: str, headers: dict | None = None, **extra):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message, **extra}, status_code=code, headers=headers)


def _unavailable(state: ServeState):
    reason = {"loading": "loading the bundle", "draining": "draining: shutting down"}.get(
        state.phase, state.phase
    )
    return _error(503, f"not ready: {reason}", status=state.phase)


def _gone():
    from starlette.responses import Response

    return Response(status_code=499)  # nobody reads it; the status shows in the metrics


# ---- endpoints ----------------------------------------------------------------------------------
async def health(request):
    from starlette.responses import JSONResponse

    state: ServeState = request.app.state.serve
    if state.phase != "ready":
        return _unavailable(state)
    return JSONResponse({"status": "ready"})


async def info(request):
    from starlette.responses import JSONResponse

    return JSONResponse(request.app.state.serve.info())


async def metrics(request):
    from starlette.responses import Response

    body, content_type = request.app.state.serve.metrics.render()
    return Response(body, media_type=content_type)


JSON_HEADERS = [(b"content-type", b"application/json")]


async def predict(state: ServeState, scope, receive, send) -> None:
    """``POST /predict`` as plain ASGI (the module docstring says why not through Starlette)."""
    if state.phase != "ready":
        return await _unavailable(state)(scope, receive, send)
    s = state.settings
    try:
        body = await _read_body(scope, receive, s.max_body_bytes, s.body_timeout)
        texts, explain = parse_predict(body, s.max_request_texts, s.max_text_chars)
        preds = await _answer(state, receive, texts, explain)
    except ApiError as e:
        answer = _error(e.status, e.message, e.headers)
    except QueueFull as e:
        answer = _error(429, f"{e}; retry later", headers={"Retry-After": "1"})
    except Draining:
        answer = _unavailable(state)
    except BatchFailed as e:
        answer = _error(500, f"model failure in this request's batch: {e}")
    except _ClientGone:
        answer = _gone()
    else:
        return await _send_json(send, [p.to_dict() for p in preds])
    await answer(scope, receive, send)


async def _send_json(send, content) -> None:
    """A 200 with ``content`` as JSON, encoded as Starlette's JSONResponse does (same bytes)."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _answer(state: ServeState, receive, texts: list[str], explain: bool) -> list:
    """The texts' predictions: at once if they can run now on the loop, else through the queue."""
    batcher = state.batcher
    batcher.check_room(len(texts))  # overload answers 429 before tokenizing
    rows = await state.tokenize(texts)
    tokens = [len(r) for r in rows]
    preds = batcher.run_now(rows, tokens, explain)
    if preds is not None:
        return preds
    return await _unless_disconnected(receive, batcher.submit(rows, tokens, explain))


def _content_length(scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value
    return None


async def _read_body(scope, receive, limit: int, timeout: float) -> bytes:
    """The whole body, or ApiError 413 (over ``limit`` bytes) or 408 (not complete within ``timeout`` s);
    _ClientGone if the client disconnects first."""
    declared = _content_length(scope)
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {declared.decode()} bytes; the limit is {limit} bytes")

    async def read() -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    try:
        return await _within(read(), timeout)
    except asyncio.TimeoutError:
        message = f"request body not complete within {timeout:g} s (--body-timeout)"
        raise ApiError(408, message, {"Connection": "close"}) from None


async def _within(coro, timeout: float):
    """``await coro`` or TimeoutError after ``timeout`` s; on Python 3.11+ without a task of its own."""
    if not hasattr(asyncio, "timeout"):  # Python 3.10
        return await asyncio.wait_for(coro, timeout)
    async with asyncio.timeout(timeout):
        return await coro


class _ClientGone(Exception):
    pass


async def _unless_disconnected(receive, work):
    """Await ``work``; if the client disconnects first, cancel it (its queued texts leave the queue)."""

    async def disconnected():
        while (await receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request itself is cancelled (an abort): then the cancellation goes on
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise _ClientGone()
    return task.result()


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
            if scope["path"] == "/predict" and scope["method"] == "POST":
                await predict(self.state, scope, receive, send_status)
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
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.serve = state
    return _RequestGuard(app, state, state.metrics)


async def _predict_elsewhere(request):  # never reached: the route only makes GET /predict a 405
    raise RuntimeError("POST /predict is answered by the request guard")
