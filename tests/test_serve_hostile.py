"""``lrsl-rt serve`` against hostile and unlucky clients, on real loopback sockets and real processes.

Each test sends what a careless or malicious client sends -- a head a byte at a time, a body that
never ends, nothing at all, a request smuggling pattern, a disconnect mid-upload, signals during a
drain, ``kill -9`` of a worker or of the supervisor -- and asserts what the server answers and that
it keeps serving. Timeouts are set to a second or two so the tests stay short; every wait has a
deadline. The only timing assertion (tokenization off the event loop) compares two durations of the
same run rather than a fixed bound.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httptools")
pytest.importorskip("prometheus_client")
from serve_client import Raw, Server, metric_values, value, wait_for_metric  # noqa: E402

GUARDED = ("--idle-timeout", "1", "--header-timeout", "1", "--body-timeout", "2")


@pytest.fixture(scope="module")
def server(tiny_bundle_fp32):
    s = Server(tiny_bundle_fp32, *GUARDED)
    try:
        s.wait_ready()
        yield s
    finally:
        assert s.stop() == 0, s.log
        assert "Traceback" not in s.log, s.log


def json_error(body: bytes) -> str:
    obj = json.loads(body)
    assert set(obj) == {"error"}, obj
    return obj["error"]


def post_head(length: int | None = None, chunked: bool = False, path: str = "/predict") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    return (head + "\r\n").encode()


# ---- connections that hold the server ----------------------------------------------------------------
def test_slow_head_gets_408_and_is_closed(server):
    head = post_head(length=16)
    with Raw(server.port) as c:
        sent = 0
        while sent < len(head) and not c.readable(0.2):  # one byte per 0.2 s
            c.send(head[sent : sent + 1])
            sent += 1
        status, headers, body = c.response()
        assert sent < len(head)  # answered before the head was complete
        assert status == 408 and headers["content-type"] == "application/json"
        assert "--header-timeout" in json_error(body) and c.closed_by_server()


def test_a_body_that_never_ends_gets_408_and_is_closed(server):
    for head, first in (
        (post_head(chunked=True), b'5\r\n{"inp\r\n'),
        (post_head(length=500), b'{"inputs": '),
    ):
        with Raw(server.port) as c:
            c.send(head + first)  # and never the rest
            status, _, body = c.response()
            assert status == 408 and "--body-timeout" in json_error(body)
            assert c.closed_by_server()


def test_a_body_nobody_reads_does_not_hold_the_connection(server):
    """Answered before its body was read (405 here): the connection closes instead of draining forever."""
    with Raw(server.port) as c:
        c.send(post_head(chunked=True, path="/health") + b"5\r\nhello\r\n")
        status, _, body = c.response()
        assert status == 405 and "not allowed" in json_error(body)
        for _ in range(20):  # the client keeps sending chunks; the server has closed
            try:
                c.send(b"5\r\nhello\r\n")
            except OSError:
                break
            if c.closed_by_server(0.05):
                break
        else:
            raise AssertionError("the connection stayed open while the client sent an endless body")


def test_idle_connections_are_closed_and_bounded_in_number(tiny_bundle_fp32):
    s = Server(tiny_bundle_fp32, "--idle-timeout", "1", "--max-connections", "4")
    try:
        s.wait_ready()
        time.sleep(0.5)  # the readiness poll's connection is gone: the 4 below are all there is
        idle = [Raw(s.port) for _ in range(4)]
        with Raw(s.port) as fifth:  # the kernel hands connections over in order: this is the 5th
            status, headers, body = fifth.response()
            assert status == 503 and headers["retry-after"] == "1"
            assert "--max-connections 4" in json_error(body) and fifth.closed_by_server()
        assert all(c.closed_by_server(timeout=10) for c in idle)  # silent connections go after 1 s
        with Raw(s.port) as again:  # and the room is back
            again.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert again.response()[0] == 200
            assert again.closed_by_server(timeout=10)  # kept alive, then idle: closed too
        for c in idle:
            c.close()
        m = metric_values(s.url)
        assert value(m, "lrsl_http_requests_total", endpoint="connection", status="503") == 1
    finally:
        assert s.stop() == 0, s.log


# ---- what the HTTP parser refuses ------------------------------------------------------------------
def test_content_length_with_transfer_encoding_is_refused_and_nothing_after_it_is_served(server):
    smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    request = post_head(length=len(b"0\r\n\r\n") + len(smuggled), chunked=True) + b"0\r\n\r\n" + smuggled
    with Raw(server.port) as c:
        c.send(request)
        status, headers, body = c.response()
        assert status == 400 and headers["content-type"] == "application/json"
        assert "Transfer-Encoding" in json_error(body) and headers["connection"] == "close"
        assert c.closed_by_server() and b"HTTP/1.1" not in c.buf  # the smuggled request got no answer


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"GARBAGE / HTTP/1.1\r\n\r\n", 400, "malformed HTTP request"),
        (post_head(chunked=True) + b"zz\r\nhello\r\n", 400, "malformed HTTP request"),
        (b"GET /" + b"x" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, "over 16384 bytes"),
        (b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"y" * 20_000 + b"\r\n\r\n", 431, "over 16384 bytes"),
    ],
)
def test_protocol_errors_are_json_and_close(server, request_bytes, status, message):
    with Raw(server.port) as c:
        c.send(request_bytes)
        got, headers, body = c.response()
        assert got == status and headers["content-type"] == "application/json"
        assert message in json_error(body) and len(body) < 200 and c.closed_by_server()
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_an_endless_header_line_is_refused_with_431_at_the_limit(server):
    """One header line that never ends, streamed in 64 KB writes: refused once the head passes 16 KiB,
    long before the header timeout, with at most a few writes past the limit sent."""
    with Raw(server.port) as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        while not c.readable(0.01) and sent < 64 * 65536:
            try:
                c.send(b"a" * 65536)
            except OSError:
                break
            sent += 65536
        status, headers, body = c.response()
        assert status == 431 and "over 16384 bytes" in json_error(body) and headers["connection"] == "close"
        assert sent <= 8 * 65536, sent  # refused within a few writes of the limit, not at the timeout
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_a_client_that_pipelines_and_never_reads_is_disconnected(tiny_bundle_fp32):
    """It sends request after request and reads nothing: once the server's send buffers are full and
    nothing drains them for --write-timeout, the server aborts the connection (the client's next
    send fails), counts it, and keeps serving."""
    s = Server(tiny_bundle_fp32, "--write-timeout", "1", "--idle-timeout", "30", "--header-timeout", "30")
    try:
        s.wait_ready()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.connect(("127.0.0.1", s.port))
        sock.setblocking(False)
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"  # a large answer: the buffers fill sooner
        stuck, closed, deadline = False, False, time.monotonic() + 90  # seconds under a loaded CPU
        try:
            while time.monotonic() < deadline and not closed:
                try:
                    sock.send(request * 64)
                except BlockingIOError:  # the server reads no more: its answers are not being read
                    stuck = True
                    time.sleep(0.05)
                except OSError:  # reset by the server
                    closed = True
        finally:
            sock.close()
        assert closed, "the connection stayed open while its client read nothing"
        assert stuck  # it was the unread answers that held it, not a refusal of the requests
        assert value(metric_values(s.url), "lrsl_write_timeouts_total") == 1
        assert httpx.get(f"{s.url}/health", timeout=10).status_code == 200
    finally:
        assert s.stop() == 0, s.log
        assert "Traceback" not in s.log, s.log


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
            "Transfer-Encoding 'gzip, chunked' is not supported",
        ),
        (b"GET /health HTTP/1.1\r\n\r\n", 400, "exactly one Host header (HTTP/1.1 requires it), got 0"),
        (b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "exactly one Host header"),
    ],
)
def test_unsupported_codings_and_a_missing_host_are_refused(server, request_bytes, status, message):
    with Raw(server.port) as c:
        c.send(request_bytes)
        got, headers, body = c.response()
        assert got == status and message in json_error(body) and headers["connection"] == "close"
        assert c.closed_by_server()
    with Raw(server.port) as c:  # HTTP/1.0 needs no Host
        c.send(b"GET /health HTTP/1.0\r\n\r\n")
        assert c.response()[0] == 200


def test_a_client_gone_mid_upload_is_a_499_not_a_500(server):
    before = metric_values(server.url)
    with Raw(server.port) as c:
        c.send(post_head(length=1000) + b'{"inputs": ["half')
    wait_for_metric(
        server.url,
        "lrsl_http_requests_total",
        value(before, "lrsl_http_requests_total", endpoint="/predict", status="499") + 1,
        endpoint="/predict",
        status="499",
    )
    m = metric_values(server.url)
    assert value(m, "lrsl_http_requests_total", endpoint="/predict", status="500") == 0


# ---- tokenizing off the event loop --------------------------------------------------------------------
def test_long_texts_do_not_stall_other_connections(server):
    """Three requests of 64 texts x 3,960 characters are tokenized while /health is polled on another
    connection: no gap between /health answers may approach the time the three requests take (with
    tokenization on the event loop, one request's tokenization is such a gap)."""
    words = ("currency exchange card delivery refund transfer pending " * 80)[:3960]
    body = {"inputs": [f"{i} {words}" for i in range(64)]}
    answers, times = [], []

    def big():
        with httpx.Client(base_url=server.url, timeout=60) as c:
            answers.append(c.post("/predict", json=body).status_code)

    with httpx.Client(base_url=server.url, timeout=60) as h:
        h.get("/health")
        threads = [threading.Thread(target=big) for _ in range(3)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            assert h.get("/health").status_code == 200
            times.append(time.perf_counter())
        busy = time.perf_counter() - start
    assert answers == [200, 200, 200]
    gaps = [b - a for a, b in zip([start, *times], times, strict=False)]
    assert len(times) >= 5 and max(gaps) < busy / 4, (max(gaps), busy, len(times))


# ---- shutdown: signals and drain timeouts -------------------------------------------------------------
def _hold_uploads(s: Server, n: int) -> list[Raw]:
    """``n`` /predict requests whose bodies are half sent, known to the server (a later request was answered)."""
    held = [Raw(s.port) for _ in range(n)]
    for c in held:
        c.send(post_head(length=len(b'{"inputs": "card"}')) + b'{"inputs": ')
    assert httpx.get(f"{s.url}/health", timeout=10).status_code == 200
    return held


def test_drain_answers_uploads_that_finish_and_503s_the_rest_then_exits_1(tiny_bundle_fp32):
    s = Server(tiny_bundle_fp32, *GUARDED[:4], "--body-timeout", "30", "--drain-timeout", "2")
    try:
        s.wait_ready()
        finishing, stuck = _hold_uploads(s, 2)
        s.proc.send_signal(signal.SIGTERM)
        s.wait_log("draining: 2 request(s) in flight", timeout=10)
        finishing.send(b'"card"}')
        status, _, body = finishing.response()
        assert status == 200 and len(json.loads(body)) == 1  # accepted before the drain: served
        status, headers, body = stuck.response()
        assert status == 503 and headers["connection"] == "close"
        assert "--drain-timeout 2 s" in json_error(body)
        assert s.proc.wait(30) == 1
        assert "Traceback" not in s.log and "1 request(s) answered 503 unserved" in s.log
    finally:
        s.kill()


def test_a_second_signal_during_the_drain_answers_503_at_once_and_exits_1(tiny_bundle_fp32):
    s = Server(tiny_bundle_fp32, *GUARDED[:4], "--body-timeout", "30", "--drain-timeout", "30")
    try:
        s.wait_ready()
        (held,) = _hold_uploads(s, 1)
        s.proc.send_signal(signal.SIGTERM)
        s.wait_log("draining: 1 request(s) in flight", timeout=10)
        s.proc.send_signal(signal.SIGTERM)
        status, _, body = held.response(timeout=10)  # long before the 30 s drain timeout
        assert status == 503 and "second signal" in json_error(body)
        assert s.proc.wait(10) == 1
        assert "Traceback" not in s.log
    finally:
        s.kill()


# ---- --workers: a killed worker, a killed supervisor ------------------------------------------------------
def test_a_killed_worker_is_replaced_and_workers_do_not_outlive_the_supervisor(tiny_bundle_fp32):
    psutil = pytest.importorskip("psutil")
    s = Server(tiny_bundle_fp32, "--workers", "2", *GUARDED)
    try:
        s.wait_ready()
        s.wait_log("ready: Reranker(", 2)
        first, second = psutil.Process(s.proc.pid).children()
        results: list[tuple[float, int | str]] = []
        stop = threading.Event()

        def client():  # a new connection per request, so every request can land on either worker
            while not stop.is_set():
                try:
                    r = httpx.post(f"{s.url}/predict", json={"inputs": "card"}, timeout=10)
                    results.append((time.monotonic(), r.status_code))
                except httpx.TransportError as e:
                    results.append((time.monotonic(), type(e).__name__))

        t = threading.Thread(target=client)
        t.start()
        while len(results) < 5:
            time.sleep(0.01)
        first.kill()
        killed_at = time.monotonic()
        s.wait_log("was killed by SIGKILL; started worker")
        s.wait_log("ready: Reranker(", 3)  # the replacement loaded its bundle
        n_after = len(results)
        while len(results) < n_after + 5:
            time.sleep(0.01)
        stop.set()
        t.join(30)
        after = [status for at, status in results if at > killed_at]
        assert after.count(200) >= len(after) - 1, after  # at most the request in flight on the killed one
        assert s.proc.poll() is None and second.is_running()

        workers = psutil.Process(s.proc.pid).children()
        assert len(workers) == 2 and first.pid not in {w.pid for w in workers}
        s.proc.kill()  # the supervisor dies without a word: the workers notice and drain
        deadline = time.monotonic() + 20

        def alive():
            return [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]

        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", s.port), timeout=5).close()
    finally:
        s.kill()
        for w in psutil.Process().children(recursive=True):
            if "lrsl_rt.serve.main" in " ".join(w.cmdline()):
                w.kill()
