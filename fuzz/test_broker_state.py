"""Hypothesis stateful tests of the objects whose invariants span threads: a ``Queue`` with the
``Channel``s that consume from it, and a channel's ``ConfirmTracker``.

Each is driven in-process (no sockets, no broker process) by random operations in the orders
the threads could interleave them, next to a simple model; ``Queue._check``,
``Channel._check`` and ``ConfirmTracker._check`` run after every step.
``SYNCMQ_FUZZ_EXAMPLES`` sets the number of examples (default 200).
"""

from __future__ import annotations

import threading

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fuzz.test_structures_state import SETTINGS
from syncmq.broker.broker import Broker
from syncmq.broker.message import Message, settle_copies
from syncmq.broker.publish import PublishResult
from syncmq.broker.queue import Consumer, Queue
from syncmq.methods.confirm import ConfirmTracker
from syncmq.methods.session import Session, Settings
from syncmq.protocol import connection as pconn
from syncmq.wire import _spec
from tests.fake_transport import FakeTransport as _Transport

QUEUE_ARGS = st.sampled_from([
    {},
    {"x-max-length": 3},
    {"x-max-length": 2, "x-overflow": "reject-publish"},
    {"x-max-length-bytes": 20},
    {"x-message-ttl": 60000},
    {"x-max-priority": 3},
])


class QueueChannelsMachine(RuleBasedStateMachine):
    """One queue (with one of a few extension sets), two channels of one session."""

    @initialize(args=QUEUE_ARGS)
    def setup(self, args):
        self.session = Session(_Transport(), Broker(), Settings(), {})
        self.channels = [self.session.open_channel(1), self.session.open_channel(2)]
        self.q = Queue("/", "q", False, None, False, dict(args))
        self.n = 0
        self.tags = 0

    def _publish(self, size: int, ttl: bool, priority: int) -> None:
        props = _spec.BasicProperties(
            expiration="60000" if ttl else None, priority=priority or None).encode()
        self.n += 1
        self.q.publish(Message("", "q", props, b"m%d" % self.n + b"x" * size))

    @rule(size=st.integers(0, 12), ttl=st.booleans(), priority=st.integers(0, 3))
    def publish(self, size, ttl, priority):
        self._publish(size, ttl, priority)

    @rule(k=st.integers(1, 6))
    def publish_many(self, k):
        if self.q.batchable:
            self.q.publish_many([Message("", "q", b"\x00\x00", b"r%d" % i) for i in range(k)])

    @rule(c=st.integers(0, 1), prefetch=st.integers(0, 3), no_ack=st.booleans())
    def consume(self, c, prefetch, no_ack):
        ch = self.channels[c]
        self.tags += 1
        tag = f"t{self.tags}"
        consumer = Consumer(tag, self.q, ch, no_ack, False, prefetch, None, b"\x00")
        with ch.lock:
            ch.consumers[tag] = consumer
        self.q.add_consumer(consumer)

    @rule(c=st.integers(0, 1))
    def cancel(self, c):
        ch = self.channels[c]
        with ch.lock:
            if not ch.consumers:
                return
            consumer = ch.consumers.pop(next(iter(ch.consumers)))
        self.q.remove_consumer(consumer)

    @rule(c=st.integers(0, 1), which=st.integers(0, 9), multiple=st.booleans(),
          how=st.sampled_from(["ack", "reject", "requeue"]))
    def settle(self, c, which, multiple, how):
        ch = self.channels[c]
        tags = [t for t, _ in ch.unacked.items()]
        if not tags:
            return
        entries = ch.take_unacked(tags[which % len(tags)], multiple)
        ch.settle(entries, requeue=how == "requeue", reject=how == "reject")

    @rule(c=st.integers(0, 1))
    def recover(self, c):
        ch = self.channels[c]
        entries = ch.take_all_unacked()
        if entries:
            ch.settle(entries, requeue=True)

    @rule(c=st.integers(0, 1), no_ack=st.booleans())
    def get(self, c, no_ack):
        r = self.q.get(no_ack)
        if r is not None:
            seq, message, redelivered, remaining = r
            self.channels[c].send_get_ok(self.q, seq, message, redelivered, remaining, no_ack)

    @rule(c=st.integers(0, 1), prefetch=st.integers(0, 4))
    def global_qos(self, c, prefetch):
        ch = self.channels[c]
        with ch.lock:
            ch.global_prefetch = prefetch
        ch.refill()

    @rule(c=st.integers(0, 1))
    def reopen(self, c):
        ch = self.channels[c]
        ch.release()
        self.session.channels.pop(ch.id, None)
        self.channels[c] = self.session.open_channel(ch.id)

    @rule()
    def purge(self):
        self.q.purge()

    @invariant()
    def checked(self):
        if not hasattr(self, "q"):
            return
        seqs = []
        for ch in self.channels:
            ch._check()
            ch.unacked._check()
            seqs.extend(e[1] for _t, e in ch.unacked.items() if e[0] is self.q)
        self.q._check(seqs)
        assert len(seqs) == len(set(seqs)), "a message is unacked twice"
        # a consumer with credit and a ready message cannot both exist after a dispatch
        if self.q.ready and not self.q.expiry:
            for c in self.q.consumers:
                ch = c.channel
                if not c.no_ack and c.prefetch and c.unacked >= c.prefetch:
                    continue
                if not c.no_ack and ch.global_prefetch and \
                        ch.global_unacked >= ch.global_prefetch:
                    continue
                if self.q.single_active and c is not self.q.consumers[0]:
                    continue
                raise AssertionError(f"consumer {c.tag} has credit and the queue has messages")


