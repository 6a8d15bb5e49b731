"""The splits of a training run: a named data set or files, a stratified dev split, smoke-run limits.

Every label of dev and test must occur in train (a label the classifier never saw cannot be
predicted); a label that does not is refused with its file and line (:func:`train.data.check_known_labels`).
"""

from __future__ import annotations

from collections import Counter

from . import data as D
from .config import TrainConfig
from .open_intent import separate


def _limit(split: D.Split, classes: list[str] | None, per_class: int | None) -> D.Split:
    keep, seen = [], Counter()
    for i, y in enumerate(split.labels):
        if (classes is None or y in classes) and (per_class is None or seen[y] < per_class):
            keep.append(i)
            seen[y] += 1
    return D.Split(
        [split.texts[i] for i in keep],
        [split.labels[i] for i in keep],
        split.source,
        [split.lines[i] for i in keep] if split.lines else None,
    )


def load_splits(cfg: TrainConfig, log=print) -> tuple[list[str], D.Split, D.Split, D.Split | None]:
    """(labels, train, dev, test) of the in-scope rows; :func:`load_splits_and_oos` also returns the others."""
    return load_splits_and_oos(cfg, log)[:4]


def load_splits_and_oos(cfg: TrainConfig, log=print):
    """(labels, train, dev, test, :class:`OutOfScope` rows); dev and test hold in-scope rows only."""
    if cfg.dataset:
        spec = D.resolve_named(cfg.dataset, D.datasets_dir(cfg.datasets_dir))
        text_field, label_field = spec["text_field"], spec["label_field"]
        train_path, dev_path, test_path = spec["train"], cfg.dev or spec.get("dev"), cfg.test or spec["test"]
    elif cfg.train:
        text_field, label_field = cfg.text_field, cfg.label_field
        train_path, dev_path, test_path = cfg.train, cfg.dev, cfg.test
    else:
        raise D.DataError("give a named data set (--dataset banking77) or a training file (--train FILE)")
    train = D.read_labelled(train_path, text_field, label_field)
    if dev_path:
        dev = D.read_labelled(dev_path, text_field, label_field)
    else:
        train, dev = D.stratified_split(train, cfg.dev_fraction, cfg.seed)
    test = D.read_labelled(test_path, text_field, label_field) if test_path else None
    classes = sorted(set(train.labels))
    if cfg.limit_classes:
        classes = classes[: cfg.limit_classes]
        dev, test = _limit(dev, classes, None), (_limit(test, classes, None) if test else None)
    if cfg.limit_classes or cfg.limit_per_class:
        train = _limit(train, classes if cfg.limit_classes else None, cfg.limit_per_class)
    train, dev, test, oos = separate(train, dev, test, cfg.oos_label, cfg.unknown_ratio, cfg.seed)
    if oos.train_rows_left_out or oos.dev or oos.test:
        log(f"out of scope: {oos.info()}")
    labels = sorted(set(train.labels))
    for s in (dev, test):
        if s is not None:
            D.check_known_labels(s, labels, label_field)
    for name, s in (("train", train), ("dev", dev), ("test", test)):
        if s is not None:
            log(D.summary(name, s))
    return labels, train, dev, test, oos
