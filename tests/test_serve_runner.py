"""Where a served batch runs (lrsl_rt.serve.runner) and what the batcher hands it, in this process.

The runner is tested on the real tiny Reranker and a real lock file shared by two leases (two open
files, as two workers hold: ``flock`` treats them as two holders even in one process), so "alone"
and "not alone" are the kernel's answers, not a simulation.
"""

from __future__ import annotations

import asyncio

import pytest

from lrsl_rt.serve.runner import INLINE_TOKENS, BatchRunner

pytest.importorskip("fcntl")
TEXTS = ["my card is still not here", "exchange rate euro dollar", "why did my top up fail", ""]


@pytest.fixture(scope="module")
def reference(tiny_bundle_fp32):
    from lrsl_rt import Reranker

    return Reranker.from_bundle(tiny_bundle_fp32, threads=1)


class Counted:
    """A Reranker whose predict_tokens calls are counted (to see which sessions a batch ran on)."""

    def __init__(self, reranker) -> None:
        self.reranker, self.calls = reranker, 0

    def predict_tokens(self, rows, explain, abstain):
        self.calls += 1
        return self.reranker.predict_tokens(rows, explain, abstain)


@pytest.fixture
def leases(tmp_path):
    from lrsl_rt.serve.cores import CoreLease, create_lock_file

    path = tmp_path / "cores.lock"
    create_lock_file(path, 2)
    mine, other = CoreLease(path, 0), CoreLease(path, 1)
    yield mine, other
    mine.close()
    other.close()


def test_the_runner_runs_a_small_lone_batch_on_the_loop_and_the_rest_in_the_model_thread(reference, leases):
    mine, other = leases
    rows = reference.tokenizer.tokenize(TEXTS)
    tokens = sum(len(r) for r in rows)
    own, solo, solo_batches = Counted(reference), Counted(reference), []
    runner = BatchRunner(own, (solo, mine), on_solo=lambda: solo_batches.append(1))
    want = [p.to_dict() for p in reference.predict(TEXTS)]

    assert [p.to_dict() for p in runner.inline(rows, tokens, False, False)] == want  # alone: on the loop
    assert (solo.calls, own.calls, len(solo_batches)) == (1, 0, 1)
    assert runner.inline(rows, INLINE_TOKENS + 1, False, False) is None  # too long for the loop
    other.share()  # another worker is running a batch
    try:
        assert runner.inline(rows, tokens, False, False) is None
        assert [p.to_dict() for p in runner.run(rows, False, False)] == want  # its own threads, side by side
        assert (solo.calls, own.calls, len(solo_batches)) == (1, 1, 1)
    finally:
        other.release()
    assert BatchRunner(own).inline(rows, tokens, False, False) is None  # no solo sessions: never on the loop
    assert [p.to_dict() for p in BatchRunner(own).run(rows, True, False)] == [
        p.to_dict() for p in reference.predict(TEXTS, explain=True)
    ]


def test_a_batch_holds_one_abstain_choice_and_keeps_fifo_order():
    """Requests alternating abstain True/False, all queued before the first batch: batches are cut
    where the choice changes, even with room for more texts; each text still runs once, in order."""
    from lrsl_rt.serve.batcher import BatchLimits, MicroBatcher

    seen = []

    class Runner:
        def inline(self, texts, tokens, explain, abstain):
            return None

        def run(self, texts, explain, abstain):
            seen.append((abstain, list(texts)))
            return [f"{t}:{abstain}" for t in texts]

    requests = [(["a", "b"], True), (["c"], True), (["d"], False), (["e", "f"], True)]

    async def main():
        b = MicroBatcher(Runner(), BatchLimits(max_texts=8, max_tokens=100, max_wait=0.05, max_queue=100))
        b.start()
        try:
            tasks = [b.submit(t, [1] * len(t), abstain=a) for t, a in requests]
            return await asyncio.gather(*tasks)
        finally:
            await b.close()

    answers = asyncio.run(main())
    assert seen == [(True, ["a", "b", "c"]), (False, ["d"]), (True, ["e", "f"])]
    assert answers == [[f"{t}:{a}" for t in texts] for texts, a in requests]
