"""``lrsl-rt predict --engine ray`` on a Ray cluster of three nodes, each its own ``ray start`` process.

The cluster (:class:`benchmarks.lib.ray_cluster.LocalCluster`): a head with no CPUs and two worker
nodes of 2 logical CPUs each, every node with its own raylet, object store, ports and temporary
directory under this module's ``tmp_path``. Two actors of one CPU each land on different worker
nodes (Ray Data spreads them), and each worker node has a CPU to spare, so a lost node's actor can
be restarted on the other one. The head's failure detector is set to notice a lost node within a
few seconds instead of Ray's default of about fifteen.

The first test runs the CLI against it with the bundle directory moved away while the job runs:
no node has it, the actors load what the driver shipped. The second kills a worker node's raylet
(SIGKILL) once that node has labelled a batch, and checks that the job finishes on the other node
with every row exactly once. The third adds a bigger node, runs one actor that only it can hold and
kills it: the actor has nowhere to go, and the job stops with an error naming the node and writes
nothing.
The fixture stops every process of the cluster and checks none is left.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import threading

import pytest
from conftest import ROOT
from tiny_models import synthetic_dataset

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
pytest.importorskip("ray.data")
pytest.importorskip("psutil")

from benchmarks.lib.ray_cluster import LocalCluster  # noqa: E402
from lrsl_rt.cli import main  # noqa: E402
from lrsl_rt.errors import LrslError  # noqa: E402
from lrsl_rt.ray import job as ray_job  # noqa: E402
from lrsl_rt.ray.job import read_output  # noqa: E402

TEXTS = synthetic_dataset(15, seed=7)[0]
FAST_FAILURE_DETECTION = {  # the head's health checks of its nodes: a lost node is dead after ~3 s
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if ray.is_initialized():  # a cluster of another module: the job would join it instead
        ray.shutdown()
    env = {**FAST_FAILURE_DETECTION, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), env=env)
    try:
        c.add_worker("node_a", cpus=2)
        c.add_worker("node_b", cpus=2)
        c.wait_for_nodes()
        yield c
    finally:
        c.stop()
        c.remove_temp()
        left = [f"{p.pid} {p.name()}" for p in c.processes()]
        assert not left, f"Ray processes of the test cluster still running: {left}"


@pytest.fixture(autouse=True)
def _no_env_bundle(monkeypatch):
    monkeypatch.delenv("LRSL_RT_BUNDLE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def write_csv(path, n: int):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([TEXTS[i % len(TEXTS)]] for i in range(n))
    return path


def short_ids(cluster) -> dict[str, str]:
    """The ``IP/id-prefix`` names the job prints -> the test's node names."""
    return {n.node_id[:8]: name for name, n in cluster.nodes.items()}


def rows_by_node(stdout: str, cluster) -> dict[str, int]:
    """``labelled on N node(s): IP/id count, ...`` of the job's summary, by the test's node names."""
    listed = re.search(r"labelled on \d+ node\(s\): ([^;\n]+)", stdout).group(1)
    ids = short_ids(cluster)
    return {ids[m[1]]: int(m[2].replace(",", "")) for m in re.finditer(r"\S+/(\w{8}) ([\d,]+)", listed)}


