"""The ASGI app (Starlette): ``POST /predict``, ``GET /health``, ``GET /info``, ``GET /metrics``.

Life of a server process, held in :class:`ServeState`:

- ``loading``: the app answers at once, but ``/health`` and ``/predict`` are 503 while a background
  thread loads the bundle and runs a probe prediction (so the first real request pays no warm-up).
  A bundle that fails to load ends the process with exit 1 (``on_fatal``).
- ``ready``: ``/predict`` parses the body (:mod:`.schema`), counts each text's tokens with the
  bundle's tokenizer and hands the texts to the :class:`~.batcher.MicroBatcher`; the answer is a
  JSON array with one record per input, in order, with the fields of the CLI's JSONL records
  (``Prediction.to_dict``).
- ``draining`` (:meth:`ServeState.drain`, on SIGTERM/SIGINT): ``/health`` and new ``/predict`` are 503;
  the queued texts run at once; the state waits for every accepted request to be answered.

Errors are ``{"error": "..."}`` with 404/405/413/422/429/500/503; an unexpected exception is a 500
with the exception's type, never a traceback. A client that disconnects while its texts wait has
them taken out of the queue (:meth:`MicroBatcher.submit` is cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

from ..errors import LrslError
from .batcher import BatchFailed, BatchLimits, Draining, MicroBatcher, QueueFull
from .metrics import ServeMetrics
from .schema import ApiError, parse_predict
from .settings import ServeSettings

PROBE_TEXT = "lrsl-rt serve probe"


def log(message: str) -> None:
    print(f"lrsl-rt serve [{os.getpid()}]: {message}", file=sys.stderr, flush=True)


class ServeState:
    """What one server process knows: its phase, the loaded Reranker and batcher, its metrics."""

    def __init__(self, settings: ServeSettings, on_fatal=None) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.phase = "loading"
        self.reranker = None
        self.batcher: MicroBatcher | None = None
        self.summary: dict | None = None
        self.in_flight = 0  # /predict requests past the phase check and not yet answered
        self.exit_code = 0
        self.on_fatal = on_fatal

    async def load(self) -> None:
        """Load the bundle off the event loop, probe it, start the batcher; on failure exit 1."""
        try:
            self.reranker, self.summary = await asyncio.to_thread(self._load_blocking)
        except (LrslError, OSError) as e:
            self.phase, self.exit_code = "failed", 1
            log(f"Error: {e}")
            if self.on_fatal:
                self.on_fatal()
            return
        s = self.settings
        limits = BatchLimits(s.max_batch_texts, s.max_batch_tokens, s.max_wait_ms / 1e3, s.max_queue_texts)
        self.batcher = MicroBatcher(self.reranker.predict, limits, observer=self.metrics)
        self.batcher.start()
        if self.phase == "loading":  # not draining already
            self.phase = "ready"
            log(f"ready: {self.reranker!r}, {s.threads} ONNX Runtime thread(s)")

    def _load_blocking(self):
        from ..info import bundle_summary
        from ..reranker import Reranker

        s = self.settings
        r = Reranker.from_bundle(
            s.bundle,
            providers=s.provider,
            threads=s.threads,
            batch_size=s.batch_size,
            thread_pool=s.thread_pool,
        )
        r.predict([PROBE_TEXT])  # warm-up before the timing wrappers, so the metrics hold only real work
        r.classifier = self.metrics.timed(r.classifier, "classifier")
        r.embedder = self.metrics.timed(r.embedder, "embedder")
        return r, bundle_summary(Path(s.bundle))

    async def drain(self, timeout: float, delay: float, poll: float = 0.01) -> bool:
        """Stop taking work, answer every accepted request; True when all were answered within ``timeout``."""
        self.phase = "draining"
        log(f"draining: {self.in_flight} request(s) in flight")
        loop = asyncio.get_running_loop()
        start = loop.time()
        if self.batcher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.batcher.drain(), timeout)
        while self.in_flight and loop.time() - start < timeout:
            await asyncio.sleep(poll)
        await asyncio.sleep(max(0.0, delay - (loop.time() - start)))
        if self.in_flight:
            log(f"Error: {self.in_flight} request(s) still unanswered after --drain-timeout {timeout:g} s")
            self.exit_code = 1
        return not self.in_flight

    def info(self) -> dict:
        from ..info import environment

        return {
            "phase": self.phase,
            "pid": os.getpid(),
            "bundle": self.summary,
            "batching": self.settings.batching(),
            "environment": environment(),
        }


# ---- endpoints ----------------------------------------------------------------------------------
def _error(code: int, message: str, headers: dict | None = None, **extra):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message, **extra}, status_code=code, headers=headers)


def _unavailable(state: ServeState):
    reason = {"loading": "loading the bundle", "draining": "draining: shutting down"}.get(
        state.phase, state.phase
    )
    return _error(503, f"not ready: {reason}", status=state.phase)


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


async def predict(request):
    from starlette.responses import JSONResponse

    state: ServeState = request.app.state.serve
    if state.phase != "ready":
        return _unavailable(state)
    s = state.settings
    try:
        body = await _read_body(request, s.max_body_bytes)
        texts, explain = parse_predict(body, s.max_request_texts, s.max_text_chars)
    except ApiError as e:
        return _error(e.status, e.message, e.headers)
    tokens = [len(t) for t in state.reranker.tokenizer.tokenize(texts)]
    state.in_flight += 1
    try:
        preds = await _unless_disconnected(request, state.batcher.submit(texts, tokens, explain))
    except QueueFull as e:
        return _error(429, f"{e}; retry later", headers={"Retry-After": "1"})
    except Draining:
        return _unavailable(state)
    except BatchFailed as e:
        return _error(500, f"model failure in this request's batch: {e}")
    except _ClientGone:
        from starlette.responses import Response

        return Response(status_code=499)  # nobody reads it; the status shows in the metrics
    finally:
        state.in_flight -= 1
    return JSONResponse([p.to_dict() for p in preds])


async def _read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {declared} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _ClientGone(Exception):
    pass


async def _unless_disconnected(request, work):
    """Await ``work``; if the client disconnects first, cancel it (its queued texts leave the queue)."""

    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise _ClientGone()
    return task.result()


# ---- errors and metrics for every request --------------------------------------------------------
async def _http_error(request, exc):
    if exc.status_code == 404:
        message = f"no endpoint {request.method} {request.url.path}; endpoints: POST /predict, GET /health, GET /info, GET /metrics"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} not allowed on {request.url.path}; use {allowed}"
    else:
        message = str(exc.detail)
    return _error(exc.status_code, message, headers=exc.headers)


class _MetricsMiddleware:
    """Counts every HTTP request by endpoint and status, and times it (pure ASGI, so 404s count too).

    An unexpected exception becomes a 500 ``{"error": ...}`` and one log line here, so no traceback
    reaches the client or the log (Starlette's outer error middleware would print one).
    """

    def __init__(self, app, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [None]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as e:
            log(f"Error: {scope['method']} {scope['path']}: {type(e).__name__}: {e}")
            if status[0] is None:  # no response started yet
                response = _error(500, f"internal error ({type(e).__name__})")
                await response(scope, receive, send_status)
        finally:
            self.metrics.request(scope["path"], status[0] or 500, time.perf_counter() - start)


def build_app(state: ServeState):
    """The Starlette app over ``state``; its lifespan loads the bundle in the background."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loader = asyncio.ensure_future(state.load())
        try:
            yield
        finally:
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            if state.batcher is not None:
                await state.batcher.close()

    app = Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/info", info, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        middleware=[Middleware(_MetricsMiddleware, metrics=state.metrics)],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.serve = state
    return app
