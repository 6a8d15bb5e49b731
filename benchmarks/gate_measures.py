"""The gate's sureness measure, chosen on the pooled dev evidence of several data sets.

    python -m benchmarks.gate_measures artifacts/banking77/levers/levers.json \\
        artifacts/hwu64/levers/levers.json --out artifacts/gate-measures.json

Reads the ``levers`` results of each data set (``python -m benchmarks.levers``), whose section
``shipped_gates`` compares every measure of :mod:`lrsl_rt.gate` with the paper's top-k variance, each
calibrated as ``python -m train --measure`` calibrates it (threshold: the measure's mean over the dev
mistakes), by McNemar's z on the same samples. One data set's dev split is small (a z near 2 is
noise-sized), so the z of the data sets are pooled by Stouffer's method, ``sum(z) / sqrt(n)``. The
rule, fixed before looking: a measure replaces ``variance`` as the default when its pooled **dev**
z is at least ``MIN_Z`` (2) and it is the highest; test is reported beside it, never used to
choose. The section ``hardness_gates`` (every measure at the variance gate's hard share) is pooled
the same way, for reference.

Writes ``OUT`` (kind ``gate_measures``, with the run record) and the markdown beside it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from benchmarks.lib.record import script_record, write_result
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import LrslError
from lrsl_rt.gate import DEFAULT_MEASURE
from lrsl_rt.tuning import MIN_Z

SECTIONS = {
    "shipped_gates": "each measure as `--measure` calibrates it (its own threshold)",
    "hardness_gates": "each measure at the variance gate's dev hard share",
}


def stouffer(zs: list[float]) -> float:
    """Pooled z of independent z scores.

    >>> round(stouffer([1.67, 1.34]), 3)
    2.128
    """
    return sum(zs) / math.sqrt(len(zs)) if zs else 0.0


def read_levers(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise LrslError(f"{path}: not found (run `python -m benchmarks.levers` first)") from e
    except json.JSONDecodeError as e:
        raise LrslError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e
    if doc.get("kind") != "levers" or "shipped_gates" not in doc.get("results", doc):
        raise LrslError(f"{path}: not a levers result with a 'shipped_gates' section (rerun the levers)")
    return doc.get("results", doc)


def pool(levers: dict[str, dict], section: str) -> dict:
    """Per measure: each data set's dev/test z, hard share and LRSL accuracy, and the pooled z."""
    names = list(next(iter(levers.values()))[section]["rows"]["dev"])
    out = {}
    for m in names:
        per = {}
        for ds, res in levers.items():
            sec = res[section]
            per[ds] = {
                s: {
                    "z": sec["mcnemar"][s][m]["z"],
                    "hard_share": sec["rows"][s][m]["hard_share"],
                    "accuracy_lrsl": sec["rows"][s][m]["accuracy_lrsl"],
                }
                for s in ("dev", "test")
            }
        out[m] = {
            "datasets": per,
            "pooled_z": {s: stouffer([per[ds][s]["z"] for ds in per]) for s in ("dev", "test")},
        }
    return out


def choose(pooled: dict, incumbent: str) -> str:
    """The measure with the highest pooled dev z if it reaches MIN_Z, else the incumbent."""
    best = max(pooled, key=lambda m: pooled[m]["pooled_z"]["dev"])
    return best if best != incumbent and pooled[best]["pooled_z"]["dev"] >= MIN_Z else incumbent


def markdown(res: dict) -> str:
    names = list(res["datasets"])
    lines = [
        "## The gate's sureness measure, pooled over data sets",
        "",
        f"Data sets: {', '.join(names)}. McNemar z against `{res['incumbent']}` on the same samples; pooled "
        f"by Stouffer (sum / sqrt({len(names)})). Rule: the highest pooled dev z replaces the default when "
        f"it is at least {MIN_Z:g}; test is shown, not used to choose.",
    ]
    for section, title in SECTIONS.items():
        rows = res[section]
        head = ["measure"]
        for ds in names:
            head += [f"{ds} dev z", f"{ds} test z", f"{ds} hard dev/test"]
        head += ["pooled dev z", "pooled test z"]
        lines += ["", f"### {title[0].upper()}{title[1:]}", "", "| " + " | ".join(head) + " |"]
        lines.append("|" + "---|" * len(head))
        for m, r in rows.items():
            cells = [m]
            for ds in names:
                d = r["datasets"][ds]
                cells += [
                    f"{d['dev']['z']:+.2f}",
                    f"{d['test']['z']:+.2f}",
                    f"{100 * d['dev']['hard_share']:.1f} / {100 * d['test']['hard_share']:.1f} %",
                ]
            cells += [f"{r['pooled_z']['dev']:+.2f}", f"{r['pooled_z']['test']:+.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Chosen default (as shipped): **{res['chosen']}**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.gate_measures", description=__doc__.split("\n\n")[0])
    p.add_argument("levers", nargs="+", help="levers.json of each data set (python -m benchmarks.levers)")
    p.add_argument("--out", required=True, help="result JSON (the markdown goes beside it)")
    a = p.parse_args(argv)
    run = script_record(__file__, argv)
    levers = {}
    for path in map(Path, a.levers):
        res = read_levers(path)
        name = Path(res.get("checkpoint", str(path))).parent.name or str(path)
        if name in levers:
            raise LrslError(f"{path}: a second result for {name!r}")
        levers[name] = res
    res = {
        "incumbent": DEFAULT_MEASURE,
        "datasets": {n: r.get("checkpoint") for n, r in levers.items()},
        **{section: pool(levers, section) for section in SECTIONS},
    }
    res["chosen"] = choose(res["shipped_gates"], DEFAULT_MEASURE)
    md = markdown(res)
    write_result(a.out, res, md, kind="gate_measures", title="The gate's measure, pooled", run=run)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
