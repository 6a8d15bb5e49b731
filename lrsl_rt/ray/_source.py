"""Input files as a Ray dataset of ``source, line, text, error`` rows, read by lrsl-rt's own reader.

Ray's ``read_csv``/``read_json`` stop the whole job on a malformed row (or, told to skip, drop it
silently), and number nothing. Here each file is one item of a small dataset, and a map step reads
it with :class:`lrsl_rt.io.RecordReader` (CSV, JSON lines, text) or pyarrow (Parquet), emitting one
row per input record in blocks of ``BLOCK_ROWS``: a bad record is a row with ``error`` set and no
text, so it reaches the output as an error row and is counted like any other.

``line`` is the row id inside its file: the line number for CSV/JSONL/text (what ``lrsl-rt predict``
reports; a CSV record's first line) and the 1-based row number for Parquet. ``(source, line)`` is
unique, and sorting by it (files in the order given, which is the sorted glob) restores input order.

:func:`count_rows` counts the same records on the driver, before the job, with the same reader
(Parquet: from the file footers). It also surfaces whole-file problems (file not found, a CSV header
without the column, bytes that are not UTF-8, a Parquet column that is not text) as one-line
errors before any cluster work starts.
"""

from __future__ import annotations

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


def read_inputs(files: list[str], field: str = "text", column: str = "text") -> ray.data.Dataset:
    """A dataset of ``source, line, text, error`` rows, one per input record (one read step per file)."""
    # read by absolute path (a worker's working directory need not be the driver's), named as given
    items = [{"path": os.path.abspath(f), "source": f} for f in files]
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _read_files,
        fn_kwargs={"field": field, "column": column},
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=IO_CPUS,
        compute=ray.data.TaskPoolStrategy(size=min(len(files), READ_TASKS)),
    )


def _read_files(batch: pa.Table, field: str, column: str):
    for path, source in zip(
        batch.column("path").to_pylist(), batch.column("source").to_pylist(), strict=True
    ):
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
