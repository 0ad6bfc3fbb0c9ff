"""Paged queues (``--queue-page-window``, ``syncmq.queues.paged``) with a real broker and pika:
a window of 64 messages, so a few thousand messages put most of a queue in its page files.
Order (with requeues to their original position), basic.get, TTL expiry with
dead-lettering, max-length drop-head, purge, deletion and recovery after kill -9 behave as
without paging; the page files go away as the queue drains. And in-process, the traced heap
of a paged backlog does not grow with its length (N against 4N)."""

from __future__ import annotations

import os
import tempfile
import time
import tracemalloc

import pika
import pytest
from amqp_helpers import connection
from brokerproc import fd_targets
from test_management import get

from syncmq.broker.message import Message
from syncmq.broker.queue import Queue
from syncmq.queues.paged import PAGE_BATCH, PagedReadyQueue
from syncmq.queues.ready import ReadyQueue
from syncmq.queues.spill import BodyStore

PAGED = ("--memory-budget", "256KiB", "--queue-page-window", "64")
PERSISTENT = pika.BasicProperties(delivery_mode=2)
TIMEOUT = 30.0


def paged_broker(tmp_path, name: str) -> tuple[BodyStore, object, Queue]:
    """An in-process broker with a 64 KiB body store paging past a window of 8, and its
    queue ``name`` on the default vhost (the caller deletes it and closes the store)."""
    from syncmq.broker.broker import Broker

    store = BodyStore(str(tmp_path / "spill"), 64 * 1024)
    store.page_window = 8
    store.open()
    broker = Broker(body_store=store)
    q, _ = broker.vhosts["/"].declare_queue(name, False, False, False, False, None, None)
    return store, broker, q


def _bodies(n: int, tag: str = "m") -> list[bytes]:
    return [f"{tag}{i:06d}".encode() + b"." * (200 + 37 * i % 800) for i in range(n)]


def _page_files(b) -> list[str]:
    return [f for f in os.listdir(os.path.join(b.data_dir, "spill")) if f.endswith(".page")]


def _queue(b, name: str) -> dict:
    return get(b, f"/api/queues/%2F/{name}")


def _drain(conn, ch, queue: str, n: int, prefetch: int = 50) -> list[tuple[bytes, bool]]:
    """Consume ``n`` messages with acks: ``(body, redelivered)`` in arrival order."""
    got: list[tuple[bytes, bool]] = []
    ch.basic_qos(prefetch_count=prefetch)

    def on_msg(_ch, method, _props, body):
        got.append((body, method.redelivered))
        _ch.basic_ack(method.delivery_tag)
        if len(got) == n:
            _ch.stop_consuming()

    tag = ch.basic_consume(queue, on_msg)
    conn.call_later(TIMEOUT, ch.stop_consuming)
    ch.start_consuming()
    ch.basic_cancel(tag)
    return got


def _publish(ch, queue: str, bodies: list[bytes], props=None) -> None:
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", queue, body, props)


def test_order_requeue_get_and_counters_with_a_paged_tail(broker_factory):
    b = broker_factory(*PAGED)
    bodies = _bodies(3000)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("pq")
        _publish(ch, "pq", bodies)
        q = _queue(b, "pq")
        assert q["messages"] == 3000 and q["messages_ready_ram"] <= 64 + 256, q
        assert q["messages_paged_out"] == 3000 - q["messages_ready_ram"]
        assert q["message_bytes"] == sum(map(len, bodies))
        assert 0 < q["message_bytes_paged_out"] < q["message_bytes"]
        assert _page_files(b)
        # a consumer takes 500 without acking (paging in as it goes), then goes away:
        # they come back at their original positions, flagged redelivered
        with connection(b.port) as c2:
            ch2 = c2.channel()
            ch2.basic_qos(prefetch_count=500)
            taken = []
            for _method, _props, body in ch2.consume("pq"):
                taken.append(body)
                if len(taken) == 500:
                    break
            assert taken == bodies[:500]
        method, _props, body = ch.basic_get("pq", auto_ack=True)
        assert body == bodies[0] and method.redelivered
        got = _drain(conn, ch, "pq", 2999)
        assert [g[0] for g in got] == bodies[1:]
        assert all(r for _, r in got[:499]) and not any(r for _, r in got[499:])
        q = _queue(b, "pq")
        assert q["messages"] == 0 and q["messages_paged_out"] == 0 and q["message_bytes"] == 0
    assert not _page_files(b)


