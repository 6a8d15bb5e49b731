"""``python -m train.exits CKPT --layers 2,4``: add exit heads to an existing checkpoint, frozen.

The fine-tuned classifier is not touched: its ``[CLS]`` hidden states after each chosen layer are
computed once on the training split (the very split training used, rebuilt from the checkpoint's
``metrics.json`` config, so dev stays unseen), and a small head per layer
(:class:`train.exit_heads.ExitHead`, started as a copy of the final head) is trained on them with
cross-entropy; the epoch with the best dev accuracy is kept. The heads go to ``CKPT/exits/``
(replacing earlier ones); ``python -m export`` then exports the classifier as stage graphs and
calibrates where rows may leave (docs/guide/exits.md).

Exit codes as ``python -m train``: 0 written, 1 failed (one ``Error: ...`` line), 2 bad usage.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lrsl_rt.command import CommandParser, positive_int, run_command
from lrsl_rt.errors import UsageError


def parser() -> CommandParser:
    p = CommandParser(
        prog="python -m train.exits",
        description="Train exit heads after chosen layers of a checkpoint's fine-tuned classifier, which "
        "stays frozen; writes CKPT/exits/ for `python -m export` (docs/guide/exits.md).",
    )
    p.add_argument("checkpoint", help="checkpoint directory written by `python -m train`")
    p.add_argument(
        "--layers",
        required=True,
        help="encoder layers after which a head is added, comma-separated, increasing, each below the "
        "classifier's depth, e.g. 2,4 for a 6-layer MiniLM; an early layer saves more compute per row "
        "that leaves, but fewer rows are sure there",
    )
    p.add_argument("--epochs", type=positive_int, default=20, help="head training epochs (default: 20)")
    p.add_argument("--lr", type=float, default=1e-3, help="head learning rate (default: 1e-3)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="head batch size (default: 64)")
    p.add_argument(
        "--datasets-dir",
        help="where the named data set of the checkpoint's training run lives, when it moved since",
    )
    p.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's choice)")
    return p


def parse_layers(spec: str) -> list[int]:
    """``"2,4"`` -> [2, 4]; UsageError unless positive and strictly increasing.

    >>> parse_layers("2, 4")
    [2, 4]
    """
    try:
        layers = [int(x) for x in spec.split(",")]
    except ValueError as e:
        raise UsageError(f"--layers: expected comma-separated integers such as 2,4, got {spec!r}") from e
    if not layers or layers[0] < 1 or any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
        raise UsageError(f"--layers: expected increasing positive layers such as 2,4, got {spec!r}")
    return layers


def main(argv=None) -> int:
    return run_command(
        lambda: _main(argv), interrupted="interrupted; the checkpoint's exits were not changed"
    )


def _main(argv) -> int:
    a = parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    layers = parse_layers(a.layers)
    from .exit_training import HeadSettings, add_exit_heads

    settings = HeadSettings(a.epochs, a.lr, a.batch_size, a.threads, a.datasets_dir)
    add_exit_heads(Path(a.checkpoint), layers, settings, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
