"""int8 quantization variants of a checkpoint's classifier: top-1 agreement with fp32, accuracy, speed.

    python -m benchmarks.int8_variants --checkpoint CKPT [--variants fused_u8u8,fused_s8rr,...]
        [--batch-size B] [--threads N] [--work DIR] [--out FILE.json]

The export ships one int8 preset per CPU family (``export.optimize.PRESETS``). This script answers
"would another quantization agree more often with fp32 on my data?": it exports the classifier once
(ONNX fp32, unfused ``raw`` and fused by ONNX Runtime's transformer optimizer ``fused``), quantizes it
each way named below, and runs every graph over CKPT/dev.jsonl and CKPT/test.jsonl in length-sorted
batches of ``--batch-size`` (the runtime's batching; dynamic quantization depends on the batch).
Speed, model only (tokenization excluded), threads as the runtime sets them: the
median time of one text per run over ``--speed-texts`` test texts, and queries/s over the dev+test
runs. The variants run one after another in one process: a first look, not ``latency.py``'s
alternating rounds.

Variant names: ``{raw|fused}_{u8u8|s8|s8rr}[_ffn2]`` -- graph; weights uint8 (the ``avx2`` preset),
int8, or int8 with 7-bit ``reduce_range`` (no VPMADDUBSW saturation on AVX2); ``_ffn2`` keeps each
layer's second feed-forward MatMul (after GELU, the widest activations) in fp32. All per-channel.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.defaults import DEFAULT_BATCH_SIZE
from lrsl_rt.errors import UsageError

DEFAULT_VARIANTS = "fused_u8u8,fused_s8rr,fused_s8,raw_u8u8,raw_s8rr,fused_u8u8_ffn2,fused_s8rr_ffn2"
WEIGHTS = {"u8u8": ("QUInt8", False), "s8": ("QInt8", False), "s8rr": ("QInt8", True)}


def parse_variant(name: str) -> tuple[str, str, bool]:
    parts = name.split("_")
    if len(parts) not in (2, 3) or parts[0] not in ("raw", "fused") or parts[1] not in WEIGHTS:
        raise UsageError(f"unknown variant {name!r}: expected {{raw|fused}}_{{u8u8|s8|s8rr}}[_ffn2]")
    if len(parts) == 3 and parts[2] != "ffn2":
        raise UsageError(f"unknown variant suffix in {name!r}: only _ffn2")
    return parts[0], parts[1], len(parts) == 3


def quantize(src: Path, dst: Path, weights: str, keep_ffn2: bool) -> Path:
    import onnx

    from export.optimize import QuantPreset, quantize_graph

    weight_type, reduce_range = WEIGHTS[weights]
    model = onnx.load(str(src), load_external_data=False)
    exclude = [n.name for n in model.graph.node if keep_ffn2 and n.name.endswith("output/dense/MatMul")]
    exclude = [n for n in exclude if "attention" not in n]
    preset = QuantPreset(f"{weights}", weight_type, per_channel=True, reduce_range=reduce_range)
    return quantize_graph(src, dst, preset, nodes_to_exclude=exclude)


def run_logits(session, tok, names, texts: list[str], max_length: int, batch_size: int):
    """Logits in input order, texts run in length-sorted batches (as the runtime does), and the
    seconds spent in the model (tokenization excluded)."""
    from export.onnx_export import encode

    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    out, seconds = None, 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        feed = encode(tok, [texts[i] for i in idx], names, max_length)
        t0 = time.perf_counter()
        y = session.run(feed)
        seconds += time.perf_counter() - t0
        out = np.empty((len(texts), y.shape[1]), np.float32) if out is None else out
        out[idx] = y
    return out, seconds


def batch1_ms(session, tok, names, texts: list[str], max_length: int) -> float:
    """Median model-only time of one text per run, in ms (after 20 warm-up runs)."""
    from export.onnx_export import encode

    feeds = [encode(tok, [t], names, max_length) for t in texts]
    for feed in feeds[:20]:
        session.run(feed)
    times = []
    for feed in feeds:
        t0 = time.perf_counter()
        session.run(feed)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def agreement_rows(logits: dict, ref: dict, splits: dict) -> dict:
    """Per split: top-1 agreement of a variant's logits with fp32's labels ``ref``, and accuracies."""
    rows = {}
    for s, (texts, gold) in splits.items():
        pred = logits[s].argmax(1)
        rows[s] = {
            "n": len(texts),
            "agreement": float(np.mean(pred == ref[s])),
            "differ": int(np.sum(pred != ref[s])),
            "accuracy": float(np.mean(pred == gold)),
            "fp32_accuracy": float(np.mean(ref[s] == gold)),
        }
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = CommandParser(prog="python -m benchmarks.int8_variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="training checkpoint (python -m train)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="texts per model call")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: one per core)")
    p.add_argument(
        "--speed-texts", type=int, default=300, help="texts for the batch-1 timing (evenly spaced over test)"
    )
    p.add_argument("--work", help="folder for the graphs (default: CKPT/../int8_variants)")
    p.add_argument("--out", help="write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    a = parse_args(argv)

    from benchmarks.lib.record import finish_record, run_record
    from export.onnx_export import export_onnx, load_classifier, load_tokenizer
    from export.optimize import optimize_graph
    from lrsl_rt.session import OnnxSession
    from train.checkpoint import read_info, read_jsonl

    run = run_record()
    ckpt = Path(a.checkpoint)
    info = read_info(ckpt)
    work = Path(a.work) if a.work else ckpt.parent / "int8_variants"
    work.mkdir(parents=True, exist_ok=True)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    specs = {v: parse_variant(v) for v in variants}
    tok = load_tokenizer(ckpt / "classifier")
    graph = load_classifier(ckpt / "classifier", info.labels, tok)
    names = graph.input_names
    fp32 = {"raw": export_onnx(graph, tok, work / "raw.onnx", "logits", info.max_length)}
    fp32["fused"] = work / "fused.onnx"
    optimize_graph(fp32["raw"], fp32["fused"], graph.model.config)
    del graph
    label_id = {y: i for i, y in enumerate(info.labels)}
    splits = {}
    for split in ("dev", "test"):
        if (ckpt / f"{split}.jsonl").is_file():
            texts, labels = read_jsonl(ckpt / f"{split}.jsonl")
            splits[split] = (texts, np.array([label_id[y] for y in labels]))
    speed_texts = splits["test"][0] if "test" in splits else next(iter(splits.values()))[0]
    speed_texts = speed_texts[:: max(1, len(speed_texts) // a.speed_texts)][: a.speed_texts]

    def run_all(path: Path) -> tuple[dict, dict]:
        """Logits per split and the model-only speed of the graph at ``path``, on one session with
        the runtime's thread settings."""
        session = OnnxSession(path, threads=a.threads)
        logits, seconds = {}, 0.0
        for s, (texts, _) in splits.items():
            logits[s], t = run_logits(session, tok, names, texts, info.max_length, a.batch_size)
            seconds += t
        n = sum(len(texts) for texts, _ in splits.values())
        ms = batch1_ms(session, tok, names, speed_texts, info.max_length)
        return logits, {"batch1_ms": ms, "qps": n / seconds}

    fp32_logits, fp32_speed = run_all(fp32["fused"])
    ref = {s: y.argmax(1) for s, y in fp32_logits.items()}
    print(
        f"{'fused fp32':18s} model only: batch 1 {fp32_speed['batch1_ms']:.2f} ms, "
        f"{fp32_speed['qps']:.0f} q/s in batches of {a.batch_size}"
    )
    rows = []
    print(
        f"{'variant':18s} "
        + " | ".join(f"{s}: agree with fp32, accuracy" for s in splits)
        + " | model only: batch-1 p50, q/s"
    )
    for v, (g, weights, keep_ffn2) in specs.items():
        t0 = time.perf_counter()
        path = quantize(fp32[g], work / f"{v}.onnx", weights, keep_ffn2)
        row = {"variant": v, "size": path.stat().st_size}
        logits, row["speed"] = run_all(path)
        row.update(agreement_rows(logits, ref, splits))
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        cells = [
            f"{s}: {100 * row[s]['agreement']:.2f}% ({row[s]['differ']} differ), {100 * row[s]['accuracy']:.2f}%"
            for s in splits
        ]
        cells.append(f"{row['speed']['batch1_ms']:.2f} ms, {row['speed']['qps']:.0f} q/s")
        print(f"{v:18s} " + " | ".join(cells), flush=True)
    if a.out:
        result = {"checkpoint": str(ckpt), "threads": a.threads, "fp32_speed": fp32_speed, "rows": rows}
        result["run"] = finish_record(run, 0)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
