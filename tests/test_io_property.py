"""Property test of the readers: whatever the bytes, one record or one error record per input record.

Hypothesis writes random bytes, random JSON lines and random CSV files; :class:`lrsl_rt.io.RecordReader`
must yield, for each, records numbered in order -- one per line for .txt and .jsonl, one per row for a
CSV written by the csv module -- each with a text xor an error, and raise nothing but ``LrslError``
(a whole-file problem such as a CSV header without the column). A small ``max_line_bytes`` is drawn
too, so the path that reads an over-long line in pieces runs as often as the normal one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrsl_rt.errors import LrslError
from lrsl_rt.io import RecordReader, bounded_lines

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = st.sampled_from([8, 64, 8 << 20])
awkward_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"), st.sampled_from(['"', ",", "\n", "\r", " ", "\\", "\ufeff", "\x00"])
    ),
    max_size=40,
)


def read(data: bytes, suffix: str, **kw) -> list:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"in.{suffix}")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return list(RecordReader(path, **kw))
        except LrslError as e:
            return [e]  # a whole-file problem: the project's own error, never another exception


def n_lines(data: bytes) -> int:
    return len(io.BytesIO(data).readlines())


def check_records(recs: list, n: int | None) -> None:
    if recs and isinstance(recs[0], LrslError):
        return
    lines = [r.line for r in recs]
    assert lines == sorted(set(lines)), lines  # strictly increasing: in order, none twice
    if n is not None:
        assert lines == list(range(1, n + 1))
    for r in recs:
        assert (r.text is None) != (r.error is None), r
        if r.text is not None:
            r.text.encode("utf-8")  # every text handed on is valid Unicode


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from(["txt", "jsonl", "csv"]), limit=LIMITS)
def test_random_bytes(data, suffix, limit):
    recs = read(data, suffix, max_line_bytes=limit)
    check_records(recs, None if suffix == "csv" else n_lines(data))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | awkward_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(awkward_text, inner, max_size=3),
    max_leaves=6,
)
json_line = st.one_of(
    st.fixed_dictionaries({"text": awkward_text}),
    st.fixed_dictionaries({"text": json_values}),
    json_values,
).map(lambda v: json.dumps(v).encode())
raw_line = st.one_of(json_line, st.binary(max_size=30).filter(lambda b: b"\n" not in b))
surrogate_line = st.sampled_from(
    [b'{"text": "\\ud800"}', b'{"text": "a\\udfffb"}', b'{"text": "\\ud83d\\ude00"}']
)


@SETTINGS
@given(lines=st.lists(st.one_of(raw_line, surrogate_line), max_size=12), limit=LIMITS)
def test_random_json_lines(lines, limit):
    data = b"".join(line + b"\n" for line in lines)
    recs = read(data, "jsonl", max_line_bytes=limit)
    check_records(recs, len(lines))
    for line, r in zip(lines, recs, strict=True):
        if r.text is not None:
            assert json.loads(line)["text"] == r.text


@SETTINGS
@given(
    rows=st.lists(st.tuples(awkward_text, awkward_text), max_size=10),
    corrupt=st.one_of(st.none(), st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=3))),
)
def test_random_csv(rows, corrupt):
    buf = io.StringIO()
    w = csv.writer(buf)  # "\r\n" rows: a cell holding "\r" or "\n" is quoted
    w.writerow(["id", "text"])
    w.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    if corrupt is not None:  # random bytes spliced in: only order and the error type are promised
        at, junk = corrupt
        at = at % (len(data) + 1)
        recs = read(data[:at] + junk + data[at:], "csv")
        check_records(recs, None)
        return
    recs = read(data, "csv")
    if rows and isinstance(recs[0], LrslError):
        raise recs[0]  # a file the csv module wrote must read back
    check_records(recs, None)
    assert len(recs) == len(rows)  # one record per row, multi-line cells included
    for (_, text), r in zip(rows, recs, strict=True):
        if r.text is not None:
            assert r.text == text
        else:
            assert "\x00" in text or not "".join((text, _)).strip() or "empty line" in r.error


@SETTINGS
@given(data=st.binary(max_size=200), limit=st.integers(min_value=1, max_value=40))
def test_bounded_lines_keep_line_count_and_prefix(data, limit):
    got = list(bounded_lines(io.BytesIO(data), limit))
    whole = io.BytesIO(data).readlines()
    assert len(got) == len(whole)
    for (piece, cut), line in zip(got, whole, strict=True):
        assert line.startswith(piece) and len(piece) <= limit and cut == (len(line) > limit)
