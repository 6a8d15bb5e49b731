"""benchmarks/levers.py: the lever functions on hand-worked arrays, and the script on a tiny trained
checkpoint (arrays computed once, then read from the cache with the same results)."""

from __future__ import annotations

import json
import shlex
import shutil

import numpy as np
import pytest
from trained_tiny import trained

from benchmarks.lib import lever_eval as E
from lrsl_rt.fusion import Fusion


def test_hardness_scores_hand_example():
    """Row 0 logits [2, 1, 0.5, -1]: top-3 variance 0.3889, margin 1; row 1 is flatter on every measure."""
    logits = np.array([[2.0, 1.0, 0.5, -1.0], [1.0, 0.9, 0.8, -1.0]])
    s = E.hardness_scores(logits, 3)
    assert s["topk_variance"].round(4).tolist() == [0.3889, 0.0067]
    assert s["margin"].round(4).tolist() == [1.0, 0.1]
    for name in s:  # lower = harder: row 1 is the harder one for every measure
        assert s[name][1] < s[name][0], name
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert s["max_probability"][0] == pytest.approx(p.max())
    assert s["neg_entropy"][0] == pytest.approx(np.sum(p * np.log(p)))


def test_matched_threshold_marks_the_same_number_hard():
    score = np.array([0.5, 0.1, 0.9, 0.3])
    t = E.matched_threshold(score, 2)
    assert t == 0.3 and int(np.sum(score <= t)) == 2
    assert not np.any(score <= E.matched_threshold(score, 0))


def test_candidate_features_and_gold_position():
    logits = np.array([[3.0, 1.0, 2.0]])
    cos = np.array([[0.1, 0.9, 0.5]])
    feats, idx = E.candidate_features(logits, cos, 2)
    assert idx.tolist() == [[0, 2]]
    # logit - top, softmax, cos, cos - best candidate cos, rank one-hot
    assert feats[0, 1, 0] == pytest.approx(-1.0) and feats[0, 1, 2] == pytest.approx(0.5)
    assert feats[0, 0, 3] == pytest.approx(-0.4) and feats[0, 1, 3] == 0.0
    assert feats[0, :, 4:].tolist() == [[1, 0], [0, 1]]
    assert E.gold_position(np.array([[0, 2], [0, 2]]), np.array([2, 1])).tolist() == [1, -1]


def test_gate_row_reranks_only_the_gates_hard_rows_with_the_rule():
    """Both rows rerank to label 1 under logits*cos^2 (2.8*0.81 > 3*0.04), but only row 0 is hard
    (the gate's mask, not the rule's threshold): LRSL labels [1, 0], both right."""
    logits = np.array([[3.0, 2.8, 0.1], [3.0, 2.8, 0.1]])
    cos = np.array([[0.2, 0.9, 0.5], [0.2, 0.9, 0.5]])
    row = E.gate_row(
        np.array([True, False]), logits, cos, np.array([1, 0]), Fusion("logits_cos", 2, "all"), 3
    )
    assert row["accuracy_lrsl"] == 1.0 and row["_ok"].tolist() == [True, True]
    assert (row["n_hard"], row["mistakes"], row["mistakes_caught"]) == (1, 1, 1)


def test_mlp_learns_to_follow_the_cosine():
    """Gold is always the candidate with the higher cosine: the MLP must learn to pick it."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 5))
    cos = rng.uniform(-0.2, 0.8, size=(200, 5))
    feats, idx = E.candidate_features(logits, cos, 3)
    gold = idx[np.arange(200), np.argmax(feats[:, :, 2], axis=1)]
    net = E.train_mlp(feats, E.gold_position(idx, gold))
    assert np.mean(E.mlp_rerank(net, feats, idx) == gold) > 0.95
    cross = E.cross_fitted_mlp(logits, cos, gold, np.ones(200, bool), 3)
    assert np.mean(cross == gold) > 0.9


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return trained("roberta", tmp_path_factory)


def test_levers_script_on_a_tiny_checkpoint(built, tmp_path, capsys):
    from benchmarks import levers

    out = tmp_path / "levers"
    assert levers.main(["--checkpoint", str(built.checkpoint), "--out", str(out)]) == 0
    first = json.loads((out / "levers.json").read_text())
    metrics = json.loads((built.checkpoint / "metrics.json").read_text())
    assert first["threshold"] == pytest.approx(metrics["threshold"], rel=1e-4)
    assert first["n"] == {"dev": 24, "test": 24}
    lab = first["label_representations"]
    assert set(lab["rows"]["test"]) == {"label_name", "prototype", "mix"}
    # the incumbent row reproduces training's own LRSL accuracy on test (same arrays, same rule)
    assert lab["rows"]["test"]["label_name"]["accuracy_lrsl"] == pytest.approx(
        metrics["results"]["test"]["accuracy_lrsl"]
    )
    assert lab["mcnemar"]["dev"]["label_name"]["z"] == 0.0
    gates = first["hardness_gates"]["rows"]["dev"]
    assert len({g["n_hard"] for g in gates.values()}) <= 2  # matched share (ties may add a few)
    assert gates["topk_variance"]["n_hard"] == metrics["results"]["dev"]["n_hard"]
    shipped = first["shipped_gates"]
    # the variance row as shipped is the incumbent itself: training's own threshold and hard rows
    assert shipped["thresholds"]["variance"] == pytest.approx(metrics["threshold"], rel=1e-4)
    assert shipped["rows"]["dev"]["variance"]["n_hard"] == metrics["results"]["dev"]["n_hard"]
    assert set(shipped["rows"]["test"]) == {"variance", "margin", "max_prob", "entropy"}
    assert shipped["mcnemar"]["dev"]["variance"]["z"] == 0.0
    assert set(first["mlp_reranker"]["rows"]["test"]) == {"similarity_rule", "mlp"}
    md = (out / "levers.md").read_text()
    assert "## Hardness gates" in md and md.count("Adopted on dev: **") + md.count("Kept: **") == 4
    assert "## Hardness measures as `python -m train --measure`" in md
    # the JSON is a results page of its own: kind, title, the markdown and the run's record
    assert first["kind"] == "levers" and first["markdown"].strip() in md
    args = ["--checkpoint", str(built.checkpoint), "--out", str(out)]
    assert first["run"]["command"] == shlex.join(["python", "-m", "benchmarks.levers", *args])
    assert md.startswith(f"Command: `{first['run']['command']}`\n\n# Levers on ")
    capsys.readouterr()

    # second run: the arrays come from the cache, the results are identical
    assert levers.main(["--checkpoint", str(built.checkpoint), "--out", str(out)]) == 0
    assert "arrays from the cache" in capsys.readouterr().err
    second = json.loads((out / "levers.json").read_text())
    assert second.pop("run")["command"] == first.pop("run")["command"] and second == first


def test_levers_without_training_config_asks_for_train(built, tmp_path, capsys):
    from benchmarks import levers

    ckpt = tmp_path / "ckpt"
    shutil.copytree(built.checkpoint, ckpt)
    (ckpt / "metrics.json").write_text("{}\n")
    assert levers.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]) == 1
    assert "pass --train FILE" in capsys.readouterr().err
    code = levers.main(
        ["--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--train", str(built.data / "train.jsonl")]
    )
    assert code == 0