def test_ttl_expires_from_the_head_into_a_dead_letter_queue_in_order(broker_factory):
    b = broker_factory(*PAGED)
    bodies = _bodies(2000, "t")
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("dlq")
        ch.queue_declare("ttlq", arguments={"x-message-ttl": 300, "x-dead-letter-exchange": "",
                                            "x-dead-letter-routing-key": "dlq"})
        _publish(ch, "ttlq", bodies)
        deadline = time.monotonic() + TIMEOUT
        while ch.queue_declare("dlq", passive=True).method.message_count < len(bodies):
            assert time.monotonic() < deadline, _queue(b, "ttlq")
            conn.sleep(0.05)
        assert ch.queue_declare("ttlq", passive=True).method.message_count == 0
        got = _drain(conn, ch, "dlq", len(bodies))
        assert [g[0] for g in got] == bodies
    assert not _page_files(b)


def test_max_length_drop_head_keeps_the_newest_in_order(broker_factory):
    b = broker_factory(*PAGED)
    bodies = _bodies(3000, "L")
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("lim", arguments={"x-max-length": 1000})
        _publish(ch, "lim", bodies)
        q = _queue(b, "lim")
        assert q["messages"] == 1000 and q["messages_paged_out"] > 0, q
        assert q["message_bytes"] == sum(map(len, bodies[2000:]))
        got = _drain(conn, ch, "lim", 1000)
        assert [g[0] for g in got] == bodies[2000:]


def test_purge_and_delete_drop_paged_messages_and_their_files(brokers_on_dir):
    start, restart = brokers_on_dir
    b = start(*PAGED)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("pu", durable=True)
        ch.queue_declare("de", durable=True)
        _publish(ch, "pu", _bodies(2500, "p"), PERSISTENT)
        _publish(ch, "de", _bodies(2500, "d"))
        assert len(_page_files(b)) >= 2
        assert ch.queue_purge("pu").method.message_count == 2500
        q = _queue(b, "pu")
        assert q["messages"] == 0 and q["messages_persistent"] == 0
        assert q["message_bytes"] == 0 and q["message_bytes_persistent"] == 0, q
        ch.queue_delete("de")
        assert not _page_files(b)
    # the purge's acks are journaled: nothing comes back after a restart
    b.kill()
    b2 = restart(b, *PAGED)
    assert _queue(b2, "pu")["messages"] == 0


def test_kill_9_keeps_every_confirmed_message_and_recovers_into_pages(brokers_on_dir):
    start, restart = brokers_on_dir
    b = start(*PAGED)
    bodies = _bodies(3000, "k")
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("dur", durable=True)
        _publish(ch, "dur", bodies, PERSISTENT)  # every publish confirmed (fsynced)
        got = _drain(conn, ch, "dur", 100)
        assert [g[0] for g in got] == bodies[:100]
    b.kill()
    b2 = restart(b, *PAGED)
    q = _queue(b2, "dur")
    # acks not yet durable at the kill may bring some of the first 100 back
    n = q["messages"]
    assert 2900 <= n <= 3000, q
    assert q["messages_paged_out"] >= n - 64 - 256, q  # recovered into the page files
    assert q["messages_persistent"] == n
    with connection(b2.port) as conn:
        ch = conn.channel()
        got = _drain(conn, ch, "dur", n)
        assert [g[0] for g in got] == bodies[3000 - n:]
        assert all(r for _, r in got)  # an unclean stop flags every recovered message
    assert not _page_files(b2)


def _traced_heap_with_backlog(tmp: str, n: int, paged: bool) -> int:
    """Traced heap bytes held by a queue with ``n`` ready 100-byte messages (one store)."""
    store = BodyStore(tmp, 64 * 1024)
    store.open()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    q = Queue("/", "flat", False, None, False, {})
    q.store = store
    q.ready = PagedReadyQueue(Message, store, tmp, 64) if paged else ReadyQueue()
    for i in range(n):
        m = Message("", "flat", b"\x00\x00", b"%08d" % i + b"x" * 92)
        store.put(m, 1)
        q.publish(m)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(q.ready) == n
    q.mark_deleted()
    store.close()
    return used


