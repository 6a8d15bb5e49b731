"""The Open Inference Protocol (v2 REST) of ``lrsl-rt serve``, through a real server process on 127.0.0.1.

Requests follow the protocol's examples (the KServe/Triton "Predict Protocol - Version 2": health,
metadata, ``{"inputs": [{"name", "shape", "datatype", "data"}]}``), sent raw with httpx and through
Triton's own HTTP client (``tritonclient[http]``, in the dev extra). The labels must equal
``/predict``'s for the same texts on the same server: both go through one batcher to one Reranker.
"""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httptools")
pytest.importorskip("prometheus_client")
from serve_client import Server, metric_values, value  # noqa: E402

from lrsl_rt.prediction import RECORD_FIELDS  # noqa: E402

TEXTS = ["my card is still not here", "exchange rate euro dollar", "why did my top up fail", ""]
MODEL = "tiny"
INFER = f"/v2/models/{MODEL}/infer"
BASE = [
    name for name in RECORD_FIELDS if name != "fused_score"
]  # the record's fields; fused_score can be null


def tensor(data, shape=None, name="text", datatype="BYTES") -> dict:
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


@pytest.fixture(scope="module")
def server(tiny_bundle_fp32):
    s = Server(tiny_bundle_fp32, "--model-name", MODEL, "--max-request-texts", "8", "--max-text-chars", "200")
    try:
        s.wait_ready()
        yield s
    finally:
        assert s.stop() == 0, s.log
        assert "Traceback" not in s.log, s.log


def outputs(answer: dict) -> dict:
    """{name: data} of a v2 answer, after checking each tensor's shape and datatype."""
    got = {}
    for out in answer["outputs"]:
        assert out["shape"] == [len(out["data"])]
        kind = {"BYTES": str, "FP32": float, "BOOL": bool, "INT64": int, "INT32": int}[out["datatype"]]
        assert all(isinstance(x, kind) for x in out["data"]), out
        got[out["name"]] = out["data"]
    return got


