"""Give a benchmark's result JSON and its markdown a run record, so ``results_doc.py`` can page it.

``serve.py``, ``scaleout.py``, ``soak.py``, ``quant_presets.py``, ``levers.py``, ``profile_ops.py`` and
``datasets_table.py`` write their table as markdown beside their JSON, without the ``"run"`` record
that ``latency.py`` carries. This wraps one of them into the generic shape ``results_render.py``
reads: ``{"kind", "markdown", "result", "run"}``, where ``run`` names the command that produced the
result (given with ``--command``), the file's modification time as its end, and the machine and
versions of this process -- so wrap on the machine that ran the benchmark::

    python benchmarks/wrap_result.py --kind serve --json artifacts/banking77/serve.json \\
        --markdown artifacts/banking77/serve.md --command "python benchmarks/serve.py ..." \\
        --out artifacts/pages/serve.json
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_record import run_record  # noqa: E402


def wrap(kind: str, result_json: Path, markdown: Path, command: str) -> dict:
    """The generic page document of one result (see the module docstring)."""
    run = run_record(command=command)
    finished = datetime.fromtimestamp(result_json.stat().st_mtime, timezone.utc)
    run.update(started_at=finished.strftime("%Y-%m-%dT%H:%M:%SZ"), finished_at=run.pop("started_at"))
    run["note"] = "wrapped after the run: started_at is when the result file was written"
    return {
        "kind": kind,
        "markdown": markdown.read_text(encoding="utf-8"),
        "result": json.loads(result_json.read_text(encoding="utf-8")),
        "run": run,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/wrap_result.py", description=__doc__.splitlines()[0])
    p.add_argument("--kind", required=True, help="what the result is, e.g. serve, scaleout, soak")
    p.add_argument("--json", required=True, type=Path, help="the benchmark's result JSON")
    p.add_argument("--markdown", required=True, type=Path, help="the benchmark's markdown table")
    p.add_argument("--command", required=True, help="the command that produced the result")
    p.add_argument("--out", required=True, type=Path, help="where to write the page document")
    a = p.parse_args(argv)
    for path in (a.json, a.markdown):
        if not path.is_file():
            print(f"Error: {path}: not found", file=sys.stderr)
            return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(wrap(a.kind, a.json, a.markdown, a.command), indent=2) + "\n")
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
