"""Batch invariance of bundles: is a text's answer the same alone and in any batch?

    python -m benchmarks.invariance BUNDLE [BUNDLE ...] [--texts FILE] [--limit N]
        [--batch-sizes 32,8] [--seed 0] [--threads N] [--out FILE.json] [--markdown FILE.md]

For each bundle, every text is predicted (``Reranker.predict`` for the LRSL and classifier labels,
``Reranker.logits`` for the logits):

- ``alone``: one text per model call, no padding, no neighbours;
- ``mixed_B`` for each batch size B: the texts shuffled (seeded, a different order per B) and cut
  into groups of B, each group one model call -- neighbours of various lengths, padded to the
  group's longest, as batches formed by traffic would be.

A text is invariant when its LRSL label and its classifier label are the same in every run; the
result gives the share of invariant texts and the largest |logit difference| from ``alone``.
Accuracy-free and not timed: safe to run on a busy machine (``nice``). Default texts: Banking77 test.

``--out FILE.json`` writes the rows (kind ``invariance``, with the run record: ``results_doc.py``
pages it) and the table to ``--markdown`` (default: ``FILE.md`` beside it).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np

from benchmarks.lib.common import DEFAULT_TEXTS, read_texts, subsample
from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command

DEFAULT_BATCH_SIZES = (32, 8)


def run_grouped(bundle, texts: list[str], groups: list[list[int]], threads: int | None) -> dict:
    """Logits, LRSL and classifier label ids of ``texts``, each group of indices one model call."""
    from lrsl_rt import Reranker

    size = max(len(g) for g in groups)
    r = Reranker.from_bundle(bundle, threads=threads, batch_size=size)
    logits = np.empty((len(texts), len(r.labels)), np.float32)
    label, clf = np.empty(len(texts), np.int64), np.empty(len(texts), np.int64)
    for g in groups:
        batch = [texts[i] for i in g]
        logits[g] = r.logits(batch)
        predictions = r.predict(batch)
        label[g] = [p.label_id for p in predictions]
        clf[g] = [p.classifier_label_id for p in predictions]
    return {"logits": logits, "label": label, "classifier_label": clf}


def batching_runs(
    bundle, texts: list[str], batch_sizes=DEFAULT_BATCH_SIZES, seed: int = 0, threads=None
) -> dict:
    """``{"alone": ..., "mixed_B": ...}``: the outputs of :func:`run_grouped` per way of batching."""
    n = len(texts)
    runs = {"alone": run_grouped(bundle, texts, [[i] for i in range(n)], threads)}
    for k, b in enumerate(batch_sizes):
        order = list(range(n))
        random.Random(seed + k).shuffle(order)
        groups = [order[s : s + b] for s in range(0, n, b)]
        runs[f"mixed_{b}"] = run_grouped(bundle, texts, groups, threads)
    return runs


def compare(runs: dict) -> dict:
    """Invariance rates and max |logit difference| of every run against ``alone``."""
    alone = runs["alone"]
    same = np.ones(len(alone["label"]), bool)
    per_run = {}
    for name, r in runs.items():
        if name == "alone":
            continue
        label_same = (r["label"] == alone["label"]) & (r["classifier_label"] == alone["classifier_label"])
        same &= label_same
        per_run[name] = {
            "labels_identical": float(label_same.mean()),
            "max_abs_logit_diff": float(np.max(np.abs(r["logits"] - alone["logits"]), initial=0.0)),
        }
    return {
        "n": int(len(same)),
        "labels_identical": float(same.mean()),
        "texts_changed": int((~same).sum()),
        "max_abs_logit_diff": max((v["max_abs_logit_diff"] for v in per_run.values()), default=0.0),
        "runs": per_run,
    }


def describe(bundle) -> dict:
    """Precision, preset and the manifest's invariance claim of a bundle."""
    from lrsl_rt.manifest import read_manifest

    m = read_manifest(Path(bundle))
    q = m.metrics.get("quantization", {})
    return {
        "bundle": str(bundle),
        "precision": m.precision,
        "preset": m.preset,
        "claims_batch_invariant": q.get("batch_invariant", m.precision != "int8"),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| bundle | precision | preset | claims invariance | labels identical | texts changed | max abs logit diff |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {Path(r['bundle']).name} | {r['precision']} | {r['preset'] or '-'} | {r['claims_batch_invariant']} "
            f"| {100 * r['labels_identical']:.2f} % | {r['texts_changed']} / {r['n']} | {r['max_abs_logit_diff']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.invariance", description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", help="bundle directories")
    p.add_argument("--texts", default=str(DEFAULT_TEXTS), help="texts file (default: Banking77 test)")
    p.add_argument("--limit", type=int, default=0, help="evenly spaced texts to use (0: all)")
    p.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", help="write the rows as JSON, with the run record")
    p.add_argument("--markdown", help="write the table as markdown (default with --out: its .md beside it)")
    a = p.parse_args(argv)
    run = script_record(__file__, argv)
    texts = subsample(read_texts(a.texts), a.limit).texts
    sizes = [int(b) for b in a.batch_sizes.split(",") if b.strip()]
    rows = []
    for bundle in a.bundles:
        row = {**describe(bundle), **compare(batching_runs(bundle, texts, sizes, a.seed, a.threads))}
        rows.append(row)
        print(markdown([row]).splitlines()[-1], flush=True)
    table = markdown(rows)
    print(table)
    result = {"texts": a.texts, "batch_sizes": sizes, "rows": rows}
    title = "Batch invariance of bundles"
    write_result(a.out, result, table, kind="invariance", title=title, run=run, markdown_out=a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
