"""``lrsl-rt serve`` flags from ``LRSL_RT_*`` environment variables, through the CLI's real parser.

The settings are read where the server reads them (:func:`lrsl_rt.serve.settings.settings_from_args`
on the parsed flags), so what is asserted is what a server would run with; one test starts a real
server configured by variables alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from lrsl_rt.cli import build_parser, main
from lrsl_rt.serve.settings import settings_from_args

GUIDE = ROOT / "docs" / "guide" / "serve.md"


def serve_settings(monkeypatch, env: dict, *flags: str):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["serve", *flags])
    return settings_from_args(args)


def serve_parser():
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices["serve"]


def test_a_variable_sets_a_flag_and_the_flag_wins(monkeypatch, tiny_bundle_fp32):
    env = {
        "LRSL_RT_BUNDLE": str(tiny_bundle_fp32),
        "LRSL_RT_PORT": "9123",
        "LRSL_RT_MAX_QUEUE_MS": "80",
        "LRSL_RT_WORKERS": "1",
        "LRSL_RT_THREADS": "1",
        "LRSL_RT_ABSTAIN": "false",
        "LRSL_RT_MODEL_NAME": "intents",
        "LRSL_RT_THREAD_POOL": "shared",
        "LRSL_RT_WRITE_TIMEOUT": "7.5",
    }
    s = serve_settings(monkeypatch, env)
    assert (s.port, s.max_queue_ms, s.workers, s.threads, s.abstain) == (9123, 80.0, 1, 1, False)
    assert (s.model_name, s.thread_pool, s.write_timeout, s.bundle) == (
        "intents",
        "shared",
        7.5,
        str(tiny_bundle_fp32),
    )
    s = serve_settings(
        monkeypatch, env, "--port", "9200", "--abstain", "--model-name", "x", "--thread-pool", "session"
    )
    assert (s.port, s.abstain, s.model_name, s.thread_pool, s.max_queue_ms) == (
        9200,
        True,
        "x",
        "session",
        80.0,
    )
    monkeypatch.setenv("LRSL_RT_PORT", "")  # empty: unset
    assert serve_settings(monkeypatch, {}).port == 8080


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("LRSL_RT_PORT", "http", "$LRSL_RT_PORT: expected a port number 0-65535, got 'http'"),
        ("LRSL_RT_MAX_BATCH_TEXTS", "0", "$LRSL_RT_MAX_BATCH_TEXTS: expected a positive integer, got '0'"),
        (
            "LRSL_RT_ABSTAIN",
            "maybe",
            "$LRSL_RT_ABSTAIN: expected true or false (1/0, yes/no, on/off), got 'maybe'",
        ),
        ("LRSL_RT_PROVIDER", "tpu", "$LRSL_RT_PROVIDER: expected one of cpu, cuda, got 'tpu'"),
        ("LRSL_RT_MODEL_NAME", "a/b", "$LRSL_RT_MODEL_NAME: expected 1-128 letters, digits"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(monkeypatch, capsys, tiny_bundle_fp32, name, raw, message):
    monkeypatch.setenv(name, raw)
    assert main(["serve", "--bundle", str(tiny_bundle_fp32)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {message}") and err.count("\n") == 1 and "Traceback" not in err
    flag = "--" + name[len("LRSL_RT_") :].lower().replace("_", "-")
    if flag != "--abstain":  # the flag replaces the variable, so the bad value is never used
        good = {"--port": "0", "--max-batch-texts": "8", "--provider": "cpu", "--model-name": "ok"}[flag]
        args = build_parser().parse_args(
            ["serve", "--bundle", str(tiny_bundle_fp32), flag, good, "--workers", "1"]
        )
        settings_from_args(args)
    assert main(["info", "--bundle", str(tiny_bundle_fp32), "--json"]) == 0  # other commands do not care
    capsys.readouterr()


def test_help_names_every_variable_and_the_guide_lists_them():
    from lrsl_rt.serve.env import env_names

    p = serve_parser()
    text = p.format_help()
    names = env_names(p)
    flags = set(re.findall(r"(?<![\w-])--([a-z][a-z-]*)", text)) - {"help", "bundle", "no-abstain"}
    assert sorted(names) == sorted("LRSL_RT_" + f.upper().replace("-", "_") for f in flags)  # every flag
    guide = GUIDE.read_text(encoding="utf-8")
    for name in names:
        assert f"[env: {name}]" in " ".join(text.split()), name
        assert f"`{name}`" in guide, f"{name} missing from the env-var table of {GUIDE.name}"
    assert "`LRSL_RT_BUNDLE`" in guide


def test_serve_threads_help_says_the_default_is_per_worker():
    text = " ".join(serve_parser().format_help().split())
    assert "one per worker with --workers auto" in text and "one per core" not in text
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    assert "one per core" in " ".join(predict.format_help().split())  # one process: every core


def test_a_server_configured_by_variables_alone(tiny_bundle_fp32):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    import os

    from serve_client import Server

    env = {
        "LRSL_RT_BUNDLE": str(tiny_bundle_fp32),
        "LRSL_RT_MODEL_NAME": "from-env",
        "LRSL_RT_MAX_REQUEST_TEXTS": "3",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        s = Server(Path(tiny_bundle_fp32))  # --bundle too: the harness always names it; the rest from env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    try:
        s.wait_ready()
        info = httpx.get(f"{s.url}/info", timeout=10).json()
        assert info["model_name"] == "from-env" and info["batching"]["max_request_texts"] == 3
        r = httpx.post(f"{s.url}/predict", json={"inputs": ["a"] * 4}, timeout=10)
        assert r.status_code == 413
    finally:
        assert s.stop() == 0, s.log


def test_the_variables_are_not_read_by_workers_of_another_name():
    """The supervisor's hand-over variables share the prefix but name no flag."""
    from lrsl_rt.serve.cores import CORES_ENV, INDEX_ENV
    from lrsl_rt.serve.env import env_names
    from lrsl_rt.serve.settings import SETTINGS_ENV

    assert not {SETTINGS_ENV, CORES_ENV, INDEX_ENV} & set(env_names(serve_parser()))
    out = subprocess.run(
        [sys.executable, "-m", "lrsl_rt", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "[env: LRSL_RT_MAX_QUEUE_MS]" in " ".join(out.stdout.split())
