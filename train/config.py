"""The settings of a training run, with their defaults, in one module without heavy imports.

``python -m train --help`` reads its defaults from here, so it shows them without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lrsl_rt.defaults import DEFAULT_MEASURE


@dataclass
class ClassifierConfig:
    epochs: int = 8
    lr: float = 1.5e-4
    batch_size: int = 32
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    patience: int = 2
    max_length: int = 64
    seed: int = 42
    # batches drawn from pools of group_size * batch_size texts sorted by length; 0 = plain shuffle
    group_size: int = 50
    layers: int | None = None  # keep only the first N encoder layers of the base model (None: all)
    exit_layers: list[int] | None = None  # exit heads trained jointly after these layers (None: none)
    exit_weight: float = 0.3  # weight of each exit head's loss beside the final head's
    # LoRA adapters (train.decoder): rank 0 fine-tunes every weight; alpha None means 2 x rank
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_dropout: float = 0.05


@dataclass
class EmbedderConfig:
    epochs: int = 4
    lr: float = 5e-5
    batch_size: int = 32
    warmup_ratio: float = 0.1
    # triplets per training text, one per wrong label of its top-k in rank order (1: the paper's
    # single confusable label; more triplets per epoch cost proportionally more training time)
    negatives: int = 1
    seed: int = 42
    # texts taken in pools of group_size * batch_size sorted by length (less padding); 0 = plain shuffle
    group_size: int = 50


@dataclass
class TrainConfig:
    out: str
    dataset: str | None = None  # a named data set (banking77), or:
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    datasets_dir: str | None = None
    dev_fraction: float = 0.1
    label_descriptions: str | None = None
    classifier_model: str | None = None
    embedder_model: str | None = None
    embedder_from: str | None = None  # a checkpoint whose trained embedder is reused (no embedder training)
    k: int = 3
    fusion: str = "auto"  # "auto": chosen on dev; or a rule RULE:P[:SCOPE] kept as is (train and export)
    measure: str = DEFAULT_MEASURE  # the gate's sureness measure (lrsl_rt.defaults.MEASURES)
    seed: int = 42
    threads: int | None = None
    limit_classes: int | None = None  # keep the first N classes (smoke runs)
    limit_per_class: int | None = None  # keep at most N train rows per class (smoke runs)
    oos_label: str | None = None  # the class of out-of-scope texts (kept out of the labels)
    unknown_ratio: float = 0.0  # share of labels treated as unknown (open-intent protocol), seeded by seed
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