def test_a_paged_backlog_holds_no_memory_per_message():
    """Flat: the heap a paged queue holds at 4N messages is not above the heap at N plus a
    margin (unpaged, it grows about 4x: the comparison is there to show the test sees it)."""
    n = 20 * PAGE_BATCH  # (beyond the window of 64: whole page batches, none half full)
    with tempfile.TemporaryDirectory() as tmp:
        paged_n = _traced_heap_with_backlog(tmp, 64 + n, True)
        paged_4n = _traced_heap_with_backlog(tmp, 64 + 4 * n, True)
        plain_n = _traced_heap_with_backlog(tmp, n, False)
        plain_4n = _traced_heap_with_backlog(tmp, 4 * n, False)
    assert plain_4n > 3 * plain_n, (plain_n, plain_4n)  # the measure sees per-message costs
    assert paged_4n < 1.25 * paged_n, (paged_n, paged_4n)


def test_memory_accounting_counts_only_the_resident_messages(tmp_path):
    """``syncmq.memory.queued_memory`` (the alarm's figure) counts the messages a paged
    queue holds in memory, not those in its page files."""
    from syncmq.broker.publish import publish
    from syncmq.memory import MESSAGE_OVERHEAD, queued_memory

    store, broker, q = paged_broker(tmp_path, "acc")
    vh = broker.vhosts["/"]
    assert isinstance(q.ready, PagedReadyQueue)
    for i in range(1000):
        publish(vh, vh.default_exchange, Message("", "acc", b"\x00\x00", b"%04d" % i))
    assert len(q.ready) == 1000 and q.ready.paged_count >= 3 * PAGE_BATCH
    messages, size, _paged = queued_memory(broker)
    assert messages == q.ready.resident < 8 + PAGE_BATCH
    assert size == messages * MESSAGE_OVERHEAD + store.memory_bytes()
    q.mark_deleted()
    store.close()
    assert not [f for f in os.listdir(tmp_path / "spill") if f.endswith(".page")]


def test_persistent_messages_page_out_by_reference_to_the_journal(tmp_path):
    """A persistent message on a durable paged queue whose PUBLISH is fsynced is paged out
    by reference (its page record holds no body): the page files hold ~100 bytes a message,
    not the bodies; compaction moves the journal records meanwhile (the messages of another
    queue, purged, leave their segments mostly dead); every body comes back, in order, acked
    with the journal's records dying, and a restart finds nothing left."""
    from syncmq.broker.broker import Broker
    from syncmq.broker.durability import Durability
    from syncmq.broker.publish import publish
    from syncmq.journal import Journal

    def open_broker():
        journal = Journal(str(tmp_path / "j"), segment_bytes=256 * 1024, auto_compact=False)
        store = BodyStore(str(tmp_path / "spill"), 64 * 1024)
        store.page_window = 8
        store.attach_journal(journal.reader)
        broker = Broker(durability=Durability(journal), body_store=store)
        journal.open()
        store.open()
        broker.durability.recover_into(broker)
        journal.start()
        broker.durability.journal_started()
        return journal, store, broker

    journal, store, broker = open_broker()
    vh = broker.vhosts["/"]
    q, _ = vh.declare_queue("dur", False, True, False, False, None, None)
    junk, _ = vh.declare_queue("junk", False, True, False, False, None, None)
    from syncmq.wire import _spec

    props = _spec.BasicProperties(delivery_mode=2).encode()
    bodies = _bodies(3000, "r")
    for i, body in enumerate(bodies):
        publish(vh, vh.default_exchange, Message("", "junk", props, b"j" * 900))
        publish(vh, vh.default_exchange, Message("", "dur", props, body))
        if i % 100 == 99:  # fsynced now and then, so that most page-outs find them durable
            assert broker.durability.wait_durable() is None
    assert broker.durability.wait_durable() is None
    assert q.ready.paged_count > 2000
    # by reference: far less than the bodies' ~1.1 MB went to the page files
    assert q.ready.written_bytes < sum(map(len, bodies)) / 3, q.ready.written_bytes
    assert junk.ready.paged_count > 2000
    junk.purge()
    assert broker.durability.wait_durable() is None
    assert journal.compact(timeout=TIMEOUT) > 0
    assert journal.compaction_stats.segments_deleted > 0
    got = []
    while True:
        r = q.get(no_ack=False)
        if r is None:
            break
        seq, m, _redelivered, _left = r
        got.append(m.body if m.body is not None else m.load_body())
        q.settle([(seq, m)])
    assert got == bodies
    assert not q.ready.paged_count and not _page_files_in(tmp_path / "spill")
    assert broker.durability.wait_durable() is None
    assert len(journal._state.msgs) == 0
    journal.close()
    store.close()
    journal, store, broker = open_broker()
    assert len(broker.vhosts["/"].queues["dur"].ready) == 0
    journal.close()
    store.close()


