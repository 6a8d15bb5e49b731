"""Lever 4 of issue 16: the embedder's training budget and its negatives, against the checkpoint's embedder.

    python -m benchmarks.embedder_lever --checkpoint artifacts/hwu64/checkpoint --variants 2x1 2x2 \\
        --out artifacts/hwu64/levers/embedder.json

A variant ``EPOCHSxNEGATIVES`` fine-tunes a fresh embedder from the checkpoint's base model with the
checkpoint's own embedder settings except those two (``--embedder-epochs``, ``--embedder-negatives``
of ``python -m train``), on triplets mined from the checkpoint classifier's train logits, exactly as
training does. Everything else is the incumbent's: the classifier's dev/test logits, sigma2_mis, the
fusion rule and the label-name embeddings of the variant's own embedder. The incumbent is the
checkpoint's embedder, read from the levers' cached arrays (``benchmarks/levers.py`` writes
``OUT/arrays.npz``; by default the one beside ``--out``). A variant is adopted when McNemar z >= 2 against it on dev, then checked on test.

Budget: a variant's optimizer steps are about ``epochs x negatives`` times the training texts over the
batch size, so ``2x2`` costs what the default ``4x1`` costs and ``2x1`` half of it.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.lib import lever_eval as E
from benchmarks.lib.lever_eval import SPLITS, strip_private, training_split, verdicts
from benchmarks.lib.record import script_record, write_result
from lrsl_rt.calibrate import MIN_Z, sigma2_mis
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import LrslError
from lrsl_rt.gate import is_hard


def parse_variant(spec: str) -> tuple[int, int]:
    """``"2x1"`` -> (epochs 2, negatives 1).

    >>> parse_variant("4x2")
    (4, 2)
    """
    m = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", spec)
    if not m:
        raise ValueError(f"variant {spec!r}: expected EPOCHSxNEGATIVES, e.g. 2x1")
    return int(m.group(1)), int(m.group(2))


def checkpoint_embedder_config(config: dict):
    """The checkpoint's EmbedderConfig from its metrics.json ``config`` (train's defaults for keys a
    checkpoint written before them lacks, e.g. ``negatives``)."""
    from train.config import EmbedderConfig

    emb = config.get("embedder", {})
    return EmbedderConfig(**{k: v for k, v in emb.items() if k in EmbedderConfig.__dataclass_fields__})


def incumbent_name(config: dict) -> str:
    cfg = checkpoint_embedder_config(config)
    return f"{cfg.epochs}x{cfg.negatives}"


def train_logits(ckpt: Path, texts: list[str], cache: Path, log) -> np.ndarray:
    """The checkpoint classifier's logits of the training texts (cached beside the result)."""
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if z["logits"].shape[0] == len(texts):
                log(f"train logits from the cache {cache}")
                return z["logits"]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from export.source import load_checkpoint
    from train.classifier import predict_logits

    c = load_checkpoint(ckpt)
    tok = AutoTokenizer.from_pretrained(c.classifier_dir)
    clf = AutoModelForSequenceClassification.from_pretrained(c.classifier_dir)
    logits = predict_logits(clf, tok, texts, c.info.max_length)
    np.savez(cache, logits=logits)
    return logits


def train_variant(c, config: dict, epochs: int, negatives: int, mining, log) -> dict:
    """Fine-tune one variant's embedder; its unit-length dev/test/label embeddings and its cost."""
    from sentence_transformers import SentenceTransformer

    from train.embedder import encode, mine_triplets, train_embedder
    from train.models import default_base_model

    cfg = replace(checkpoint_embedder_config(config), epochs=epochs, negatives=negatives)
    texts, gold, logits = mining
    triplets, counts = mine_triplets(texts, gold, logits, c.info.label_texts, c.info.k, cfg.seed, negatives)
    emb = SentenceTransformer(config.get("embedder_model") or str(default_base_model()), device="cpu")
    emb.max_seq_length = c.info.max_length
    t0 = time.perf_counter()
    history = train_embedder(emb, triplets, c.info.label_texts, cfg, log)
    seconds = time.perf_counter() - t0
    return {
        "dev_emb": encode(emb, c.dev.texts),
        "test_emb": encode(emb, c.test.texts),
        "label_emb": encode(emb, c.info.label_texts),
        "cost": {
            "epochs": epochs,
            "negatives": negatives,
            "triplets": len(triplets),
            **counts,
            "steps": sum(h["batches"] for h in history),
            "train_seconds": seconds,
        },
    }


def evaluate(arrays: dict, variants: dict[str, dict], incumbent: str, k: int, fusion) -> dict:
    """Rows per split for the incumbent and each variant, with McNemar verdicts against the incumbent."""
    threshold = sigma2_mis(arrays["dev_logits"], arrays["dev_gold"], k)
    embeddings = {incumbent: arrays, **variants}
    rows = {s: {} for s in SPLITS}
    for s in SPLITS:
        logits, gold = arrays[f"{s}_logits"], arrays[f"{s}_gold"]
        hard = is_hard(logits, k, threshold)
        for name, e in embeddings.items():
            cos = e[f"{s}_emb"] @ E.unit(e["label_emb"]).T
            row = E.gate_row(hard, logits, cos, gold, fusion, k)
            row["zero_shot"] = float(np.mean(np.argmax(cos, axis=1) == gold))
            rows[s][name] = row
    return {
        "threshold": threshold,
        "rows": {s: {n: strip_private(r) for n, r in rows[s].items()} for s in SPLITS},
        **verdicts(rows, incumbent),
    }


