"""Out-of-scope texts in labelled data: a class of their own, or a seeded share of unknown labels.

Two ways to have texts that belong to none of the labels, both kept out of training and kept for the
abstain calibration (:mod:`export.abstain`) and its evaluation:

- ``--oos-label NAME``: the data set has a class for them (``oos`` in CLINC150, say). Its train rows
  are not trained on; its dev and test rows become the out-of-scope dev and test texts.
- ``--unknown-ratio R`` (the open-intent protocol of TEXTOIR): a seeded share R of the labels is
  treated as unknown. Their train rows are not trained on; their dev and test rows become the
  out-of-scope texts. The list of unknown labels follows from the seed and is written into the
  checkpoint (``lrsl.json``), so every result names it.

Nothing is dropped silently: the rows left out of training are counted in the log and the checkpoint.

Worked example (seed 0): labels a..h, ratio 0.25 -> 2 unknown labels chosen by ``random.Random(0)``.

>>> choose_unknown(list("abcdefgh"), 0.25, 0)
['g', 'h']
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .data import DataError, Split


@dataclass
class OutOfScope:
    """The out-of-scope rows of dev and test (None when a split has none) and how they were chosen."""

    dev: Split | None
    test: Split | None
    label: str | None  # --oos-label
    unknown_labels: list[str]  # --unknown-ratio's choice, sorted
    train_rows_left_out: int
    unknown_ratio: float = 0.0
    seed: int | None = None

    def info(self) -> dict:
        """What the checkpoint records (``lrsl.json``'s ``out_of_scope``)."""
        return {
            "oos_label": self.label,
            "unknown_labels": self.unknown_labels,
            "unknown_ratio": self.unknown_ratio,
            "seed": self.seed,
            "train_rows_left_out": self.train_rows_left_out,
            "dev": len(self.dev) if self.dev else 0,
            "test": len(self.test) if self.test else 0,
        }


def choose_unknown(labels: list[str], ratio: float, seed: int) -> list[str]:
    """``round(ratio * len(labels))`` labels drawn with ``seed`` from the sorted labels, sorted."""
    if not 0 <= ratio < 1:
        raise DataError(f"--unknown-ratio must be in [0, 1), got {ratio}")
    n = round(ratio * len(labels))
    if ratio and not 1 <= n <= len(labels) - 2:
        raise DataError(
            f"--unknown-ratio {ratio} of {len(labels)} labels leaves {len(labels) - n} known; at least 2 are needed"
        )
    return sorted(random.Random(seed).sample(sorted(labels), n))


def separate(
    train: Split, dev: Split, test: Split | None, oos_label: str | None, ratio: float, seed: int
) -> tuple[Split, Split, Split | None, OutOfScope]:
    """(train, dev, test) without their out-of-scope rows, and those rows."""
    known = sorted(set(train.labels) - {oos_label})
    unknown = choose_unknown(known, ratio, seed) if ratio else []
    out = set(unknown) | ({oos_label} if oos_label else set())
    if oos_label and oos_label not in set(train.labels) | set(dev.labels):
        raise DataError(f"--oos-label {oos_label!r}: no train or dev row has this label")
    train_in, _ = _part(train, out)
    dev_in, dev_oos = _part(dev, out)
    test_in, test_oos = _part(test, out) if test else (None, None)
    left_out = len(train) - len(train_in)
    oos = OutOfScope(dev_oos, test_oos, oos_label, unknown, left_out, ratio, seed if ratio else None)
    return train_in, dev_in, test_in, oos


def _part(split: Split, out: set[str]) -> tuple[Split, Split | None]:
    """(rows whose label is not in ``out``, rows whose label is; None when there are none)."""
    keep = [i for i, y in enumerate(split.labels) if y not in out]
    drop = [i for i, y in enumerate(split.labels) if y in out]

    def take(idx, suffix):
        lines = [split.lines[i] for i in idx] if split.lines else None
        texts, labels = [split.texts[i] for i in idx], [split.labels[i] for i in idx]
        return Split(texts, labels, split.source + suffix, lines)

    return take(keep, ""), (take(drop, " (out of scope)") if drop else None)
