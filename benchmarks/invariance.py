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

import sys
from pathlib import Path

from benchmarks.lib.batching import DEFAULT_BATCH_SIZES, batching_runs, compare, describe
from benchmarks.lib.common import DEFAULT_TEXTS, read_texts, subsample
from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command


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
