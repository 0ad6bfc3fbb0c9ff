"""Live paging of persistent messages by reference (issue #22), with a real broker and pika.

A persistent message on a durable paged queue whose PUBLISH record is fsynced is paged out
by reference to the journal (its page record holds no body). A live publisher runs ahead of
group commit, so the newest messages of a page batch are usually not fsynced yet when the
batch is written: they wait in memory (``PagedReadyQueue._pend``) for their fsync instead of
being written whole, up to ``pend_max`` messages (then they are written whole: the journal is
far behind or failing). Shown here:

- a backlog published live (no confirms, chunk after chunk, a confirmed fence publish on
  another channel between chunks) leaves ~60 bytes a message in the page files instead of
  the bodies (~1 KiB), while it grows; bodies and order intact on drain; acks remove them;
  kill -9 with half of it drained and the restart keeps the unacked ones, in order;
- the same without confirms or fences: the paged queue asks the journal for the fsync;
- while the journal's fsync is held (the test-only fsync gate), nothing is paged by
  reference: the tail waits in memory up to ``pend_max`` messages and what goes past that
  is written with its body; released, every message drains in order.
"""

from __future__ import annotations

import os
import struct
import time

import pika
import pytest
from amqp_helpers import connection
from amqp_raw import connect
from brokerproc import BrokerProcess
from test_fsync_gate import Gate
from test_management import get

from syncmq.queues.paged import PAGE_BATCH
from syncmq.wire import _spec

WINDOW = 64
LIVE = ("--memory-budget", "8MiB", "--queue-page-window", str(WINDOW))
PERSISTENT = pika.BasicProperties(delivery_mode=2)
RAW_PERSISTENT = struct.pack(">HB", 0x1000, 2)  # flags: delivery-mode present; 2
PEND_MAX = max(WINDOW, 16 * PAGE_BATCH)  # PagedReadyQueue.pend_max
TIMEOUT = 60.0


def _bodies(n: int, tag: str) -> list[bytes]:
    return [f"{tag}{i:07d}.".encode() + bytes([65 + i % 26]) * 990 for i in range(n)]


def _spill_dir_bytes(b) -> int:
    """Bytes in ``<data>/spill``: spill files and page files (bodies written a second time)."""
    d = os.path.join(b.data_dir, "spill")
    return sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d))


def _page_files(b) -> list[str]:
    return [n for n in os.listdir(os.path.join(b.data_dir, "spill")) if n.endswith(".page")]


def _queue(b, name: str) -> dict:
    return get(b, f"/api/queues/%2F/{name}")


def _publish_live(b, conn, queue: str, bodies: list[bytes], chunk: int = 500) -> None:
    """Publish ``bodies`` persistent without confirms, ``chunk`` at a time; after each, a
    confirmed persistent publish on another channel of the same connection (its ack comes
    after the fsync of everything the connection sent before it): the journal is at most
    about a chunk behind, as behind a publisher with a confirm window. While the backlog
    grows, the spill directory holds far less than its bodies."""
    ch = conn.channel()
    fence = conn.channel()
    fence.queue_declare("fence", durable=True)
    fence.confirm_delivery()
    for i in range(0, len(bodies), chunk):
        for body in bodies[i:i + chunk]:
            ch.basic_publish("", queue, body, PERSISTENT)
        fence.basic_publish("", "fence", b"f", PERSISTENT)
        if i:
            assert _spill_dir_bytes(b) < 200 * (i + chunk), (i, _spill_dir_bytes(b))
    ch.close()
    fence.close()


