"""Reading the training checkpoint that an export starts from (layout: ``train/checkpoint.py``).

Everything is checked before any model is loaded, so a wrong directory fails in a second, with the
file and the expected value in the message:

- ``lrsl.json`` parses (``train.checkpoint.read_info``), ``classifier/`` and ``embedder/`` exist;
- the embedder is a SentenceTransformer save of exactly Transformer -> mean Pooling [-> Normalize]
  (legacy ``pooling_mode_mean_tokens`` configs and the newer ``pooling_mode: "mean"`` both read);
  anything else (CLS or max pooling, a Dense head) is refused, since the exported graph hard-codes
  mean pooling and L2 normalisation;
- classifier and embedder share one tokenizer: their ``tokenizer.json`` files are equal once the
  run-time ``truncation``/``padding`` settings are set aside (the runtime sets its own); beside a
  decoder-only classifier (``classifier_kind`` "decoder", which its config.json must confirm) the
  sentence embedder keeps its own tokenizer and the bundle ships both;
- ``dev.jsonl`` (and ``test.jsonl`` when present) only use labels of ``lrsl.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.checkpoint import CheckpointInfo, read_info, read_jsonl
from train.errors import CheckpointError

from .errors import ExportError

TOKENIZER_FILE = "tokenizer.json"
_RUNTIME_TOKENIZER_KEYS = ("truncation", "padding")


@dataclass(frozen=True)
class Split:
    """Texts and gold label ids of one data split."""

    name: str
    texts: list[str]
    gold: np.ndarray  # int64, positions in CheckpointInfo.labels


@dataclass(frozen=True)
class Checkpoint:
    root: Path
    info: CheckpointInfo
    classifier_dir: Path
    embedder_dir: Path  # the folder of the embedder's Transformer module (HF model + tokenizer)
    dev: Split
    test: Split | None
    classifier_kind: str = "encoder"  # "decoder": a decoder-only classifier (export.decoder_graph)

    @property
    def tokenizer_file(self) -> Path:
        return self.classifier_dir / TOKENIZER_FILE

    @property
    def embedder_tokenizer_file(self) -> Path | None:
        """The embedder's own tokenizer.json when it is not the classifier's (beside a decoder-only
        classifier), else None: the bundle then ships one tokenizer."""
        if self.classifier_kind == "encoder":
            return None
        own = self.embedder_dir / TOKENIZER_FILE
        return None if _tokenizer_core(own) == _tokenizer_core(self.tokenizer_file) else own

    @property
    def eval_split(self) -> Split:
        """The split the accuracy gate is decided on: test when there is one, else dev."""
        return self.test if self.test is not None else self.dev


def load_checkpoint(ckpt_dir: str | Path) -> Checkpoint:
    root = Path(ckpt_dir)
    if not root.is_dir():
        raise ExportError(f"{root}: checkpoint directory not found")
    try:
        info = read_info(root)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    classifier_dir = root / "classifier"
    if not (classifier_dir / "config.json").is_file():
        raise ExportError(
            f"{classifier_dir}: no config.json; expected the classifier's save_pretrained folder"
        )
    embedder_dir = embedder_transformer_dir(root / "embedder")
    kind = checkpoint_classifier_kind(classifier_dir, info)
    if kind == "encoder":
        check_shared_tokenizer(classifier_dir / TOKENIZER_FILE, embedder_dir / TOKENIZER_FILE)
    else:  # a sentence embedder beside a decoder: each model keeps its own tokenizer
        for p in (classifier_dir / TOKENIZER_FILE, embedder_dir / TOKENIZER_FILE):
            if not p.is_file():
                raise ExportError(f"{p}: not found; the export needs fast tokenizers saved as tokenizer.json")
    dev = read_split(root / "dev.jsonl", info.labels)
    test_path = root / "test.jsonl"
    test = read_split(test_path, info.labels) if test_path.is_file() else None
    return Checkpoint(root, info, classifier_dir, embedder_dir, dev, test, kind)


def checkpoint_classifier_kind(classifier_dir: Path, info: CheckpointInfo) -> str:
    """The classifier's kind from its config.json, which must agree with lrsl.json's classifier_kind."""
    from types import SimpleNamespace

    from train.decoder import classifier_kind
    from train.errors import ModelError

    config_file = classifier_dir / "config.json"
    config = _json_object(config_file)
    keys = ("model_type", "architectures", "is_encoder_decoder")
    try:
        kind = classifier_kind(SimpleNamespace(**{k: config.get(k) for k in keys}), config_file)
    except ModelError as e:
        raise ExportError(str(e)) from e
    if kind != info.classifier_kind:
        raise ExportError(
            f"{config_file}: a {config.get('model_type')!r} model is a {kind} classifier, but lrsl.json "
            f"says classifier_kind {info.classifier_kind!r}"
        )
    return kind


def _json_object(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: not valid UTF-8 JSON: {e}") from e
    if not isinstance(d, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return d


def read_split(path: Path, labels: list[str]) -> Split:
    if not path.is_file():
        raise ExportError(f"{path}: not found; the checkpoint needs its dev split for calibration")
    try:
        texts, names = read_jsonl(path)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ExportError(f"{path}: expected one JSON object with 'text' and 'label' per line: {e!r}") from e
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({y for y in names if y not in index})
    if unknown:
        raise ExportError(
            f"{path}: label(s) {unknown[:5]} are not among the {len(labels)} labels of lrsl.json"
        )
    if not texts:
        raise ExportError(f"{path}: no samples")
    return Split(path.stem, texts, np.array([index[y] for y in names], dtype=np.int64))


def embedder_transformer_dir(embedder_dir: Path) -> Path:
    """Folder of the HF model inside a SentenceTransformer save, after checking its module stack.

    Accepts Transformer -> Pooling(mean) [-> Normalize]; the Transformer usually sits at the root
    (``"path": ""``), older saves put it in ``0_Transformer``.
    """
    modules_file = embedder_dir / "modules.json"
    if not modules_file.is_file():
        raise ExportError(
            f"{modules_file}: not found; the embedder must be a SentenceTransformer.save folder"
        )
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ExportError(
            f"{modules_file}: modules {kinds} are not supported; the export handles exactly "
            "Transformer -> Pooling (mean) [-> Normalize]"
        )
    pooling_file = embedder_dir / modules[1]["path"] / "config.json"
    if not pooling_file.is_file():
        raise ExportError(f"{pooling_file}: not found; cannot check the embedder's pooling mode")
    mode = pooling_mode(json.loads(pooling_file.read_text(encoding="utf-8")))
    if mode != "mean":
        raise ExportError(
            f"{pooling_file}: pooling mode {mode!r} is not supported; the exported embedder computes mean "
            "pooling over the attention mask (LRSL's embedder is trained with mean pooling)"
        )
    transformer_dir = embedder_dir / modules[0]["path"]
    check_lowercasing(transformer_dir)
    return transformer_dir


def check_lowercasing(transformer_dir: Path) -> None:
    """Refuse ``do_lower_case`` in sentence_bert_config.json when tokenizer.json does not lowercase:
    SentenceTransformers lowercases such texts in Python, the runtime only runs tokenizer.json."""
    cfg = transformer_dir / "sentence_bert_config.json"
    tok = transformer_dir / TOKENIZER_FILE
    if not cfg.is_file() or not json.loads(cfg.read_text(encoding="utf-8")).get("do_lower_case"):
        return
    if tok.is_file() and not _lowercases(json.loads(tok.read_text(encoding="utf-8")).get("normalizer")):
        raise ExportError(
            f"{cfg}: do_lower_case is true but {tok} does not lowercase; the bundle's tokenizer would "
            "see different text than the embedder was trained on"
        )


def _lowercases(normalizer: dict | None) -> bool:
    """Whether a tokenizer.json normalizer lowercases.

    >>> _lowercases({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]})
    True
    """
    if not normalizer:
        return False
    kind = normalizer.get("type")
    if kind == "Sequence":
        return any(_lowercases(n) for n in normalizer.get("normalizers", []))
    return kind == "Lowercase" or (kind == "BertNormalizer" and bool(normalizer.get("lowercase")))


def pooling_mode(config: dict) -> str | list[str]:
    """The pooling mode of a Pooling config, old or new style.

    >>> pooling_mode({"pooling_mode": "mean"}), pooling_mode({"pooling_mode_mean_tokens": True})
    ('mean', 'mean')
    """
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return mode[0] if isinstance(mode, list) and len(mode) == 1 else mode
    legacy = {
        "pooling_mode_cls_token": "cls",
        "pooling_mode_max_tokens": "max",
        "pooling_mode_mean_tokens": "mean",
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens": "weightedmean",
        "pooling_mode_lasttoken": "lasttoken",
    }
    active = [mode for key, mode in legacy.items() if config.get(key)]
    return active[0] if len(active) == 1 else active


def check_shared_tokenizer(classifier_file: Path, embedder_file: Path) -> None:
    """Refuse a classifier and an embedder whose tokenizers differ: the bundle ships only one."""
    for p in (classifier_file, embedder_file):
        if not p.is_file():
            raise ExportError(f"{p}: not found; the export needs fast tokenizers saved as tokenizer.json")
    a, b = (_tokenizer_core(p) for p in (classifier_file, embedder_file))
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ExportError(
            f"the classifier and the embedder use different tokenizers ({classifier_file} and {embedder_file} "
            f"differ in {diff}); LRSL bundles ship one tokenizer, so train both from the same base model"
        )


def _tokenizer_core(path: Path) -> dict:
    d = json.loads(path.read_text(encoding="utf-8"))
    for key in _RUNTIME_TOKENIZER_KEYS:
        d.pop(key, None)
    return d
