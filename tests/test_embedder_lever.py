"""Lever 4 (embedder budget and negatives) on a tiny checkpoint trained by the real pipeline."""

from __future__ import annotations

import json

import pytest
from trained_tiny import trained


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return trained("bert", tmp_path_factory)


def test_parse_variant_rejects_what_is_not_epochs_x_negatives():
    from benchmarks.embedder_lever import parse_variant

    assert parse_variant("2x3") == (2, 3)
    for bad in ("2", "0x1", "2x0", "ax1", "2x1x1"):
        with pytest.raises(ValueError, match="expected EPOCHSxNEGATIVES"):
            parse_variant(bad)


def test_retraining_the_checkpoints_settings_reproduces_its_embedder(built, tmp_path, capsys):
    """The variant with the checkpoint's own settings (1 epoch, 1 negative) gives the incumbent's figures
    exactly, so a variant's difference is its settings, not the script; 2 negatives doubles the triplets."""
    from benchmarks import embedder_lever, levers

    assert levers.main(["--checkpoint", str(built.checkpoint), "--out", str(tmp_path / "levers")]) == 0
    out = tmp_path / "levers" / "embedder.json"
    args = ["--checkpoint", str(built.checkpoint), "--variants", "1x1", "1x2", "--out", str(out)]
    assert embedder_lever.main(args) == 0
    res = json.loads(out.read_text())
    assert res["kind"] == "embedder-lever"
    assert res["run"]["command"].startswith("python -m benchmarks.embedder_lever --checkpoint")
    sec = res["embedder"]
    assert sec["incumbent"] == "1x1" and set(sec["rows"]["dev"]) == {"1x1", "1x1 retrained", "1x2"}
    for split in ("dev", "test"):
        mine, again = sec["rows"][split]["1x1"], sec["rows"][split]["1x1 retrained"]
        assert again["accuracy_lrsl"] == mine["accuracy_lrsl"]
        assert again["zero_shot"] == mine["zero_shot"]
        assert sec["mcnemar"][split]["1x1 retrained"]["z"] == 0.0
    costs = res["costs"]
    assert costs["1x2"]["triplets"] == 2 * costs["1x1 retrained"]["triplets"]
    assert costs["1x2"]["negatives"] == 2 and costs["1x2"]["steps"] > costs["1x1 retrained"]["steps"]
    md = out.with_suffix(".md").read_text()
    assert md.startswith("Command: `python -m benchmarks.embedder_lever") and "| 1x2 |" in md
    assert md.count("Kept: **1x1**") + md.count("Adopted on dev: **") == 1
    capsys.readouterr()


def test_without_levers_arrays_it_says_what_to_run(built, tmp_path, capsys):
    from benchmarks import embedder_lever

    code = embedder_lever.main(
        [
            "--checkpoint",
            str(built.checkpoint),
            "--arrays",
            str(tmp_path / "none.npz"),
            "--out",
            str(tmp_path / "o.json"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: ") and "run python -m benchmarks.levers" in err[-1]
    assert not (tmp_path / "o.json").exists()
