"""Delivery and run flushing are exception-safe: a body that cannot be read (the memory budget's
store raising on ``load``) leaves the queue, the channel's unacked map and the credit counters
consistent, with the failing message and everything behind it still at the head of the queue in
order; a run of publishes or acks that raises does not drop the other runs.

Unit tests of ``Queue`` + ``Channel`` objects (no broker process, no sockets).
"""

from __future__ import annotations

import pytest
from fake_transport import FakeTransport as _Transport

from syncmq.broker.broker import Broker
from syncmq.broker.message import Message
from syncmq.broker.queue import Consumer, Queue
from syncmq.methods.session import Channel, Session, Settings


class _FailingStore:
    """A body store whose ``load`` raises for the bodies in ``bad``."""

    def __init__(self) -> None:
        self.bodies: dict[int, bytes] = {}
        self.bad: set[int] = set()

    def load(self, message: Message) -> bytes:
        if message.store_key in self.bad:
            raise OSError(5, "Input/output error")
        return self.bodies[message.store_key]


def _setup(n: int, consumers: int = 1, no_ack: bool = False):
    transport = _Transport()
    session = Session(transport, Broker(), Settings(), {})
    ch = Channel(session, 1)
    q = Queue("/", "q", False, None, False, None)
    store = _FailingStore()
    bodies = [b"body-%04d" % i for i in range(n)]
    msgs = []
    for i, body in enumerate(bodies):
        m = Message("", "q", b"\x00\x00", body)
        store.bodies[i + 1] = body
        m.store_key, m.store, m.store_refs = i + 1, store, 1
        m.body = None  # in the "store"
        msgs.append(m)
    q.publish_many(msgs)
    cs = [Consumer(f"c{i}", q, ch, no_ack, False, 0, None) for i in range(consumers)]
    return transport, ch, q, store, bodies, msgs, cs


def _ready(q: Queue) -> list[Message]:
    return [m for _, (m, _) in q.ready.pairs()]


@pytest.mark.parametrize("no_ack", [False, True])
def test_deliver_many_delivers_up_to_a_failing_body_and_keeps_the_rest_in_order(no_ack):
    transport, ch, q, store, bodies, msgs, (c,) = _setup(20, no_ack=no_ack)
    store.bad.add(8)  # msgs[7]
    with pytest.raises(OSError):
        q.add_consumer(c)  # batch dispatch: one deliver_many for the 20
    assert transport.delivered(bodies) == bodies[:7]
    assert _ready(q) == msgs[7:]  # the failing one and the rest: back at the head, in order
    assert ch.next_tag == 8 and ch.n_deliver == 7
    assert q.stats_delivered == 7
    if no_ack:
        assert len(ch.unacked) == 0 and c.unacked == 0 and q.unacked_count == 0
    else:
        assert [e[2] for e in ch.unacked.pop_all()] == msgs[:7]
        assert c.unacked == 7 and ch.global_unacked == 7 and q.unacked_count == 7

    # the failing one fails again first, changing nothing
    with pytest.raises(OSError):
        q.dispatch()
    assert transport.delivered(bodies) == bodies[:7] and _ready(q) == msgs[7:]
    assert ch.next_tag == 8

    store.bad.clear()  # readable again: the rest go out in order, with the next tags
    q.dispatch()
    assert transport.delivered(bodies) == bodies
    assert len(q.ready) == 0 and ch.next_tag == 21 and q.stats_delivered == 20


def test_deliver_of_a_failing_body_changes_nothing():
    """Several consumers: one Channel.deliver per message (round-robin)."""
    transport, ch, q, store, bodies, msgs, (d1, d2) = _setup(5, consumers=2)
    store.bad.add(3)  # msgs[2]
    with pytest.raises(OSError):
        q.add_consumer(d1)  # one consumer: the batch path, up to the failing body
    assert _ready(q) == msgs[2:]
    with pytest.raises(OSError):
        q.add_consumer(d2)  # two consumers: the per-message path
    assert transport.delivered(bodies) == bodies[:2]
    assert _ready(q) == msgs[2:]
    assert ch.next_tag == 3 and len(ch.unacked) == 2
    assert d1.unacked + d2.unacked == 2 and ch.global_unacked == 2 and q.unacked_count == 2
    store.bad.clear()
    q.dispatch()
    assert transport.delivered(bodies) == bodies
    assert len(ch.unacked) == 5 and ch.next_tag == 6 and q.unacked_count == 5


class _RaisingQueue:
    def publish_many(self, messages: list) -> None:
        raise RuntimeError("publish_many failed")


class _RecordingQueue:
    def __init__(self) -> None:
        self.got: list = []

    def publish_many(self, messages: list) -> None:
        self.got.extend(messages)


class _RecordingChannel:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.settled: list = []

    def settle(self, entries: list, requeue: bool) -> None:
        if self.fail:
            raise RuntimeError("settle failed")
        self.settled.extend(entries)


def test_flush_runs_handles_every_run_when_one_raises():
    session = Session(_Transport(), Broker(), Settings(), {})
    bad, good = _RaisingQueue(), _RecordingQueue()
    ch_bad, ch_good = _RecordingChannel(fail=True), _RecordingChannel()
    session.run.pending.update({bad: ["m1"], good: ["m2", "m3"]})
    session.pending_acks = {ch_bad: ["e1"], ch_good: ["e2", "e3"]}
    with pytest.raises(RuntimeError, match="publish_many failed"):
        session.flush_runs()
    assert good.got == ["m2", "m3"]  # the run after the failing one was enqueued
    assert ch_good.settled == ["e2", "e3"]  # and the acks settled
    assert not session.pending_publish and not session.pending_acks
