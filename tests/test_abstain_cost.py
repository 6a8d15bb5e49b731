"""benchmarks.abstain_cost on a tiny abstaining bundle: both modes timed, the stages add up, targets read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT
from tiny_models import OUT_OF_SCOPE, synthetic_dataset


def test_abstain_cost_times_both_modes_and_its_stages_add_up(tmp_path, tiny_bundle_oos):
    texts, labels = synthetic_dataset(2, seed=3)
    rows = [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)]
    rows += [{"text": t, "label": "weather"} for t in OUT_OF_SCOPE]
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "abstain.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "benchmarks.abstain_cost", "--case", f"tiny={tiny_bundle_oos},{data}"]
    cmd += ["--threads", "1", "--rounds", "2", "--batch", "4", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    case = json.loads(out.read_text())["cases"]["tiny"]
    assert set(case["pools"]) == {"session", "shared"}
    for pool in case["pools"].values():
        q = pool["quality"]
        assert q["on"]["oos_texts"] == len(OUT_OF_SCOPE) and q["on"]["inscope_texts"] == len(texts)
        assert q["off"]["oos_recall"] == 0.0  # abstain off flags nothing
        for mode in ("on", "off"):
            for key in ("stages_b1", "stages_b4"):
                st = pool[mode][key]
                staged = sum(st["ms_per_text"].values())
                # the named stages are parts of the measured calls: never more than the whole
                assert (
                    0 < staged <= st["measured"]
                    and abs(st["unattributed"] - (st["measured"] - staged)) < 1e-9
                )
                assert {"tokenize", "classifier", "rule"} <= set(st["ms_per_text"])
                assert ("abstain" in st["ms_per_text"]) == (mode == "on")
        assert pool["b1_ratio"] > 0 and pool["qps_ratio"] > 0
    assert set(case["targets"]) == {
        "b1_p50_on_le_1.25x_off", "qps_on_ge_0.8x_off", "auroc_within_0.005_of_knn", "recall_within_2pt_of_knn"
    }  # fmt: skip
    assert "### Where the time goes" in proc.stdout and "| tiny (session) |" in proc.stdout