def test_recovery_pages_a_backlog_straight_out_by_reference(tmp_path):
    """A restart recovers a persistent backlog past the window straight into the page files
    by reference (``restore_by_reference``): no store entry per message, no bodies in the
    page files; the queue drains every body in order, the last ones from the unwritten tail
    (3001 is not a multiple of the page batch), and its counters end at zero."""
    from syncmq.broker.broker import Broker
    from syncmq.broker.durability import Durability
    from syncmq.broker.publish import publish
    from syncmq.journal import Journal
    from syncmq.wire import _spec

    def open_broker():
        journal = Journal(str(tmp_path / "j"))
        store = BodyStore(str(tmp_path / "spill"), 64 * 1024)
        store.page_window = 8
        store.attach_journal(journal.reader)
        broker = Broker(durability=Durability(journal), body_store=store)
        journal.open()
        store.open()
        broker.durability.recover_into(broker)
        journal.start()
        broker.durability.journal_started()
        return journal, store, broker

    journal, store, broker = open_broker()
    vh = broker.vhosts["/"]
    vh.declare_queue("dur", False, True, False, False, None, None)
    props = _spec.BasicProperties(delivery_mode=2).encode()
    bodies = _bodies(3001, "b")
    for body in bodies:
        publish(vh, vh.default_exchange, Message("", "dur", props, body))
    assert broker.durability.wait_durable() is None
    journal.close()
    store.close()
    journal, store, broker = open_broker()
    q = broker.vhosts["/"].queues["dur"]
    assert len(q.ready) == 3001 and q.ready.paged_count >= 3001 - 8 - 256
    assert store.stats()["messages"] <= 8, store.stats()  # the head's only
    assert q.ready.written_bytes < 150 * 3001, q.ready.written_bytes  # no bodies
    assert q.ready_bytes == q.persistent_bytes == sum(map(len, bodies))
    got = []
    while (r := q.get(no_ack=False)) is not None:
        seq, m, redelivered, _left = r
        assert not redelivered  # a clean stop
        got.append(m.body if m.body is not None else m.load_body())
        q.settle([(seq, m)])
    assert got == bodies
    assert q.ready_bytes == q.persistent_bytes == q.persistent_count == 0
    assert store.stats()["messages"] == 0
    journal.close()
    store.close()


def _page_files_in(d) -> list[str]:
    return [f for f in os.listdir(d) if f.endswith(".page")]


