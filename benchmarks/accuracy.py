"""Accuracy of the PyTorch checkpoint and of the exported bundles on the same split, side by side.

    python -m benchmarks.accuracy --checkpoint CKPT --bundle DIR [--bundle-fp32 DIR] [--split test|dev]
        [--out FILE.json] [--threads N] [--batch-size B]

Rows, all on CKPT/<split>.jsonl:

- ``pytorch``: the checkpoint's models -- classifier logits from ``train.classifier.predict_logits``,
  label similarities from ``train.embedder.label_similarities`` -- with the calibration of
  ``lrsl.json`` (threshold, k, fusion) applied by the runtime's own rule (``lrsl_rt.rule.decide``);
- ``bundle int8`` / ``bundle fp32``: ``Reranker.predict`` (what ``lrsl-rt eval`` reports), each with its
  own threshold and fusion, re-calibrated on the exported models at export time.

Each row is ``lrsl_rt.metrics.lrsl_report`` (accuracy on all samples and on the hard subset, classifier
alone vs LRSL, hard share, fixed/broken) plus the share of its labels that agree with PyTorch's. When
CKPT/metrics.json holds the training run's results for the split, they are shown as a check of the
recomputed PyTorch row. Assumption: the split's labels are the checkpoint's (``lrsl.json`` labels).
Bundles use ``--batch-size`` ``lrsl_rt.defaults.DEFAULT_BATCH_SIZE`` by default, the export's, so int8
results match the export's report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.lib.accuracy_report import markdown
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.defaults import DEFAULT_BATCH_SIZE
from lrsl_rt.errors import LrslError, UsageError
from lrsl_rt.metrics import lrsl_report


def parse_args(argv=None) -> argparse.Namespace:
    p = CommandParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="training checkpoint (python -m train)"
    )
    p.add_argument("--bundle", required=True, metavar="DIR", help="the int8 bundle")
    p.add_argument("--bundle-fp32", metavar="DIR", help="the fp32 bundle")
    p.add_argument("--split", choices=("test", "dev"), default="test", help="CKPT/<split>.jsonl")
    p.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: theirs)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="bundle batch size; the export evaluates with the same",
    )
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    return p.parse_args(argv)


def load_split(ckpt: Path, split: str):
    """(lrsl.json info, texts, gold label ids)."""
    from train.checkpoint import read_info, read_jsonl

    info = read_info(ckpt)
    path = ckpt / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; this checkpoint has no {split} split (try --split dev)")
    texts, labels = read_jsonl(path)
    ids = {label: i for i, label in enumerate(info.labels)}
    unknown = sorted(set(labels) - set(ids))
    if unknown:
        raise ValueError(f"{path}: labels {unknown[:5]} are not in {ckpt}/lrsl.json")
    return info, texts, np.array([ids[y] for y in labels], dtype=np.int64)


def pytorch_predictions(ckpt: Path, info, texts, threads) -> dict:
    """Classifier and LRSL label ids and the hard mask of the checkpoint's PyTorch models."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lrsl_rt.rule import decide
    from train.classifier import predict_logits
    from train.embedder import label_similarities

    if threads:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(ckpt / "classifier")
    clf = AutoModelForSequenceClassification.from_pretrained(ckpt / "classifier")
    logits = predict_logits(clf, tok, texts, info.max_length)

    def cos_of(idx):  # the embedder loads only when some sample is hard
        emb = SentenceTransformer(str(ckpt / "embedder"), device="cpu")
        return label_similarities(emb, [texts[i] for i in idx], info.label_texts)

    d = decide(logits, cos_of, info.threshold, info.fusion_rule, info.k)
    return {
        "base": d.classifier_labels,
        "pred": d.labels,
        "hard": d.hard,
        "threshold": info.threshold,
        "fusion": info.fusion,
        "k": info.k,
    }


def bundle_predictions(path: str, labels: list[str], texts, threads, batch_size) -> dict:
    """The same arrays from ``Reranker.predict`` on a bundle, which must have the checkpoint's labels."""
    from lrsl_rt import Reranker

    r = Reranker.from_bundle(path, threads=threads, batch_size=batch_size)
    if list(r.labels) != list(labels):
        raise ValueError(f"{path}: the bundle's labels differ from the checkpoint's lrsl.json labels")
    preds = r.predict(texts)
    return {
        "base": np.array([p.classifier_label_id for p in preds]),
        "pred": np.array([p.label_id for p in preds]),
        "hard": np.array([p.hard for p in preds], dtype=bool),
        "threshold": r.threshold,
        "fusion": r.fusion.to_dict(),
        "k": r.k,
        "precision": r.manifest.precision,
        "preset": r.manifest.preset,
    }


def row(p: dict, gold: np.ndarray, reference: dict | None) -> dict:
    out = {k: v for k, v in p.items() if k not in ("base", "pred", "hard")}
    out["report"] = lrsl_report(gold, p["base"], p["pred"], p["hard"])
    if reference is not None:
        out["agreement_with_pytorch"] = {
            "classifier": float(np.mean(p["base"] == reference["base"])),
            "lrsl": float(np.mean(p["pred"] == reference["pred"])),
        }
    return out


def recorded_results(ckpt: Path, split: str) -> dict | None:
    """The training run's own report for this split (CKPT/metrics.json), when it has one."""
    path = ckpt / "metrics.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("results", {}).get(split)


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    from benchmarks.lib.record import finish_record, run_record

    args = parse_args(argv)
    run = run_record()
    ckpt = Path(args.checkpoint)
    try:
        info, texts, gold = load_split(ckpt, args.split)
    except (OSError, ValueError, LrslError) as e:
        raise UsageError(str(e)) from e
    reference = pytorch_predictions(ckpt, info, texts, args.threads)
    rows = {"pytorch": row(reference, gold, None)}
    for path in filter(None, (args.bundle, args.bundle_fp32)):
        try:
            p = bundle_predictions(path, info.labels, texts, args.threads, args.batch_size)
        except ValueError as e:
            raise LrslError(str(e)) from e
        name = f"bundle {p['precision']}" + (f" ({p['preset']})" if p["preset"] else "")
        rows[name if name not in rows else f"{name} {path}"] = row(p, gold, reference)
    result = {
        "checkpoint": str(ckpt),
        "split": args.split,
        "n": len(texts),
        "bundles": {"int8": args.bundle, "fp32": args.bundle_fp32},
        "rows": rows,
        "recorded": recorded_results(ckpt, args.split),
    }
    result["run"] = finish_record(run, 0)
    print(markdown(result))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
