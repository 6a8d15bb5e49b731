"""The lock file that lets a batch run alone on every core (lrsl_rt.serve.cores), on a real file.

Two leases on one file are two open files, as two workers' are: ``flock`` treats them as two holders
even in one process, so the waits below are the kernel's, not a simulation.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from lrsl_rt.serve.cores import QUIET_SECONDS, CoreLease, create_lock_file

pytest.importorskip("fcntl")


@pytest.fixture
def leases(tmp_path):
    path = tmp_path / "cores.lock"
    create_lock_file(path, 2)
    a, b = CoreLease(path, 0), CoreLease(path, 1)
    yield a, b
    a.close()
    b.close()


def test_a_batch_runs_alone_only_when_the_others_are_idle_and_quiet(leases):
    a, b = leases
    with a.batch() as alone:
        assert alone  # nobody has run a batch yet
    with b.batch() as alone:
        assert not alone  # a's batch ended just now: a busy server stays on one thread per worker
    time.sleep(QUIET_SECONDS * 2)
    with b.batch() as alone:
        assert alone


def test_batches_of_busy_workers_run_side_by_side(leases):
    a, b = leases
    with b.batch():
        pass  # b is busy: its last batch ended within the quiet window
    with a.batch() as a_alone:
        entered = threading.Event()

        def other():
            with b.batch() as b_alone:
                assert not b_alone
                entered.set()

        t = threading.Thread(target=other)
        t.start()
        assert entered.wait(5), "a shared batch waited for another shared batch"
        t.join()
    assert not a_alone


def test_a_solo_batch_makes_the_others_wait_until_it_ends(leases):
    a, b = leases
    entered = threading.Event()

    def other():
        with b.batch():
            entered.set()

    with a.batch() as alone:
        assert alone
        t = threading.Thread(target=other)
        t.start()
        assert not entered.wait(0.3), "another worker's batch ran beside a solo batch"
    assert entered.wait(5)
    t.join()


def test_a_killed_worker_never_blocks_the_others(tmp_path):
    path = tmp_path / "cores.lock"
    create_lock_file(path, 2)
    holder = (
        "import sys, time; from lrsl_rt.serve.cores import CoreLease\n"
        f"lease = CoreLease({str(path)!r}, 0)\n"
        "with lease.batch() as alone:\n"
        "    print(alone, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "True"  # it holds the lock exclusively, mid-batch
        lease = CoreLease(path, 1)
        got = []

        def batch():
            with lease.batch() as alone:
                got.append(alone)

        t = threading.Thread(target=batch)
        t.start()
        t.join(0.3)
        assert not got  # waiting for the solo batch
        proc.kill()
        t.join(5)
        assert got == [False]  # it went on (shared) once the kernel released the dead holder's lock
        lease.close()
    finally:
        proc.kill()
        proc.wait()
