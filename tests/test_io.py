"""Input readers and output writers of the CLI, without a model: one record per line, errors in place."""

from __future__ import annotations

import csv
import io
import json

import pytest

from lrsl_rt.errors import InputError, UsageError
from lrsl_rt.io import Record, RecordReader, Writer, input_format, output_format, records_from_args


def read(path, **kw) -> list[Record]:
    return list(RecordReader(str(path), **kw))


def test_txt_lines_blank_lines_are_errors(tmp_path):
    p = tmp_path / "in.txt"
    p.write_bytes("\ufeffcafé ☕\r\n\n  \nlast line without newline".encode())
    recs = read(p)
    assert [(r.line, r.text) for r in recs] == [
        (1, "café ☕"),
        (2, None),
        (3, None),
        (4, "last line without newline"),
    ]
    assert recs[1].error == recs[2].error == "empty line (blank lines are not skipped)"
    assert recs[1].where() == f"{p}:2"


def test_jsonl_records_and_each_error(tmp_path):
    p = tmp_path / "in.jsonl"
    lines = [
        {"text": "ok", "label": "a"},
        "not json",
        "[1, 2]",
        {"other": "x"},
        {"text": 3},
        {"text": ""},
        {"body": "custom field"},
    ]
    p.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8"
    )
    recs = read(p)
    assert len(recs) == len(lines)
    assert recs[0].text == "ok" and recs[0].label is None
    assert recs[1].error.startswith("not valid JSON: Expecting value")
    assert recs[2].error == "expected a JSON object, got an array [1, 2]"
    assert recs[3].error == "field 'text': missing"
    assert recs[4].error == "field 'text': expected a string, got a number 3"
    assert recs[5].text == ""  # an explicit empty string is a text
    assert read(p, field="body")[6].text == "custom field"


def test_jsonl_labels(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"text": "t", "label": "a"}\n{"text": "t", "label": 1}\n{"text": "t"}\n', encoding="utf-8")
    recs = read(p, label_field="label")
    assert recs[0].label == "a"
    assert recs[1].error == "field 'label': expected a string, got a number 1"
    assert recs[2].error == "field 'label': missing"


def test_csv_rows_and_errors(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text(
        'id,text,label\n1,"hello, world",a\n2,"multi\nline",b\n\n3,short\n4,,c\n5,x,c,extra\n',
        encoding="utf-8",
    )
    recs = read(p, label_field="label")
    got = [(r.line, r.text, r.label, r.error) for r in recs]
    assert got == [
        (2, "hello, world", "a", None),
        (3, "multi\nline", "b", None),
        (5, None, None, "empty line (blank lines are not skipped)"),
        (6, None, None, "row has 2 fields, the header has 3"),
        (7, "", "c", None),
        (8, None, None, "row has 4 fields, the header has 3"),
    ]
    assert [r.text for r in read(p, column="id")][:2] == ["1", "2"]


def test_csv_crlf_and_bom(tmp_path):
    p = tmp_path / "win.csv"
    p.write_bytes('\ufefftext,label\r\n"two\r\nlines",a\r\nthird,b\r\n'.encode())
    recs = read(p, label_field="label")
    assert [(r.line, r.text, r.label) for r in recs] == [(2, "two\r\nlines", "a"), (4, "third", "b")]


def test_csv_header_without_column_stops(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text("body\nx\n", encoding="utf-8")
    with pytest.raises(
        InputError, match=r"in.csv:1: no column 'text' in the CSV header \(columns: \['body'\]\)"
    ):
        read(p)
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="empty CSV file"):
        read(tmp_path / "empty.csv")


def test_csv_header_naming_the_text_or_label_column_twice_stops(tmp_path):
    """``text,text``: either cell could be the text, so the file is refused, not read with one of them."""
    p = tmp_path / "twice.csv"
    p.write_text("text,text\nhello,world\n", encoding="utf-8")
    with pytest.raises(
        InputError,
        match=r"^\S*twice.csv:1: column 'text' appears 2 times in the CSV header; name each column once "
        r"\(columns: \['text', 'text'\]\)$",
    ):
        read(p)
    p.write_text("text,label,label\nhello,a,b\n", encoding="utf-8")
    with pytest.raises(InputError, match="column 'label' appears 2 times"):
        read(p, label_field="label")
    p.write_text("id,text,id\n1,hello,2\n", encoding="utf-8")  # a column nobody reads may repeat
    assert [r.text for r in read(p)] == ["hello"]


@pytest.mark.parametrize("suffix", ["txt", "jsonl", "csv"])
def test_non_utf8_line_is_one_error_record(tmp_path, suffix):
    """A line that is not UTF-8 is an error record naming the byte; the records around it are kept."""
    p = tmp_path / f"in.{suffix}"
    head, tail = {
        "txt": (b"fine\n", b"after\n"),
        "jsonl": (b'{"text": "fine"}\n', b'{"text": "after"}\n'),
        "csv": (b"text\nfine\n", b"after\n"),
    }[suffix]
    p.write_bytes(head + b"caf\xe9 latin-1\n" + tail)
    records = list(RecordReader(str(p)))
    assert [r.text for r in records] == ["fine", None, "after"]
    assert records[1].line == (3 if suffix == "csv" else 2)
    assert records[1].error == "not valid UTF-8 (byte 0xe9 at column 4); re-encode the file as UTF-8"


def test_file_level_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="input file not found"):
        RecordReader(str(tmp_path / "missing.txt"))
    with pytest.raises(UsageError, match="cannot tell the input format"):
        input_format("data.parquet")
    (tmp_path / "in.txt").write_text("x\n", encoding="utf-8")
    with pytest.raises(UsageError, match="a .txt input has no labels"):
        RecordReader(str(tmp_path / "in.txt"), label_field="label")


def test_args_records():
    assert [(r.line, r.text) for r in records_from_args(["a", ""])] == [(1, "a"), (2, "")]


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_output_format_defaults():
    assert output_format(None, None, Tty()) == "table"
    assert output_format(None, None, io.StringIO()) == "jsonl"
    assert output_format(None, "out.CSV", Tty()) == "csv"
    assert output_format(None, "out.jsonl", Tty()) == "jsonl"
    assert output_format("table", "out.csv", io.StringIO()) == "table"


PRED = {
    "label": "b",
    "label_id": 1,
    "score": 0.5,
    "hard": True,
    "classifier_label": "a",
    "classifier_label_id": 0,
    "classifier_prob": 0.4,
    "fused_score": 2.5,
    "reranked": True,
}


def test_writers_one_record_per_input():
    recs = [Record("f", 1, text="x"), Record("f", 2, error="empty line"), Record("f", 3, text="y")]
    preds = [PRED, None, {**PRED, "hard": False, "reranked": False, "label": "a", "label_id": 0}]
    out = io.StringIO()
    w = Writer(out, "jsonl")
    for r, p in zip(recs, preds, strict=True):
        w.write(r, p)
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    assert rows[0] == {"line": 1, **PRED}
    assert rows[1] == {"line": 2, "error": "empty line"}
    assert [r["line"] for r in rows] == [1, 2, 3]

    out = io.StringIO()
    w = Writer(out, "csv", explain=True)
    for r, p in zip(recs, preds, strict=True):
        w.write(r, p)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["line"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["hard"] == "true" and rows[0]["error"] == "" and rows[1]["error"] == "empty line"

    out = io.StringIO()
    w = Writer(out, "table")
    for r, p in zip(recs, preds, strict=True):
        w.write(r, p)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "ERROR: empty line" in lines[2] and lines[1].split()[1] == "b"
