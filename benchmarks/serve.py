"""``lrsl-rt serve`` under closed-loop load, against the in-process Reranker, on real texts.

    python -m benchmarks.serve --bundle DIR [--texts FILE] [--threads N] [--concurrency 1,8,32,128]
        [--requests R] [--max-batch-texts 32] [--max-wait-ms 0] [--out FILE.json] [--quick]

Three contenders, each in its own process with its ONNX Runtime threads set explicitly (``--threads``,
default the usable CPUs):

- ``inprocess``: ``Reranker.predict`` in a worker process (this script with ``--worker``): batch-1
  latency per text (one text per call; these labels are each text's answer *alone*) and throughput at
  ``--batch`` (default 32) texts per call over full batches.
- ``served``: ``lrsl-rt serve`` (the real CLI, ``--port 0`` on 127.0.0.1) with micro-batching
  (``--max-batch-texts``, ``--max-wait-ms``), driven by closed-loop clients at each concurrency:
  C asyncio tasks in this process, each with its own connection, sending one text per request and the
  next as soon as the answer arrives. Throughput is requests answered / wall time of the level;
  latency is per request, client side (HTTP, JSON and the queue included). The mean batch comes from
  the server's ``/metrics`` (``lrsl_batch_texts`` sum / count over the level).
- ``served_batching_off``: the same server with ``--max-batch-texts 1``.

The client runs in this process and shares the machine's cores with the server: on a small machine
its HTTP work is part of what the served figures pay. Every level sends ``--requests`` requests after
``--warmup`` unmeasured ones, cycling through ``--n-texts`` evenly spaced texts of the file.

Batch effect: with dynamic int8 quantization a text's logits depend on the other texts of its batch.
For each served level the script reports the share of requests whose label differs from the label the
same text gets alone (the in-process batch-1 run).

``--quick`` is a smoke run (few texts and requests, concurrency 1 and 8). Output: markdown on stdout
(``serve_report.py``); with ``--out FILE.json`` the results (kind ``serve``, with the run record:
``results_doc.py`` pages it) and the markdown in ``FILE.md`` beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.lib.common import (
    DEFAULT_TEXTS,
    ROOT,
    bench_env,
    emit_result,
    full_batches,
    latency_stats,
    read_texts,
    run_json,
    subsample,
    write_jsonl,
)
from benchmarks.lib.machine import cpu_info, versions
from benchmarks.lib.record import script_record, write_result

QUICK = {"n_texts": 16, "requests": 40, "warmup": 4, "concurrency": "1,8"}
DEFAULTS = {"n_texts": 1000, "requests": 2000, "warmup": 100, "concurrency": "1,8,32,128"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--bundle", required=True, metavar="DIR", help="the lrsl-rt bundle to serve")
    p.add_argument("--texts", metavar="FILE", help=f".txt/.csv/.jsonl texts (default {DEFAULT_TEXTS})")
    p.add_argument("--n-texts", type=int, help="evenly spaced texts to cycle through (default 1000)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads of the server and the in-process run")
    p.add_argument("--concurrency", help="closed-loop client counts (default 1,8,32,128)")
    p.add_argument("--requests", type=int, help="measured requests per level (default 2000)")
    p.add_argument("--warmup", type=int, help="unmeasured requests before each level (default 100)")
    p.add_argument("--batch", type=int, default=32, help="texts per call of the in-process throughput (32)")
    p.add_argument("--max-batch-texts", type=int, default=32, help="the served run's --max-batch-texts")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="the served run's --max-wait-ms")
    p.add_argument("--thread-pool", choices=("session", "shared"), default="session")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per process")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.concurrency = sorted({int(c) for c in str(args.concurrency).split(",") if c.strip()})
    except ValueError:
        p.error(f"--concurrency must be integers separated by commas, got {args.concurrency!r}")
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency must be positive")
    args.threads = args.threads or cpu_info()["usable_cpus"]
    return args


# ---- the in-process contender (a worker process) ------------------------------------------------------
def inprocess_worker(args) -> dict:
    from lrsl_rt import Reranker

    texts = read_texts(args.data).texts
    r = Reranker.from_bundle(args.bundle, threads=args.threads, thread_pool=args.thread_pool)
    for t in texts[: args.warmup]:
        r.predict([t])
    times, alone = [], []
    for t in texts:
        start = time.perf_counter()
        alone.append(r.predict([t])[0].label)
        times.append(time.perf_counter() - start)
    batches = full_batches(texts, args.batch)
    r.predict(batches[0])
    start = time.perf_counter()
    for b in batches:
        r.predict(b)
    wall = time.perf_counter() - start
    return {
        "b1": latency_stats(times),
        "qps": len(batches) * args.batch / wall,
        "batch": args.batch,
        "alone_labels": alone,
    }


# ---- the served contenders ------------------------------------------------------------------------------
class ServerProcess:
    """``python -m lrsl_rt serve --port 0 ...``; the port is read from its stderr."""

    def __init__(self, args, max_batch_texts: int) -> None:
        cmd = [sys.executable, "-m", "lrsl_rt", "serve", "--bundle", str(args.bundle), "--port", "0"]
        cmd += ["--threads", str(args.threads), "--thread-pool", args.thread_pool]
        cmd += ["--max-batch-texts", str(max_batch_texts), "--max-wait-ms", str(args.max_wait_ms)]
        cmd += ["--max-queue-texts", str(max(1024, 4 * max(args.concurrency)))]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=bench_env(args.threads), stderr=subprocess.PIPE, text=True
        )
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

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.lines[-15:]))
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready in time")

    def batch_totals(self) -> tuple[float, float]:
        """(sum, count) of the server's lrsl_batch_texts histogram."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        values = {}
        for family in text_string_to_metric_families(httpx.get(f"{self.url}/metrics", timeout=10).text):
            for s in family.samples:
                values[s.name] = s.value
        return values.get("lrsl_batch_texts_sum", 0.0), values.get("lrsl_batch_texts_count", 0.0)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


