"""The multi-data-set accuracy table: every figure read from what ``train`` and ``export`` wrote.

For each data set: the checkpoint's ``metrics.json`` (PyTorch classifier and LRSL on test, embedder
zero-shot accuracy before/after fine-tuning, training wall time, the dev calibration) and, when built,
the bundle's ``manifest.json`` metrics (the shipped int8 bundle through ``Reranker.predict`` on the
same test split). Nothing is typed by hand except the published anchors, which carry their source.

    python -m benchmarks.datasets_table --artifacts artifacts --out artifacts/datasets
    python -m benchmarks.datasets_table --run banking77=CKPT:BUNDLE --run hwu64=CKPT --out table

``--artifacts DIR`` takes every ``DIR/<name>/checkpoint`` (with ``DIR/<name>/bundle`` when present);
``--run NAME=CHECKPOINT[:BUNDLE]`` names them one by one. Writes ``OUT.json`` (kind ``datasets``,
with the run record: ``results_doc.py`` pages it) and ``OUT.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import LrslError

# Published test accuracies the product is compared with (see each data set's SOURCE.md).
ANCHORS = {
    "banking77": {"name": "fine-tuned BERT-base", "accuracy": 0.9308},
    "hwu64": {"name": "DialoGLUE best", "accuracy": 0.9303},
}
# Issue 16's targets, checked per data set (fractions; seconds).
TARGETS = {"lrsl_gain_min": 0.010, "bundle_gap_min": -0.003, "training_seconds_max": 3600.0}
BUNDLE_ACCURACY_MIN = {"banking77": 0.931}
REPORT_KEYS = ("n", "accuracy_classifier", "accuracy_lrsl", "n_hard", "hard_share", "fixed", "broken")


class TableError(LrslError):
    """A missing or malformed input; the message names the file and the key."""


def _get(d: dict, path: str, source: Path):
    cur = d
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise TableError(f"{source}: no {path!r} (expected what `python -m train`/`export` write)")
        cur = cur[key]
    return cur


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise TableError(f"{path}: not found") from e
    except json.JSONDecodeError as e:
        raise TableError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e


def _report(d: dict, path: str, source: Path) -> dict:
    rep = _get(d, path, source)
    return {k: _get(rep, k, source) for k in REPORT_KEYS} | {
        "hard_accuracy_classifier": rep.get("hard_accuracy_classifier"),
        "hard_accuracy_lrsl": rep.get("hard_accuracy_lrsl"),
    }


def dataset_row(name: str, checkpoint: Path, bundle: Path | None) -> dict:
    """Every figure of one data set, from its checkpoint and (optionally) its bundle."""
    mpath = checkpoint / "metrics.json"
    m = _read_json(mpath)
    labels = _get(_read_json(checkpoint / "lrsl.json"), "labels", checkpoint / "lrsl.json")
    split = "test" if "test" in _get(m, "results", mpath) else "dev"
    row = {
        "dataset": name,
        "checkpoint": str(checkpoint),
        "split": split,
        "classes": len(labels),
        "rows": _get(m, "rows", mpath),
        "anchor": ANCHORS.get(name),
        "pytorch": _report(m, f"results.{split}", mpath),
        "threshold": _get(m, "threshold", mpath),
        "fusion": _get(m, "fusion", mpath),
        "zero_shot": {
            when: _get(m, f"embedder_zero_shot.{when}.{split}", mpath) for when in ("before", "after")
        },
        "training_seconds": _get(m, "seconds.total", mpath),
        "bundle": None,
    }
    if bundle is not None:
        bpath = bundle / "manifest.json"
        b = _read_json(bpath)
        row["bundle"] = {
            "path": str(bundle),
            "precision": _get(b, "precision", bpath),
            "preset": b.get("preset"),
            "report": _report(b, f"metrics.bundle.{split}", bpath),
            "fusion": _get(b, "fusion", bpath),
            "export_seconds": sum(_get(b, "metrics.timings_s", bpath).values()),
        }
    return row


def targets(row: dict) -> dict[str, bool | None]:
    """Which of issue 16's targets a data set meets (None: not measurable without a bundle).

    The thresholds are ``TARGETS`` (LRSL gain over the classifier, bundle gap to PyTorch, training
    time) and ``BUNDLE_ACCURACY_MIN`` (per data set), defined once at the top of this module.
    """
    pt, b = row["pytorch"], row["bundle"]
    out = {
        "lrsl_gain_1pt": pt["accuracy_lrsl"] - pt["accuracy_classifier"] >= TARGETS["lrsl_gain_min"] - 1e-12,
        "bundle_within_0.3pt": None
        if b is None
        else b["report"]["accuracy_lrsl"] - pt["accuracy_lrsl"] >= TARGETS["bundle_gap_min"] - 1e-12,
        "training_60min": row["training_seconds"] <= TARGETS["training_seconds_max"],
    }
    if row["dataset"] in BUNDLE_ACCURACY_MIN:
        floor = BUNDLE_ACCURACY_MIN[row["dataset"]]
        out[f"bundle_lrsl_{100 * floor:g}"] = None if b is None else b["report"]["accuracy_lrsl"] >= floor
    return out


def find_runs(artifacts: Path) -> list[tuple[str, Path, Path | None]]:
    """(name, checkpoint, bundle or None) for every ``artifacts/<name>/checkpoint/metrics.json``."""
    runs = []
    for ckpt in sorted(artifacts.glob("*/checkpoint")):
        if (ckpt / "metrics.json").is_file():
            bundle = ckpt.parent / "bundle"
            runs.append((ckpt.parent.name, ckpt, bundle if (bundle / "manifest.json").is_file() else None))
    if not runs:
        raise TableError(f"{artifacts}: no <name>/checkpoint/metrics.json; build one with `make bundle`")
    return runs


def parse_run(spec: str) -> tuple[str, Path, Path | None]:
    """``NAME=CHECKPOINT[:BUNDLE]`` -> (name, checkpoint, bundle).

    >>> parse_run("hwu64=a/ckpt:a/bundle")
    ('hwu64', PosixPath('a/ckpt'), PosixPath('a/bundle'))
    """
    name, sep, paths = spec.partition("=")
    if not sep or not name or not paths:
        raise TableError(f"--run {spec!r}: expected NAME=CHECKPOINT[:BUNDLE]")
    ckpt, _, bundle = paths.partition(":")
    return name, Path(ckpt), Path(bundle) if bundle else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _pts(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{100 * (a - b):+.2f} pt"


def _variants(row: dict) -> list[tuple[str, dict]]:
    out = [("PyTorch", row["pytorch"])]
    if row["bundle"]:
        b = row["bundle"]
        out.append((f"{b['precision']}{' ' + b['preset'] if b['preset'] else ''} bundle", b["report"]))
    return out


def markdown(rows: list[dict]) -> str:
    """Three tables: accuracy, hard subset, embedder and cost."""
    lines = [
        "| data set | classes | split (n) | model | classifier | LRSL | LRSL − classifier | published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        anchor = f"{r['anchor']['name']} {_pct(r['anchor']['accuracy'])}" if r["anchor"] else "—"
        for label, rep in _variants(r):
            lines.append(
                f"| {r['dataset']} | {r['classes']} | {r['split']} ({rep['n']}) | {label} | "
                f"{_pct(rep['accuracy_classifier'])} | {_pct(rep['accuracy_lrsl'])} | "
                f"{_pts(rep['accuracy_lrsl'], rep['accuracy_classifier'])} | {anchor} |"
            )
    lines += [
        "",
        "| data set | model | hard share | hard: classifier | hard: LRSL | fixed | broken |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for label, rep in _variants(r):
            lines.append(
                f"| {r['dataset']} | {label} | {_pct(rep['hard_share'])} ({rep['n_hard']}) | "
                f"{_pct(rep['hard_accuracy_classifier'])} | {_pct(rep['hard_accuracy_lrsl'])} | "
                f"{rep['fixed']} | {rep['broken']} |"
            )
    lines += [
        "",
        "| data set | embedder zero-shot before → after | bundle − PyTorch (LRSL) | training | export | "
        "fusion (bundle) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r["bundle"]
        gap = _pts(b["report"]["accuracy_lrsl"], r["pytorch"]["accuracy_lrsl"]) if b else "n/a"
        fusion = b["fusion"] if b else r["fusion"]
        export = f"{b['export_seconds'] / 60:.1f} min" if b else "n/a"
        lines.append(
            f"| {r['dataset']} | {_pct(r['zero_shot']['before'])} → {_pct(r['zero_shot']['after'])} | {gap} | "
            f"{r['training_seconds'] / 60:.1f} min | {export} | "
            f"{fusion['rule']}:{fusion['p']}:{fusion['scope']} |"
        )
    lines += ["", "| data set | targets met (issue 16) |", "|---|---|"]
    for r in rows:
        met = ", ".join(
            f"{k}: {'n/a' if v is None else 'yes' if v else 'NO'}" for k, v in r["targets"].items()
        )
        lines.append(f"| {r['dataset']} | {met} |")
    return "\n".join(lines) + "\n"


def build_table(runs: list[tuple[str, Path, Path | None]]) -> dict:
    rows = [dataset_row(*run) for run in runs]
    for row in rows:
        row["targets"] = targets(row)
    return {"anchors": ANCHORS, "targets": TARGETS, "datasets": rows}


INTRO = (
    "# Accuracy by data set\n\n"
    "From each checkpoint's metrics.json and each bundle's manifest.json; published anchors from the "
    "data sets' SOURCE.md. Accuracies on the test split.\n\n"
)


def write(table: dict, out: Path, run: dict) -> tuple[Path, Path]:
    """``OUT.json`` (the table with its run record, for ``results_doc.py``) and ``OUT.md``."""
    js = out.with_suffix(".json")
    write_result(js, table, INTRO + markdown(table["datasets"]), kind="datasets",
                 title="Accuracy by data set", run=run)  # fmt: skip
    return js, out.with_suffix(".md")


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.datasets_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", help="folder of <name>/checkpoint[/..bundle] (e.g. artifacts)")
    p.add_argument("--run", action="append", default=[], metavar="NAME=CHECKPOINT[:BUNDLE]")
    p.add_argument("--out", required=True, help="output path without extension; writes OUT.json and OUT.md")
    a = p.parse_args(argv)
    run = script_record(__file__, argv)
    runs = [parse_run(s) for s in a.run] + (find_runs(Path(a.artifacts)) if a.artifacts else [])
    if not runs:
        raise TableError("nothing to tabulate: give --artifacts DIR or --run NAME=CHECKPOINT[:BUNDLE]")
    table = build_table(runs)
    for path in write(table, Path(a.out), run):
        print(path)
    sys.stdout.write(markdown(table["datasets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
