"""A multi-node Ray cluster on one machine: a head and worker nodes, each its own ``ray start`` process.

Each node is a ``ray start --block`` process with its own raylet, object store, temp directory,
ports and logical CPUs; a worker node also advertises a custom resource named after it (``{name: 1}``),
so a test can ask for work on a given node. The head has no CPUs: every actor runs on a worker node.
Ports are found free when a node starts; logs go to a root directory of the caller's (``tmp_path``),
the nodes' Ray temporary directories under it too unless that path is too long for Ray's Unix
sockets (108 bytes with the session directory's name), then into a new short directory in /tmp:
either way nothing is shared with another Ray cluster of the machine. Ray turns the node address
127.0.0.1 into the machine's own address, and its servers listen on every interface.

>>> with LocalCluster(root) as cluster:  # doctest: +SKIP
...     cluster.add_worker("node_a", cpus=2); cluster.add_worker("node_b", cpus=2)
...     cluster.wait_for_nodes()
...     subprocess.run(["lrsl-rt", "predict", "--engine", "ray", "--ray-address", cluster.address, ...])

Stopping: ``ray stop`` stops every Ray process of the machine, whoever started it, so it is not
used. Instead every process a node starts inherits a marker in its environment (``MARKER_ENV`` =
this cluster's token), found again with psutil even after its parent died (a killed raylet's
workers are re-parented): :meth:`LocalCluster.stop` sends those SIGTERM, waits, then SIGKILLs what is
left. :meth:`LocalCluster.kill_node` is the fault: SIGKILL of one node's raylet, after which its
``ray start --block`` takes the node's other processes down with it, as a lost machine would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MARKER_ENV = "LRSL_RT_LOCAL_CLUSTER"
HOST = "127.0.0.1"
OBJECT_STORE_BYTES = 150 * 1024**2
WORKER_PORTS = 32  # worker processes per node that can listen at once (actors, tasks, spares)
NODE_TIMEOUT_S = 180.0
MAX_TEMP_ROOT = 30  # characters: ".../NODE/session_<date>_<time>_<pid>/sockets/plasma_store.N" must fit 107
# A raylet that misses Ray's fixed 30 s registration window (a busy machine) is started again.
START_ATTEMPTS = 3
STARTED = "Ray runtime started."  # what `ray start` prints once the head lists its node


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    temp_dir: Path
    node_manager_port: int
    cpus: int
    log: Path
    log_offset: int = 0  # where this attempt's output starts in the log
    node_id: str | None = None  # known once the node has registered with the head
    pids: set[int] = field(default_factory=set)
    attempts: int = 1
    killed: bool = False  # by kill_node: no longer waited for


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on every interface now (Ray's servers listen on all of them),
    held open together so that no two are the same."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalCluster:
    """A head (started by the constructor) and worker nodes (``add_worker``) under ``root``; ``env``:
    variables for every node's processes (Ray reads its settings from ``RAY_<name>`` variables)."""

    def __init__(
        self, root: str | os.PathLike, object_store_bytes: int = OBJECT_STORE_BYTES, env: dict | None = None
    ):
        self.root = Path(root)
        self.extra_env = dict(env or {})
        self.root.mkdir(parents=True, exist_ok=True)
        short = len(str(self.root.resolve())) <= MAX_TEMP_ROOT
        self.temp_root = self.root.resolve() if short else Path(tempfile.mkdtemp(prefix="lrslray-"))
        self.token = uuid.uuid4().hex
        self.object_store_bytes = object_store_bytes
        self.nodes: dict[str, Node] = {}
        self.port = free_ports(1)[0]
        self.address = f"{HOST}:{self.port}"
        self._add("head", cpus=0, head=True)
        try:  # a worker node started before the head has registered exits at once
            self.wait_for_nodes()
        except BaseException:
            self.stop()
            self.remove_temp()
            raise

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- starting ------------------------------------------------------------------------------
    def add_worker(self, name: str, cpus: int = 1) -> Node:
        """Start a worker node with ``cpus`` logical CPUs and the custom resource ``{name: 1}``."""
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} exists already")
        return self._add(name, cpus=cpus, head=False)

    def _add(self, name: str, cpus: int, head: bool) -> Node:
        temp = self.temp_root / name
        temp.mkdir(parents=True, exist_ok=True)
        ports = free_ports(6 + WORKER_PORTS)
        argv = [
            _ray_cli(), "start", "--block", "--disable-usage-stats",
            "--node-ip-address", HOST, "--temp-dir", str(temp),
            "--num-cpus", str(cpus), "--object-store-memory", str(self.object_store_bytes),
            "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
            "--metrics-export-port", str(ports[2]), "--runtime-env-agent-port", str(ports[3]),
            "--dashboard-agent-listen-port", str(ports[4]), "--dashboard-agent-grpc-port", str(ports[5]),
            "--worker-port-list", ",".join(map(str, ports[6 : 6 + WORKER_PORTS])),
        ]  # fmt: skip
        if head:
            argv += ["--head", "--port", str(self.port), "--include-dashboard", "false"]
        else:
            argv += ["--address", self.address, "--resources", json.dumps({name: 1})]
        log = self.root / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True
            )
        node = Node(name, proc, temp, ports[0], cpus, log, log_offset=offset, pids={proc.pid})
        if name in self.nodes:
            node.pids |= self.nodes[name].pids
            node.attempts = self.nodes[name].attempts + 1
        self.nodes[name] = node
        return node

    def _env(self) -> dict:
        env = {**os.environ, **self.extra_env, MARKER_ENV: self.token}
        # Ray's memory monitor kills workers when the whole machine nears its memory limit, whoever
        # uses the memory: on a shared test machine it would kill actors for other processes' sake.
        env.setdefault("RAY_memory_monitor_refresh_ms", "0")
        env.setdefault("RAY_AUTH_MODE", "disabled")
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")  # stop: no drain wait
        return env

    def wait_for_nodes(self, timeout: float = NODE_TIMEOUT_S) -> None:
        """Wait until every node started so far has registered with the head; record their node ids.

        ``ray start`` prints ``Ray runtime started.`` once the head lists its node (it asks the GCS),
        so the log says it: no client of the cluster is made here."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = []
            for node in [n for n in self.nodes.values() if not n.killed]:
                if node.proc.poll() is not None:
                    self._restart_or_fail(node)
                    deadline = time.monotonic() + timeout  # the new attempt gets the whole time
                    waiting.append(node.name)
                elif STARTED in _read_from(node.log, node.log_offset):
                    node.node_id = node.node_id or self._raylet_node_id(node)
                else:
                    waiting.append(node.name)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes {waiting} did not start within {timeout:g} s")
            time.sleep(0.5)

    def _restart_or_fail(self, node: Node) -> None:
        if (
            "timed out during startup" in _read_from(node.log, node.log_offset)
            and node.attempts < START_ATTEMPTS
        ):
            self._add(node.name, cpus=node.cpus, head=node.name == "head")
            return
        raise RuntimeError(f"ray start of node {node.name} exited {node.proc.returncode}: {_tail(node.log)}")

    def _raylet_node_id(self, node: Node) -> str:
        raylet = psutil.Process(self.raylet_pid(node.name))
        return next(a.split("=", 1)[1] for a in raylet.cmdline() if a.startswith("--node_id="))

    # ---- processes -----------------------------------------------------------------------------
    def raylet_pid(self, name: str) -> int:
        """The pid of node ``name``'s raylet (a child of its ``ray start``)."""
        for p in psutil.Process(self.nodes[name].proc.pid).children(recursive=True):
            if p.name() == "raylet":
                return p.pid
        raise RuntimeError(f"node {name} has no raylet process")

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: the ``ray start`` processes and all that carry the marker."""
        found = {}
        for node in self.nodes.values():
            node.pids |= _tree(node.proc.pid)
        for p in psutil.process_iter():
            try:
                if p.environ().get(MARKER_ENV) == self.token:
                    found[p.pid] = p
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        for pid in set().union(*(n.pids for n in self.nodes.values())) - set(found):
            try:
                found[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
        return [p for p in found.values() if _running(p)]

    def kill_node(self, name: str) -> int:
        """SIGKILL node ``name``'s raylet (a lost machine); returns its pid. The node's ``ray start``
        then kills the node's other processes and exits; its workers end when their raylet is gone."""
        pid = self.raylet_pid(name)
        self.nodes[name].killed = True
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, grace: float = 10.0) -> None:
        """End every process of the cluster: SIGTERM to each ``ray start`` (which stops its node's
        processes), up to ``grace`` seconds, then SIGKILL to whatever of the cluster still runs."""
        for node in self.nodes.values():
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in self.processes():
            _signal(p, signal.SIGKILL)
        for node in self.nodes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=grace)

    def remove_temp(self) -> None:
        """Delete the nodes' temporary directories (sessions, spilled objects) when they are not under
        the root; the root, with the logs, is the caller's."""
        if not self.temp_root.is_relative_to(self.root.resolve()):
            shutil.rmtree(self.temp_root, ignore_errors=True)


def _ray_cli() -> str:
    """The ``ray`` script of this interpreter's environment (a venv need not be on ``PATH``)."""
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else (shutil.which("ray") or "ray")


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tree(pid: int) -> set[int]:
    try:
        p = psutil.Process(pid)
        return {pid} | {c.pid for c in p.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _running(p: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie has ended; only its parent's wait is missing)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(p: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        p.send_signal(sig)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
