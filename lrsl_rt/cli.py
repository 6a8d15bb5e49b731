"""``lrsl-rt``: predict, eval, info and serve, a thin layer over the library; train and export.

``lrsl-rt train`` and ``lrsl-rt export`` are ``python -m train`` and ``python -m export`` under the
one command (:mod:`lrsl_rt.pipeline_commands`): their arguments go to those packages' parsers.

The bundle is ``--bundle DIR``; without it, the environment variable ``LRSL_RT_BUNDLE``; without that,
``artifacts/banking77/bundle`` (``make bundle``), then ``artifacts/banking77-quick/bundle`` (``make
demo``) under the current directory (:mod:`lrsl_rt.bundle_dir`). No bundle, or a bundle directory
that does not exist, is a usage error (exit 2); one that exists but is broken is a failed run (exit 1).

``predict`` streams: it reads the input in chunks of 1024 records, labels each chunk and writes one
output record per input record, in order (formats and bad-record rules: :mod:`lrsl_rt.io`). With
``--on-error stop`` (the default) a bad record ends the run with exit 1 after the records before it
were written; with ``--on-error record`` it becomes ``{"line": N, "error": "..."}`` in place.
``eval`` reads the whole file and calls ``Reranker.predict`` once with the batch size the export
used (recorded in the manifest), so it reproduces the export's hard set and accuracy exactly.

Errors print one line ``Error: ...`` on stderr, with no traceback (:func:`lrsl_rt.command.run_command`,
shared with ``python -m train`` and ``python -m export``): exit 1 for a failed run
(:class:`~lrsl_rt.errors.LrslError`), 2 for bad usage (argparse errors, ``UsageError``). Warnings
(a CUDA fall-back, say) print as ``Warning: ...``. The library, numpy and onnxruntime are imported
inside the commands, so ``lrsl-rt --help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path

from .bundle_dir import FALLBACKS, no_bundle_message, require_bundle, resolve_bundle
from .command import CommandParser, positive_int, run_command
from .defaults import DEFAULT_BATCH_SIZE
from .errors import InputError, RecordStop, UsageError
from .pipeline_commands import COMMANDS as PIPELINE_COMMANDS
from .pipeline_commands import add_pipeline_parsers, run_pipeline

CHUNK_SIZE = 1024


_Parser = CommandParser  # bad flags are UsageErrors; --help shows defaults


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="lrsl-rt", description="Text classification with LRSL reranking of hard samples.")
    parser.add_argument("--version", action="version", version=f"lrsl-rt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def bundle_opt(p):
        p.add_argument(
            "--bundle",
            metavar="DIR",
            help=f"bundle directory (default: {FALLBACKS})",
        )

    def text_field_opt(p):
        # one name with `python -m train`; the old --field (JSONL only) and --column (CSV only) still work
        p.add_argument(
            "--text-field", metavar="NAME", help="JSONL field / CSV column holding the text (default text)"
        )
        p.add_argument("--field", help=argparse.SUPPRESS)
        p.add_argument("--column", help=argparse.SUPPRESS)

    def runtime_opts(p):
        p.add_argument(
            "--batch-size",
            type=positive_int,
            help="texts per model call (default: the batch size the export evaluated the bundle with, "
            f"else {DEFAULT_BATCH_SIZE})",
        )
        p.add_argument(
            "--provider", choices=("cpu", "cuda"), default="cpu", help="ONNX Runtime device (default cpu)"
        )
        p.add_argument(
            "--threads",
            type=positive_int,
            help="intra-op threads per model, or in all with --thread-pool shared (default: one per core)",
        )
        p.add_argument(
            "--thread-pool",
            choices=("shared", "session"),
            default="session",
            help="session: each model its own threads, which spin during its runs only (default); "
            "shared: one process-wide pool for both models, whose threads spin briefly after each run (faster)",
        )

    p = sub.add_parser(
        "predict", help="label texts", description="Label texts from arguments, --input FILE or stdin."
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (else --input, else stdin)")
    bundle_opt(p)
    p.add_argument(
        "--input", metavar="FILE", help="a .txt (one text per line), .jsonl or .csv file; - for stdin"
    )
    text_field_opt(p)
    p.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument(
        "--format",
        choices=("jsonl", "csv", "table"),
        help="output format (default: by --output extension; else table on a terminal, jsonl otherwise)",
    )
    p.add_argument(
        "--explain", action="store_true", help="add top-k logits, fused scores, variance, similarities"
    )
    p.add_argument(
        "--on-error",
        choices=("stop", "record"),
        default="stop",
        help="a bad input record stops the run (default) or gives an error record in its place",
    )
    abstain_opt(p)
    runtime_opts(p)
    ray_opts(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "eval", help="accuracy on a labelled file", description="Accuracy of a bundle on a labelled file."
    )
    bundle_opt(p)
    p.add_argument(
        "--input", metavar="FILE", required=True, help="a .jsonl or .csv file with texts and labels"
    )
    text_field_opt(p)
    p.add_argument(
        "--label-field", default="label", help="JSONL field / CSV column holding the label (default label)"
    )
    p.add_argument("--report", metavar="DIR", help="write report.json and variance.png here")
    p.add_argument(
        "--oos-label",
        metavar="NAME",
        help="records with this label belong to none of the bundle's labels: report out-of-scope recall, "
        "in-scope accuracy and macro-F1 (known labels + unknown) of the abstain decision",
    )
    abstain_opt(p)
    runtime_opts(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "info", help="versions, providers and a bundle summary", description="Environment and bundle summary."
    )
    bundle_opt(p)
    p.add_argument("--verify", action="store_true", help="also check the sha256 of each bundle file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)
    _add_serve_parser(sub, bundle_opt, runtime_opts)
    add_pipeline_parsers(sub)
    return parser


def _add_serve_parser(sub, bundle_opt, runtime_opts) -> None:
    from .serve.env import read_env_defaults
    from .serve.settings import add_serve_arguments

    p = sub.add_parser(
        "serve",
        help="HTTP service with micro-batching (needs the serve extra)",
        description="Serve POST /predict, the Open Inference Protocol under /v2, /health, /info and /metrics "
        "over HTTP (docs/guide/serve.md). Each flag can be set by the environment variable its help names; "
        "a flag given on the command line wins.",
    )
    bundle_opt(p)
    runtime_opts(p)
    add_serve_arguments(p, positive_int)
    read_env_defaults(p)
    p.set_defaults(func=cmd_serve)


def abstain_opt(p):
    p.add_argument(
        "--abstain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give the fallback label to texts that fit none of the labels (default: on when the bundle "
        "has an abstain calibration; records then carry out_of_scope)",
    )


def ray_opts(p):
    g = p.add_argument_group("scale-out (--engine ray; docs/guide/ray.md)")
    g.add_argument(
        "--engine",
        choices=("inprocess", "ray"),
        default="inprocess",
        help="inprocess (default) or ray: --input is a path or glob, --output a directory",
    )
    g.add_argument("--output-format", choices=("parquet", "jsonl"), help="ray output files (default parquet)")
    g.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (default: start a local one)")
    g.add_argument(
        "--actors", type=positive_int, help="bundle-loaded actors (default: cluster CPUs / --cpus-per-actor)"
    )
    g.add_argument(
        "--cpus-per-actor", type=positive_int, help="CPUs and ONNX Runtime threads per actor (default 1)"
    )


def _load(args):
    """The Reranker; without --batch-size it uses the export's, so `eval` sees the export's batches."""
    from .reranker import Reranker

    return Reranker.from_bundle(
        require_bundle(args.bundle),
        providers=args.provider,
        threads=args.threads,
        batch_size=args.batch_size,
        thread_pool=args.thread_pool,
    )


def cmd_predict(args) -> int:
    if args.engine == "ray":
        from .ray import run_job  # noqa: F401 - raises a UsageError naming the extra without Ray
        from .ray.job import run_from_args

        return run_from_args(args)
    if args.output_format or args.ray_address or args.actors or args.cpus_per_actor:
        raise UsageError("--output-format, --ray-address, --actors and --cpus-per-actor need --engine ray")
    from .io import RecordReader, Writer, output_format, records_from_args
    from .output import check_not_input, require_stdout
    from .rows import predict_rows

    if args.texts and args.input:
        raise UsageError("give texts as arguments or --input FILE, not both")
    if args.output and not args.texts:
        check_not_input(args.output, args.input)
    elif not args.output:
        require_stdout()
    if args.texts:
        reader = None
        records = records_from_args(args.texts)
    else:
        source = args.input or "-"
        if source == "-" and sys.stdin is not None and sys.stdin.isatty():
            raise UsageError("no input: give texts as arguments, --input FILE, or pipe texts on stdin")
        reader = RecordReader(source, field=args.field, column=args.column)
        records = iter(reader)
    fmt = output_format(args.format, args.output, sys.stdout)
    reranker = _load(args)
    with _open_output(args.output) as out, _Progress(reader) as progress:
        width = max(len("reranked from"), *(len(label) for label in reranker.labels))
        fields = reranker.record_fields(args.abstain)
        writer = Writer(out, fmt, explain=args.explain, label_width=width, extra_fields=fields)
        while chunk := _take(records, CHUNK_SIZE):
            bad = next((i for i, r in enumerate(chunk) if r.error), None)
            stop_at = None
            if args.on_error == "stop" and bad is not None:
                chunk, stop_at = chunk[:bad], chunk[bad]
            texts, errors = [r.text for r in chunk], [r.error for r in chunk]
            predictions = predict_rows(reranker, texts, errors, explain=args.explain, abstain=args.abstain)
            for r, prediction in zip(chunk, predictions, strict=True):
                writer.write(r, prediction)
            progress.update(len(chunk))
            if stop_at is not None:
                raise RecordStop(f"{stop_at.where()}: {stop_at.error}")
    return 0


def cmd_eval(args) -> int:
    from .accuracy import format_report
    from .io import RecordReader
    from .report import evaluate, format_out_of_scope, require_matplotlib, write_report

    reader = RecordReader(args.input, field=args.field, column=args.column, label_field=args.label_field)
    if args.report:
        require_matplotlib()  # fail before the run, not after
    reranker = _load(args)
    abstain = reranker.abstains(args.abstain)
    label_ids = {label: i for i, label in enumerate(reranker.labels)}
    if args.oos_label:
        label_ids[args.oos_label] = -1  # out of scope
    texts, gold = [], []
    for r in reader:
        if r.error:
            raise InputError(f"{r.where()}: {r.error}")
        if r.label not in label_ids:
            shown = ", ".join(reranker.labels[:5]) + (", ..." if len(reranker.labels) > 5 else "")
            raise InputError(
                f"{r.where()}: label {r.label!r} is not one of the bundle's {len(label_ids)} labels ({shown})"
            )
        texts.append(r.text)
        gold.append(label_ids[r.label])
    if not texts:
        raise InputError(f"{args.input}: no records to evaluate")
    result = evaluate(reranker, texts, gold, abstain=abstain)
    print(format_report(result["report"]))
    if "out_of_scope" in result:
        print(format_out_of_scope(result["out_of_scope"]))
    if args.report:
        for path in write_report(Path(args.report), result, reranker, args.input):
            print(f"wrote {path}")
    return 0


def cmd_info(args) -> int:
    import json

    from .info import bundle_summary, environment, format_bundle, format_environment

    env = environment()
    summary, note = None, None
    if resolve_bundle(args.bundle)[0] is None:
        note = no_bundle_message()
    else:
        summary = bundle_summary(require_bundle(args.bundle), verify=args.verify)
    if args.json:
        print(json.dumps({"environment": env, "bundle": summary, "note": note}, indent=2, ensure_ascii=False))
    else:
        print(format_environment(env))
        print()
        print(format_bundle(summary) if summary else note)
    return 0


def cmd_serve(args) -> int:
    from .serve import run

    return run(args)


@contextlib.contextmanager
def _open_output(path: str | None):
    """The --output file (created only once the bundle has loaded, renamed into place at the end:
    :mod:`lrsl_rt.output`), or stdout."""
    from .output import atomic_output, stdout_output

    with atomic_output(path) if path else stdout_output() as f:
        yield f


def _take(it, n: int) -> list:
    chunk = []
    for item in it:
        chunk.append(item)
        if len(chunk) == n:
            break
    return chunk


class _Progress:
    """A plain progress line on stderr, drawn only on a terminal and once the input is longer than a chunk."""

    def __init__(self, reader):
        self.reader, self.done, self.drawn, self.start = reader, 0, False, time.monotonic()
        self.enabled = reader is not None and sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled or self.done <= CHUNK_SIZE:
            return
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        total = self.reader.total_bytes
        pct = f" {100 * self.reader.bytes_read / total:5.1f}%" if total else ""
        sys.stderr.write(f"\r{self.done:>10,} texts{pct}  {rate:,.0f} texts/s ")
        sys.stderr.flush()
        self.drawn = True

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.drawn:
            sys.stderr.write("\n")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"Warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PIPELINE_COMMANDS:  # python -m train / export, flags and all
        return run_pipeline(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    if args.command is None:
        raise UsageError(
            "choose a command: predict, eval, info, serve, train or export (see `lrsl-rt --help`)"
        )
    if hasattr(args, "text_field"):  # the readers take the JSONL field and the CSV column apart
        args.field = args.field or args.text_field or "text"
        args.column = args.column or args.text_field or "text"
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return args.func(args)
