"""Writing a bundle directory atomically, and its manifest.

A bundle is built in a hidden staging directory next to the target (same filesystem), e.g.
``artifacts/.bundle.partial-4242-x1y2/``, and renamed to ``artifacts/bundle/`` only after the last
check passed. So the target is either absent, the previous bundle, or the complete new one -- never a
half-written bundle. A failed or interrupted export removes its staging directory; one killed hard
(SIGKILL, power loss) leaves it behind, and the next export to the same target removes it (its
process id is in the name and no longer runs).

Target rules (:func:`check_target`): a missing path or an empty directory is fine; an existing
bundle (a directory with ``manifest.json``) is replaced only with ``force``; anything else is refused,
``force`` or not -- an export never deletes a directory it did not make.
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from lrsl_rt.fusion import Fusion
from lrsl_rt.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    TokenizerSettings,
    file_entry,
    write_manifest,
)

from .errors import ExportError

_PARTIAL = ".partial-"
_OLD = ".old-"


def check_target(out: Path, force: bool) -> None:
    """Refuse a target the export must not replace (see the module docstring)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"{out}: exists and is not a directory; choose another output path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / MANIFEST_NAME).is_file():
        raise ExportError(
            f"{out}: exists and is not an lrsl-rt bundle (no {MANIFEST_NAME}); refusing to replace it"
        )
    if not force:
        raise ExportError(f"{out}: a bundle already exists there; pass --force (force=True) to replace it")


@contextmanager
def staged_bundle(out: Path, force: bool) -> Iterator[Path]:
    """A fresh staging directory; renamed to ``out`` when the block succeeds, removed when it raises."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    stage = out.parent / f".{out.name}{_PARTIAL}{os.getpid()}-{secrets.token_hex(3)}"
    stage.mkdir()
    try:
        yield stage
        commit(stage, out, force)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def commit(stage: Path, out: Path, force: bool) -> None:
    """Move the finished staging directory to ``out``, replacing an existing bundle when allowed.

    Replacing takes two renames (old bundle aside, new one in); a crash between them leaves no
    bundle at ``out`` and the old one as ``.<name>.old-<pid>-...``, removed by the next export.
    """
    check_target(out, force)
    if out.is_dir() and any(out.iterdir()):  # an existing bundle, force given: move it aside first
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
    """Remove staging/old directories of earlier exports to ``out`` whose process is gone."""
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


# ---- contents ------------------------------------------------------------------------------
def save_label_embeddings(path: Path, emb: np.ndarray) -> Path:
    """float32 (L, d) with unit rows, plain .npy (no pickle)."""
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1)
    if not np.all(np.abs(norms - 1.0) < 1e-3):
        raise ExportError(
            f"label embeddings must have unit rows, got norms {norms.min():.4f}..{norms.max():.4f}"
        )
    np.save(path, np.ascontiguousarray(emb), allow_pickle=False)
    return path


def placeholder_label_embeddings(n_labels: int, dim: int) -> np.ndarray:
    """Unit rows (one-hot) standing in until the exported embedder has embedded the label texts."""
    emb = np.zeros((n_labels, dim), dtype=np.float32)
    emb[np.arange(n_labels), np.arange(n_labels) % dim] = 1.0
    return emb


def created_by() -> dict:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    import lrsl_rt

    return {
        "lrsl_rt": getattr(lrsl_rt, "__version__", None) or version("lrsl-rt"),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "sentence_transformers": version("sentence-transformers"),
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
        "python": platform.python_version(),
    }


def write_bundle_manifest(
    stage: Path,
    *,
    labels: list[str],
    label_texts: list[str],
    k: int,
    threshold: float,
    fusion: Fusion,
    tokenizer: TokenizerSettings,
    precision: str,
    preset: str | None,
    embedding_dim: int,
    files: dict[str, str],
    calibration: dict,
    metrics: dict,
    created_at: str | None = None,
) -> Manifest:
    """Write ``manifest.json`` for the files now in ``stage`` (sizes and sha256 read from disk).

    The manifest is rebuilt through :meth:`Manifest.from_dict`, so a bundle that the runtime would
    refuse is never written.
    """
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        created_by=created_by(),
        created_at=created_at or utc_now(),
        labels=tuple(labels),
        label_texts=tuple(label_texts),
        k=k,
        threshold=float(threshold),
        fusion=fusion,
        tokenizer=tokenizer,
        precision=precision,
        preset=preset,
        embedding_dim=embedding_dim,
        files={role: file_entry(stage, name) for role, name in files.items()},
        calibration=calibration,
        metrics=metrics,
    )
    checked = Manifest.from_dict(manifest.to_dict(), where=f"{stage / MANIFEST_NAME} (being written)")
    write_manifest(stage, checked)
    return checked


def plain(obj):
    """``obj`` with numpy scalars and arrays turned into JSON types (for manifest.metrics).

    >>> plain({"a": np.float32(0.5), "b": [np.int64(2), np.bool_(True)]})
    {'a': 0.5, 'b': [2, True]}
    """
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def utc_now() -> str:
    """UTC time as ISO 8601 with an explicit offset, e.g. 2025-01-31T12:00:00+00:00 (fromisoformat reads it)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
