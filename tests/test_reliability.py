"""The record contract under hostile input, signals, long lines and concurrent writers.

Every case runs the real entry point (``python -m lrsl_rt``, ``python -m export``, ``python -m train``)
in a subprocess and checks the exit code, stderr (one ``Error:`` line, no traceback), which files exist,
and that stdout / the output file hold whole records, in order. docs/guide/reliability.md lists the
cases. Signals are sent once the child shows progress (a temporary file or a log line), never after a
fixed delay; nothing here is timed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

ENV = {
    "PATH": "/usr/bin:/bin",
    "PYTHONPATH": str(ROOT),
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
LRSL = [sys.executable, "-m", "lrsl_rt"]
WAIT_S = 180  # upper bound for a child to show progress (a busy machine); never a measured figure


def _default_sigint() -> None:
    # a child started from a background job inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: restore the default so the child handles Ctrl-C as a user's would
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def lrsl(*args, stdin: bytes | None = None, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LRSL, *(a if isinstance(a, bytes) else str(a) for a in args)],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env={**ENV, **(env or {})},
        cwd=cwd,
        timeout=WAIT_S,
        preexec_fn=_default_sigint,
    )


def start(cmd: list, **kw) -> subprocess.Popen:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cmd, env={**ENV, **kw.pop("env", {})}, preexec_fn=_default_sigint, **kw)


def one_error_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert lines and lines[-1].startswith("Error: "), text
    return lines[-1]


def records(data: bytes) -> list[dict]:
    """Parse JSONL output; every line must be a whole JSON record, numbered 1..n in order."""
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n"), "the output ends inside a record"
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["line"] for r in rows] == list(range(1, len(rows) + 1))
    return rows


def wait_for(predicate, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} within {WAIT_S} s")
        time.sleep(0.05)


def temp_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def big_txt(tmp_path_factory) -> Path:
    """Enough lines that a run is still going when the test signals it."""
    p = tmp_path_factory.mktemp("big") / "big.txt"
    p.write_text("my card has not arrived\nexchange rate euro\n" * 100_000, encoding="utf-8")
    return p


# ---- 1. input and output are the same file --------------------------------------------------------
@pytest.mark.parametrize("how", ["hardlink", "symlink", "stdin"])
def test_output_that_is_the_input_is_refused(tmp_path, tiny_bundle, how):
    src = tmp_path / "in.txt"
    src.write_text("my card\nlost card\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    if how == "hardlink":
        os.link(src, out)
        p = lrsl("predict", "--bundle", tiny_bundle, "--input", src, "--output", out)
    elif how == "symlink":
        out.symlink_to(src)
        p = lrsl("predict", "--bundle", tiny_bundle, "--input", src, "--output", out)
    else:
        with open(src, "rb") as f:
            p = subprocess.run(
                [*LRSL, "predict", "--bundle", str(tiny_bundle), "--output", str(src)],
                stdin=f,
                capture_output=True,
                env=ENV,
                timeout=WAIT_S,
            )
    assert p.returncode == 2, p.stderr
    assert "input file" in one_error_line(p.stderr) or "stdin reads from" in one_error_line(p.stderr)
    assert src.read_text(encoding="utf-8") == "my card\nlost card\n"


# ---- 2. lone surrogates and undecodable arguments -------------------------------------------------
def test_lone_surrogate_in_jsonl(tmp_path, tiny_bundle):
    p = tmp_path / "in.jsonl"
    p.write_text('{"text": "my card"}\n{"text": "\\ud800"}\n{"text": "lost card"}\n', encoding="utf-8")
    r = lrsl("predict", "--bundle", tiny_bundle, "--input", p, "--on-error", "record")
    assert r.returncode == 0, r.stderr
    rows = records(r.stdout)
    assert len(rows) == 3 and "error" not in rows[0] and "error" not in rows[2]
    assert rows[1]["error"] == "field 'text': not valid Unicode: lone surrogate \\ud800 at character 1"
    r = lrsl("predict", "--bundle", tiny_bundle, "--input", p)
    assert r.returncode == 1 and len(records(r.stdout)) == 1  # the record before the bad one
    assert (
        one_error_line(r.stderr)
        == f"Error: {p}:2: field 'text': not valid Unicode: lone surrogate \\ud800 at character 1"
    )


def test_lone_surrogate_label_in_eval(tmp_path, tiny_bundle):
    p = tmp_path / "gold.jsonl"
    p.write_text('{"text": "card", "label": "\\udfff"}\n', encoding="utf-8")
    r = lrsl("eval", "--bundle", tiny_bundle, "--input", p)
    assert r.returncode == 1 and "field 'label': not valid Unicode" in one_error_line(r.stderr)


def test_undecodable_argument(tiny_bundle):
    r = lrsl("predict", "--bundle", tiny_bundle, "--on-error", "record", "my card", b"caf\xe9", "lost card")
    assert r.returncode == 0, r.stderr
    rows = records(r.stdout)
    assert ["error" in row for row in rows] == [False, True, False]
    assert rows[1]["error"] == "not valid UTF-8 (byte 0xe9 at column 4)"
    r = lrsl("predict", "--bundle", tiny_bundle, "my card", b"\xff")
    assert r.returncode == 1 and len(records(r.stdout)) == 1
    assert one_error_line(r.stderr) == "Error: <argument>:2: not valid UTF-8 (byte 0xff at column 1)"


# ---- 3. invalid UTF-8 in the second chunk ---------------------------------------------------------
def test_invalid_utf8_line_keeps_every_good_record(tmp_path, tiny_bundle):
    p = tmp_path / "in.txt"
    p.write_bytes(b"my card\n" * 1500 + b"caf\xe9\n" + b"lost card\n" * 30)
    r = lrsl("predict", "--bundle", tiny_bundle, "--input", p, "--on-error", "record")
    assert r.returncode == 0, r.stderr
    rows = records(r.stdout)
    assert len(rows) == 1531 and [row["line"] for row in rows if "error" in row] == [1501]
    assert rows[1500]["error"].startswith("not valid UTF-8 (byte 0xe9 at column 4)")
    r = lrsl("predict", "--bundle", tiny_bundle, "--input", p)
    assert r.returncode == 1 and len(records(r.stdout)) == 1500
    assert one_error_line(r.stderr).startswith(f"Error: {p}:1501: not valid UTF-8")


# ---- 4. a line far longer than the model reads ----------------------------------------------------
# A child's ru_maxrss counts the memory it had before exec, which a fork copies from its parent: from a
# pytest process that has grown past the bound, every child would read as large. So a small launcher
# process starts the command and reports its child's peak.
_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


def _run_measuring_rss(cmd: list, tmp_path: Path) -> tuple[int, bytes, bytes, int]:
    """rc, stdout, stderr and the command's own peak RSS in KiB (measured by a small launcher)."""
    report = tmp_path / "maxrss.txt"
    proc = start([sys.executable, "-c", _LAUNCHER, str(report), *cmd])
    out, err = proc.communicate()
    return proc.returncode, out, err, int(report.read_text())


