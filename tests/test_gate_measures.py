"""The gate-measure choice pooled over data sets: hand-made levers results, hand-worked z."""

import json
import math

import pytest


def levers_doc(checkpoint: str, dev_z: dict, test_z: dict) -> dict:
    """The parts of a levers.json that gate_measures reads, for the measures of ``dev_z``."""

    def section(names):
        rows = {s: {m: {"hard_share": 0.1, "accuracy_lrsl": 0.9} for m in names} for s in ("dev", "test")}
        mcnemar = {s: {m: {"z": z[m]} for m in names} for s, z in (("dev", dev_z), ("test", test_z))}
        return {"rows": rows, "mcnemar": mcnemar}

    return {
        "kind": "levers",
        "markdown": "x",
        "checkpoint": checkpoint,
        "shipped_gates": section(list(dev_z)),
        "hardness_gates": section(list(dev_z)),
    }


def run(tmp_path, docs, capsys=None):
    from benchmarks.gate_measures import main

    paths = []
    for i, d in enumerate(docs):
        paths.append(tmp_path / f"levers{i}.json")
        paths[-1].write_text(json.dumps(d))
    out = tmp_path / "gm.json"
    rc = main([*map(str, paths), "--out", str(out)])
    return rc, (json.loads(out.read_text()) if out.exists() else None)


def test_pooled_dev_z_decides_and_test_does_not(tmp_path):
    zero = {"variance": 0.0}
    a = levers_doc(
        "artifacts/a/checkpoint",
        {**zero, "margin": 1.6, "max_prob": 1.2},
        {**zero, "margin": 0.0, "max_prob": 5.0},
    )
    b = levers_doc(
        "artifacts/b/checkpoint",
        {**zero, "margin": 1.4, "max_prob": 1.5},
        {**zero, "margin": 0.0, "max_prob": 5.0},
    )
    rc, res = run(tmp_path, [a, b])
    assert rc == 0
    pooled = res["shipped_gates"]["margin"]["pooled_z"]
    assert pooled["dev"] == pytest.approx(3.0 / math.sqrt(2))  # 2.12: reaches 2
    assert res["shipped_gates"]["max_prob"]["pooled_z"]["test"] == pytest.approx(10 / math.sqrt(2))
    assert res["chosen"] == "margin"  # max_prob's test z is larger, but test never chooses
    assert "Chosen default (as shipped): **margin**" in res["markdown"]


def test_no_measure_reaching_2_keeps_the_variance(tmp_path):
    zero = {"variance": 0.0}
    a = levers_doc("artifacts/a/checkpoint", {**zero, "margin": 1.6}, {**zero, "margin": 3.0})
    b = levers_doc("artifacts/b/checkpoint", {**zero, "margin": 1.2}, {**zero, "margin": 3.0})
    rc, res = run(tmp_path, [a, b])  # (1.6 + 1.2) / sqrt(2) = 1.98
    assert rc == 0 and res["chosen"] == "variance"


def test_a_result_without_the_shipped_section_is_refused(tmp_path, capsys):
    doc = levers_doc("artifacts/a/checkpoint", {"variance": 0.0}, {"variance": 0.0})
    del doc["shipped_gates"]
    rc, _ = run(tmp_path, [doc])
    err = capsys.readouterr().err
    assert rc != 0 and "levers0.json: not a levers result with a 'shipped_gates' section" in err
    assert "Traceback" not in err


def test_worked_examples_in_the_docstrings_hold():
    import doctest

    from benchmarks import frontier, gate_measures

    for module in (gate_measures, frontier):
        assert doctest.testmod(module).failed == 0, module.__name__
