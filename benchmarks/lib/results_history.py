"""The JSON history behind ``docs/results/``: every run of every question, one JSONL file per page.

A result answers one question (its ``kind``: latency, frontier, open-intent, serve...) about one data
set (its ``subject``: ``banking77``, ``hwu64``, or none for a result over several). The pair names
its page, ``<kind>-<subject>.md`` (``latency-banking77.md``; ``datasets.md`` without a subject), and
its history, ``history/<kind>-<subject>.jsonl``: one line per run, holding the result JSON as it was
written, the file it came from, its sha256 and where it ran (the run record, resolved when the run
was added). Runs are unique by sha256 and kept in start order, so adding the same runs again leaves
the file byte for byte as it was; the page is rendered from the newest line.

The subject comes from the result itself when it names one (``"dataset"``), else from the one data
set named in its file's path, else in its command (``artifacts/hwu64-l3/...``: hwu64); a result that
names two data sets (a pooled table) has none. Shortcut: the data sets are those of
``train.data.NAMED``; a result about another data set gets a page without a subject unless it says
``"dataset"``.

>>> page_stem("open-intent", "hwu64"), page_stem("datasets", None)
('open-intent-hwu64', 'datasets')
>>> subject_of({}, "artifacts/hwu64-l3/frontier.json", None)
'hwu64'
>>> subject_of({}, "artifacts/gate-measures.json", "--levers artifacts/banking77/l.json artifacts/hwu64/l.json")
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from train.data import NAMED

HISTORY_DIR = "history"
# Records of how a checkpoint or bundle was made stay beside it (CKPT/metrics.json, BUNDLE/manifest.json,
# their .run.json): they are not pages.
NOT_PAGED = ("training", "export")


def slug(text: str) -> str:
    """Lower-case words joined by hyphens: ``quant_presets`` -> ``quant-presets``."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower())) or "result"


def page_stem(kind: str, subject: str | None) -> str:
    return f"{slug(kind)}-{subject}" if subject else slug(kind)


def datasets_named(text: str) -> set[str]:
    """The named data sets a path or command mentions (``banking77-open`` counts as banking77)."""
    return {name for name in NAMED if re.search(rf"(?<![a-z0-9]){name}(?![0-9])", text.lower())}


def subject_of(doc: dict, source: str, command: str | None) -> str | None:
    if isinstance(doc.get("dataset"), str) and doc["dataset"].strip():
        return slug(doc["dataset"])
    for text in (source, command or ""):
        found = datasets_named(text)
        if found:
            return found.pop() if len(found) == 1 else None
    return None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry(kind: str, doc: dict, source: str, digest: str, run: dict) -> dict:
    """One history line: the page it belongs to, where the result came from, its run and the JSON itself."""
    subject = subject_of(doc, source, run.get("command"))
    return {"page": page_stem(kind, subject), "kind": kind, "subject": subject, "source": source,
            "sha256": digest, "run": run, "result": doc}  # fmt: skip


def history_path(out: Path, stem: str) -> Path:
    return out / HISTORY_DIR / f"{stem}.jsonl"


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def add_runs(out: Path, new: list[dict]) -> dict[str, list[dict]]:
    """Add ``new`` entries to their pages' history files; {page stem: every entry, oldest first} of the
    pages that have a history file under ``out`` (those of earlier runs included)."""
    by_page: dict[str, list[dict]] = {}
    for path in sorted((out / HISTORY_DIR).glob("*.jsonl")):
        by_page[path.stem] = read_history(path)
    changed = set()
    for e in new:
        runs = by_page.setdefault(e["page"], [])
        if all(r["sha256"] != e["sha256"] for r in runs):
            runs.append(e)
            changed.add(e["page"])
    for stem in changed:
        runs = sorted(by_page[stem], key=lambda r: (r["run"]["started_at"], r["sha256"]))
        by_page[stem] = runs
        path = history_path(out, stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in runs), encoding="utf-8")
    return by_page


def newest(runs: list[dict]) -> dict:
    """The entry with the latest start (history files are kept in start order)."""
    return max(runs, key=lambda r: (r["run"]["started_at"], r["sha256"]))