TestQueueChannels = QueueChannelsMachine.TestCase
TestQueueChannels.settings = SETTINGS


# ------------------------------------------------------------------------------ confirms


class _Session:
    def __init__(self) -> None:
        self.proto = type("P", (), {"state": pconn.OPEN})()
        self.transport = _Transport()

    def sent(self) -> list[tuple[str, int, bool]]:
        """The confirms written, as (method name, delivery tag, multiple)."""
        return [(m.NAME, m.delivery_tag, m.multiple) for _ch, m in self.transport.methods()]


class _JQueue:
    journaled = True


class _Channel:
    def __init__(self, session: _Session) -> None:
        self.session = session
        self.id = 1
        self.lock = threading.Lock()
        self.closing = False


class ConfirmTrackerMachine(RuleBasedStateMachine):
    """Publishes (plain, refused, journaled), batch ends and journal barriers firing in any
    order, as the worker and the journal thread can interleave them. The client's view must
    be: every publish confirmed exactly once and in order, a refused one nacked, a journaled
    one acked only after a barrier covering it fired without error or after every queue copy
    of it was settled (early confirms: consumers' acks interleave with all of the above)."""

    def __init__(self) -> None:
        super().__init__()
        self.session = _Session()
        self.lock = threading.Lock()
        self.t = ConfirmTracker(_Channel(self.session), self.lock)
        self.kind: dict[int, str] = {}
        # registered, not fired: (the seq each covers up to, its callback)
        self.barriers: list[tuple[int, object]] = []
        self.synced_ok = 0  # the highest seq a successful barrier covered
        self.failed: set[int] = set()  # seqs covered by a failed barrier before their ack
        self.next_id = 0
        self.copies: dict[Message, int] = {}  # journaled message -> queue copies unsettled
        self.seq_of: dict[Message, int] = {}
        self.all_settled: set[int] = set()  # journaled publishes settled on every queue

    @rule(kind=st.sampled_from(["plain", "plain", "refused", "journaled", "journaled2"]))
    def publish(self, kind):
        # journaled2: a persistent message on two durable queues (two copies to settle)
        copies = 2 if kind == "journaled2" else 1
        kind = kind.rstrip("2")
        r = PublishResult([_JQueue()] * copies if kind == "journaled" else [], True,
                          rejected=kind == "refused", journaled=kind == "journaled")
        m = Message("", "", b"\x00\x00", b"")
        if kind == "journaled":
            self.next_id += 1
            m.msg_id = self.next_id
            self.copies[m] = copies
        self.t.published(r, m)
        self.kind[self.t.seq] = kind
        self.seq_of[m] = self.t.seq

    @precondition(lambda self: any(self.copies.values()))
    @rule(data=st.data(), n=st.integers(1, 3))
    def consumer_settles(self, data, n):
        # a consumer acks (or rejects without requeue) queue copies of journaled messages,
        # any number at once (basic.ack multiple), possibly before their batch is handed over
        live = [m for m, c in self.copies.items() if c]
        picked = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=n,
                                    unique=True))
        for m in picked:
            self.copies[m] -= 1
            if not self.copies[m]:
                self.all_settled.add(self.seq_of[m])
        settle_copies(picked)

    @rule(fire_first=st.booleans(), fail=st.sampled_from([False, False, False, True]))
    def end_batch(self, fire_first=False, fail=False):
        # as Session._receive: the barrier is registered before the hand-over, and the
        # journal thread may fire it (or an earlier one) before the hand-over happens
        upto = self.t._durable  # what the batch's barrier covers (the worker side)

        def barrier(callback):
            self.barriers.append((upto, callback))
            if fire_first:
                self.barrier_fires(fail)

        ConfirmTracker.hand_over({self.t}, self.lock, barrier)

    @precondition(lambda self: self.barriers)
    @rule(fail=st.sampled_from([False, False, False, True]))
    def barrier_fires(self, fail):
        # barriers fire in registration order (the journal's group commit keeps it)
        upto, callback = self.barriers.pop(0)
        if fail:
            self.failed.update(range(self.t.sent + 1, upto + 1))
        else:
            self.synced_ok = max(self.synced_ok, upto)
        callback(RuntimeError("disk") if fail else None)

    @invariant()
    def client_view(self):
        self.t._check()
        fate: dict[int, str] = {}
        last = 0
        sent = self.session.sent()
        for name, tag, multiple in sent:
            assert tag > last, sent  # in order, never twice
            first = last + 1 if multiple else tag
            assert multiple == (tag - last > 1), sent
            for seq in range(first, tag + 1):
                fate[seq] = name
            last = tag
        for seq, name in fate.items():
            kind = self.kind[seq]
            if name == "basic.ack":
                assert kind != "refused", (seq, sent)
                if kind == "journaled":  # fsynced, or acked on every queue
                    assert seq <= self.synced_ok or seq in self.all_settled, (
                        seq, self.synced_ok)
            else:
                assert kind == "refused" or seq in self.failed, (seq, kind)

    def teardown(self):
        # once every batch is handed over and every barrier fired, all are confirmed
        self.end_batch()
        while self.barriers:
            self.barriers.pop(0)[1](None)
        assert self.t.sent == self.t.seq, (self.t.sent, self.t.seq)


TestConfirmTracker = ConfirmTrackerMachine.TestCase
TestConfirmTracker.settings = SETTINGS
