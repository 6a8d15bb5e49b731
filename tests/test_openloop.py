"""The open-loop driver of benchmarks.serve against a real socket server that misbehaves on purpose."""

from __future__ import annotations

import asyncio

from benchmarks.lib.openloop import TRIVIAL_BODY, drive

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(TRIVIAL_BODY), TRIVIAL_BODY)


async def _serve_then_drop_second(answers: list[int]):
    """A server that answers each connection's first request and closes it, unanswered, on the second."""

    async def handle(reader, writer):
        seen = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            size = int(
                next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[1]
            )
            await reader.readexactly(size)
            seen += 1
            if seen == 2:
                writer.close()  # the keep-alive race: closed as the next request arrives
                return
            answers.append(1)
            writer.write(ANSWER)
            await writer.drain()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_a_request_lost_on_a_kept_alive_connection_is_sent_again():
    async def main():
        answers: list[int] = []
        server = await _serve_then_drop_second(answers)
        port = server.sockets[0].getsockname()[1]
        async with server:
            records, _ = await drive(f"http://127.0.0.1:{port}", [b'{"inputs": "x"}'], 50.0, 0.2, 1, 5.0)
        return records, answers

    records, answers = asyncio.run(main())
    assert len(records) == 10 and all(r is not None for r in records)
    assert [r[2] for r in records] == [200] * 10  # none counted as an error: each was resent once
    assert len(answers) == 10


def test_a_connection_refused_is_an_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    records, _ = asyncio.run(drive(f"http://127.0.0.1:{port}", [b"{}"], 20.0, 0.1, 1, 2.0))
    assert records and all(r is not None and r[2] is None for r in records)
