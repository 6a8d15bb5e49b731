"""``predict_dataset``: the CLI record's prediction columns added to a Ray dataset, on a pool of actors.

Each actor is one process that loads the bundle once (``_Predictor.__init__``) and labels the
batches Ray hands it. ONNX Runtime does not read Ray's ``OMP_NUM_THREADS``, so its thread count is
passed explicitly: the CPUs Ray reserves for the actor. Scale with actors (processes), not threads.

A row is an error row, and gets no prediction, when its ``error`` column (set by
:func:`lrsl_rt.ray.read_inputs`) is not null or its text is null; with ``on_error="stop"`` the first
such row an actor meets fails the job instead. Which one that is depends on scheduling: at scale
"first" has no meaning, only "some bad row".

Every output batch has the same Arrow schema (``OUTPUT_FIELDS``): error rows have null predictions,
prediction rows a null error, so Parquet files written from different blocks agree. The explanation,
whose shape varies (no fused scores for easy samples), is a JSON string column.

The bundle reaches the actors through Ray's object store (:mod:`lrsl_rt.ray._ship`): a node needs
no copy of the bundle directory, and each actor checks its node's copy against the manifest's
checksums before loading it.

Fault tolerance: Ray restarts an actor whose process died, or whose node was lost, up to
``MAX_RESTARTS`` times, on any node with room for it, and resubmits the batches it held. A task's
retries are spent also while its actor is unreachable (a lost node's actors are "temporarily
unavailable" until Ray declares them dead), so ``max_task_retries`` is unbounded (-1) and the
restart count is the bound: a batch that kills every actor it reaches fails the job with Ray's error
once its actor's restarts are used up, rather than retrying forever. A batch's output exists only
once its call returned, so a batch run again is neither lost nor doubled.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings

import pyarrow as pa
import ray.data

from .. import prediction
from ..errors import InputError, UsageError
from ..rows import predict_rows
from ._ship import ShippedBundle, local_copy, ship_bundle

ROWS_PER_CALL = 1024  # the in-process CLI's chunk: same batches, same answers
MAX_RESTARTS = 3
MAX_TASK_RETRIES = -1
_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
# the record's fields (lrsl_rt.prediction.RECORD_FIELDS), then the error of a row that has none
OUTPUT_FIELDS = [(name, _ARROW_TYPES[t]) for name, t in prediction.RECORD_FIELDS.items()] + [
    ("error", pa.string())
]
EXPLANATION_FIELD = ("explanation", pa.string())
# the optional record fields, present when the run uses them
OPTIONAL_FIELDS = {name: _ARROW_TYPES[t] for name, t in prediction.OPTIONAL_FIELDS.items()}


def predict_dataset(
    ds: ray.data.Dataset,
    bundle: str | os.PathLike | ShippedBundle,
    text_column: str = "text",
    *,
    actors: int = 1,
    cpus_per_actor: int = 1,
    batch_size: int | None = ROWS_PER_CALL,
    model_batch_size: int | None = None,
    on_error: str = "stop",
    explain: bool = False,
    abstain: bool | None = None,
    keep_text: bool = True,
    tally=None,
) -> ray.data.Dataset:
    """``ds`` with the prediction columns (``OUTPUT_FIELDS``, plus ``explanation`` when asked) added.

    ``actors``: processes, each with the bundle loaded; ``cpus_per_actor``: CPUs Ray reserves for each,
    and ONNX Runtime's thread count in it. ``batch_size``: rows per call of an actor (None: one
    call per block of ``ds``, for a dataset cut into blocks of the right size, as
    :func:`lrsl_rt.ray.read_inputs` does);
    ``model_batch_size``: texts per model call inside it (None: the bundle's recorded batch size,
    as in the CLI). ``on_error``: ``"stop"`` fails the job on a bad row, ``"record"`` keeps it as a
    row with ``error`` set. The other columns of ``ds`` pass through; the rows come out in no fixed
    order (carry an id column, as :func:`lrsl_rt.ray.read_inputs` does, to restore it).
    ``abstain``: as in ``Reranker.predict`` (None: the bundle's choice); adds ``out_of_scope``.
    ``bundle``: a directory on the driver, shipped to the nodes here (:func:`ship_bundle`), or a
    bundle shipped already. ``keep_text=False`` leaves the text column out of the output (in the
    actor: no step of its own). ``tally``: a :class:`lrsl_rt.ray._nodes.RowTally` that every batch with
    ``source`` and ``line`` columns reports its node and rows to.
    """
    if on_error not in ("stop", "record"):
        raise UsageError(f"on_error must be 'stop' or 'record', got {on_error!r}")
    sizes = [("actors", actors), ("cpus_per_actor", cpus_per_actor)]
    for name, value in sizes + ([("batch_size", batch_size)] if batch_size is not None else []):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(bundle, ShippedBundle):
        bundle = ship_bundle(bundle)
    constructor = {
        "bundle": bundle,
        "text_column": text_column,
        "threads": cpus_per_actor,
        "model_batch_size": model_batch_size,
        "on_error": on_error,
        "explain": explain,
        "abstain": abstain,
        "keep_text": keep_text,
        "tally": tally,
    }
    with ray_remote_args_allowed():
        return _map_predictor(ds, constructor, actors, cpus_per_actor, batch_size)


def _map_predictor(ds, constructor: dict, actors: int, cpus_per_actor: int, batch_size: int | None):
    return ds.map_batches(
        _Predictor,
        fn_constructor_kwargs=constructor,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        scheduling_strategy="SPREAD",  # actors on as many nodes as have room, before doubling up on one
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_TASK_RETRIES,
    )


@contextlib.contextmanager
def ray_remote_args_allowed():
    """Ray 2.60 deprecates passing remote arguments as ``**kwargs`` or ``ray_remote_args`` but names
    no parameter for an actor's ``max_restarts``/``max_task_retries``, a write task's CPUs or a read
    task's node (``scheduling_strategy``): silence that one warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=DeprecationWarning)
        yield


class _Predictor:
    """One actor: the node's checked copy of the bundle loaded once, then ``__call__`` per batch (a
    pyarrow Table in and out)."""

    def __init__(
        self,
        bundle,
        text_column,
        threads,
        model_batch_size,
        on_error,
        explain,
        abstain=None,
        keep_text=True,
        tally=None,
    ):
        from ..reranker import Reranker

        path = local_copy(bundle)  # checked against the manifest's sizes and sha256 already
        self.reranker = Reranker.from_bundle(path, threads=threads, batch_size=model_batch_size, verify=False)
        self.tally, self.node_id = tally, ray.get_runtime_context().get_node_id()
        self.text_column, self.on_error, self.explain, self.keep_text = (
            text_column,
            on_error,
            explain,
            keep_text,
        )
        self.abstain = self.reranker.abstains(abstain)
        optional = [(f, OPTIONAL_FIELDS[f]) for f in self.reranker.record_fields(self.abstain)]
        self.fields = (
            OUTPUT_FIELDS[:-1] + optional + OUTPUT_FIELDS[-1:] + ([EXPLANATION_FIELD] if explain else [])
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = self._errors(batch)
        if self.on_error == "stop" and any(e is not None for e in errors):
            i = next(i for i, e in enumerate(errors) if e is not None)
            raise InputError(f"{_where(batch, i)}: {errors[i]} (--on-error record keeps it as an error row)")
        texts = batch.column(self.text_column).to_pylist()
        predictions = predict_rows(self.reranker, texts, errors, explain=self.explain, abstain=self.abstain)
        rows = [{"error": e} if p is None else p for e, p in zip(errors, predictions, strict=True)]
        out = _with_columns(
            batch if self.keep_text else batch.drop_columns([self.text_column]), rows, self.fields
        )
        if self.tally is not None and len(batch) and {"source", "line"} <= set(batch.column_names):
            key = (batch.column("source")[0].as_py(), batch.column("line")[0].as_py())
            ray.get(self.tally.add.remote(key, self.node_id, len(batch)))  # before the batch counts as done
        return out

    def _errors(self, batch: pa.Table) -> list[str | None]:
        if self.text_column not in batch.column_names:
            raise InputError(f"no column {self.text_column!r} in the dataset (columns: {batch.column_names})")
        kind = batch.schema.field(self.text_column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise InputError(f"column {self.text_column!r} has type {kind}, expected strings")
        upstream = batch.column("error").to_pylist() if "error" in batch.column_names else [None] * len(batch)
        texts = batch.column(self.text_column).to_pylist()
        return [
            e if e is not None else (f"column {self.text_column!r}: null" if t is None else None)
            for t, e in zip(texts, upstream, strict=True)
        ]


def _with_columns(batch: pa.Table, rows: list[dict], fields: list[tuple]) -> pa.Table:
    names = {name for name, _ in fields}
    keep = [c for c in batch.column_names if c not in names]
    out = batch.select(keep)
    for name, kind in fields:
        values = [r.get(name) for r in rows]
        if name == "explanation":
            values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
        out = out.append_column(pa.field(name, kind), pa.array(values, type=kind))
    return out


def _where(batch: pa.Table, i: int) -> str:
    if {"source", "line"} <= set(batch.column_names):
        return f"{batch.column('source')[i].as_py()}:{batch.column('line')[i].as_py()}"
    return f"row {i + 1} of a batch"
