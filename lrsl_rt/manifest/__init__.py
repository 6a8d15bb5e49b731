"""The bundle manifest: one strict, versioned schema, validated in one place.

A bundle is a directory::

    manifest.json
    classifier_<precision>[_<preset>].onnx   input_ids, attention_mask[, token_type_ids] -> logits (n, L)
    embedder_<precision>[_<preset>].onnx     same inputs -> unit-length sentence embeddings (n, d)
    tokenizer.json                           a `tokenizers` file
    embedder_tokenizer.json                  the embedder's own, beside a decoder-only classifier (v3)
    label_embeddings.npy                     float32 (L, d), unit rows, loaded with allow_pickle=False

``manifest.json`` has exactly the keys of :class:`Manifest`; an unknown key, a
missing key, a wrong type or a value out of range (:func:`check_ranges`: a threshold that is not a
finite non-negative number, k outside [2, labels], a max length outside [2, MAX_SEQUENCE_LENGTH], a
negative pad id, an empty label, a sha256 that is not 64 hex digits, a recorded batch size that is not
a positive integer, ...) is refused with the file, the key, what was expected and what was found.
Whether the graphs accept ``max_length`` tokens is checked when they load (:mod:`lrsl_rt.bundle`). File entries must name plain files
inside the bundle directory (no ``..``, no absolute path, no symlink out) and carry their size and
sha256, checked at load time. A manifest of a newer format version is refused: upgrade lrsl-rt.

Three modules, each importable on its own, their names gathered here:

- :mod:`.schema`: the frozen dataclasses, ``to_dict``/``from_dict`` and the format version rules
  (version 2's optional ``measure``, ``exits`` and ``abstain``; version 3's ``classifier_kind`` and
  ``embedder_tokenizer``);
- :mod:`.checks`: keys, types and value ranges;
- :mod:`.files`: file entries (size, sha256, a path inside the bundle) and reading and writing
  ``manifest.json``.
"""

from __future__ import annotations

from ..defaults import PRECISIONS
from .checks import ABSTAIN_SCORES, CLASSIFIER_KINDS, MAX_SEQUENCE_LENGTH, MODEL_INPUTS, check_ranges
from .files import file_entry, read_manifest, resolve_file, sha256_file, write_manifest
from .schema import (
    EMBEDDER_TOKENIZER_ROLE,
    FEATURE_ROLES,
    FILE_ROLES,
    FORMAT_VERSION,
    MANIFEST_NAME,
    STAGE_ROLE,
    TRAIN_EMBEDDINGS_ROLE,
    Abstain,
    Cascade,
    ExitPoint,
    FileEntry,
    Manifest,
    TokenizerSettings,
)

__all__ = [
    "ABSTAIN_SCORES",
    "CLASSIFIER_KINDS",
    "EMBEDDER_TOKENIZER_ROLE",
    "FILE_ROLES",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_SEQUENCE_LENGTH",
    "MODEL_INPUTS",
    "PRECISIONS",
    "STAGE_ROLE",
    "TRAIN_EMBEDDINGS_ROLE",
    "FEATURE_ROLES",
    "Cascade",
    "Abstain",
    "ExitPoint",
    "FileEntry",
    "Manifest",
    "TokenizerSettings",
    "check_ranges",
    "file_entry",
    "read_manifest",
    "resolve_file",
    "sha256_file",
    "write_manifest",
]
