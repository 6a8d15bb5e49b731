"""The training checkpoint: what ``python -m train`` writes and ``python -m export`` reads.

Layout (format ``lrsl-checkpoint`` version 1)::

    CKPT/
      lrsl.json       labels, label texts, k, max_length, PyTorch calibration (the gate's measure,
                      threshold, fusion and whether the user fixed it), seed, the classifier's kind
      classifier/     AutoModelForSequenceClassification.save_pretrained + its fast tokenizer (tokenizer.json);
                      a decoder-only one (classifier_kind "decoder") with its pad token set, LoRA merged
      embedder/       SentenceTransformer.save: Transformer + mean Pooling (+ Normalize); its fast tokenizer
                      (the classifier's, except beside a decoder-only classifier)
      dev.jsonl       the dev split used for calibration: {"text": ..., "label": ...} per line
      test.jsonl      the test split, when one was given (optional)
      dev_oos.jsonl   out-of-scope dev texts with their original label (optional: --oos-label or
      test_oos.jsonl  --unknown-ratio, :mod:`train.open_intent`); the abstain calibration reads dev_oos
      train.jsonl     the in-scope training texts, written with the two above (the kNN abstain score)
      calib.jsonl     a seeded sample of the training texts (not dev, not test): the static int8
                      presets of the export calibrate their activation scales on it
      metrics.json    everything measured during training
      exits/          exit heads after chosen classifier layers (optional: ``python -m train.exits``,
                      :mod:`train.exit_heads`)

Labels are strings; label ids are positions in ``labels`` and match the classifier's output columns.
No pickle: models are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lrsl_rt.fusion import Fusion

from .data import read_json_object
from .errors import CheckpointError

CHECKPOINT_FORMAT = "lrsl-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class CheckpointInfo:
    labels: list[str]
    label_texts: list[str]
    k: int
    max_length: int
    threshold: float  # sigma2_mis on dev, PyTorch classifier
    fusion: dict  # Fusion.to_dict(), chosen on dev with the PyTorch models
    seed: int
    base_models: dict = field(default_factory=dict)  # {"classifier": path, "embedder": path}
    fusion_fixed: bool = False  # True: the user set the fusion (--fusion); export keeps it
    out_of_scope: dict = field(default_factory=dict)  # OutOfScope.info(): how the oos rows were chosen
    measure: str = "variance"  # the gate's sureness measure (lrsl_rt.gate); threshold is in its units
    # "encoder", or "decoder": a decoder-only classifier that reads its last real token (train.decoder)
    classifier_kind: str = "encoder"
    format: str = CHECKPOINT_FORMAT
    version: int = CHECKPOINT_VERSION

    @property
    def fusion_rule(self) -> Fusion:
        return Fusion(**self.fusion)


def write_info(ckpt_dir: str | Path, info: CheckpointInfo) -> Path:
    path = Path(ckpt_dir) / "lrsl.json"
    path.write_text(json.dumps(asdict(info), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_info(ckpt_dir: str | Path) -> CheckpointInfo:
    path = Path(ckpt_dir) / "lrsl.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; is {ckpt_dir} a checkpoint written by `python -m train`?")
    d = read_json_object(path, "a JSON object", CheckpointError)
    if d.get("format") != CHECKPOINT_FORMAT or d.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: expected format {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}, "
            f"got {d.get('format')!r} version {d.get('version')!r}"
        )
    unknown = set(d) - {f.name for f in fields(CheckpointInfo)}
    if unknown:
        raise CheckpointError(f"{path}: unknown key(s) {sorted(unknown)}")
    try:
        return CheckpointInfo(**d)
    except TypeError as e:  # a required key is missing
        raise CheckpointError(f"{path}: {e}") from e


def write_jsonl(path: str | Path, texts: list[str], labels: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for t, y in zip(texts, labels, strict=True):
            f.write(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                texts.append(r["text"])
                labels.append(r["label"])
    return texts, labels


CALIBRATION_SAMPLE = 1000


def calibration_sample(split, seed: int, n: int = CALIBRATION_SAMPLE) -> tuple[list[str], list[str]]:
    """(texts, labels) of at most ``n`` rows of ``split`` (train.data.Split), drawn with ``seed``."""
    import random

    idx = sorted(random.Random(seed).sample(range(len(split.texts)), min(n, len(split.texts))))
    return [split.texts[i] for i in idx], [split.labels[i] for i in idx]
