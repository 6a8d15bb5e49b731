"""What abstaining costs: the same bundle with abstain on and off, for several bundles in one run.

    python -m benchmarks.abstain_cost --case NAME=BUNDLE,TEXTS [--case ...] [--threads N]
        [--n-texts 500] [--rounds 5] [--batch 32] [--pools session,shared] [--out FILE.json]

For each case (a bundle with an abstain calibration and a texts file whose labels say which texts
are out of scope: a gold label that is not one of the bundle's), one worker process per thread pool
(``--pools``) times ``Reranker.predict`` with abstain on and off in alternating rounds
(:mod:`benchmarks.lib.abstain_worker`): batch-1 p50 and q/s at ``--batch`` texts per call, the
Reranker's own stage times (``on_run``) on the timed calls, the share of texts the embedder ran on,
in-scope accuracy and out-of-scope recall on the timed texts.

Beside the timings, the export's test figures of the bundle (its metrics): the chosen score's test
AUROC and out-of-scope recall as the runtime computes them (cascade included), against the ``knn``
score computed on every text (what a bundle without the cascade does). The targets checked:

- batch-1 p50 with abstain on at most ``1.25x`` the same bundle's with abstain off;
- q/s at ``--batch`` per call with abstain on at least ``0.8x``;
- test AUROC at least the every-text knn's less 0.005; test out-of-scope recall at least its less 2 points.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.lib.common import bench_env, emit_result, read_texts, run_json, subsample, write_jsonl
from benchmarks.lib.record import run_record, write_result
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import UsageError

TARGETS = {"b1_ratio_max": 1.25, "qps_ratio_min": 0.8, "auroc_loss_max": 0.005, "recall_loss_max": 0.02}


def parse_args(argv=None) -> argparse.Namespace:
    p = CommandParser(prog="python -m benchmarks.abstain_cost", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--case", action="append", default=[], metavar="NAME=BUNDLE,TEXTS", help="a bundle and its texts"
    )
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    p.add_argument("--n-texts", type=int, default=500, help="evenly spaced texts of each file (default 500)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument(
        "--batch", type=int, default=32, help="texts per call of the throughput figure (default 32)"
    )
    p.add_argument(
        "--pools", default="session,shared", help="thread pools to measure (default session,shared)"
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per worker")
    p.add_argument("--out", metavar="FILE.json", help="write the result JSON (and FILE.md)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.pools = [x for x in args.pools.split(",") if x]
    if not args.worker and not args.case:
        p.error("give at least one --case NAME=BUNDLE,TEXTS")
    return args


def parse_case(spec: str) -> tuple[str, Path, Path]:
    """``NAME=BUNDLE,TEXTS`` -> (name, bundle, texts).

    >>> parse_case("b77=artifacts/b/bundle,test.csv")
    ('b77', PosixPath('artifacts/b/bundle'), PosixPath('test.csv'))
    """
    name, _, rest = spec.partition("=")
    bundle, _, texts = rest.partition(",")
    if not name or not bundle or not texts:
        raise UsageError(f"--case {spec!r}: expected NAME=BUNDLE,TEXTS")
    return name, Path(bundle), Path(texts)


def worker(args) -> None:
    from benchmarks.lib.abstain_worker import run_worker

    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines()]
    gold = [r["label"] for r in rows] if rows and "label" in rows[0] else None
    texts = [r["text"] for r in rows]
    emit_result(run_worker(args.worker, texts, gold, args.threads, args.pools[0], args.batch, args.rounds))


def summarize(w: dict, batch: int) -> dict:
    """Medians over the rounds of one worker, and the on/off ratios."""
    med = {}
    for mode, by_b in w["rounds"].items():
        b1, bb = by_b["1"], by_b[str(batch)]
        med[mode] = {
            "b1_p50_ms": float(np.median([x["p50_ms"] for x in b1])),
            "qps": float(np.median([x["qps"] for x in bb])),
            "stages_b1": _stage_medians(b1),
            f"stages_b{batch}": _stage_medians(bb),
        }
    return {
        **med,
        "b1_ratio": med["on"]["b1_p50_ms"] / med["off"]["b1_p50_ms"],
        "qps_ratio": med["on"]["qps"] / med["off"]["qps"],
    }


def _stage_medians(recs: list[dict]) -> dict:
    stages = sorted({s for r in recs for s in r["ms_per_text"]})
    out = {s: float(np.median([r["ms_per_text"].get(s, 0.0) for r in recs])) for s in stages}
    measured = float(np.median([r["measured_ms_per_text"] for r in recs]))
    return {"ms_per_text": out, "measured": measured, "unattributed": measured - sum(out.values())}


def export_figures(bundle: Path) -> dict:
    """The chosen score's and the every-text knn's test figures from the bundle's export metrics."""
    m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    a = m.get("metrics", {}).get("abstain") or {}
    table, chosen = a.get("scores", {}), a.get("chosen")
    row, knn, test = table.get(chosen, {}), table.get("knn", {}), a.get("test") or {}
    return {
        "chosen": chosen,
        "cascade": (m.get("abstain") or {}).get("cascade"),
        "embedder_extra_share_dev": row.get("embedder_extra_share"),
        "test_auroc": row.get("test_auroc"),
        "test_oos_recall": test.get("oos_recall"),
        "test_inscope_accuracy": test.get("inscope_accuracy"),
        "test_inscope_accuracy_off": test.get("inscope_accuracy_off"),
        "knn_test_auroc_every_row": knn.get("test_auroc_every_row"),
        "knn_test_oos_recall_every_row": knn.get("test_oos_recall_every_row"),
        "scores": {
            s: {
                k: r.get(k)
                for k in ("dev_auroc", "test_auroc", "test_auroc_every_row", "embedder_extra_share")
            }
            for s, r in table.items()
        },
    }


