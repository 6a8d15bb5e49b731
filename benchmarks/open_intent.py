"""Out-of-scope (abstain) results of one bundle: every score's AUROC and the chosen operating point.

Reads what ``python -m export`` measured when it calibrated the abstain decision (the manifest's
``metrics.abstain``: every score's dev and test AUROC, the chosen score's dev curve and threshold,
and its test figures through ``Reranker.predict``), checks them against the product's aims, and
writes ``OUT.json`` (kind ``open-intent``, paged by ``make results``), ``OUT.md`` and, with
``--plot``, the dev curve of the chosen score (out-of-scope recall against in-scope accuracy).

    python -m benchmarks.open_intent --bundle artifacts/banking77-open/bundle \\
        --out artifacts/banking77-open/open-intent --plot docs/guide/abstain-banking77.png

The bundle comes from a checkpoint trained with ``--unknown-ratio 0.25`` (``make open-intent``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.lib.record import script_record, write_result

# What the product aims for at the default threshold (fractions).
AIMS = {"inscope_drop_max": 0.01, "oos_recall_min": 0.70}
BASELINE = "max_prob"


def summarize(manifest) -> dict:
    """The figures of the result JSON from a bundle's manifest."""
    a = manifest.metrics["abstain"]
    chosen, test = a["chosen"], a.get("test") or {}
    scores = a["scores"]
    checks = {
        "beats_max_prob_on_test_auroc": scores[chosen].get("test_auroc", 0)
        > scores[BASELINE].get("test_auroc", 1),
        "inscope_drop_within_aim": test.get("inscope_accuracy_off", 1) - test.get("inscope_accuracy", 0)
        <= AIMS["inscope_drop_max"] + 1e-12,
        "oos_recall_within_aim": test.get("oos_recall", 0) >= AIMS["oos_recall_min"],
    }
    return {
        "labels": len(manifest.labels),
        "out_of_scope": a.get("out_of_scope", {}),
        "scores": scores,
        "chosen": chosen,
        "rule": a["rule"],
        "threshold": manifest.abstain.threshold,
        "dev": a["dev"],
        "test": test,
        "rows": a["rows"],
        "aims": AIMS,
        "checks": checks,
        "dev_curve": a["dev_curve"],
    }


def markdown(name: str, s: dict) -> str:
    pct = lambda x: "-" if x is None else f"{100 * x:.2f} %"  # noqa: E731
    unknown = s["out_of_scope"].get("unknown_labels", [])
    lines = [
        f"### {name}: {s['labels']} known labels, {len(unknown)} unknown",
        "",
        f"Unknown labels (seeded): {', '.join(unknown) or '-'}.",
        f"Rows: dev {s['rows']['dev_in']} in scope + {s['rows']['dev_oos']} out of scope; test out of scope "
        f"{s['rows']['test_oos']}.",
        "",
        "| score | dev AUROC | test AUROC |",
        "|---|---|---|",
    ]
    for score, row in sorted(s["scores"].items(), key=lambda x: -x[1]["dev_auroc"]):
        mark = " (chosen)" if score == s["chosen"] else (" (baseline)" if score == BASELINE else "")
        lines.append(
            f"| {score}{mark} | {row['dev_auroc']:.4f} | {row.get('test_auroc', float('nan')):.4f} |"
        )
    d, t = s["dev"], s["test"]
    lines += [
        "",
        f"Chosen: **{s['chosen']}**, threshold {s['threshold']:.4g} by rule `{s['rule']}`.",
        "",
        "| split | out-of-scope recall | in-scope accuracy | abstain off | in scope abstained | macro-F1 (off) |",
        "|---|---|---|---|---|---|",
        f"| dev | {pct(d['oos_recall'])} | {pct(d['inscope_accuracy'])} | {pct(d['inscope_accuracy_off'])} | "
        f"{pct(d['inscope_abstained'])} | - |",
    ]
    if t:
        lines.append(
            f"| test (records) | {pct(t['oos_recall'])} | {pct(t['inscope_accuracy'])} | {pct(t['inscope_accuracy_off'])} "
            f"| {pct(t['inscope_abstained'])} | {pct(t['macro_f1'])} ({pct(t['macro_f1_off'])}) |"
        )
    lines += ["", "| aim | met |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {'yes' if v else 'NO'} |" for k, v in s["checks"].items()]
    return "\n".join(lines) + "\n"


def plot(path: Path, name: str, s: dict) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    curve = s["dev_curve"]
    ax.plot(
        [100 * p["oos_recall"] for p in curve],
        [100 * p["inscope_accuracy"] for p in curve],
        label="dev curve",
    )
    d = s["dev"]
    ax.scatter(
        [100 * d["oos_recall"]],
        [100 * d["inscope_accuracy"]],
        color="black",
        zorder=3,
        label="chosen threshold",
    )
    ax.axhline(100 * d["inscope_accuracy_off"], linestyle="--", color="grey", label="abstain off")
    ax.set_xlabel("out-of-scope texts caught (%)")
    ax.set_ylabel("in-scope accuracy (%)")
    ax.set_title(f"{name}: abstain with {s['chosen']} (dev)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    from lrsl_rt.command import CommandParser, run_command

    p = CommandParser(prog="python -m benchmarks.open_intent", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="bundle exported from an open-intent checkpoint")
    p.add_argument("--name", help="data set name in the title (default: the bundle's parent folder)")
    p.add_argument("--out", required=True, help="OUT.json and OUT.md are written")
    p.add_argument("--plot", help="PNG of the chosen score's dev curve")

    def run() -> int:
        from lrsl_rt.errors import UsageError
        from lrsl_rt.manifest import read_manifest

        a = p.parse_args(argv)
        record = script_record(__file__, argv)
        m = read_manifest(a.bundle)
        if m.abstain is None or "abstain" not in m.metrics:
            raise UsageError(
                f"{a.bundle}: no abstain calibration; export a checkpoint trained with --unknown-ratio"
            )
        name = a.name or Path(a.bundle).resolve().parent.name
        s = summarize(m)
        write_result(a.out + ".json", {"dataset": name, **s}, markdown(name, s), kind="open-intent",
                     title=f"Out-of-scope texts: {name}", run=record)  # fmt: skip
        if a.plot:
            print(f"wrote {plot(Path(a.plot), name, s)}")
        print(markdown(name, s))
        return 0

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
