"""The path every text endpoint shares: body, parse, batcher, answer -- as plain ASGI.

``POST /predict`` (:mod:`.schema`) and ``POST /v2/models/{name}/infer`` (:mod:`.v2`) differ only in
how a body becomes texts and how predictions become an answer; :func:`serve_texts` does the rest for
both, so they share one set of limits and one set of answers:

- the body is read within ``--body-timeout`` (else 408 and close) and up to the body limit (413,
  from ``Content-Length`` before reading when it is declared); a body with a ``Content-Encoding``
  other than identity is refused with 415 before it is read (it would otherwise reach the JSON
  parser as bytes that are not UTF-8);
- the texts are refused with 429 and ``Retry-After`` when the queue has no room for them, before
  any tokenizing; tokenized once (:meth:`ServeState.tokenize`); then run at once when the batcher is
  idle (:meth:`MicroBatcher.run_now`) or queued;
- a client that disconnects while its body is read or its texts wait is answered 499 (nobody reads
  it; the metrics count it) and its queued texts leave the queue; 503 while loading or draining; 500
  naming the exception type when the model failed on the request's batch.

Every error is ``{"error": "..."}``, one line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from .batcher import BatchFailed, Draining, QueueFull
from .schema import ApiError
from .state import ServeState

JSON_HEADERS = [(b"content-type", b"application/json")]
# parse(body) -> (texts, explain, abstain, context); render(predictions, context) -> the JSON answer
Parse = Callable[[bytes], tuple]
Render = Callable[[list, object], object]


def error(code: int, message: str, headers: dict | None = None, **extra):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message, **extra}, status_code=code, headers=headers)


def unavailable(state: ServeState, **extra):
    reason = {"loading": "loading the bundle", "draining": "draining: shutting down"}.get(
        state.phase, state.phase
    )
    return error(503, f"not ready: {reason}", status=state.phase, **extra)


async def serve_texts(state: ServeState, scope, receive, send, parse: Parse, render: Render) -> None:
    """Answer one text request: ``parse`` its body, run its texts, send ``render`` of the predictions."""
    if state.phase != "ready":
        return await unavailable(state)(scope, receive, send)
    s = state.settings
    try:
        body = await read_body(scope, receive, s.max_body_bytes, s.body_timeout)
        texts, explain, abstain, context = parse(body)
        preds = await _answer(state, receive, texts, explain, abstain)
    except ApiError as e:
        answer = error(e.status, e.message, e.headers)
    except QueueFull as e:
        answer = error(429, f"{e}; retry later", headers={"Retry-After": "1"})
    except Draining:
        answer = unavailable(state)
    except BatchFailed as e:
        answer = error(500, f"model failure in this request's batch: {e}")
    except ClientGone:
        from starlette.responses import Response

        answer = Response(status_code=499)  # nobody reads it; the status shows in the metrics
    else:
        return await send_json(send, render(preds, context))
    await answer(scope, receive, send)


async def send_json(send, content) -> None:
    """A 200 with ``content`` as JSON, encoded as Starlette's JSONResponse does (same bytes)."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _answer(state: ServeState, receive, texts: list[str], explain: bool, abstain: bool) -> list:
    """The texts' predictions: at once if they can run now on the loop, else through the queue."""
    batcher = state.batcher
    batcher.check_room(len(texts))  # overload answers 429 before tokenizing
    rows = await state.tokenize(texts)
    tokens = [len(r) for r in rows]
    preds = batcher.run_now(rows, tokens, explain, abstain)
    if preds is not None:
        return preds
    return await _unless_disconnected(receive, batcher.submit(rows, tokens, explain, abstain))


def _header(scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value
    return None


async def read_body(scope, receive, limit: int, timeout: float) -> bytes:
    """The whole body, or ApiError 415 (compressed), 413 (over ``limit`` bytes) or 408 (not complete
    within ``timeout`` s); ClientGone if the client disconnects first."""
    encoding = _header(scope, b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        shown = encoding.decode("latin-1")[:40]
        raise ApiError(
            415, f"Content-Encoding {shown} is not supported: send the body uncompressed, as JSON in UTF-8"
        )
    declared = _header(scope, b"content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {declared.decode()} bytes; the limit is {limit} bytes")

    async def read() -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
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


class ClientGone(Exception):
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
        raise ClientGone()
    return task.result()
