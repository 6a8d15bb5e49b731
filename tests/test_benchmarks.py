"""Smoke tests of the entry scripts of benchmarks/ (latency, accuracy, int8_variants, serve) on the
tiny checkpoint and bundles.

They check that the scripts run end to end and write what they promise (one entry per contender with
positive figures, the markdown tables, the PNG, the JSON) -- never how fast anything is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT
from tiny_models import synthetic_dataset

from benchmarks.lib.optimum_model import optimum_available

LRSL = ("lrsl_clf_int8", "lrsl_clf_fp32", "lrsl_int8", "lrsl_fp32", "lrsl_int8_shared")


def _run(script: str, *args) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [sys.executable, "-m", f"benchmarks.{script}", *map(str, args)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"{script} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def _texts_file(tmp_path):
    texts, labels = synthetic_dataset(2, seed=3)  # 8 labelled texts with the tiny model's labels
    path = tmp_path / "texts.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True))
    )
    return path


def test_latency_quick(tmp_path, tiny_checkpoint, tiny_bundle, tiny_bundle_fp32):
    out = tmp_path / "results" / "latency.json"
    proc = _run(
        "latency", "--quick", "--bundle", tiny_bundle, "--bundle-fp32", tiny_bundle_fp32,
        "--checkpoint", tiny_checkpoint, "--texts", _texts_file(tmp_path), "--threads", "1",
        "--batch-sizes", "1,4", "--startup-runs", "1", "--out", out,
    )  # fmt: skip
    result = json.loads(out.read_text())
    expected = {"pytorch_fp32", *LRSL} | ({"optimum_int8"} if optimum_available() else set())
    assert set(result["contenders"]) == expected, result["skipped"]
    assert result["baseline"] == "pytorch_fp32" and result["errors"] == {}
    for name, c in result["contenders"].items():
        s = c["summary"]
        for key in ("b1_p50_ms", "b1_p99_ms", "b1_model_p50_ms", "qps_1", "qps_4", "rss_peak_mb", "load_s"):
            assert s[key]["median"] > 0, (name, key)
        assert 0 <= s["accuracy_classifier"]["median"] <= 1, name
        assert len(c["rounds"]) == 1 and c["rounds"][0]["n"] == 8
        if name in ("lrsl_int8", "lrsl_fp32", "lrsl_int8_shared"):
            assert 0 <= s["hard_share"]["median"] <= 1 and "accuracy_lrsl" in s
            assert set(c["rounds"][0]["breakdown"]) == {"1", "4"}
    assert result["startup"]["import_lrsl_rt"]["in_process_s"]["median"] > 0
    assert result["startup"]["cold_predict"]["wall_s"]["median"] > 0
    assert result["mac_utilisation"]["peak"]["macs_per_cycle_per_core"] > 0
    assert result["machine"]["versions"]["onnxruntime_providers"]
    for header in (
        "| contender | p50 ms |",
        "| contender | q/s @1 |",
        "### Where the LRSL time goes",
        "### Start-up",
    ):
        assert header in proc.stdout
    # the fp32 bundle is batch invariant: its labels in calls of 4 are its labels alone
    same = next(line for line in proc.stdout.splitlines() if line.startswith("| LRSL labels same as one"))
    cells = [c.strip() for c in same.strip("|").split("|")[1:]]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| stage (ms/query)"))
    columns = [c.strip() for c in header.strip("|").split("|")[1:]]
    assert dict(zip(columns, cells, strict=True))["lrsl_fp32 @4"] == "100.00%"
    for name in expected:
        assert f"| {name} |" in proc.stdout
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_bad_bundle_is_usage_error(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.latency",
        "--bundle",
        str(tmp_path / "nope"),
        "--quick",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Error:" in proc.stderr and "nope" in proc.stderr


def test_accuracy(tmp_path, tiny_checkpoint, tiny_bundle, tiny_bundle_fp32):
    out = tmp_path / "accuracy.json"
    proc = _run(
        "accuracy", "--checkpoint", tiny_checkpoint, "--bundle", tiny_bundle,
        "--bundle-fp32", tiny_bundle_fp32, "--threads", "1", "--out", out,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["n"] == 24
    names = list(result["rows"])
    assert (
        names[0] == "pytorch" and any(n.startswith("bundle int8") for n in names) and "bundle fp32" in names
    )
    for r in result["rows"].values():
        rep = r["report"]
        assert rep["n"] == 24 and 0 <= rep["accuracy_lrsl"] <= 1 and 0 <= rep["hard_share"] <= 1
    assert all(
        0 <= r["agreement_with_pytorch"]["lrsl"] <= 1 for n, r in result["rows"].items() if n != "pytorch"
    )
    assert "| model | threshold |" in proc.stdout and "| pytorch |" in proc.stdout


def test_int8_variants_smoke(tiny_checkpoint, tmp_path):
    out = tmp_path / "variants.json"
    proc = _run(
        "int8_variants",
        "--checkpoint",
        tiny_checkpoint,
        "--variants",
        "fused_u8u8,raw_s8rr_ffn2",
        "--work",
        tmp_path / "work",
        "--threads",
        "1",
        "--out",
        out,
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["fused_u8u8", "raw_s8rr_ffn2"]
    for r in rows:
        for split in ("dev", "test"):
            assert r[split]["n"] == 24 and 0.0 <= r[split]["agreement"] <= 1.0
            assert r[split]["differ"] == round((1 - r[split]["agreement"]) * 24)
        assert r["speed"]["batch1_ms"] > 0 and r["speed"]["qps"] > 0
    assert (
        "fused_u8u8" in proc.stdout
        and " ms, " in proc.stdout
        and (tmp_path / "work" / "raw_s8rr_ffn2.onnx").is_file()
    )


def test_serve_quick(tmp_path, tiny_bundle):
    """The Python fallback for the closed loop (no wrk needed), the open-loop driver and its check."""
    out = tmp_path / "serve.json"
    one = "--workers 1 --threads 1"
    proc = _run(
        "serve", "--quick", "--bundle", tiny_bundle, "--texts", _texts_file(tmp_path), "--threads", "1",
        "--client", "python", f"--server-flags={one}", f"--server-flags={one} --max-batch-texts 1",
        "--concurrency", "1,4", "--out", out,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["inprocess"]["qps"] > 0 and result["inprocess"]["b1"]["p50_ms"] > 0
    assert "python asyncio + httpx" in result["method"]["closed_client"]
    first, off = result["servers"]
    assert (first["workers"], first["threads"]) == (1, 1) and result["bundle"]["answers_depend_on_batch"]
    for server in (first, off):
        assert set(server["closed_loop"]) == {"1", "4"}
        for level in server["closed_loop"].values():
            assert level["requests"] > 0 and level["errors"]["failed"] == 0 and level["qps"] > 0
            assert 0 <= level["label_differs_from_alone"] <= 1 and level["mean_batch_texts"] >= 1
            assert level["client_cpu_s"] > 0
    assert off["closed_loop"]["4"]["mean_batch_texts"] == 1
    assert set(first["open_loop"]) == {"50 %", "150 %"} and off["open_loop"] == {}
    for level in first["open_loop"].values():
        assert level["sent"] > 0 and level["unanswered"] == 0 and level["statuses"].get("200", 0) > 0
        assert 0 <= level["label_differs_from_alone"] <= 1
    check = result["driver_check"]
    # both rates are rounded to the millisecond-per-second in the JSON
    assert check["target_rps"] == pytest.approx(2 * first["open_loop"]["150 %"]["target_rps"], abs=0.01)
    assert check["sent"] > 0
    # the driver may open twice what the server holds: its queue and a batch, per worker
    b = (first["workers"], first["max_queue_texts"], first["max_batch_texts"])
    assert first["open_connections"] == 2 * b[0] * (b[1] + b[2]) and "open_connections" not in off
    assert {level["connections"] for level in first["open_loop"].values()} == {first["open_connections"]}
    assert check["connections"] == first["open_connections"]
    # no concurrency 32 and no 80 % open-loop level in this run: those two targets are not evaluated
    assert set(result["targets"]) == {"c1_p50_gap_ms", "failed_below_queue_limit", "overload"}
    # an in-process run before the servers and one after each server's closed loop, which brackets it
    assert len(result["inprocess_runs"]) == 3 and result["inprocess_runs"][0] == result["inprocess"]
    assert [s["inprocess_runs"] for s in (first, off)] == [[0, 1], [1, 2]]
    assert result["targets"]["overload"]["rate"] == "150 %"
    assert f"| {one} | 4 |" in proc.stdout and f"| {one} | 150 % |" in proc.stdout
    assert (
        f"Overload (150 %, server **{one}**, the driver on at most {first['open_connections']}" in proc.stdout
    )
    assert "- overload: p99 of accepted " in proc.stdout


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_serve_quick_with_wrk(tmp_path, tiny_bundle):
    out = tmp_path / "serve.json"
    _run(
        "serve", "--quick", "--bundle", tiny_bundle, "--texts", _texts_file(tmp_path), "--threads", "1",
        "--client", "wrk", "--server-flags=--workers 1 --threads 1", "--concurrency", "2", "--rates", "50",
        "--out", out,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["method"]["closed_client"].startswith("wrk")
    level = result["servers"][0]["closed_loop"]["2"]
    assert level["requests"] > 0 and level["errors"]["non_2xx"] == 0 and level["p50_ms"] > 0
    assert level["client_cpu_s"] > 0 and level["mean_batch_texts"] >= 1


# ---- the serve report, on hand-made results ---------------------------------------------------------------
def _serve_result(open_loop: dict) -> dict:
    """A benchmarks.serve result with one server (2 workers, best closed-loop rate 400 q/s) and the given
    open-loop levels."""
    level = {"qps": 400.0, "p50_ms": 5.0, "p90_ms": 8.0, "p99_ms": 12.0, "errors": {"failed": 0}}
    level |= {"client_cpu_s": 1.0, "wall_s": 10.0, "server_cpu_s": 15.0, "mean_batch_texts": 4.0}
    return {
        "method": {
            "quick": False, "closed_client": "wrk 4.2.0, 1 thread", "open_client": "openloop",
            "duration_s": 10.0, "warmup_s": 2.0, "threads": 2,
        },
        "machine": {
            "cpu": {"usable_cpus": 2, "model": "test cpu", "int8_flags": {"avx512_vnni": True}},
            "versions": {"onnxruntime": "1.0", "lrsl-rt": "0.0"},
        },
        "bundle": {"path": "bundle", "precision": "int8", "preset": None, "answers_depend_on_batch": True},
        "texts": {"n": 1000, "source": "texts.jsonl"},
        "inprocess": {"b1": {"mean_ms": 2.0, "p50_ms": 2.0, "p95_ms": 3.0, "p99_ms": 4.0}, "qps": 700.0, "batch": 32},
        "driver_check": {},
        "servers": [
            {
                "name": "defaults", "flags": "", "workers": 2, "threads": 1, "max_queue_texts": 64,
                "max_batch_texts": 32, "open_connections": 384, "closed_loop": {"32": level}, "open_loop": open_loop,
            }
        ],
    }  # fmt: skip


def _open_level(rate: float, ok: int, refused: int, p99_ms: float | None) -> dict:
    return {
        "target_rps": rate, "offered_rps": rate, "ok_rps": ok / 10, "sent": ok + refused, "unanswered": 0,
        "statuses": {"200": ok, "429": refused} if refused else {"200": ok},
        "latency_ok": None if p99_ms is None else {"p50_ms": p99_ms / 4, "p99_ms": p99_ms},
        "late": {"p99_ms": 1.0}, "client_cpu_s": 1.0, "wall_s": 10.0, "connections": 384,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("ok", "refused", "p99_ms", "max_queue_ms", "bound", "met"),
    [
        (4000, 2000, 400.0, 250.0, 250.0, True),  # within 250 ms (the time bound) + 160 ms of batch
        (4000, 2000, 420.0, 250.0, 250.0, False),  # the accepted waited longer than the bounds allow
        (4000, 2000, 420.0, None, 320.0, True),  # a run without the time bound: the count's 320 ms
        (6000, 0, 300.0, 250.0, 640 / 3, False),  # no 429: the overload never reached the queue bound
        (0, 6000, None, 250.0, 250.0, False),  # nothing accepted
    ],
)
def test_serve_report_overload_target(ok, refused, p99_ms, max_queue_ms, bound, met):
    """2 workers answering 4000 requests with 200 in 10 s serve 200 texts/s each: --max-queue-texts 64
    is 64 / 200 = 320 ms of queue there, --max-queue-ms 250 bounds it to 250 ms, and a batch of 32
    (no mean batch recorded) is 160 ms. At 6000 answered the rate is 300/s: 213.3 ms and 106.7 ms.
    With none answered the rate is the best closed-loop one, 400 q/s."""
    from benchmarks.lib import serve_report

    r = _serve_result(
        {"50 %": _open_level(200.0, 2000, 0, 10.0), "150 %": _open_level(600.0, ok, refused, p99_ms)}
    )
    r["servers"][0]["max_queue_ms"] = max_queue_ms
    r["targets"] = serve_report.targets(r)
    t = r["targets"]["overload"]
    rate = (ok or 4000) / 10 / 2
    assert (t["rate"], t["share_429"]) == ("150 %", refused / 6000)
    assert t["queue_bound_ms"] == pytest.approx(bound)
    assert t["batch_ms"] == pytest.approx(1e3 * 32 / rate)
    assert t["met"] is met
    md = serve_report.markdown(r)
    verdict = "met" if met else "NOT met"
    shown_p99 = "none" if p99_ms is None else f"{p99_ms:.1f}"
    limit = bound + 1e3 * 32 / rate
    assert (
        f"- overload: p99 of accepted {shown_p99} ms vs {limit:.1f} ms, 429 on {100 * refused / 6000:.1f} % "
        f"(target p99 of accepted <= queue bound + batch time, 429 present): {verdict}"
    ) in md
    time_bound = f"; --max-queue-ms {max_queue_ms:g}" if max_queue_ms else ""
    assert (
        f"Overload (150 %, server **defaults**, the driver on at most 384 connections): 429 on "
        f"{100 * refused / 6000:.1f} % of the requests; p99 of the accepted {shown_p99} ms; queue bound "
        f"{bound:.1f} ms (--max-queue-texts 64 at {rate:.0f} answers/s per worker, this level's rate: "
        f"{1e3 * 64 / rate:.1f} ms{time_bound}) + batch time {1e3 * 32 / rate:.1f} ms (this level's mean "
        "batch at that rate)"
    ) in md


def test_serve_report_without_overload_level_or_settings():
    """No level above 100 %, or a run recorded before the server's queue settings were: no overload line."""
    from benchmarks.lib import serve_report

    r = _serve_result({"100 %": _open_level(400.0, 4000, 0, 30.0)})
    r["targets"] = serve_report.targets(r)
    assert "overload" not in r["targets"] and "Overload" not in serve_report.markdown(r)
    r = _serve_result({"150 %": _open_level(600.0, 4000, 2000, 300.0)})
    del r["servers"][0]["max_queue_texts"]
    r["targets"] = serve_report.targets(r)
    assert "overload" not in r["targets"] and "Overload" not in serve_report.markdown(r)


def test_serve_doctests():
    """open_connections and serve_report.overload, worked out in their docstrings."""
    import doctest

    import benchmarks.serve
    from benchmarks.lib import serve_report

    assert doctest.testmod(benchmarks.serve).failed == 0 and doctest.testmod(serve_report).failed == 0
