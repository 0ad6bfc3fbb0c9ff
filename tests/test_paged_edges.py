"""Paged queues (``syncmq.queues.paged``) at their edges: a page file that cannot be
written (disk full, a short write) loses, duplicates or reorders nothing and never fails a
publish; a policy's TTL of 0 drops a new message even when its push filled a page batch;
the memory accounting counts the paged-in bodies kept outside the body store."""

from __future__ import annotations

import errno
import os

import pytest
from amqp_helpers import connection
from test_management import call
from test_paged_queues import PAGED, _bodies, _publish, paged_broker

from syncmq.broker.message import Message
from syncmq.broker.publish import publish
from syncmq.queues import paged
from syncmq.queues.paged import PAGE_BATCH


@pytest.fixture
def paged_queue(tmp_path):
    store, broker, q = paged_broker(tmp_path, "pq")
    vh = broker.vhosts["/"]

    def put(bodies):
        for body in bodies:
            publish(vh, vh.default_exchange, Message("", "pq", b"\x00\x00", body))

    put.broker = broker
    yield q, put
    q.mark_deleted()
    store.close()


def _take_all(q) -> list[bytes]:
    out = []
    while (got := q.get(True)) is not None:
        m = got[1]
        out.append(m.body if m.body is not None else m.load_body())
    return out


def test_a_disk_full_page_out_keeps_the_messages_in_memory(paged_queue, monkeypatch):
    q, put = paged_queue
    real = os.pwrite
    fail = True

    def pwrite(fd, data, offset):
        if fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(paged.os, "pwrite", pwrite)
    bodies = _bodies(3 * PAGE_BATCH, "f")
    put(bodies[:2 * PAGE_BATCH])  # (no publish fails)
    assert len(q.ready) == 2 * PAGE_BATCH and q.ready.paged_count == 0
    assert q.ready_bytes == sum(map(len, bodies[:2 * PAGE_BATCH]))
    fail = False  # space again: paging resumes
    put(bodies[2 * PAGE_BATCH:])
    assert q.ready.paged_count > 0
    q._check()
    assert _take_all(q) == bodies


def test_a_short_page_write_corrupts_nothing(paged_queue, monkeypatch):
    """Linux writes what fits and returns a short count before it reports ENOSPC."""
    q, put = paged_queue
    real = os.pwrite
    calls = []

    def pwrite(fd, data, offset):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".page"):
            return real(fd, data, offset)
        calls.append(len(data))
        if len(calls) == 2:
            return real(fd, bytes(data)[:len(data) // 3], offset)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(paged.os, "pwrite", pwrite)
    bodies = _bodies(6 * PAGE_BATCH, "s")
    put(bodies)
    assert len(calls) > 3
    q._check()
    assert _take_all(q) == bodies


def test_a_policy_ttl_of_0_drops_the_publish_that_filled_a_page_batch(broker_factory):
    """RabbitMQ drops a message no consumer takes at once under a TTL of 0, behind a backlog
    too: also when its push was the one that wrote the pending tail to a page file."""
    b = broker_factory(*PAGED)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("z")
        n = 64 + PAGE_BATCH - 1  # the window, and a pending batch short of one
        _publish(ch, "z", _bodies(n, "z"))
        status = call(b, "PUT", "/api/policies/%2F/zero", {
            "pattern": "^z$", "definition": {"message-ttl": 0}, "apply-to": "queues"})[0]
        assert status in (201, 204)
        for i in range(3):
            ch.basic_publish("", "z", b"late%d" % i)
            assert ch.queue_declare("z", passive=True).method.message_count == n


def test_memory_accounting_counts_paged_in_bodies_kept_outside_the_store(paged_queue):
    """A paged-in body stays on its message (up to ``loose_bytes`` a queue), outside the
    body store: the alarm's figure counts it (else each paged queue hides up to 4 MiB)."""
    from syncmq.memory import MESSAGE_OVERHEAD, queued_memory

    q, put = paged_queue
    put([b"%04d" % i + b"x" * 996 for i in range(3 * PAGE_BATCH)])
    for _ in range(6):  # below half the window: a page-in
        assert q.get(True) is not None
    assert q.ready.loose_held > 0
    store = q.store
    messages, size, _paged = queued_memory(put.broker)
    assert size == messages * MESSAGE_OVERHEAD + store.memory_bytes() + q.ready.loose_held


def test_a_page_in_that_stops_part_way_loses_and_reorders_nothing(paged_queue, monkeypatch):
    """``_adopt_run`` serving only part of a page-in's records (a journaled body the journal
    could not give back: a bug, logged) leaves the first one it did not serve, and the rest,
    first in the tail: the read position stops right after the last served record."""
    q, put = paged_queue
    bodies = _bodies(4 * PAGE_BATCH, "s")
    put(bodies)
    ready = q.ready
    assert ready.paged_count > PAGE_BATCH
    real = type(ready)._adopt_run
    cuts = [3, 0, 5]  # records served by the next page-ins (0: none)

    def adopt(self, pairs):
        if cuts:
            k = min(cuts.pop(0), len(pairs))
            return real(self, pairs[:k])
        return real(self, pairs)

    monkeypatch.setattr(type(ready), "_adopt_run", adopt)
    got = []
    while (g := q.get(True)) is not None:
        m = g[1]
        got.append(m.body if m.body is not None else m.load_body())
        q._check()
    assert not cuts
    assert got == bodies
