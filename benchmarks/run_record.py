"""Run a command that is not a benchmark and write its run record (command, times, machine, versions,
git commit, exit status) beside its output, for ``python -m benchmarks.results_doc``::

    python -m benchmarks.run_record --out artifacts/banking77/checkpoint.run.json -- \\
        python -m train --dataset banking77 --out artifacts/banking77/checkpoint

The record is written whatever the exit status; the command's own exit status is returned, so
``make`` stops where the command failed. The record itself: :mod:`benchmarks.lib.record`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.lib.record import run_and_record
from lrsl_rt.command import CommandParser, run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = CommandParser(prog="python -m benchmarks.run_record", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="FILE.run.json", help="where to write the record")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    a = p.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        p.error("no command given: put it after --")
    return run_and_record(cmd, Path(a.out))


if __name__ == "__main__":
    sys.exit(main())
