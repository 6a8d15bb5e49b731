"""Start-up figures: ``import lrsl_rt`` in fresh interpreters and a cold ``lrsl-rt predict`` process.

Each figure is the median (with min-max) of ``runs`` fresh processes, wall time measured from just
before the process is started until it exits. The OS file cache is warm after the first run, so
"cold" means a new process, not a cold disk. The interpreter's own start-up (``python -c pass``) is
measured the same way, to show what part of the wall time is Python itself.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmarks.lib.common import ROOT, bench_env, median_range

COLD_TEXT = "I still have not received my new card"
IMPORTS = (("import_lrsl_rt", "import lrsl_rt"), ("import_reranker", "from lrsl_rt import Reranker"))
_SNIPPET = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"


def timed_process(cmd: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds, stdout) of a process that must succeed."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return wall, proc.stdout


def cli_command() -> tuple[list[str], str]:
    """The ``lrsl-rt`` entry point beside this interpreter when installed, else ``python -m lrsl_rt``."""
    exe = Path(sys.executable).with_name("lrsl-rt")
    if exe.is_file():
        return [str(exe)], "lrsl-rt"
    return [sys.executable, "-m", "lrsl_rt"], "python -m lrsl_rt"


def startup(bundle: str, threads: int, runs: int) -> dict:
    env = bench_env(threads)
    py = [sys.executable, "-c"]
    out = {
        "runs": runs,
        "bare_interpreter_wall_s": median_range([timed_process([*py, "pass"], env)[0] for _ in range(runs)]),
    }
    for key, stmt in IMPORTS:
        samples = [timed_process([*py, _SNIPPET.format(stmt)], env) for _ in range(runs)]
        out[key] = {
            "statement": stmt,
            "in_process_s": median_range([float(s[1].strip().splitlines()[-1]) for s in samples]),
            "process_wall_s": median_range([s[0] for s in samples]),
        }
    cli, shown = cli_command()
    argv = ["predict", "--bundle", str(bundle), "--threads", str(threads), COLD_TEXT]
    out["cold_predict"] = {
        "command": f"{shown} {' '.join(argv[:-1])} {COLD_TEXT!r}",
        "wall_s": median_range([timed_process([*cli, *argv], env)[0] for _ in range(runs)]),
    }
    return out
