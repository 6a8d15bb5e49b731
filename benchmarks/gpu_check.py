"""The GPU check: fp16 bundles on CUDA against the CPU and against PyTorch on CUDA (``make gpu-check``).

    python -m benchmarks.gpu_check [--out artifacts/gpu-check/gpu-check.json] [--work DIR] [--rounds 30]

``make gpu-check`` runs this inside an environment of its own with onnxruntime-gpu and a CUDA build of
torch (``scripts/gpu_check.sh``); the shared environment's onnxruntime has no CUDA provider, and the
two packages install the same module, so they never share one environment. Steps:

1. the CUDA provider and a CUDA device are there, or the check stops at once with one line saying
   which is missing (exit status 1) -- nothing is built;
2. two small checkpoints are trained with ``python -m train`` on synthetic 4-class texts, on the CPU:
   an encoder classifier from the default base model (all-MiniLM-L6-v2) and a tiny random Llama-style
   decoder-only classifier (LoRA, its tokenizer the base model's), both beside the same embedder;
3. each is exported at fp16 with ``python -m export --precision fp16 --provider cuda``;
4. parity: the fp16 bundle's logits and labels on the CUDA provider against the same bundle on the
   CPU provider (max abs logit difference, label agreement of ``Reranker.predict``);
5. timing: milliseconds per call of batch 1 and batch 32, the bundle's classifier on CUDA
   (``Reranker.logits``) and whole ``Reranker.predict`` against the PyTorch classifier in fp16 on
   CUDA (``torch.inference_mode``, synchronised after each call); the median of ``--rounds`` calls
   after warm-up calls.

The JSON (kind ``gpu-check``) is what ``make results`` pages. Not a test: nothing is asserted here;
the exit status says whether the check could run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.lib.machine import versions
from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import LrslError

DEFAULT_OUT = "artifacts/gpu-check/gpu-check.json"
BATCHES = (1, 32)
LABELS = {
    "card_arrival": ["card", "arrive", "delivery", "mail", "waiting"],
    "exchange_rate": ["exchange", "rate", "currency", "euro", "convert"],
    "top_up_failed": ["top", "up", "failed", "declined", "money"],
    "lost_card": ["lost", "stolen", "missing", "block", "freeze"],
}
FILLER = ["i", "my", "the", "is", "why", "how", "do", "can", "please", "help", "what", "it"]


class NoCuda(LrslError):
    """No CUDA provider or no CUDA device: the check cannot run here (exit status 1)."""

    exit_code = 1


def parse_args(argv=None) -> argparse.Namespace:
    p = CommandParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", default=DEFAULT_OUT, metavar="FILE.json", help=f"result JSON (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--work", metavar="DIR", help="where checkpoints and bundles go (default: a temporary folder)"
    )
    p.add_argument("--rounds", type=int, default=30, help="timed calls per row (default 30)")
    return p.parse_args(argv)


def cuda_state() -> dict:
    """What this environment offers: onnxruntime's providers, torch's CUDA; NoCuda when either lacks it."""
    from lrsl_rt.session import import_onnxruntime

    ort = import_onnxruntime()
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        raise NoCuda(
            f"no CUDA provider is available: onnxruntime {ort.__version__} offers {providers}; run "
            "`make gpu-check` on a machine with a CUDA device (it installs onnxruntime-gpu in an "
            "environment of its own)"
        )
    import torch

    if not torch.cuda.is_available():
        raise NoCuda(
            f"no CUDA device is visible to torch {torch.__version__} (CUDA build: {torch.version.cuda})"
        )
    return {"providers": providers, "device": torch.cuda.get_device_name(0), "torch_cuda": torch.version.cuda}


# ---- checkpoints and bundles ------------------------------------------------------------------------
def synthetic(n_per_class: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n_per_class):
        for label, words in LABELS.items():
            text = rng.sample(words, 2) + rng.sample(FILLER, 4)
            rng.shuffle(text)
            rows.append({"text": " ".join(text), "label": label})
    return rows


def write_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed, n in (("train", 0, 16), ("dev", 1, 8), ("test", 2, 8)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synthetic(n, seed)))
    return folder


def tiny_decoder(folder: Path, tokenizer_dir: Path) -> Path:
    """A random 2-layer Llama-style causal LM (hidden 64) that uses the tokenizer of ``tokenizer_dir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build(work: Path) -> dict[str, Path]:
    """{"encoder": bundle, "decoder": bundle}: trained on the CPU, exported at fp16 for CUDA."""
    from export.__main__ import main as export_main
    from train.__main__ import main as train_main
    from train.models import default_base_model

    data, base = write_data(work / "data"), default_base_model()
    common = ["--train", str(data / "train.jsonl"), "--dev", str(data / "dev.jsonl"), "--test"]
    common += [str(data / "test.jsonl"), "--epochs", "1", "--max-length", "32", "--seed", "3"]
    runs = {
        "encoder": ["--classifier-model", str(base), "--embedder-epochs", "1"],
        "decoder": ["--classifier-model", str(tiny_decoder(work / "llama", base)), "--lora-rank", "8"],
    }
    runs["decoder"] += ["--lr", "2e-3", "--embedder-from", str(work / "encoder-ckpt")]
    bundles = {}
    for name, args in runs.items():
        _ok(train_main([*common, *args, "--out", str(work / f"{name}-ckpt")]), f"training the {name}")
        bundles[name] = work / f"{name}-fp16"
        args = [str(work / f"{name}-ckpt"), str(bundles[name]), "--precision", "fp16", "--provider", "cuda"]
        _ok(export_main([*args, "--max-accuracy-drop", "1", "--force"]), f"exporting the {name}")
    return bundles


