"""Soak run: many predictions through the API and through the CLI, resident memory sampled over time.

    python -m benchmarks.soak --bundle artifacts/banking77/bundle [--n 100000] [--batch 1]
        [--texts FILE] [--threads N] [--samples 50] [--mode both|api|cli] [--out FILE.json]

- API: one process calls ``Reranker.predict`` on ``--batch`` texts at a time, cycling through the
  texts, until ``--n`` predictions are made; its RSS (``/proc/self/status`` VmRSS) is sampled
  ``--samples`` times, evenly over the predictions.
- CLI: ``python -m lrsl_rt predict --input FILE`` on ``--n`` lines (the texts repeated), output to
  a temporary file; the child's RSS is sampled from ``/proc/<pid>/status`` every ``--interval``
  seconds, and only samples taken once records are coming out count (loading the bundle is not growth).

Growth = (highest RSS over the last tenth of the samples - RSS at the end of the first tenth, the
warm-up) / that baseline, in percent. A leak shows as growth that rises with ``--n``; allocator noise
does not. The JSON holds every sample, the settings and the machine (:mod:`benchmarks.machine`), like
``benchmarks/latency.py``. Linux only (``/proc``). Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import DEFAULT_TEXTS, ROOT, read_texts
from .machine import cpu_info, versions


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, metavar="DIR")
    p.add_argument("--n", type=int, default=100_000, help="predictions per mode (default 100000)")
    p.add_argument("--batch", type=int, default=1, help="texts per API call (default 1)")
    p.add_argument("--texts", metavar="FILE", help=f".txt/.csv/.jsonl texts (default {DEFAULT_TEXTS})")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per model (default: one per core)")
    p.add_argument("--samples", type=int, default=50, help="RSS samples of the API run (default 50)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between CLI RSS samples")
    p.add_argument("--mode", choices=("both", "api", "cli"), default="both")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    return p.parse_args(argv)


def rss_kib(pid: str | int = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def growth(samples: list[dict]) -> dict:
    """Warm-up baseline (end of the first tenth), the last tenth's peak, and the growth in percent."""
    rss = [s["rss_kib"] for s in samples if s["rss_kib"]]
    if len(rss) < 2:
        return {"baseline_kib": None, "final_kib": None, "growth_pct": None}
    tenth = max(1, len(rss) // 10)
    base, final = rss[tenth - 1], max(rss[-tenth:])
    return {"baseline_kib": base, "final_kib": final, "growth_pct": round(100.0 * (final - base) / base, 2)}


def soak_api(args, texts: list[str]) -> dict:
    from lrsl_rt import Reranker

    r = Reranker.from_bundle(args.bundle, threads=args.threads)
    every = max(1, args.n // max(1, args.samples))
    stream = itertools.cycle(texts)
    samples, done, t0 = [], 0, time.monotonic()
    while done < args.n:
        batch = [next(stream) for _ in range(min(args.batch, args.n - done))]
        r.predict(batch)
        before, done = done, done + len(batch)
        if done // every != before // every or done == args.n:
            samples.append({"predictions": done, "seconds": time.monotonic() - t0, "rss_kib": rss_kib()})
    return {"samples": samples, **growth(samples)}


def soak_cli(args, texts: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="lrsl_soak_") as tmp:
        path = Path(tmp) / "texts.txt"
        with open(path, "w", encoding="utf-8") as f:
            for text in itertools.islice(itertools.cycle(texts), args.n):
                f.write(" ".join(text.split()) + "\n")
        cmd = [sys.executable, "-m", "lrsl_rt", "predict", "--bundle", str(args.bundle), "--input", str(path)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        samples, t0 = [], time.monotonic()
        with open(Path(tmp) / "out.jsonl", "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, cwd=ROOT)
            while proc.poll() is None:
                written = os.path.getsize(out.name)
                samples.append(
                    {"seconds": time.monotonic() - t0, "rss_kib": rss_kib(proc.pid), "output_bytes": written}
                )
                time.sleep(args.interval)
            err = proc.stderr.read().decode("utf-8", "replace")
            lines = (Path(tmp) / "out.jsonl").read_bytes().count(b"\n")
    return {
        "returncode": proc.returncode,
        "stderr": err[-2000:],
        "output_lines": lines,
        "seconds": time.monotonic() - t0,
        "samples": samples,
        **growth(
            [x for x in samples if x["output_bytes"] > 0]
        ),  # from the first records on: loading is not growth
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    texts = [t for t in read_texts(args.texts or DEFAULT_TEXTS).texts if t.strip()]
    if not texts:
        print("Error: no texts to soak with", file=sys.stderr)
        return 2
    result = {
        "method": {k: v for k, v in vars(args).items() if k != "out"} | {"bundle": str(args.bundle)},
        "machine": {"cpu": cpu_info(), "versions": versions()},
    }
    if args.mode in ("both", "api"):
        result["api"] = soak_api(args, texts)
        print(f"API: {args.n:,} predictions, RSS growth {result['api']['growth_pct']} %", file=sys.stderr)
    if args.mode in ("both", "cli"):
        result["cli"] = soak_cli(args, texts)
        cli = result["cli"]
        print(
            f"CLI: exit {cli['returncode']}, {cli['output_lines']:,} lines, RSS growth {cli['growth_pct']} %",
            file=sys.stderr,
        )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0 if result.get("cli", {}).get("returncode", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
