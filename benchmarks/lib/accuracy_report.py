"""The markdown table of ``python -m benchmarks.accuracy``'s result dict (also a results page's body)."""

from __future__ import annotations


def markdown(result: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    header = ["model", "threshold", "accuracy classifier", "accuracy LRSL", "hard share", "hard: classifier",
              "hard: LRSL", "fixed", "broken", "agrees with PyTorch (clf / LRSL)"]  # fmt: skip
    lines = [
        f"## Accuracy on {result['split']} (n={result['n']}) of {result['checkpoint']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, r in result["rows"].items():
        rep, agree = r["report"], r.get("agreement_with_pytorch")
        cells = [name, f"{r['threshold']:.4g}", pct(rep["accuracy_classifier"]), pct(rep["accuracy_lrsl"]),
                 pct(rep["hard_share"]), pct(rep["hard_accuracy_classifier"]), pct(rep["hard_accuracy_lrsl"]),
                 str(rep["fixed"]), str(rep["broken"]),
                 f"{pct(agree['classifier'])} / {pct(agree['lrsl'])}" if agree else "-"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    rec = result["recorded"]
    if rec:
        now = result["rows"]["pytorch"]["report"]
        lines += ["", f"training run's metrics.json for {result['split']}: classifier {pct(rec.get('accuracy_classifier'))}, "
                  f"LRSL {pct(rec.get('accuracy_lrsl'))} (recomputed here: {pct(now['accuracy_classifier'])}, "
                  f"{pct(now['accuracy_lrsl'])})"]  # fmt: skip
    lines += [
        "",
        "hard: the samples each model's own gate marks hard; fixed/broken: hard samples LRSL turned right/wrong",
    ]
    return "\n".join(lines)
