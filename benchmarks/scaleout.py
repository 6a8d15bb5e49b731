"""Rows per second of ``lrsl-rt predict --engine ray`` against the in-process CLI, start-up apart.

For each row count N the texts file (Banking77 test texts by default) is repeated to N rows of a CSV
and labelled by fresh ``lrsl-rt`` processes, as a user would run them:

- ``inprocess``: ``lrsl-rt predict --input in.csv --output out.jsonl`` (one process, all cores);
- ``ray``: ``lrsl-rt predict --engine ray --input in.csv --output DIR`` (a local cluster of all cores,
  ``--actors`` x ``--cpus-per-actor``);
- ``ray-1actor``: one actor of one CPU: the per-actor throughput that the scale-out model rests on.

Start-up is measured apart, as the wall time of the same command on a one-row file (process,
imports, bundle load; for Ray also actor start, and cluster start unless ``--ray-address`` joins a
running cluster). ``rows/s`` is
N / (wall - start-up): the steady rate. Each figure is the median of ``--runs`` processes.

Writes ``scaleout.json`` (kind ``scaleout``, with the run record: ``results_doc.py`` pages it) and
``scaleout.md`` (machine, versions, table) into ``--out``.

    python -m benchmarks.scaleout --bundle artifacts/banking77/bundle --rows 10000 100000 --out DIR
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from benchmarks.lib.common import DEFAULT_TEXTS, ROOT, bench_env, median_range, read_texts
from benchmarks.lib.machine import cpu_info, versions
from benchmarks.lib.record import script_record, write_result
from benchmarks.lib.startup import cli_command
from lrsl_rt.command import CommandParser, run_command

ONE_ROW = 1


def write_rows(path: Path, texts: list[str], n: int) -> Path:
    """A CSV of ``n`` rows cycling through ``texts``."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([texts[i % len(texts)]] for i in range(n))
    return path


def engine_argv(engine: str, cores: int, actors: int, cpus_per_actor: int, address: str | None) -> list[str]:
    if engine == "inprocess":
        return ["--threads", str(cores)]
    join = ["--ray-address", address] if address else []
    if engine == "ray-1actor":
        return ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "1", *join]
    return ["--engine", "ray", "--actors", str(actors), "--cpus-per-actor", str(cpus_per_actor), *join]


def timed_run(cmd: list[str], env: dict, timeout: float) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return wall


def measure(engine: str, bundle: str, data: Path, work: Path, args, cores: int) -> float:
    """Wall seconds of one fresh ``lrsl-rt predict`` process on ``data`` (output deleted after)."""
    cli, _ = cli_command()
    out = work / ("out.jsonl" if engine == "inprocess" else "out")
    cmd = [*cli, "predict", "--bundle", bundle, "--input", str(data), "--output", str(out)]
    cmd += engine_argv(engine, cores, args.actors or cores, args.cpus_per_actor, args.ray_address)
    try:
        return timed_run(cmd, bench_env(), args.timeout)
    finally:
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)


def run(args) -> dict:
    cores = len(os.sched_getaffinity(0))
    texts = read_texts(args.texts).texts
    result = {
        "bundle": str(args.bundle),
        "texts": str(args.texts),
        "cores": cores,
        "actors": args.actors or cores,
        "cpus_per_actor": args.cpus_per_actor,
        "runs": args.runs,
        "ray_address": args.ray_address,
        "machine": cpu_info(),
        "versions": {**versions(), "ray": _version("ray"), "pyarrow": _version("pyarrow")},
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        work = Path(tmp)
        one = write_rows(work / "one.csv", texts, ONE_ROW)
        for engine in args.engines:
            startup = median_range(
                [measure(engine, args.bundle, one, work, args, cores) for _ in range(args.runs)]
            )
            for n in args.rows:
                data = write_rows(work / f"in-{n}.csv", texts, n)
                walls = [measure(engine, args.bundle, data, work, args, cores) for _ in range(args.runs)]
                wall = median_range(walls)
                steady = max(wall["median"] - startup["median"], 1e-9)
                row = {
                    "engine": engine,
                    "n": n,
                    "wall_s": wall,
                    "startup_s": startup,
                    "rows_per_s": n / steady,
                }
                result["rows"].append(row)
                print(f"{engine:>11}  {n:>8,} rows  wall {wall['median']:8.1f} s  start-up "
                      f"{startup['median']:6.1f} s  {row['rows_per_s']:8.1f} rows/s", flush=True)  # fmt: skip
    base = {r["n"]: r["rows_per_s"] for r in result["rows"] if r["engine"] == "inprocess"}
    for r in result["rows"]:
        r["vs_inprocess"] = r["rows_per_s"] / base[r["n"]] if r["n"] in base else None
    return result


def markdown(result: dict) -> str:
    m, v = result["machine"], result["versions"]
    lines = [
        "# Scale-out: Ray Data vs the in-process CLI",
        "",
        f"Machine: {m.get('model')}, {result['cores']} cores usable; ray {v['ray']}, pyarrow {v['pyarrow']}, "
        f"onnxruntime {v['onnxruntime']}. Bundle: `{result['bundle']}`. Ray: {result['actors']} actors x "
        f"{result['cpus_per_actor']} CPU. Medians of {result['runs']} run(s).",
        "",
        "| engine | rows | wall s | start-up s | rows/s (steady) | vs in-process |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        ratio = "" if r["vs_inprocess"] is None else f"{100 * r['vs_inprocess']:.0f} %"
        lines.append(
            f"| {r['engine']} | {r['n']:,} | {r['wall_s']['median']:.1f} | {r['startup_s']['median']:.1f} "
            f"| {r['rows_per_s']:.1f} | {ratio} |"
        )
    lines += [
        "",
        "rows/s (steady) = rows / (wall - start-up); start-up = the same command on a one-row file.",
        "",
    ]
    return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.scaleout", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, metavar="DIR", help="the lrsl-rt bundle")
    p.add_argument("--texts", default=str(DEFAULT_TEXTS), help=f"texts file (default {DEFAULT_TEXTS})")
    p.add_argument(
        "--rows", type=int, nargs="+", default=[10_000, 100_000], help="row counts (default 10000 100000)"
    )
    p.add_argument(
        "--engines",
        nargs="+",
        default=["inprocess", "ray", "ray-1actor"],
        choices=("inprocess", "ray", "ray-1actor"),
    )
    p.add_argument("--actors", type=int, help="Ray actors (default: one per usable core)")
    p.add_argument("--cpus-per-actor", type=int, default=1, help="CPUs per Ray actor (default 1)")
    p.add_argument(
        "--ray-address", help="join this cluster (default: each run starts a local one, counted in start-up)"
    )
    p.add_argument("--runs", type=int, default=1, help="processes per figure (default 1)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per process")
    p.add_argument("--out", required=True, metavar="DIR", help="write scaleout.json and scaleout.md here")
    args = p.parse_args(argv)
    record = script_record(__file__, argv)
    result = run(args)
    out = Path(args.out)
    title = "Scale-out: Ray Data vs the in-process CLI"
    write_result(out / "scaleout.json", result, markdown(result), kind="scaleout", title=title, run=record)
    print(f"wrote {out / 'scaleout.json'} and {out / 'scaleout.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
