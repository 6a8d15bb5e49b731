"""Calibration texts for the static int8 presets: where they come from and how they are fed.

Static quantization measures activation ranges once, on texts the model was *trained* on:

- ``--calibration-texts FILE`` (a .jsonl with a ``text`` field, a .csv with a ``text`` column, or a
  .txt with one text per line), e.g. the data set's ``train.csv``; else
- ``CKPT/calib.jsonl``, the sample of training texts that ``python -m train`` writes into the
  checkpoint (older checkpoints lack it: pass the file).

A *named* static preset without either is an error. The *default* static preset (VNNI CPUs,
``export.optimize.DEFAULT_PRESETS``) is not worth a failed export: without texts the bundle gets the
dynamic preset of the same weights instead, and the export log says so (:func:`default_preset`).
The dev texts are no substitute: they would shape the int8 ranges of the models they then judge.

Texts of the checkpoint's dev and test splits are removed first: dev decides sigma2_mis and the
fusion on the exported models and test judges the bundle, so neither may also shape the int8
ranges (``train.csv`` of a named data set holds the dev texts, which training carved out of it).
Of the rest, at most :data:`MAX_TEXTS` distinct texts are drawn (seeded, so an export is
reproducible) and each becomes one feed of its own, unpadded.

With a ``calib.txt`` of two lines (skipped as a doctest: it needs the file):

>>> read_texts(Path("calib.txt"))  # doctest: +SKIP
['I still have not received my card', 'how do I top up?']
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from .errors import ExportError

CALIBRATION_FILE = "calib.jsonl"
MAX_TEXTS = 512
TEXT_FIELD = "text"


def read_texts(path: Path) -> list[str]:
    """Texts of a .jsonl (``text`` field), .csv (``text`` column) or .txt (one per line) file."""
    if not path.is_file():
        raise ExportError(f"{path}: calibration texts not found")
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if suffix == ".csv":
                return _csv_texts(path, csv.DictReader(f))
            if suffix == ".jsonl":
                return [_jsonl_text(path, n, line) for n, line in enumerate(f, 1) if line.strip()]
            if suffix == ".txt":
                return [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise ExportError(f"{path}: not UTF-8 (byte {e.start}: {e.reason})") from e
    raise ExportError(
        f"{path}: calibration texts must be .jsonl, .csv or .txt, got {suffix or 'no extension'!r}"
    )


def _csv_texts(path: Path, reader: csv.DictReader) -> list[str]:
    if reader.fieldnames is None or TEXT_FIELD not in reader.fieldnames:
        raise ExportError(f"{path}:1: header has no column {TEXT_FIELD!r} (columns: {reader.fieldnames})")
    return [row[TEXT_FIELD] for row in reader if (row[TEXT_FIELD] or "").strip()]


def _jsonl_text(path: Path, n: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}:{n}: not valid JSON ({e.msg})") from e
    if not isinstance(record, dict) or not isinstance(record.get(TEXT_FIELD), str):
        raise ExportError(f"{path}:{n}: expected a JSON object with a string field {TEXT_FIELD!r}")
    return record[TEXT_FIELD]


def calibration_texts(ckpt, path: str | Path | None = None, limit: int = MAX_TEXTS) -> tuple[list[str], dict]:
    """The calibration sample for checkpoint ``ckpt`` (export.source.Checkpoint) and a summary of
    where it came from (for manifest.metrics["quantization"])."""
    source = Path(path) if path is not None else ckpt.root / CALIBRATION_FILE
    if path is None and not source.is_file():
        raise ExportError(
            f"{source}: not found; static int8 presets calibrate on training texts: pass "
            "--calibration-texts FILE (e.g. the data set's train.csv)"
        )
    texts = list(dict.fromkeys(read_texts(source)))
    held_out = set(ckpt.dev.texts) | set(ckpt.test.texts if ckpt.test is not None else ())
    kept = [t for t in texts if t not in held_out]
    if not kept:
        raise ExportError(f"{source}: no calibration text left once the dev and test texts are removed")
    sample = random.Random(ckpt.info.seed).sample(kept, min(limit, len(kept)))
    summary = {"source": str(source), "distinct": len(texts), "held_out_removed": len(texts) - len(kept)}
    return sample, {**summary, "used": len(sample)}


def default_preset(ckpt, preset: str, path: str | Path | None) -> tuple[str, str | None]:
    """The detected default ``preset`` made usable for checkpoint ``ckpt``, and a note for the export log
    when it had to change: a static default with no ``path`` and no ``CKPT/calib.jsonl`` becomes its
    dynamic twin (a missing ``path`` file stays an error, in :func:`calibration_texts`)."""
    from .optimize import PRESETS, dynamic_twin

    source = ckpt.root / CALIBRATION_FILE
    if PRESETS[preset].activations != "static" or path is not None or source.is_file():
        return preset, None
    dynamic = dynamic_twin(preset)
    return dynamic, (
        f"{source} not found: preset {dynamic} (dynamic; answers can depend on batch neighbours) instead "
        f"of this CPU's default {preset}; for it, pass --calibration-texts FILE (e.g. the data set's train.csv)"
    )


def calibration_feeds(tokenizer, texts: list[str], names, max_length: int) -> list[dict]:
    """One unpadded model input per text (HF tokenizer, the export's encoding)."""
    from .onnx_export import encode

    return [encode(tokenizer, [t], names, max_length) for t in texts]


def quantization_plan(ckpt, preset: str | None, path: str | Path | None) -> tuple[list[str] | None, dict]:
    """Calibration texts (None for dynamic presets and non-int8 precisions) and the manifest's
    ``metrics["quantization"]`` entry: the preset's activations, whether it is batch-invariant and,
    for static presets, the calibration method and where its texts came from."""
    from .optimize import PRESETS

    if preset is None:
        return None, {}
    p = PRESETS[preset]
    plan = {"preset": p.name, "activations": p.activations, "batch_invariant": p.batch_invariant}
    if p.activations != "static":
        return None, plan
    texts, summary = calibration_texts(ckpt, path)
    return texts, {**plan, "calibration": {"method": p.calibration, **summary}}
