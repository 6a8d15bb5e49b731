"""python -m benchmarks.results_doc on the JSON that real runs write: tiny training, export, accuracy, latency.

The tiny runs go through the same commands as ``make bundle``, ``make accuracy`` and ``make bench``
(training and export wrapped by ``python -m benchmarks.run_record``), into ``artifacts/banking77`` as
the make targets name it, which also holds the checkpoint's model configs and tokenizer JSON, which the
generator must skip. One current page per question and data set, from the newest run of its JSON
history; training and export records are not paged. The pages are checked for what the JSON says --
command, CPU, versions, figures -- never for speed. The committed docs/results/ and the README's
results block are checked against their own JSON too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from benchmarks.lib import results_readme as RM
from benchmarks.lib.machine import cpu_info, int8_isa

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _run(*cmd, ok=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, (
            f"{cmd[:3]} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _jsonl(path, xs, ys):
    path.write_text("".join(json.dumps({"text": x, "label": y}) + "\n" for x, y in zip(xs, ys, strict=True)))
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_base, tiny_data):
    """An artifacts folder as the make targets leave it, from tiny models."""
    art = tmp_path_factory.mktemp("artifacts") / "banking77"
    data = art.parent / "data"
    data.mkdir()
    files = {
        n: _jsonl(data / f"{n}.jsonl", *xy) for n, xy in zip(("train", "dev", "test"), tiny_data, strict=True)
    }
    py = sys.executable
    record = (py, "-m", "benchmarks.run_record")
    _run(*record, "--out", art / "checkpoint.run.json", "--",
         py, "-m", "train", "--train", files["train"], "--dev", files["dev"], "--test", files["test"],
         "--classifier-model", tiny_base, "--embedder-model", tiny_base, "--epochs", "1", "--embedder-epochs", "1",
         "--lr", "5e-3", "--embedder-lr", "1e-3", "--batch-size", "8", "--embedder-batch-size", "4",
         "--max-length", "32", "--seed", "3", "--threads", "1", "--out", art / "checkpoint")  # fmt: skip
    _run(*record, "--out", art / "bundle.run.json", "--",
         py, "-m", "export", art / "checkpoint", art / "bundle", "--precision", "fp32",
         "--max-accuracy-drop", "100")  # fmt: skip
    _run(py, "-m", "benchmarks.accuracy", "--checkpoint", art / "checkpoint", "--bundle", art / "bundle",
         "--threads", "1", "--out", art / "accuracy.json")  # fmt: skip
    _run(py, "-m", "benchmarks.latency", "--quick", "--bundle", art / "bundle", "--contenders", "lrsl_int8",
         "--texts", files["test"], "--threads", "1", "--batch-sizes", "1,4", "--startup-runs", "1",
         "--out", art / "latency.json")  # fmt: skip
    generic = {"kind": "Serve", "title": "HTTP serving", "run": json.loads((art / "bundle.run.json").read_text())["run"],
               "tables": [{"title": "Load test", "header": ["clients", "q/s"], "rows": [[4, 123.4]], "note": "n1"},
                          {"title": "Status codes", "rows": [{"code": 200, "count": 7}]}]}  # fmt: skip
    (art / "serve.json").write_text(json.dumps(generic))
    return art


@pytest.fixture(scope="module")
def pages(artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("docs") / "results"
    proc = _run(sys.executable, "-m", "benchmarks.results_doc", artifacts.parent, "--out", out)
    return out, proc


def _text(out, name: str) -> str:
    return (out / name).read_text()


PAGES = ("accuracy-banking77.md", "latency-banking77.md", "serve-banking77.md")


def test_one_page_per_question_and_data_set_and_one_history_each(pages):
    out, proc = pages
    assert sorted(p.name for p in out.glob("*.md")) == sorted(["README.md", *PAGES])
    assert sorted(p.name for p in (out / "history").iterdir()) == sorted(
        p.replace(".md", ".jsonl") for p in PAGES
    )
    assert "other JSON file(s) (configs, tokenizers) skipped" in proc.stderr
    assert "2 training/export record(s) left beside their checkpoint or bundle, not paged" in proc.stderr


def test_pages_name_command_machine_flags_and_versions(pages):
    out, _ = pages
    cpu = cpu_info()
    flags = " ".join(f for f, on in cpu["int8_flags"].items() if on)
    for name, command in (("accuracy-banking77.md", "python -m benchmarks.accuracy --checkpoint"),
                          ("latency-banking77.md", "python -m benchmarks.latency --quick")):  # fmt: skip
        text = _text(out, name)
        assert text.startswith("<!-- generated by benchmarks/results_doc.py"), name
        assert command in text and cpu["model"] in text and int8_isa(cpu)[0] in text, name
        assert (f"| int8 CPU flags | {flags} |" if flags else "| int8 CPU flags | none of") in text, name
        assert "not recorded" not in text and "earlier runs" not in text, name
    assert "onnxruntime " in _text(out, "latency-banking77.md")
    assert (
        _text(out, "latency-banking77.md")
        .splitlines()[1]
        .startswith("# Latency, throughput and start-up (banking77): ")
    )


def test_tables_carry_the_json_figures(pages, artifacts):
    out, _ = pages
    acc = json.loads((artifacts / "accuracy.json").read_text())
    assert f"| pytorch | {acc['rows']['pytorch']['threshold']:.4g} |" in _text(out, "accuracy-banking77.md")
    lat = json.loads((artifacts / "latency.json").read_text())
    from benchmarks.lib.latency_report import num

    p50 = lat["contenders"]["lrsl_int8"]["summary"]["b1_p50_ms"]["median"]
    assert f"| lrsl_int8 | {num(p50)}" in _text(out, "latency-banking77.md")
    serve = _text(out, "serve-banking77.md")
    assert "## Load test" in serve and "| 4 | 123.4 |" in serve and "| code | count |" in serve
    assert "| 200 | 7 |" in serve


def test_the_history_holds_each_run_once_with_its_json_and_run(pages, artifacts):
    out, _ = pages
    (line,) = (out / "history" / "latency-banking77.jsonl").read_text().splitlines()
    e = json.loads(line)
    assert e["result"] == json.loads((artifacts / "latency.json").read_text())
    assert e["kind"] == "latency" and e["subject"] == "banking77" and e["run"]["cpu"] == cpu_info()
    assert e["source"].endswith("banking77/latency.json") and len(e["sha256"]) == 64


def test_index_has_one_line_per_page(pages):
    out, _ = pages
    index = _text(out, "README.md")
    rows = [ln for ln in index.splitlines() if ln.startswith("| [")]
    assert len(rows) == len(PAGES) and all(f"]({p}) | banking77 |" in "".join(rows) for p in PAGES)
    assert "[Latency, throughput and start-up (banking77)](latency-banking77.md) | banking77 |" in index


def test_regenerating_is_byte_for_byte_and_the_newest_run_wins(pages, artifacts, tmp_path):
    from benchmarks import results_doc

    out, _ = pages
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _run(sys.executable, "-m", "benchmarks.results_doc", artifacts.parent, "--out", out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    lat = json.loads((artifacts / "latency.json").read_text())
    lat["run"]["started_at"] = "2999-01-02T03:04:05Z"
    later = tmp_path / "banking77" / "latency.json"
    later.parent.mkdir()
    later.write_text(json.dumps(lat))
    try:
        _run(sys.executable, "-m", "benchmarks.results_doc", later, "--out", out)
        page = _text(out, "latency-banking77.md")
        assert "| run 2999-01-02T03:04:05Z |" in page.splitlines()[0]
        assert "| earlier runs | 1 in [history/latency-banking77.jsonl]" in page
        assert len((out / "history" / "latency-banking77.jsonl").read_text().splitlines()) == 2
        older = tmp_path / "older.json"  # an older run joins the history but does not take the page
        lat["run"]["started_at"] = "2000-01-01T00:00:00Z"
        older.write_text(json.dumps({**lat, "kind": "latency"}))
        _run(sys.executable, "-m", "benchmarks.results_doc", older, "--out", out)
        assert _text(out, "latency-banking77.md") == page.replace(
            "| earlier runs | 1 in", "| earlier runs | 2 in"
        )
    finally:
        for p in (out / "history" / "latency-banking77.jsonl",):
            lines = [
                ln for ln in p.read_text().splitlines() if "2999-01-02" not in ln and "2000-01-01" not in ln
            ]
            p.write_text("".join(ln + "\n" for ln in lines))
        (out / "latency-banking77.md").unlink()  # else kept in history/ as a run the history lost
        results_doc.generate([], out, log=lambda m: None)  # from the history alone
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_run_without_its_machine_is_not_paged(tmp_path):
    result = tmp_path / "soak.json"
    result.write_text(json.dumps({"kind": "soak", "markdown": "| a |\n|---|\n"}))
    proc = _run(sys.executable, "-m", "benchmarks.results_doc", result, "--out", tmp_path / "o")
    assert f"skipped {result}: its machine is not recorded" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["README.md"]


def test_a_page_from_before_the_history_moves_to_history_when_a_run_replaces_it(tmp_path):
    from benchmarks import results_doc
    from benchmarks.lib.record import run_record, write_result

    out = tmp_path / "docs"
    out.mkdir()
    legacy = "<!-- generated by benchmarks/results_doc.py from x | run 2020-01-02T03:04:05Z | sha256 0; -->\n# Old\n"
    (out / "soak-banking77.md").write_text(legacy)
    run = run_record(command="python -m benchmarks.soak --bundle artifacts/banking77/bundle")
    write_result(tmp_path / "soak.json", {"rows": []}, "| a |\n|---|\n", kind="soak", title="Soak", run=run)
    results_doc.generate([tmp_path / "soak.json"], out, log=lambda m: None)
    assert (out / "history" / "2020-01-02-soak-banking77-030405.md").read_text() == legacy
    assert _text(out, "soak-banking77.md").splitlines()[1].startswith("# Soak (banking77): ")


def test_bad_paths_are_refused_with_the_file_named(tmp_path, pages):
    out, _ = pages
    config = tmp_path / "config.json"
    config.write_text('{"hidden_size": 8}')
    broken = tmp_path / "broken.json"
    broken.write_text('{"contenders": ')
    for path, words in (
        (config, "not a result JSON"),
        (broken, "cannot read it as JSON"),
        (tmp_path / "no", "no such file"),
    ):
        proc = _run(sys.executable, "-m", "benchmarks.results_doc", path, "--out", tmp_path / "o", ok=False)
        assert proc.returncode == 2 and proc.stderr.startswith(f"Error: {path}: {words}"), proc.stderr
        assert "Traceback" not in proc.stderr


def test_worked_examples_in_the_docstrings_hold():
    import doctest

    from benchmarks import results_doc
    from benchmarks.lib import record, results_history, results_page, results_render

    for module in (results_doc, results_render, record, results_history, results_page):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_write_result_is_paged_with_the_command_of_its_run_record(tmp_path):
    """What a benchmark writes through ``run_record.write_result`` is a result of its own kind, and its
    page names the command, the machine and the versions of the run record (nothing "not recorded")."""
    from benchmarks import results_doc
    from benchmarks.lib import results_render
    from benchmarks.lib.record import script_record, write_result

    run = script_record(ROOT / "benchmarks" / "soak.py", ["--bundle", "b", "--out", "r/soak.json"])
    # "rows" with "variant" would read as int8-variants by shape: the named kind wins
    result = {"rows": [{"variant": "api", "growth_pct": 0.5}], "method": {"n": 10}}
    out = tmp_path / "r" / "soak.json"
    doc = write_result(out, result, "# Soak\n\n| path | growth |\n|---|---|\n| api | 0.5 % |\n",
                       kind="soak", title="Soak: resident memory", run=run, exit_code=1)  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved == doc and saved["rows"] == result["rows"] and saved["run"]["exit_code"] == 1
    assert results_render.kind_of(saved) == "soak"
    md = out.with_suffix(".md").read_text()
    assert md.startswith("Command: `python -m benchmarks.soak --bundle b --out r/soak.json`\n\n# Soak\n")

    pages = results_doc.generate([out], tmp_path / "docs", log=lambda m: None)
    assert [p.name for p in pages] == ["soak.md"]  # no data set named: a page of its own kind only
    text = pages[0].read_text()
    assert "# Soak: resident memory: " in text.splitlines()[1]
    assert "| command | `python -m benchmarks.soak --bundle b --out r/soak.json` |" in text
    assert "(run record); wall " in text and "exit status 1" in text
    assert "not recorded" not in text and "| api | 0.5 % |" in text


def test_write_result_markdown_elsewhere(tmp_path):
    from benchmarks.lib.record import run_record, write_result

    run = run_record(command="python -m benchmarks.invariance b --out x.json --markdown t.md")
    write_result(tmp_path / "x.json", {"rows": []}, "| a |\n|---|\n", kind="invariance", title="Invariance",
                 run=run, markdown_out=tmp_path / "t.md")  # fmt: skip
    assert not (tmp_path / "x.md").exists()
    assert (tmp_path / "t.md").read_text() == f"Command: `{run['command']}`\n\n| a |\n|---|\n"


def test_write_result_without_json_writes_only_the_markdown_asked_for(tmp_path, monkeypatch):
    from benchmarks.lib.record import run_record, write_result

    monkeypatch.chdir(tmp_path)
    run = run_record(command="python -m benchmarks.profile_ops b --markdown t.md")
    assert (
        write_result(None, {}, "| a |\n", kind="profile-ops", title="P", run=run, markdown_out="t.md") is None
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]
    assert (tmp_path / "t.md").read_text() == f"Command: `{run['command']}`\n\n| a |\n"
    assert write_result(None, {}, "| a |\n", kind="profile-ops", title="P", run=run) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]


# ---- the README's block --------------------------------------------------------------------------
def _frontier_and_open_intent(tmp_path):
    """A frontier and an open-intent result in the shapes their scripts write (their own markdown)."""
    from benchmarks.frontier import markdown
    from benchmarks.lib.record import run_record, write_result

    def speed(m):
        return {"median": m, "min": m, "max": m, "n": 3}

    results = {
        "6 layers": {"n": 3080, "accuracy_lrsl": 0.93, "hard_share": 0.09, "classifier_layers": None,
                     "preset": "static_avx512_vnni", "b1_p50_ms": speed(1.234), "qps_32": speed(812.4),
                     "pytorch": {"split": "test", "n": 3080, "accuracy_lrsl": 0.9321, "accuracy_classifier": 0.9111}},
        "3 layers": {"n": 3080, "accuracy_lrsl": 0.915, "hard_share": 0.11, "classifier_layers": None,
                     "preset": "static_avx512_vnni", "b1_p50_ms": speed(0.71), "qps_32": speed(1400.0)},
    }  # fmt: skip
    texts = "../shared/datasets/banking77/test.csv"
    run = run_record(command=f"python -m benchmarks.frontier --texts {texts} --out x/frontier.json")
    write_result(tmp_path / "frontier.json", {"results": results, "settings": {"rounds": 5, "per_call": 32},
                 "texts": texts}, markdown(results, 32, texts), kind="frontier", title="Accuracy-speed frontier", run=run)  # fmt: skip
    scores = {
        "knn": {"dev_auroc": 0.88, "test_auroc": 0.8953},
        "max_prob": {"dev_auroc": 0.77, "test_auroc": 0.7854},
    }
    md = "| score | dev AUROC | test AUROC |\n|---|---|---|\n" + "".join(
        f"| {k} | {v['dev_auroc']:.4f} | {v['test_auroc']:.4f} |\n" for k, v in scores.items()
    )
    write_result(tmp_path / "oi.json", {"dataset": "hwu64", "chosen": "knn", "scores": scores}, md,
                 kind="open-intent", title="Out-of-scope texts: hwu64", run=run_record(command="x"))  # fmt: skip
    return [tmp_path / "frontier.json", tmp_path / "oi.json"]


def test_make_results_fills_the_readme_block_from_the_json(tmp_path):
    from benchmarks import results_doc

    readme = tmp_path / "README.md"
    readme.write_text("# Tool\n\n## Results\n\n<!-- results:begin -->\n<!-- results:end -->\n\n## Next\n")
    out = tmp_path / "docs"
    results_doc.generate(_frontier_and_open_intent(tmp_path / "runs"), out, readme, log=lambda m: None)
    summary = json.loads((out / "readme.json").read_text())
    block = RM.render_block(summary)
    text = readme.read_text()
    assert text == "# Tool\n\n## Results\n\n" + block + "\n## Next\n"
    assert "| 6 layers (the default export) | 93.00 % | 1.23 ms | 812 |" in block
    prose = " ".join(block.split())  # the paragraph is wrapped
    assert (
        "PyTorch's own LRSL accuracy on the first row's checkpoint is 93.21 % (classifier alone 91.11 %"
        in prose
    )
    assert "test AUROC of 0.895 on HWU64 (`knn`), against 0.785" in prose and "Banking77 (`" not in prose
    check_figures_on_their_pages(summary, out)
    results_doc.generate([], out, readme, log=lambda m: None)  # again, from the history alone
    assert (
        readme.read_text() == text and RM.render_block(json.loads((out / "readme.json").read_text())) == block
    )


def test_a_readme_without_the_markers_is_refused(tmp_path):
    from benchmarks import results_doc

    (tmp_path / "README.md").write_text("# Tool\n")
    proc = _run(sys.executable, "-m", "benchmarks.results_doc", *_frontier_and_open_intent(tmp_path),
                "--out", tmp_path / "docs", "--readme", tmp_path / "README.md", ok=False)  # fmt: skip
    assert proc.returncode == 2 and "README.md: no results block (<!-- results:begin" in proc.stderr
    assert results_doc.SUMMARY == "readme.json"


def check_figures_on_their_pages(summary: dict, results: Path) -> None:
    """Every figure of readme.json is on the page it names, as that page prints it."""

    def lines(page):
        return (results / page).read_text().splitlines()

    h = summary["headline"]
    for r in h["rows"]:
        (row,) = [ln for ln in lines(h["page"]) if ln.startswith(f"| {r['name']} |")]
        assert f"{100 * r['accuracy_lrsl']:.2f} %" in row and f"{r['b1_p50_ms']:.2f} ms" in row, (r, row)
        assert f"| {r['qps']:.0f} (" in row, (r, row)
    if pt := summary.get("pytorch"):
        want = [f"{100 * pt[k]:.2f}" for k in ("accuracy_lrsl", "accuracy_classifier")]
        assert any(all(w in ln for w in want) for ln in lines(pt["page"])), pt
    for part in summary.get("out_of_scope", {}).values():
        for score, auroc in (
            (part["score"], part["test_auroc"]),
            (part["baseline"], part["baseline_test_auroc"]),
        ):
            assert any(
                ln.startswith(f"| {score}") and f"| {auroc:.4f} |" in ln for ln in lines(part["page"])
            ), part


# ---- what is committed ---------------------------------------------------------------------------
RESULTS = ROOT / "docs" / "results"


def test_the_committed_readme_block_is_generated_from_readme_json():
    summary = json.loads((RESULTS / "readme.json").read_text())
    text = (ROOT / "README.md").read_text()
    start = text.index(RM.BEGIN)
    assert text[start : text.index(RM.END) + len(RM.END) + 1] == RM.render_block(summary)
    check_figures_on_their_pages(summary, RESULTS)


def test_the_committed_pages_are_one_per_question_and_indexed():
    from benchmarks.lib.results_page import page_facts

    pages = sorted(p for p in RESULTS.glob("*.md") if p.name != "README.md")
    index = (RESULTS / "README.md").read_text()
    seen = set()
    for p in pages:
        text = p.read_text()
        assert (
            text.startswith("<!-- generated by benchmarks/results_doc.py") and "not recorded" not in text
        ), p
        assert not p.name[:4].isdigit(), f"{p.name}: a current page is named without its date"
        f = page_facts(p)
        assert f"]({p.name}) | {f['dataset']} | {f['date']} |" in index, p.name
        seen.add((f["question"].split(":")[0], f["dataset"]))
    assert len(seen) == len(pages)  # one page per question and data set
