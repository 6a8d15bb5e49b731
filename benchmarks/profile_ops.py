"""Where a bundle's classifier spends its time, per operator type, from ONNX Runtime's profiler.

    python -m benchmarks.profile_ops BUNDLE [--role classifier] [--calls 1,32] [--batch-size N]
        [--n-texts 256] [--warmup 20] [--threads N] [--out FILE.json] [--markdown FILE.md]

For each call size C in ``--calls``, ``--n-texts`` evenly spaced Banking77 test texts are cut into
calls of C texts and each call is run as the runtime runs it: tokenized with the bundle's tokenizer,
sorted by length, padded into batches of ``--batch-size`` (default: the bundle's recorded batch
size). The session has the runtime's settings (all graph optimisations, sequential execution,
threads spinning during a run and stopping after it) plus ``enable_profiling``. Events of the
first ``--warmup`` runs are dropped; the rest are summed by operator type (``args.op_name`` of the
``Node`` events): total time, share of the kernel time, calls per model run, and the model runs'
own total (``model_run`` events), whose excess over the kernels is ONNX Runtime's overhead between
operators. Time it only on a quiet machine (the profiler's figures are wall-clock).

``--out FILE.json`` writes ``{"bundle", "role", "profiles": [one per call size]}`` (kind
``profile-ops``, with the run record: ``results_doc.py`` pages it) and the tables to ``--markdown``
(default: ``FILE.md`` beside it).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from benchmarks.lib.common import DEFAULT_TEXTS, read_texts, subsample
from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import UsageError


def profiled_session(path: Path, threads: int | None, prefix: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.enable_profiling = True
    opts.profile_file_prefix = str(prefix)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def batches_of_calls(tokenizer, texts: list[str], call: int, batch_size: int) -> list[dict]:
    """Model inputs in the order the runtime would run them: per call, length-sorted batches."""
    feeds = []
    for start in range(0, len(texts) - call + 1, call):
        rows = sorted(tokenizer.tokenize(texts[start : start + call]), key=len)
        feeds += [tokenizer.pad(rows[s : s + batch_size]) for s in range(0, len(rows), batch_size)]
    return feeds


def aggregate(events: list[dict], skip_runs: int) -> dict:
    """Kernel time by operator type over the model runs after the first ``skip_runs``."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    if len(runs) <= skip_runs:
        raise UsageError(f"only {len(runs)} model runs profiled; lower --warmup")
    start = runs[skip_runs]["ts"]
    kept = runs[skip_runs:]
    by_op: dict[str, dict] = defaultdict(lambda: {"us": 0.0, "count": 0})
    for e in events:
        if e.get("cat") == "Node" and e.get("ts", 0) >= start and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op]["us"] += e["dur"]
            by_op[op]["count"] += 1
    kernel = sum(v["us"] for v in by_op.values())
    run_us = sum(e["dur"] for e in kept)
    ops = {
        op: {
            "ms_per_run": v["us"] / 1000 / len(kept),
            "share": v["us"] / kernel,
            "per_run": v["count"] / len(kept),
        }
        for op, v in sorted(by_op.items(), key=lambda kv: -kv[1]["us"])
    }
    return {
        "runs": len(kept),
        "model_run_ms": run_us / 1000 / len(kept),
        "kernel_ms": kernel / 1000 / len(kept),
        "overhead_share": 1 - kernel / run_us if run_us else 0.0,
        "ops": ops,
    }


def profile(bundle: Path, role: str, call: int, batch_size: int | None, texts, warmup: int, threads) -> dict:
    from lrsl_rt.bundle import recorded_batch_size
    from lrsl_rt.manifest import read_manifest, resolve_file
    from lrsl_rt.tokenize import BundleTokenizer

    m = read_manifest(bundle)
    b = batch_size or recorded_batch_size(m)
    tokenizer = BundleTokenizer(resolve_file(bundle, "tokenizer", m.files["tokenizer"]), m.tokenizer)
    feeds = batches_of_calls(tokenizer, texts, call, b)
    with tempfile.TemporaryDirectory(prefix="lrsl_profile_") as tmp:
        session = profiled_session(resolve_file(bundle, role, m.files[role]), threads, Path(tmp) / "ort")
        names = {i.name for i in session.get_inputs()}
        for feed in feeds[:warmup] + feeds:
            session.run(None, {k: v for k, v in feed.items() if k in names})
        events = json.loads(Path(session.end_profiling()).read_text())
    return {
        "call": call,
        "batch_size": b,
        "model_file": m.files[role].path,
        **aggregate(events, min(warmup, len(feeds))),
    }


def markdown(results: list[dict], top: int = 12) -> str:
    out = []
    for r in results:
        out.append(
            f"\n{r['model_file']}, {r['call']} text(s) per call in batches of {r['batch_size']}: "
            f"{r['model_run_ms']:.3f} ms per model run, kernels {r['kernel_ms']:.3f} ms, "
            f"overhead {100 * r['overhead_share']:.1f} % ({r['runs']} runs)\n"
        )
        out += ["| op type | ms per run | share of kernels | nodes per run |", "|---|---:|---:|---:|"]
        for op, v in list(r["ops"].items())[:top]:
            out.append(f"| {op} | {v['ms_per_run']:.4f} | {100 * v['share']:.1f} % | {v['per_run']:.0f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.profile_ops", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--role", choices=("classifier", "embedder"), default="classifier")
    p.add_argument("--calls", default="1,32", help="texts per call (default 1,32)")
    p.add_argument("--batch-size", type=int, default=None, help="texts per model run (default: the bundle's)")
    p.add_argument("--texts", default=str(DEFAULT_TEXTS))
    p.add_argument("--n-texts", type=int, default=256)
    p.add_argument("--warmup", type=int, default=20, help="model runs left out of the profile")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", help="write the profile as JSON, with the run record")
    p.add_argument("--markdown", help="write the tables as markdown (default with --out: its .md beside it)")
    a = p.parse_args(argv)
    run = script_record(__file__, argv)
    texts = subsample(read_texts(a.texts), a.n_texts).texts
    calls = [int(c) for c in a.calls.split(",") if c.strip()]
    results = [profile(Path(a.bundle), a.role, c, a.batch_size, texts, a.warmup, a.threads) for c in calls]
    table = markdown(results)
    print(table)
    result = {"bundle": a.bundle, "role": a.role, "profiles": results}
    title = f"Time by operator type of the {a.role} (ONNX Runtime profiler)"
    write_result(a.out, result, table, kind="profile-ops", title=title, run=run, markdown_out=a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
