"""Reading input records and writing output records for the CLI.

Inputs: texts given as arguments, lines on stdin, or ``--input FILE`` by extension --
``.txt`` (one text per line), ``.jsonl`` (one JSON object per line, text under ``--text-field``) or
``.csv`` (header row, text under ``--text-field``); ``-`` is stdin. Files are read as a stream, line by
line, so memory stays bounded.

Every input line (or CSV row) is one :class:`Record` with its line number, and each gives exactly one
output record, in order. A record that cannot be processed carries an ``error`` instead of a text;
the CLI stops on it or writes an error record in its place (``--on-error``), never skips it. Each
line is decoded and validated on its own, so one bad line never costs the records around it:

- bytes that are not UTF-8 (named with the byte and column);
- a line longer than ``max_line_bytes`` (default :data:`MAX_LINE_BYTES`): it is read in pieces and
  never held whole. In a ``.txt`` file the text is its first ``max_line_bytes`` bytes (the model reads
  only the first ``max_length`` tokens, see :mod:`lrsl_rt.tokenize`); in JSONL and CSV, where a cut
  line is no longer valid, it is an error record;
- a text or label that is not valid Unicode: a lone surrogate from a JSON escape (``"\\ud800"``), or
  bytes of a command-line argument that were not UTF-8;
- a blank line (empty or whitespace only) in any format is an error, not an empty text: in a
  one-text-per-line file it is almost always a stray line, and predicting on "" would hide it.
  An explicit empty string (``{"text": ""}``, an empty CSV cell) is a valid text;
- JSONL: a line that is not valid JSON or not an object, a missing field, a value that is not a string;
- CSV: a row with a different number of fields than the header, a malformed row, a field longer than
  the csv module's field size limit.

Problems with the whole file stop the run whatever ``--on-error`` says: file not found, an unknown
extension, a CSV header that is missing, malformed or without the column.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, UsageError
from .prediction import RECORD_FIELDS

MAX_LINE_BYTES = 8 << 20  # a longer line is read in pieces and never held whole
_READ_PIECE = 1 << 20
# A line that the csv module refuses whatever state it is in (a quote, then a non-comma after the
# closing quote): fed in place of an undecodable or over-long line so that the row becomes one
# malformed-row error and the reader starts afresh on the next line.
_POISON_CSV_LINE = '"x"x\n'
OUTPUT_FORMATS = ("jsonl", "csv", "table")
CSV_FIELDS = ("line", *RECORD_FIELDS, "error")


@dataclass(frozen=True)
class Record:
    """One input record: ``text`` (and ``label`` when asked for), or an ``error`` saying why not."""

    source: str
    line: int
    text: str | None = None
    label: str | None = None
    error: str | None = None

    def where(self) -> str:
        return f"{self.source}:{self.line}"


def input_format(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    fmt = {"txt": "txt", "text": "txt", "jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv"}.get(suffix)
    if fmt is None:
        raise UsageError(f"{path}: cannot tell the input format from the extension; use .txt, .jsonl or .csv")
    return fmt


class RecordReader:
    """Iterates the records of a file (or stdin for ``-``); ``bytes_read``/``total_bytes`` feed a progress bar."""

    def __init__(
        self,
        path: str,
        field: str = "text",
        column: str = "text",
        label_field: str | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ):
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.field, self.column, self.label_field = field, column, label_field
        self.is_stdin = path == "-"
        self.source = "<stdin>" if self.is_stdin else path
        self.format = "txt" if self.is_stdin else input_format(path)
        if self.format == "txt" and label_field is not None:
            raise UsageError(f"{self.source}: a .txt input has no labels; use .jsonl or .csv")
        if not self.is_stdin and not Path(path).is_file():
            raise UsageError(f"{path}: input file not found")
        self.total_bytes = None if self.is_stdin else os.path.getsize(path)
        self.bytes_read = 0

    def __iter__(self) -> Iterator[Record]:
        if self.is_stdin:
            if sys.stdin is None:
                raise InputError("<stdin>: standard input is closed; give texts as arguments or --input FILE")
            yield from self._records(sys.stdin.buffer)
        else:
            with open(self.path, "rb") as f:
                yield from self._records(f)

    def _records(self, f) -> Iterator[Record]:
        lines = self._decoded_lines(f)
        if self.format == "csv":
            yield from self._csv(lines)
            return
        for n, line, problem in lines:
            body = (line or "").rstrip("\r\n")
            if problem:
                yield Record(self.source, n, error=problem)
            elif not body.strip():
                yield Record(self.source, n, error="empty line (blank lines are not skipped)")
            elif self.format == "txt":
                yield Record(self.source, n, text=body)
            else:
                yield self._json_record(n, body)

    def _decoded_lines(self, f) -> Iterator[tuple[int, str | None, str | None]]:
        """(line number, text, None) for each line, or (line number, None or a cut text, problem)."""
        for n, (raw, cut) in enumerate(bounded_lines(f, self.max_line_bytes), start=1):
            self.bytes_read += len(raw)
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if cut and self.format != "txt":
                yield (
                    n,
                    None,
                    f"line longer than {self.max_line_bytes:,} bytes; a {self.format} record must be shorter",
                )
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if not (cut and e.start >= len(raw) - 3 and e.reason == "unexpected end of data"):
                    yield n, None, _utf8_problem(raw, e)
                    continue
                text = raw[: e.start].decode("utf-8")  # a character split by the cut: drop it
            yield n, text, None

    def _json_record(self, n: int, body: str) -> Record:
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as e:
            return Record(self.source, n, error=f"not valid JSON: {e.msg} at column {e.colno}")
        if not isinstance(obj, dict):
            return Record(self.source, n, error=f"expected a JSON object, got {_json_type(obj)}")
        return self._fields(n, obj, self.field, "field")

    def _fields(self, n: int, obj: dict, text_key: str, kind: str) -> Record:
        values = {}
        for key in (text_key, self.label_field):
            if key is None:
                continue
            if key not in obj:
                return Record(self.source, n, error=f"{kind} {key!r}: missing")
            if not isinstance(obj[key], str):
                return Record(
                    self.source, n, error=f"{kind} {key!r}: expected a string, got {_json_type(obj[key])}"
                )
            problem = unicode_problem(obj[key])
            if problem:
                return Record(self.source, n, error=f"{kind} {key!r}: {problem}")
            values[key] = obj[key]
        label = values.get(self.label_field) if self.label_field else None
        return Record(self.source, n, text=values[text_key], label=label)

    def _csv(self, lines: Iterator[tuple[int, str | None, str | None]]) -> Iterator[Record]:
        line_no, problem = [0], {}

        def text_lines():
            for n, line, bad in lines:
                line_no[0] = n
                if bad:
                    problem[n] = bad
                    line = _POISON_CSV_LINE
                yield line

        reader = csv.reader(text_lines(), strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{self.source}:1: empty CSV file; expected a header row") from None
        except csv.Error as e:
            raise InputError(
                f"{self.source}:{line_no[0]}: CSV header: {problem.get(line_no[0], e)}"
            ) from None
        for key in (self.column, self.label_field):
            if key is not None and key not in header:
                raise InputError(f"{self.source}:1: no column {key!r} in the CSV header (columns: {header})")
            if key is not None and header.count(key) > 1:  # which of them is the text is anyone's guess
                raise InputError(
                    f"{self.source}:1: column {key!r} appears {header.count(key)} times in the CSV header; "
                    f"name each column once (columns: {header})"
                )
        start = line_no[0] + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                bad = problem.pop(line_no[0], None)
                yield Record(self.source, start, error=bad or f"malformed CSV row: {e}")
                start = line_no[0] + 1
                continue
            if not any(cell.strip() for cell in row):
                yield Record(self.source, start, error="empty line (blank lines are not skipped)")
            elif len(row) != len(header):
                yield Record(
                    self.source, start, error=f"row has {len(row)} fields, the header has {len(header)}"
                )
            else:
                yield self._fields(start, dict(zip(header, row, strict=True)), self.column, "column")
            start = line_no[0] + 1


def bounded_lines(f, limit: int) -> Iterator[tuple[bytes, bool]]:
    """Lines of a binary file as ``(bytes, cut)``: at most ``limit`` bytes of each (newline
    included); the rest of a longer line is read in pieces and dropped, and ``cut`` is True.

    >>> from io import BytesIO
    >>> list(bounded_lines(BytesIO(b"ab\\nabcdef\\n"), 4))
    [(b'ab\\n', False), (b'abcd', True)]
    """
    while raw := f.readline(limit + 1):
        if len(raw) <= limit:
            yield raw, False
            continue
        tail = raw[-1:]
        while tail and tail != b"\n":
            piece = f.readline(_READ_PIECE)
            tail = piece[-1:]
        yield raw[:limit], True


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (a lone surrogate, e.g. from ``"\\ud800"`` in JSON), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"not valid Unicode: lone surrogate {ascii(text[e.start])[1:-1]} at character {e.start + 1}"
    return None


def _utf8_problem(raw: bytes, e: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); re-encode the file as UTF-8"


def records_from_args(texts: list[str]) -> Iterator[Record]:
    """Texts given on the command line; ``line`` is the argument's position, from 1.

    Python hands over bytes of an argument that are not UTF-8 as lone surrogates
    (``surrogateescape``); such an argument is an error record naming the byte.
    """
    for i, t in enumerate(texts, start=1):
        problem = _argument_problem(t)
        yield Record("<argument>", i, error=problem) if problem else Record("<argument>", i, text=t)


def _argument_problem(text: str) -> str | None:
    if unicode_problem(text) is None:
        return None
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the argument's original bytes
        raw.decode("utf-8")
    except UnicodeEncodeError:  # a surrogate that no byte was escaped to
        return unicode_problem(text)
    except UnicodeDecodeError as e:
        return f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
    return unicode_problem(text)


def _json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    name = names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
    return f"{name} {json.dumps(value, ensure_ascii=False)[:40]}"


# ---- output -------------------------------------------------------------------------------------
def output_format(requested: str | None, output: str | None, stream) -> str:
    """``--format``, else by the output file's extension, else table on a terminal and jsonl otherwise."""
    if requested:
        return requested
    if output:
        return "csv" if output.lower().endswith(".csv") else "jsonl"
    return "table" if stream.isatty() else "jsonl"


