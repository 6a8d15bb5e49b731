"""The bundle carried to every node through Ray's object store, checked there against its manifest.

A node of a cluster need not have the bundle directory: the driver reads ``manifest.json`` and the
files it names (nothing else of the directory), after checking their sizes and sha256 against the
manifest, and puts them into the object store once (:func:`ship_bundle`). The first actor on a node
fetches them and unpacks them into the node's own Ray session directory, under
``lrsl-rt-bundles/<sha256 of manifest.json>/`` (:func:`local_copy`): written into a temporary
directory and renamed, so two actors of one node never see half a copy, and reused by the node's
later actors, including those Ray restarts there. Every actor, before loading, checks the copy's
manifest digest and the size and sha256 of every file against the manifest, and names its node in
the error when one differs.

The shipped object lives as long as the driver holds the job's plan (Ray counts the references),
so an actor restarted on another node mid-job can still fetch it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import ray

from ..errors import BundleError
from ..manifest import MANIFEST_NAME, read_manifest, resolve_file

COPIES = "lrsl-rt-bundles"


@dataclass(frozen=True)
class ShippedBundle:
    """A bundle in the object store: ``files`` maps each relative path to its bytes."""

    name: str  # the driver's path, for messages
    digest: str  # sha256 of manifest.json: the name of a node's copy
    files: ray.ObjectRef


def ship_bundle(bundle_dir: str | os.PathLike) -> ShippedBundle:
    """Check the bundle's files against its manifest and put them into the object store."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    paths = {e.path: resolve_file(bundle_dir, role, e, verify=True) for role, e in manifest.files.items()}
    blobs = {MANIFEST_NAME: (bundle_dir / MANIFEST_NAME).read_bytes()}
    blobs |= {name: p.read_bytes() for name, p in paths.items()}
    digest = hashlib.sha256(blobs[MANIFEST_NAME]).hexdigest()
    return ShippedBundle(str(bundle_dir), digest, ray.put(blobs))


def local_copy(shipped: ShippedBundle) -> Path:
    """This node's checked copy of ``shipped`` (unpacked on the first call on the node)."""
    root = node_directory() / COPIES / shipped.digest
    if not (root / MANIFEST_NAME).is_file():
        _unpack(shipped, root)
    check_copy(root, shipped)
    return root


def check_copy(root: Path, shipped: ShippedBundle) -> None:
    """Raise a BundleError naming this node unless ``root`` holds exactly the shipped bundle."""
    where = f"node {node_name()}: the copy of bundle {shipped.name} in {root}"
    digest = hashlib.sha256((root / MANIFEST_NAME).read_bytes()).hexdigest()
    if digest != shipped.digest:
        raise BundleError(f"{where}: {MANIFEST_NAME} sha256 {digest[:12]}... is not the driver's "
                          f"{shipped.digest[:12]}...")  # fmt: skip
    manifest = read_manifest(root)
    for role, entry in manifest.files.items():
        try:
            resolve_file(root, role, entry, verify=True)
        except BundleError as e:
            raise BundleError(f"{where}: {e}") from e


def _unpack(shipped: ShippedBundle, root: Path) -> None:
    blobs = ray.get(shipped.files)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.{uuid.uuid4().hex[:8]}"
    for name, data in blobs.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    try:
        os.rename(tmp, root)
    except OSError:  # another actor of this node renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)


def node_directory() -> Path:
    """The Ray session directory of the node this process runs on (each node has its own, also
    several nodes on one machine); the system temporary directory outside a Ray worker."""
    try:
        from ray._private.worker import global_worker

        return Path(global_worker.node.get_session_dir_path())
    except (AttributeError, ImportError):
        return Path(tempfile.gettempdir())


def node_name() -> str:
    """``IP/node-id-prefix`` of the node this process runs on, as the job's messages name nodes."""
    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