@pytest.mark.parametrize("second_durable", [False, True])
def test_a_queue_pages_in_every_body_after_another_queue_acked_its_copies(tmp_path,
                                                                      second_durable):
    """Persistent messages routed to a durable queue and to a second paged queue, durable or
    not. Not durable: the journal record names the durable queue only and dies when that copy
    is acked, so the second copy must not be paged out by reference to it. Durable: both
    copies are paged out by reference, and the record stays live for the second. Either way,
    after the first queue is drained (acked) and the journal compacted, every body comes back
    from the second queue, in order."""
    from syncmq.broker.broker import Broker
    from syncmq.broker.durability import Durability
    from syncmq.broker.publish import publish
    from syncmq.journal import Journal
    from syncmq.wire import _spec

    journal = Journal(str(tmp_path / "j"), segment_bytes=256 * 1024, auto_compact=False)
    store = BodyStore(str(tmp_path / "spill"), 64 * 1024)
    store.page_window = 8
    store.attach_journal(journal.reader)
    broker = Broker(durability=Durability(journal), body_store=store)
    journal.open()
    store.open()
    broker.durability.recover_into(broker)
    journal.start()
    broker.durability.journal_started()
    vh = broker.vhosts["/"]
    dur, _ = vh.declare_queue("dur", False, True, False, False, None, None)
    tq, _ = vh.declare_queue("tq", False, second_durable, False, False, None, None)
    vh.declare_queue("junk", False, True, False, False, None, None)
    vh.bind("amq.fanout", dur, "", None)
    vh.bind("amq.fanout", tq, "", None)
    props = _spec.BasicProperties(delivery_mode=2).encode()
    bodies = _bodies(2000, "t")
    fanout = vh.get_exchange("amq.fanout")
    for i, body in enumerate(bodies):
        publish(vh, vh.default_exchange, Message("", "junk", props, b"j" * 900))
        publish(vh, fanout, Message("amq.fanout", "", props, body))
        if i % 100 == 99:  # fsynced now and then: page-outs find the records durable
            assert broker.durability.wait_durable() is None
    assert broker.durability.wait_durable() is None
    assert tq.ready.paged_count > 1500
    if second_durable:  # both copies named by the record: paged out by reference
        assert tq.ready.written_bytes < sum(map(len, bodies)) / 3, tq.ready.written_bytes
    while (r := dur.get(no_ack=False)) is not None:  # the durable copies: acked, records die
        dur.settle([(r[0], r[1])])
    assert broker.durability.wait_durable() is None
    journal.compact(timeout=TIMEOUT)
    got = []
    while (r := tq.get(no_ack=True)) is not None:
        m = r[1]
        got.append(m.body if m.body is not None else m.load_body())
    assert len(got) == len(bodies) and got == bodies
    journal.close()
    store.close()


def _data_fds(b) -> list[str]:
    """Those pointing into the data dir, or at a deleted file (sockets, pipes aside)."""
    return sorted(t for t in fd_targets(b.proc.pid)
                  if t.startswith(b.data_dir) or t.endswith(" (deleted)"))


def test_deleted_paged_queues_leave_no_fd_open(broker_factory):
    """A queue paged to several segments, then deleted, with the broker running: no fd of
    the broker is left on a deleted page or spill file, and N create/delete cycles of
    transient and persistent (paged by reference) backlogs, delivered in part, hold no more
    fds than one."""
    b = broker_factory(*PAGED)
    baseline: list[str] | None = None
    with connection(b.port) as conn:
        for cycle in range(3):
            for name, props in (("fd-t", None), ("fd-p", PERSISTENT)):
                ch = conn.channel()
                ch.queue_declare(name, durable=True)
                _publish(ch, name, _bodies(1500, name), props)
            assert len(_page_files(b)) >= 2
            got = ch.basic_get("fd-t")  # one delivered and unacked at deletion
            assert got[0] is not None
            for name in ("fd-t", "fd-p"):
                ch.queue_delete(name)
            assert not _page_files(b)
            fds = _data_fds(b)
            assert not [t for t in fds if t.endswith(" (deleted)")], fds
            if baseline is None:
                baseline = fds
            assert fds == baseline, (cycle, fds, baseline)


def _deleted_files_open() -> list[str]:
    """This process's fds on a deleted file."""
    return [t for t in fd_targets() if t.endswith(" (deleted)")]


def test_a_stopped_broker_leaves_no_page_file_open():
    """An in-process broker stopped with paged queues (transient and by reference) closes
    their page files: nothing of it stays open in the process, over N start/stop cycles."""
    import syncmq

    before = _deleted_files_open()
    for _ in range(3):
        server = syncmq.Server(memory_budget=256 * 1024, queue_page_window=64).start()
        try:
            with connection(server.port) as conn:
                for name, props in (("st-t", None), ("st-p", PERSISTENT)):
                    ch = conn.channel()
                    ch.queue_declare(name, durable=True)
                    _publish(ch, name, _bodies(1000, name), props)
                    assert ch.queue_declare(name, passive=True).method.message_count == 1000
        finally:
            server.stop()
        assert _deleted_files_open() == before


