"""A queue's ``message_bytes*``, ``messages_persistent`` and ``idle_since`` on /api/queues
(issue 17), with RabbitMQ's semantics: body bytes of the ready and unacknowledged messages,
all "ram", the persistent ones (delivery-mode 2 in a durable queue) among them; read off
counters the queue keeps, never off its messages (a listing's cost does not grow with the
messages queued)."""

from __future__ import annotations

import re

import pika
from amqp_helpers import connect
from test_management import get

from syncmq.broker.broker import Broker
from syncmq.broker.message import Message
from syncmq.management.idle import IdleSince
from syncmq.management.view import queue_bytes

PERSISTENT = pika.BasicProperties(delivery_mode=2)
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def fields(b, name):
    q = get(b, f"/api/queues/%2F/{name}")
    return {k: q[k] for k in ("message_bytes", "message_bytes_ready",
                              "message_bytes_unacknowledged", "message_bytes_ram",
                              "message_bytes_persistent", "messages_persistent")}


def want(ready, unacked, persistent, n_persistent):
    return {"message_bytes": ready + unacked, "message_bytes_ready": ready,
            "message_bytes_unacknowledged": unacked, "message_bytes_ram": ready + unacked,
            "message_bytes_persistent": persistent, "messages_persistent": n_persistent}


def test_bytes_through_a_queues_life(broker, unique):
    with connect(broker.port) as c:
        ch = c.channel()
        ch.queue_declare(unique, durable=True)
        ch.confirm_delivery()
        ch.basic_publish("", unique, b"p" * 100, PERSISTENT)
        ch.basic_publish("", unique, b"t" * 10)
        ch.basic_publish("", unique, b"P" * 1000, PERSISTENT)
        assert fields(broker, unique) == want(1110, 0, 1100, 2)
        method, _, body = ch.basic_get(unique)  # the 100-byte one, unacked
        assert body == b"p" * 100
        assert fields(broker, unique) == want(1010, 100, 1100, 2)
        ch.basic_nack(method.delivery_tag, requeue=True)  # back to ready
        ch.queue_declare(unique, passive=True)  # its reply: the nack was handled before
        assert fields(broker, unique) == want(1110, 0, 1100, 2)
        m1, _, _ = ch.basic_get(unique)
        ch.basic_get(unique, auto_ack=True)  # the transient one, gone at once
        assert fields(broker, unique) == want(1000, 100, 1100, 2)
        ch.basic_ack(m1.delivery_tag)
        ch.queue_declare(unique, passive=True)  # its reply: the ack was handled before
        assert fields(broker, unique) == want(1000, 0, 1000, 1)
        ch.queue_purge(unique)
        assert fields(broker, unique) == want(0, 0, 0, 0)
        ch.queue_delete(unique)
    # a transient queue: nothing is persistent, whatever the delivery mode
    with connect(broker.port) as c:
        ch = c.channel()
        ch.queue_declare(unique + "-t", exclusive=True)
        ch.basic_publish("", unique + "-t", b"x" * 7, PERSISTENT)
        ch.queue_declare(unique + "-t", passive=True)  # its reply: the publish was handled
        assert fields(broker, unique + "-t") == want(7, 0, 0, 0)


def test_idle_since(broker, unique):
    with connect(broker.port) as c:
        ch = c.channel()
        ch.queue_declare(unique, exclusive=True)
        first = get(broker, f"/api/queues/%2F/{unique}")["idle_since"]
        assert ISO.match(first), first
        assert get(broker, f"/api/queues/%2F/{unique}")["idle_since"] == first
        ch.basic_publish("", unique, b"x")
        ch.queue_declare(unique, passive=True)  # its reply: the publish was handled before
        assert "idle_since" not in get(broker, f"/api/queues/%2F/{unique}")  # busy
        again = get(broker, f"/api/queues/%2F/{unique}")["idle_since"]  # idle again
        assert again >= first


def test_idle_tracker_rules():
    clock = [1000.0]
    t = IdleSince(clock=lambda: clock[0])
    b = Broker()
    q, _ = b.vhosts["/"].declare_queue("q", False, False, False, False, None, None)
    assert t.since(q, (0, 0, 0, 0)) == "1970-01-01T00:16:40.000+00:00"
    clock[0] = 1001.5
    assert t.since(q, (0, 0, 0, 0)) == "1970-01-01T00:16:40.000+00:00"
    assert t.since(q, (1, 0, 0, 0)) is None
    clock[0] = 1003.25
    assert t.since(q, (1, 0, 0, 0)) == "1970-01-01T00:16:41.500+00:00"


class _NoScan:
    """A ready queue whose messages may not be looked at (only its length and its paged-out
    counters, ``queues.paged``)."""

    def __init__(self, inner):
        self.inner = inner
        self.paged_count = inner.paged_count
        self.paged_bytes = inner.paged_bytes

    def __len__(self):
        return len(self.inner)

    def __getattr__(self, name):
        raise AssertionError(f"the listing scanned the queue ({name})")


def test_the_figures_are_read_without_a_scan():
    """In-process: 4,000 messages queued, the ready structure replaced by one that fails on
    any look at its messages; the figures still come (from the counters)."""
    b = Broker()
    vh = b.vhosts["/"]
    q, _ = vh.declare_queue("q", False, False, False, False, None, None)
    for i in range(4000):
        q.publish(Message("", "q", b"", b"x" * (i % 7)))
    total = sum(i % 7 for i in range(4000))
    q._check()
    real, q.ready = q.ready, _NoScan(q.ready)
    try:
        assert queue_bytes(q)["message_bytes_ready"] == total
    finally:
        q.ready = real
