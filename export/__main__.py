"""``python -m export CHECKPOINT_DIR OUT_BUNDLE_DIR``: a thin command line over :func:`export.build_bundle`.

Exit codes: 0 written, 1 export failed (message on stderr, no bundle written), 2 bad usage; errors
go through :func:`lrsl_rt.command.run_command`, like ``lrsl-rt`` and ``python -m train``.
``--max-accuracy-drop`` and ``--exit-budget`` are in percentage points (0.5 = half a point);
``build_bundle`` takes fractions.
"""

from __future__ import annotations

import argparse
import os
import sys

from lrsl_rt.abstain import DEFAULT_BUDGET, DEFAULT_CASCADE_LOSS, DEFAULT_FALLBACK, DEFAULT_RULE
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.defaults import DEFAULT_BATCH_SIZE, MEASURES, PRECISIONS
from lrsl_rt.manifest import ABSTAIN_SCORES

from .optimize import PRESETS  # a light module: its heavy imports are inside its functions


def parser(prog: str = "python -m export") -> argparse.ArgumentParser:
    p = CommandParser(
        prog=prog,
        description="Export an LRSL training checkpoint to an lrsl-rt bundle (ONNX models, tokenizer, "
        "label embeddings, manifest), re-calibrated and checked against the PyTorch models.",
    )
    p.add_argument("checkpoint", help="checkpoint directory written by `python -m train`")
    p.add_argument("out", help="bundle directory to create (built next to it, then renamed into place)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="int8",
        help="int8: for CPUs, with a --preset (default); fp32; fp16: for GPUs",
    )
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help="int8 quantization preset; default: detected from this CPU: static_avx512_vnni on AVX-512 "
        "VNNI CPUs (batch-invariant, and within 3%% of the dynamic avx512_vnni's speed there; a checkpoint "
        "without calib.jsonl or --calibration-texts gets avx512_vnni instead), arm64 on aarch64, else "
        "avx2_s8rr (both dynamic: a text's answer can depend on its batch neighbours; name "
        "static_avx2_s8rr for batch-invariant answers on AVX2); avx2: optimum's AVX2 recipe (uint8 "
        "weights, slower); static_*: the same int8 graphs with activation scales calibrated on training "
        "texts, so a text gets the same result in any batch (docs/guide/quantization.md)",
    )
    p.add_argument(
        "--calibration-texts",
        default=None,
        metavar="FILE",
        help="training texts for the static_* presets: .jsonl (text field), .csv (text column) or .txt "
        "(one per line), e.g. the data set's train.csv; dev and test texts are left out; default: "
        "CHECKPOINT/calib.jsonl",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.5,
        metavar="POINTS",
        help="refuse the bundle when its LRSL accuracy is more than this many percentage points "
        "below the PyTorch models' (test split, or dev without one; default 0.5)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="texts per model call when evaluating; recorded in the bundle, and the runtime reuses it",
    )
    p.add_argument(
        "--no-optimize",
        action="store_true",
        help="skip ONNX Runtime's transformer fusions (for model types it mis-fuses)",
    )
    p.add_argument(
        "--parity-atol",
        type=float,
        default=None,
        help="max |PyTorch - ONNX fp32| of the logits on dev (default 1e-3)",
    )
    p.add_argument(
        "--fusion",
        default=None,
        metavar="auto|RULE:P[:SCOPE]",
        help="fusion rule of the bundle; default: the checkpoint's if fixed in training (--fusion), else "
        "chosen again on dev with the exported models; auto: always chosen again; e.g. logits_cos:2 fixes it",
    )
    p.add_argument(
        "--provider",
        choices=("cpu", "cuda"),
        default="cpu",
        help="ONNX Runtime device for evaluating the bundle",
    )
    p.add_argument(
        "--providers", dest="provider", choices=("cpu", "cuda"), help=argparse.SUPPRESS
    )  # old name
    p.add_argument(
        "--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)"
    )
    a = p.add_argument_group(
        "abstain (checkpoints with out-of-scope dev texts: train --oos-label / --unknown-ratio)"
    )
    a.add_argument(
        "--abstain",
        default="auto",
        metavar="auto|off|SCORE",
        help="out-of-scope score: auto keeps the best dev AUROC among "
        f"{', '.join(ABSTAIN_SCORES)} whose cost fits --abstain-budget; off exports no abstain decision "
        "(default: auto)",
    )
    a.add_argument(
        "--abstain-budget",
        type=float,
        default=DEFAULT_BUDGET * 100,
        metavar="PCT",
        help="the most texts, in percent of the in-scope dev texts, that the abstain score may send to the "
        "embedder beyond the gate's hard ones (knn and max_cos run it; the cascade keeps the classifier's "
        "sure texts away from it); a score over it is not chosen by auto. Raise it when accuracy on "
        "out-of-scope texts matters more than latency (default: %(default)g)",
    )
    a.add_argument(
        "--knn-max-rows",
        type=int,
        default=None,
        metavar="N",
        help="ship at most N training embeddings for the knn score (a seeded subsample keeping each class's "
        "share): its cost per scored text and the bundle's size grow with the rows; the export's metrics "
        "show the AUROC at a few sizes so you can choose (default: all rows)",
    )
    a.add_argument(
        "--abstain-cascade-loss",
        type=float,
        default=DEFAULT_CASCADE_LOSS * 100,
        metavar="PCT",
        help="the cascade's price: at most this percent of the out-of-scope dev texts that the score catches "
        "may be let through because the classifier is sure of them; 0 scores every text the score would "
        "catch, a larger value skips more texts (default: %(default)g)",
    )
    a.add_argument(
        "--abstain-threshold",
        default=DEFAULT_RULE,
        metavar="drop:P|recall:R|X",
        help="drop:P: the threshold that catches the most out-of-scope dev texts while losing at most P points "
        "of in-scope dev accuracy; recall:R: the one that catches a share R of them; X: that value "
        f"(default: {DEFAULT_RULE})",
    )
    a.add_argument(
        "--fallback-label",
        default=DEFAULT_FALLBACK,
        help=f"the label an out-of-scope text gets (default: {DEFAULT_FALLBACK})",
    )
    exits = p.add_mutually_exclusive_group()
    exits.add_argument(
        "--exits",
        dest="exits",
        action="store_true",
        default=None,
        help="ship the classifier as stage graphs with early exits, from the checkpoint's exit heads "
        "(`python -m train.exits CKPT --layers 2,4`); the default when the checkpoint has heads; fails "
        "without them (docs/guide/exits.md)",
    )
    exits.add_argument(
        "--no-exits",
        dest="exits",
        action="store_false",
        default=None,  # one default for the pair (--exits'), not store_false's True, shown in --help
        help="ship the single classifier graph even when the checkpoint has exit heads",
    )
    p.add_argument(
        "--exit-budget",
        type=float,
        default=0.2,
        metavar="POINTS",
        help="dev accuracy, in percentage points, that the exits may cost against the no-exit path; the "
        "thresholds are those that save the most layers within it (default 0.2)",
    )
    p.add_argument(
        "--measure",
        choices=MEASURES,
        default=None,
        help="the gate's and the exits' sureness measure: variance (the paper's top-k variance), margin, "
        "max_prob or entropy; the threshold is the mean of the measure over the dev mistakes; default: "
        "the checkpoint's (variance unless trained with --measure)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle at OUT")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m export") -> int:
    """``prog``: the name in usage and errors (``lrsl-rt export`` runs this same function)."""
    return run_command(lambda: _main(argv, prog), interrupted="interrupted; no bundle was written")


def _main(argv: list[str] | None, prog: str) -> int:
    args = parser(prog).parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the checkpoint has every file
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from . import build_bundle
    from .abstain import AbstainSettings

    out = build_bundle(
        args.checkpoint,
        args.out,
        precision=args.precision,
        preset=args.preset,
        max_accuracy_drop=args.max_accuracy_drop / 100.0,
        batch_size=args.batch_size,
        optimize=not args.no_optimize,
        force=args.force,
        providers=args.provider,
        threads=args.threads,
        parity_atol=args.parity_atol,
        fusion=args.fusion,
        calibration_texts=args.calibration_texts,
        abstain=AbstainSettings(
            args.abstain,
            args.abstain_threshold,
            args.fallback_label,
            budget=args.abstain_budget / 100.0,
            cascade_loss=args.abstain_cascade_loss / 100.0,
            knn_max_rows=args.knn_max_rows,
        ),
        exits=args.exits,
        measure=args.measure,
        exit_budget=args.exit_budget / 100.0,
    )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
