"""From the workers' results to the figures the tables show: medians over rounds, MAC utilisation."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.lib.common import median_range
from benchmarks.lib.machine import classifier_macs, int8_peak

CLASSIFIER_ONLY = ("pytorch_fp32", "optimum_int8", "lrsl_clf_int8", "lrsl_clf_fp32")


def flat(res: dict) -> dict:
    """The figures of one worker result under flat names (``b1_p50_ms``, ``qps_32``, ...)."""
    f = {}
    for part in ("b1", "b1_model"):
        for q in ("p50", "p95", "p99", "mean"):
            f[f"{part}_{q}_ms"] = res[part][f"{q}_ms"]
    for b, qps in res["qps"].items():
        f[f"qps_{b}"] = qps
    for key in (
        "rss_peak_mb", "load_s", "import_s", "hard_share", "accuracy_classifier", "accuracy_lrsl", "oos_recall"
    ):  # fmt: skip
        f[key] = res.get(key)
    return f


def summarize(rounds: dict) -> dict:
    """Contender -> figure -> median/min/max over its rounds (figures that are None are left out)."""
    out = {}
    for name, results in rounds.items():
        if results:
            flats = [flat(r) for r in results]
            out[name] = {k: median_range([f[k] for f in flats]) for k in flats[0] if flats[0][k] is not None}
    return out


def token_lengths(bundle: str, texts: list[str]) -> list[int]:
    """Tokens per text as the bundle's tokenizer gives them (special tokens in, truncated)."""
    from lrsl_rt.manifest import read_manifest, resolve_file
    from lrsl_rt.tokenize import BundleTokenizer

    m = read_manifest(bundle)
    tok = BundleTokenizer(resolve_file(Path(bundle), "tokenizer", m.files["tokenizer"]), m.tokenizer)
    return [len(r) for r in tok.tokenize(texts)]


def mac_utilisation(
    checkpoint, lengths: list[int], summary: dict, cpu: dict, threads: int, bmax: int
) -> dict:
    """Achieved MACs/s of the classifier-only contenders, and their share of the int8 peak for int8 ones.

    Batch 1 uses the model-only mean time; batch ``bmax`` uses the end-to-end throughput.
    """
    if not checkpoint:
        return {"note": "needs --checkpoint (the classifier's config.json gives its layer sizes)"}
    config = json.loads((Path(checkpoint) / "classifier" / "config.json").read_text(encoding="utf-8"))
    per_query = [classifier_macs(config, s) for s in lengths]
    linear = sum(m["int8_linear"] for m in per_query) / len(per_query)
    peak = int8_peak(cpu, threads)
    rows = {}
    for name in CLASSIFIER_ONLY:
        s = summary.get(name)
        if not s:
            continue
        b1 = linear / (s["b1_model_mean_ms"]["median"] / 1e3)
        bm = linear * s[f"qps_{bmax}"]["median"]
        share = name.endswith("int8") and peak["peak_macs_per_s"]
        rows[name] = {
            "b1_model_macs_per_s": b1,
            "b1_model_share_of_peak": b1 / peak["peak_macs_per_s"] if share else None,
            f"b{bmax}_macs_per_s": bm,
            f"b{bmax}_share_of_peak": bm / peak["peak_macs_per_s"] if share else None,
        }
    return {
        "mean_tokens": sum(lengths) / len(lengths),
        "linear_macs_per_query": linear,
        "float_attention_macs_per_query": sum(m["float_attention"] for m in per_query) / len(per_query),
        "peak": peak,
        "largest_batch": bmax,
        "contenders": rows,
        "note": "useful MACs of the linear layers at each query's real length (padding not counted); the times "
        "also hold everything else the model does (attention, layer norms, quantizing activations), so the "
        "share of peak is a lower bound on the GEMM efficiency",
    }
