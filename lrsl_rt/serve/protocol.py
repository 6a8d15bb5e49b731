"""The connection guard: uvicorn's httptools (llhttp) protocol with bounds on what one connection holds.

uvicorn bounds none of these by itself: a connection that sends nothing, or its headers a byte at a
time, is held forever, and so is any number of them. Per connection, this subclass adds:

- **idle**: a connection with no request in progress (just opened, or kept alive after an answer) is
  closed after ``--idle-timeout`` seconds, and only the first byte of a request stops that clock
  (stray bytes between requests do not);
- **head**: from a request's first byte, its request line and headers must arrive within
  ``--header-timeout`` seconds (else 408) and fit in ``MAX_HEAD_BYTES`` (else 431);
- **count**: beyond ``--max-connections`` open connections in this process, a new one gets 503 with
  ``Retry-After`` and is closed;
- **answers**: a request llhttp refuses (malformed; ``Content-Length`` together with
  ``Transfer-Encoding``, the request-smuggling pattern; duplicate lengths) gets a JSON 400 and the
  connection is closed, so nothing after it on the connection is read as a request. A request
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
    max_connections: int
    on_refused: Callable[[int], None]


def guarded_protocol(settings, metrics) -> type:
    """The protocol class for uvicorn's ``http=``, bound to these settings and metrics."""
    guard = Guard(settings.idle_timeout, settings.header_timeout, settings.max_connections, metrics.refused)
    return type("GuardedHttpToolsProtocol", (GuardedProtocol,), {"guard": guard})


class _Refused(Exception):
    """Raised in a parser callback after refusing, so llhttp stops parsing this connection's bytes."""


class GuardedProtocol(HttpToolsProtocol):
    guard: Guard

    # ---- the connection --------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        over = len(self.connections) >= self.guard.max_connections
        super().connection_made(transport)
        self._head_timer = None
        self._head_bytes = 0
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
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a refused connection's remaining bytes are read and dropped until it closes
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrade here: the request was dispatched as plain HTTP
        except httptools.HttpParserError as e:
            if not self._refused:
                self._refuse(400, f"malformed HTTP request: {str(e)[:80]}")

    def timeout_keep_alive_handler(self) -> None:
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a client that does not even read its last answer
        else:
            super().timeout_keep_alive_handler()

    # ---- the request head ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._unset_keepalive_if_required()
        self._head_bytes = 0
        self._stop_head_clock()
        self._head_timer = self.loop.call_later(self.guard.header, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_clock()
        super().on_headers_complete()

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, f"request line and headers over {MAX_HEAD_BYTES} bytes")
            raise _Refused()

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