def _drain(conn, queue: str, n: int, prefetch: int = 200) -> list[tuple[bytes, bool]]:
    """Consume ``n`` messages with acks: ``(body, redelivered)`` in arrival order."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got: list[tuple[bytes, bool]] = []

    def on_msg(_ch, method, _props, body):
        got.append((body, method.redelivered))
        _ch.basic_ack(method.delivery_tag)
        if len(got) == n:
            _ch.stop_consuming()

    tag = ch.basic_consume(queue, on_msg)
    conn.call_later(TIMEOUT, ch.stop_consuming)
    ch.start_consuming()
    ch.basic_cancel(tag)
    ch.close()
    return got


def test_a_live_persistent_backlog_pages_by_reference(brokers_on_dir):
    start, restart = brokers_on_dir
    b = start(*LIVE)
    n = 6000
    bodies = _bodies(n, "L")
    with connection(b.port) as conn:
        conn.channel().queue_declare("live", durable=True)
        _publish_live(b, conn, "live", bodies)
        q = _queue(b, "live")
        assert q["messages"] == n and q["messages_persistent"] == n, q
        # most of it paged out (the rest: the head and the newest, waiting for their fsync)
        assert q["messages_paged_out"] >= n - WINDOW - 2 * 500 - PAGE_BATCH, q
        # by reference: ~60 bytes a paged message, not its ~1 KiB body
        assert _spill_dir_bytes(b) < 100 * q["messages_paged_out"], _spill_dir_bytes(b)
        got = _drain(conn, "live", n // 2)
        assert [g[0] for g in got] == bodies[:n // 2]
    b.kill()
    b2 = restart(b, *LIVE)
    q = _queue(b2, "live")
    left = q["messages"]  # acks not yet durable at the kill may bring a few back
    assert n // 2 <= left <= n // 2 + 500, q
    with connection(b2.port) as conn:
        got = _drain(conn, "live", left)
        assert [g[0] for g in got] == bodies[n - left:]
    q = _queue(b2, "live")
    assert q["messages"] == 0 and q["messages_paged_out"] == 0, q
    assert not _page_files(b2)
    b2.stop()
    b3 = restart(b2, *LIVE)
    assert _queue(b3, "live")["messages"] == 0  # the acks were journaled


def test_a_publisher_without_confirms_pages_by_reference_too(broker_factory):
    """No confirm asks the journal for an fsync: the paged queue does, when its newest
    messages wait for theirs (``BodyStore.sync_journal``); otherwise they would be durable
    only at the segment's end (64 MiB) and be written whole past ``pend_max``."""
    b = broker_factory(*LIVE)
    n = 3 * PEND_MAX
    bodies = _bodies(n, "N")
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("noconfirm", durable=True)
        for body in bodies:
            ch.basic_publish("", "noconfirm", body, PERSISTENT)
        ch.basic_qos(prefetch_count=1)  # round trip: every publish is on the queue
        q = _queue(b, "noconfirm")
        assert q["messages"] == n and q["messages_paged_out"] >= n - WINDOW - PEND_MAX, q
        # by reference, most of it (a loaded machine may let the journal fall pend_max
        # behind now and then: those are written whole)
        assert _spill_dir_bytes(b) < 300 * q["messages_paged_out"], _spill_dir_bytes(b)
        got = _drain(conn, "noconfirm", n)
        assert [g[0] for g in got] == bodies
    assert not _page_files(b)


@pytest.fixture
def gated(tmp_path):
    gate = Gate(str(tmp_path / "fsync-gate"))
    env = dict(os.environ, SYNCMQ_TEST_FSYNC_GATE=gate.path)
    b = BrokerProcess(str(tmp_path / "data"), *LIVE, env=env).start()
    yield b, gate
    gate.release()  # never leave the broker's shutdown fsync blocked
    os.close(gate.fd)
    assert b.stop() == 0, b.log_tail()
    assert not b.tracebacks(), "\n".join(b.tracebacks())


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="the fsync gate needs flock")
def test_nothing_is_paged_by_reference_before_its_fsync(gated):
    b, gate = gated
    n = PEND_MAX + 2000
    bodies = _bodies(n, "G")
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("gated", durable=True)  # (answered after its fsync: before the hold)
        ch.queue_declare("fence", durable=True)
        gate.hold()
        for body in bodies:
            ch.basic_publish("", "gated", body, PERSISTENT)
        ch.basic_qos(prefetch_count=1)  # round trip: every publish is on the queue
        # a confirmed publish on another connection: the journal thread goes to the fsync
        # that would make every record durable, and waits at the gate
        fence = connect(b.port)
        fence.open_channel(1)
        fence.send_method(1, _spec.Confirm.Select())
        fence.expect_method(1, _spec.Confirm.SelectOk)
        fence.send_method(1, _spec.Basic.Publish(exchange="", routing_key="fence"))
        fence.send_content(1, b"fence", RAW_PERSISTENT)
        deadline = time.monotonic() + TIMEOUT
        while not gate.waiters():
            assert time.monotonic() < deadline, "the journal never reached an fsync"
            conn.sleep(0.01)
        q = _queue(b, "gated")
        assert q["messages"] == n, q
        paged = q["messages_paged_out"]
        # the tail waited in memory up to pend_max; past it, written whole (with its body)
        assert 0 < paged <= n - WINDOW, q
        assert q["messages_ready_ram"] <= WINDOW + PEND_MAX, q
        assert _spill_dir_bytes(b) >= 1000 * paged, (_spill_dir_bytes(b), paged)
        gate.release()
        fence.expect_method(1, _spec.Basic.Ack)
        fence.close()
        got = _drain(conn, "gated", n)
        assert [g[0] for g in got] == bodies
    assert not _page_files(b)