def test_job_spreads_over_both_workers_and_ships_the_bundle(
    capsys, cluster, tiny_bundle_fp32, tmp_path, monkeypatch
):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_fp32, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text("utf-8"))
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    src = write_csv(tmp_path / "in.csv", 2000)
    away = tmp_path / "bundle-away"
    ship = ray_job.ship_bundle

    def ship_then_move(path):  # once in the object store, no node has the directory any more
        shipped = ship(path)
        os.rename(bundle, away)
        return shipped

    monkeypatch.setattr(ray_job, "ship_bundle", ship_then_move)
    out = tmp_path / "preds"
    try:
        code = main(["predict", "--engine", "ray", "--ray-address", cluster.address, "--bundle", str(bundle),
                     "--input", str(src), "--output", str(out), "--actors", "2"])  # fmt: skip
    finally:
        if away.exists():
            os.rename(away, bundle)
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "rows in 2,000 = rows out 2,000 (2,000 predictions, 0 errors)" in stdout
    by_node = rows_by_node(stdout, cluster)
    assert set(by_node) == {"node_a", "node_b"} and sum(by_node.values()) == 2000, stdout
    assert all(n > 0 for n in by_node.values())

    rows = sorted(read_output(out).to_pylist(), key=lambda r: r["line"])
    assert [r["line"] for r in rows] == list(range(2, 2002))  # every CSV line once, in input order
    assert (
        main(
            ["predict", "--bundle", str(bundle), "--input", str(src), "--output", str(tmp_path / "ip.jsonl")]
        )
        == 0
    )
    want = [json.loads(x) for x in (tmp_path / "ip.jsonl").read_text("utf-8").splitlines()]
    assert [r["label"] for r in rows] == [w["label"] for w in want]

    for name in ("node_a", "node_b"):  # each worker node unpacked its own copy and it matches the manifest
        (copy,) = cluster.nodes[name].temp_dir.glob(f"session_2*/lrsl-rt-bundles/{digest}")
        for entry in manifest["files"].values():
            assert hashlib.sha256((copy / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert not list(cluster.nodes["head"].temp_dir.glob("session_2*/lrsl-rt-bundles"))  # no actor there


def test_a_worker_node_killed_mid_job_loses_and_repeats_no_row(cluster, tiny_bundle_fp32, tmp_path):
    """SIGKILL of node_b's raylet once node_b has labelled a batch: Ray restarts its actor on node_a
    and runs again the batches whose outputs were on node_b; the job's own check passes."""
    n = 20_000
    src = write_csv(tmp_path / "in.csv", n)
    ids = short_ids(cluster)
    killed, lock = {}, threading.Lock()

    def kill_node_b_after_its_first_batch(by_node: dict[str, int]):
        named = {ids.get(k[:8], k): v for k, v in by_node.items()}
        with lock:
            if not killed and named.get("node_b", 0) > 0:
                killed["labelled"] = sum(by_node.values())
                killed["pid"] = cluster.kill_node("node_b")

    result = ray_job.run_job(
        str(src), str(tmp_path / "out"), tiny_bundle_fp32, address=cluster.address, actors=2,
        model_batch_size=8, on_progress=kill_node_b_after_its_first_batch, log=lambda msg: None,
    )  # fmt: skip
    assert killed, "node_b labelled nothing"
    assert killed["labelled"] < n, "the job had labelled every row before the kill"
    assert cluster.nodes["node_b"].proc.wait(timeout=30) is not None  # the node's ray start went down with it
    assert result["rows_in"] == result["rows"] == n
    assert [ids[name.split("/")[1]] for name in result["lost_nodes"]] == ["node_b"]
    assert sum(result["rows_by_node"].values()) == n
    lines = read_output(tmp_path / "out", columns=["line"]).column("line").to_pylist()
    assert sorted(lines) == list(range(2, n + 2))  # every row exactly once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out"]  # no incomplete directory


def test_a_lost_node_whose_actor_fits_nowhere_else_fails_the_job_and_writes_nothing(
    cluster, tiny_bundle_fp32, tmp_path
):
    """One actor of 3 CPUs fits only node_c (3 CPUs; node_a has 2, node_b was lost above). SIGKILL of
    node_c's raylet leaves its actor nowhere to restart, so its batches cannot run again: the job
    stops after the node-loss timeout with one line naming node_c, and writes nothing."""
    cluster.add_worker("node_c", cpus=3)
    cluster.wait_for_nodes()
    src = write_csv(tmp_path / "in.csv", 20_000)
    ids = short_ids(cluster)
    killed = []

    def kill_node_c_after_its_first_batch(by_node: dict[str, int]):
        if not killed and any(ids.get(k[:8]) == "node_c" and v > 0 for k, v in by_node.items()):
            killed.append(cluster.kill_node("node_c"))

    with pytest.raises(LrslError) as e:
        ray_job.run_job(
            str(src), str(tmp_path / "out"), tiny_bundle_fp32, address=cluster.address, actors=1,
            cpus_per_actor=3, model_batch_size=8, on_progress=kill_node_c_after_its_first_batch,
            node_loss_timeout=5, log=lambda msg: None,
        )  # fmt: skip
    assert killed, "node_c labelled nothing"
    message = str(e.value)
    node_c = next(k for k, v in ids.items() if v == "node_c")
    assert f"/{node_c} was lost mid-job and its batches did not run again" in message, message
    assert "no output was written" in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.csv"
    ]  # neither the output nor a temporary directory
