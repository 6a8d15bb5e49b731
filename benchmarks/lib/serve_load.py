"""Load on a running ``lrsl-rt serve`` for ``benchmarks.serve``: the server process, the closed loop (wrk,
or the Python fallback), the open loop (:mod:`benchmarks.lib.openloop` in its own process), and the CPU
time each side used.

The client's CPU share is its CPU seconds over the level's wall time and the usable cores: wrk and the
open-loop driver are child processes, measured by ``getrusage(RUSAGE_CHILDREN)`` around their run (the
server, a child too, is not reaped until the end, so it is not in those figures); the Python fallback
runs in this process and is measured by ``time.process_time``. The server's share comes from psutil
(the server and its workers), when psutil is installed.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.lib.common import ROOT, latency_stats, run_json

WRK_SCRIPT = Path(__file__).with_name("wrk_predict.lua")
WRK_HINT = "install wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)"


def wrk_version() -> str | None:
    """``wrk 4.1.0`` or similar when wrk is on PATH, else None."""
    if not shutil.which("wrk"):
        return None
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    first = (out.stdout or out.stderr).splitlines()[:1]
    return " ".join(first[0].split()[:2]) if first else "wrk"


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---- the server -------------------------------------------------------------------------------------------
class ServerProcess:
    """``python -m lrsl_rt serve --port 0 FLAGS``; the port is read from its stderr."""

    def __init__(self, bundle: str, flags: list[str], env: dict) -> None:
        cmd = [sys.executable, "-m", "lrsl_rt", "serve", "--bundle", str(bundle), "--port", "0", *flags]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        found = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line)
                if "listening on" in line:
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(120):
            self.stop()
            raise RuntimeError("server printed no port line:\n" + "".join(self.lines[-15:]))
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", "".join(self.lines)).group(1)
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 300) -> dict:
        """Wait for /health 200 and every worker's bundle; the server's /info."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.lines[-15:]))
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    info = httpx.get(f"{self.url}/info", timeout=5).json()
                    if "".join(self.lines).count("ready: Reranker(") >= info["batching"]["workers"]:
                        return info
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready in time")

    def counters(self) -> dict[str, float]:
        """Batch sums and counts from /metrics (summed over the workers by the server)."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        values: dict[str, float] = {}
        for family in text_string_to_metric_families(httpx.get(f"{self.url}/metrics", timeout=10).text):
            for s in family.samples:
                values[s.name] = values.get(s.name, 0.0) + s.value
        return values

    def cpu_seconds(self) -> float | None:
        try:
            import psutil
        except ImportError:
            return None
        procs = [psutil.Process(self.proc.pid)]
        procs += procs[0].children(recursive=True)
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def measured(server: ServerProcess, run) -> dict:
    """``run()`` (a level's load) with the server's mean batch and CPU seconds over it."""
    before, cpu = server.counters(), server.cpu_seconds()
    level = run()
    after, cpu_after = server.counters(), server.cpu_seconds()
    batches = after.get("lrsl_batch_texts_count", 0) - before.get("lrsl_batch_texts_count", 0)
    texts = after.get("lrsl_batch_texts_sum", 0) - before.get("lrsl_batch_texts_sum", 0)
    level["mean_batch_texts"] = texts / batches if batches else None
    level["server_cpu_s"] = None if cpu is None or cpu_after is None else cpu_after - cpu
    return level


# ---- closed loop ------------------------------------------------------------------------------------------
def wrk_level(url: str, bodies: Path, concurrency: int, duration: float) -> dict:
    """wrk, one thread, ``concurrency`` connections, for ``duration`` seconds."""
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "60s"]
    cmd += ["-s", str(WRK_SCRIPT), url, "--", str(bodies)]
    cpu, start = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 180)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-500:]}")
    w = json.loads(line[len("WRK_JSON ") :])
    lat, errors = w["latency_us"], w["errors"]
    errors["non_2xx"] = errors.pop("status")
    ok = w["requests"] - errors["non_2xx"]
    return {
        "qps": ok / (w["duration_us"] / 1e6),
        "requests": ok,
        "p50_ms": lat["p50"] / 1e3,
        "p90_ms": lat["p90"] / 1e3,
        "p99_ms": lat["p99"] / 1e3,
        "max_ms": lat["max"] / 1e3,
        "errors": errors,
        "client_cpu_s": cpu,
        "wall_s": wall,
    }


def python_level(url: str, texts: list[str], alone: list[str], concurrency: int, duration: float) -> dict:
    """The fallback: ``concurrency`` asyncio + httpx clients in this process for ``duration`` seconds."""
    cpu, start = time.process_time(), time.perf_counter()
    run = asyncio.run(_python_clients(url, texts, concurrency, duration))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = latency_stats(run["latencies"]) if run["latencies"] else {}
    differ = sum(label != alone[k] for k, label in run["served"])
    return {
        "qps": len(run["served"]) / run["wall"],
        "requests": len(run["served"]),
        "p50_ms": stats.get("p50_ms"),
        "p90_ms": None,
        "p99_ms": stats.get("p99_ms"),
        "max_ms": max(run["latencies"], default=0) * 1e3,
        "errors": {"failed": len(run["failures"]), "first": run["failures"][:3]},
        "label_differs_from_alone": differ / max(1, len(run["served"])),
        "client_cpu_s": cpu,
        "wall_s": wall,
    }


async def _python_clients(url: str, texts: list[str], concurrency: int, duration: float) -> dict:
    import httpx

    latencies, served, failures = [], [], []
    counter = iter(range(10**9))
    deadline = float("inf")  # set once the client exists (making one takes a while: its TLS context)

    async def client(c) -> None:
        for i in counter:
            if time.perf_counter() >= deadline:
                return
            k = i % len(texts)
            start = time.perf_counter()
            r = await c.post("/predict", json={"inputs": texts[k]})
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:100]}")
            else:
                served.append((k, r.json()[0]["label"]))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        start = time.perf_counter()
        deadline = start + duration
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"latencies": latencies, "served": served, "failures": failures, "wall": wall}


# ---- open loop ----------------------------------------------------------------------------------------------
def open_level(url: str, bodies: Path, rate: float, duration: float, env: dict, connections: int) -> dict:
    """The open-loop driver in its own process at ``rate`` requests per second, on at most ``connections``."""
    cmd = [sys.executable, "-m", "benchmarks.lib.openloop", "--url", url, "--bodies", str(bodies)]
    cmd += ["--rate", f"{rate:.3f}", "--duration", str(duration), "--connections", str(connections)]
    cpu, start = children_cpu(), time.perf_counter()
    level = run_json(cmd, env, timeout=duration + 300)
    level["client_cpu_s"], level["wall_s"] = children_cpu() - cpu, time.perf_counter() - start
    return level


def driver_check(bodies: Path, rate: float, duration: float, env: dict, connections: int) -> dict:
    """The open-loop driver against a trivial endpoint at ``rate``: can it offer that rate here?"""
    cmd = [sys.executable, "-m", "benchmarks.lib.openloop", "--trivial-server"]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[-1])
        level = open_level(f"http://127.0.0.1:{port}", bodies, rate, duration, env, connections)
    finally:
        server.terminate()
        server.wait(30)
    level.pop("labels", None)
    offered, ok = level["offered_rps"] or 0, level["ok_rps"] or 0
    level["sustained"] = offered >= 0.95 * rate and ok >= 0.95 * rate and not level["unanswered"]
    return level
