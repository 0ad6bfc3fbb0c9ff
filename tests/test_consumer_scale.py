"""Consumers on one queue cost O(1) each to register and cancel (issue #19).

Before ``syncmq.queues.consumers`` a ``basic.consume`` scanned every consumer of the queue for
an exclusive one and a cancel searched a deque: 20,000 consumers took 11 s to register and
stalled other connections on the same worker meanwhile. The cost is compared at N and 4N
consumers (broker CPU seconds from /proc, never a wall-clock limit); the registry's
invariants are checked by a stateful Hypothesis test against a plain list model.
"""

from __future__ import annotations

import os
import threading
import time

import amqp_raw as raw
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from syncmq.queues.consumers import ConsumerRing
from syncmq.wire import _spec
from syncmq.wire.frames import parse_frames

N = 5_000
BATCH = 5_000


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_consume_cost_is_flat_from_n_to_4n_consumers(broker_factory, unique):
    b = broker_factory("--workers", "2")
    pid = b.proc.pid
    with raw.connect(b.port) as a, raw.connect(b.port) as other:
        a.open_channel()
        other.open_channel()
        a.send_method(1, _spec.Queue.Declare(queue=unique))
        a.expect_method(1, _spec.Queue.DeclareOk)
        n = 0

        def batch(k: int) -> float:
            nonlocal n
            t0 = _cpu(pid)
            assert raw.register_consumers(a, unique, n, k) == n + k
            n += k
            return _cpu(pid) - t0

        batch(N)
        cost_n = min(batch(BATCH) for _ in range(2))

        # the jump to 4N, with another connection's passive declares answered meanwhile
        answered: list[int] = []
        done = threading.Event()

        def declare_loop() -> None:
            while not done.is_set():
                other.send_method(1, _spec.Queue.Declare(queue=unique, passive=True))
                answered.append(other.expect_method(1, _spec.Queue.DeclareOk).consumer_count)

        t = threading.Thread(target=declare_loop, daemon=True)
        t.start()
        while not answered:
            time.sleep(0.001)
        batch(4 * N - n)
        during = len(answered)
        done.set()
        t.join(30)
        assert during >= 2 and answered == sorted(answered), answered[:20]

        cost_4n = min(batch(BATCH) for _ in range(2))
        # quadratic registration (a scan per consume) costs ~3.5x here
        assert cost_4n < 1.8 * cost_n + 0.03, (cost_n, cost_4n)

        # cancelling is O(1) too: cancel a few from the middle, the count follows
        for i in (7, 4 * N // 2, 4 * N + 3):
            a.send_method(1, _spec.Basic.Cancel(consumer_tag=f"c{i}"))
            a.expect_method(1, _spec.Basic.CancelOk)
        a.send_method(1, _spec.Queue.Declare(queue=unique, passive=True))
        assert a.expect_method(1, _spec.Queue.DeclareOk).consumer_count == n - 3


def _sync(c: raw.RawClient, channel: int, queue: str) -> int:
    """A passive declare on ``channel``; skips every other frame (deliveries) fast; returns
    the consumer count."""
    c.send_method(channel, _spec.Queue.Declare(queue=queue, passive=True))
    deadline = time.monotonic() + 120
    while True:
        parsed, used = parse_frames(c.buf, 0)
        del c.buf[:used]
        for ftype, ch, payload in parsed:
            if ftype == raw.FRAME_METHOD and ch == channel:
                m = _spec.decode_method(bytes(payload))
                if isinstance(m, _spec.Queue.DeclareOk):
                    return m.consumer_count
        assert c._fill(deadline), "no declare-ok"


def test_consume_cost_is_flat_with_a_backlog_and_full_consumers(broker_factory, unique):
    """Prefetch 1 and a backlog: every consumer is full, so a new consume used to offer the
    head to each of them (one channel lock and credit check per consumer) before reaching
    the newcomer. It is offered to the newcomer alone now."""
    b = broker_factory("--workers", "2")
    pid = b.proc.pid
    with raw.connect(b.port) as a:
        a.open_channel()
        a.open_channel(2)
        a.send_method(1, _spec.Queue.Declare(queue=unique))
        a.expect_method(1, _spec.Queue.DeclareOk)
        a.send_method(1, _spec.Basic.Qos(prefetch_count=1))
        a.expect_method(1, _spec.Basic.QosOk)
        total = 4 * N + 2 * BATCH + 1000
        pub = raw.encode_frame(raw.FRAME_METHOD, 2, _spec.Basic.Publish(
            exchange="", routing_key=unique).encode())
        one = pub + b"".join(bytes(x) for x in raw.encode_content(2, 60, b"\x00\x00", b"",
                                                                   a.frame_max))
        for i in range(0, total, 5000):
            a.send(one * min(5000, total - i))
        n = 0

        def batch(k: int) -> float:
            nonlocal n
            t0 = _cpu(pid)
            a.send(b"".join(raw.encode_frame(raw.FRAME_METHOD, 1, _spec.Basic.Consume(
                queue=unique, consumer_tag=f"c{n + i}", no_wait=True).encode())
                for i in range(k)))
            assert _sync(a, 1, unique) == n + k
            n += k
            return _cpu(pid) - t0

        # the lower of two batches at each size: a full garbage collection (its cost grows
        # with the heap, once in a while) lands in one batch, not in both
        batch(N)
        cost_n = min(batch(BATCH), batch(BATCH))
        batch(4 * N - n)
        cost_4n = min(batch(BATCH), batch(BATCH))
        # scanning the full consumers costs ~4x here
        assert cost_4n < 1.8 * cost_n + 0.05, (cost_n, cost_4n)


def test_exclusive_consumer_refused_and_released(broker, unique):
    """The exclusive counter: an exclusive consumer refuses others until it is cancelled."""
    with raw.connect(broker.port) as a:
        a.open_channel()
        a.send_method(1, _spec.Queue.Declare(queue=unique))
        a.expect_method(1, _spec.Queue.DeclareOk)
        a.send_method(1, _spec.Basic.Consume(queue=unique, consumer_tag="x", exclusive=True))
        a.expect_method(1, _spec.Basic.ConsumeOk)
        a.send_method(1, _spec.Basic.Consume(queue=unique, consumer_tag="y"))
        close = a.expect_method(1, _spec.Channel.Close)
        assert close.reply_code == 403 and "in exclusive use" in close.reply_text
        a.send_method(1, _spec.Channel.CloseOk())
        a.open_channel(2)  # channel 1's close cancelled "x": the queue is free again
        a.send_method(2, _spec.Basic.Consume(queue=unique, consumer_tag="y", exclusive=True))
        a.expect_method(2, _spec.Basic.ConsumeOk)


class _C:
    __slots__ = ("priority", "exclusive", "name")

    def __init__(self, name: int, priority: int, exclusive: bool) -> None:
        self.name, self.priority, self.exclusive = name, priority, exclusive


class _RingMachine(RuleBasedStateMachine):
    """What both ring machines share: the ring, its model list (in delivery order) and the
    removal of a consumer from both."""

    def __init__(self, single_active: bool = False) -> None:
        super().__init__()
        self.ring = ConsumerRing(single_active=single_active)
        self.model: list[_C] = []
        self.next = 0

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove(self, data) -> None:
        c = data.draw(st.sampled_from(self.model))
        assert self.ring.remove(c)
        self.model.remove(c)
        assert not self.ring.remove(c)


@settings(max_examples=60, stateful_step_count=40, deadline=None)
class ConsumerRingMachine(_RingMachine):
    """ConsumerRing against a list kept in delivery order the slow way."""

    @rule(priority=st.sampled_from([0, 0, 0, 1, 5, -2]), exclusive=st.booleans())
    def add(self, priority: int, exclusive: bool) -> None:
        c = _C(self.next, priority, exclusive)
        self.next += 1
        self.ring.add(c)
        i = len(self.model)
        while i > 0 and self.model[i - 1].priority < priority:
            i -= 1
        self.model.insert(i, c)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def deliver_to(self, data) -> None:
        """The first consumer at or after a drawn position took a message: it rotates."""
        c = data.draw(st.sampled_from(self.model))
        self.ring.rotate(c)
        i = self.model.index(c)
        end = i + 1
        while end < len(self.model) and self.model[end].priority == c.priority:
            end += 1
        self.model.insert(end - 1, self.model.pop(i))

    @invariant()
    def same_order(self) -> None:
        self.ring._check()
        assert [c.name for c in self.ring] == [c.name for c in self.model]
        assert len(self.ring) == len(self.model)
        assert self.ring.n_exclusive == sum(c.exclusive for c in self.model)
        first = self.ring.first()
        assert (first is None) if not self.model else first is self.model[0]


TestConsumerRing = ConsumerRingMachine.TestCase


@settings(max_examples=40, stateful_step_count=30, deadline=None)
class SingleActiveRingMachine(_RingMachine):
    """With single active consumer: insertion order whatever the priorities, and ``sole``
    (what the batch dispatch serves) is always the first, the active one."""

    def __init__(self) -> None:
        super().__init__(single_active=True)

    @rule(priority=st.sampled_from([0, 1, 5]), exclusive=st.booleans())
    def add(self, priority: int, exclusive: bool) -> None:
        c = _C(self.next, priority, exclusive)
        self.next += 1
        self.ring.add(c)
        self.model.append(c)

    @rule()
    def clear(self) -> None:
        assert [c.name for c in self.ring.clear()] == [c.name for c in self.model]
        self.model.clear()

    @invariant()
    def sole_is_the_active_one(self) -> None:
        self.ring._check()
        assert [c.name for c in self.ring] == [c.name for c in self.model]
        assert self.ring.sole is (self.model[0] if self.model else None)


TestSingleActiveRing = SingleActiveRingMachine.TestCase
