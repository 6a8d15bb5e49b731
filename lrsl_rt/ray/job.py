"""``lrsl-rt predict --engine ray``: read, predict, write to a temporary directory, check, rename.

The steps, in order:

1. expand ``--input`` (a path or a glob) to files and count their records on the driver with the
   job's own reader (:func:`lrsl_rt.ray._source.count_rows`), which also stops a bad file before any
   cluster work;
2. join the cluster at ``--ray-address``, or start a local one; put the bundle into the object
   store (:mod:`lrsl_rt.ray._ship`: the nodes need no copy of it);
3. read (on the driver's node, in blocks spread over the actors) -> predict (``--actors`` x
   ``--cpus-per-actor``, the text left out of the output) -> write Parquet or JSON lines into
   ``.<DIR>.incomplete-<id>`` beside ``--output`` (on the driver's node), while
   :class:`~lrsl_rt.ray._nodes.NodeWatch` reports lost nodes and stops a job whose lost work cannot
   go on;
4. read back the ids of what was written and check rows in = rows out with no row id twice; print
   it, with the rows each node labelled;
5. rename the directory to ``--output``. Only a checked job has a directory by that name.

A job that fails removes its temporary directory (after leaving the cluster, so that none of its
write tasks is still running); one whose check fails leaves it (named ``incomplete``) for
inspection and exits 1.

One Ray Data default is changed for the job's own datasets: when the cluster has room for every
actor, no batch is handed out before all of them have loaded the bundle (``wait_for_min_actors_s``),
so that the first actor up does not take every batch of a short job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import uuid
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data
from ray.data.datasource import BlockBasedFileDatasink

from .. import errors
from ..bundle_dir import require_bundle
from ..errors import LrslError, UsageError
from ._nodes import NODE_LOSS_STALL_S, NodeWatch, node_names, start_tally
from ._predict import predict_dataset, ray_remote_args_allowed
from ._ship import ship_bundle
from ._source import IO_CPUS, count_rows, expand_inputs, on_driver_node, read_inputs

OUTPUT_FORMATS = ("parquet", "jsonl")
ACTOR_START_S = 600  # longest wait for the actors to load the bundle, when the cluster has room for all


def run_from_args(args) -> int:
    """The CLI's entry: the predict flags in, exit code out.

    Ray Data logs a failed task's traceback; the CLI reports the failure as one ``Error:`` line
    instead, so Ray Data's log records below CRITICAL are dropped here (not in the library).
    """
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)

    if args.texts:
        raise UsageError("--engine ray reads --input files; give texts in a file")
    for flag, value, instead in (
        ("--threads", args.threads, "--cpus-per-actor"),
        ("--format", args.format, "--output-format"),
    ):
        if value is not None:
            raise UsageError(f"{flag} does not apply to --engine ray; use {instead}")
    if args.provider != "cpu":
        raise UsageError("--engine ray runs on CPU actors; --provider cuda is not supported")
    if not args.input or not args.output:
        raise UsageError("--engine ray needs --input PATH_OR_GLOB and --output DIR")
    bundle = require_bundle(args.bundle)
    run_job(
        args.input,
        args.output,
        bundle.resolve(),
        output_format=args.output_format or "parquet",
        field=args.field,
        column=args.column,
        on_error=args.on_error,
        explain=args.explain,
        abstain=args.abstain,
        address=args.ray_address,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor or 1,
        model_batch_size=args.batch_size,
    )
    return 0


def run_job(
    inputs: str | list[str],
    output: str,
    bundle: str | os.PathLike,
    *,
    output_format: str = "parquet",
    field: str = "text",
    column: str = "text",
    on_error: str = "stop",
    explain: bool = False,
    abstain: bool | None = None,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    model_batch_size: int | None = None,
    log=print,
    node_loss_timeout: float = NODE_LOSS_STALL_S,
    on_progress=None,
) -> dict:
    """Label every record of ``inputs`` into the directory ``output``; returns the counts.

    ``node_loss_timeout``: after a node is lost, the seconds without a labelled batch after which
    the job stops (no room for the lost node's actors); ``on_progress(rows_by_node)``: called about
    every second with the rows labelled so far per node id.
    """
    if output_format not in OUTPUT_FORMATS:
        raise UsageError(f"output format {output_format!r}: use one of {OUTPUT_FORMATS}")
    out = Path(output)
    if out.exists():
        raise UsageError(f"--output {out} exists; choose a new directory (a job never overwrites one)")
    if not out.parent.is_dir():
        raise UsageError(f"--output {out}: the directory {out.parent} does not exist")
    files = expand_inputs(inputs)
    rows_in = sum(count_rows(f, field=field, column=column) for f in files)
    started = _connect(address)
    tmp = out.resolve().parent / f".{out.name}.incomplete-{uuid.uuid4().hex[:8]}"  # absolute: for the workers
    watch = None
    try:
        actors, fit = _actor_count(actors, cpus_per_actor)
        tally = start_tally()
        with _job_context(wait_for_actors=fit):
            ds = read_inputs(files, field=field, column=column, rows=rows_in, min_blocks=actors)
            ds = predict_dataset(
                ds,
                ship_bundle(bundle),
                "text",
                actors=actors,
                cpus_per_actor=cpus_per_actor,
                batch_size=None,  # one call per block: read_inputs cut them for the actors
                model_batch_size=model_batch_size,
                on_error=on_error,
                explain=explain,
                abstain=abstain,
                keep_text=False,
                tally=tally,
            )
            with NodeWatch(tally, rows_in, stall_s=node_loss_timeout, on_progress=on_progress) as watch:
                _write(ds, tmp, output_format)
        by_node, names = ray.get(tally.by_node.remote()), node_names()
    except BaseException as e:
        if started:
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, KeyboardInterrupt) and watch is not None and watch.failure is not None:
            raise watch.failure from None  # the watch stopped the job
        err = _as_lrsl_error(e)
        if err is e:
            raise
        raise err from e
    if started:
        ray.shutdown()
    counts = check_output(tmp, output_format, rows_in)
    os.rename(tmp, out)
    nodes = {names.get(k, k[:8]): v for k, v in by_node.items()}
    log(
        f"rows in {rows_in:,} = rows out {counts['rows']:,} ({counts['predictions']:,} predictions, "
        f"{counts['errors']:,} errors) from {len(files)} file(s) -> {out} ({counts['files']} {output_format} files)"
        f"; labelled on {len(nodes)} node(s): "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(nodes.items()))
        + (f"; lost mid-job: {', '.join(watch.lost)}" if watch.lost else "")
    )
    return {"rows_in": rows_in, **counts, "output": str(out), "actors": actors, "rows_by_node": nodes,
            "lost_nodes": watch.lost}  # fmt: skip


def _actor_count(actors: int | None, cpus_per_actor: int) -> tuple[int, bool]:
    """``actors`` (default: as many as the cluster's CPUs hold), and whether the cluster has room for all."""
    cpus = ray.cluster_resources().get("CPU", 1)
    if actors is None:
        actors = max(1, int(cpus // cpus_per_actor))
    fit = actors * cpus_per_actor <= cpus
    if not fit:
        warnings.warn(
            f"{actors} actors x {cpus_per_actor} CPUs exceed the cluster's {cpus:g} CPUs: "
            "the job may wait until the cluster has room for them",
            stacklevel=3,
        )
    return actors, fit


@contextlib.contextmanager
def _job_context(wait_for_actors: bool):
    """Ray Data's settings for the job's datasets (see the module's docstring), put back afterwards."""
    ctx = ray.data.DataContext.get_current()
    saved = ctx.wait_for_min_actors_s
    if wait_for_actors:
        ctx.wait_for_min_actors_s = ACTOR_START_S
    try:
        yield
    finally:
        ctx.wait_for_min_actors_s = saved


def _connect(address: str | None) -> bool:
    """Join ``address`` or start a local cluster unless Ray already runs here; True if we started it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UsageError(f"--ray-address {address}: cannot join the Ray cluster ({e})") from e
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    return True


def _write(ds: ray.data.Dataset, path: Path, fmt: str) -> None:
    remote = on_driver_node({"num_cpus": IO_CPUS})  # the output directory need be there only
    with ray_remote_args_allowed():
        if fmt == "parquet":
            ds.write_parquet(str(path), ray_remote_args=remote)
        else:
            ds.write_datasink(_JsonLinesSink(str(path)), ray_remote_args=remote)


class _JsonLinesSink(BlockBasedFileDatasink):
    """One JSON object per row, the CLI's record shape: an error row keeps only its non-null fields, a
    prediction row every prediction field (``fused_score`` is null for an easy text) but ``error``;
    the explanation as an object."""

    def __init__(self, path: str):
        super().__init__(path, file_format="jsonl")

    def write_block_to_file(self, block, file) -> None:
        lines = []
        for row in block.to_arrow().to_pylist():
            if row.get("error") is not None:
                rec = {k: v for k, v in row.items() if v is not None}
            else:
                rec = {k: v for k, v in row.items() if k != "error"}
            if "explanation" in rec:
                rec["explanation"] = json.loads(rec["explanation"])
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
        file.write("".join(lines).encode("utf-8"))


def check_output(path: Path, fmt: str, rows_in: int) -> dict:
    """Count what was written; raise unless rows out = rows in and every row id is there once."""
    ids = read_output(path, fmt, columns=["source", "line", "error"])
    n = ids.num_rows
    distinct = len(set(zip(ids.column("source").to_pylist(), ids.column("line").to_pylist(), strict=True)))
    errors = n - ids.column("error").null_count
    files = len(_output_files(path, fmt))
    if n != rows_in or distinct != n:
        raise LrslError(
            f"rows in {rows_in:,} != rows out {n:,} ({n - distinct:,} duplicate row ids): the job lost or "
            f"repeated rows; its output is left in {path} for inspection"
        )
    return {"rows": n, "predictions": n - errors, "errors": errors, "files": files}


def read_output(path: str | Path, fmt: str = "parquet", columns: list[str] | None = None) -> pa.Table:
    """All rows a job wrote to ``path`` (any order), as one Arrow table; ``columns`` to read fewer."""
    files = _output_files(Path(path), fmt)
    if fmt == "parquet":
        tables = [pq.read_table(f, columns=columns) for f in files]
        return pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns or []})
    rows = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    names = columns or sorted({k for r in rows for k in r})
    return pa.table({c: pa.array([r.get(c) for r in rows], type=_json_type(c)) for c in names})


def _json_type(name: str):
    from ._predict import OUTPUT_FIELDS

    return dict([("source", pa.string()), ("line", pa.int64()), *OUTPUT_FIELDS]).get(name)


def _output_files(path: Path, fmt: str) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(f".{fmt}"))


def _as_lrsl_error(e: BaseException) -> BaseException:
    """Our own error inside Ray's wrappers (a bad row with --on-error stop), else a one-line failure."""
    if isinstance(e, LrslError) or not isinstance(e, Exception):
        return e
    seen, todo = set(), [e]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, LrslError) and not isinstance(cur, ray.exceptions.RayError):
            return cur
        todo += [cur.__cause__, cur.__context__, getattr(cur, "cause", None)]
    # Ray does not always keep the cause's type across processes, but its message carries the
    # worker's traceback, whose last line names our exception: rebuild that one.
    found = re.findall(r"lrsl_rt\.errors\.(\w+): (.+)", str(e))
    if found and isinstance(getattr(errors, found[-1][0], None), type):
        return getattr(errors, found[-1][0])(found[-1][1].strip())
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return LrslError(f"the Ray job failed ({type(e).__name__}: {first}); no output was written")
