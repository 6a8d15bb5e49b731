"""``lrsl-rt serve`` tested as users meet it: the real CLI in a subprocess on a loopback port, a real HTTP client.

Servers start with ``--port 0`` and print the port they bound; every request goes to 127.0.0.1.
Parity is exact: the server's model is the same fp32 tiny bundle with the same thread count as the
reference Reranker in this process, and a request sent alone (``--max-wait-ms 0``) forms a batch of
exactly its own texts, so both compute on the same batches. Load loops are bounded in count, and
every wait is bounded by a deadline; no assertion depends on timing.

The model-failure rule (a failing batch fails only its own requests) is tested on the batcher in
this process, with the real Reranker behind a predict function that fails for one batch: a real
bundle cannot be made to fail on demand inside a running server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from conftest import ROOT

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httptools")
pytest.importorskip("prometheus_client")
from serve_client import START_TIMEOUT, Raw, Server, metric_values, value, wait_for_metric  # noqa: E402

TEXTS = [
    "my card is still not here",
    "exchange rate euro dollar",
    "why did my top up fail",
    "i lost my card please block it",
    "how do i convert currency",
    "",
    "the money is missing, can you help?",
    "card delivery waiting",
]


@pytest.fixture(scope="module")
def reference(tiny_bundle_fp32):
    from lrsl_rt import Reranker

    return Reranker.from_bundle(tiny_bundle_fp32, threads=1)


@pytest.fixture(scope="module")
def server(tiny_bundle_fp32):
    s = Server(
        tiny_bundle_fp32,
        "--max-request-texts",
        "8",
        "--max-text-chars",
        "200",
        "--max-batch-texts",
        "16",
        "--max-queue-texts",
        "64",
    )
    try:
        s.wait_ready()
        yield s
    finally:
        code = s.stop()
        assert code == 0, s.log


def records(reranker, texts, explain=False):
    """What the server must answer: the records of Reranker.predict, through JSON as the server sends them."""
    return json.loads(json.dumps([p.to_dict() for p in reranker.predict(texts, explain=explain)]))


def assert_same_record(got: dict, want: dict) -> None:
    """Equal up to the last bits of the floats: fp32 kernels round differently in a batch of other texts."""
    assert {k: v for k, v in got.items() if not isinstance(v, float)} == {
        k: v for k, v in want.items() if not isinstance(v, float)
    }
    assert {k: v for k, v in got.items() if isinstance(v, float)} == pytest.approx(
        {k: v for k, v in want.items() if isinstance(v, float)}, abs=1e-5
    )


# ---- predictions ------------------------------------------------------------------------------------
def test_health_went_from_loading_to_ready(server):
    codes = [c for c, _ in server.health_seen]
    assert codes[-1] == 200 and server.health_seen[-1][1] == {"status": "ready"}
    assert set(codes[:-1]) <= {503}  # never ready and then not
    for _, body in server.health_seen[:-1]:
        assert body["status"] == "loading" and "loading the bundle" in body["error"]


def test_predict_single_and_list_match_the_reranker(server, reference):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for text in TEXTS[:3]:
            r = c.post("/predict", json={"inputs": text})
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            assert r.json() == records(reference, [text])
        r = c.post("/predict", json={"inputs": TEXTS})
        assert r.status_code == 200 and r.json() == records(reference, TEXTS)
        r = c.post("/predict", json={"inputs": TEXTS[:4], "explain": True})
        assert r.json() == records(reference, TEXTS[:4], explain=True)
    for rec in r.json():
        assert 0.0 <= rec["score"] <= 1.0
        assert (rec["fused_score"] is None) == (not rec["hard"])


def test_concurrent_clients_get_their_own_records_in_order(server, reference):
    alone = {t: records(reference, [t])[0] for t in TEXTS}
    n_clients, rounds = 12, 3

    async def client(i: int, c) -> list:
        got = []
        for j in range(rounds):
            texts = [TEXTS[(i + j + k) % len(TEXTS)] for k in range(1 + (i + j) % 4)]
            r = await c.post("/predict", json={"inputs": texts})
            got.append((texts, r.status_code, r.json()))
        return got

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            return await asyncio.gather(*(client(i, c) for i in range(n_clients)))

    for got in asyncio.run(main()):
        for texts, status, recs in got:
            assert status == 200 and len(recs) == len(texts)
            for text, rec in zip(texts, recs, strict=True):
                assert_same_record(rec, alone[text])


BAD_REQUESTS = [
    ("POST", "/predict", b'{"inputs": ["a", }', 422, r"not valid JSON: .* line 1 column"),
    ("POST", "/predict", b"[1, 2]", 422, r'JSON object with an "inputs" field, got an array'),
    ("POST", "/predict", b'{"text": "a"}', 422, r'unknown field\(s\) "text"; expected'),
    (
        "POST",
        "/predict",
        b'{"inputs": ["ok", "\\ud800"]}',
        422,
        r"inputs\[1\]: not valid Unicode: lone surrogate",
    ),
    ("POST", "/predict", b"[" * 10_000, 422, r"not usable JSON: arrays or objects nested too deeply"),
    ("POST", "/predict", b'{"inputs": ' + b"7" * 5000 + b"}", 422, r"not usable JSON: a number of more than"),
    (
        "POST",
        "/predict",
        b'{"inputs": "a", "' + b"k" * 5000 + b'": 1}',
        422,
        r'unknown field\(s\) "k{40}"; expected',
    ),
    ("POST", "/predict", b'{"explain": true}', 422, r'missing field "inputs"'),
    ("POST", "/predict", b'{"inputs": ["ok", 7]}', 422, r"inputs\[1\]: expected a string, got a number 7"),
    ("POST", "/predict", b'{"inputs": 3}', 422, r'"inputs" must be a string or a list of strings'),
    ("POST", "/predict", b'{"inputs": []}', 422, r'"inputs" is an empty list'),
    ("POST", "/predict", b'{"inputs": "a", "explain": "yes"}', 422, r'"explain" must be true or false'),
    ("POST", "/predict", json.dumps({"inputs": ["a"] * 9}).encode(), 413, r"9 texts .* limit is 8"),
    ("POST", "/predict", json.dumps({"inputs": ["x" * 201]}).encode(), 413, r"inputs\[0\]: 201 characters"),
    ("POST", "/predict", b" " * 20_000, 413, r"body of 20000 bytes; the limit is 10688 bytes"),
    ("GET", "/predict", None, 405, r"method GET not allowed on /predict; use POST"),
    ("POST", "/health", b"{}", 405, r"method POST not allowed on /health"),
    ("GET", "/nope", None, 404, r"no endpoint GET /nope"),
    ("POST", "/predict/", b'{"inputs": "a"}', 404, r"no endpoint POST /predict/;"),
    ("GET", "/" + "x" * 8000, None, 404, r"^no endpoint GET /x{39}\.\.\.; endpoints"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_request(server, reference, method, path, body, status, message):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.request(method, path, content=body, headers={"Host": "elsewhere.example"})
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error"} and re.search(message, r.json()["error"]), r.json()
        assert len(r.text) < 300 and "location" not in r.headers
        ok = c.post("/predict", json={"inputs": TEXTS[0]})  # and the server keeps serving
        assert ok.status_code == 200 and ok.json() == records(reference, TEXTS[:1])


def test_metrics_counters_move_by_the_right_amounts(server):
    before = metric_values(server.url)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        answers = [c.post("/predict", json={"inputs": TEXTS[:n]}).json() for n in (1, 3, 5)]
        assert c.post("/predict", content=b"nope").status_code == 422
        assert c.get("/health").status_code == 200
        assert c.get("/missing").status_code == 404
    after = metric_values(server.url)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    recs = [rec for a in answers for rec in a]
    assert moved("lrsl_http_requests_total", endpoint="/predict", status="200") == 3
    assert moved("lrsl_http_requests_total", endpoint="/predict", status="422") == 1
    assert moved("lrsl_http_requests_total", endpoint="/health", status="200") == 1
    assert moved("lrsl_http_requests_total", endpoint="other", status="404") == 1
    assert moved("lrsl_http_requests_total", endpoint="/metrics", status="200") == 1  # the first scrape
    assert moved("lrsl_http_request_duration_seconds_count", endpoint="/predict") == 4
    assert moved("lrsl_texts_predicted_total") == 9
    assert moved("lrsl_hard_texts_total") == sum(r["hard"] for r in recs)
    assert moved("lrsl_reranked_texts_total") == sum(r["reranked"] for r in recs)
    assert moved("lrsl_batch_texts_count") == 3 and moved("lrsl_batch_texts_sum") == 9
    assert moved("lrsl_batch_tokens_count") == 3 and moved("lrsl_batch_tokens_sum") > 9
    assert moved("lrsl_model_run_seconds_count", stage="classifier") >= 3
    assert moved("lrsl_model_run_seconds_count", stage="embedder") >= (
        1 if any(r["hard"] for r in recs) else 0
    )
    assert value(after, "lrsl_queue_texts") == 0
    assert 0 <= value(after, "lrsl_hard_share") <= 1


def test_info(server, reference):
    info = httpx.get(f"{server.url}/info", timeout=10).json()
    assert info["phase"] == "ready"
    assert info["bundle"]["labels"] == list(reference.labels)
    assert info["bundle"]["threshold"] == reference.threshold
    assert info["bundle"]["fusion"] == reference.fusion.to_dict()
    assert info["batching"]["max_request_texts"] == 8 and info["batching"]["threads"] == 1
    assert info["environment"]["lrsl-rt"]
    assert info["answers_depend_on_batch"] is False and info["bundle"]["batch_invariant"] is True
    assert "answers do not depend on batch neighbours (fp32)" in server.log


def test_a_dynamic_int8_bundle_says_its_answers_can_depend_on_the_batch(tiny_bundle):
    from lrsl_rt.info import bundle_summary
    from lrsl_rt.serve.state import invariance_line

    summary = bundle_summary(tiny_bundle)
    assert summary["precision"] == "int8" and summary["batch_invariant"] is False
    assert "answers can depend on batch neighbours" in invariance_line(summary)


# ---- overload, disconnects, shutdown -------------------------------------------------------------------
def test_overload_gives_429_and_loses_no_accepted_request(tiny_bundle_fp32, reference):
    s = Server(
        tiny_bundle_fp32, "--max-batch-texts", "1", "--max-queue-texts", "4", "--max-request-texts", "4"
    )
    try:
        s.wait_ready()
        n = 40
        texts = [[TEXTS[(i + k) % len(TEXTS)] for k in range(4)] for i in range(n)]

        async def main():
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as c:
                return await asyncio.gather(*(c.post("/predict", json={"inputs": t}) for t in texts))

        answers = asyncio.run(main())
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
        for t, r in zip(texts, answers, strict=True):
            if r.status_code == 429:
                message = r.json()["error"]
                assert r.headers["Retry-After"].isdigit() and "queue full" in message
                if "waiting" in message:  # the count bound says why it refuses this request
                    assert re.search(
                        r"\d texts waiting and this request's 4 would make \d+, over the bound of 4", message
                    )
            else:  # batches of one text: exactly the reranker's answer for each text alone
                assert r.json() == [records(reference, [x])[0] for x in t]
        m = metric_values(s.url)
        assert value(m, "lrsl_http_requests_total", endpoint="/predict", status="200") == codes.count(200)
        assert value(m, "lrsl_http_requests_total", endpoint="/predict", status="429") == codes.count(429)
        assert value(m, "lrsl_texts_predicted_total") == 4 * codes.count(200)
        assert value(m, "lrsl_batch_texts_bucket", le="1.0") == value(m, "lrsl_batch_texts_count")
    finally:
        assert s.stop() == 0, s.log


@pytest.mark.parametrize("max_queue_ms", ["0.001", "0"])
def test_the_time_bound_refuses_what_the_count_bound_lets_in(tiny_bundle_fp32, max_queue_ms):
    """A queue with room for 1000 texts: with --max-queue-ms 0.001 (1 us) a request that finds any
    text ahead of it is refused once the worker knows its rate; with the time bound off, none is."""
    s = Server(
        tiny_bundle_fp32, "--workers", "1", "--max-batch-texts", "1", "--max-queue-texts", "1000",
        "--max-request-texts", "4", "--max-queue-ms", max_queue_ms,
    )  # fmt: skip
    try:
        s.wait_ready()
        texts = [[TEXTS[(i + k) % len(TEXTS)] for k in range(4)] for i in range(40)]

        async def main():
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as c:
                first = await c.post("/predict", json={"inputs": texts[0]})  # the worker learns its rate
                return [first] + await asyncio.gather(
                    *(c.post("/predict", json={"inputs": t}) for t in texts)
                )

        answers = asyncio.run(main())
        codes = [r.status_code for r in answers]
        if max_queue_ms == "0":
            assert set(codes) == {200}, codes
        else:
            assert codes[0] == 200 and 429 in codes and set(codes) <= {200, 429}, codes
        for r in answers:
            if r.status_code == 429:
                assert "ms of work" in r.json()["error"] and "the bound is 0.001 ms" in r.json()["error"]
                assert r.headers["Retry-After"].isdigit()
    finally:
        assert s.stop() == 0, s.log


def test_disconnect_then_sigterm_drains_every_accepted_request(tiny_bundle_fp32, reference):
    """Texts wait for company up to 10 s: a client that gives up leaves the queue; SIGTERM runs the rest now."""
    s = Server(tiny_bundle_fp32, "--max-wait-ms", "10000", "--max-batch-texts", "64", "--drain-delay", "3")
    try:
        s.wait_ready()
        with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=s.url, timeout=2) as c:
            c.post("/predict", json={"inputs": TEXTS[:3]})
        wait_for_metric(s.url, "lrsl_cancelled_texts_total", 3)
        wait_for_metric(s.url, "lrsl_queue_texts", 0)
        wait_for_metric(s.url, "lrsl_http_requests_total", 1, endpoint="/predict", status="499")

        async def main():
            async with httpx.AsyncClient(base_url=s.url, timeout=30) as c:
                pending = [asyncio.ensure_future(c.post("/predict", json={"inputs": [t]})) for t in TEXTS[:6]]
                for _ in range(500):  # until all six wait in the queue
                    if value(metric_values(s.url), "lrsl_queue_texts") == 6:
                        break
                    await asyncio.sleep(0.02)
                s.proc.send_signal(signal.SIGTERM)
                answers = await asyncio.gather(*pending)
                health = await c.get("/health")
                late = await c.post("/predict", json={"inputs": "too late"})
                return answers, health, late

        answers, health, late = asyncio.run(main())
        assert [r.status_code for r in answers] == [200] * 6
        for r, text in zip(answers, TEXTS[:6], strict=True):
            assert_same_record(r.json()[0], records(reference, [text])[0])
        assert health.status_code == 503 and health.json()["status"] == "draining"
        assert late.status_code == 503 and "draining" in late.json()["error"]
        assert s.proc.wait(30) == 0, s.log
        assert "draining: 6 request(s) in flight" in s.log
        assert "Traceback" not in s.log
    finally:
        s.kill()


def test_two_workers_share_the_port_and_stop_cleanly(tiny_bundle_fp32, reference):
    """...and a batch that runs alone (the first one: no worker has run any) uses the solo sessions,
    with the same records as the reference Reranker's."""
    psutil = pytest.importorskip("psutil")
    s = Server(tiny_bundle_fp32, "--workers", "2", "--solo-threads", "2")
    try:
        s.wait_ready()
        deadline = time.monotonic() + START_TIMEOUT
        while s.log.count("ready: Reranker(") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # each worker logs when its own bundle is loaded
        assert s.log.count("ready: Reranker(") == 2, s.log
        workers = psutil.Process(s.proc.pid).children()
        assert len(workers) == 2 and all("lrsl_rt.serve.main" in " ".join(w.cmdline()) for w in workers)
        pids, sent = set(), 0
        for i in range(100):  # a new connection each time, until both workers have answered
            text = TEXTS[i % len(TEXTS)]
            with httpx.Client(base_url=s.url, timeout=30) as c:
                assert c.post("/predict", json={"inputs": text}).json() == records(reference, [text])
                sent += 1
            with httpx.Client(base_url=s.url, timeout=30) as c:
                info = c.get("/info").json()
                pids.add(info["pid"])
            if len(pids) == 2 and sent >= 4:
                break
        assert pids == {w.pid for w in workers}
        assert info["batching"]["workers"] == 2 and info["batching"]["threads"] == 1
        assert info["batching"]["solo_threads"] == 2
        assert (
            "2 for a batch that runs alone" in s.log
            and "1 ONNX Runtime thread(s), 2 when it runs alone" in s.log
        )
        assert 1 <= value(metric_values(s.url), "lrsl_solo_batches_total") <= sent
        assert set(burst_pids(s.port, 32)) == pids  # a burst is spread over both workers
        for _ in range(4):  # whichever worker answers the scrape counts the whole server
            m = metric_values(s.url)
            assert value(m, "lrsl_http_requests_total", endpoint="/predict", status="200") == sent
            assert value(m, "lrsl_texts_predicted_total") == sent
        assert s.stop() == 0, s.log
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        s.kill()


