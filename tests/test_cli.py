"""The ``lrsl-rt`` command, through ``lrsl_rt.cli.main`` and once through a real subprocess.

Each test asserts the exit code (0 ok, 1 failed run, 2 bad usage) and what reached stdout/stderr:
one output record per input record, in order, and a one-line ``Error: ...`` without traceback.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PREDICTION_KEYS, ROOT

from lrsl_rt import Reranker
from lrsl_rt.accuracy import lrsl_report
from lrsl_rt.cli import main
from lrsl_rt.errors import UsageError

TEXTS = [
    "my card has not arrived",
    "exchange rate euro",
    "top up failed",
    "I lost my card",
    "Café 😀",
    "why " * 100,
]


@pytest.fixture(scope="module")
def r(tiny_bundle):
    return Reranker.from_bundle(tiny_bundle, threads=1)


@pytest.fixture(autouse=True)
def _no_env_bundle(monkeypatch, tmp_path):
    monkeypatch.delenv("LRSL_RT_BUNDLE", raising=False)
    monkeypatch.chdir(tmp_path)  # the default bundle path is relative: make sure it is absent


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def expected_labels(r, texts):
    return [p.label for p in r.predict(texts)]


# ---- predict: inputs ----------------------------------------------------------------------------
def test_predict_arguments(capsys, tiny_bundle, r):
    code, out, err = run(capsys, "predict", "--bundle", tiny_bundle, *TEXTS)
    assert code == 0 and err == ""
    rows = jsonl(out)  # stdout is not a terminal: jsonl
    assert [row["line"] for row in rows] == list(range(1, len(TEXTS) + 1))
    assert [row["label"] for row in rows] == expected_labels(r, TEXTS)
    assert set(rows[0]) == {"line", *PREDICTION_KEYS}


def test_predict_txt_jsonl_csv_files(capsys, tiny_bundle, r, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"body": t}) + "\n" for t in TEXTS), encoding="utf-8"
    )
    with open(tmp_path / "in.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "utterance"])
        w.writerows([i, t] for i, t in enumerate(TEXTS))
    want = expected_labels(r, TEXTS)
    for name, extra in (
        ("in.txt", []),
        ("in.jsonl", ["--text-field", "body"]),
        ("in.csv", ["--text-field", "utterance"]),
        ("in.jsonl", ["--field", "body"]),  # the old, hidden spellings
        ("in.csv", ["--column", "utterance"]),
    ):
        code, out, err = run(capsys, "predict", "--bundle", tiny_bundle, "--input", tmp_path / name, *extra)
        assert code == 0, err
        assert [row["label"] for row in jsonl(out)] == want, name


def test_predict_stdin(capsys, monkeypatch, tiny_bundle, r):
    data = ("\n".join(TEXTS[:3]) + "\n").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    code, out, _ = run(capsys, "predict", "--bundle", tiny_bundle)
    assert code == 0 and [row["label"] for row in jsonl(out)] == expected_labels(r, TEXTS[:3])


def test_env_bundle_and_explain(capsys, monkeypatch, tiny_bundle):
    monkeypatch.setenv("LRSL_RT_BUNDLE", str(tiny_bundle))
    code, out, _ = run(capsys, "predict", "--explain", "card")
    assert code == 0
    ex = jsonl(out)[0]["explanation"]
    assert {"variance", "threshold", "k", "topk_before", "topk_after", "similarities"} == set(ex)


# ---- predict: outputs ---------------------------------------------------------------------------
def test_output_csv_by_extension_and_table(capsys, tiny_bundle, tmp_path, r):
    out_file = tmp_path / "preds.csv"
    code, out, _ = run(capsys, "predict", "--bundle", tiny_bundle, "--output", out_file, *TEXTS)
    assert code == 0 and out == ""
    rows = list(csv.DictReader(out_file.open(encoding="utf-8")))
    assert [row["label"] for row in rows] == expected_labels(r, TEXTS)
    code, out, _ = run(
        capsys, "predict", "--bundle", tiny_bundle, "--format", "table", "--explain", *TEXTS[:2]
    )
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["line", "label", "score"]
    assert "variance" in lines[2] and lines[1].split()[0] == "1"


# ---- predict: bad records -----------------------------------------------------------------------
BAD_JSONL = ['{"text": "my card"}', "not json", '{"text": 3}', "", '{"other": "x"}', '{"text": "lost card"}']


def test_on_error_record_keeps_one_record_per_line(capsys, tiny_bundle, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(BAD_JSONL) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "predict", "--bundle", tiny_bundle, "--input", p, "--on-error", "record")
    rows = jsonl(out)
    assert code == 0 and [row["line"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert ["error" in row for row in rows] == [False, True, True, True, True, False]
    assert rows[2]["error"] == "field 'text': expected a string, got a number 3"
    assert rows[3]["error"].startswith("empty line")


def test_on_error_stop_is_the_default(capsys, tiny_bundle, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join([BAD_JSONL[0], BAD_JSONL[0], BAD_JSONL[2]]) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "predict", "--bundle", tiny_bundle, "--input", p)
    assert code == 1
    assert err == f"Error: {p}:3: field 'text': expected a string, got a number 3\n"
    assert [row["line"] for row in jsonl(out)] == [1, 2]  # records before the bad one were written


def test_non_utf8_input(capsys, tiny_bundle, tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"ok\ncaf\xe9\n")
    code, _, err = run(capsys, "predict", "--bundle", tiny_bundle, "--input", p)
    assert code == 1 and err.startswith(f"Error: {p}:2: not valid UTF-8") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "--bogus"], "unrecognized arguments: --bogus"),
        (["predict", "--format", "xml", "x"], "argument --format: invalid choice: 'xml'"),
        (
            ["predict", "--batch-size", "0", "x"],
            "argument --batch-size: expected a positive integer, got '0'",
        ),
        (["predict", "--provider", "tpu", "x"], "argument --provider: invalid choice"),
        (["predict", "x", "--input", "f.txt"], "give texts as arguments or --input FILE, not both"),
        (["predict", "--input", "missing.txt"], "missing.txt: input file not found"),
        (["predict", "--input", "same.txt", "--output", "./same.txt"], "same.txt: input file not found"),
        (["predict", "--input", "data.parquet"], "cannot tell the input format"),
        (["predict", "x"], "no bundle: --bundle and $LRSL_RT_BUNDLE are not given, and neither artifacts/"),
        (["predict", "--bundle", "nowhere", "x"], "bundle directory nowhere (--bundle) not found"),
        (["eval", "--bundle", "b"], "the following arguments are required: --input"),
        (["info", "--bundle", "nowhere"], "bundle directory nowhere (--bundle) not found"),
        ([], "choose a command"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("Error: ") and message in err and err.count("\n") == 1


def test_csv_naming_the_text_column_twice_is_refused_in_one_line(capsys, tmp_path, tiny_bundle):
    p = tmp_path / "twice.csv"
    p.write_text("text,text\nhello,world\n", encoding="utf-8")
    code, out, err = run(capsys, "predict", "--bundle", tiny_bundle, "--input", p)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"Error: {p}:1: column 'text' appears 2 times in the CSV header")


def test_broken_bundle_exits_1(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", "--bundle", tmp_path / "empty", "x")
    assert code == 1 and "manifest.json: not found" in err and "Traceback" not in err


def test_help_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "predict" in out and "eval" in out and "info" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("lrsl-rt ")


# ---- eval ---------------------------------------------------------------------------------------
@pytest.fixture
def labelled(tiny_data, tmp_path):
    (_, _), (dev_x, dev_y), _ = tiny_data
    p = tmp_path / "dev.jsonl"
    p.write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(dev_x, dev_y, strict=True)),
        encoding="utf-8",
    )
    return p, dev_x, dev_y


def test_eval_with_report(capsys, tiny_bundle, r, labelled, tmp_path):
    path, texts, gold = labelled
    code, out, err = run(
        capsys, "eval", "--bundle", tiny_bundle, "--input", path, "--report", tmp_path / "rep"
    )
    assert code == 0, err
    assert out.startswith("all  (n=24): classifier")
    report = json.loads((tmp_path / "rep" / "report.json").read_text(encoding="utf-8"))
    preds = r.predict(texts)
    ids = {lab: i for i, lab in enumerate(r.labels)}
    want = lrsl_report(
        np.array([ids[y] for y in gold]),
        np.array([p.classifier_label_id for p in preds]),
        np.array([p.label_id for p in preds]),
        np.array([p.hard for p in preds]),
    )
    assert {k: report[k] for k in want} == want
    assert report["threshold"] == r.threshold and report["k"] == r.k
    png = (tmp_path / "rep" / "variance.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_eval_csv_and_unknown_label(capsys, tiny_bundle, tmp_path):
    p = tmp_path / "gold.csv"
    p.write_text("text,category\nmy card,card_arrival\nrate,no_such_label\n", encoding="utf-8")
    code, _, err = run(capsys, "eval", "--bundle", tiny_bundle, "--input", p, "--label-field", "category")
    assert code == 1
    assert err.startswith(
        f"Error: {p}:3: label 'no_such_label' is not one of the bundle's 4 labels (card_arrival"
    )
    p.write_text("text,category\nmy card,card_arrival\n", encoding="utf-8")
    code, out, _ = run(capsys, "eval", "--bundle", tiny_bundle, "--input", p, "--label-field", "category")
    assert code == 0 and "n=1" in out


def test_eval_missing_label_field(capsys, tiny_bundle, tmp_path):
    p = tmp_path / "nolabel.jsonl"
    p.write_text('{"text": "x"}\n', encoding="utf-8")
    code, _, err = run(capsys, "eval", "--bundle", tiny_bundle, "--input", p)
    assert code == 1 and err == f"Error: {p}:1: field 'label': missing\n"


def test_eval_report_without_matplotlib(capsys, monkeypatch, tiny_bundle, labelled, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import -> ImportError
    code, _, err = run(
        capsys, "eval", "--bundle", tiny_bundle, "--input", labelled[0], "--report", tmp_path / "rep"
    )
    assert code == 2 and "pip install -e '.[plot]'" in err
    assert not (tmp_path / "rep").exists()


# ---- info ---------------------------------------------------------------------------------------
def test_info_without_bundle(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert "onnxruntime:" in out and "CPUExecutionProvider" in out
    assert "no bundle: --bundle and $LRSL_RT_BUNDLE are not given" in out


def test_info_with_bundle(capsys, tiny_bundle, r):
    code, out, _ = run(capsys, "info", "--bundle", tiny_bundle, "--verify")
    assert code == 0
    assert "labels:      4 (card_arrival" in out and "checksums:   verified" in out
    assert f"<= {r.threshold:.6g}" in out and "classifier" in out
    code, out, _ = run(capsys, "info", "--bundle", tiny_bundle, "--json")
    doc = json.loads(out)
    assert doc["bundle"]["n_labels"] == 4 and doc["environment"]["tokenizers"]
    assert doc["bundle"]["precision"] == "int8"


def test_info_reports_tampered_bundle(capsys, tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    with open(dst / "tokenizer.json", "a", encoding="utf-8") as f:
        f.write(" ")
    code, _, err = run(capsys, "info", "--bundle", dst, "--verify")
    assert code == 1 and "tokenizer.json: size" in err


# ---- a real process -----------------------------------------------------------------------------
def commands() -> list[list[str]]:
    cmds = [[sys.executable, "-m", "lrsl_rt"]]
    script = Path(sys.executable).parent / "lrsl-rt"
    if script.exists():  # the console script, when the project is installed (make install)
        cmds.append([str(script)])
    return cmds


@pytest.mark.parametrize("cmd", commands(), ids=lambda c: Path(c[-1]).name)
def test_subprocess(cmd, tiny_bundle, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}

    def proc(*args, stdin=None):
        return subprocess.run(
            [*cmd, *map(str, args)],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )

    p = proc("predict", "--bundle", tiny_bundle, "--on-error", "record", stdin="my card\n\nlost card\n")
    assert p.returncode == 0, p.stderr
    rows = jsonl(p.stdout)
    assert [row["line"] for row in rows] == [1, 2, 3] and "error" in rows[1]
    shared = proc("predict", "--bundle", tiny_bundle, "--thread-pool", "shared", "--threads", "1", "my card")
    alone = proc("predict", "--bundle", tiny_bundle, "--thread-pool", "session", "--threads", "1", "my card")
    assert shared.returncode == alone.returncode == 0, shared.stderr + alone.stderr
    assert jsonl(shared.stdout) == jsonl(alone.stdout) and len(jsonl(shared.stdout)) == 1
    p = proc("predict", "--bundle", tmp_path / "nowhere", "x")
    assert (
        p.returncode == 2 and p.stderr.startswith("Error: bundle directory") and "Traceback" not in p.stderr
    )
    p = proc("predict", "--bundle", tiny_bundle, stdin="ok\n\n")
    assert p.returncode == 1 and p.stderr == "Error: <stdin>:2: empty line (blank lines are not skipped)\n"


@pytest.mark.parametrize("split", ["dev", "test"])
def test_eval_reproduces_the_export(capsys, tiny_bundle, tiny_checkpoint, tmp_path, split):
    """`lrsl-rt eval` on the checkpoint's split gives the numbers export measured with r.predict."""
    code, _, err = run(
        capsys,
        "eval",
        "--bundle",
        tiny_bundle,
        "--input",
        tiny_checkpoint / f"{split}.jsonl",
        "--report",
        tmp_path,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    exported = report["bundle_metrics"]["bundle"][split]
    assert {k: report[k] for k in exported} == exported


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_chunks_and_progress(capsys, monkeypatch, tiny_bundle, tmp_path):
    """Small chunks: records and error records stay in order across chunk borders; progress on a tty."""
    import lrsl_rt.cli

    monkeypatch.setattr(lrsl_rt.cli, "CHUNK_SIZE", 2)
    lines = ["card", "", "rate", "lost card", "", "", "top up"]
    p = tmp_path / "in.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    code, out, _ = run(capsys, "predict", "--bundle", tiny_bundle, "--input", p, "--on-error", "record")
    rows = jsonl(out)
    assert code == 0 and [row["line"] for row in rows] == list(range(1, 8))
    assert ["error" in row for row in rows] == [line == "" for line in lines]
    progress = tty.getvalue()
    assert "\r" in progress and "7 texts 100.0%" in progress and progress.endswith("\n")


@pytest.mark.parametrize("pool", [None, "session", "shared"])
def test_runtime_flags_reach_the_reranker(capsys, monkeypatch, tiny_bundle, pool):
    """--threads/--thread-pool/--batch-size go to Reranker.from_bundle (captured: no shared pool is made
    in this process, where it would refuse every later session with threads of its own)."""
    seen = {}

    def capture(path, **kwargs):
        seen.update(kwargs)
        raise UsageError("captured")

    monkeypatch.setattr(Reranker, "from_bundle", staticmethod(capture))
    flags = ["--thread-pool", pool] if pool else []
    code, _, err = run(
        capsys, "predict", "--bundle", tiny_bundle, "--threads", "3", "--batch-size", "5", *flags, "x"
    )
    assert code == 2 and "captured" in err
    assert seen == {"providers": "cpu", "threads": 3, "batch_size": 5, "thread_pool": pool or "session"}
