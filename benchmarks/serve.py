"""``lrsl-rt serve`` under load from outside Python, against the in-process Reranker, on real texts.

    python -m benchmarks.serve --bundle DIR [--texts FILE] [--threads N] [--server-flags FLAGS ...]
        [--concurrency 1,8,32,128] [--rates 50,80,100,150] [--duration 10] [--client auto|wrk|python]
        [--out FILE.json] [--quick]

Contenders, each in its own process, all on the same texts (one per request) and bundle in one run:

- ``inprocess``: ``Reranker.predict`` in a worker process (this script with ``--worker``), with
  ``--threads`` ONNX Runtime threads: batch-1 latency per text (these labels are each text's answer
  *alone*) and throughput at ``--batch`` (32) texts per call. It runs before the first server and
  again after each server's closed loop, so each server is compared with the mean of the two
  in-process runs on either side of its own levels: a shared machine's speed drifts over a run.
- one ``lrsl-rt serve`` per ``--server-flags`` (default: the server's defaults, ``--workers 1`` and
  ``--max-batch-texts 1``), each driven by a **closed loop**: wrk (one thread, C connections, each
  sending its next request when the last is answered) for ``--duration`` seconds at each concurrency,
  after ``--warmup`` unmeasured seconds. Without wrk the script says how to install it and falls back
  to asyncio + httpx clients in this process, named as such in the table: they share the cores with
  the server, so their figures measure the client too.
- the first server also gets an **open loop** (:mod:`benchmarks.lib.openloop`, a process of its own):
  requests at fixed arrival times, at ``--rates`` percent of that server's best closed-loop q/s. Past
  100 % the queue fills and the server answers 429 with ``Retry-After``; the p99 of the accepted
  requests shows what the queue bound (``--max-queue-texts``) costs them. The driver may open
  :func:`open_connections` connections: twice what the server can hold at once (its workers' queues
  and the batches they run, from the server's ``/info``), so an overload reaches the server's queue
  bound rather than waiting in the driver for a free connection, as it would behind a cap (a real
  population of clients has none). Before those levels the driver is checked against a trivial
  endpoint at twice the highest rate, on as many connections (``driver check``).

Each level records the client's CPU share and the server's (psutil), the server's mean batch
(``/metrics``) and, where the client reads the answers (open loop, Python fallback), the share of
requests whose label differs from the same text's label alone (dynamic int8: batch neighbours move
labels; the server says whether its bundle can do that, in ``/info``).

``--quick`` is a smoke run. Output: markdown on stdout (:mod:`benchmarks.lib.serve_report`); with
``--out FILE.json`` the results (kind ``serve``, with the run record: ``results_doc`` pages it) and
the markdown in ``FILE.md`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.lib.common import (
    DEFAULT_TEXTS,
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
from lrsl_rt.command import run_command
from lrsl_rt.errors import UsageError

QUICK = {"n_texts": 16, "duration": 1.0, "warmup": 0.5, "concurrency": "1,8", "rates": "50,150"}
DEFAULTS = {
    "n_texts": 1000,
    "duration": 10.0,
    "warmup": 2.0,
    "concurrency": "1,8,32,128",
    "rates": "50,80,100,150",
}
DEFAULT_SERVERS = ["", "--solo-threads 0", "--workers 1", "--max-batch-texts 1"]
OPEN_CLIENT = "benchmarks.lib.openloop (asyncio, a process of its own, fixed arrival times)"


def _ints(p, flag: str, text: str) -> list[int]:
    try:
        values = sorted({int(x) for x in str(text).split(",") if x.strip()})
    except ValueError:
        values = []
    if not values or min(values) < 1:
        p.error(f"{flag} must be positive integers separated by commas, got {text!r}")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--bundle", required=True, metavar="DIR", help="the lrsl-rt bundle to serve")
    p.add_argument("--texts", metavar="FILE", help=f".txt/.csv/.jsonl texts (default {DEFAULT_TEXTS})")
    p.add_argument("--n-texts", type=int, help="evenly spaced texts to cycle through (default 1000)")
    p.add_argument(
        "--threads", type=int, help="ONNX Runtime threads of the in-process run (default: the CPUs)"
    )
    p.add_argument(
        "--server-flags",
        action="append",
        metavar="FLAGS",
        help=f"`lrsl-rt serve` flags of one server, e.g. '--workers 1' (repeat; default {DEFAULT_SERVERS})",
    )
    p.add_argument("--concurrency", help="closed-loop connections (default 1,8,32,128)")
    p.add_argument(
        "--rates", help="open-loop rates, percent of the best closed-loop q/s (default 50,80,100,150)"
    )
    p.add_argument("--duration", type=float, help="measured seconds per level (default 10)")
    p.add_argument(
        "--warmup", type=float, help="unmeasured seconds before each closed-loop level (default 2)"
    )
    p.add_argument("--client", choices=("auto", "wrk", "python"), default="auto", help="closed-loop client")
    p.add_argument("--batch", type=int, default=32, help="texts per call of the in-process throughput (32)")
    p.add_argument("--thread-pool", choices=("session", "shared"), default="session")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed for the in-process run")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.concurrency = _ints(p, "--concurrency", args.concurrency)
    args.rates = _ints(p, "--rates", args.rates)
    args.server_flags = DEFAULT_SERVERS if args.server_flags is None else args.server_flags
    args.threads = args.threads or cpu_info()["usable_cpus"]
    return args


# ---- the in-process contender (a worker process) ------------------------------------------------------
def inprocess_worker(args) -> dict:
    from lrsl_rt import Reranker

    texts = read_texts(args.data).texts
    r = Reranker.from_bundle(args.bundle, threads=args.threads, thread_pool=args.thread_pool)
    for t in texts[:32]:
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


def run_inprocess(args, data_file: Path) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.serve", "--worker", "inprocess", "--data", str(data_file)]
    cmd += ["--bundle", str(args.bundle), "--threads", str(args.threads), "--batch", str(args.batch)]
    cmd += ["--thread-pool", args.thread_pool]
    return run_json(cmd, bench_env(args.threads), args.timeout)


# ---- the served contenders ------------------------------------------------------------------------------
def open_connections(batching: dict) -> int:
    """Connections for the open loop: twice the texts a server holds at once, one text per request.

    Each worker holds ``max_queue_texts`` queued texts and a batch of up to ``max_batch_texts`` in the
    model; a request beyond that gets 429, if it reaches the server.

    >>> open_connections({"workers": 2, "max_queue_texts": 128, "max_batch_texts": 32})
    640
    """
    return 2 * batching["workers"] * (batching["max_queue_texts"] + batching["max_batch_texts"])


def closed_client(args, log):
    """(name, level function) of the closed-loop client: wrk, or the Python fallback."""
    from benchmarks.lib import serve_load as L

    wrk = L.wrk_version() if args.client != "python" else None
    if wrk:
        return f"{wrk}, 1 thread", lambda url, bodies, texts, alone, c, d: L.wrk_level(url, bodies, c, d)
    if args.client == "wrk":
        raise UsageError(f"--client wrk: wrk not found; {L.WRK_HINT}")
    if args.client == "auto":
        log(f"wrk not found: {L.WRK_HINT}. Falling back to the Python client, which measures itself too")
    name = "python asyncio + httpx in the benchmark process" + (
        " (fallback: no wrk)" if args.client == "auto" else ""
    )
    return name, lambda url, bodies, texts, alone, c, d: L.python_level(url, texts, alone, c, d)


def run_server(
    args, flags: str, bodies: Path, texts, alone, client, open_loop: bool, log, after_closed=None
) -> tuple[dict, dict]:
    """One server's closed-loop levels (and open-loop levels when asked); (entry, driver check).

    ``after_closed()`` runs between the closed and the open loop, the server idle (the in-process
    contender again, so that each server's closed loop has an in-process run on either side)."""
    from benchmarks.lib import serve_load as L

    env = bench_env()
    server = L.ServerProcess(args.bundle, shlex.split(flags), env)
    check = {}
    try:
        info = server.wait_ready()
        b = info["batching"]
        entry = {
            "name": flags or "defaults",
            "flags": flags,
            "workers": b["workers"],
            "threads": b["threads"],
            "max_queue_texts": b["max_queue_texts"],
            "max_queue_ms": b.get("max_queue_ms"),
            "max_batch_texts": b["max_batch_texts"],
        }
        entry["closed_loop"], entry["open_loop"] = {}, {}
        for c in args.concurrency:
            log(f"server {entry['name']!r}: closed loop, concurrency {c}")
            client(server.url, bodies, texts, alone, c, args.warmup)
            level = L.measured(server, lambda c=c: client(server.url, bodies, texts, alone, c, args.duration))
            entry["closed_loop"][str(c)] = level
        if after_closed is not None:
            after_closed()
        best = max(level["qps"] for level in entry["closed_loop"].values())
        if open_loop and best <= 0:
            log(f"server {entry['name']!r}: no request answered in the closed loop; no open loop")
        elif open_loop:
            rates = {f"{p} %": best * p / 100 for p in args.rates}
            conns = entry["open_connections"] = open_connections(b)
            log(f"driver check: {2 * max(rates.values()):.0f} requests/s against a trivial endpoint")
            check = L.driver_check(bodies, 2 * max(rates.values()), args.duration, env, conns)
            for name, rate in rates.items():
                log(
                    f"server {entry['name']!r}: open loop, {rate:.0f} requests/s ({name}), {conns} connections"
                )
                level = L.measured(
                    server, lambda r=rate: L.open_level(server.url, bodies, r, args.duration, env, conns)
                )
                labels = level.pop("labels")
                level["label_differs_from_alone"] = sum(x != alone[k] for k, x in labels) / max(
                    1, len(labels)
                )
                entry["open_loop"][name] = level
        return entry, check
    finally:
        code = server.stop()
        if code != 0:
            log(f"warning: the server exited {code}:\n" + "".join(server.lines[-10:]))


def _main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        emit_result(inprocess_worker(args))
        return 0
    record = script_record(__file__, argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    from benchmarks.lib import serve_report
    from lrsl_rt.info import batch_invariant
    from lrsl_rt.manifest import read_manifest

    try:
        data = subsample(read_texts(args.texts or DEFAULT_TEXTS), args.n_texts)
        manifest = read_manifest(args.bundle)
    except (ValueError, OSError) as e:
        raise UsageError(str(e)) from e
    closed_name, client = closed_client(args, log)
    with tempfile.TemporaryDirectory(prefix="lrsl_bench_serve_") as tmp:
        data_file = write_jsonl(Path(tmp) / "texts.jsonl", data)
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"inputs": t}) + "\n" for t in data.texts), encoding="utf-8")
        runs = []

        def inprocess_run():
            log("in-process Reranker")
            runs.append(run_inprocess(args, data_file))
            return runs[-1].pop("alone_labels")

        alone = inprocess_run()
        servers, check = [], {}
        for i, flags in enumerate(args.server_flags):
            entry, got = run_server(
                args,
                flags,
                bodies,
                data.texts,
                alone,
                client,
                i == 0 and bool(args.rates),
                log,
                inprocess_run,
            )
            entry["inprocess_runs"] = [
                len(runs) - 2,
                len(runs) - 1,
            ]  # the runs on either side of its closed loop
            servers.append(entry)
            check = check or got
    result = {
        "method": {
            "threads": args.threads,
            "thread_pool": args.thread_pool,
            "concurrency": args.concurrency,
            "rates_percent": args.rates,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "quick": args.quick,
            "closed_client": closed_name,
            "open_client": OPEN_CLIENT,
        },
        "bundle": {
            "path": str(args.bundle),
            "precision": manifest.precision,
            "preset": manifest.preset,
            "answers_depend_on_batch": not batch_invariant(manifest),
        },
        "texts": {"source": data.source, "n": len(data)},
        "machine": {"cpu": cpu_info(), "versions": versions()},
        "inprocess": runs[0],
        "inprocess_runs": runs,
        "driver_check": check,
        "servers": servers,
    }
    result["targets"] = serve_report.targets(result)
    md = serve_report.markdown(result)
    print(md)
    if args.out:
        write_result(args.out, result, md, kind="serve", title="HTTP serving (lrsl-rt serve)", run=record)
        log(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


def main(argv=None) -> int:
    return run_command(lambda: _main(argv))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
