"""The way in, tried as a new user would, through the ``lrsl-rt`` entry point in real processes.

After ``make demo`` the README's next commands run without ``--bundle`` (the resolution order of
:mod:`lrsl_rt.bundle_dir`, on real folders); ``lrsl-rt train`` and ``lrsl-rt export`` are the
training and export command lines, with a light ``--help``, usable from any folder; no help text shows
a flag's default as True; a missing extra or missing data sets say what to install or where to put them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LABELS, ROOT, datasets_help, missing_datasets

from lrsl_rt.bundle_dir import DEFAULT_BUNDLES

HEAVY = ("torch", "transformers", "onnx", "sentence_transformers", "sklearn")


def entry_point() -> list[str]:
    """The console script when the project is installed (make install), else ``python -m lrsl_rt``."""
    script = Path(sys.executable).parent / "lrsl-rt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lrsl_rt"]


def lrsl_rt(*args, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    base.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [*entry_point(), *map(str, args)],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- the bundle the README's commands use ----------------------------------------------------------
def test_after_make_demo_the_readme_commands_find_the_bundle(tiny_bundle, tmp_path):
    full, quick = DEFAULT_BUNDLES
    shutil.copytree(tiny_bundle, tmp_path / quick)  # what `make demo` leaves without a full bundle
    p = lrsl_rt("predict", "my card has not arrived", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (record,) = [json.loads(line) for line in p.stdout.splitlines()]
    assert record["label"] in LABELS
    (tmp_path / "test.csv").write_text(f"text,category\nmy card,{LABELS[0]}\nlost my card,{LABELS[1]}\n")
    p = lrsl_rt("eval", "--input", "test.csv", "--label-field", "category", cwd=tmp_path)
    assert p.returncode == 0 and "n=2" in p.stdout.replace(" ", ""), p.stdout + p.stderr
    info = lrsl_rt("info", "--json", cwd=tmp_path)
    assert info.returncode == 0 and json.loads(info.stdout)["bundle"]["bundle"] == quick, info.stderr

    shutil.copytree(tiny_bundle, tmp_path / full)  # a later `make bundle` takes over
    info = lrsl_rt("info", "--json", cwd=tmp_path)
    assert json.loads(info.stdout)["bundle"]["bundle"] == full

    env = lrsl_rt("info", "--json", cwd=tmp_path, env={"LRSL_RT_BUNDLE": quick})
    assert json.loads(env.stdout)["bundle"]["bundle"] == quick  # the environment before the defaults


def test_without_a_bundle_the_error_states_the_order_and_the_fix(tmp_path):
    p = lrsl_rt("predict", "x", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    err = p.stderr
    assert err.startswith("Error: no bundle: --bundle and $LRSL_RT_BUNDLE are not given")
    full, quick = DEFAULT_BUNDLES
    assert f"{full} (make bundle)" in err and f"{quick} (make demo)" in err and str(tmp_path) in err
    assert err.index(full) < err.index(quick)
    info = lrsl_rt("info", cwd=tmp_path)
    assert info.returncode == 0 and "no bundle: --bundle and $LRSL_RT_BUNDLE" in info.stdout


# ---- lrsl-rt train / lrsl-rt export ------------------------------------------------------------------
@pytest.mark.parametrize("command, flag", [("train", "--dataset"), ("export", "--precision")])
def test_train_and_export_help_through_the_entry_point(command, flag, tmp_path):
    p = lrsl_rt(command, "--help", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith(f"usage: lrsl-rt {command} "), p.stderr
    same = subprocess.run(
        [sys.executable, "-m", command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert flag in p.stdout and _flags(same.stdout) == _flags(p.stdout)  # the same parser
    top = lrsl_rt("--help", cwd=tmp_path)
    assert f"    {command} " in top.stdout


def _flags(help_text: str) -> set[str]:
    return {w.strip(",[]") for w in help_text.split() if w.startswith("--")}


def test_train_and_export_help_stay_light():
    code = (
        "import sys, contextlib, io\nfrom lrsl_rt.cli import main\n"
        "for c in ('train', 'export'):\n"
        "    with contextlib.redirect_stdout(io.StringIO()): assert main([c, '--help']) == 0\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_lrsl_rt_export_runs_from_any_folder(tiny_checkpoint, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    p = lrsl_rt("export", tiny_checkpoint, "bundle", "--precision", "fp32", "--max-accuracy-drop", "100",
                "--threads", "1", cwd=work, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert (work / "bundle" / "manifest.json").is_file() and p.stdout.strip().endswith("bundle")
    info = lrsl_rt("info", "--verify", "--json", cwd=work, env={"LRSL_RT_BUNDLE": "bundle"})
    assert info.returncode == 0 and json.loads(info.stdout)["bundle"]["labels"] == LABELS, info.stderr
    bad = lrsl_rt("export", tiny_checkpoint, "b2", "--precision", "int4", cwd=work)
    assert bad.returncode == 2 and bad.stderr.startswith("Error: argument --precision: invalid choice")
    assert "(see `lrsl-rt export --help`)" in bad.stderr and "Traceback" not in bad.stderr


def test_a_missing_training_stack_names_the_extra(tiny_checkpoint, tmp_path):
    code = (
        "import sys\nsys.modules['torch'] = None  # as if the train extra were not installed\n"
        "from lrsl_rt.cli import main\n"
        f"raise SystemExit(main(['export', {str(tiny_checkpoint)!r}, {str(tmp_path / 'b')!r}]))"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.splitlines()[-1] == (  # after the export's progress lines
        "Error: `lrsl-rt export` needs torch, part of the train extra: "
        "pip install -e '.[train]' in the lrsl-rt checkout"
    )
    assert not (tmp_path / "b").exists()


def test_train_and_export_are_installed_packages():
    """pyproject's package list holds train/ and export/ with every subpackage, so an installed checkout
    runs `lrsl-rt train|export` from any folder."""
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = set(find_packages(where=str(ROOT), include=config["include"]))
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("lrsl_rt", "train", "export")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert {"train", "export", "lrsl_rt"} <= found and on_disk <= found, on_disk - found
    assert not {p for p in found if p.split(".")[0] in ("tests", "benchmarks")}


# ---- help texts ----------------------------------------------------------------------------------
def test_no_help_text_shows_a_default_of_true_or_false():
    import argparse

    from export.__main__ import parser as export_parser
    from lrsl_rt.cli import build_parser
    from train.__main__ import parser as train_parser

    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {f"lrsl-rt {n}": p for n, p in sub.choices.items() if n not in ("train", "export")}
    parsers |= {
        "lrsl-rt train": train_parser("lrsl-rt train"),
        "lrsl-rt export": export_parser("lrsl-rt export"),
    }
    for name, p in parsers.items():
        text = " ".join(p.format_help().split())
        assert "(default: True)" not in text and "(default: False)" not in text, name


# ---- the data sets ---------------------------------------------------------------------------------
def test_missing_data_sets_say_what_is_missing_and_where_to_put_it(tmp_path):
    (tmp_path / "banking77").mkdir()
    (tmp_path / "banking77" / "train.csv").write_text("text,category\n")
    missing = missing_datasets(tmp_path)
    assert tmp_path / "banking77" / "train.csv" not in missing
    assert tmp_path / "banking77" / "test.csv" in missing and tmp_path / "hwu64" / "dev.csv" in missing
    env = {**os.environ, "LRSL_DATASETS_DIR": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/test_datasets.py",
         "-k", "hwu64_uses_its_dev_file"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 1, p.stdout[-3000:]
    text = " ".join(p.stdout.split())
    assert datasets_help(tmp_path, missing) in text, p.stdout[-3000:]
    assert f"data sets: {tmp_path} -- MISSING" in text and "Traceback" not in p.stdout