def targets(case: dict) -> dict:
    """Each target of one case: met (True/False) or None when a figure is missing."""
    s, e = case["pools"].get("session") or next(iter(case["pools"].values())), case["export"]
    out = {
        "b1_p50_on_le_1.25x_off": s["b1_ratio"] <= TARGETS["b1_ratio_max"],
        "qps_on_ge_0.8x_off": s["qps_ratio"] >= TARGETS["qps_ratio_min"],
    }
    ka, kr = e["knn_test_auroc_every_row"], e["knn_test_oos_recall_every_row"]
    out["auroc_within_0.005_of_knn"] = (
        None if None in (ka, e["test_auroc"]) else e["test_auroc"] >= ka - 0.005
    )
    rec = e["test_oos_recall"]
    out["recall_within_2pt_of_knn"] = None if None in (kr, rec) else rec >= kr - TARGETS["recall_loss_max"]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    run = run_record()
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.case:
            name, bundle, texts_path = parse_case(spec)
            texts = subsample(read_texts(texts_path), args.n_texts)
            data = write_jsonl(Path(tmp) / f"{name}.jsonl", texts)
            pools = {}
            for pool in args.pools:
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.abstain_cost",
                    "--worker",
                    str(bundle),
                    "--data",
                    str(data),
                ]
                cmd += ["--threads", str(args.threads), "--pools", pool, "--batch", str(args.batch)]
                cmd += ["--rounds", str(args.rounds)]
                print(f"abstain_cost: {name} ({pool} pool) ...", file=sys.stderr, flush=True)
                w = run_json(cmd, bench_env(args.threads), args.timeout)
                pools[pool] = {**summarize(w, args.batch), "quality": w["quality"]}
                pools[pool]["embedded_share"] = {m: w[f"embedded_share_{m}"] for m in ("on", "off")}
            cases[name] = {
                "bundle": str(bundle),
                "texts": str(texts_path),
                "n_texts": len(texts),
                "pools": pools,
            }
            cases[name]["export"] = export_figures(bundle)
            cases[name]["targets"] = targets(cases[name])
    from benchmarks.lib.abstain_report import markdown

    result = {"method": vars(args) | {"case": args.case}, "targets": TARGETS, "cases": cases}
    md = markdown(result)
    print(md)
    write_result(args.out, result, md, kind="abstain-cost", title="What abstaining costs", run=run)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