def test_long_lines_are_bounded(tmp_path, tiny_bundle):
    txt = tmp_path / "long.txt"
    with open(txt, "w", encoding="utf-8") as f:  # 60 MB in one line, between two short ones
        f.write("my card\n")
        for _ in range(600):
            f.write("card arrive " * 8_334)
        f.write("\nlost card\n")
    jsonl = tmp_path / "long.jsonl"
    jsonl.write_text(
        '{"text": "ok"}\n' + json.dumps({"text": "card " * 2_000_000}) + '\n{"text": "ok"}\n',
        encoding="utf-8",
    )
    rc, out, err, rss_kib = _run_measuring_rss(
        [*LRSL, "predict", "--bundle", str(tiny_bundle), "--input", str(txt)], tmp_path
    )
    assert rc == 0, err
    rows = records(out)
    assert len(rows) == 3 and not any("error" in row for row in rows)
    # the baseline process is well under 200 MB; a whole 60 MB line tokenized would need GBs
    assert rss_kib < 600 * 1024, rss_kib
    r = lrsl("predict", "--bundle", tiny_bundle, "--input", jsonl, "--on-error", "record")
    rows = records(r.stdout)
    assert r.returncode == 0 and [("error" in row) for row in rows] == [False, True, False]
    assert rows[1]["error"] == "line longer than 8,388,608 bytes; a jsonl record must be shorter"


def test_cut_keeps_the_tokens_the_model_reads(tiny_bundle):
    from lrsl_rt.manifest import read_manifest
    from lrsl_rt.tokenize import BundleTokenizer, cut_text

    tok = BundleTokenizer(tiny_bundle / "tokenizer.json", read_manifest(tiny_bundle).tokenizer)
    texts = [
        "my card has not arrived, why? " * 5000,
        "café 😀 exchange-rate!! " * 4000,
        "x" * 50 + " lost card" * 3000,
    ]
    for text in texts:
        assert len(cut_text(text, tok.max_chars)) <= tok.max_chars < len(text)
        whole = tok._tok.encode(text, add_special_tokens=True)  # truncated to max_length, no cut
        assert tok.tokenize([text])[0].ids == tuple(whole.ids)
        assert len(whole.ids) == tok.max_length


