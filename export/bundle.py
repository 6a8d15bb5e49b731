"""Writing a bundle directory atomically, and its manifest.

The bundle is staged beside its target and renamed into place at the end by
:func:`lrsl_rt.staging.staged_directory` (shared with training's checkpoint), so the target is either
absent, the previous bundle, or the complete new one. An existing bundle (a directory with
``manifest.json``) is replaced only with ``force``; any other non-empty directory is refused.
"""

from __future__ import annotations

import platform
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from lrsl_rt import staging
from lrsl_rt.fusion import Fusion
from lrsl_rt.gate import DEFAULT_MEASURE
from lrsl_rt.manifest import (
    EMBEDDER_TOKENIZER_ROLE,
    FORMAT_VERSION,
    MANIFEST_NAME,
    Abstain,
    Manifest,
    TokenizerSettings,
    file_entry,
    write_manifest,
)
from lrsl_rt.staging import Artifact

from .errors import ExportError
from .kinds import tokenizer_settings
from .settings import Settings

BUNDLE = Artifact("bundle", "an lrsl-rt bundle", MANIFEST_NAME, ExportError)
LABEL_EMBEDDINGS = "label_embeddings.npy"
TOKENIZER = "tokenizer.json"
EMBEDDER_TOKENIZER = "embedder_tokenizer.json"  # the embedder's own, beside a decoder-only classifier


def check_target(out: Path, force: bool) -> None:
    """Refuse a target the export must not replace (see :mod:`lrsl_rt.staging`)."""
    staging.check_target(out, BUNDLE, force)


def staged_bundle(out: Path, force: bool):
    """A fresh staging directory; renamed to ``out`` when the block succeeds, removed when it raises."""
    return staging.staged_directory(out, BUNDLE, force)


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
    measure: str = DEFAULT_MEASURE,
    classifier_layers: int | None = None,
    exits: tuple = (),
    abstain: Abstain | None = None,
    classifier_kind: str = "encoder",
    embedder_tokenizer: TokenizerSettings | None = None,
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
        measure=measure,
        classifier_layers=classifier_layers,
        exits=tuple(exits),
        abstain=abstain,
        classifier_kind=classifier_kind,
        embedder_tokenizer=embedder_tokenizer,
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


def pytorch_calibration(info) -> dict:
    """The calibration of lrsl.json, as the manifest records it."""
    return {"threshold": info.threshold, "fusion": info.fusion_rule.to_dict()}


# ---- the bundle being built ---------------------------------------------------------------------
class StagedBundle:
    """The staging directory's manifest and loading, with what every manifest of this export shares."""

    def __init__(
        self, stage: Path, ckpt, s: Settings, files: dict, embedding_dim: int, toks, input_names, plan=None
    ):
        """``toks``: each model role's HF tokenizer, ``input_names``: each role's graph inputs."""
        self.stage, self.info, self.s, self.files, self.plan = stage, ckpt.info, s, files, plan
        self.tokenizer_file, self.embedding_dim, self.created_at = (
            ckpt.tokenizer_file,
            embedding_dim,
            utc_now(),
        )
        self.kind, self.embedder_tokenizer_file = ckpt.classifier_kind, ckpt.embedder_tokenizer_file
        self.tokenizer, self.embedder_tokenizer = tokenizer_settings(ckpt, toks, input_names)
        if self.embedder_tokenizer is not None:
            self.files[EMBEDDER_TOKENIZER_ROLE] = EMBEDDER_TOKENIZER

    def write_manifest(
        self,
        threshold: float,
        fusion: Fusion,
        calibration: dict,
        metrics: dict,
        exits: tuple = (),
        abstain=None,
    ) -> None:
        info, plan = self.info, self.plan
        write_bundle_manifest(
            self.stage,
            labels=info.labels,
            label_texts=info.label_texts,
            k=info.k,
            threshold=threshold,
            fusion=fusion,
            tokenizer=self.tokenizer,
            precision=self.s.precision,
            preset=self.s.preset,
            embedding_dim=self.embedding_dim,
            files=self.files,
            calibration=calibration,
            metrics=metrics,
            created_at=self.created_at,
            measure=self.s.measure,
            classifier_layers=plan.depth if plan else None,
            exits=exits or (plan.closed() if plan else ()),
            abstain=abstain,
            classifier_kind=self.kind,
            embedder_tokenizer=self.embedder_tokenizer,
        )

    def load(self):
        from lrsl_rt import Reranker

        s = self.s
        return Reranker.from_bundle(
            self.stage, providers=s.providers, threads=s.threads, batch_size=s.batch_size
        )

    def first_load(self):
        """Copy the tokenizer, load the bundle with placeholder label embeddings and a provisional
        manifest (the PyTorch calibration), embed the label texts with the exported embedder, save
        them; returns a Reranker on those sessions with the real label embeddings."""
        info = self.info
        shutil.copyfile(self.tokenizer_file, self.stage / TOKENIZER)
        if self.embedder_tokenizer_file is not None:
            shutil.copyfile(self.embedder_tokenizer_file, self.stage / EMBEDDER_TOKENIZER)
        placeholder = placeholder_label_embeddings(len(info.labels), self.embedding_dim)
        save_label_embeddings(self.stage / LABEL_EMBEDDINGS, placeholder)
        self.write_manifest(info.threshold, info.fusion_rule, {"pytorch": pytorch_calibration(info)}, {})
        r = self.load()
        label_emb = save_label_embeddings(self.stage / LABEL_EMBEDDINGS, r.embed(list(info.label_texts)))
        return r.replace(label_embeddings=np.load(label_emb, allow_pickle=False))
