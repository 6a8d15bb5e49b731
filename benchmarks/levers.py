"""Levers of LRSL on a trained checkpoint, without retraining: label representations, hardness
gates at a matched hard share, and an MLP reranker against the similarity rule.

    python -m benchmarks.levers --checkpoint artifacts/hwu64/checkpoint --out artifacts/hwu64/levers

1. Arrays, computed once and cached in ``OUT/arrays.npz`` (reused while the checkpoint's labels and
   split sizes match): the PyTorch classifier's dev/test logits (``train.classifier.predict_logits``)
   and the fine-tuned embedder's unit-length embeddings of the train/dev/test texts and of the label
   texts (``train.embedder.encode``). The training texts are re-read with the checkpoint's own
   settings (metrics.json ``config`` through ``train.pipeline.load_splits``), or from ``--train``.
2. Incumbent: the checkpoint's threshold sigma2_mis (recomputed on dev), k and fusion, label-name
   embeddings. Each lever changes one thing and is compared with the incumbent on the same samples
   by McNemar's z (``lrsl_rt.tuning.mcnemar``): adopted when z >= 2 on dev, then checked on test.
   (a) label representations: label name (today), class prototype, their normalized mean;
   (b) hardness gates: top-k variance, top-2 margin, entropy, max probability, each marking as many dev
       samples hard as the variance gate does;
   (b') the same measures as shipped (``python -m train --measure``): each with its own threshold,
        the measure's mean over the dev mistakes (sigma2_mis under the variance), so hard shares differ;
   (c) MLP reranker over per-candidate features (:func:`benchmarks.lib.lever_eval.candidate_features`)
       trained on dev, vs the similarity rule, on the variance gate's hard samples.
3. ``OUT/levers.json`` (kind ``levers``, with the run record: ``results_doc.py`` pages it) and
   ``OUT/levers.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from benchmarks.lib import lever_eval as E
from benchmarks.lib.lever_eval import SPLITS, strip_private, training_split, verdicts
from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import LrslError
from lrsl_rt.fusion import Fusion
from lrsl_rt.gate import is_hard
from lrsl_rt.tuning import MIN_Z, sigma2_mis


def compute_arrays(ckpt: Path, train_file: str | None, threads: int | None, log) -> dict[str, np.ndarray]:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from export.source import load_checkpoint
    from train.classifier import predict_logits
    from train.embedder import encode

    if threads:
        torch.set_num_threads(threads)
    c = load_checkpoint(ckpt)
    if c.test is None:
        raise ValueError(f"{ckpt}: no test.jsonl; the levers are confirmed on test")
    train_texts, train_gold = training_split(ckpt, c.info, train_file)
    tok = AutoTokenizer.from_pretrained(c.classifier_dir)
    clf = AutoModelForSequenceClassification.from_pretrained(c.classifier_dir)
    emb = SentenceTransformer(str(ckpt / "embedder"), device="cpu")
    out = {"labels": np.array(c.info.labels), "train_gold": train_gold}
    for split in (c.dev, c.test):
        log(f"logits and embeddings: {split.name} ({len(split.texts)} texts)")
        out[f"{split.name}_logits"] = predict_logits(clf, tok, split.texts, c.info.max_length)
        out[f"{split.name}_emb"] = encode(emb, split.texts)
        out[f"{split.name}_gold"] = split.gold
    log(f"embeddings: train ({len(train_texts)} texts) and label texts")
    out["train_emb"] = encode(emb, train_texts)
    out["label_emb"] = encode(emb, c.info.label_texts)
    return out


def load_arrays(ckpt: Path, cache: Path, train_file, threads, log) -> dict[str, np.ndarray]:
    from train.checkpoint import read_info, read_jsonl

    info = read_info(ckpt)
    sizes = {s: len(read_jsonl(ckpt / f"{s}.jsonl")[0]) for s in SPLITS}
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            arrays = dict(z)
        if list(arrays["labels"]) == info.labels and all(
            len(arrays[f"{s}_gold"]) == sizes[s] for s in SPLITS
        ):
            log(f"arrays from the cache {cache}")
            return arrays
        log(f"{cache}: made for another checkpoint; computing again")
    arrays = compute_arrays(ckpt, train_file, threads, log)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **arrays)
    return arrays


def evaluate(a: dict[str, np.ndarray], k: int, fusion: Fusion) -> dict:
    threshold = sigma2_mis(a["dev_logits"], a["dev_gold"], k)
    hard = {s: is_hard(a[f"{s}_logits"], k, threshold) for s in SPLITS}
    n_labels = len(a["labels"])
    reps = E.representations(a["label_emb"], E.prototypes(a["train_emb"], a["train_gold"], n_labels))
    cos = {s: {r: a[f"{s}_emb"] @ m.T for r, m in reps.items()} for s in SPLITS}

    label_rows = {s: {} for s in SPLITS}
    for s in SPLITS:
        logits, gold = a[f"{s}_logits"], a[f"{s}_gold"]
        for r in reps:
            row = E.gate_row(hard[s], logits, cos[s][r], gold, fusion, k)
            row["zero_shot"] = float(np.mean(np.argmax(cos[s][r], axis=1) == gold))
            label_rows[s][r] = row

    scores = {s: E.hardness_scores(a[f"{s}_logits"], k) for s in SPLITS}
    n_hard_dev = int(hard["dev"].sum())
    gate_rows, thresholds = {s: {} for s in SPLITS}, {}
    for g in scores["dev"]:
        thresholds[g] = (
            threshold if g == "topk_variance" else E.matched_threshold(scores["dev"][g], n_hard_dev)
        )
        for s in SPLITS:
            h = hard[s] if g == "topk_variance" else scores[s][g] <= thresholds[g]
            gate_rows[s][g] = E.gate_row(h, a[f"{s}_logits"], cos[s]["label_name"], a[f"{s}_gold"], fusion, k)

    shipped_rows, shipped_thresholds = E.shipped_gates(a, k, fusion, cos)

    feats_dev, idx_dev = E.candidate_features(a["dev_logits"], cos["dev"]["label_name"], k)
    net = E.train_mlp(feats_dev, E.gold_position(idx_dev, a["dev_gold"]))
    mlp_rows = {s: {"similarity_rule": label_rows[s]["label_name"]} for s in SPLITS}
    preds = {
        "dev": E.cross_fitted_mlp(a["dev_logits"], cos["dev"]["label_name"], a["dev_gold"], hard["dev"], k),
        "test": E.mlp_predict(net, a["test_logits"], cos["test"]["label_name"], hard["test"], k),
    }
    for s in SPLITS:
        ok = preds[s] == a[f"{s}_gold"]
        mlp_rows[s]["mlp"] = {"accuracy_lrsl": float(ok.mean()), "n_hard": int(hard[s].sum()), "_ok": ok}

    classifier = {s: float(np.mean(np.argmax(a[f"{s}_logits"], 1) == a[f"{s}_gold"])) for s in SPLITS}
    return {
        "k": k,
        "fusion": fusion.to_dict(),
        "threshold": threshold,
        "n": {s: len(a[f"{s}_gold"]) for s in SPLITS},
        "accuracy_classifier": classifier,
        "label_representations": {
            "rows": {s: {n: strip_private(r) for n, r in label_rows[s].items()} for s in SPLITS},
            **verdicts(label_rows, "label_name"),
        },
        "hardness_gates": {
            "thresholds": thresholds,
            "rows": {s: {n: strip_private(r) for n, r in gate_rows[s].items()} for s in SPLITS},
            **verdicts(gate_rows, "topk_variance"),
        },
        "shipped_gates": {
            "thresholds": shipped_thresholds,
            "rows": {s: {n: strip_private(r) for n, r in shipped_rows[s].items()} for s in SPLITS},
            **verdicts(shipped_rows, "variance"),
        },
        "mlp_reranker": {
            "rows": {s: {n: strip_private(r) for n, r in mlp_rows[s].items()} for s in SPLITS},
            **verdicts(mlp_rows, "similarity_rule"),
        },
    }


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def markdown(res: dict, title: str) -> str:
    lines = [
        f"# Levers on {title}",
        "",
        f"Incumbent: label-name embeddings, top-{res['k']} variance gate (sigma2_mis {res['threshold']:.4g}), "
        f"fusion {res['fusion']['rule']}:{res['fusion']['p']}:{res['fusion']['scope']}. Classifier alone: dev "
        f"{_pct(res['accuracy_classifier']['dev'])}, test {_pct(res['accuracy_classifier']['test'])}. A lever is "
        f"adopted when McNemar z >= {MIN_Z:g} against the incumbent on dev, and confirmed when it holds on test.",
    ]
    sections = (
        ("Label representations", "label_representations", ("accuracy_lrsl", "zero_shot")),
        ("Hardness gates at the variance gate's dev hard share", "hardness_gates", ("accuracy_lrsl",)),
        (
            "Hardness measures as `python -m train --measure` calibrates them (threshold: the mean of "
            "the dev mistakes)",
            "shipped_gates",
            ("accuracy_lrsl",),
        ),
        ("MLP reranker vs the similarity rule", "mlp_reranker", ("accuracy_lrsl",)),
    )
    for title_, key, cols in sections:
        sec = res[key]
        gates = key in ("hardness_gates", "shipped_gates")
        extra = ["hard share", "mistakes caught", "caught per reranked"] if gates else []
        head = ["lever"] + [f"{s} {c.replace('_', ' ')}" for s in SPLITS for c in cols] + extra
        head += ["dev z", "test z"]
        lines += ["", f"## {title_}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in sec["rows"]["dev"]:
            cells = [name] + [_pct(sec["rows"][s][name].get(c)) for s in SPLITS for c in cols]
            if gates:
                d, t = sec["rows"]["dev"][name], sec["rows"]["test"][name]
                cells += [
                    f"{_pct(d['hard_share'])} / {_pct(t['hard_share'])}",
                    f"{d['mistakes_caught']}/{d['mistakes']} / {t['mistakes_caught']}/{t['mistakes']}",
                    f"{_pct(d['caught_per_reranked'])} / {_pct(t['caught_per_reranked'])}",
                ]
            cells += [f"{sec['mcnemar'][s][name]['z']:+.2f}" for s in SPLITS]
            lines.append("| " + " | ".join(cells) + " |")
        if sec["confirmed_on_test"] is None:
            lines += ["", f"Kept: **{sec['incumbent']}** (no lever reached z >= {MIN_Z:g} on dev)."]
        else:
            verdict = "confirmed" if sec["confirmed_on_test"] else "not confirmed"
            lines += ["", f"Adopted on dev: **{sec['adopted_on_dev']}** ({verdict} on test)."]
    if res["hardness_gates"]["rows"]:
        lines += ["", "Gate columns with two values: dev / test."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.levers", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="training checkpoint (python -m train)")
    p.add_argument("--out", required=True, help="folder for arrays.npz, levers.json, levers.md")
    p.add_argument(
        "--train",
        help="training texts (.csv text,category or .jsonl text,label); default: "
        "re-read with the checkpoint's metrics.json config",
    )
    p.add_argument("--cache", help="arrays cache (default OUT/arrays.npz)")
    p.add_argument("--threads", type=int, help="torch threads for computing the arrays")
    a = p.parse_args(argv)
    run = script_record(__file__, argv)
    ckpt, out = Path(a.checkpoint), Path(a.out)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        from train.checkpoint import read_info

        info = read_info(ckpt)
        arrays = load_arrays(ckpt, Path(a.cache) if a.cache else out / "arrays.npz", a.train, a.threads, log)
        res = evaluate(arrays, info.k, info.fusion_rule)
    except (ValueError, FileNotFoundError) as e:
        raise LrslError(str(e)) from e
    res["checkpoint"] = str(ckpt)
    md = markdown(res, ckpt.parent.name if ckpt.name == "checkpoint" else ckpt.name)
    write_result(out / "levers.json", res, md, kind="levers", title="Levers without retraining", run=run)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