def burst_pids(port: int, n: int) -> list[int]:
    """The pid of the worker that answers each of ``n`` connections, all opened before any is used.

    Each worker has its own ``SO_REUSEPORT`` socket and the kernel picks one per connection by a
    random hash, so every worker gets a share of a burst: with two workers and 32 connections, a share
    below 4 has a chance of about 3e-6. (On one shared socket, one worker's accept loop takes every
    connection pending when it wakes.)
    """
    burst = [Raw(port) for _ in range(n)]
    try:
        for c in burst:
            c.send(b"GET /info HTTP/1.1\r\nHost: test\r\n\r\n")
        pids = [json.loads(c.response(timeout=30)[2])["pid"] for c in burst]
    finally:
        for c in burst:
            c.close()
    shares = Counter(pids)
    assert len(shares) >= 2 and min(shares.values()) >= 4, f"connections per worker pid: {dict(shares)}"
    return pids


def test_workers_listen_on_their_own_reuseport_sockets_and_a_taken_port_is_one_line(
    tiny_bundle_fp32, monkeypatch
):
    import socket

    from lrsl_rt.errors import UsageError
    from lrsl_rt.serve.main import listeners

    socks = listeners("127.0.0.1", 0, 2)
    try:
        port = socks[0].getsockname()[1]
        assert [s.getsockname() for s in socks] == [("127.0.0.1", port)] * 2
        for s in socks:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        with pytest.raises(
            UsageError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: Address already in use$"
        ):
            listeners("127.0.0.1", port, 2)  # a second server of ours could have joined the group silently
        with pytest.raises(UsageError, match="Address already in use"):
            listeners("127.0.0.1", port, 1)
        with monkeypatch.context() as m:  # no kernel spreading: the workers share one plain socket
            m.setattr(sys, "platform", "darwin")
            shared = listeners("127.0.0.1", 0, 2)
            assert shared[0] is shared[1] and not shared[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            shared[0].close()
        cmd = [sys.executable, "-m", "lrsl_rt", "serve", "--bundle", str(tiny_bundle_fp32)]
        cmd += ["--port", str(port), "--workers", "2", "--threads", "1"]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert p.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    finally:
        for s in socks:
            s.close()


# ---- the command line -------------------------------------------------------------------------------
def test_workers_auto_and_threads_follow_the_cores():
    from lrsl_rt.serve import settings

    assert settings.resolve_workers("auto", None, 1) == (1, 1)
    assert settings.resolve_workers("auto", None, 2) == (2, 1)
    assert settings.resolve_workers("auto", None, 64) == (
        settings.AUTO_MAX_WORKERS,
        64 // settings.AUTO_MAX_WORKERS,
    )
    assert settings.resolve_workers("auto", 2, 6) == (3, 2)
    assert settings.resolve_workers(1, None, 4) == (1, 4)
    import doctest

    assert doctest.testmod(settings).failed == 0


def test_default_queue_bound_is_short_and_holds_two_largest_requests():
    """The queue bound is a wait: 128 texts per worker, a fraction of a second at a few hundred texts/s,
    and room for two requests of --max-request-texts, so a largest one is not refused by a few waiting."""
    import argparse

    from lrsl_rt.serve.settings import ServeSettings, add_serve_arguments

    p = argparse.ArgumentParser()
    add_serve_arguments(p, int)
    args = p.parse_args([])
    assert args.max_queue_texts == ServeSettings.max_queue_texts == 128
    assert args.max_queue_texts >= 2 * args.max_request_texts == 2 * ServeSettings.max_request_texts


def test_serve_usage_errors(capsys, tiny_bundle_fp32, tmp_path):
    from lrsl_rt.cli import main

    flags = ["--max-request-texts", "10", "--max-queue-texts", "5"]
    assert main(["serve", "--bundle", str(tiny_bundle_fp32), *flags]) == 2
    assert "--max-request-texts 10 is larger than --max-queue-texts 5" in capsys.readouterr().err
    assert main(["serve", "--bundle", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", "--bundle", str(tiny_bundle_fp32), "--max-wait-ms", "-1"]) == 2
    assert "expected a number >= 0" in capsys.readouterr().err
    assert main(["serve", "--bundle", str(tiny_bundle_fp32), "--workers", "many"]) == 2
    assert "expected a positive integer or 'auto'" in capsys.readouterr().err
    assert main(["serve", "--bundle", str(tiny_bundle_fp32), "--header-timeout", "0"]) == 2
    assert "expected a number > 0" in capsys.readouterr().err


def test_serve_without_the_extra_names_it(tiny_bundle_fp32):
    block = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("starlette", "uvicorn"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _Block())
from lrsl_rt.cli import main
raise SystemExit(main(["serve", "--bundle", sys.argv[1]]))
"""
    proc = subprocess.run(
        [sys.executable, "-c", block, str(tiny_bundle_fp32)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == "Error: `lrsl-rt serve` needs starlette, uvicorn: pip install 'lrsl-rt[serve]'"
    )


# ---- the batcher in this process ------------------------------------------------------------------------
class FnRunner:
    """A batch runner (lrsl_rt.serve.runner's interface) over plain functions: ``run(texts, explain)``
    in the model thread; ``inline(texts, explain)``, if given, on the loop for every batch offered."""

    def __init__(self, run, inline=None) -> None:
        self._run, self._inline, self.abstain_seen = run, inline, []

    def run(self, texts, explain, abstain):
        self.abstain_seen.append(abstain)
        return self._run(texts, explain)

    def inline(self, texts, tokens, explain, abstain):
        return None if self._inline is None else self._inline(texts, explain)


def _batcher_run(reference, limits, requests, fail_on=None):
    """Submit ``requests`` (lists of texts) at once; (answers or exceptions, the batches the model saw)."""
    from lrsl_rt.errors import RuntimeBackendError
    from lrsl_rt.serve.batcher import MicroBatcher

    seen = []

    def predict(texts, explain):
        seen.append(list(texts))
        if fail_on is not None and fail_on in texts:
            raise RuntimeBackendError("the model failed on this batch")
        return reference.predict(texts, explain=explain)

    async def main():
        b = MicroBatcher(FnRunner(predict), limits)
        b.start()
        try:
            tasks = [b.submit(t, [len(x) for x in reference.tokenizer.tokenize(t)]) for t in requests]
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await b.close()

    return asyncio.run(main()), seen


def test_batcher_respects_its_limits_and_returns_each_request_its_own(reference):
    from lrsl_rt.serve.batcher import BatchLimits

    requests = [TEXTS[i : i + n] for i, n in ((0, 3), (2, 5), (1, 1), (4, 4), (0, 8))]
    limits = BatchLimits(max_texts=4, max_tokens=30, max_wait=0.05, max_queue=100)
    answers, seen = _batcher_run(reference, limits, requests)
    for texts, got in zip(requests, answers, strict=True):
        assert [p.to_dict()["label"] for p in got] == [r["label"] for r in records(reference, texts)]
    assert [t for batch in seen for t in batch] == [t for r in requests for t in r]  # FIFO, each text once
    for batch in seen:
        tokens = sum(len(x) for x in reference.tokenizer.tokenize(batch))
        assert len(batch) <= 4 and (tokens <= 30 or len(batch) == 1)


def test_batcher_model_failure_fails_only_that_batch(reference):
    from lrsl_rt.serve.batcher import BatchFailed, BatchLimits, QueueFull

    requests = [["a card"], ["BOOM"], ["rate"], ["top up"], ["lost card"]]
    limits = BatchLimits(max_texts=2, max_tokens=1000, max_wait=0.05, max_queue=100)
    answers, seen = _batcher_run(reference, limits, requests, fail_on="BOOM")
    assert seen[0] == ["a card", "BOOM"]
    assert all(isinstance(a, BatchFailed) and "model failed" in str(a) for a in answers[:2])
    assert [[p.label for p in a] for a in answers[2:]] == [
        [p.label for p in reference.predict(r)] for r in requests[2:]
    ]
    answers, _ = _batcher_run(reference, BatchLimits(1, 1000, 0.0, 2), [["a", "b"], ["c"]])
    assert isinstance(answers[1], QueueFull)


def test_batcher_runs_a_request_at_once_only_when_it_would_batch_alone(reference):
    """run_now: the idle batcher's inline path, taken only when the request would form a batch of its
    own that runs at once; otherwise None and the caller queues it."""
    from lrsl_rt.serve.batcher import BatchFailed, BatchLimits, MicroBatcher

    calls, counted = [], []

    class Observer:
        def queue(self, n): ...
        def cancelled(self, n): ...
        def failed(self):
            counted.append("failed")

        def batch(self, texts, tokens, seconds, predictions):
            counted.append((texts, tokens))

    def inline(texts, explain):
        calls.append(list(texts))
        if "BOOM" in texts:
            raise RuntimeError("the model failed")
        return reference.predict(texts)

    def tokens(texts):
        return [len(r) for r in reference.tokenizer.tokenize(texts)]

    async def main(limits, texts, *, busy=False, with_inline=True):
        runner = FnRunner(lambda t, e: reference.predict(t), inline if with_inline else None)
        b = MicroBatcher(runner, limits, Observer())
        if busy:  # a request already queued (no batch loop started: it stays there)
            asyncio.ensure_future(b.submit(["queued"], [3]))
            await asyncio.sleep(0)
        try:
            return b.run_now(texts, tokens(texts))
        finally:
            await b.close()

    idle = BatchLimits(max_texts=4, max_tokens=1000, max_wait=0.0, max_queue=100)
    got = asyncio.run(main(idle, TEXTS[:2]))
    assert [p.label for p in got] == [p.label for p in reference.predict(TEXTS[:2])]
    assert calls == [TEXTS[:2]] and counted == [(2, sum(tokens(TEXTS[:2])))]
    calls.clear()
    assert asyncio.run(main(idle, TEXTS[:1], busy=True)) is None  # the queue goes first
    assert asyncio.run(main(BatchLimits(4, 1000, 0.002, 100), TEXTS[:1])) is None  # waits for company
    assert asyncio.run(main(idle, TEXTS[:5])) is None  # more than one batch
    assert asyncio.run(main(idle, TEXTS[:1], with_inline=False)) is None  # the runner declines
    assert calls == []
    with pytest.raises(BatchFailed, match="the model failed"):
        asyncio.run(main(idle, ["BOOM"]))
    assert counted[-1] == "failed"


def test_batcher_refuses_when_the_texts_ahead_take_longer_than_the_time_bound(reference):
    """max_queue_wait: with each text taking at least 20 ms, five texts ahead (one running, four
    queued) are at least 100 ms of work: over a 90 ms bound, a new request is refused although the
    count bound has room; one text ahead is within it, and without the time bound nothing is refused."""
    from lrsl_rt.serve.batcher import BatchLimits, MicroBatcher, QueueFull

    release = threading.Event()

    def predict(texts, explain):
        time.sleep(0.02 * len(texts))
        if texts == ["blocker"]:
            release.wait(10)
        return reference.predict(texts)

    async def main(max_queue_wait):
        b = MicroBatcher(FnRunner(predict), BatchLimits(1, 1000, 0.0, 100, max_queue_wait))
        b.start()
        try:
            await b.submit(["a card"], [3])  # one batch ran: the rate is known (at most 50 texts/s)
            assert 0 < b.rate <= 50
            running = asyncio.ensure_future(b.submit(["blocker"], [3]))
            while not b._running:
                await asyncio.sleep(0.001)
            b.check_room(1)  # one text ahead: 20 ms at the measured rate
            # one request of four: queued behind one text, whatever the rate (four single ones could meet the bound)
            queued = [asyncio.ensure_future(b.submit(TEXTS[:4], [3] * 4))]
            await asyncio.sleep(0.01)
            try:
                b.check_room(1)
                refused = None
            except QueueFull as e:
                refused = str(e)
            release.set()
            await asyncio.gather(running, *queued)
            return refused
        finally:
            release.set()
            await b.close()

    refused = asyncio.run(main(0.09))
    assert refused is not None and "5 texts ahead" in refused and "the bound is 90 ms" in refused
    release.clear()
    assert asyncio.run(main(0.0)) is None


def test_batcher_counts_as_cancelled_only_the_texts_no_batch_took(reference):
    """A request cancelled while its first texts run in a batch: those count as predicted, the queued
    rest as cancelled -- never a text in both counters."""
    from lrsl_rt.serve.batcher import BatchLimits, MicroBatcher

    started, release = threading.Event(), threading.Event()
    counts = {"cancelled": 0, "predicted": 0}

    class Observer:
        def queue(self, n): ...
        def failed(self): ...
        def cancelled(self, n):
            counts["cancelled"] += n

        def batch(self, texts, tokens, seconds, predictions):
            counts["predicted"] += texts

    def predict(texts, explain):
        started.set()
        release.wait(10)
        return reference.predict(texts)

    async def main():
        b = MicroBatcher(FnRunner(predict), BatchLimits(2, 1000, 0.0, 100), observer=Observer())
        b.start()
        task = asyncio.ensure_future(b.submit(TEXTS[:5], [1] * 5))
        await asyncio.to_thread(started.wait, 10)  # texts 0-1 run; 2-4 wait in the queue
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        release.set()
        while not b.idle:
            await asyncio.sleep(0.01)
        await b.close()

    asyncio.run(main())
    assert counts == {"cancelled": 3, "predicted": 2}


def test_accepted_connections_have_nagle_off():
    """The listening socket hands TCP_NODELAY to each connection it accepts (a real loopback
    connection): otherwise a keep-alive client waits for its delayed ACK on every response body."""
    import socket

    from lrsl_rt.serve.main import bind

    listener = bind("127.0.0.1", 0)
    with listener, socket.create_connection(listener.getsockname()[:2]):
        conn, _ = listener.accept()
        with conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# ---- abstain ----------------------------------------------------------------------------------------
def test_abstain_records_and_counter_follow_the_bundle_and_the_flag(tiny_bundle_oos):
    from tiny_models import OUT_OF_SCOPE

    from lrsl_rt import Reranker

    texts = TEXTS[:3] + OUT_OF_SCOPE
    ref = Reranker.from_bundle(tiny_bundle_oos, threads=1)
    for flags, abstain in (((), True), (("--no-abstain",), False)):
        s = Server(tiny_bundle_oos, "--max-request-texts", "16", *flags)
        try:
            s.wait_ready()
            with httpx.Client(base_url=s.url, timeout=30) as c:
                got = c.post("/predict", json={"inputs": texts}).json()
                want = json.loads(json.dumps([p.to_dict() for p in ref.predict(texts, abstain=abstain)]))
                assert [r.get("out_of_scope") for r in got] == [r.get("out_of_scope") for r in want]
                assert [r["label"] for r in got] == [r["label"] for r in want]
                assert ("out_of_scope" in got[0]) is abstain
                flagged = sum(bool(r.get("out_of_scope")) for r in got)
                wait_for_metric(s.url, "lrsl_texts_predicted_total", len(texts))
                assert value(metric_values(s.url), "lrsl_abstained_texts_total") == flagged
        finally:
            assert s.stop() == 0, s.log
