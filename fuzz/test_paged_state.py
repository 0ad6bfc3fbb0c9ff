"""Hypothesis stateful tests of the paged ready FIFO (``syncmq.queues.paged``): tiny windows,
page batches and segments, so that every operation meets a tail in memory, in a page file,
across segments, or none.

- ``PagedReadyQueueMachine`` drives the structure against a model (a list sorted by seq):
  push (one by one or a run), pop, peek, requeue (one or many, to their original position), the newest message
  taken off the end and put back (a TTL-0 queue's drop), purge; its ``_check`` after every
  step (head seqs below tail seqs, counters equal to the page files' records), and the page
  files on disk are exactly the live segments.
- ``PagedQueueMachine`` is ``fuzz/test_broker_state.py``'s queue-and-two-channels machine
  with a memory budget's body store and a paged FIFO: publish (with TTLs, length limits),
  consume, ack/reject/requeue, recover, get, purge, and expiry of the head; besides
  ``Queue._check``, ready messages are always in seq order (FIFO with requeues at their
  position) and the body store holds exactly the resident messages whose body is not on
  the message (paging out releases a body, paging in stores it again or keeps it within
  ``loose_bytes``: no leak, no double release).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fuzz.test_broker_state import QUEUE_ARGS, QueueChannelsMachine
from fuzz.test_structures_state import SETTINGS, pick
from syncmq.broker.broker import Broker
from syncmq.broker.message import Message
from syncmq.broker.queue import Queue
from syncmq.methods.session import Session, Settings
from syncmq.queues.paged import PagedReadyQueue
from syncmq.queues.ready import ReadyQueue
from syncmq.queues.spill import BodyStore
from tests.fake_transport import FakeTransport as _Transport


def _msg(i: int) -> Message:
    return Message("x", f"k{i}", b"\x00\x00", b"b%d" % i, cc=("c",) if i % 3 == 0 else ())


class PagedReadyQueueMachine(RuleBasedStateMachine):
    """Model: ``ready`` (seq, body) sorted by seq; ``out`` popped (seq -> body)."""

    @initialize(window=st.integers(2, 5), batch=st.integers(1, 3),
                seg=st.integers(60, 400))
    def setup(self, window, batch, seg):
        self.dir = tempfile.mkdtemp(prefix="paged-")
        self.q = PagedReadyQueue(Message, None, self.dir, window, seg_bytes=seg, batch=batch)
        self.ready: list[tuple[int, bytes]] = []
        self.out: dict[int, tuple[bytes, bool]] = {}
        self.n = 0

    def teardown(self):
        if hasattr(self, "dir"):
            self.q.close()
            assert not os.listdir(self.dir)
            shutil.rmtree(self.dir)

    def _pair(self, pair):
        seq, (m, redelivered) = pair
        return seq, m.body

    @rule(k=st.integers(1, 8), many=st.booleans())
    def push(self, k, many):
        ms = []
        for _ in range(k):
            self.n += 1
            ms.append(_msg(self.n))
        if many:  # (Queue.publish_many's runs; an iterator, as there)
            seq = self.q.next_seq
            self.q.push_many(iter([(m, False) for m in ms]))
            self.ready.extend((seq + i, m.body) for i, m in enumerate(ms))
            assert self.q.next_seq == seq + k
        else:
            for m in ms:
                seq = self.q.push((m, False))
                self.ready.append((seq, m.body))

    @rule()
    def pop(self):
        got = self.q.pop()
        if not self.ready:
            assert got is None
            return
        want = self.ready.pop(0)
        assert self._pair(got) == want
        m = got[1][0]
        assert m.routing_key == f"k{want[1][1:].decode()}" and m.exchange == "x"
        self.out[got[0]] = got[1]

    @rule()
    def peek(self):
        got = self.q.peek()
        assert (self._pair(got) if got else None) == (self.ready[0] if self.ready else None)

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0, 1000))
    def requeue(self, index):
        seq = pick(self.out, index)
        m, _r = self.out.pop(seq)
        self.q.requeue(seq, (m, True))
        self.ready.append((seq, m.body))
        self.ready.sort()

    @precondition(lambda self: self.out)
    @rule(data=st.data())
    def requeue_many(self, data):
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.out)), unique=True, min_size=1))
        seqs = data.draw(st.permutations(seqs))
        pairs = [(s, (self.out.pop(s)[0], True)) for s in seqs]
        self.q.requeue_many(pairs)
        self.ready.extend((s, item[0].body) for s, item in pairs)
        self.ready.sort()

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0, 1000))
    def ack(self, index):
        del self.out[pick(self.out, index)]

    @rule(back=st.booleans())
    def pop_tail(self, back):
        got = self.q.pop_tail()
        if not self.ready:
            assert got is None
            return
        assert self._pair(got) == self.ready[-1]
        if back:  # (Queue._drop_undelivered_locked: put back at once)
            self.q.requeue(*got)
        else:
            self.ready.pop()

    @rule()
    def purge(self):
        seen = []
        n = self.q.purge_paged(lambda seqs, ids, sizes: seen.extend(seqs))
        assert n == len(seen)
        rest = self.q.purge()
        seq_of = {b: s for s, b in self.ready}
        rest_seqs = [seq_of[m.body] for m, _r in rest]
        assert rest_seqs == sorted(rest_seqs)  # head, then the unwritten tail
        assert sorted(seen + rest_seqs) == [s for s, _ in self.ready]
        assert seen == sorted(seen)
        self.ready = []

    @rule()
    def listing(self):
        assert [self._pair(p) for p in self.q.pairs()] == self.ready

    @invariant()
    def consistent(self):
        if not hasattr(self, "q"):
            return
        q = self.q
        q._check()
        assert len(q) == q.count() == len(self.ready)
        assert bool(q) == bool(self.ready)
        assert len(q._pend) <= q.batch  # (the newest push stays an object)
        assert sorted(os.listdir(self.dir)) == sorted(os.path.basename(s.path)
                                                      for s in q._segs)
        if not q.paged_count:
            assert not q._segs


TestPagedReadyQueue = PagedReadyQueueMachine.TestCase
TestPagedReadyQueue.settings = SETTINGS


class PagedQueueMachine(QueueChannelsMachine):
    """The queue-and-channels machine with a body store and a paged FIFO (window 3)."""

    @initialize(args=QUEUE_ARGS.filter(lambda a: "x-max-priority" not in a),
                window=st.integers(2, 4), batch=st.integers(1, 3),
                loose=st.sampled_from([0, 20, 1 << 20]))
    def setup(self, args, window, batch, loose):
        self.dir = tempfile.mkdtemp(prefix="pagedq-")
        self.store = BodyStore(self.dir, 40)  # a few bodies in memory, the rest spilled
        self.store.open()
        self.session = Session(_Transport(), Broker(), Settings(), {})
        self.channels = [self.session.open_channel(1), self.session.open_channel(2)]
        self.q = Queue("/", "q", False, None, False, dict(args))
        self.q.store = self.store
        self.q.ready = PagedReadyQueue(Message, self.store, self.dir, window, seg_bytes=200,
                                       batch=batch, loose_bytes=loose)
        self.n = 0
        self.tags = 0

    def teardown(self):
        if hasattr(self, "dir"):
            self.q.mark_deleted()
            self.store.close()
            shutil.rmtree(self.dir)

    def _publish(self, size: int, ttl: bool, priority: int) -> None:
        from syncmq.wire import _spec
        props = _spec.BasicProperties(expiration="60000" if ttl else None).encode()
        self.n += 1
        m = Message("", "q", props, b"m%d" % self.n + b"x" * size)
        self.store.put(m, 1)
        self.q.publish(m)

    @rule(k=st.integers(1, 6))
    def publish_many(self, k):
        if self.q.batchable:
            ms = [Message("", "q", b"\x00\x00", b"r%d" % i) for i in range(k)]
            for m in ms:
                self.store.put(m, 1)
            self.q.publish_many(ms)

    @rule(k=st.integers(1, 10))
    def expire_head(self, k):
        """The first ``k`` messages' deadlines pass (those with one expire from the head)."""
        q = self.q
        with q.guard:
            for seq in sorted(q.expiry)[:k]:
                q.expiry[seq] = 0.0
            q._expire_locked(time.monotonic())
            if q.consumers and q.ready:
                q._dispatch_locked()

    @invariant()
    def paged_order_and_store(self):
        if not hasattr(self, "q"):
            return
        q = self.q
        seqs = [seq for seq, _ in q.ready.pairs()]
        assert seqs == sorted(seqs)
        unacked = sum(1 for ch in self.channels for _t, e in ch.unacked.items()
                      if e[0] is q and e[2].store_key)
        ready = q.ready
        resident = [m for _, (m, _r) in [*ReadyQueue.pairs(ready), *ready._pend]]
        stored = sum(1 for m in resident if m.store_key)
        assert self.store.stats()["messages"] == stored + unacked, (
            self.store.stats(), q.ready, unacked)
        # a body is on its message or in the store, never both nor neither
        assert all((m.body is None) == bool(m.store_key) for m in resident)
        assert ready._loose <= ready.loose_bytes


TestPagedQueue = PagedQueueMachine.TestCase
TestPagedQueue.settings = SETTINGS