def _ok(code: int, what: str) -> None:
    if code != 0:
        raise LrslError(f"{what} failed (exit status {code}); its error is above")


# ---- parity and timing ------------------------------------------------------------------------------
def parity(bundle: Path, texts: list[str]) -> dict:
    """The fp16 bundle on CUDA against the same bundle on the CPU: logits and labels."""
    import numpy as np

    from lrsl_rt import Reranker

    cuda, cpu = (Reranker.from_bundle(bundle, providers=p) for p in ("cuda", "cpu"))
    a, b = cuda.logits(texts), cpu.logits(texts)
    labels = [(x.label, y.label) for x, y in zip(cuda.predict(texts), cpu.predict(texts), strict=True)]
    return {
        "n": len(texts),
        "providers_cuda": list(cuda.classifier.providers),
        "logits_max_abs_diff": float(np.abs(a - b).max()),
        "logits_max_abs": float(np.abs(b).max()),
        "label_agreement": sum(x == y for x, y in labels) / len(labels),
    }


def per_call_ms(fn, batch: list[str], rounds: int, sync=None) -> float:
    """Median milliseconds of ``fn(batch)`` over ``rounds`` calls, after 5 warm-up calls."""
    for _ in range(5):
        fn(batch)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(batch)
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def timings(name: str, bundle: Path, texts: list[str], rounds: int) -> list[dict]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lrsl_rt import Reranker

    ckpt = bundle.parent / f"{name}-ckpt" / "classifier"
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(ckpt, torch_dtype=torch.float16).cuda().eval()

    @torch.inference_mode()
    def pytorch(batch):
        enc = tok(batch, truncation=True, max_length=32, padding=True, return_tensors="pt").to("cuda")
        return model(**enc).logits

    r = Reranker.from_bundle(bundle, providers="cuda")
    rows = []
    for b in BATCHES:
        batch = (texts * b)[:b]
        rows.append(
            {
                "model": name,
                "batch": b,
                "pytorch_cuda_fp16_ms": per_call_ms(pytorch, batch, rounds, torch.cuda.synchronize),
                "onnx_cuda_fp16_logits_ms": per_call_ms(r.logits, batch, rounds),
                "onnx_cuda_fp16_predict_ms": per_call_ms(r.predict, batch, rounds),
            }
        )
    return rows


def markdown(state: dict, par: dict, rows: list[dict]) -> str:
    lines = [f"GPU: {state['device']} (CUDA {state['torch_cuda']}); fp16 bundles.", ""]
    lines += [
        "| model | n | max abs logit diff CUDA vs CPU | max abs logit | label agreement |",
        "|---|---|---|---|---|",
    ]
    for name, p in par.items():
        lines.append(
            f"| {name} | {p['n']} | {p['logits_max_abs_diff']:.2e} | {p['logits_max_abs']:.3g} | "
            f"{100 * p['label_agreement']:.1f}% |"
        )
    lines += ["", "| model | batch | PyTorch CUDA fp16 ms | lrsl-rt logits ms | lrsl-rt predict ms |"]
    lines.append("|---|---|---|---|---|")
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['batch']} | {row['pytorch_cuda_fp16_ms']:.2f} | "
            f"{row['onnx_cuda_fp16_logits_ms']:.2f} | {row['onnx_cuda_fp16_predict_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv) -> int:
    a = parse_args(argv)
    run = script_record(__file__, argv)
    state = cuda_state()  # before anything is built: a machine without CUDA stops here
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(a.work or tmp)
        bundles = build(work)
        texts = [r["text"] for r in synthetic(8, 2)]
        par = {name: parity(b, texts) for name, b in bundles.items()}
        rows = [row for name, b in bundles.items() for row in timings(name, b, texts, a.rounds)]
    md = markdown(state, par, rows)
    result = {"cuda": state, "parity": par, "timings": rows, "versions": versions()}
    write_result(a.out, result, md, kind="gpu-check", title="GPU check: fp16 bundles on CUDA", run=run)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
