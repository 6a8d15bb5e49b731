"""Writing a directory atomically: staged beside its target, renamed into place at the end.

Both artifacts of the project are directories written this way -- the export's bundle
(:mod:`export.bundle`) and training's checkpoint (:mod:`train.pipeline`). The directory is built in a
hidden staging directory next to the target (same filesystem), e.g.
``artifacts/.bundle.partial-4242-x1y2/``, and renamed to ``artifacts/bundle/`` only after the last
step passed. So the target is either absent, the previous artifact, or the complete new one --
never half-written. A failed or interrupted run removes its staging directory; one killed hard
(SIGKILL, power loss) leaves it behind, and the next run to the same target removes it (its process
id is in the name and no longer runs).

Target rules (:func:`check_target`): a missing path or an empty directory is fine; an existing
artifact of the same kind (a directory holding its ``marker`` file) is replaced only with ``force``;
anything else is refused, ``force`` or not -- a run never deletes a directory it did not make.
Only the standard library is used (the runtime stays light; training and export share this).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import LrslError

_PARTIAL = ".partial-"
_OLD = ".old-"


@dataclass(frozen=True)
class Artifact:
    """A kind of directory: ``name`` ("bundle"), ``long`` ("an lrsl-rt bundle"), the ``marker`` file
    that identifies one, and the ``error`` type raised for a target that must not be replaced."""

    name: str
    long: str
    marker: str
    error: type[LrslError] = LrslError


def check_target(out: Path, kind: Artifact, force: bool) -> None:
    """Refuse a target that must not be replaced (see the module docstring)."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise kind.error(f"{out}: exists and is not a directory; choose another output path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / kind.marker).is_file():
        raise kind.error(f"{out}: exists and is not {kind.long} (no {kind.marker}); refusing to replace it")
    if not force:
        raise kind.error(
            f"{out}: a {kind.name} already exists there; pass --force (force=True) to replace it"
        )


@contextmanager
def staged_directory(out: Path, kind: Artifact, force: bool) -> Iterator[Path]:
    """A fresh staging directory; renamed to ``out`` when the block succeeds, removed when it raises."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    stage = out.parent / f".{out.name}{_PARTIAL}{os.getpid()}-{secrets.token_hex(3)}"
    stage.mkdir()
    try:
        yield stage
        commit(stage, out, kind, force)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def commit(stage: Path, out: Path, kind: Artifact, force: bool) -> None:
    """Move the finished staging directory to ``out``, replacing an existing artifact when allowed.

    Replacing takes two renames (old artifact aside, new one in); a crash between them leaves nothing
    at ``out`` and the old one as ``.<name>.old-<pid>-...``, removed by the next run.
    """
    check_target(out, kind, force)
    if out.is_dir() and any(out.iterdir()):  # an existing artifact, force given: move it aside first
        old = out.parent / f".{out.name}{_OLD}{os.getpid()}-{secrets.token_hex(3)}"
        os.replace(out, old)
        try:
            os.replace(stage, out)
        except OSError:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.is_dir():
            out.rmdir()  # empty: os.replace onto it works on POSIX, not on Windows
        os.replace(stage, out)


def remove_stale(out: Path) -> None:
    """Remove staging/old directories of earlier runs to ``out`` whose process is gone."""
    prefixes = (f".{out.name}{_PARTIAL}", f".{out.name}{_OLD}")
    for p in out.parent.iterdir():
        if not p.name.startswith(prefixes) or p.is_symlink() or not p.is_dir():
            continue
        pid = p.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
