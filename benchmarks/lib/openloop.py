"""An open-loop HTTP load generator, run in a process of its own, and a trivial server to check it on.

    python -m benchmarks.lib.openloop --url http://127.0.0.1:PORT --bodies FILE --rate R --duration S
    python -m benchmarks.lib.openloop --trivial-server

A closed-loop client (wrk) sends its next request only after an answer, so an overloaded server slows
its own load down and its queue never shows. Here request ``k`` is due at ``start + k / rate`` whatever
the answers do: it goes out on an idle keep-alive connection, or a new one (up to ``--connections``),
or, when all are busy, as soon as one frees. Its latency counts from its due time, so the wait for a
connection is paid too (no coordinated omission); ``late`` says how far behind schedule requests went
out, which is the driver's own limit showing.

A real population of clients is not capped at a number of connections: when the cap is below what the
server can hold (queued and in its batches), an overloaded server never fills its queue, and requests
wait here instead of getting the server's 429. ``benchmarks.serve`` sets ``--connections`` from the
server's settings for that reason; the soft open-file limit is raised to match (a warning on stderr
when the hard limit is lower).

Bodies come from a file, one JSON body per line, cycled in order; answers are parsed only for their
status and the first ``"label"`` (one text per request), so the caller can compare labels with each
text's label alone. The result is one JSON line on stdout (``benchmarks.lib.common.emit_result``).

``--trivial-server`` answers every request at once with a fixed small JSON body and prints
``listening on PORT``: driving it at twice the highest rate a benchmark uses shows the driver (and
the machine) can offer that rate, so what the benchmark sees at its own rates is the server.

A request sent on a kept-alive connection that the server closes before any byte of an answer (the
server's idle timeout crossing the request on the wire) is sent again on another connection, as HTTP
client libraries do; an error is a connection lost otherwise (refused, reset mid-answer, or on its
first request).

Shortcuts: HTTP/1.1 over plain TCP, Content-Length bodies only, one request per connection at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import sys
import time
from collections import deque

from benchmarks.lib.common import emit_result, latency_stats

LABEL = re.compile(rb'"label":\s*"((?:[^"\\]|\\.)*)"')
TRIVIAL_BODY = b'[{"label":"ok"}]'
SPARE_FILES = 64  # open files beyond the connections


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``send`` writes a request, ``done(status, body)`` gets its answer."""

    def __init__(self, pool: _Pool) -> None:
        self.pool, self.transport, self.buf, self.done = pool, None, b"", None
        self.request, self.answered = b"", 0  # the request in flight; answers on this connection so far

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, request: bytes, done) -> None:
        self.request, self.done = request, done
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0 or self.done is None:
            return
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", self.buf[:head_end])
        size = int(match.group(1)) if match else 0
        end = head_end + 4 + size
        if len(self.buf) < end:
            return
        status = int(self.buf[9:12])
        closing = re.search(rb"(?i)\r\nconnection:\s*close", self.buf[:head_end])
        body, self.buf = self.buf[head_end + 4 : end], self.buf[end:]
        done, self.done = self.done, None
        self.answered += 1
        done(status, body)
        self.pool.release(self, reusable=not closing)

    def connection_lost(self, exc) -> None:
        self.pool.lost(self)
        if self.done is None:
            return
        done, self.done = self.done, None
        if self.answered and not self.buf:
            # A kept-alive connection the server closed (its idle timeout) as the request went out:
            # nothing of it was answered, so send it again on another connection, as HTTP clients do.
            self.pool.submit(self.request, done)
        else:
            done(None, b"")


