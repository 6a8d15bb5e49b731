"""What the server tests share: the server in a subprocess, /metrics parsing, and a raw-socket client.

``Server`` runs ``python -m lrsl_rt serve ... --port 0`` from this checkout (``PYTHONPATH`` and the
working directory are the checkout root, so the subprocess imports this worktree's code) with one
worker and one ONNX Runtime thread unless the flags say otherwise. Everything listens on 127.0.0.1.

``Raw`` is a client that writes bytes as given and reads what comes back, for the requests no HTTP
library will send (a head dribbled a byte at a time, a body that never ends, a smuggling pattern).
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
from conftest import ROOT
from prometheus_client import parser as prom_parser

START_TIMEOUT = 60.0


class Server:
    """``python -m lrsl_rt serve ... --port 0`` in a subprocess; its stderr is collected by a thread."""

    def __init__(self, bundle, *flags: str) -> None:
        cmd = [sys.executable, "-m", "lrsl_rt", "serve", "--bundle", str(bundle), "--port", "0"]
        defaults = {"--threads": "1", "--workers": "1"}
        cmd += [x for flag, v in defaults.items() if flag not in flags for x in (flag, v)] + list(flags)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._port_line = threading.Event()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._port_line.wait(START_TIMEOUT):
            self.kill()
            raise AssertionError(f"server printed no port line:\n{self.log}")
        self.port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log).group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.health_seen: list[tuple[int, dict]] = []

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if "listening on" in line:
                self._port_line.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_ready(self) -> None:
        """Poll /health until 200, recording every answer (503 while the bundle loads)."""
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while time.monotonic() < deadline:
                r = c.get("/health")
                self.health_seen.append((r.status_code, r.json()))
                if r.status_code == 200:
                    return
                time.sleep(0.02)
        raise AssertionError(
            f"server not ready in {START_TIMEOUT} s; health: {self.health_seen[-3:]}\n{self.log}"
        )

    def wait_log(self, text: str, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.log.count(text) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.log.count(text) >= count, f"{text!r} not {count} time(s) in the log:\n{self.log}"

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# ---- /metrics ---------------------------------------------------------------------------------------
def metric_values(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}, parsed by prometheus_client."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for family in prom_parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for_metric(url: str, name: str, want: float, timeout: float = 20.0, **labels) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value(metric_values(url), name, **labels) == want:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name}{labels} never reached {want}: {value(metric_values(url), name, **labels)}")


# ---- a raw-socket client -------------------------------------------------------------------------------
class Raw:
    """One TCP connection to the server; ``send`` writes bytes as given, ``response`` reads one answer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readable(self, timeout: float) -> bool:
        return bool(self.buf) or bool(select.select([self.sock], [], [], timeout)[0])

    def _fill(self, deadline: float) -> bool:
        """Read what comes until ``deadline``; False at EOF (or a reset)."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        self.buf += data
        return bool(data)

    def response(self, timeout: float = 10.0) -> tuple[int, dict, bytes]:
        """(status, headers with lower-case names, body) of the next answer (Content-Length bodies)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed before a whole answer: {self.buf[:200]!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        headers = {k.lower(): v for k, v in headers.items()}
        size = int(headers.get("content-length", 0))
        while len(self.buf) < size:
            if not self._fill(deadline):
                raise AssertionError("connection closed inside an answer's body")
        body, self.buf = self.buf[:size], self.buf[size:]
        return int(lines[0].split()[1]), headers, body

    def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True when the server closes the connection within ``timeout`` (and sends nothing more)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self._fill(deadline):
                    return not self.buf
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
