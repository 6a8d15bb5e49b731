"""The connection guard: uvicorn's httptools (llhttp) protocol with bounds on what one connection holds.

uvicorn bounds none of these by itself: a connection that sends nothing, or its headers a byte at a
time, is held forever, and so is any number of them. Per connection, this subclass adds:

- **idle**: a connection with no request in progress (just opened, or kept alive after an answer) is
  closed after ``--idle-timeout`` seconds, and only the first byte of a request stops that clock
  (stray bytes between requests do not);
- **head**: from a request's first byte, its request line and headers must arrive within
  ``--header-timeout`` seconds (else 408) and fit in ``MAX_HEAD_BYTES`` (else 431). The size is
  counted as the bytes arrive, not only as llhttp completes a header: llhttp (through httptools)
  hands over a header only once its line ends, and keeps what it has of it meanwhile, so one header
  line that never ends would grow until the header timeout. Every read that arrives while a head is
  in progress and does not finish it is all head bytes, and counts; when one header line or the
  request line completes, its own length counts; the larger of the two counts is held against the
  bound. A read in which a head starts counts only through its completed parts (it may also carry
  the end of an earlier body), so a head that never ends is refused at the first read that carries
  it past the bound;
- **write**: a connection whose client reads none of the answers sent to it for
  ``--write-timeout`` seconds, once the socket's send buffer and the transport's high-water mark are
  full (a client that pipelines requests and never reads), is aborted: its buffers are freed and
  the answers it did not read are dropped (counted in ``lrsl_write_timeouts_total``). The clock
  restarts whenever the client reads enough for writing to resume;
- **count**: beyond ``--max-connections`` open connections in this process, a new one gets 503 with
  ``Retry-After`` and is closed;
- **answers**: a request llhttp refuses (malformed; ``Content-Length`` together with
  ``Transfer-Encoding``, the request-smuggling pattern; duplicate lengths), and an HTTP/1.1 request
  without exactly one ``Host`` header (RFC 9112 section 3.2), gets a JSON 400; a transfer coding other than
  ``chunked`` (``Transfer-Encoding: gzip, chunked``) gets 501 (RFC 9112 section 6.1: nothing here
  decodes it); either way the connection is closed, so nothing after it is read as a request. A request
  answered before its body was read (413, 405, 404...) also closes the connection rather than reading
  a body nobody wants.

The body has its own clock in the app (``--body-timeout``, 408), since only the endpoint knows when
it wants the body. Every refusal here is a one-line ``{"error": ...}`` with ``Connection: close``; the
connection is then half-closed and given ``LINGER`` seconds, so the client reads the answer before
the socket goes (closing with unread request bytes would reset it). Refusals count in the metrics
under endpoint ``connection``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 16384  # request line + headers, as h11's default bound on an incomplete event
LINGER = 1.0  # seconds a refused connection stays half-open for its client to read the answer


@dataclasses.dataclass(frozen=True)
class Guard:
    idle: float
    header: float
    write: float
    max_connections: int
    on_refused: Callable[[int], None]
    on_write_timeout: Callable[[], None]


def guarded_protocol(settings, metrics) -> type:
    """The protocol class for uvicorn's ``http=``, bound to these settings and metrics."""
    guard = Guard(
        settings.idle_timeout,
        settings.header_timeout,
        settings.write_timeout,
        settings.max_connections,
        metrics.refused,
        metrics.write_timeout,
    )
    return type("GuardedHttpToolsProtocol", (GuardedProtocol,), {"guard": guard})


class _Refused(Exception):
    """Raised in a parser callback after refusing, so llhttp stops parsing this connection's bytes."""