async def closed_loop(url: str, texts: list[str], concurrency: int, n: int) -> dict:
    """``n`` requests from ``concurrency`` clients, each waiting for its answer before the next."""
    import httpx

    latencies: list[float] = []
    served: list[tuple[int, str]] = []  # (text index, label)
    counter = iter(range(n))
    failures: list[str] = []

    async def client(c) -> None:
        for i in counter:
            k = i % len(texts)
            start = time.perf_counter()
            r = await c.post("/predict", json={"inputs": texts[k]})
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:100]}")
                continue
            served.append((k, r.json()[0]["label"]))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"latencies": latencies, "served": served, "wall": wall, "failures": failures}


def run_served(args, texts: list[str], alone: list[str], max_batch_texts: int, log) -> dict:
    server = ServerProcess(args, max_batch_texts)
    try:
        server.wait_ready()
        levels = {}
        for c in args.concurrency:
            log(f"served (max batch {max_batch_texts}): concurrency {c}")
            asyncio.run(closed_loop(server.url, texts, c, args.warmup))
            before = server.batch_totals()
            run = asyncio.run(closed_loop(server.url, texts, c, args.requests))
            after = server.batch_totals()
            batches = after[1] - before[1]
            differ = sum(label != alone[k] for k, label in run["served"])
            levels[str(c)] = {
                **latency_stats(run["latencies"]),
                "qps": len(run["served"]) / run["wall"],
                "requests": len(run["served"]),
                "failures": run["failures"][:5],
                "n_failures": len(run["failures"]),
                "mean_batch_texts": (after[0] - before[0]) / batches if batches else None,
                "label_differs_from_alone": differ / max(1, len(run["served"])),
                "n_label_differs": differ,
            }
        return {"max_batch_texts": max_batch_texts, "levels": levels}
    finally:
        code = server.stop()
        if code != 0:
            log(f"warning: the server exited {code}:\n" + "".join(server.lines[-10:]))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        emit_result(inprocess_worker(args))
        return 0
    record = script_record(__file__, argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    from benchmarks.lib import serve_report
    from lrsl_rt.manifest import read_manifest

    try:
        data = subsample(read_texts(args.texts or DEFAULT_TEXTS), args.n_texts)
        manifest = read_manifest(args.bundle)
    except (ValueError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lrsl_bench_serve_") as tmp:
        data_file = write_jsonl(Path(tmp) / "texts.jsonl", data)
        log("in-process Reranker")
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.serve",
            "--worker",
            "inprocess",
            "--data",
            str(data_file),
        ]
        cmd += ["--bundle", str(args.bundle), "--threads", str(args.threads), "--batch", str(args.batch)]
        cmd += ["--warmup", str(args.warmup), "--thread-pool", args.thread_pool]
        inprocess = run_json(cmd, bench_env(args.threads), args.timeout)
    alone = inprocess.pop("alone_labels")
    served = run_served(args, data.texts, alone, args.max_batch_texts, log)
    off = run_served(args, data.texts, alone, 1, log)
    result = {
        "method": {
            "threads": args.threads,
            "thread_pool": args.thread_pool,
            "concurrency": args.concurrency,
            "requests": args.requests,
            "warmup": args.warmup,
            "max_wait_ms": args.max_wait_ms,
            "quick": args.quick,
            "client": "closed loop, asyncio + httpx in the benchmark process, one text per request, loopback",
        },
        "bundle": {"path": str(args.bundle), "precision": manifest.precision, "preset": manifest.preset},
        "texts": {"source": data.source, "n": len(data)},
        "machine": {"cpu": cpu_info(), "versions": versions()},
        "inprocess": inprocess,
        "served": served,
        "served_batching_off": off,
    }
    result["targets"] = serve_report.targets(result)
    md = serve_report.markdown(result)
    print(md)
    if args.out:
        write_result(args.out, result, md, kind="serve", title="HTTP serving (lrsl-rt serve)", run=record)
        log(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
