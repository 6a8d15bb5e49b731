"""Where a result came from: the command, when it ran, the machine, the versions, the git commit.

A result JSON carries this record under ``"run"`` so that ``python -m benchmarks.results_doc`` can
write the dated results page without anything typed by hand. The entry scripts of ``benchmarks/`` add
it themselves::

    run = script_record(__file__, argv)     # when the run starts (argv: main's, None for sys.argv)
    ...
    write_result(out, result, markdown, kind="serve", title="HTTP serving", run=run)

``write_result`` writes the JSON in the shape ``results_doc.py`` pages and the markdown beside it
(``latency.py``, ``accuracy.py`` and ``int8_variants.py`` set ``result["run"] = finish_record(run)``
in their own JSON instead).

Programs that are not benchmarks (``python -m train``, ``python -m export``) write their own JSON
(``metrics.json``, ``manifest.json``) and know nothing of the machine's int8 flags; they run under
``python -m benchmarks.run_record``, which calls :func:`run_and_record`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.lib.machine import cpu_info, versions
from lrsl_rt.errors import LrslError

ROOT = Path(__file__).resolve().parents[2]


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_commit(cwd: Path = ROOT) -> str | None:
    """Short commit of the checkout, with ``+dirty`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except OSError:
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def script_command(argv: list[str]) -> str:
    """The command line of a running entry script as a user would type it from the checkout:
    ``python -m benchmarks.NAME`` for a script of the checkout, else ``python PATH``.

    >>> script_command([str(ROOT / "benchmarks" / "latency.py"), "--out", "a b.json"])
    "python -m benchmarks.latency --out 'a b.json'"
    """
    script = Path(argv[0]).resolve()
    if script.suffix == ".py" and script.is_relative_to(ROOT):
        module = ".".join(script.relative_to(ROOT).with_suffix("").parts)
        return shlex.join(["python", "-m", module, *argv[1:]])
    return shlex.join(["python", str(script), *argv[1:]])


def run_record(argv: list[str] | None = None, *, command: str | None = None) -> dict:
    """The record of this process's run (``argv`` defaults to ``sys.argv``); call it when the run starts."""
    return {
        "command": command or script_command(list(sys.argv if argv is None else argv)),
        "started_at": utc_now(),
        "git_commit": git_commit(),
        "machine": {"cpu": cpu_info(), "versions": versions()},
    }


def script_record(script: str | Path, argv: list[str] | None = None) -> dict:
    """The record of a script's run with ``argv`` (the arguments its ``main(argv)`` got; None: this
    process's), so a ``main`` called from a test names its own arguments, not the test runner's."""
    return run_record([str(script), *(sys.argv[1:] if argv is None else argv)])


def finish_record(record: dict, exit_code: int | None = None) -> dict:
    """The record with the run's end time and wall time (whole seconds); call it when the result is written."""
    end = utc_now()
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    wall = datetime.strptime(end, fmt) - datetime.strptime(record["started_at"], fmt)
    record.update(finished_at=end, wall_s=wall.total_seconds())
    if exit_code is not None:
        record["exit_code"] = exit_code
    return record


def write_result(
    out: str | Path | None,
    result: dict,
    markdown: str,
    *,
    kind: str,
    title: str,
    run: dict,
    exit_code: int = 0,
    markdown_out: str | Path | None = None,
) -> dict | None:
    """Write a benchmark's result JSON in the shape ``results_doc.py`` pages (``kind``, ``title``,
    ``markdown``, ``run``) and its markdown to ``markdown_out`` (default: beside it, ``out`` with
    ``.md``); returns the document. Without ``out`` only the markdown is written (when
    ``markdown_out`` names a file) and None is returned, for scripts whose JSON is optional.

    The markdown opens with the command that produced it, so the file is readable on its own.
    """
    if out is None:
        if markdown_out is not None:
            write_markdown(markdown_out, markdown, run)
        return None
    out = Path(out)
    doc = {"kind": kind, "title": title, **result, "markdown": markdown, "run": finish_record(run, exit_code)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    write_markdown(out.with_suffix(".md") if markdown_out is None else markdown_out, markdown, run)
    return doc


def write_markdown(path: str | Path, markdown: str, run: dict) -> Path:
    """``markdown`` in ``path``, opening with the command of ``run``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"Command: `{run['command']}`\n\n{markdown.strip()}\n", encoding="utf-8")
    return path


class CommandNotRun(LrslError):
    """The command given to :func:`run_and_record` could not be started (exit status 127, as a shell's)."""

    exit_code = 127


def run_and_record(cmd: list[str], out: Path) -> int:
    """Run ``cmd`` (output passes through), then write its record to ``out``; the command's exit status.
    A command that cannot be started is recorded with exit status 127, then raises :class:`CommandNotRun`."""
    record = run_record(command=shlex.join(cmd))
    error = None
    try:
        code = subprocess.run(cmd).returncode
    except OSError as e:
        error, code = e, 127
    finish_record(record, code)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": record}, indent=2) + "\n", encoding="utf-8")
    if error is not None:
        raise CommandNotRun(f"cannot run {cmd[0]!r}: {error}") from error
    return code