class Writer:
    """Writes one output record per input record: ``{"line": N, **prediction}`` or ``{"line": N, "error": ...}``."""

    def __init__(
        self, stream, fmt: str, explain: bool = False, label_width: int = 24, extra_fields: tuple = ()
    ):
        if fmt not in OUTPUT_FORMATS:
            raise UsageError(f"unknown output format {fmt!r}; use one of {OUTPUT_FORMATS}")
        self.stream, self.format, self.explain = stream, fmt, explain
        self.width = label_width  # table: width of the label columns (the longest label of the bundle)
        # a stream that cannot encode every character (PYTHONIOENCODING=ascii) gets \uXXXX escapes in JSON
        encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
        self._ascii_json = not encoding.startswith("utf")
        if fmt == "csv":
            # the optional record fields in use (exit_layer, out_of_scope) go before "error"
            fields = (
                CSV_FIELDS[:-1]
                + tuple(extra_fields)
                + CSV_FIELDS[-1:]
                + (("explanation",) if explain else ())
            )
            self._csv = csv.DictWriter(stream, fieldnames=fields, lineterminator="\n")
            self._csv.writeheader()
        elif fmt == "table":
            w = self.width
            stream.write(
                f"{'line':>6}  {'label':<{w}}  {'score':>8}  {'hard':<4}  {'reranked from':<{w}}  text\n"
            )

    def write(self, record: Record, prediction: dict | None) -> None:
        if prediction is None:
            out = {"line": record.line, "error": record.error}
        else:
            out = {"line": record.line, **prediction}
        if self.format == "jsonl":
            self.stream.write(json.dumps(out, ensure_ascii=self._ascii_json) + "\n")
        elif self.format == "csv":
            if "explanation" in out:
                out["explanation"] = json.dumps(out["explanation"], ensure_ascii=False)
            self._csv.writerow({k: str(v).lower() if isinstance(v, bool) else v for k, v in out.items()})
        else:
            self._table_row(record, out)

    def _table_row(self, record: Record, out: dict) -> None:
        if "error" in out:
            self.stream.write(f"{record.line:>6}  ERROR: {out['error']}\n")
            return
        text = (record.text or "").replace("\n", " ")
        text = text if len(text) <= 50 else text[:49] + "…"
        base = "" if not out["reranked"] else out["classifier_label"]
        self.stream.write(
            f"{record.line:>6}  {out['label']:<{self.width}}  {out['score']:>8.4f}  {'yes' if out['hard'] else 'no':<4}  "
            f"{base:<{self.width}}  {text}\n"
        )
        ex = out.get("explanation")
        if ex:
            before = ", ".join(f"{d['label']} {d['logit']:.3f}" for d in ex["topk_before"])
            self.stream.write(
                f"{'':>8}variance {ex['variance']:.4g} (threshold {ex['threshold']:.4g}); top-k: {before}\n"
            )
            if ex["topk_after"]:
                after = ", ".join(f"{d['label']} {d['fused_score']:.3f}" for d in ex["topk_after"])
                sims = ", ".join(f"{d['label']} {d['cos']:.3f}" for d in ex["similarities"])
                self.stream.write(f"{'':>8}fused: {after}; cos: {sims}\n")