class _Pool:
    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: deque[_Conn] = deque()
        self.open = 0
        self.waiting: deque = deque()  # (request, done) with no connection yet

    def submit(self, request: bytes, done) -> None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.transport.is_closing():
                conn.send(request, done)
                return
        if self.open < self.limit:
            self.open += 1
            asyncio.ensure_future(self._connect(request, done))
        else:
            self.waiting.append((request, done))

    async def _connect(self, request: bytes, done) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            self.open -= 1
            done(None, b"")
            return
        conn.send(request, done)

    def release(self, conn: _Conn, reusable: bool) -> None:
        if not reusable:
            conn.transport.close()
            return
        if self.waiting:
            conn.send(*self.waiting.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        self.open -= 1
        if self.waiting and self.open < self.limit:
            self.submit(*self.waiting.popleft())


async def drive(url: str, bodies: list[bytes], rate: float, duration: float, connections: int, grace: float):
    """Send ``rate`` requests per second for ``duration`` seconds; the record of each one."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
    pool = _Pool(host, int(port), connections)
    requests = [
        b"POST /predict HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (host.encode(), port.encode(), len(b), b)
        for b in bodies
    ]
    loop = asyncio.get_running_loop()
    n = max(1, round(rate * duration))
    records: list = [None] * n
    pending = [n]
    finished = loop.create_future()

    def answer(k: int, due: float, sent: float):
        def done(status, body):
            match = LABEL.search(body) if status == 200 else None
            label = json.loads(b'"' + match.group(1) + b'"') if match else None
            now = loop.time()
            records[k] = (now - due, sent - due, status, label, now - start)
            pending[0] -= 1
            if not pending[0] and not finished.done():
                finished.set_result(None)

        return done

    start = loop.time() + 0.05
    k = 0
    while k < n:
        now = loop.time()
        while k < n and start + k / rate <= now:
            due = start + k / rate
            pool.submit(requests[k % len(requests)], answer(k, due, loop.time()))
            k += 1
        if k < n:
            await asyncio.sleep(max(0.0, start + k / rate - loop.time()))
    sent_wall = loop.time() - start
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(finished, grace)
    return records, sent_wall


def summarize(records: list, rate: float, duration: float, sent_wall: float, n_bodies: int) -> dict:
    """Counts by status, rates over the time to the last answer, latency of the 200s, lateness, labels."""
    done = [r for r in records if r is not None]
    ok = [r for r in done if r[2] == 200]
    span = max((r[4] for r in done), default=0.0)
    statuses: dict[str, int] = {}
    for r in done:
        key = "error" if r[2] is None else str(r[2])
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "target_rps": rate,
        "duration_s": duration,
        "sent": len(records),
        "offered_rps": len(records) / sent_wall if sent_wall > 0 else None,
        "answered": len(done),
        "unanswered": len(records) - len(done),
        "statuses": statuses,
        "answered_rps": len(done) / span if span else None,
        "ok_rps": len(ok) / span if span else None,
        "latency_ok": latency_stats([r[0] for r in ok]) if ok else None,
        "late": latency_stats([r[1] for r in done]) if done else None,
        "labels": [[k % n_bodies, r[3]] for k, r in enumerate(records) if r is not None and r[3] is not None],
    }


def raise_file_limit(connections: int) -> None:
    """Raise the soft open-file limit to hold ``connections`` (up to the hard limit; a warning below it)."""
    needed = connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < needed:
        print(
            f"openloop: warning: the open-file limit ({hard}) is below --connections {connections}",
            file=sys.stderr,
        )


# ---- the trivial server --------------------------------------------------------------------------------
class _Trivial(asyncio.Protocol):
    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(TRIVIAL_BODY),
        TRIVIAL_BODY,
    )

    def connection_made(self, transport) -> None:
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (head_end := self.buf.find(b"\r\n\r\n")) >= 0:
            match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", self.buf[:head_end])
            end = head_end + 4 + (int(match.group(1)) if match else 0)
            if len(self.buf) < end:
                return
            self.buf = self.buf[end:]
            self.transport.write(self.ANSWER)


async def serve_trivial(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Trivial, "127.0.0.1", port)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="http://127.0.0.1:PORT of the server")
    p.add_argument("--bodies", help="a file of JSON bodies for POST /predict, one per line")
    p.add_argument("--rate", type=float, help="requests per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending (default 10)")
    p.add_argument(
        "--connections",
        type=int,
        default=512,
        help="most connections open (default 512): keep it above what the server can hold, or the "
        "requests of an overload wait here instead of reaching the server's queue bound",
    )
    p.add_argument("--grace", type=float, default=60.0, help="seconds to wait for the last answers")
    p.add_argument("--trivial-server", action="store_true", help="serve a fixed answer (the driver's check)")
    p.add_argument("--port", type=int, default=0, help="the trivial server's port (default: any free one)")
    a = p.parse_args(argv)
    if a.trivial_server:
        asyncio.run(serve_trivial(a.port))
        return 0
    if not (a.url and a.bodies and a.rate and a.rate > 0):
        p.error("--url, --bodies and a positive --rate are needed")
    with open(a.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    raise_file_limit(a.connections)
    cpu = time.process_time()
    records, sent_wall = asyncio.run(drive(a.url, bodies, a.rate, a.duration, a.connections, a.grace))
    result = summarize(records, a.rate, a.duration, sent_wall, len(bodies))
    result["driver_cpu_s"] = time.process_time() - cpu
    result["connections"] = a.connections
    emit_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
