"""Input files as a Ray dataset of ``source, line, text, error`` rows, read by lrsl-rt's own reader.

Ray's ``read_csv``/``read_json`` stop the whole job on a malformed row (or, told to skip, drop it
silently), and number nothing. Here a small Ray datasource (:class:`InputFiles`) makes one read task
per file, which reads it with :class:`lrsl_rt.io.RecordReader` (CSV, JSON lines, text) or pyarrow
(Parquet), emitting one row per input record: a bad record is a row with ``error`` set and no text,
so it reaches the output as an error row and is counted like any other.

Blocks: Ray Data joins what a task yields into blocks of up to ``DataContext.target_max_block_size``
(megabytes: a whole file of short texts), and one block goes to one actor. The dataset asks for
at least ``ceil(rows / BLOCK_ROWS)`` blocks (``min_blocks`` more for a short job on many actors),
so Ray splits each read task's output into that many pieces over the files, within the read task:
a file's rows are spread over every actor even when it is a single file. The read tasks reserve no CPU and run on the driver's node: the input files need to be there
only, and the rows read never live on a node that can be lost mid-job.

``line`` is the row id inside its file: the line number for CSV/JSONL/text (what ``lrsl-rt predict``
reports; a CSV record's first line) and the 1-based row number for Parquet. ``(source, line)`` is
unique, and sorting by it (files in the order given, which is the sorted glob) restores input order.

:func:`count_rows` counts the same records on the driver, before the job, with the same reader
(Parquet: from the file footers). It also surfaces whole-file problems (file not found, a CSV header
without the column, bytes that are not UTF-8, a Parquet column that is not text) as one-line
errors before any cluster work starts.
"""

from __future__ import annotations

import functools
import glob
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray.data

from ..errors import InputError, UsageError
from ..io import RecordReader, input_format

BLOCK_ROWS = 1024
# Reading (and writing) costs little CPU next to the models. These steps reserve no CPU, so they
# never wait behind actors that hold every CPU of the cluster; at most READ_TASKS files are read at once.
IO_CPUS = 0
READ_TASKS = 4
RECORD_SCHEMA = pa.schema(
    [("source", pa.string()), ("line", pa.int64()), ("text", pa.string()), ("error", pa.string())]
)


def file_format(path: str) -> str:
    """``parquet`` for .parquet/.pq, else the CLI's formats by extension (csv, jsonl, txt)."""
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    try:
        return input_format(path)
    except UsageError:
        raise UsageError(
            f"{path}: cannot tell the input format from the extension; use .csv, .jsonl, .parquet or .txt"
        ) from None


def expand_inputs(pattern: str | list[str]) -> list[str]:
    """The files a path or glob (or a list of them) names, sorted within each pattern, no duplicates.

    >>> expand_inputs("/no/such/*.csv")  # doctest: +SKIP
    UsageError: --input /no/such/*.csv: no file matches
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    files: list[str] = []
    for p in patterns:
        matches = sorted(glob.glob(p)) if glob.has_magic(p) else ([p] if Path(p).exists() else [])
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise UsageError(f"--input {p}: no file matches")
        files += [m for m in matches if m not in files]
    for f in files:
        file_format(f)
    return files


def count_rows(path: str, field: str = "text", column: str = "text") -> int:
    """Records in one file as the job will read them (whole-file problems raise here)."""
    if file_format(path) == "parquet":
        parquet_text_column(path, column)
        return pq.ParquetFile(path).metadata.num_rows
    return sum(1 for _ in RecordReader(path, field=field, column=column))


def parquet_text_column(path: str, column: str) -> None:
    """Check that a Parquet file has ``column`` holding strings."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: not a readable Parquet file ({e})") from e
    if column not in schema.names:
        raise InputError(f"{path}: no column {column!r} in the Parquet schema (columns: {schema.names})")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(f"{path}: column {column!r} has type {kind}, expected strings")


def read_inputs(
    files: list[str],
    field: str = "text",
    column: str = "text",
    rows: int | None = None,
    min_blocks: int = 1,
) -> ray.data.Dataset:
    """A dataset of ``source, line, text, error`` rows, one per input record (one read task per file).

    ``rows``: the records the files hold (:func:`count_rows`), when the caller counted them already;
    ``min_blocks``: cut them into at least this many blocks (e.g. one per actor).
    """
    if rows is None:
        rows = sum(count_rows(f, field=field, column=column) for f in files)
    from ._predict import ray_remote_args_allowed

    source = InputFiles(files, field=field, column=column)
    blocks = max(len(files), -(-rows // BLOCK_ROWS), min(rows, min_blocks))
    with ray_remote_args_allowed():
        return ray.data.read_datasource(
            source,
            override_num_blocks=blocks,
            concurrency=min(len(files), READ_TASKS),
            ray_remote_args=on_driver_node({"num_cpus": IO_CPUS}),
        )


def on_driver_node(remote_args: dict) -> dict:
    """``remote_args`` with a hard affinity to this process's node, once Ray runs here."""
    if not ray.is_initialized():
        return remote_args
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return {**remote_args, "scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False)}


class InputFiles(ray.data.Datasource):
    """One read task per file, by absolute path (a worker's working directory need not be the
    driver's), each row's ``source`` the path as given."""

    def __init__(self, files: list[str], field: str = "text", column: str = "text"):
        super().__init__()
        self.files, self.field, self.column = list(files), field, column

    def estimate_inmemory_data_size(self) -> int | None:
        return None  # the block count is asked for explicitly (read_inputs)

    def get_read_tasks(self, parallelism: int, **kwargs) -> list:
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        return [
            ReadTask(
                functools.partial(_read_file, os.path.abspath(f), f, self.field, self.column),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=[f], exec_stats=None),
            )
            for f in self.files
        ]


def _read_file(path: str, source: str, field: str, column: str):
    if file_format(path) == "parquet":
        yield from _parquet_blocks(path, source, column)
    else:
        yield from _record_blocks(path, source, field, column)


def _record_blocks(path: str, source: str, field: str, column: str):
    rows: list[tuple] = []
    for r in RecordReader(path, field=field, column=column):
        rows.append((source, r.line, r.text, r.error))
        if len(rows) == BLOCK_ROWS:
            yield _block(rows)
            rows = []
    if rows:
        yield _block(rows)


def _parquet_blocks(path: str, source: str, column: str):
    parquet_text_column(path, column)
    line = 1
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BLOCK_ROWS, columns=[column]):
        texts = batch.column(0).to_pylist()
        errors = [f"column {column!r}: null" if t is None else None for t in texts]
        yield _block([(source, line + i, t, e) for i, (t, e) in enumerate(zip(texts, errors, strict=True))])
        line += len(texts)


def _block(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows, strict=True))
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, RECORD_SCHEMA, strict=True)], schema=RECORD_SCHEMA
    )
