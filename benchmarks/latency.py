"""Latency, throughput, memory and start-up time of lrsl-rt against PyTorch and Optimum, on real texts.

    python -m benchmarks.latency --bundle DIR [--bundle-fp32 DIR] [--checkpoint DIR] [--texts FILE]
        [--threads N] [--batch-sizes 1,8,32] [--repeats R] [--provider cpu|cuda] [--out FILE.json]
        [--plot FILE.png] [--quick]

Contenders: the PyTorch eager fp32 classifier (the baseline; needs --checkpoint), Optimum's
ORTModelForSequenceClassification quantized to int8 by ORTQuantizer (needs --checkpoint and optimum;
exported once into a cache beside --out, else a temporary directory), lrsl_rt's classifier alone
(``Reranker.logits`` + argmax) and lrsl_rt's full LRSL path (``Reranker.predict``), each for the int8
bundle and, with --bundle-fp32, the fp32 one. See ``contenders.py`` for what each one times.

Method:

- One process per contender. ONNX Runtime's intra-op threads and torch's threads spin for a while
  after each run, so contenders timed in one process steal cores from each other. This script
  re-invokes itself (hidden ``--worker NAME``) for each contender; the worker prints JSON.
- Rounds: A B C A B C ... ``--repeats`` times (default 3); every figure is the median of the rounds
  with its min-max range (batch-1 timings vary on a shared machine).
- One thread budget: ``--threads N`` (default: the usable CPUs) is torch.set_num_threads, ONNX
  Runtime's intra-op threads and OMP_NUM_THREADS for every contender; the tokenizers' own thread pool
  is off (TOKENIZERS_PARALLELISM=false). Thread spinning is each library's default unless
  ``--spinning on|off`` (ONNX Runtime: on; lrsl_rt: on during a run, off after it).
  ``lrsl_int8_shared`` is the full int8 path with ``thread_pool="shared"``: one process-wide pool, whose threads always spin.
- The same texts in the same order for all: ``--n-texts`` evenly spaced texts of the file (default
  500; Banking77's test split by default), truncated to the bundle's max length.
- Batch-1 latency is per query, tokenization included, then without it (inputs tokenized beforehand,
  the model -- and for LRSL the gate, embedder and fusion -- alone). Throughput is queries/s over full
  batches of each size, end to end. Accuracy and hard share come from the batch-1 predictions.
- Peak RSS is the worker's ru_maxrss (interpreter and libraries included); load time is the model or
  bundle load after the libraries were imported (imports are in the JSON as ``import_s``).
- Start-up: ``import lrsl_rt`` in fresh interpreters and a cold ``lrsl-rt predict`` process, wall time
  from process start, medians; the OS file cache is warm after the first run.
- int8 MAC utilisation: see ``machine.py`` for the MAC count and the stated peak assumptions.

``--contenders a,b`` runs a subset; ``--quick`` is a smoke run (12 texts, 1 round). Modules: this
script plans and runs the rounds; ``contenders.py`` (what each contender does), ``measure.py`` (the
timing inside a worker), ``optimum_model.py`` (Optimum's export), ``startup.py``, ``summary.py``
(medians, MAC utilisation), ``latency_report.py`` (markdown and plot), ``machine.py`` (CPU, peak).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

from benchmarks.lib import latency_report as report
from benchmarks.lib import optimum_model
from benchmarks.lib.common import (
    DEFAULT_TEXTS,
    bench_env,
    emit_result,
    read_texts,
    run_json,
    subsample,
    write_jsonl,
)
from benchmarks.lib.contenders import DESCRIPTIONS
from benchmarks.lib.machine import cpu_info, versions
from benchmarks.lib.record import finish_record, run_record
from benchmarks.lib.startup import startup
from benchmarks.lib.summary import mac_utilisation, summarize, token_lengths
from lrsl_rt.command import CommandParser, run_command
from lrsl_rt.errors import LrslError, UsageError

QUICK = {"n_texts": 12, "repeats": 1, "warmup": 2, "startup_runs": 2}


def _abstains(bundle) -> bool:
    """Whether the bundle's manifest has an abstain section (its default path then abstains)."""
    try:
        return bool(json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8")).get("abstain"))
    except (OSError, ValueError):
        return False  # the bundle's load reports what is wrong with it


def parse_args(argv=None) -> argparse.Namespace:
    p = CommandParser(
        prog="python -m benchmarks.latency",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, metavar="DIR", help="the int8 lrsl-rt bundle")
    p.add_argument(
        "--bundle-fp32", metavar="DIR", help="the fp32 bundle (its contenders are skipped without it)"
    )
    p.add_argument("--checkpoint", metavar="DIR", help="training checkpoint: PyTorch and Optimum contenders")
    p.add_argument("--texts", metavar="FILE", help=f".txt/.csv/.jsonl texts (default {DEFAULT_TEXTS})")
    p.add_argument(
        "--n-texts", type=int, help="evenly spaced texts to use, 0 for all (default 500, --quick 12)"
    )
    p.add_argument("--threads", type=int, help="thread budget of every contender (default: usable CPUs)")
    p.add_argument("--batch-sizes", default="1,8,32", help="throughput batch sizes (default 1,8,32)")
    p.add_argument("--repeats", type=int, help="rounds over all contenders (default 3, --quick 1)")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu", help="ONNX Runtime device")
    p.add_argument(
        "--spinning", choices=("default", "on", "off"), default="default", help="ORT thread spinning"
    )
    p.add_argument("--warmup", type=int, help="warm-up queries at batch 1 (default 20, --quick 2)")
    p.add_argument(
        "--startup-runs", type=int, help="fresh processes per start-up figure (default 7, --quick 2)"
    )
    p.add_argument(
        "--contenders", help="comma-separated subset of contenders to run (default: all that apply)"
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per worker process")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a plot (default: next to --out)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    hidden = argparse.SUPPRESS
    p.add_argument("--worker", help=hidden)
    p.add_argument("--data", help=hidden)
    p.add_argument("--optimum-dir", help=hidden)
    p.add_argument("--preset", help=hidden)
    p.add_argument("--max-length", type=int, help=hidden)
    args = p.parse_args(argv)
    try:
        args.batch_sizes = sorted({int(b) for b in str(args.batch_sizes).split(",") if b.strip()})
    except ValueError:
        p.error(f"--batch-sizes must be integers separated by commas, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--batch-sizes must be positive")
    defaults = QUICK if args.quick else {"n_texts": 500, "repeats": 3, "warmup": 20, "startup_runs": 7}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.threads = args.threads or cpu_info()["usable_cpus"]
    return args


# ---- the worker side --------------------------------------------------------------------------
def worker_main(args) -> int:
    from benchmarks.lib.measure import measure

    if args.worker == "prepare-optimum":
        emit_result(optimum_model.prepare_optimum(args.checkpoint, args.optimum_dir, args.preset))
        return 0
    data = read_texts(args.data)
    emit_result(measure(args.worker, args, data.texts, data.labels))
    return 0


# ---- the plan ---------------------------------------------------------------------------------
def make_plan(args, log) -> tuple[list[str], dict, dict]:
    """(contender names in round order, skipped name -> reason, settings shared with the workers)."""
    from lrsl_rt.manifest import read_manifest

    manifest = read_manifest(args.bundle)
    if manifest.precision != "int8":
        log(
            f"warning: --bundle {args.bundle} is {manifest.precision}, not int8; the *_int8 rows show it anyway"
        )
    settings = {
        "max_length": manifest.tokenizer.max_length,
        "preset": manifest.preset,
        "provider": args.provider,
    }
    names, skipped = [], {}
    has_torch = all(find_spec(m) for m in ("torch", "transformers"))
    if not args.checkpoint:
        skipped["pytorch_fp32"] = skipped["optimum_int8"] = "needs --checkpoint"
    elif not has_torch:
        skipped["pytorch_fp32"] = skipped["optimum_int8"] = "torch/transformers not importable"
    else:
        names.append("pytorch_fp32")
        if optimum_model.optimum_available():
            names.append("optimum_int8")
        else:
            skipped["optimum_int8"] = "optimum.onnxruntime not importable (pip install optimum-onnx)"
    names += ["lrsl_clf_int8", "lrsl_int8", "lrsl_int8_shared"]
    if args.spinning == "off":
        names.remove("lrsl_int8_shared")
        skipped["lrsl_int8_shared"] = "--spinning off: the shared pool's threads always spin after a run"
    if _abstains(args.bundle):
        names.insert(names.index("lrsl_int8") + 1, "lrsl_int8_noabstain")
    else:
        skipped["lrsl_int8_noabstain"] = "the bundle does not abstain"
    if args.bundle_fp32:
        names.insert(names.index("lrsl_clf_int8") + 1, "lrsl_clf_fp32")
        names.insert(names.index("lrsl_int8") + 1, "lrsl_fp32")
    else:
        skipped["lrsl_clf_fp32"] = skipped["lrsl_fp32"] = "needs --bundle-fp32"
    if args.contenders:
        wanted = {c.strip() for c in args.contenders.split(",") if c.strip()}
        unknown = wanted - set(DESCRIPTIONS)
        if unknown:
            raise ValueError(f"unknown contender(s) {sorted(unknown)}; choose from {list(DESCRIPTIONS)}")
        skipped.update({n: "not in --contenders" for n in names if n not in wanted})
        names = [n for n in names if n in wanted]
    if args.provider == "cuda":
        import onnxruntime

        available = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            settings["provider"] = "cpu"
            settings["provider_note"] = (
                f"--provider cuda asked, but this onnxruntime has no CUDAExecutionProvider (available: {available}); "
                "THE ONNX RUNTIME CONTENDERS RAN ON CPU"
            )
            log("WARNING: " + settings["provider_note"])
    return names, skipped, settings


# ---- running ----------------------------------------------------------------------------------
def worker_cmd(args, name: str, data: Path, settings: dict, optimum_dir: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.latency", "--worker", name, "--data", str(data)]
    cmd += ["--bundle", str(args.bundle), "--threads", str(args.threads), "--warmup", str(args.warmup)]
    cmd += ["--batch-sizes", ",".join(map(str, args.batch_sizes)), "--provider", settings["provider"]]
    cmd += ["--spinning", args.spinning, "--max-length", str(settings["max_length"])]
    for flag, value in (
        ("--bundle-fp32", args.bundle_fp32),
        ("--checkpoint", args.checkpoint),
        ("--optimum-dir", optimum_dir),
    ):
        if value:
            cmd += [flag, str(value)]
    return cmd


def run_rounds(args, names, data: Path, settings, optimum_dir, log) -> tuple[dict, dict]:
    """Results per contender (one per round) and errors per contender."""
    env = bench_env(args.threads)
    rounds: dict[str, list] = {n: [] for n in names}
    errors: dict[str, list] = {}
    for r in range(args.repeats):
        for name in names:
            log(f"round {r + 1}/{args.repeats}: {name}")
            try:
                rounds[name].append(
                    run_json(worker_cmd(args, name, data, settings, optimum_dir), env, args.timeout)
                )
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                errors.setdefault(name, []).append(str(e))
                log(f"  failed: {e}")
    return rounds, errors


# ---- main -------------------------------------------------------------------------------------
def prepare_optimum_model(args, cpu, settings, tmp: Path, log) -> tuple[Path, dict]:
    """Export + quantize the classifier with Optimum once, in a subprocess (torch stays out of this one)."""
    preset = optimum_model.optimum_preset(cpu["int8_flags"], cpu["machine"], settings["preset"])
    root = Path(args.out).resolve().parent / ".bench_cache" if args.out else tmp
    optimum_dir = optimum_model.cache_dir(args.checkpoint, root, preset)
    log(f"Optimum: exporting and quantizing the classifier ({preset}) into {optimum_dir}")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.latency",
        "--worker",
        "prepare-optimum",
        "--bundle",
        str(args.bundle),
    ]
    cmd += ["--checkpoint", str(args.checkpoint), "--optimum-dir", str(optimum_dir), "--preset", preset]
    return optimum_dir, run_json(cmd, bench_env(args.threads), args.timeout)


def method(args, settings) -> dict:
    return {
        "summary": "one subprocess per contender, contenders alternated over rounds; medians across rounds with min-max",
        "threads": args.threads,
        "repeats": args.repeats,
        "batch_sizes": args.batch_sizes,
        "warmup": args.warmup,
        "spinning": args.spinning,
        "provider_requested": args.provider,
        "provider_used": settings["provider"],
        "provider_note": settings.get("provider_note"),
        "quick": args.quick,
        "max_length": settings["max_length"],
    }


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    run = run_record()
    try:
        data = subsample(read_texts(args.texts or DEFAULT_TEXTS), args.n_texts)
        names, skipped, settings = make_plan(args, log)
    except (ValueError, OSError, LrslError) as e:  # bad paths, an unreadable bundle or texts file
        raise UsageError(str(e)) from e
    cpu = cpu_info()
    optimum_dir, optimum_info, errors = None, None, {}
    with tempfile.TemporaryDirectory(prefix="lrsl_bench_") as tmp:
        data_file = write_jsonl(Path(tmp) / "texts.jsonl", data)
        if "optimum_int8" in names:
            try:
                optimum_dir, optimum_info = prepare_optimum_model(args, cpu, settings, Path(tmp), log)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                errors["optimum_int8"] = [f"export failed: {e}"]
                names.remove("optimum_int8")
        rounds, round_errors = run_rounds(args, names, data_file, settings, optimum_dir, log)
        errors.update(round_errors)
    log("start-up times")
    try:
        start = startup(args.bundle, args.threads, args.startup_runs)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        start, errors["startup"] = None, [str(e)]
    summary = summarize(rounds)
    lengths = token_lengths(args.bundle, data.texts)
    result = {
        "method": method(args, settings),
        "texts": {"source": data.source, "n": len(data), "labels": data.labels is not None},
        "machine": {"cpu": cpu, "versions": versions()},
        "baseline": "pytorch_fp32" if "pytorch_fp32" in summary else None,
        "contenders": {
            n: {"description": DESCRIPTIONS[n], "summary": summary[n], "rounds": rounds[n]} for n in summary
        },
        "skipped": skipped,
        "errors": errors,
        "optimum_export": optimum_info,
        "startup": start,
        "mac_utilisation": mac_utilisation(
            args.checkpoint, lengths, summary, cpu, args.threads, max(args.batch_sizes)
        ),
    }
    print(report.markdown(result))
    result["run"] = finish_record(run, 1 if errors else 0)
    write_outputs(args, result, log)
    return 1 if errors else 0


def write_outputs(args, result: dict, log) -> None:
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        log(f"wrote {out}")
    plot = args.plot or (str(Path(args.out).with_suffix(".png")) if args.out else None)
    if plot and result["contenders"]:
        if find_spec("matplotlib") is None:
            log("matplotlib is not installed: no plot (pip install 'lrsl-rt[bench]')")
            return
        report.plot(result, Path(plot))
        log(f"wrote {plot}")


if __name__ == "__main__":
    sys.exit(main())
