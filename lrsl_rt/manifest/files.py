"""The manifest's files: each bundle file's size and sha256, and reading and writing ``manifest.json``.

File entries must name plain files inside the bundle directory (no ``..``, no absolute path, no
symlink out); :func:`resolve_file` checks that and, when asked, the size and sha256 recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import BundleError
from .schema import MANIFEST_NAME, FileEntry, Manifest


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(bundle_dir: str | os.PathLike, name: str) -> FileEntry:
    """Entry for a file already written into the bundle directory."""
    p = Path(bundle_dir) / name
    return FileEntry(path=name, size=p.stat().st_size, sha256=sha256_file(p))


def resolve_file(bundle_dir: Path, role: str, entry: FileEntry, verify: bool = True) -> Path:
    """Path of a bundle file after checking it stays inside the bundle and matches size and sha256."""
    rel = entry.path
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")) or ".." in Path(rel).parts:
        raise BundleError(
            f"{MANIFEST_NAME}: files.{role}.path {rel!r} must be a relative path inside the bundle"
        )
    root = bundle_dir.resolve()
    p = bundle_dir / rel
    if p.is_symlink() or not p.resolve().is_relative_to(root):
        raise BundleError(f"{p}: files.{role} must be a plain file inside the bundle, not a link out of it")
    if not p.is_file():
        raise BundleError(f"{p}: file for '{role}' named in {MANIFEST_NAME} is missing")
    if verify:
        size = p.stat().st_size
        if size != entry.size:
            raise BundleError(
                f"{p}: size {size} bytes, manifest expects {entry.size}; the bundle was modified"
            )
        digest = sha256_file(p)
        if digest != entry.sha256:
            raise BundleError(
                f"{p}: sha256 {digest[:12]}... does not match the manifest's {entry.sha256[:12]}...; the bundle was modified"
            )
    return p


def read_manifest(bundle_dir: str | os.PathLike) -> Manifest:
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle directory not found")
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(
            f"{path}: not found; is {bundle_dir} an lrsl-rt bundle (made by `python -m export`)?"
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: not valid UTF-8 JSON: {e}") from e
    return Manifest.from_dict(d, where=str(path))


def write_manifest(bundle_dir: str | os.PathLike, manifest: Manifest) -> Path:
    path = Path(bundle_dir) / MANIFEST_NAME
    path.write_text(manifest.dumps(), encoding="utf-8")
    return path
