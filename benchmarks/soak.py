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
does not. The table goes to stdout; ``--out FILE.json`` writes every sample, the settings and the
machine (:mod:`benchmarks.lib.machine`) with the run record (kind ``soak``: ``results_doc.py`` pages it),
and the table in ``FILE.md`` beside it. Linux only (``/proc``). Not a test: nothing here is asserted;
the exit status is 1 when the CLI run failed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.lib.common import DEFAULT_TEXTS, ROOT, read_texts
from benchmarks.lib.machine import cpu_info, versions
from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import UsageError

GROWTH_TARGET_PCT = 5.0  # docs/guide/reliability.md: RSS growth over a soak run of at most 5 %


def parse_args(argv=None) -> argparse.Namespace:
    p = CommandParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
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


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def markdown(result: dict) -> str:
    """The growth of each path against the target, and how it is measured."""
    m = result["method"]
    lines = [
        f"# Soak: resident memory over {m['n']:,} predictions",
        "",
        f"Bundle `{m['bundle']}`; API: {m['batch']} text(s) per call; ONNX Runtime threads "
        f"{m['threads'] or 'one per core'}.",
        "",
        "| path | predictions | RSS samples | baseline RSS MiB | final RSS MiB | growth | target | met |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for path in ("api", "cli"):
        r = result.get(path)
        if r is None:
            continue
        done = r["samples"][-1]["predictions"] if path == "api" and r["samples"] else r.get("output_lines")
        g = r["growth_pct"]
        met = "-" if g is None else "yes" if g <= GROWTH_TARGET_PCT else "NO"
        lines.append(
            f"| {path} | {'-' if done is None else f'{done:,}'} | {len(r['samples'])} | {_mib(r['baseline_kib'])} "
            f"| {_mib(r['final_kib'])} | {'-' if g is None else f'{g:.2f} %'} | <= {GROWTH_TARGET_PCT:g} % | {met} |"
        )
    lines += [
        "",
        "Baseline: the RSS at the end of the first tenth of the samples (the CLI's counted from its first "
        "output records: loading is not growth); final: the highest RSS over the last tenth; growth = "
        "final / baseline - 1.",
    ]
    cli = result.get("cli")
    if cli and cli["returncode"] != 0:
        tail = " ".join(cli["stderr"].split())[-300:].replace("`", "'")
        lines += ["", f"The CLI exited {cli['returncode']}: `{tail}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    run = script_record(__file__, argv)
    texts = [t for t in read_texts(args.texts or DEFAULT_TEXTS).texts if t.strip()]
    if not texts:
        raise UsageError("no texts to soak with")
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
    code = 0 if result.get("cli", {}).get("returncode", 0) == 0 else 1
    md = markdown(result)
    print(md)
    if args.out:
        title = "Soak: resident memory over many predictions"
        write_result(args.out, result, md, kind="soak", title=title, run=run, exit_code=code)
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
