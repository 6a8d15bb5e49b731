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
    # no concurrency 32 and no 80 % open-loop level in this run: those two targets are not evaluated
    assert set(result["targets"]) == {"c1_p50_gap_ms", "non_2xx_up_to_100pct"}
    assert f"| {one} | 4 |" in proc.stdout and f"| {one} | 150 % |" in proc.stdout


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
