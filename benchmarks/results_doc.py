"""``docs/results/``: one current page per question and data set, from the newest run of its JSON.

    python -m benchmarks.results_doc [PATH ...] [--out docs/results] [--readme README.md]   (make results)

Each PATH is a result JSON or a folder searched for them (default ``artifacts``; hidden folders such
as ``.bench_cache`` are skipped). Every result found joins the JSON history of its page
(``history/<kind>-<data set>.jsonl``, :mod:`benchmarks.lib.results_history`), and every page with a
history is rendered again from its newest run (``latency-banking77.md``,
:mod:`benchmarks.lib.results_page`): the command that produced it, when, the machine and its int8 CPU
flags, the library versions, the git commit, and the tables (``results_render.py`` says which JSON
shapes it knows). ``README.md`` of the folder indexes the pages; with ``--readme``, the README's
results block is filled from ``readme.json`` (:mod:`benchmarks.lib.results_readme`).

Where a run's facts come from, first found wins: the JSON's own ``"run"`` record (``run_record.py``;
the benchmark scripts write it), a sidecar ``X.run.json`` beside ``X.json`` or ``DIR.run.json``
beside the folder that holds it, then what the JSON itself says (``machine``, ``versions``,
``created_at``). A run whose machine is recorded nowhere is not paged (the log says so): run it
through ``python -m benchmarks.run_record``. Training and export records (``metrics.json``,
``manifest.json``) stay beside their checkpoint and bundle. A current page from before the history
existed, which a newer run replaces, moves to ``history/`` under its run's date. Nothing is typed by
hand, and the same history gives the same pages byte for byte.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.lib import results_history as H
from benchmarks.lib import results_page as P
from benchmarks.lib import results_readme as RM
from benchmarks.lib import results_render as R
from benchmarks.lib.common import ROOT
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import LrslError

MAX_BYTES = 50 * 2**20  # larger JSON files are model data, not results
SUMMARY = "readme.json"  # the README's figures and their pages (benchmarks.lib.results_readme)


class ResultsError(LrslError):
    """A result that cannot be rendered (exit status 1)."""

    exit_code = 1


class NotAResult(ResultsError):
    """A path named on the command line that is missing or not a result JSON (exit status 2)."""

    exit_code = 2


# ---- finding the results -------------------------------------------------------------------------
def find_results(paths: list[Path], log) -> list[tuple[Path, str, dict]]:
    """(path, kind, JSON) of every result under ``paths``, sorted by path; folders skip non-results."""
    found = []
    for root in paths:
        if root.is_file():
            doc = read_json(root)
            kind = R.kind_of(doc)
            if kind is None:
                raise NotAResult(
                    f"{root}: not a result JSON this script knows (see benchmarks/lib/results_render.py)"
                )
            found.append((root, kind, doc))
        elif root.is_dir():
            found += scan(root, log)
        else:
            raise NotAResult(f"{root}: no such file or folder")
    return sorted(found, key=lambda t: str(t[0]))


def scan(root: Path, log) -> list[tuple[Path, str, dict]]:
    found, other = [], 0
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.name.endswith(".run.json"):
            continue
        if path.stat().st_size > MAX_BYTES:
            other += 1
            continue
        try:
            doc = read_json(path)
        except ResultsError as e:
            log(f"skipped {e}")
            continue
        kind = R.kind_of(doc)
        if kind is None:
            other += 1
        else:
            found.append((path, kind, doc))
    log(f"{root}: {len(found)} result JSON file(s); {other} other JSON file(s) (configs, tokenizers) skipped")
    return found


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotAResult(f"{path}: cannot read it as JSON ({e})") from e


# ---- where a result came from ----------------------------------------------------------------------
def provenance(path: Path, doc: dict) -> dict:
    """command, started_at, wall_s, exit_code, git_commit, cpu, versions and date of a result."""
    run = doc.get("run") if isinstance(doc.get("run"), dict) else None
    for sidecar in (
        path.with_name(path.stem + ".run.json"),
        path.parent.with_name(path.parent.name + ".run.json"),
    ):
        if run is None and sidecar.is_file():
            side = read_json(sidecar)
            run = side.get("run") if isinstance(side, dict) else None
    run = run or {}
    machine = run.get("machine") or doc.get("machine") or {}
    versions = machine.get("versions") or doc.get("versions") or doc.get("created_by") or {}
    started = run.get("started_at") or doc.get("created_at")
    if started:
        date_note = "run record" if run.get("started_at") else "the file's created_at"
    else:
        mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        started, date_note = mtime.strftime("%Y-%m-%dT%H:%M:%SZ"), "file modification time: no run record"
    return {
        "command": run.get("command"),
        "started_at": started,
        "date_note": date_note,
        "wall_s": run.get("wall_s"),
        "exit_code": run.get("exit_code"),
        "git_commit": run.get("git_commit"),
        "cpu": machine.get("cpu"),
        "versions": versions if isinstance(versions, dict) else {},
    }


# ---- the history and the pages -------------------------------------------------------------------
def runs_found(results: list[tuple[Path, str, dict]], log) -> list[dict]:
    """History entries of the results that make pages; the others are named on the log."""
    entries = []
    for path, kind, doc in results:
        if kind in H.NOT_PAGED:
            continue
        prov = provenance(path, doc)
        if not prov["cpu"]:
            log(
                f"skipped {path}: its machine is not recorded (run it through python -m benchmarks.run_record)"
            )
            continue
        entries.append(H.entry(kind, doc, source_name(path), H.sha256(path), prov))
    skipped = sum(kind in H.NOT_PAGED for _, kind, _ in results)
    if skipped:
        log(f"{skipped} training/export record(s) left beside their checkpoint or bundle, not paged")
    return entries


def retire(page: Path, runs: list[dict], out: Path, log) -> None:
    """Move a current page whose run is in no history (one from before it) to ``history/``."""
    run = P.page_run(page) if page.is_file() else None
    if run is None or any(r["run"]["started_at"] == run for r in runs):
        return
    moved = out / H.HISTORY_DIR / f"{run[:10]}-{page.stem}-{run[11:19].replace(':', '')}.md"
    moved.parent.mkdir(parents=True, exist_ok=True)
    page.rename(moved)
    log(f"moved {page} (a run from before the JSON history) to {moved}")


def source_name(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def generate(paths: list[Path], out: Path, readme: Path | None = None, log=print) -> list[Path]:
    """Add the results under ``paths`` to the history, write every page that has one, the index,
    readme.json and (``readme``) the README's block; the pages written.

    A result that cannot be rendered is named on the log and the others are still written; then
    ``ResultsError`` says how many failed."""
    results = find_results(paths, log)
    out.mkdir(parents=True, exist_ok=True)
    by_page = H.add_runs(out, runs_found(results, log))
    written, failed = [], []
    for stem, runs in sorted(by_page.items()):
        entry = H.newest(runs)
        try:
            text = P.render_page(entry, len(runs) - 1)
        except P.PageError as e:
            failed.append(str(e))
            log(f"Error: {e}")
            continue
        page = out / f"{stem}.md"
        retire(page, runs, out, log)
        page.write_text(text, encoding="utf-8")
        written.append(page)
        log(f"wrote {page} from {entry['source']} ({len(runs)} run(s) in its history)")
    summary = write_summary(out, by_page, log)
    log(f"wrote {P.write_index(out, RM.backs(summary))}")
    if readme is not None:
        write_readme_block(readme, summary)
        log(f"wrote the results block of {readme}")
    if failed:
        raise ResultsError(f"{len(failed)} result(s) could not be rendered; the others were written")
    return written


def write_summary(out: Path, by_page: dict, log) -> dict:
    """docs/results/readme.json, rewritten from the histories (kept as it is where they hold nothing)."""
    path = out / SUMMARY
    old = read_json(path) if path.is_file() else {}
    try:
        summary = RM.summarize(
            by_page, old, sorted(p.name for p in out.glob("*.md") if p.name != "README.md")
        )
    except (KeyError, TypeError, IndexError) as e:
        raise ResultsError(f"a result behind the README's figures lacks the field {e}") from e
    if any(summary.get(k) for k in ("headline", "pytorch", "out_of_scope", "peers")):
        path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        log(f"wrote {path}")
    return summary


def write_readme_block(readme: Path, summary: dict) -> None:
    if "headline" not in summary:
        raise ResultsError(f"{readme}: no headline figures yet (a {RM.HEADLINE} run or readme.json's)")
    try:
        text = RM.replace_block(readme.read_text(encoding="utf-8"), RM.render_block(summary), str(readme))
    except (OSError, ValueError) as e:
        raise NotAResult(str(e)) from e
    readme.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.results_doc", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="result JSON files or folders (default artifacts, when it exists)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "results",
        help="folder of the pages (default docs/results)",
    )
    p.add_argument(
        "--readme",
        type=Path,
        help="fill this README's results block (<!-- results:begin ... --> ... <!-- results:end -->) "
        "from readme.json (make results: README.md)",
    )
    a = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    paths = a.paths or [Path("artifacts")]
    if not a.paths and not paths[0].exists():
        log("no artifacts folder here: the pages are written from their JSON history alone")
        paths = []
    generate(paths, a.out, a.readme, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
