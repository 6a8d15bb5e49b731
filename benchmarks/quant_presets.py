"""int8 presets of one checkpoint side by side: agreement with fp32, LRSL accuracy, batch invariance,
bundle size and (``--time``) the speed of the full path.

    python -m benchmarks.quant_presets --checkpoint CKPT --work DIR
        [--presets fp32,avx512_vnni,static_avx512_vnni,static_avx512_vnni:percentile]
        [--calibration-texts FILE] [--invariance-limit N] [--threads N]
        [--time [--repeats 3] [--n-texts 500]] [--out FILE.json] [--markdown FILE.md]

Each preset is exported to ``DIR/<preset>`` with ``build_bundle`` (accuracy gate open: this script
reports, it does not refuse; an existing bundle of the same preset is reused unless ``--rebuild``).
``PRESET:METHOD`` is a static preset with another calibration method (minmax, percentile, entropy),
registered for this run only. Per bundle, from its manifest (what the export measured through
``Reranker.predict``): int8 vs fp32 top-1 agreement on dev and test, LRSL accuracy on test and the
PyTorch LRSL accuracy it is gated against; from ``benchmarks/invariance.py``: the share of test
texts whose labels are the same alone and in mixed batches; the bundle's size on disk. ``meets_rule``
is the issue's rule for making a batch-invariant preset the default: LRSL within 0.3 pt of PyTorch
and agreement >= 99.0 % on dev and test (the speed condition is the timed run's).

``--time``: batch-1 p50 and queries/s at 32 texts per call of the full LRSL path
(``latency.py``'s ``lrsl_int8`` worker, one process per measurement), bundles alternating in
``--repeats`` rounds, medians. Only on a quiet machine; everything else is safe under ``nice``.

``--out FILE.json`` writes the rows (kind ``quant-presets``, ``quant-presets-timed`` with ``--time``;
with the run record: ``results_doc.py`` pages it) and the table to ``--markdown`` (default:
``FILE.md`` beside it).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from benchmarks.lib.batching import batching_runs, compare, describe
from benchmarks.lib.common import DEFAULT_TEXTS, median_range, read_texts, subsample
from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import UsageError

DEFAULT_PRESETS = "fp32,avx512_vnni,static_avx512_vnni,avx2_s8rr,static_avx2_s8rr"
RULE = {"max_lrsl_drop": 0.003, "min_agreement": 0.99}


def preset_name(spec: str) -> str | None:
    """The export preset for a spec, registering ``PRESET:METHOD`` variants (None for fp32)."""
    from export.optimize import PRESETS

    if spec == "fp32":
        return None
    base, _, method = spec.partition(":")
    if base not in PRESETS:
        raise UsageError(f"unknown preset {base!r}; known: fp32, {', '.join(PRESETS)}")
    if not method:
        return base
    if not PRESETS[base].batch_invariant:
        raise UsageError(f"{spec}: only static presets take a calibration method")
    name = f"{base}_{method}"
    PRESETS[name] = replace(PRESETS[base], name=name, calibration=method)
    return name


def build(ckpt: Path, work: Path, spec: str, calibration_texts, rebuild: bool, threads) -> Path:
    from export import build_bundle

    preset = preset_name(spec)
    out = work / (preset or "fp32")
    if (out / "manifest.json").is_file() and not rebuild:
        return out
    return build_bundle(
        ckpt,
        out,
        precision="int8" if preset else "fp32",
        preset=preset,
        max_accuracy_drop=1.0,
        force=True,
        threads=threads,
        calibration_texts=calibration_texts,
    )


def manifest_row(bundle: Path) -> dict:
    from lrsl_rt.manifest import read_manifest

    m = read_manifest(bundle)
    metrics = m.metrics
    agreement = metrics["shipped_vs_fp32"]["top1_agreement"]
    gate = metrics["gate"]
    return {
        **describe(bundle),
        "agreement": agreement,
        "lrsl_accuracy": gate["bundle_accuracy_lrsl"],
        "pytorch_lrsl_accuracy": gate["pytorch_accuracy_lrsl"],
        "accuracy_split": gate["split"],
        "lrsl_drop": gate["drop"],
        "size_mb": sum(f.size for f in m.files.values()) / 2**20,
        "quantization": metrics.get("quantization"),
    }


def meets_rule(row: dict) -> bool:
    return (
        row["lrsl_drop"] <= RULE["max_lrsl_drop"] + 1e-12
        and min(row["agreement"].values()) >= RULE["min_agreement"]
    )


def timed(bundles: dict[str, Path], repeats: int, n_texts: int, threads: int | None) -> dict:
    """Full-path batch-1 p50 (ms) and queries/s at 32 per call, per bundle, bundles alternating."""
    import tempfile

    from benchmarks import latency
    from benchmarks.lib.common import bench_env, run_json, write_jsonl

    data = subsample(read_texts(DEFAULT_TEXTS), n_texts)
    results: dict[str, list] = {name: [] for name in bundles}
    with tempfile.TemporaryDirectory(prefix="lrsl_presets_") as tmp:
        data_file = write_jsonl(Path(tmp) / "texts.jsonl", data)
        plans = {}
        for name, bundle in bundles.items():
            args = latency.parse_args(
                ["--bundle", str(bundle), "--batch-sizes", "1,32"]
                + (["--threads", str(threads)] if threads else [])
            )
            _, _, settings = latency.make_plan(args, lambda msg: None)
            plans[name] = (args, settings)
        for r in range(repeats):
            for name, (args, settings) in plans.items():
                print(f"round {r + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
                cmd = latency.worker_cmd(args, "lrsl_int8", data_file, settings, None)
                results[name].append(run_json(cmd, bench_env(args.threads), 1800))
    return {
        name: {
            "b1_p50_ms": median_range([x["b1"]["p50_ms"] for x in rs]),
            "qps_32": median_range([x["qps"]["32"] for x in rs]),
        }
        for name, rs in results.items()
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| preset | agreement dev | agreement test | LRSL test | PyTorch LRSL | drop (pt) | invariant labels | max abs logit diff | size MiB | meets rule | b1 p50 ms | q/s @32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        speed = r.get("speed") or {}
        b1 = speed.get("b1_p50_ms", {}).get("median")
        qps = speed.get("qps_32", {}).get("median")
        a = r["agreement"]
        lines.append(
            f"| {r['preset'] or r['precision']} | {100 * a.get('dev', float('nan')):.2f} % | {100 * a.get('test', float('nan')):.2f} % "
            f"| {100 * r['lrsl_accuracy']:.2f} % | {100 * r['pytorch_lrsl_accuracy']:.2f} % | {100 * r['lrsl_drop']:+.2f} "
            f"| {100 * r['invariance']['labels_identical']:.2f} % ({r['invariance']['texts_changed']}/{r['invariance']['n']}) "
            f"| {r['invariance']['max_abs_logit_diff']:.3g} | {r['size_mb']:.1f} | {r['meets_rule']} "
            f"| {'-' if b1 is None else f'{b1:.2f}'} | {'-' if qps is None else f'{qps:.0f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.quant_presets", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="training checkpoint (python -m train)")
    p.add_argument("--work", required=True, help="folder for the bundles (one per preset)")
    p.add_argument("--presets", default=DEFAULT_PRESETS, help=f"comma-separated (default {DEFAULT_PRESETS})")
    p.add_argument("--calibration-texts", help="training texts for static presets (default CKPT/calib.jsonl)")
    p.add_argument("--invariance-texts", default=str(DEFAULT_TEXTS), help="texts for the invariance check")
    p.add_argument("--invariance-limit", type=int, default=0, help="evenly spaced texts (0: all)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rebuild", action="store_true", help="export again even if DIR/<preset> exists")
    p.add_argument("--time", action="store_true", help="also time the full path (quiet machine only)")
    p.add_argument("--repeats", type=int, default=3, help="--time: alternating rounds")
    p.add_argument("--n-texts", type=int, default=500, help="--time: evenly spaced Banking77 test texts")
    p.add_argument("--out", help="write the rows as JSON, with the run record")
    p.add_argument("--markdown", help="write the table as markdown (default with --out: its .md beside it)")
    a = p.parse_args(argv)
    run = script_record(__file__, argv)
    ckpt, work = Path(a.checkpoint), Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    texts = subsample(read_texts(a.invariance_texts), a.invariance_limit).texts
    rows, bundles = [], {}
    for spec in [s.strip() for s in a.presets.split(",") if s.strip()]:
        bundle = build(ckpt, work, spec, a.calibration_texts, a.rebuild, a.threads)
        row = manifest_row(bundle)
        row["invariance"] = compare(batching_runs(bundle, texts, threads=a.threads))
        row["meets_rule"] = meets_rule(row)
        rows.append(row)
        bundles[spec] = bundle
        print(markdown([row]).splitlines()[-1], flush=True)
    if a.time:
        speed = timed({s: b for s, b in bundles.items() if s != "fp32"}, a.repeats, a.n_texts, a.threads)
        for spec, row in zip(bundles, rows, strict=True):
            row["speed"] = speed.get(spec)
    table = markdown(rows)
    print(table)
    kind = "quant-presets-timed" if a.time else "quant-presets"
    title = "int8 presets side by side" + (", timed" if a.time else "")
    result = {"checkpoint": str(ckpt), "rule": RULE, "rows": rows}
    write_result(a.out, result, table, kind=kind, title=title, run=run, markdown_out=a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
