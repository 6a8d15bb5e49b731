"""``make frontier``'s frozen-heads contender, through make itself on a tiny trained checkpoint: the
heads go to ``$(ART)-frozen/checkpoint`` (links to the main checkpoint's files plus its own exits/),
never into the main checkpoint, and the per-data-set accuracy gate reaches every export command."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT
from trained_tiny import trained

from lrsl_rt.manifest import read_manifest

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def make(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", f"PY={sys.executable}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_frozen_heads_stay_out_of_the_main_checkpoint(tmp_path_factory):
    art = tmp_path_factory.mktemp("art") / "tiny"
    shutil.copytree(trained("bert", tmp_path_factory).checkpoint, art / "checkpoint")
    target = f"{art}-frozen/bundle/manifest.json"
    p = make(target, f"ART={art}", "DATASET=tiny", "EXIT_LAYERS=1", "MAX_DROP=100")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert not (art / "checkpoint" / "exits").exists()  # an export of the main checkpoint ships no exits
    frozen = art.parent / "tiny-frozen" / "checkpoint"
    assert (frozen / "exits" / "exits.json").is_file() and not (frozen / "exits").is_symlink()
    assert (frozen / "classifier").resolve() == (art / "checkpoint" / "classifier").resolve()
    m = read_manifest(art.parent / "tiny-frozen" / "bundle")
    assert m.exits and [e.layer for e in m.exits] == [1]
    assert (art.parent / "tiny-frozen" / "exits.run.json").is_file()  # the step's run record


@pytest.mark.parametrize("dataset, gate", [("banking77", "0.5"), ("hwu64", "0.6")])
def test_each_data_set_exports_with_its_accuracy_gate(dataset, gate, tmp_path):
    art = tmp_path / dataset
    (art / "checkpoint").mkdir(parents=True)
    (art / "checkpoint" / "lrsl.json").write_text("{}")
    p = make("-n", "frontier", f"DATASET={dataset}", f"ART={art}")
    exports = [line for line in p.stdout.splitlines() if " -m export " in line]
    assert p.returncode == 0 and len(exports) == 5, p.stdout + p.stderr
    assert all(f"--max-accuracy-drop {gate} " in line for line in exports)
    assert not [line for line in p.stdout.splitlines() if f"train.exits {art}/checkpoint" in line]
