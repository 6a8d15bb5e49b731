"""A data set with real out-of-scope texts: Banking77 in scope, HWU64 intents no banking label covers out.

``python -m train.oos_mix --out DIR`` writes ``DIR/train.csv``, ``dev.csv`` and ``test.csv`` (columns
``text,category``) for ``python -m train --train DIR/train.csv --dev DIR/dev.csv --test DIR/test.csv
--label-field category --oos-label oos``:

- in scope: Banking77's train (less the stratified dev part that ``--dataset banking77`` carves with
  the same fraction and seed, so the in-scope dev and test texts are those of the Banking77 bundle)
  and its test;
- out of scope (label ``oos``): HWU64 texts of the intents in :data:`KEPT`, a seeded sample of
  ``--oos-train`` texts from HWU64's train, ``--oos-dev`` from its dev and ``--oos-test`` from its
  test (each HWU64 split feeds one of ours, so no near-duplicate crosses from train to test).

Left out as overlapping (:data:`LEFT_OUT`): ``qa_currency`` (exchange rates are Banking77 intents),
``qa_stock`` (money questions a bank's assistant may be asked) and ``general_quirky`` (a grab bag
of chat that holds banking questions too). The choice and the seed are written to
``DIR/oos_mix.json`` so every result names them.

Worked example of the sampler: ``sample(["a", "b", "c"], 2, seed=0)`` keeps two of the three texts
in their file order, the same two for the same seed.

>>> sample(["a", "b", "c"], 2, seed=0)
['b', 'c']
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

from .data import datasets_dir, read_labelled, resolve_named, stratified_split
from .errors import DataError

OOS_LABEL = "oos"
LEFT_OUT = ("qa_currency", "qa_stock", "general_quirky")
SIZES = {"train": 100, "dev": 100, "test": 1000}


def sample(texts: list[str], n: int, seed: int) -> list[str]:
    """``n`` of ``texts`` drawn with ``seed``, kept in file order (all of them when there are fewer)."""
    if n >= len(texts):
        return list(texts)
    keep = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in keep]


def build(root: Path, sizes: dict, seed: int = 42, dev_fraction: float = 0.1) -> dict:
    """{split: (texts, labels)} of the mix and its description (the JSON written beside it)."""
    bank, hwu = resolve_named("banking77", root), resolve_named("hwu64", root)
    train = read_labelled(bank["train"], "text", "category")
    train, dev = stratified_split(train, dev_fraction, seed)
    test = read_labelled(bank["test"], "text", "category")
    out, kept_counts = {}, {}
    for name, split in (("train", train), ("dev", dev), ("test", test)):
        hwu_split = read_labelled(hwu[name], "text", "category")
        pool = [t for t, y in zip(hwu_split.texts, hwu_split.labels, strict=True) if y not in LEFT_OUT]
        oos = sample(pool, sizes[name], seed)
        kept_counts[name] = len(oos)
        out[name] = (split.texts + oos, split.labels + [OOS_LABEL] * len(oos))
    hwu_labels = sorted(set(read_labelled(hwu["train"], "text", "category").labels))
    info = {
        "in_scope": "banking77",
        "out_of_scope": "hwu64",
        "oos_label": OOS_LABEL,
        "left_out_as_overlapping": list(LEFT_OUT),
        "kept_intents": [y for y in hwu_labels if y not in LEFT_OUT],
        "oos_texts": kept_counts,
        "seed": seed,
        "dev_fraction": dev_fraction,
    }
    return {"splits": out, "info": info}


def write(out_dir: Path, mix: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (texts, labels) in mix["splits"].items():
        with open(out_dir / f"{name}.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "category"])
            w.writerows(zip(texts, labels, strict=True))
    (out_dir / "oos_mix.json").write_text(json.dumps(mix["info"], indent=2) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.oos_mix", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for train.csv, dev.csv, test.csv and oos_mix.json")
    p.add_argument(
        "--datasets-dir", help="folder holding banking77/ and hwu64/ (default: as python -m train)"
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the dev carve and of the samples")
    for name, n in SIZES.items():
        p.add_argument(f"--oos-{name}", type=int, default=n, help=f"out-of-scope {name} texts (default: {n})")
    a = p.parse_args(argv)
    sizes = {"train": a.oos_train, "dev": a.oos_dev, "test": a.oos_test}
    try:
        mix = build(datasets_dir(a.datasets_dir), sizes, a.seed)
    except DataError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 1
    write(Path(a.out), mix)
    counts = {k: len(v[0]) for k, v in mix["splits"].items()}
    print(f"oos mix: {counts} rows, out of scope {mix['info']['oos_texts']} -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
