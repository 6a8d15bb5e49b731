"""The manifest's schema: its frozen dataclasses, their JSON form and the format version rules.

``manifest.json`` has exactly the keys of :class:`Manifest`; :meth:`Manifest.from_dict` checks the
keys and types of each section and builds the dataclasses, and :func:`lrsl_rt.manifest.checks.check_ranges`
the values (:mod:`lrsl_rt.manifest` describes the bundle and what is refused).

Format version 2 adds three optional settings, all decided on one notion of "sure"
(:mod:`lrsl_rt.gate`): ``measure`` (the gate's sureness measure; ``variance`` is the paper's),
``exits`` (early exits: the classifier as a chain of stage graphs ``classifier_stage_1..N`` in place of
``classifier``, and where each exit lets sure rows leave) and ``abstain`` (the out-of-scope decision:
its score, threshold and fallback label; the ``knn`` score adds the file ``train_embeddings``). A
bundle that uses none of them is written as version 1, byte for byte what earlier versions wrote,
and a version 1 manifest may not carry them.

Format version 3 adds two optional settings for decoder-only classifiers: ``classifier_kind``
(``encoder``, the default, or ``decoder``: the classifier graph reads the last real token of each
row) and ``embedder_tokenizer`` (the embedder's own tokenizer settings and the file role
``embedder_tokenizer`` when it does not share the classifier's tokenizer). Each tokenizer section's
``model_input_names`` are the inputs its graphs take, and the runtime feeds exactly those. A bundle
that uses neither is written as version 2 or 1, as before, and a manifest of an older version may
not carry them. A manifest of a newer format version is refused: upgrade lrsl-rt.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..defaults import DEFAULT_MEASURE, MEASURES, PRECISIONS
from ..errors import BundleError
from ..fusion import Fusion
from .checks import (
    CLASSIFIER_KINDS,
    check_keys,
    check_ranges,
    check_type,
    check_v2_ranges,
    out_of_range,
    str_list,
)

FORMAT_VERSION = 3
MANIFEST_NAME = "manifest.json"
FILE_ROLES = ("classifier", "embedder", "tokenizer", "label_embeddings")
# The optional roles of version 2: the stage graphs of a classifier with exits, the kNN score's file.
STAGE_ROLE = "classifier_stage_{}"
TRAIN_EMBEDDINGS_ROLE = "train_embeddings"
FEATURE_ROLES = ("feature_whitener", "feature_means")  # the mahalanobis score's files
# The optional role of version 3: the embedder's tokenizer when it is not the classifier's.
EMBEDDER_TOKENIZER_ROLE = "embedder_tokenizer"


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
class Cascade:
    """Rows whose classifier sureness (``measure`` of the logits) is above ``bound`` are in scope
    without the abstain score; only the others are scored (:mod:`lrsl_rt.abstain_step`)."""

    measure: str
    bound: float


@dataclass(frozen=True)
class Abstain:
    """The out-of-scope decision: a row whose ``score`` is at or below ``threshold`` gets ``fallback_label``.

    ``chosen_by`` says how the threshold was set (``inscope_drop:0.01``, ``recall:0.8`` or ``fixed``);
    ``dev`` holds the dev figures it was chosen on (AUROC, out-of-scope recall, in-scope accuracy);
    ``cascade`` (optional) the classifier bound above which a row is not scored.
    """

    score: str
    threshold: float
    fallback_label: str
    chosen_by: str
    dev: dict = field(default_factory=dict)
    cascade: Cascade | None = None


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
    # ---- format version 3 (all optional) ----
    classifier_kind: str = "encoder"  # "decoder": the classifier graph reads each row's last real token
    embedder_tokenizer: TokenizerSettings | None = None  # None: the embedder uses ``tokenizer``

    @property
    def stage_roles(self) -> tuple[str, ...]:
        """File roles of the classifier's stage graphs, in order; empty without exits."""
        return tuple(STAGE_ROLE.format(i + 1) for i in range(len(self.exits) + 1)) if self.exits else ()

    @property
    def uses_version_2(self) -> bool:
        return self.measure != DEFAULT_MEASURE or bool(self.exits) or self.abstain is not None

    @property
    def uses_version_3(self) -> bool:
        return self.classifier_kind != "encoder" or self.embedder_tokenizer is not None

    @property
    def embedder_tokenizer_settings(self) -> TokenizerSettings:
        """The embedder's tokenizer settings: its own, or the classifier's when they share one."""
        return self.embedder_tokenizer or self.tokenizer

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON object, written in the oldest format version that holds its settings."""
        d = asdict(self)
        d["labels"], d["label_texts"] = list(self.labels), list(self.label_texts)
        d["fusion"] = self.fusion.to_dict()
        for key in ("tokenizer", "embedder_tokenizer"):
            if d[key] is not None:
                d[key]["model_input_names"] = list(d[key]["model_input_names"])
        d["exits"] = list(d["exits"])
        if d.get("abstain") is not None and d["abstain"]["cascade"] is None:
            del d["abstain"]["cascade"]  # bundles without a cascade keep their manifest as it was
        d["format_version"] = 3 if self.uses_version_3 else 2 if self.uses_version_2 else 1
        dropped = (() if self.uses_version_3 else _V3_KEYS) + (
            () if self.uses_version_2 or self.uses_version_3 else _V2_KEYS
        )
        for key in dropped:
            del d[key]
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: object, where: str = MANIFEST_NAME) -> Manifest:
        """Validate a parsed manifest; every problem names the key and what was expected."""
        check_keys(d, cls, where)
        version = d["format_version"]
        check_type(version, int, "format_version", where)
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{where}: format_version {version} is newer than this lrsl-rt understands "
                f"({FORMAT_VERSION}); upgrade lrsl-rt"
            )
        if version < 1:
            raise BundleError(f"{where}: format_version must be >= 1, got {version}")
        for newer, keys in ((2, _V2_KEYS), (3, _V3_KEYS)):
            if version < newer and set(d) & set(keys):
                raise BundleError(
                    f"{where}: key(s) {sorted(set(d) & set(keys))} need format_version {newer}, got {version}"
                )
        v2 = {**_version_2_settings(d, where), **_version_3_settings(d, where)}
        for key, typ in (("created_by", dict), ("created_at", str), ("k", int), ("precision", str)):
            check_type(d[key], typ, key, where)
        check_type(d["threshold"], (int, float), "threshold", where)
        check_type(d["embedding_dim"], int, "embedding_dim", where)
        labels = str_list(d["labels"], "labels", where)
        label_texts = str_list(d["label_texts"], "label_texts", where)
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
            check_type(d["preset"], str, "preset", where)
        fusion_d = d["fusion"]
        check_keys(fusion_d, Fusion, f"{where}: fusion")
        try:
            fusion = Fusion(**fusion_d)
        except ValueError as e:
            raise BundleError(f"{where}: fusion: {e}") from e
        tokenizer = _tokenizer_settings(d["tokenizer"], "tokenizer", where)
        files_d = d["files"]
        check_type(files_d, dict, "files", where)
        roles = _file_roles(v2)
        if set(files_d) != set(roles):
            raise BundleError(
                f"{where}: 'files' must have exactly the roles {list(roles)}, got {sorted(files_d)}"
            )
        files = {}
        for role, entry in files_d.items():
            check_keys(entry, FileEntry, f"{where}: files.{role}")
            check_type(entry["path"], str, f"files.{role}.path", where)
            check_type(entry["size"], int, f"files.{role}.size", where)
            check_type(entry["sha256"], str, f"files.{role}.sha256", where)
            files[role] = FileEntry(**entry)
        for key in ("calibration", "metrics"):
            check_type(d[key], dict, key, where)
        check_ranges(d, where)
        check_v2_ranges(v2, d["labels"], where)
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
_V3_KEYS = ("classifier_kind", "embedder_tokenizer")


def _tokenizer_settings(tok_d: object, key: str, where: str) -> TokenizerSettings:
    """A tokenizer section (``tokenizer`` or ``embedder_tokenizer``), keys and types checked."""
    check_keys(tok_d, TokenizerSettings, f"{where}: {key}")
    for name, typ in (("max_length", int), ("pad_id", int), ("pad_token", str)):
        check_type(tok_d[name], typ, f"{key}.{name}", where)
    names = tuple(str_list(tok_d["model_input_names"], f"{key}.model_input_names", where))
    if not {"input_ids", "attention_mask"} <= set(names):
        raise BundleError(
            f"{where}: {key}.model_input_names must include input_ids and attention_mask, got {list(names)}"
        )
    return TokenizerSettings(**{**tok_d, "model_input_names": names})


def _version_3_settings(d: dict, where: str) -> dict:
    """classifier_kind and embedder_tokenizer of a parsed manifest, checked."""
    kind = d.get("classifier_kind", "encoder")
    check_type(kind, str, "classifier_kind", where)
    if kind not in CLASSIFIER_KINDS:
        out_of_range("classifier_kind", f"one of {list(CLASSIFIER_KINDS)}", kind, where)
    tok_d = d.get("embedder_tokenizer")
    embedder_tokenizer = None if tok_d is None else _tokenizer_settings(tok_d, "embedder_tokenizer", where)
    return {"classifier_kind": kind, "embedder_tokenizer": embedder_tokenizer}


def _version_2_settings(d: dict, where: str) -> dict:
    """measure, classifier_layers, exits and abstain of a parsed manifest, types checked."""
    measure = d.get("measure", DEFAULT_MEASURE)
    check_type(measure, str, "measure", where)
    if measure not in MEASURES:
        out_of_range("measure", f"one of {list(MEASURES)}", measure, where)
    layers = d.get("classifier_layers")
    if layers is not None:
        check_type(layers, int, "classifier_layers", where)
    exits_d = d.get("exits", [])
    if not isinstance(exits_d, list):
        raise BundleError(f"{where}: 'exits' must be a list of objects")
    exits = []
    for i, e in enumerate(exits_d):
        check_keys(e, ExitPoint, f"{where}: exits[{i}]")
        check_type(e["layer"], int, f"exits[{i}].layer", where)
        check_type(e["threshold"], (int, float), f"exits[{i}].threshold", where)
        exits.append(ExitPoint(e["layer"], float(e["threshold"])))
    abstain = None
    if d.get("abstain") is not None:
        a = d["abstain"]
        check_keys(a, Abstain, f"{where}: abstain")
        for key, typ in (("score", str), ("fallback_label", str), ("chosen_by", str), ("dev", dict)):
            check_type(a.get(key, {}), typ, f"abstain.{key}", where)
        check_type(a["threshold"], (int, float), "abstain.threshold", where)
        cascade = None
        if a.get("cascade") is not None:
            c = a["cascade"]
            check_keys(c, Cascade, f"{where}: abstain.cascade")
            check_type(c["measure"], str, "abstain.cascade.measure", where)
            check_type(c["bound"], (int, float), "abstain.cascade.bound", where)
            cascade = Cascade(c["measure"], float(c["bound"]))
        abstain = Abstain(**{**a, "threshold": float(a["threshold"]), "cascade": cascade})
    return {"measure": measure, "classifier_layers": layers, "exits": tuple(exits), "abstain": abstain}


def _file_roles(v2: dict) -> tuple[str, ...]:
    """The file roles a manifest with these version 2 settings must list."""
    roles = list(FILE_ROLES)
    if v2["exits"]:
        roles.remove("classifier")
        roles += [STAGE_ROLE.format(i + 1) for i in range(len(v2["exits"]) + 1)]
    if v2["abstain"] is not None and v2["abstain"].score == "knn":
        roles.append(TRAIN_EMBEDDINGS_ROLE)
    a = v2["abstain"]
    if a is not None and "mahalanobis" in (a.score, a.cascade.measure if a.cascade else None):
        roles += FEATURE_ROLES
    if v2["embedder_tokenizer"] is not None:
        roles.append(EMBEDDER_TOKENIZER_ROLE)
    return tuple(roles)
