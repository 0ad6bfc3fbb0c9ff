"""``ReadyQueue.take(k)``, the batch dispatch's one call per batch, hands out exactly what
``k`` calls of ``pop`` would, in order, fewer only when the queue runs empty: with requeued
messages back at their places (a heap behind the front), and for a paged queue whose tail
pages in as the head drains."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_paged_edges import paged_queue  # noqa: F401 (a fixture)
from test_paged_queues import _bodies

from syncmq.queues.paged import PAGE_BATCH
from syncmq.queues.ready import ReadyQueue


def _pop(q: ReadyQueue, k: int) -> list:
    out = []
    for _ in range(k):
        pair = q.pop()
        if pair is None:
            break
        out.append(pair)
    return out


@settings(max_examples=80, stateful_step_count=40, deadline=None)
class TakeMachine(RuleBasedStateMachine):
    """One queue drained with ``take``, a twin with ``pop``: the same pairs come out."""

    def __init__(self) -> None:
        super().__init__()
        self.taking = ReadyQueue()
        self.popping = ReadyQueue()
        self.out: list = []  # pairs handed out (by both), which may be requeued
        self.n = 0

    @rule(n=st.integers(1, 6))
    def push(self, n: int) -> None:
        for _ in range(n):
            self.taking.push(self.n)
            self.popping.push(self.n)
            self.n += 1

    @rule(k=st.integers(1, 9))
    def take(self, k: int) -> None:
        got = self.taking.take(k)
        assert got == _pop(self.popping, k)
        assert len(got) == k or not self.taking.count()
        self.out.extend(got)

    @precondition(lambda self: self.out)
    @rule(data=st.data())
    def requeue(self, data) -> None:
        pairs = data.draw(st.lists(st.sampled_from(self.out), unique=True, min_size=1))
        for pair in pairs:
            self.out.remove(pair)
        self.taking.requeue_many(pairs)
        self.popping.requeue_many(pairs)

    @invariant()
    def same(self) -> None:
        self.taking._check()
        assert list(self.taking.pairs()) == list(self.popping.pairs())


TestTake = TakeMachine.TestCase


def test_take_from_a_paged_queue_pages_in_and_keeps_the_order(paged_queue):  # noqa: F811
    q, put = paged_queue
    bodies = _bodies(3 * PAGE_BATCH, "t")
    put(bodies)
    ready = q.ready
    assert ready.paged_count > PAGE_BATCH
    got = []
    k = 1
    with q.lock:
        while pairs := ready.take(k):
            assert len(pairs) == k or not ready.count()
            for _seq, (m, _redelivered) in pairs:
                got.append(m.body if m.body is not None else m.load_body())
                q.store.release(m)
            ready._check()
            k = k % 11 + 1
        q.ready_bytes = 0  # (taken around the queue's accounting: it is empty now)
    assert got == bodies
    assert not ready.paged_count