# ---- 5. --output: atomic, survives failures, one writer wins --------------------------------------
def test_failed_run_keeps_the_old_output(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")
    (tmp_path / "broken").mkdir()
    r = lrsl("predict", "--bundle", tmp_path / "broken", "--output", out, "my card")
    assert r.returncode == 1 and "manifest.json: not found" in one_error_line(r.stderr)
    assert out.read_text(encoding="utf-8") == "old\n" and temp_files(tmp_path) == []


def test_stop_at_a_bad_record_writes_the_records_before_it(tmp_path, tiny_bundle):
    src = tmp_path / "in.txt"
    src.write_text("my card\nlost card\n\nrate\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")
    r = lrsl("predict", "--bundle", tiny_bundle, "--input", src, "--output", out)
    assert r.returncode == 1 and one_error_line(r.stderr).startswith(f"Error: {src}:3: empty line")
    assert len(records(out.read_bytes())) == 2 and temp_files(tmp_path) == []


def test_unwritable_output(tmp_path, tiny_bundle):
    r = lrsl("predict", "--bundle", tiny_bundle, "--output", tmp_path / "no" / "such" / "dir.jsonl", "x")
    assert r.returncode == 2 and "cannot write" in one_error_line(r.stderr)
    r = lrsl("predict", "--bundle", tiny_bundle, "--output", tmp_path, "x")
    assert r.returncode == 2 and "is a directory" in one_error_line(r.stderr)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_signal_during_output_file(tmp_path, tiny_bundle, big_txt, sig):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")
    proc = start(
        [*LRSL, "predict", "--bundle", str(tiny_bundle), "--input", str(big_txt), "--output", str(out)]
    )
    wait_for(
        lambda: any((tmp_path / t).stat().st_size > 0 for t in temp_files(tmp_path)), proc, "temp output"
    )
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=WAIT_S)
    assert out.read_text(encoding="utf-8") == "old\n"  # the earlier file survives
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL  # no cleanup is possible: only a .tmp may remain
        return
    assert proc.returncode == 128 + sig
    want = "Error: interrupted" if sig == signal.SIGINT else "Error: terminated (SIGTERM)"
    assert one_error_line(err) == want and temp_files(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_while_streaming_stdout(tiny_bundle, big_txt, sig):
    with open(big_txt, "rb") as stdin:
        proc = start([*LRSL, "predict", "--bundle", str(tiny_bundle)], stdin=stdin)
        # the first records are out: the run is under way (os.read, not readline: communicate()
        # reads the pipe's descriptor and would miss what a buffered readline read ahead)
        first = os.read(proc.stdout.fileno(), 1 << 16)
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 128 + sig
    assert one_error_line(err) in ("Error: interrupted", "Error: terminated (SIGTERM)")
    rows = records(first + rest)  # whole records, 1..n in order
    assert 1 <= len(rows) < 200_000


def test_two_concurrent_writers(tmp_path, tiny_bundle):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("my card\n" * 3000, encoding="utf-8")
    b.write_text("exchange rate euro\n" * 2000, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    procs = [
        start([*LRSL, "predict", "--bundle", str(tiny_bundle), "--input", str(src), "--output", str(out)])
        for src in (a, b)
    ]
    for p in procs:
        _, err = p.communicate(timeout=WAIT_S)
        assert p.returncode == 0, err
    rows = records(out.read_bytes())  # one writer's whole file, not an interleaving
    assert len(rows) in (3000, 2000) and temp_files(tmp_path) == []
    assert len({row["label"] for row in rows}) >= 1


# ---- 6. closed and failing streams, encodings, thread counts ---------------------------------------
def test_closed_stdout_and_stdin(tiny_bundle):
    r = subprocess.run(
        [*LRSL, "predict", "--bundle", str(tiny_bundle), "x"], stdout=None, stderr=subprocess.PIPE,
        env=ENV, timeout=WAIT_S, preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert r.returncode == 1 and "standard output is closed" in one_error_line(r.stderr)
    r = subprocess.run(
        [*LRSL, "predict", "--bundle", str(tiny_bundle)], capture_output=True, env=ENV, timeout=WAIT_S,
        preexec_fn=lambda: os.close(0),
    )  # fmt: skip
    assert r.returncode == 1 and "standard input is closed" in one_error_line(r.stderr)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_stdout(tiny_bundle):
    with open("/dev/full", "wb") as full:
        r = subprocess.run(
            [*LRSL, "predict", "--bundle", str(tiny_bundle), "x"], stdout=full, stderr=subprocess.PIPE,
            env=ENV, timeout=WAIT_S,
        )  # fmt: skip
    assert (
        r.returncode == 1
        and one_error_line(r.stderr) == "Error: <stdout>: cannot write: No space left on device"
    )


@pytest.mark.parametrize("fmt", ["table", "jsonl", "csv"])
def test_ascii_terminal_encoding(tiny_bundle, fmt):
    r = lrsl("predict", "--bundle", tiny_bundle, "--format", fmt, "café ☃", env={"PYTHONIOENCODING": "ascii"})
    assert r.returncode == 0, r.stderr
    r.stdout.decode("ascii")  # nothing but ASCII reached the stream
    if fmt == "jsonl":
        assert len(records(r.stdout)) == 1
    elif fmt == "table":
        assert b"caf\\xe9 \\u2603" in r.stdout


@pytest.mark.parametrize("threads", ["100000000", "1025"])
def test_absurd_thread_count(tiny_bundle, threads):
    r = lrsl("predict", "--bundle", tiny_bundle, "--threads", threads, "x")
    assert r.returncode == 2 and f"threads={threads} is more than" in one_error_line(r.stderr)


def test_thread_count_bound_in_the_library(tiny_bundle):
    from lrsl_rt import Reranker, UsageError
    from lrsl_rt.session import OnnxSession, max_threads

    with pytest.raises(UsageError, match="is more than"):
        Reranker.from_bundle(tiny_bundle, threads=max_threads() + 1)
    with pytest.raises(UsageError, match="threads=.* is more than"):
        OnnxSession(next(tiny_bundle.glob("classifier_*.onnx")), threads=10**9)


def test_surrogate_through_the_api(tiny_bundle):
    from lrsl_rt import InputError, Reranker

    r = Reranker.from_bundle(tiny_bundle, threads=1)
    with pytest.raises(InputError, match=r"text #1 of the batch: not valid Unicode: lone surrogate \\udc80"):
        r.predict(["my card", "x\udc80"])
    assert len(r.predict(["card " * 200_000])) == 1  # a long text through the API: cut, not refused


# ---- 9. export and train killed for real ---------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_killed_export_leaves_the_old_bundle(tmp_path, tiny_checkpoint, tiny_bundle_fp32, sig):
    out = Path(shutil.copytree(tiny_bundle_fp32, tmp_path / "bundle"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = start(
        [sys.executable, "-m", "export", str(tiny_checkpoint), str(out), "--precision", "fp32", "--force",
         "--max-accuracy-drop", "100"],
        cwd=ROOT,
    )  # fmt: skip
    wait_for(lambda: _staging_has_files(tmp_path), proc, "a staging directory with files")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=WAIT_S)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no half bundle at OUT
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        return
    assert proc.returncode == 128 + sig and "Traceback" not in err.decode()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # the staging directory is gone


def _staging_has_files(d: Path) -> bool:
    for p in d.iterdir():
        if p.name.startswith(".bundle.partial"):
            try:
                return any(p.iterdir())
            except FileNotFoundError:
                return False
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_killed_train_leaves_no_half_checkpoint(tmp_path, tiny_base, tiny_data, sig):
    from train.checkpoint import write_jsonl

    (train_x, train_y), (dev_x, dev_y), _ = tiny_data
    write_jsonl(tmp_path / "train.jsonl", train_x, train_y)
    write_jsonl(tmp_path / "dev.jsonl", dev_x, dev_y)
    out = tmp_path / "ckpt"
    proc = start(
        [sys.executable, "-m", "train", "--train", str(tmp_path / "train.jsonl"), "--dev", str(tmp_path / "dev.jsonl"),
         "--classifier-model", str(tiny_base), "--embedder-model", str(tiny_base), "--epochs", "1",
         "--embedder-epochs", "1", "--max-length", "32", "--fusion", "logits_cos:2", "--out", str(out)],
        cwd=ROOT, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log = []

    def reached_checkpoint_step() -> bool:
        line = proc.stdout.readline().decode("utf-8", "replace")
        log.append(line)
        return "[5/5]" in line or not line

    wait_for(reached_checkpoint_step, proc, "the checkpoint step")
    proc.send_signal(sig)
    proc.communicate(timeout=WAIT_S)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.lstrip(".").startswith("ckpt"))
    complete = out.is_dir() and {"lrsl.json", "metrics.json", "classifier", "embedder"} <= {
        p.name for p in out.iterdir()
    }
    assert leftovers == [] or (leftovers == ["ckpt"] and complete), (leftovers, "".join(log[-5:]))
    assert proc.returncode in (0, 128 + sig), "".join(log[-5:])