def test_recovery_after_an_unclean_stop_hands_the_tail_over_as_id_runs(tmp_path):
    """After an unclean stop a recovered backlog past the window becomes runs of journal
    ids on the paged tail (``Queue.restore_run``: no object, no page record per message),
    decoded from the journal at page-in: every message comes back once, in order, after
    the head's, redelivered, its body intact; messages published after the restart follow
    it; the bytes are counted as they are paged in and end at zero; a second unclean
    restart after half was acked brings back exactly the other half, and a purge acks the
    runs (nothing comes back after a third restart)."""
    from syncmq.broker.broker import Broker
    from syncmq.broker.durability import Durability
    from syncmq.broker.publish import publish
    from syncmq.journal import Journal
    from syncmq.journal.recovery import CLEAN_MARKER
    from syncmq.wire import _spec

    def open_broker():
        journal = Journal(str(tmp_path / "j"))
        store = BodyStore(str(tmp_path / "spill"), 64 * 1024)
        store.page_window = 8
        store.attach_journal(journal.reader)
        broker = Broker(durability=Durability(journal), body_store=store)
        journal.open()
        store.open()
        broker.durability.recover_into(broker)
        journal.start()
        broker.durability.journal_started()
        return journal, store, broker

    def crash(journal, store):
        journal.close()
        store.close()
        os.unlink(tmp_path / "j" / CLEAN_MARKER)  # as after kill -9

    def drain(q, n=None):
        got = []
        while (n is None or len(got) < n) and (r := q.get(no_ack=False)) is not None:
            seq, m, redelivered, _left = r
            got.append((m.body if m.body is not None else m.load_body(), redelivered))
            q.settle([(seq, m)])
        return got

    journal, store, broker = open_broker()
    vh = broker.vhosts["/"]
    vh.declare_queue("dur", False, True, False, False, None, None)
    props = _spec.BasicProperties(delivery_mode=2).encode()
    bodies = _bodies(3001, "r")
    for body in bodies:
        publish(vh, vh.default_exchange, Message("", "dur", props, body))
    assert broker.durability.wait_durable() is None
    crash(journal, store)

    journal, store, broker = open_broker()
    vh = broker.vhosts["/"]
    q = vh.queues["dur"]
    assert q.ready._run_n == 3001 - 8 and q.ready.written_bytes == 0  # runs, no page records
    assert len(q.ready) == q.persistent_count == 3001
    assert q.ready_bytes == sum(map(len, bodies[:8]))  # the runs' bytes: at page-in
    q._check([])
    later = _bodies(5, "later")
    for body in later:
        publish(vh, vh.default_exchange, Message("", "dur", props, body))
    assert broker.durability.wait_durable() is None
    got = drain(q, 1500)
    assert got == [(b, True) for b in bodies[:1500]]
    q._check([])
    crash(journal, store)

    journal, store, broker = open_broker()
    q = broker.vhosts["/"].queues["dur"]
    assert q.ready._run_n > 0
    q._check([])
    got = drain(q, 1000)
    q._check([])  # (seqs: none ready twice, the paged-in ones and the runs in order)
    got += drain(q)
    q.ready._check()
    assert [b for b, _ in got] == bodies[1500:] + later
    assert all(r for _, r in got)
    assert q.ready_bytes == q.persistent_bytes == q.persistent_count == 0
    assert store.stats()["messages"] == 0
    for body in bodies:
        publish(vh := broker.vhosts["/"], vh.default_exchange, Message("", "dur", props, body))
    assert broker.durability.wait_durable() is None
    crash(journal, store)

    journal, store, broker = open_broker()
    q = broker.vhosts["/"].queues["dur"]
    assert q.ready._run_n == 3001 - 8
    assert q.purge() == 3001
    assert q.ready_bytes == q.persistent_bytes == q.persistent_count == 0
    assert broker.durability.wait_durable() is None
    crash(journal, store)
    journal, store, broker = open_broker()
    assert len(broker.vhosts["/"].queues["dur"].ready) == 0
    journal.close()
    store.close()
