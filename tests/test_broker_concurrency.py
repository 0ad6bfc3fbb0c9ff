"""Many connections at once: 8 publishing and 8 consuming threads (each with its own pika
BlockingConnection) on shared queues. Every message must arrive exactly once (no-ack), or be
acked exactly once with none lost and none duplicated (manual ack, with requeues and a consumer
that goes away holding unacked messages)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from amqp_helpers import connect, connection, message_count

PRODUCERS = 8
CONSUMERS = 8
PER_PRODUCER = 2000
QUEUES = 2
TOTAL = PRODUCERS * PER_PRODUCER
DEADLINE = 90.0


def _body(p: int, i: int) -> bytes:
    return f"{p}:{i}".encode()


def _parse(b: bytes) -> tuple[int, int]:
    p, i = b.split(b":")
    return int(p), int(i)


class Harness:
    def __init__(self, port: int, queues: list[str]) -> None:
        self.port = port
        self.queues = queues
        self.stop = threading.Event()
        self.cond = threading.Condition()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def spawn(self, fn, *args) -> None:
        def run():
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)
                with self.cond:
                    self.cond.notify_all()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def producer(self, p: int) -> None:
        q = self.queues[p % len(self.queues)]
        with connection(self.port) as conn:
            ch = conn.channel()
            for i in range(PER_PRODUCER):
                ch.basic_publish("", q, _body(p, i))
            message_count(ch, q)  # a round trip: every publish was routed

    def wait_for(self, pred, what: str) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: self.errors or pred(), DEADLINE)
        assert not self.errors, self.errors
        assert ok, f"timed out waiting for {what}"

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(DEADLINE)
            assert not t.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def queues(broker, unique):
    names = [f"{unique}-{i}" for i in range(QUEUES)]
    with connection(broker.port) as conn:
        ch = conn.channel()
        for q in names:
            ch.queue_declare(q)
    yield names
    with connection(broker.port) as conn:
        ch = conn.channel()
        for q in names:
            ch.queue_delete(q)


def test_noack_every_message_delivered_exactly_once(broker, queues):
    h = Harness(broker.port, queues)
    received: list[list[bytes]] = [[] for _ in range(CONSUMERS)]
    ready = threading.Semaphore(0)
    total = [0]

    def consumer(c: int) -> None:
        q = queues[c % len(queues)]
        with connection(broker.port) as conn:
            ch = conn.channel()
            mine = received[c]

            def on_msg(_ch, _m, _p, body):
                mine.append(body)
                with h.cond:
                    total[0] += 1
                    if total[0] >= TOTAL:
                        h.cond.notify_all()

            ch.basic_consume(q, on_msg, auto_ack=True)
            ready.release()
            while not h.stop.is_set():
                conn.process_data_events(time_limit=0.05)

    for c in range(CONSUMERS):
        h.spawn(consumer, c)
    for _ in range(CONSUMERS):
        assert ready.acquire(timeout=DEADLINE)
    for p in range(PRODUCERS):
        h.spawn(h.producer, p)
    h.wait_for(lambda: total[0] >= TOTAL, f"{TOTAL} deliveries")  # bounded by DEADLINE
    h.finish()

    everything = Counter(b for mine in received for b in mine)
    expected = {_body(p, i) for p in range(PRODUCERS) for i in range(PER_PRODUCER)}
    assert set(everything) == expected
    assert max(everything.values()) == 1, [b for b, n in everything.items() if n > 1][:10]
    # every consumer got work, and FIFO order per producer holds for each consumer
    for mine in received:
        assert mine, "a consumer got nothing"
        last: dict[int, int] = {}
        for b in mine:
            p, i = _parse(b)
            assert i > last.get(p, -1), (p, i, last.get(p))
            last[p] = i
    with connection(broker.port) as conn:
        ch = conn.channel()
        assert [message_count(ch, q) for q in queues] == [0] * QUEUES


def test_manual_ack_each_message_acked_exactly_once(broker, queues):
    h = Harness(broker.port, queues)
    acked: Counter = Counter()
    deliveries = [0]
    redeliveries = [0]
    ready = threading.Semaphore(0)
    quitter_done = threading.Event()
    left_early = threading.Event()

    def consumer(c: int) -> None:
        q = queues[c % len(queues)]
        conn = connect(broker.port)
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=25)
            seen = [0]
            quitter = c == 0  # goes away holding unacked deliveries

            def on_msg(chan, m, _p, body):
                seen[0] += 1
                with h.cond:
                    deliveries[0] += 1
                    if m.redelivered:
                        redeliveries[0] += 1
                if quitter and seen[0] >= 300:
                    return  # keep it unacked; the connection closes below
                p, i = _parse(body)
                if not m.redelivered and (p + i) % 97 == 0:
                    chan.basic_reject(m.delivery_tag, requeue=True)
                    return
                chan.basic_ack(m.delivery_tag)
                with h.cond:
                    acked[body] += 1
                    if sum(acked.values()) >= TOTAL:
                        h.cond.notify_all()

            ch.basic_consume(q, on_msg, auto_ack=False)
            ready.release()
            while not h.stop.is_set():
                conn.process_data_events(time_limit=0.05)
                if quitter and seen[0] >= 300 + 10:
                    left_early.set()
                    break
        finally:
            conn.close()
            if c == 0:
                quitter_done.set()

    for c in range(CONSUMERS):
        h.spawn(consumer, c)
    for _ in range(CONSUMERS):
        assert ready.acquire(timeout=DEADLINE)
    for p in range(PRODUCERS):
        h.spawn(h.producer, p)
    h.wait_for(lambda: sum(acked.values()) >= TOTAL, f"{TOTAL} acks")
    h.finish()
    assert quitter_done.is_set()
    assert left_early.is_set()  # consumer 0 closed its connection holding unacked messages

    expected = {_body(p, i) for p in range(PRODUCERS) for i in range(PER_PRODUCER)}
    assert set(acked) == expected
    assert max(acked.values()) == 1, [b for b, n in acked.items() if n > 1][:10]
    assert redeliveries[0] > 0  # the rejects and the quitter's unacked came back
    # every connection is closed now: nothing was left unacked (it would be back in the queue)
    with connection(broker.port) as conn:
        ch = conn.channel()
        assert [message_count(ch, q) for q in queues] == [0] * QUEUES
