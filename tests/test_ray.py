"""``lrsl-rt predict --engine ray`` and ``lrsl_rt.ray`` on one local Ray cluster shared by this module.

The bundle is the fp32 tiny bundle: an int8 model quantizes its activations dynamically, with a scale
taken from the whole batch, so its answers depend on which texts share a batch; Ray forms batches
from its own blocks (files, read chunks, error rows taken out), so an int8 bundle could differ from
the in-process CLI on a near-tie and the parity test would be comparing batchings, not engines. With
fp32 a text's logits do not depend on its batch neighbours beyond float rounding.

The fault test kills an actor's process (``os.kill``, SIGKILL) while it holds batches and checks
that every row still comes out exactly once.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT
from tiny_models import synthetic_dataset

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from lrsl_rt.cli import main  # noqa: E402
from lrsl_rt.ray import predict_dataset  # noqa: E402
from lrsl_rt.ray.job import read_output  # noqa: E402

TEXTS = synthetic_dataset(15, seed=7)[0] + ["Café 😀", "why " * 100, ""]  # 63 texts, one empty
BAD_JSONL_LINES = {5: "not json", 9: '{"text": 3}', 12: '{"other": "x"}'}


@pytest.fixture(scope="module")
def cluster():
    """One local cluster (2 CPUs) for the module; the CLI joins it instead of starting its own.

    A raylet that does not register within Ray's fixed 30 s (a busy machine) is started again; with
    RAY_ADDRESS set, the tests join that cluster instead (it should have 2 CPUs).
    Ray's memory monitor kills workers when the whole machine nears its memory limit, whoever uses
    the memory; on a shared test machine that would kill actors for other processes' sake, so it is off.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    joining = bool(os.environ.get("RAY_ADDRESS"))  # a cluster started beforehand (`ray start --head`)
    for attempt in range(3):  # a raylet that misses Ray's 30 s start-up window on a loaded machine
        try:
            if joining:
                ray.init(log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
            ray.shutdown()
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _no_env_bundle(monkeypatch):
    monkeypatch.delenv("LRSL_RT_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The same texts as CSV, Parquet and JSON lines; the JSONL has three bad lines in between."""
    d = tmp_path_factory.mktemp("ray_inputs")
    with open(d / "a.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows([i, t] for i, t in enumerate(TEXTS))
    pq.write_table(pa.table({"text": TEXTS}), d / "b.parquet")
    lines, texts = [], iter(TEXTS)
    for n in range(1, len(TEXTS) + len(BAD_JSONL_LINES) + 1):
        lines.append(BAD_JSONL_LINES.get(n) or json.dumps({"text": next(texts)}, ensure_ascii=False))
    (d / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def inprocess(capsys, bundle, path, *extra) -> list[dict]:
    code, out, err = run(
        capsys, "predict", "--bundle", bundle, "--input", path, "--on-error", "record", *extra
    )
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def sorted_rows(table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["source"], r["line"]))


# ---- the CLI --------------------------------------------------------------------------------------
def test_three_formats_match_the_inprocess_cli_row_for_row(
    capsys, cluster, tiny_bundle_fp32, inputs, tmp_path
):
    out = tmp_path / "preds"
    code, stdout, err = run(
        capsys,
        "predict", "--engine", "ray", "--bundle", tiny_bundle_fp32, "--input", inputs / "*",
        "--output", out, "--on-error", "record", "--actors", "2",
    )  # fmt: skip
    assert code == 0, err
    n_in = 3 * len(TEXTS) + len(BAD_JSONL_LINES)
    assert (
        f"rows in {n_in:,} = rows out {n_in:,} ({n_in - 3:,} predictions, 3 errors) from 3 file(s)" in stdout
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds"]  # no temporary directory left
    rows = sorted_rows(read_output(out, "parquet"))
    by_source = {}
    for r in rows:
        by_source.setdefault(os.path.basename(r["source"]), []).append(r)
    assert [r["line"] for r in by_source["a.csv"]] == list(range(2, len(TEXTS) + 2))
    assert [r["line"] for r in by_source["b.parquet"]] == list(range(1, len(TEXTS) + 1))
    assert [r["line"] for r in by_source["c.jsonl"]] == list(range(1, n_in - 2 * len(TEXTS) + 1))
    assert "text" not in rows[0]

    want = inprocess(capsys, tiny_bundle_fp32, inputs / "a.csv")
    for name in ("a.csv", "b.parquet"):
        assert [r["label"] for r in by_source[name]] == [w["label"] for w in want], name
        assert [r["hard"] for r in by_source[name]] == [w["hard"] for w in want], name
        assert all(r["error"] is None for r in by_source[name])
    want_jsonl = inprocess(capsys, tiny_bundle_fp32, inputs / "c.jsonl")
    got = by_source["c.jsonl"]
    assert [(r["line"], r["label"], r["error"]) for r in got] == [
        (w["line"], w.get("label"), w.get("error")) for w in want_jsonl
    ]
    assert [r["line"] for r in got if r["error"]] == sorted(BAD_JSONL_LINES)
    assert got[4]["error"].startswith("not valid JSON") and got[4]["label"] is None


def test_jsonl_output_has_the_cli_record_shape(capsys, cluster, tiny_bundle_fp32, inputs, tmp_path):
    out = tmp_path / "preds"
    argv = ["--input", inputs / "c.jsonl", "--on-error", "record", "--explain"]
    code, _, err = run(
        capsys, "predict", "--engine", "ray", "--bundle", tiny_bundle_fp32, *argv,
        "--output", out, "--output-format", "jsonl", "--actors", "1", "--cpus-per-actor", "2",
    )  # fmt: skip
    assert code == 0, err
    got = [
        json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text("utf-8").splitlines()
    ]
    got.sort(key=lambda r: r["line"])
    want = inprocess(capsys, tiny_bundle_fp32, *argv[1:2], *argv[2:])
    assert [set(r) - {"source"} for r in got] == [set(w) for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["source"] == str(inputs / "c.jsonl")
        assert g.get("label") == w.get("label") and g.get("error") == w.get("error")
        if "explanation" in w:
            assert g["explanation"]["topk_before"][0]["label"] == w["explanation"]["topk_before"][0]["label"]
            assert g["explanation"]["variance"] == pytest.approx(
                w["explanation"]["variance"], rel=1e-4, abs=1e-6
            )


def test_a_bad_row_stops_the_job_and_leaves_no_output(capsys, cluster, tiny_bundle_fp32, inputs, tmp_path):
    out = tmp_path / "preds"
    code, _, err = run(
        capsys, "predict", "--engine", "ray", "--bundle", tiny_bundle_fp32,
        "--input", inputs / "c.jsonl", "--output", out, "--actors", "1",
    )  # fmt: skip
    assert code == 1
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err
    assert f"{inputs / 'c.jsonl'}:" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary directory


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "{d}/*.nothing", "--output", "{t}/o"], "no file matches"),
        (["--input", "{d}/a.csv", "--output", "{t}"], "exists; choose a new directory"),
        (["--input", "{d}/a.csv", "--output", "{t}/o", "--format", "csv"], "use --output-format"),
        (["--input", "{d}/a.csv", "--output", "{t}/o", "--column", "body"], "no column 'body'"),
        (["x", "--output", "{t}/o"], "reads --input files"),
    ],
)
def test_usage_errors(capsys, inputs, tmp_path, argv, message):
    """Refused before any cluster work: no cluster, and the bundle directory is never loaded."""
    argv = [a.format(d=inputs, t=tmp_path) for a in argv]
    code, _, err = run(capsys, "predict", "--engine", "ray", "--bundle", inputs, *argv)
    assert code in (1, 2) and message in err and len(err.strip().splitlines()) == 1, err


def test_ray_flags_need_the_ray_engine(capsys, tmp_path):
    code, _, err = run(capsys, "predict", "--bundle", tmp_path, "--actors", "2", "card")
    assert code == 2 and "need --engine ray" in err


BLOCK_RAY = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'")
sys.meta_path.insert(0, _Block())
from lrsl_rt.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_engine_ray_without_ray_names_the_extra(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_RAY, "predict", "--engine", "ray", "--input", "x.csv", "--output", "o"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'lrsl-rt[ray]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


# ---- the library ----------------------------------------------------------------------------------
def test_predict_dataset_keeps_columns_and_records_null_texts(cluster, tiny_bundle_fp32):
    from lrsl_rt import Reranker

    items = [{"id": i, "text": t} for i, t in enumerate(TEXTS[:10])] + [{"id": 10, "text": None}]
    ds = predict_dataset(ray.data.from_items(items), tiny_bundle_fp32, on_error="record")
    rows = sorted(ds.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(11)) and rows[0]["text"] == TEXTS[0]
    want = [p.label for p in Reranker.from_bundle(tiny_bundle_fp32, threads=1).predict(TEXTS[:10])]
    assert [r["label"] for r in rows[:10]] == want
    assert rows[10]["error"] == "column 'text': null" and rows[10]["label"] is None


def _paced_source(batch, rows: int, big: int, after: int, go: str):
    """Yields a block of ``rows`` texts, then one of ``big`` (likely in the actor when it is killed),
    then waits for the file ``go`` (made after the kill) before ``after`` more blocks of ``rows``."""
    sizes = [rows, big] + [rows] * after
    start = 0
    for i, n in enumerate(sizes):
        if i == 2:
            deadline = time.monotonic() + 120
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.05)
        ids = list(range(start, start + n))
        start += n
        yield pa.table({"id": ids, "text": [TEXTS[i % len(TEXTS)] for i in ids]})


def _predictor_pids() -> set[int]:
    """The predictor actors of this process's own local cluster (its raylet is a child of this
    process): another test run on the machine has actors of the same name. Joining a cluster
    (``RAY_ADDRESS``), every process of the machine."""
    import psutil

    joining = bool(os.environ.get("RAY_ADDRESS"))
    pids = set()
    for p in psutil.process_iter() if joining else psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if cmd.startswith("ray::MapWorker(") and "MapBatches(_Predictor)" in cmd:
            pids.add(p.pid)
    return pids


def test_killed_actor_loses_and_repeats_no_row(cluster, tiny_bundle_fp32, tmp_path):
    """SIGKILL the only actor after its first output batch, with more input held back until then:
    Ray must restart it and finish; every row comes out once."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this module
    rows, big, after, go = 10, 2000, 20, tmp_path / "go"
    source = ray.data.from_items([0], override_num_blocks=1).map_batches(
        _paced_source,
        fn_kwargs={"rows": rows, "big": big, "after": after, "go": str(go)},
        batch_format="pyarrow",
        num_cpus=0,
    )
    ds = predict_dataset(source, tiny_bundle_fp32, actors=1, batch_size=rows, on_error="record")
    got, killed = [], None
    before = _predictor_pids()  # actors of earlier tests may still be exiting
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        got += batch.column("id").to_pylist()
        if killed is None:  # the rest of the input is held back until the actor is dead
            (killed,) = _predictor_pids() - before
            os.kill(killed, signal.SIGKILL)
            go.touch()
    assert sorted(got) == list(range(rows + big + rows * after))  # every row once: none lost, none repeated
    assert _gone(killed)


def _gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether the process ``pid`` has ended (a zombie waiting for its parent counts as ended), waiting
    up to ``timeout`` seconds: a SIGKILLed process is reaped by its parent when the parent gets to it."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_job_survives_a_killed_actor(capsys, cluster, tiny_bundle_fp32, tmp_path):
    """The same fault through the CLI job: the job's own check passes and the output is complete."""
    big = tmp_path / "big.parquet"
    n = 5_000
    pq.write_table(pa.table({"text": [TEXTS[i % len(TEXTS)] for i in range(n)]}), big, row_group_size=1000)
    stop, killed, before = threading.Event(), [], _predictor_pids()

    def killer():
        while not stop.is_set() and not killed:
            for pid in _predictor_pids() - before:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        code, stdout, err = run(
            capsys, "predict", "--engine", "ray", "--bundle", tiny_bundle_fp32, "--input", big,
            "--output", tmp_path / "out", "--actors", "1",
        )  # fmt: skip
    finally:
        stop.set()
        t.join()
    assert killed, "no actor process was seen"
    assert code == 0, err
    assert f"rows in {n:,} = rows out {n:,}" in stdout
    lines = read_output(tmp_path / "out", "parquet", columns=["line"]).column("line").to_pylist()
    assert sorted(lines) == list(range(1, n + 1))


def test_abstain_reaches_the_ray_rows_as_in_the_cli(capsys, cluster, tiny_bundle_oos, tmp_path):
    from tiny_models import OUT_OF_SCOPE

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:8] + OUT_OF_SCOPE), "utf-8")
    for flag, present in (("--abstain", True), ("--no-abstain", False)):
        out = tmp_path / f"preds{flag}"
        code, _, err = run(
            capsys, "predict", "--engine", "ray", "--bundle", tiny_bundle_oos, "--input", src, flag,
            "--output", out, "--output-format", "jsonl", "--actors", "1",
        )  # fmt: skip
        assert code == 0, err
        got = sorted(
            (json.loads(x) for f in out.glob("*.jsonl") for x in f.read_text("utf-8").splitlines()),
            key=lambda r: r["line"],
        )
        want = inprocess(capsys, tiny_bundle_oos, src, flag)
        assert [("out_of_scope" in g) for g in got] == [present] * len(want)
        assert [(g["label"], g.get("out_of_scope")) for g in got] == [
            (w["label"], w.get("out_of_scope")) for w in want
        ]
