"""The bundle manifest: one strict, versioned schema, validated in one place.

A bundle is a directory::

    manifest.json
    classifier_<precision>[_<preset>].onnx   input_ids, attention_mask[, token_type_ids] -> logits (n, L)
    embedder_<precision>[_<preset>].onnx     same inputs -> unit-length sentence embeddings (n, d)
    tokenizer.json                           a `tokenizers` file
    label_embeddings.npy                     float32 (L, d), unit rows, loaded with allow_pickle=False

``manifest.json`` has exactly the keys of :class:`Manifest`; an unknown key, a
missing key, a wrong type or a value out of range (:func:`check_ranges`: a threshold that is not a
finite non-negative number, k outside [2, labels], a max length outside [2, MAX_SEQUENCE_LENGTH], a
negative pad id, an empty label, a sha256 that is not 64 hex digits, a recorded batch size that is not
a positive integer, ...) is refused with the file, the key, what was expected and what was found.
Whether the graphs accept ``max_length`` tokens is checked when they load (:mod:`lrsl_rt.bundle`). File entries must name plain files
inside the bundle directory (no ``..``, no absolute path, no symlink out) and carry their size and
sha256, checked at load time. A manifest of a newer format version is refused: upgrade lrsl-rt.

Format version 2 adds three optional settings, all decided on one notion of "sure"
(:mod:`lrsl_rt.gate`): ``measure`` (the gate's sureness measure; ``variance`` is the paper's),
``exits`` (early exits: the classifier as a chain of stage graphs ``classifier_stage_1..N`` in place of
``classifier``, and where each exit lets sure rows leave) and ``abstain`` (the out-of-scope decision:
its score, threshold and fallback label; the ``knn`` score adds the file ``train_embeddings``). A
bundle that uses none of them is written as version 1, byte for byte what earlier versions wrote,
and a version 1 manifest may not carry them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from .errors import BundleError
from .fusion import Fusion
from .gate import DEFAULT_MEASURE, MEASURES

FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
FILE_ROLES = ("classifier", "embedder", "tokenizer", "label_embeddings")
# The optional roles of version 2: the stage graphs of a classifier with exits, the kNN score's file.
STAGE_ROLE = "classifier_stage_{}"
TRAIN_EMBEDDINGS_ROLE = "train_embeddings"
# Scores the abstain decision can use (:mod:`lrsl_rt.abstain` computes them); each is a sureness.
ABSTAIN_SCORES = (
    "max_prob",
    "margin",
    "variance",
    "entropy",
    "energy",
    "max_cos",
    "knn",
    "fused",
    "gated_cos",
)
PRECISIONS = ("fp32", "fp16", "int8")
MAX_SEQUENCE_LENGTH = 1 << 16  # beyond any encoder's position table; the graphs are probed at load
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class TokenizerSettings:
    """How texts become model inputs: truncation to ``max_length`` tokens (special tokens included),
    padding with ``pad_id``/``pad_token`` to the longest text of a batch."""

    max_length: int
    pad_id: int
    pad_token: str
    model_input_names: tuple[str, ...]


@dataclass(frozen=True)
class ExitPoint:
    """An early exit after ``layer`` encoder layers: a row leaves there when its sureness (the
    manifest's ``measure`` of the exit head's logits) is above ``threshold``."""

    layer: int
    threshold: float


@dataclass(frozen=True)
class Abstain:
    """The out-of-scope decision: a row whose ``score`` is at or below ``threshold`` gets ``fallback_label``.

    ``chosen_by`` says how the threshold was set (``inscope_drop:0.01``, ``recall:0.8`` or ``fixed``);
    ``dev`` holds the dev figures it was chosen on (AUROC, out-of-scope recall, in-scope accuracy).
    """

    score: str
    threshold: float
    fallback_label: str
    chosen_by: str
    dev: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    format_version: int
    created_by: dict  # tool and library versions of the export run (free-form strings)
    created_at: str
    labels: tuple[str, ...]
    label_texts: tuple[str, ...]
    k: int
    threshold: float  # sigma2_mis measured on the exported classifier
    fusion: Fusion
    tokenizer: TokenizerSettings
    precision: str
    preset: str | None
    embedding_dim: int
    files: dict  # role -> FileEntry
    calibration: dict = field(default_factory=dict)  # {"pytorch": {...}, "exported": {...}}
    metrics: dict = field(default_factory=dict)  # parity and accuracy measured by export
    # ---- format version 2 (all optional) ----
    measure: str = DEFAULT_MEASURE  # the sureness measure of the gate and the exits (lrsl_rt.gate)
    classifier_layers: int | None = None  # encoder layers of the classifier (needed with exits)
    exits: tuple[ExitPoint, ...] = ()
    abstain: Abstain | None = None

    @property
    def stage_roles(self) -> tuple[str, ...]:
        """File roles of the classifier's stage graphs, in order; empty without exits."""
        return tuple(STAGE_ROLE.format(i + 1) for i in range(len(self.exits) + 1)) if self.exits else ()

    @property
    def uses_version_2(self) -> bool:
        return self.measure != DEFAULT_MEASURE or bool(self.exits) or self.abstain is not None

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON object; a bundle without version 2 settings is written as version 1."""
        d = asdict(self)
        d["labels"], d["label_texts"] = list(self.labels), list(self.label_texts)
        d["fusion"] = self.fusion.to_dict()
        d["tokenizer"]["model_input_names"] = list(self.tokenizer.model_input_names)
        d["exits"] = list(d["exits"])
        d["format_version"] = 2 if self.uses_version_2 else 1
        if not self.uses_version_2:
            for key in _V2_KEYS:
                del d[key]
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: object, where: str = MANIFEST_NAME) -> Manifest:
        """Validate a parsed manifest; every problem names the key and what was expected."""
        _check_keys(d, cls, where)
        version = d["format_version"]
        _check_type(version, int, "format_version", where)
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{where}: format_version {version} is newer than this lrsl-rt understands "
                f"({FORMAT_VERSION}); upgrade lrsl-rt"
            )
        if version < 1:
            raise BundleError(f"{where}: format_version must be >= 1, got {version}")
        if version == 1 and set(d) & set(_V2_KEYS):
            raise BundleError(
                f"{where}: key(s) {sorted(set(d) & set(_V2_KEYS))} need format_version 2, got 1"
            )
        v2 = _version_2_settings(d, where)
        for key, typ in (("created_by", dict), ("created_at", str), ("k", int), ("precision", str)):
            _check_type(d[key], typ, key, where)
        _check_type(d["threshold"], (int, float), "threshold", where)
        _check_type(d["embedding_dim"], int, "embedding_dim", where)
        labels = _str_list(d["labels"], "labels", where)
        label_texts = _str_list(d["label_texts"], "label_texts", where)
        if len(labels) < 2:
            raise BundleError(f"{where}: 'labels' needs at least 2 labels, got {len(labels)}")
        if len(set(labels)) != len(labels):
            raise BundleError(f"{where}: 'labels' has duplicates")
        if len(label_texts) != len(labels):
            raise BundleError(
                f"{where}: 'label_texts' has {len(label_texts)} entries, expected one per label ({len(labels)})"
            )
        if d["k"] < 2 or d["k"] > len(labels):
            raise BundleError(f"{where}: 'k' must be in [2, {len(labels)}], got {d['k']}")
        if d["precision"] not in PRECISIONS:
            raise BundleError(f"{where}: 'precision' must be one of {PRECISIONS}, got {d['precision']!r}")
        if d["preset"] is not None:
            _check_type(d["preset"], str, "preset", where)
        fusion_d = d["fusion"]
        _check_keys(fusion_d, Fusion, f"{where}: fusion")
        try:
            fusion = Fusion(**fusion_d)
        except ValueError as e:
            raise BundleError(f"{where}: fusion: {e}") from e
        tok_d = d["tokenizer"]
        _check_keys(tok_d, TokenizerSettings, f"{where}: tokenizer")
        for key, typ in (("max_length", int), ("pad_id", int), ("pad_token", str)):
            _check_type(tok_d[key], typ, f"tokenizer.{key}", where)
        names = tuple(_str_list(tok_d["model_input_names"], "tokenizer.model_input_names", where))
        if not {"input_ids", "attention_mask"} <= set(names):
            raise BundleError(
                f"{where}: tokenizer.model_input_names must include input_ids and attention_mask, got {list(names)}"
            )
        tokenizer = TokenizerSettings(**{**tok_d, "model_input_names": names})
        files_d = d["files"]
        _check_type(files_d, dict, "files", where)
        roles = _file_roles(v2)
        if set(files_d) != set(roles):
            raise BundleError(
                f"{where}: 'files' must have exactly the roles {list(roles)}, got {sorted(files_d)}"
            )
        files = {}
        for role, entry in files_d.items():
            _check_keys(entry, FileEntry, f"{where}: files.{role}")
            _check_type(entry["path"], str, f"files.{role}.path", where)
            _check_type(entry["size"], int, f"files.{role}.size", where)
            _check_type(entry["sha256"], str, f"files.{role}.sha256", where)
            files[role] = FileEntry(**entry)
        for key in ("calibration", "metrics"):
            _check_type(d[key], dict, key, where)
        check_ranges(d, where)
        _check_v2_ranges(v2, d["labels"], where)
        return cls(
            format_version=version,
            created_by=d["created_by"],
            created_at=d["created_at"],
            labels=tuple(labels),
            label_texts=tuple(label_texts),
            k=d["k"],
            threshold=float(d["threshold"]),
            fusion=fusion,
            tokenizer=tokenizer,
            precision=d["precision"],
            preset=d["preset"],
            embedding_dim=d["embedding_dim"],
            files=files,
            calibration=d["calibration"],
            metrics=d["metrics"],
            **v2,
        )


_V2_KEYS = ("measure", "classifier_layers", "exits", "abstain")


def _version_2_settings(d: dict, where: str) -> dict:
    """measure, classifier_layers, exits and abstain of a parsed manifest, types checked."""
    measure = d.get("measure", DEFAULT_MEASURE)
    _check_type(measure, str, "measure", where)
    if measure not in MEASURES:
        _out_of_range("measure", f"one of {list(MEASURES)}", measure, where)
    layers = d.get("classifier_layers")
    if layers is not None:
        _check_type(layers, int, "classifier_layers", where)
    exits_d = d.get("exits", [])
    if not isinstance(exits_d, list):
        raise BundleError(f"{where}: 'exits' must be a list of objects")
    exits = []
    for i, e in enumerate(exits_d):
        _check_keys(e, ExitPoint, f"{where}: exits[{i}]")
        _check_type(e["layer"], int, f"exits[{i}].layer", where)
        _check_type(e["threshold"], (int, float), f"exits[{i}].threshold", where)
        exits.append(ExitPoint(e["layer"], float(e["threshold"])))
    abstain = None
    if d.get("abstain") is not None:
        a = d["abstain"]
        _check_keys(a, Abstain, f"{where}: abstain")
        for key, typ in (("score", str), ("fallback_label", str), ("chosen_by", str), ("dev", dict)):
            _check_type(a.get(key, {}), typ, f"abstain.{key}", where)
        _check_type(a["threshold"], (int, float), "abstain.threshold", where)
        abstain = Abstain(**{**a, "threshold": float(a["threshold"])})
    return {"measure": measure, "classifier_layers": layers, "exits": tuple(exits), "abstain": abstain}


def _file_roles(v2: dict) -> tuple[str, ...]:
    """The file roles a manifest with these version 2 settings must list."""
    roles = list(FILE_ROLES)
    if v2["exits"]:
        roles.remove("classifier")
        roles += [STAGE_ROLE.format(i + 1) for i in range(len(v2["exits"]) + 1)]
    if v2["abstain"] is not None and v2["abstain"].score == "knn":
        roles.append(TRAIN_EMBEDDINGS_ROLE)
    return tuple(roles)


def _check_v2_ranges(v2: dict, labels: list[str], where: str) -> None:
    layers, exits = v2["classifier_layers"], v2["exits"]
    if layers is not None and layers < 1:
        _out_of_range("classifier_layers", "an integer >= 1", layers, where)
    if exits and layers is None:
        raise BundleError(f"{where}: 'exits' needs 'classifier_layers' (the classifier's depth)")
    previous = 0
    for i, e in enumerate(exits):
        if not previous < e.layer < layers:
            _out_of_range(
                f"exits[{i}].layer", f"an integer in ({previous}, {layers}), increasing", e.layer, where
            )
        if not _finite(e.threshold):
            _out_of_range(f"exits[{i}].threshold", "a finite number", e.threshold, where)
        previous = e.layer
    a = v2["abstain"]
    if a is None:
        return
    if a.score not in ABSTAIN_SCORES:
        _out_of_range("abstain.score", f"one of {list(ABSTAIN_SCORES)}", a.score, where)
    if not _finite(a.threshold):
        _out_of_range("abstain.threshold", "a finite number", a.threshold, where)
    if not a.fallback_label.strip() or a.fallback_label in labels:
        _out_of_range(
            "abstain.fallback_label",
            "a non-empty string that is not one of the labels",
            a.fallback_label,
            where,
        )


def check_ranges(d: dict, where: str) -> None:
    """Values of the right type but outside what the runtime can use (types were checked before)."""
    negative_ok = d.get("measure") == "entropy"  # minus an entropy: the one measure that is <= 0
    if not _finite(d["threshold"]) or (d["threshold"] < 0 and not negative_ok):
        _out_of_range(
            "threshold",
            "a finite number >= 0 (a sureness: variance, margin, max_prob)",
            d["threshold"],
            where,
        )
    if d["embedding_dim"] < 1:
        _out_of_range("embedding_dim", "an integer >= 1", d["embedding_dim"], where)
    for key in ("labels", "label_texts"):
        bad = [i for i, x in enumerate(d[key]) if not x.strip() or not _valid_unicode(x)]
        if bad:
            _out_of_range(f"{key}[{bad[0]}]", "a non-empty string of valid Unicode", d[key][bad[0]], where)
    tok = d["tokenizer"]
    if not 2 <= tok["max_length"] <= MAX_SEQUENCE_LENGTH:
        _out_of_range(
            "tokenizer.max_length", f"an integer in [2, {MAX_SEQUENCE_LENGTH}]", tok["max_length"], where
        )
    if tok["pad_id"] < 0:
        _out_of_range("tokenizer.pad_id", "an integer >= 0", tok["pad_id"], where)
    names = tok["model_input_names"]
    if not set(names) <= set(MODEL_INPUTS) or len(set(names)) != len(names):
        _out_of_range(
            "tokenizer.model_input_names", f"distinct names among {list(MODEL_INPUTS)}", names, where
        )
    for role, entry in d["files"].items():
        if entry["size"] < 0:
            _out_of_range(f"files.{role}.size", "an integer >= 0", entry["size"], where)
        if not _SHA256.fullmatch(entry["sha256"]):
            _out_of_range(f"files.{role}.sha256", "64 lowercase hex digits", entry["sha256"], where)
    settings = d["metrics"].get("export_settings", {})
    if not isinstance(settings, dict):
        _out_of_range("metrics.export_settings", "an object", settings, where)
    batch = settings.get("batch_size")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        _out_of_range("metrics.export_settings.batch_size", "a positive integer", batch, where)


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape
        return False
    return True


def _finite(x: float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer too large for a float
        return False


def _out_of_range(key: str, expected: str, got: object, where: str) -> None:
    raise BundleError(f"{where}: '{key}' must be {expected}, got {got!r:.60}")


def _check_keys(d: object, cls, where: str) -> None:
    if not isinstance(d, dict):
        raise BundleError(f"{where}: expected a JSON object, got {type(d).__name__}")
    allowed = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise BundleError(f"{where}: unknown key(s) {unknown}; expected only {sorted(allowed)}")
    missing = sorted(required - set(d))
    if missing:
        raise BundleError(f"{where}: missing key(s) {missing}")


def _check_type(value: object, typ, key: str, where: str) -> None:
    ok = isinstance(value, typ) and not (isinstance(value, bool) and typ in (int, (int, float)))
    if not ok:
        expected = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise BundleError(f"{where}: '{key}' must be {expected}, got {type(value).__name__} {value!r:.60}")


def _str_list(value: object, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise BundleError(f"{where}: '{key}' must be a list of strings")
    return value


# ---- files ---------------------------------------------------------------------------------
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
