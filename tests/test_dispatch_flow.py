"""A publish checks a queue's flow limits (``behind``, "Flow control" in
docs/architecture.md) unless its dispatch left nothing ready: the batch dispatch says the
ready queue is empty only when it is, not when the channel took part of a batch (a global
prefetch) or the consumer's credit ran out.

Unit tests of ``Queue`` + ``Channel`` objects (no broker process, no sockets), as
tests/test_delivery_errors.py.
"""

from __future__ import annotations

import pytest
from fake_transport import FakeTransport

from syncmq.broker.broker import Broker
from syncmq.broker.message import Message
from syncmq.broker.queue import Consumer, Queue
from syncmq.methods.session import Channel, Session, Settings


def _consumer(global_prefetch: int, prefetch: int, n: int = 1) -> tuple[Channel, Queue]:
    session = Session(FakeTransport(), Broker(), Settings(), {})
    ch = Channel(session, 1)
    ch.global_prefetch = global_prefetch
    q = Queue("/", "q", False, None, False, None)
    q.flow_high = 2  # behind past 2 ready messages
    for i in range(n):  # (more than one: the dispatch's per-message path)
        assert q.add_consumer(Consumer(f"c{i}", q, ch, False, False, prefetch, None))
    return ch, q


def _publish(q: Queue, n: int) -> None:
    q.publish_many([Message("", "q", b"\x00\x00", b"m%d" % i) for i in range(n)])


@pytest.mark.parametrize("global_prefetch, prefetch, n", [(3, 0, 1), (0, 3, 1), (0, 1, 3)])
def test_a_publish_that_leaves_messages_ready_checks_the_flow_limit(global_prefetch, prefetch,
                                                                    n):
    """The channel takes 3 of a batch of 6 (global prefetch), or the consumers' credit runs
    out after 3: 3 stay ready, above ``flow_high``."""
    ch, q = _consumer(global_prefetch, prefetch, n)
    _publish(q, 6)
    assert ch.n_deliver == 3 and q.ready.count() == 3
    assert q.behind


def test_a_publish_whose_messages_all_went_out_is_not_behind():
    ch, q = _consumer(0, 10)
    _publish(q, 6)
    assert ch.n_deliver == 6 and q.ready.count() == 0
    assert not q.behind


def test_a_paged_queue_whose_page_in_stops_still_counts_for_the_flow_check(tmp_path,
                                                                         monkeypatch):
    """A paged queue whose page-in cannot bring messages back (the journal could not serve
    one: ``PagedReadyQueue._adopt_run`` takes none) comes back short from ``take`` with
    messages still queued: the dispatch must not call that empty, and the publish is behind
    (review of the batch dispatch's "left empty")."""
    from test_paged_queues import paged_broker

    from syncmq.broker.publish import publish
    from syncmq.queues.paged import PagedReadyQueue

    store, broker, q = paged_broker(tmp_path, "pq")
    try:
        vh = broker.vhosts["/"]
        for i in range(800):
            publish(vh, vh.default_exchange, Message("", "pq", b"\x00\x00", b"%04d" % i))
        assert isinstance(q.ready, PagedReadyQueue) and q.ready.paged_count
        monkeypatch.setattr(PagedReadyQueue, "_adopt_run", lambda self, pairs: 0)
        q.flow_high = 2
        ch = Channel(Session(FakeTransport(), broker, Settings(), {}), 1)
        assert q.add_consumer(Consumer("c", q, ch, False, False, 10, None))
        delivered = ch.n_deliver
        publish(vh, vh.default_exchange, Message("", "pq", b"\x00\x00", b"one more"))
        assert ch.n_deliver == delivered  # (nothing more could be paged in)
        assert q.ready.count() > q.flow_high
        assert q.behind
    finally:
        q.mark_deleted()
        store.close()