# ---- health and metadata ----------------------------------------------------------------------------
def test_health_metadata_and_model_ready(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert (r := c.get("/v2/health/live")).status_code == 200 and r.json() == {"live": True}
        assert (r := c.get("/v2/health/ready")).status_code == 200 and r.json() == {"ready": True}
        assert c.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
        meta = c.get("/v2").json()
        assert meta["name"] == "lrsl-rt" and meta["version"] and meta["extensions"] == []
        model = c.get(f"/v2/models/{MODEL}").json()
        assert model["name"] == MODEL and model["platform"] == "lrsl-rt"
        assert model["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert [o["name"] for o in model["outputs"]] == [*BASE, "explanation"]  # no exits, no abstain
        assert c.get("/info").json()["model_name"] == MODEL


def test_unknown_models_and_versions_are_404_with_the_served_name(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path in (
            ("GET", "/v2/models/other"),
            ("GET", "/v2/models/other/ready"),
            ("POST", "/v2/models/other/infer"),
        ):
            r = c.request(method, path, json={"inputs": [tensor(["a"])]})
            assert r.status_code == 404 and set(r.json()) == {"error"}
            assert "unknown model 'other'; this server serves 'tiny'" in r.json()["error"]
        r = c.post(f"/v2/models/{MODEL}/versions/1/infer", json={"inputs": [tensor(["a"])]})
        assert r.status_code == 404 and "model versions are not served" in r.json()["error"]
        assert c.get(INFER).status_code == 405


# ---- inference ------------------------------------------------------------------------------------
def test_infer_labels_equal_predict_and_follow_the_spec_shapes(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        records = c.post("/predict", json={"inputs": TEXTS}).json()
        for shape, data in (([4], TEXTS), ([4, 1], [[t] for t in TEXTS]), ([4, 1], TEXTS)):
            r = c.post(INFER, json={"id": "42", "inputs": [tensor(data, shape)]})
            assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
            answer = r.json()
            assert answer["model_name"] == MODEL and answer["id"] == "42"
            got = outputs(answer)
            assert list(got) == BASE
            for name in BASE:
                assert got[name] == pytest.approx([rec[name] for rec in records], abs=1e-5), name
        # no id: the server makes one; outputs asked by name come in the order asked
        r = c.post(
            INFER, json={"inputs": [tensor(TEXTS[:2])], "outputs": [{"name": "score"}, {"name": "label"}]}
        )
        answer = r.json()
        assert re.fullmatch(r"[0-9a-f]{32}", answer["id"])
        assert [o["name"] for o in answer["outputs"]] == ["score", "label"]
        assert outputs(answer)["label"] == [rec["label"] for rec in records[:2]]


def test_explain_is_a_parameter_and_each_explanation_a_json_document(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        want = c.post("/predict", json={"inputs": TEXTS[:2], "explain": True}).json()
        for body in (
            {"inputs": [tensor(TEXTS[:2])], "parameters": {"explain": True}},
            {"inputs": [tensor(TEXTS[:2])], "outputs": [{"name": "explanation"}]},
        ):
            got = outputs(c.post(INFER, json=body).json())
            assert [json.loads(x) for x in got["explanation"]] == [rec["explanation"] for rec in want]
        got = outputs(c.post(INFER, json={"inputs": [tensor(TEXTS[:1])]}).json())
        assert "explanation" not in got


BAD = [
    (b'{"inputs": [', 400, r"^body is not valid JSON"),
    (b"[1]", 400, r"body must be a JSON object"),
    ({"inputs": [tensor(["a"])], "extra": 1}, 400, r'unknown field\(s\) "extra"'),
    ({"inputs": []}, 400, r'"inputs" must be a list of one tensor named "text"'),
    ({"inputs": [tensor(["a"]), tensor(["b"])]}, 400, r"list of one tensor"),
    (
        {"inputs": [tensor(["a"], name="input0")]},
        400,
        r'inputs\[0\]\.name must be "text", got a string "input0"',
    ),
    (
        {"inputs": [tensor([1, 2], datatype="UINT32")]},
        400,
        r'datatype must be "BYTES" \(texts\), got a string',
    ),
    ({"inputs": [tensor(["a", "b"], shape=[2, 2])]}, 400, r"shape \[2, 2\]: expected \[N\] or \[N, 1\]"),
    ({"inputs": [tensor(["a"], shape=[3])]}, 400, r"data holds 1 element\(s\); shape \[3\] needs 3"),
    ({"inputs": [tensor(["a"], shape=[-1])]}, 400, r"shape must be a list of sizes"),
    ({"inputs": [tensor(["a"], shape=["1"])]}, 400, r"shape must be a list of sizes"),
    ({"inputs": [tensor([], shape=[0])]}, 400, r"send at least one text"),
    ({"inputs": [tensor(["a", 7])]}, 400, r"data\[1\]: expected a string, got a number 7"),
    ({"inputs": [tensor(["ok", "\ud800"])]}, 400, r"data\[1\]: not valid Unicode"),
    ({"inputs": [{**tensor(["a"]), "parameters": {"binary_data_size": 5}}]}, 400, r"binary tensor data"),
    ({"inputs": [tensor(["a"])], "parameters": {"explain": "yes"}}, 400, r"parameters\.explain must be true"),
    ({"inputs": [tensor(["a"])], "parameters": {"priority": 1}}, 400, r'unknown field\(s\) "priority"'),
    ({"inputs": [tensor(["a"])], "parameters": {"abstain": True}}, 400, r"no abstain calibration"),
    (
        {"inputs": [tensor(["a"])], "outputs": [{"name": "logits"}]},
        400,
        r"unknown output a string \"logits\"",
    ),
    ({"inputs": [tensor(["a"])], "outputs": [{"name": "out_of_scope"}]}, 400, r"does not abstain"),
    ({"inputs": [tensor(["a"])], "id": 42}, 400, r'"id" must be a string'),
    ({"inputs": [tensor(["a"] * 9)]}, 413, r"9 texts in one request; the limit is 8"),
    ({"inputs": [tensor(["x" * 201])]}, 413, r"data\[0\]: 201 characters; the limit is 200"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD)
def test_bad_infer_requests_get_the_v2_error_body(server, body, status, message):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = c.post(INFER, content=content, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error"} and re.search(message, r.json()["error"]), r.json()
        assert c.post(INFER, json={"inputs": [tensor(["card"])]}).status_code == 200  # still serving


def test_the_binary_extension_and_compressed_bodies_are_refused_by_name(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post(INFER, json={"inputs": [tensor(["a"])]}, headers={"Inference-Header-Content-Length": "10"})
        assert r.status_code == 400 and "binary tensor data is not supported" in r.json()["error"]
        import gzip

        for path in (INFER, "/predict"):
            body = gzip.compress(json.dumps({"inputs": [tensor(["a"])]}).encode())
            r = c.post(path, content=body, headers={"Content-Encoding": "gzip"})
            assert r.status_code == 415 and "Content-Encoding gzip is not supported" in r.json()["error"]


def test_v2_requests_are_counted_under_the_model_path_template(server):
    before = metric_values(server.url)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post(INFER, json={"inputs": [tensor(["a"])]}).status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
    after = metric_values(server.url)
    for endpoint in ("/v2/models/{name}/infer", "/v2/health/ready"):
        moved = value(after, "lrsl_http_requests_total", endpoint=endpoint, status="200") - value(
            before, "lrsl_http_requests_total", endpoint=endpoint, status="200"
        )
        assert moved == 1, endpoint


# ---- abstain as a request parameter -------------------------------------------------------------------
def test_abstain_is_a_request_parameter_and_batches_never_mix_the_two(tiny_bundle_oos):
    from tiny_models import OUT_OF_SCOPE

    from lrsl_rt import Reranker

    texts = TEXTS[:3] + OUT_OF_SCOPE
    ref = Reranker.from_bundle(tiny_bundle_oos, threads=1)
    s = Server(tiny_bundle_oos, "--max-request-texts", "16", "--max-wait-ms", "50")
    try:
        s.wait_ready()
        name = tiny_bundle_oos.parent.name  # the default: the folder is "bundle", so its parent's name
        url = f"/v2/models/{name}/infer"
        with httpx.Client(base_url=s.url, timeout=30) as c:
            meta = c.get(f"/v2/models/{name}").json()
            assert "out_of_scope" in [o["name"] for o in meta["outputs"]] and meta["parameters"]["abstain"]
            default = outputs(c.post(url, json={"inputs": [tensor(texts)]}).json())
            off = outputs(
                c.post(url, json={"inputs": [tensor(texts)], "parameters": {"abstain": False}}).json()
            )
        for got, abstain in ((default, True), (off, False)):
            want = [p.to_dict() for p in ref.predict(texts, abstain=abstain)]
            assert got["label"] == [w["label"] for w in want]
            assert ("out_of_scope" in got) is abstain
        assert default["label"] != off["label"]  # some text abstains: a mixed batch would show here

        import asyncio

        async def mixed():  # concurrent requests of both choices, within one 50 ms wait for company
            async with httpx.AsyncClient(base_url=s.url, timeout=30) as c:
                bodies = [
                    {"inputs": [tensor(texts)], "parameters": {"abstain": i % 2 == 0}} for i in range(6)
                ]
                return await asyncio.gather(*(c.post(url, json=b) for b in bodies))

        for i, r in enumerate(asyncio.run(mixed())):
            got = outputs(r.json())
            assert got["label"] == (default if i % 2 == 0 else off)["label"]
    finally:
        assert s.stop() == 0, s.log


# ---- readiness while loading and draining ------------------------------------------------------------
def test_ready_is_false_while_draining_and_live_stays_true(tiny_bundle_fp32):
    s = Server(tiny_bundle_fp32, "--model-name", MODEL, "--drain-delay", "3")
    try:
        seen = []
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=s.url, timeout=10) as c:
            while time.monotonic() < deadline:
                r = c.get("/v2/health/ready")
                seen.append((r.status_code, r.json()))
                assert c.get("/v2/health/live").status_code == 200
                if r.status_code == 200:
                    break
                time.sleep(0.02)
            assert seen[-1] == (200, {"ready": True})
            for code, body in seen[:-1]:  # loading
                assert code == 503 and body["ready"] is False and body["status"] == "loading"
            s.proc.send_signal(signal.SIGTERM)
            s.wait_log("draining", timeout=10)
            r = c.get("/v2/health/ready")
            assert r.status_code == 503 and r.json()["ready"] is False and "draining" in r.json()["error"]
            assert c.get(f"/v2/models/{MODEL}/ready").json()["ready"] is False
            assert c.get("/v2/health/live").json() == {"live": True}
        assert s.proc.wait(30) == 0
    finally:
        s.kill()


# ---- a real v2 client -------------------------------------------------------------------------------
def test_tritonclient_http_reads_the_server(server):
    httpclient = pytest.importorskip("tritonclient.http")
    import numpy as np

    with httpx.Client(base_url=server.url, timeout=30) as c:
        records = c.post("/predict", json={"inputs": TEXTS}).json()
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        assert client.get_server_metadata()["name"] == "lrsl-rt"
        assert client.get_model_metadata(MODEL)["inputs"][0]["name"] == "text"
        inp = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
        inp.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=False)
        for outs in (
            None,
            [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("label", "score")],
        ):
            result = client.infer(MODEL, [inp], outputs=outs, request_id="7")  # None: Triton asks for binary
            assert result.get_response()["id"] == "7"
            labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
            assert labels == [rec["label"] for rec in records]
            assert result.as_numpy("score") == pytest.approx([rec["score"] for rec in records], abs=1e-5)
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
            client.infer("nope", [inp])
        with pytest.raises(InferenceServerException, match="Content-Encoding gzip is not supported"):
            client.infer(MODEL, [inp], request_compression_algorithm="gzip")
        assert not client.is_model_ready("nope")
    finally:
        client.close()