class GuardedProtocol(HttpToolsProtocol):
    guard: Guard

    # ---- the connection --------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        over = len(self.connections) >= self.guard.max_connections
        super().connection_made(transport)
        self._head_timer = self._write_timer = None
        self._head_bytes = self._head_read = 0  # completed head parts; whole reads inside the head
        self._in_head = False
        self._refused = False
        if over:
            limit = self.guard.max_connections
            self._refuse(503, f"too many open connections (--max-connections {limit}); retry later")
        else:  # uvicorn's keep-alive clock, from the start: a silent connection is closed too
            self.timeout_keep_alive_task = self.loop.call_later(
                self.guard.idle, self.timeout_keep_alive_handler
            )

    def connection_lost(self, exc) -> None:
        self._stop_head_clock()
        self._stop_write_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a refused connection's remaining bytes are read and dropped until it closes
        head_before = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrade here: the request was dispatched as plain HTTP
        except httptools.HttpParserError as e:
            if not self._refused:
                self._refuse(400, f"malformed HTTP request: {str(e)[:80]}")
            return
        if head_before and self._in_head:  # this whole read is part of one unfinished head
            self._head_read += len(data)
            self._head_too_large()

    def timeout_keep_alive_handler(self) -> None:
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a client that does not even read its last answer
        else:
            super().timeout_keep_alive_handler()

    # ---- the request head ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._unset_keepalive_if_required()
        self._head_bytes = self._head_read = 0
        self._in_head = True
        self._stop_head_clock()
        self._head_timer = self.loop.call_later(self.guard.header, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_clock()
        refusal = self._head_refusal()
        if refusal is not None:
            self._refuse(*refusal)
            raise _Refused()
        super().on_headers_complete()

    def _head_refusal(self) -> tuple[int, str] | None:
        """(status, message) for a complete head this server will not serve, else None."""
        hosts = sum(name == b"host" for name, _ in self.headers)
        if hosts > 1 or (hosts == 0 and self.parser.get_http_version() == "1.1"):
            return 400, f"a request needs exactly one Host header (HTTP/1.1 requires it), got {hosts}"
        for name, value in self.headers:
            if name == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                if codings != [b"chunked"]:
                    shown = value.decode("latin-1")[:40]
                    return (
                        501,
                        f"Transfer-Encoding {shown!r} is not supported: send chunked or Content-Length",
                    )
        return None

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_too_large():
            raise _Refused()  # stops llhttp on this connection's bytes

    def _head_too_large(self) -> bool:
        """Refuse with 431 when either count of the head is over the bound; True if refused."""
        if max(self._head_bytes, self._head_read) <= MAX_HEAD_BYTES:
            return False
        self._in_head = False
        self._refuse(431, f"request line and headers over {MAX_HEAD_BYTES} bytes")
        return True

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:  # a pipelined head behind an answer
            self._head_timer = self.loop.call_later(self.guard.header, self._head_too_slow)
            return
        self._refuse(
            408, f"request line and headers not complete within {self.guard.header:g} s (--header-timeout)"
        )

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    # ---- a client that does not read -------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.guard.write, self._write_too_slow)

    def resume_writing(self) -> None:
        self._stop_write_clock()
        super().resume_writing()

    def _stop_write_clock(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_too_slow(self) -> None:
        self._write_timer = None
        self.guard.on_write_timeout()
        self._refused = True
        self.transport.abort()  # nothing can be said to a client that does not read

    # ---- after an answer -------------------------------------------------------------------------
    def on_response_complete(self) -> None:
        body_unread = self.cycle is not None and self.cycle.more_body and not self.pipeline
        super().on_response_complete()
        if body_unread and not self.transport.is_closing():
            self._close_gently()

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error and close gently; behind an answer in progress, close after it."""
        self._stop_head_clock()
        self.guard.on_refused(status)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not (cycle.more_body and not cycle.response_started):  # a later request broke: finish this one
                self._refused = True
                cycle.keep_alive = False  # uvicorn closes the connection after this answer
                return
            cycle.disconnected = True  # this request's own body broke: its endpoint stops waiting for it
            cycle.message_event.set()
        if self.transport.is_closing():
            self._refused = True
            return
        body = json.dumps({"error": message}).encode()
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"retry-after: 1\r\n" if status == 503 else b"")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self._close_gently()

    def _close_gently(self) -> None:
        """Half-close (our answer, then FIN), drop what still comes, close after LINGER seconds."""
        self._refused = True
        self._unset_keepalive_if_required()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)
