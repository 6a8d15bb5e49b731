"""Labelled data: reading CSV/JSONL strictly, the named data sets, the stratified dev split.

Every rejected input names the file, the line and the field, and says what was expected. Nothing is
dropped silently: a row is either read or the run stops.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_ENV = "LRSL_DATASETS_DIR"
# A named data set with a "dev" file uses it as the dev split; one without (Banking77 publishes only
# train and test) gets a stratified dev split carved out of train (``--dev-fraction``).
NAMED = {
    "banking77": {"train": "train.csv", "test": "test.csv", "text_field": "text", "label_field": "category"},
    "hwu64": {
        "train": "train.csv",
        "dev": "dev.csv",
        "test": "test.csv",
        "text_field": "text",
        "label_field": "category",
    },
}


@dataclass
class Split:
    texts: list[str]
    labels: list[str]
    source: str
    lines: list[int] | None = None  # line of each row in its file, for error messages

    def __len__(self) -> int:
        return len(self.texts)


def datasets_dir(override: str | None = None) -> Path:
    """Flag, then $LRSL_DATASETS_DIR, then ../shared/datasets relative to the repository root."""
    if override:
        return Path(override)
    if os.environ.get(DATASETS_ENV):
        return Path(os.environ[DATASETS_ENV])
    return REPO_ROOT.parent / "shared" / "datasets"


def resolve_named(name: str, root: Path) -> dict:
    """Paths and field names of a named data set, checking the files are there (no download).

    Keys ``train``, ``test`` and, when the data set publishes one, ``dev`` (paths), plus the field names.
    """
    if name not in NAMED:
        raise DataError(f"unknown data set {name!r}; known: {sorted(NAMED)} (or pass --train FILE)")
    spec = NAMED[name]
    out = {"text_field": spec["text_field"], "label_field": spec["label_field"]}
    for split in ("train", "dev", "test"):
        if split not in spec:
            continue
        p = root / name / spec[split]
        if not p.is_file():
            raise DataError(
                f"{p}: not found; set --datasets-dir or ${DATASETS_ENV} to the folder holding {name}/"
            )
        out[split] = p
    return out


def _value(record: dict, field: str, where: str) -> str:
    if field not in record:
        raise DataError(f"{where}: missing field {field!r} (fields present: {sorted(record)})")
    v = record[field]
    if not isinstance(v, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(v).__name__} {v!r:.40}")
    if not v.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    return v


def read_labelled(path: str | Path, text_field: str = "text", label_field: str = "label") -> Split:
    """Read a .csv (with a header row) or .jsonl file of labelled texts."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DataError(f"{path}: expected a .csv or .jsonl file, got {suffix or 'no extension'!r}")
    texts, labels, lines = [], [], []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if suffix == ".csv":
                reader = csv.DictReader(f)
                for field in (text_field, label_field):
                    if reader.fieldnames is None or field not in reader.fieldnames:
                        raise DataError(
                            f"{path}:1: header has no column {field!r} (columns: {reader.fieldnames})"
                        )
                for row in reader:
                    where = f"{path}:{reader.line_num}"
                    if None in row:
                        raise DataError(f"{where}: more values than header columns")
                    texts.append(_value(row, text_field, where))
                    labels.append(_value(row, label_field, where))
                    lines.append(reader.line_num)
            else:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        raise DataError(f"{path}:{n}: empty line; expected a JSON object")
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from e
                    if not isinstance(record, dict):
                        raise DataError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
                    texts.append(_value(record, text_field, f"{path}:{n}"))
                    labels.append(_value(record, label_field, f"{path}:{n}"))
                    lines.append(n)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start}: {e.reason})") from e
    if not texts:
        raise DataError(f"{path}: no rows")
    return Split(texts, labels, str(path), lines)


def check_known_labels(split: Split, known: list[str], label_field: str) -> None:
    """A dev/test label that train never saw cannot be predicted: refuse it with its line."""
    known_set = set(known)
    for i, y in enumerate(split.labels):
        if y not in known_set:
            line = split.lines[i] if split.lines else i + 1
            raise DataError(
                f"{split.source}:{line}: field {label_field!r}: label {y!r} does not occur in train"
            )


def stratified_split(split: Split, frac: float, seed: int) -> tuple[Split, Split]:
    """Carve ``frac`` of each class out as dev (at least one per class), seeded."""
    if not 0 < frac < 1:
        raise DataError(f"dev fraction must be in (0, 1), got {frac}")
    by_class: dict[str, list[int]] = {}
    for i, y in enumerate(split.labels):
        by_class.setdefault(y, []).append(i)
    rng = random.Random(seed)
    dev_idx = []
    for y in sorted(by_class):
        idx = by_class[y]
        if len(idx) < 2:
            raise DataError(
                f"{split.source}: class {y!r} has {len(idx)} sample(s); at least 2 are needed to carve a "
                "stratified dev split (add samples or pass --dev FILE)"
            )
        rng.shuffle(idx)
        dev_idx += idx[: max(1, round(frac * len(idx)))]
    dev_set = set(dev_idx)
    take = lambda keep: Split(  # noqa: E731
        [t for i, t in enumerate(split.texts) if (i in dev_set) == keep],
        [y for i, y in enumerate(split.labels) if (i in dev_set) == keep],
        split.source + (" (dev part)" if keep else " (train part)"),
    )
    return take(False), take(True)


def read_json_object(path: Path, what: str, error: type[Exception]) -> dict:
    """The JSON object in ``path``; ``error`` naming the file when it cannot be read or is not ``what``."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: cannot read it as JSON: {e}") from e
    if not isinstance(d, dict):
        raise error(f"{path}: expected {what}, got {type(d).__name__}")
    return d


def readable(label: str) -> str:
    """Default label text: underscores and hyphens become spaces, nothing else changes.

    ``card_arrival`` -> ``card arrival``, ``iot_hue_lightchange`` -> ``iot hue lightchange``. Glued
    words (``lightchange``) are left as they are: the tokenizer splits them into sub-words, and the
    embedder is fine-tuned on these texts as label anchors. Better texts come from
    ``--label-descriptions``.
    """
    return " ".join(label.replace("_", " ").replace("-", " ").split())


def label_texts(labels: list[str], descriptions: str | Path | None) -> list[str]:
    """Text of each label: readable names, or a JSON file mapping every label to a description."""
    if descriptions is None:
        return [readable(y) for y in labels]
    path = Path(descriptions)
    d = read_json_object(path, "a JSON object mapping label -> description", DataError)
    missing, extra = sorted(set(labels) - set(d)), sorted(set(d) - set(labels))
    if missing or extra:
        raise DataError(f"{path}: labels missing from the file: {missing}; labels not in train: {extra}")
    for y in labels:
        if not isinstance(d[y], str) or not d[y].strip():
            raise DataError(f"{path}: description of {y!r} must be a non-empty string")
    return [d[y] for y in labels]


def summary(name: str, split: Split) -> str:
    c = Counter(split.labels)
    return (
        f"{name}: {len(split)} rows, {len(c)} classes, per class min {min(c.values())} / "
        f"median {sorted(c.values())[len(c) // 2]} / max {max(c.values())}  ({split.source})"
    )
