"""Loading the arrays and graphs of a bundle and checking them against its manifest.

:mod:`lrsl_rt.manifest` checks the manifest itself and each file's path, size and sha256; this module
checks what is inside the files, each failure a ``BundleError`` naming the file, what the manifest
expects and what was found:

- ``label_embeddings.npy``: loaded with ``allow_pickle=False``; float32, shape
  ``(len(labels), embedding_dim)``, finite, unit rows (within 1e-2);
- each ONNX graph: inputs among ``input_ids``, ``attention_mask``, ``token_type_ids``; a rank-2 output
  whose width, when the graph declares it, is ``len(labels)`` (classifier) or ``embedding_dim``
  (embedder); then one probe text is run, which checks the width of graphs with symbolic shapes and
  warms the session up. The embedder's probe output must have unit length.

A graph with several outputs is read at ``logits`` (classifier) or ``sentence_embedding`` /
``embeddings`` (embedder); a graph with one output is read at that output.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import BundleError
from .manifest import Manifest
from .session import OnnxSession
from .tokenize import INPUT_NAMES, BundleTokenizer

PROBE_TEXT = "label"
OUTPUTS = {"classifier": ("logits",), "embedder": ("sentence_embedding", "embeddings")}


def open_model(
    path: str | os.PathLike, role: str, manifest: Manifest, tokenizer: BundleTokenizer, **settings
) -> OnnxSession:
    """An ONNX Runtime session for the bundle's ``classifier`` or ``embedder``, checked by a probe run.

    ``settings`` go to :class:`~lrsl_rt.session.OnnxSession` (providers, threads, spinning, ...).
    """
    width = len(manifest.labels) if role == "classifier" else manifest.embedding_dim
    session = OnnxSession(path, output=OUTPUTS[role], **settings)
    check_graph(session, role, width, tokenizer([PROBE_TEXT]))
    return session


def load_label_embeddings(path: Path, manifest: Manifest) -> np.ndarray:
    """float32 (len(labels), embedding_dim) array with unit rows, loaded without pickle."""
    n_labels, dim = len(manifest.labels), manifest.embedding_dim
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays need pickle: refused
        raise BundleError(f"{path}: cannot load without pickle ({e}); expected a float32 .npy array") from e
    except OSError as e:
        raise BundleError(f"{path}: not a valid .npy file: {e}") from e
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
        raise BundleError(f"{path}: expected dtype float32, got {getattr(arr, 'dtype', type(arr).__name__)}")
    if arr.shape != (n_labels, dim):
        raise BundleError(
            f"{path}: expected shape ({n_labels}, {dim}) (labels, embedding_dim from the manifest), got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise BundleError(f"{path}: contains NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-2):
        raise BundleError(
            f"{path}: rows must have unit length, got norms from {norms.min():.4f} to {norms.max():.4f}"
        )
    return arr


def check_graph(session: OnnxSession, role: str, width: int, probe: dict) -> None:
    """The graph takes our inputs and returns (n, width); static shapes are read, then one probe run."""
    name = session.path
    unknown = [i for i in session.input_names if i not in INPUT_NAMES]
    if unknown or "input_ids" not in session.input_names:
        raise BundleError(
            f"{name}: {role} graph inputs must be among {list(INPUT_NAMES)} with input_ids, got {session.input_names}"
        )
    what = "len(labels)" if role == "classifier" else "embedding_dim"
    shape = session.output_shape()
    if len(shape) != 2:
        raise BundleError(
            f"{name}: {role} output {session.output!r} must have shape (batch, {width}), got {shape}"
        )
    if isinstance(shape[1], int) and shape[1] != width:
        raise BundleError(
            f"{name}: {role} output width is {shape[1]}, expected {width} ({what} in the manifest)"
        )
    y = np.asarray(session.run(probe))
    if y.shape != (1, width):
        raise BundleError(
            f"{name}: {role} output has shape {y.shape} for one text, expected (1, {width}) ({what} in the manifest)"
        )
    if not np.isfinite(y).all():
        raise BundleError(f"{name}: {role} output is not finite for a probe text")
    if role == "embedder" and abs(float(np.linalg.norm(y)) - 1.0) > 1e-2:
        raise BundleError(
            f"{name}: embedder must output unit-length embeddings, got norm {np.linalg.norm(y):.4f}"
        )