def markdown(res: dict) -> str:
    sec = res["embedder"]
    lines = [
        f"# Embedder budget and negatives on {res['dataset']}",
        "",
        f"Incumbent: the checkpoint's embedder ({sec['incumbent']}: epochs x negatives per text). Same "
        f"classifier logits, gate (sigma2_mis {sec['threshold']:.4g}) and fusion {res['fusion']['rule']}:"
        f"{res['fusion']['p']}:{res['fusion']['scope']} for every row; adopted when McNemar z >= {MIN_Z:g} on dev.",
        "",
        "| embedder | dev LRSL | dev zero-shot | test LRSL | test zero-shot | dev z | test z | triplets | steps | train min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sec["rows"]["dev"]:
        d, t = sec["rows"]["dev"][name], sec["rows"]["test"][name]
        cost = res["costs"].get(name) or {}
        minutes = f"{cost['train_seconds'] / 60:.1f}" if cost.get("train_seconds") else "(checkpoint)"
        lines.append(
            f"| {name} | {100 * d['accuracy_lrsl']:.2f} % | {100 * d['zero_shot']:.2f} % | "
            f"{100 * t['accuracy_lrsl']:.2f} % | {100 * t['zero_shot']:.2f} % | "
            f"{sec['mcnemar']['dev'][name]['z']:+.2f} | {sec['mcnemar']['test'][name]['z']:+.2f} | "
            f"{cost.get('triplets', '-')} | {cost.get('steps', '-')} | {minutes} |"
        )
    if sec["confirmed_on_test"] is None:
        lines += ["", f"Kept: **{sec['incumbent']}** (no variant reached z >= {MIN_Z:g} on dev)."]
    else:
        verdict = "confirmed" if sec["confirmed_on_test"] else "not confirmed"
        lines += ["", f"Adopted on dev: **{sec['adopted_on_dev']}** ({verdict} on test)."]
    return "\n".join(lines) + "\n"


def run(a, log) -> tuple[dict, str]:
    import torch

    from train.checkpoint import read_info

    ckpt = Path(a.checkpoint)
    info = read_info(ckpt)
    config = json.loads((ckpt / "metrics.json").read_text(encoding="utf-8")).get("config") or {}
    incumbent = incumbent_name(config)
    # the incumbent's own settings, retrained, measure how far retraining alone moves the figures
    specs = {v + (" retrained" if v == incumbent else ""): parse_variant(v) for v in a.variants}
    if a.threads:
        torch.set_num_threads(a.threads)
    cache = Path(a.arrays) if a.arrays else Path(a.out).parent / "arrays.npz"
    if not cache.is_file():
        raise FileNotFoundError(
            f"{cache}: no levers arrays; run python -m benchmarks.levers --checkpoint {ckpt} first"
        )
    with np.load(cache, allow_pickle=False) as z:
        arrays = dict(z)
    texts, gold = training_split(ckpt, info, a.train)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mining = (texts, gold, train_logits(ckpt, texts, out.with_name(out.stem + "_train_logits.npz"), log))
    from export.source import load_checkpoint

    c = load_checkpoint(ckpt)
    variants = {}
    for name, (epochs, negatives) in specs.items():
        log(f"variant {name}: {epochs} epochs, {negatives} negatives per text")
        variants[name] = train_variant(c, config, epochs, negatives, mining, log)
    res = {
        "checkpoint": str(ckpt),
        "dataset": ckpt.parent.name if ckpt.name == "checkpoint" else ckpt.name,
        "k": info.k,
        "fusion": info.fusion,
        "costs": {n: v["cost"] for n, v in variants.items()},
        "embedder": evaluate(arrays, variants, incumbent, info.k, info.fusion_rule),
    }
    return res, markdown(res)


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.embedder_lever", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="training checkpoint (python -m train)")
    p.add_argument("--variants", nargs="+", default=["2x1", "2x2"], help="EPOCHSxNEGATIVES of each variant")
    p.add_argument("--out", required=True, help="result JSON (the markdown goes beside it)")
    p.add_argument("--arrays", help="levers' arrays cache (default: arrays.npz beside --out)")
    p.add_argument("--train", help="training texts, when the checkpoint's metrics.json has no config")
    p.add_argument("--threads", type=int, help="torch threads")
    a = p.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    record = script_record(__file__, argv)
    try:
        res, md = run(a, log)
    except (ValueError, FileNotFoundError) as e:
        raise LrslError(str(e)) from e
    write_result(
        Path(a.out), res, md, kind="embedder-lever", title="Embedder budget and negatives", run=record
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
