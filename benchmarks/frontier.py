"""The accuracy-speed frontier: bundles of one data set side by side, measured in one run.

    python -m benchmarks.frontier --texts ../shared/datasets/banking77/test.csv \\
        --bundle "6 layers=artifacts/banking77/bundle" \\
        --bundle "6 layers, exits=artifacts/banking77/bundle-exits" \\
        --bundle "4 layers=artifacts/banking77-l4/bundle" --bundle "3 layers=artifacts/banking77-l3/bundle" \\
        --out artifacts/banking77/frontier.json

For each bundle (``NAME=DIR``): the LRSL accuracy on the texts (``Reranker.predict`` with the bundle's
recorded batch size: what ``lrsl-rt eval`` reports), the hard share and, for a bundle with exits, the
share of texts leaving at each exit, with its int8 preset and the accuracy its export measured on the
PyTorch models (the manifest's record, shown for the first bundle); then, in ``--rounds`` alternating rounds (the bundles' order
rotates each round, so a slow spell of the machine is spread over all of them), the batch-1 p50
latency (one text per call, tokenization included) over ``--n-latency`` texts and the throughput at
``--per-call`` texts per call. Each speed figure is the median of the rounds, with their range.
All bundles are loaded in this one process with ``--threads`` ONNX Runtime threads each.

Writes ``OUT`` (kind ``frontier``, with the run record, through ``run_record.write_result``: ``make
results`` pages it) and the markdown beside it.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import Counter
from pathlib import Path

from benchmarks.lib.common import DEFAULT_TEXTS, full_batches, median_range, read_texts, subsample
from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import UsageError


def parse_bundle(spec: str) -> tuple[str, Path]:
    """``"NAME=DIR"`` -> (NAME, DIR).

    >>> parse_bundle("4 layers=artifacts/b4")
    ('4 layers', PosixPath('artifacts/b4'))
    """
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {spec!r}")
    return name.strip(), Path(path)


def quality(r, texts: list[str], gold: list[str] | None) -> dict:
    """Accuracy, hard share and exit shares of one bundle on the texts."""
    preds = r.predict(texts)
    n = len(preds)
    out = {
        "n": n,
        "accuracy_lrsl": None
        if not gold
        else sum(p.label == g for p, g in zip(preds, gold, strict=True)) / n,
        "hard_share": sum(p.hard for p in preds) / n,
        "classifier_layers": r.manifest.classifier_layers,
        "preset": r.manifest.preset,
    }
    pytorch = r.manifest.metrics.get("pytorch") or {}
    if pytorch.get("accuracy_lrsl") is not None:  # what the export measured on the PyTorch models
        out["pytorch"] = {k: pytorch.get(k) for k in ("split", "n", "accuracy_lrsl", "accuracy_classifier")}
    layers = Counter(p.exit_layer for p in preds if p.exit_layer is not None)
    if layers:
        out["exit_share"] = {str(layer): layers[layer] / n for layer in sorted(layers)}
    return out


def speed_round(r, latency_texts: list[str], batches: list[list[str]]) -> tuple[float, float]:
    """(batch-1 p50 in ms, texts per second at the batches' size) of one round."""
    gc.disable()
    try:
        times = []
        for t in latency_texts:
            start = time.perf_counter()
            r.predict([t])
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for b in batches:
            r.predict(b)
        qps = sum(len(b) for b in batches) / (time.perf_counter() - start)
    finally:
        gc.enable()
    times.sort()
    return 1e3 * times[len(times) // 2], qps


def measure(bundles: dict[str, Path], texts, a) -> dict:
    from lrsl_rt import Reranker

    loaded = {name: Reranker.from_bundle(path, threads=a.threads) for name, path in bundles.items()}
    results = {
        name: {"bundle": str(bundles[name]), **quality(r, texts.texts, texts.labels)}
        for name, r in loaded.items()
    }
    latency_texts = texts.texts[: a.n_latency]
    batches = full_batches(texts.texts[: a.n_throughput], a.per_call)
    for r in loaded.values():  # warm-up
        speed_round(r, latency_texts[:10], batches[:1])
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in loaded}
    names = list(loaded)
    for i in range(a.rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            rounds[name].append(speed_round(loaded[name], latency_texts, batches))
    for name, values in rounds.items():
        results[name]["b1_p50_ms"] = median_range([v[0] for v in values])
        results[name][f"qps_{a.per_call}"] = median_range([v[1] for v in values])
    return results


def markdown(results: dict, per_call: int, source: str) -> str:
    """The table (speed-ups and accuracy change against the first bundle) and the exits' targets."""
    base = next(iter(results.values()))
    lines = [
        "## Accuracy-speed frontier",
        "",
        f"Texts: {source}. Speed: median of the rounds (min-max); x: against the first row.",
        "",
        f"| bundle | layers | LRSL accuracy | change | hard | batch-1 p50 | x | q/s at {per_call} per call | x "
        "| exit shares |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        acc = "-" if r["accuracy_lrsl"] is None else f"{100 * r['accuracy_lrsl']:.2f} %"
        b1, qps = r["b1_p50_ms"], r[f"qps_{per_call}"]
        shares = ", ".join(f"{k}: {100 * v:.1f} %" for k, v in r.get("exit_share", {}).items()) or "-"
        g = gains(r, base, per_call)
        change = "-" if g["accuracy_pt"] is None else f"{g['accuracy_pt']:+.2f} pt"
        lines.append(
            f"| {name} | {r['classifier_layers'] or '-'} | {acc} | {change} | {100 * r['hard_share']:.1f} % | "
            f"{b1['median']:.2f} ms ({b1['min']:.2f}-{b1['max']:.2f}) | {g['b1_speedup']:.2f} | "
            f"{qps['median']:.0f} ({qps['min']:.0f}-{qps['max']:.0f}) | {g['qps_speedup']:.2f} | {shares} |"
        )
    pt = base.get("pytorch")
    if pt:
        lines += ["", f"PyTorch models of the first row's checkpoint, as its export measured them ({pt['split']} split, "
                  f"{pt['n']} texts): LRSL {100 * pt['accuracy_lrsl']:.2f} %, classifier alone "
                  f"{100 * pt['accuracy_classifier']:.2f} %."]  # fmt: skip
    presets = sorted({str(r.get("preset")) for r in results.values()})
    lines += ["", f"int8 preset: {', '.join(presets)}."]
    exits = [name for name, r in results.items() if r.get("exit_share")]
    if exits:
        lines += [
            "",
            f"Exit targets against the first row ({', '.join(f'{k}: {v}' for k, v in TARGETS.items())}):",
        ]
        for name in exits:
            g = gains(results[name], base, per_call)
            lines.append(f"- {name}: " + "; ".join(f"{k} {_verdict(k, g)}" for k in TARGETS))
    return "\n".join(lines) + "\n"


# what an exit path must reach against the no-exit path to become the default
TARGETS = {"accuracy_pt": ">= -0.3", "qps_speedup": ">= 1.5", "b1_speedup": ">= 1.3"}


def gains(r: dict, base: dict, per_call: int) -> dict:
    """Accuracy change in points and speed-ups (batch-1 p50, q/s) of ``r`` against ``base``."""
    acc = None
    if r["accuracy_lrsl"] is not None and base["accuracy_lrsl"] is not None:
        acc = 100 * (r["accuracy_lrsl"] - base["accuracy_lrsl"])
    key = f"qps_{per_call}"
    return {
        "accuracy_pt": acc,
        "b1_speedup": base["b1_p50_ms"]["median"] / r["b1_p50_ms"]["median"],
        "qps_speedup": r[key]["median"] / base[key]["median"],
    }


def _verdict(key: str, g: dict) -> str:
    value, bound = g[key], float(TARGETS[key].split()[1])
    if value is None:
        return "n/a"
    text = f"{value:+.2f} pt" if key == "accuracy_pt" else f"{value:.2f}x"
    return f"{text} ({'met' if value >= bound else 'NOT met'})"


def parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m benchmarks.frontier", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", action="append", type=parse_bundle, required=True, metavar="NAME=DIR",
                   help="a bundle to compare, named as in the table; repeat for each")  # fmt: skip
    p.add_argument(
        "--texts", default=str(DEFAULT_TEXTS), help="labelled texts (.csv/.jsonl; default: Banking77 test)"
    )
    p.add_argument("--out", required=True, help="result JSON (the markdown goes beside it)")
    p.add_argument("--rounds", type=int, default=3, help="alternating speed rounds (default 3)")
    p.add_argument(
        "--n-latency", type=int, default=300, help="texts timed one per call per round (default 300)"
    )
    p.add_argument("--n-throughput", type=int, default=1024, help="texts per round for q/s (default 1024)")
    p.add_argument("--per-call", type=int, default=32, help="texts per call for q/s (default 32)")
    p.add_argument(
        "--threads", type=int, default=None, help="ONNX Runtime threads per model (default: all cores)"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="use a seeded sample of this many texts (smoke runs)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    a = parser().parse_args(argv)
    run = script_record(__file__, argv)
    bundles = dict(a.bundle)
    if len(bundles) != len(a.bundle):
        raise UsageError("--bundle: two bundles have the same name")
    texts = read_texts(a.texts)
    if a.limit:
        texts = subsample(texts, a.limit)
    results = measure(bundles, texts, a)
    md = markdown(results, a.per_call, texts.source)
    settings = {k: getattr(a, k) for k in ("rounds", "n_latency", "n_throughput", "per_call", "threads")}
    write_result(a.out, {"results": results, "settings": settings, "texts": texts.source}, md,
                 kind="frontier", title="Accuracy-speed frontier", run=run)  # fmt: skip
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
