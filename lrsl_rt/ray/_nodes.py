"""Where a job's rows were labelled, and what the job does when a node is lost mid-job.

:class:`RowTally` is an actor without CPUs on the driver's node. Each predictor reports every batch
it labelled as ``(source, line of its first row) -> (node id, rows)`` before returning it; a batch
that Ray runs again after a failure reports under the same key, so the totals count each row once,
on the node that labelled it last. ``run_job`` prints them per node.

:class:`NodeWatch` is a thread of the driver that, every ``POLL_S`` while the job runs, reads the
cluster's nodes and the tally. A node that was alive and is now dead is reported once on stderr.
Ray then restarts that node's actors where the cluster has room, and runs the batches they held
again (``max_restarts``, ``max_task_retries`` in :mod:`lrsl_rt.ray._predict`); where there is no
room now, a restart waits until the other actors run out of input and Ray Data releases them. An
actor that no remaining node can hold at all (it asks for more CPUs than any has) would keep its
batches waiting forever. So when a node has been lost and the tally has not grown for ``stall_s``
seconds while rows are still unlabelled, the watch stops the job (it interrupts the driver's main
thread) with an error that names the lost node; nothing is written.
"""

from __future__ import annotations

import _thread
import sys
import threading
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..errors import LrslError

POLL_S = 1.0
NODE_LOSS_STALL_S = 120.0


@ray.remote(num_cpus=0, max_restarts=0)
class RowTally:
    """Rows labelled per batch key; ``by_node`` sums them per node id."""

    def __init__(self):
        self.batches: dict[tuple, tuple[str, int]] = {}

    def add(self, key: tuple, node_id: str, rows: int) -> None:
        self.batches[key] = (node_id, rows)

    def by_node(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for node_id, rows in self.batches.values():
            out[node_id] = out.get(node_id, 0) + rows
        return out


def start_tally() -> ray.actor.ActorHandle:
    """A :class:`RowTally` on the driver's node, which lives as long as the driver does."""
    here = ray.get_runtime_context().get_node_id()
    return RowTally.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()


def node_names() -> dict[str, str]:
    """Node id -> ``IP/id-prefix`` of every node the cluster knows, alive or dead."""
    return {n["NodeID"]: f"{n['NodeManagerAddress']}/{n['NodeID'][:8]}" for n in ray.nodes()}


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


class NodeWatch:
    """Watch the cluster while a job runs (``with NodeWatch(tally, rows): ds.write_...``).

    ``failure`` is set (and the main thread interrupted) when a lost node's work cannot go on;
    ``lost`` lists the nodes lost during the job; ``on_progress(rows_by_node)`` is called every poll.
    """

    def __init__(self, tally, rows: int, stall_s: float = NODE_LOSS_STALL_S, on_progress=None, log=None):
        self.tally, self.rows, self.stall_s, self.on_progress = tally, rows, stall_s, on_progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.lost: list[str] = []
        self.failure: LrslError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lrsl-rt-node-watch", daemon=True)

    def __enter__(self) -> NodeWatch:
        self._seen = alive_nodes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        done, changed = -1, time.monotonic()
        while not self._stop.wait(POLL_S):
            try:
                alive, by_node = alive_nodes(), ray.get(self.tally.by_node.remote(), timeout=30)
            except Exception:  # the driver is shutting down, or the head is gone: the job says so
                return
            if self._note_lost(alive):
                changed = time.monotonic()  # the restarted actors get the whole stall time
            if self.on_progress is not None:
                self.on_progress(by_node)
            total = sum(by_node.values())
            if total != done:
                done, changed = total, time.monotonic()
            if self.lost and total < self.rows and time.monotonic() - changed > self.stall_s:
                self._fail(total)
                return

    def _note_lost(self, alive: set[str]) -> bool:
        """Record and report the nodes that died since the last poll; True if there were any."""
        gone = self._seen - alive
        self._seen = (self._seen - gone) | alive
        if gone:
            names = node_names()
            for node_id in sorted(gone):
                self.lost.append(names.get(node_id, node_id[:8]))
                self.log(f"Warning: node {self.lost[-1]} was lost mid-job; Ray restarts its actors "
                         "on the remaining nodes and runs its batches again")  # fmt: skip
        return bool(gone)

    def _fail(self, total: int) -> None:
        self.failure = LrslError(
            f"node {', '.join(self.lost)} was lost mid-job and its batches did not run again on the "
            f"remaining nodes within {self.stall_s:g} s ({total:,} of {self.rows:,} rows labelled; no remaining "
            "node takes its actors: add a node, or ask for fewer --cpus-per-actor); no output was written"
        )
        _thread.interrupt_main()
