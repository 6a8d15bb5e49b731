"""The manifest's checks: keys, types and the ranges of values the runtime can use.

Each check raises :class:`~lrsl_rt.errors.BundleError` naming the file (``where``), the key, what
was expected and what was found (the value cut to 60 characters). Types are checked before ranges,
so a range check may assume the type.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, fields

from ..abstain import CASCADE_MEASURES
from ..errors import BundleError

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
    "mahalanobis",
)
MAX_SEQUENCE_LENGTH = 1 << 16  # beyond any encoder's position table; the graphs are probed at load
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# "encoder": the classifier reads the whole text at once; "decoder": a decoder-only classifier whose
# graph reads the last real token of each row (format version 3).
CLASSIFIER_KINDS = ("encoder", "decoder")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_v2_ranges(v2: dict, labels: list[str], where: str) -> None:
    """The ranges of the version 2 settings (``v2``: as ``Manifest.from_dict`` parsed them)."""
    layers, exits = v2["classifier_layers"], v2["exits"]
    if layers is not None and layers < 1:
        out_of_range("classifier_layers", "an integer >= 1", layers, where)
    if exits and layers is None:
        raise BundleError(f"{where}: 'exits' needs 'classifier_layers' (the classifier's depth)")
    previous = 0
    for i, e in enumerate(exits):
        if not previous < e.layer < layers:
            out_of_range(
                f"exits[{i}].layer", f"an integer in ({previous}, {layers}), increasing", e.layer, where
            )
        if not _finite(e.threshold):
            out_of_range(f"exits[{i}].threshold", "a finite number", e.threshold, where)
        previous = e.layer
    a = v2["abstain"]
    if a is None:
        return
    if a.score not in ABSTAIN_SCORES:
        out_of_range("abstain.score", f"one of {list(ABSTAIN_SCORES)}", a.score, where)
    if not _finite(a.threshold):
        out_of_range("abstain.threshold", "a finite number", a.threshold, where)
    c = a.cascade
    if c is not None and c.measure not in CASCADE_MEASURES:
        out_of_range("abstain.cascade.measure", f"one of {list(CASCADE_MEASURES)}", c.measure, where)
    if c is not None and not _finite(c.bound):
        out_of_range("abstain.cascade.bound", "a finite number", c.bound, where)
    if not a.fallback_label.strip() or a.fallback_label in labels:
        out_of_range(
            "abstain.fallback_label",
            "a non-empty string that is not one of the labels",
            a.fallback_label,
            where,
        )


def check_ranges(d: dict, where: str) -> None:
    """Values of the right type but outside what the runtime can use (types were checked before)."""
    negative_ok = d.get("measure") == "entropy"  # minus an entropy: the one measure that is <= 0
    if not _finite(d["threshold"]) or (d["threshold"] < 0 and not negative_ok):
        out_of_range(
            "threshold",
            "a finite number >= 0 (a sureness: variance, margin, max_prob)",
            d["threshold"],
            where,
        )
    if d["embedding_dim"] < 1:
        out_of_range("embedding_dim", "an integer >= 1", d["embedding_dim"], where)
    for key in ("labels", "label_texts"):
        bad = [i for i, x in enumerate(d[key]) if not x.strip() or not _valid_unicode(x)]
        if bad:
            out_of_range(f"{key}[{bad[0]}]", "a non-empty string of valid Unicode", d[key][bad[0]], where)
    for key in ("tokenizer", "embedder_tokenizer"):
        if d.get(key) is not None:
            _check_tokenizer_ranges(d[key], key, where)
    for role, entry in d["files"].items():
        if entry["size"] < 0:
            out_of_range(f"files.{role}.size", "an integer >= 0", entry["size"], where)
        if not _SHA256.fullmatch(entry["sha256"]):
            out_of_range(f"files.{role}.sha256", "64 lowercase hex digits", entry["sha256"], where)
    settings = d["metrics"].get("export_settings", {})
    if not isinstance(settings, dict):
        out_of_range("metrics.export_settings", "an object", settings, where)
    batch = settings.get("batch_size")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        out_of_range("metrics.export_settings.batch_size", "a positive integer", batch, where)


def _check_tokenizer_ranges(tok: dict, key: str, where: str) -> None:
    if not 2 <= tok["max_length"] <= MAX_SEQUENCE_LENGTH:
        out_of_range(
            f"{key}.max_length", f"an integer in [2, {MAX_SEQUENCE_LENGTH}]", tok["max_length"], where
        )
    if tok["pad_id"] < 0:
        out_of_range(f"{key}.pad_id", "an integer >= 0", tok["pad_id"], where)
    names = tok["model_input_names"]
    if not set(names) <= set(MODEL_INPUTS) or len(set(names)) != len(names):
        out_of_range(f"{key}.model_input_names", f"distinct names among {list(MODEL_INPUTS)}", names, where)


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


def out_of_range(key: str, expected: str, got: object, where: str) -> None:
    raise BundleError(f"{where}: '{key}' must be {expected}, got {got!r:.60}")


def check_keys(d: object, cls, where: str) -> None:
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


def check_type(value: object, typ, key: str, where: str) -> None:
    ok = isinstance(value, typ) and not (isinstance(value, bool) and typ in (int, (int, float)))
    if not ok:
        expected = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise BundleError(f"{where}: '{key}' must be {expected}, got {type(value).__name__} {value!r:.60}")


def str_list(value: object, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise BundleError(f"{where}: '{key}' must be a list of strings")
    return value
