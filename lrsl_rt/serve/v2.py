"""The Open Inference Protocol (KServe / Triton "v2" REST) beside ``/predict``, on the same batcher.

Endpoints (the bundle is one model; its name is ``--model-name``, :func:`.settings.model_name_of`):

- ``GET /v2/health/live``: 200 ``{"live": true}`` while the process answers at all -- loading and
  draining included, so a liveness probe never kills a server that is busy starting or stopping;
- ``GET /v2/health/ready`` and ``GET /v2/models/{name}/ready``: 200 ``{"ready": true}`` once the
  bundle is loaded, 503 ``{"ready": false, "error": ...}`` while it loads or drains (the readiness
  probe: a load balancer stops sending before the drain closes the port). Every v2 client reads a
  status other than 200 as false;
- ``GET /v2``: server metadata (``name``, ``version``, ``extensions`` -- none);
- ``GET /v2/models/{name}``: model metadata, the input tensor ``text`` (BYTES) and the outputs this
  bundle can give (:mod:`.v2_schema`);
- ``POST /v2/models/{name}/infer``: :mod:`.v2_schema`'s body, answered through
  :func:`.endpoint.serve_texts` exactly as ``/predict`` is: same queue, same limits, same 413/429/
  503, the same records (so the same labels for the same texts).

A model name other than the server's is a 404 naming the served one; model versions are not served
(``/v2/models/{name}/versions/...`` is a 404 saying so). Errors are the v2 error object
``{"error": "..."}``: 400 for a request the protocol's schema refuses.
"""

from __future__ import annotations

import uuid

from .endpoint import error, serve_texts, unavailable
from .state import ServeState
from .v2_schema import (
    BINARY_HINT,
    INPUT,
    available_outputs,
    check_outputs,
    infer_response,
    parse_infer,
    tensor_metadata,
)

PREFIX = "/v2"


def infer_path(model: str) -> str:
    return f"{PREFIX}/models/{model}/infer"


async def infer(state: ServeState, scope, receive, send) -> None:
    """``POST /v2/models/{name}/infer`` for the served name, as plain ASGI (the request guard calls it)."""
    if any(name == b"inference-header-content-length" for name, _ in scope["headers"]):
        return await error(400, f"binary tensor data is not supported; {BINARY_HINT}")(scope, receive, send)
    s = state.settings

    def parse(body: bytes):
        req = parse_infer(body, s.max_request_texts, s.max_text_chars)
        abstain = state.abstain_for(req.abstain)
        have = available_outputs(abstain, req.explain, _has_exits(state))
        if req.outputs is not None:
            check_outputs(req.outputs, have)
        return req.texts, req.explain, abstain, (req.id or uuid.uuid4().hex, req.outputs or have)

    def render(preds: list, context):
        request_id, names = context
        return infer_response(s.model_name, request_id, names, preds)

    await serve_texts(state, scope, receive, send, parse, render)


def _has_exits(state: ServeState) -> bool:
    return bool(state.summary and state.summary["exits"])


def _json(content, status: int = 200):
    from starlette.responses import JSONResponse

    return JSONResponse(content, status_code=status)


def _state(request) -> ServeState:
    return request.app.state.serve


def _unknown_model(request):
    """404 naming the served model, or None when the path names it."""
    served = _state(request).settings.model_name
    asked = request.path_params["name"]
    if asked == served:
        return None
    shown = asked if len(asked) <= 40 else asked[:40] + "..."
    return error(
        404, f"unknown model {shown!r}; this server serves {served!r} (GET {PREFIX}/models/{served})"
    )


# ---- endpoints (through Starlette: none of them is hot) ---------------------------------------------
async def live(request):
    return _json({"live": True})


async def ready(request):
    state = _state(request)
    if state.phase == "ready":
        return _json({"ready": True})
    return unavailable(state, ready=False)


async def server_metadata(request):
    from .. import __version__

    return _json({"name": "lrsl-rt", "version": __version__, "extensions": []})


async def model_ready(request):
    state = _state(request)
    name = state.settings.model_name
    if (refused := _unknown_model(request)) is not None:
        return refused
    if state.phase == "ready":
        return _json({"name": name, "ready": True})
    return unavailable(state, name=name, ready=False)


async def model_metadata(request):
    state = _state(request)
    if (refused := _unknown_model(request)) is not None:
        return refused
    if state.phase != "ready":  # what the model gives is known once its bundle is loaded
        return unavailable(state)
    can_abstain = state.reranker.manifest.abstain is not None
    outputs = available_outputs(can_abstain, True, _has_exits(state))
    return _json(
        {
            "name": state.settings.model_name,
            "platform": "lrsl-rt",
            "inputs": tensor_metadata([INPUT]),
            "outputs": tensor_metadata(outputs),
            "parameters": {"abstain": state.abstain, "labels": list(state.reranker.labels)},
        }
    )


async def other_model_infer(request):  # the served name's POST is answered by the request guard
    refused = _unknown_model(request)
    if refused is None:
        raise RuntimeError("POST infer of the served model is answered by the request guard")
    return refused


async def versions(request):
    served = _state(request).settings.model_name
    return error(404, f"model versions are not served; use {PREFIX}/models/{served} and {infer_path(served)}")


def routes() -> list:
    from starlette.routing import Route

    models = f"{PREFIX}/models/{{name}}"
    return [
        Route(PREFIX, server_metadata, methods=["GET"]),
        Route(f"{PREFIX}/health/live", live, methods=["GET"]),
        Route(f"{PREFIX}/health/ready", ready, methods=["GET"]),
        Route(models, model_metadata, methods=["GET"]),
        Route(f"{models}/ready", model_ready, methods=["GET"]),
        Route(f"{models}/infer", other_model_infer, methods=["POST"]),
        Route(f"{models}/versions/{{rest:path}}", versions, methods=["GET", "POST"]),
    ]
