"""After an unclean stop every recovered message is redelivered=true (issue #25).

The rule (docs/architecture.md, journal/recovery.py): a journal closed cleanly writes a CLEAN
marker after its last fsync; recovery takes it away. Without it (kill -9, a crash, a power
loss) a message may have been delivered although its DELIVERED record never reached the disk,
so every recovered message is flagged, as RabbitMQ does after an unclean stop.
"""

from __future__ import annotations

import os

import pika
from amqp_helpers import connect
from brokerproc import BrokerProcess
from journal_helpers import barrier, open_journal

from syncmq.journal import format as fmt
from syncmq.journal.recovery import CLEAN_MARKER

CYCLES = 4


def test_journal_reports_clean_only_after_a_clean_close(tmp_path) -> None:
    j, rec = open_journal(tmp_path)
    assert not rec.clean  # a new directory: nothing says the last run ended well
    j.append(fmt.encode_queue_declare("/", "q", 1))
    j.append(fmt.encode_publish(1, "/", ["q"], "", "q", b"", b"m"))
    barrier(j)
    j.close()
    assert os.path.exists(tmp_path / CLEAN_MARKER)
    j, rec = open_journal(tmp_path)
    assert rec.clean and not os.path.exists(tmp_path / CLEAN_MARKER)  # taken at once
    assert [m.delivered for m in rec.queue("/", "q").messages] == [False]
    # a run that never closes (killed): the next recovery sees an unclean stop
    j._finish()  # the fd goes, as with a kill; no close(), no marker
    os.close(j._lock_fd)
    j2, rec2 = open_journal(tmp_path)
    assert not rec2.clean
    j2.close()


def test_messages_held_by_consumers_come_back_redelivered_after_kill_9(tmp_path) -> None:
    b = BrokerProcess(str(tmp_path / "data"))
    for cycle in range(CYCLES):
        b.start()
        conn = connect(b.port)
        ch = conn.channel()
        ch.queue_declare("held", durable=True)
        ch.confirm_delivery()
        for i in range(200):
            ch.basic_publish("", "held", b"%d-%d" % (cycle, i),
                             pika.BasicProperties(delivery_mode=2))
        # a consumer holds a prefetch's worth, unacked; kill -9 as soon as they are here
        cch = connect(b.port).channel()
        cch.basic_qos(prefetch_count=20 + 30 * cycle)
        got = 0
        for _m, _p, _body in cch.consume("held", inactivity_timeout=30):
            got += 1
            if got == 20:
                break
        b.kill()
        b.start()
        conn = connect(b.port)
        ch = conn.channel()
        n = 0
        while True:
            m, _p, body = ch.basic_get("held", auto_ack=False)
            if m is None:
                break
            assert m.redelivered, f"cycle {cycle}: {body!r} recovered with redelivered=false"
            n += 1
        assert n >= 200  # nothing lost (earlier cycles' messages are still there too)
        # basic.get took them (unacked): a clean stop keeps them, flagged redelivered
        conn.close()
        assert b.stop() == 0
    # after a clean stop, messages never delivered since are not flagged
    b.start()
    ch = connect(b.port).channel()
    ch.queue_purge("held")
    ch.basic_publish("", "held", b"fresh", pika.BasicProperties(delivery_mode=2))
    ch.connection.close()
    assert b.stop() == 0
    b.start()
    ch = connect(b.port).channel()
    m, _p, body = ch.basic_get("held", auto_ack=True)
    assert body == b"fresh" and not m.redelivered
    ch.connection.close()
    assert b.stop() == 0


def test_redelivered_after_unclean_stop_survives_the_next_clean_stop(tmp_path) -> None:
    """A message flagged redelivered because the last stop was unclean (and so possibly
    delivered by the run that died) stays flagged after a later clean stop: the flag is made
    durable (DELIVERED records at recovery), not only held in memory, so neither a delivery
    in the run after the crash nor the crash itself is forgotten once CLEAN is written."""
    b = BrokerProcess(str(tmp_path / "data"))
    b.start()
    ch = connect(b.port).channel()
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "q", b"%d" % i, pika.BasicProperties(delivery_mode=2))
    b.kill()
    # the run after the crash: take one (redelivered, as the dead run may have sent it),
    # give it back by closing, then stop cleanly
    b.start()
    conn = connect(b.port)
    m, _p, body = conn.channel().basic_get("q", auto_ack=False)
    assert body == b"0" and m.redelivered
    conn.close()
    assert b.stop() == 0
    b.start()
    ch = connect(b.port).channel()
    got = []
    while True:
        m, _p, body = ch.basic_get("q", auto_ack=True)
        if m is None:
            break
        got.append((body, m.redelivered))
    assert got == [(b"%d" % i, True) for i in range(5)]
    ch.connection.close()
    assert b.stop() == 0


def _drain_flags(port: int, queue: str) -> list[tuple[bytes, bool]]:
    """Every message of ``queue`` as ``(body, redelivered)``, taken with basic.get and acked."""
    conn = connect(port)
    ch = conn.channel()
    got = []
    while True:
        m, _p, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            break
        got.append((body, m.redelivered))
    conn.close()
    return got


def _publish(port: int, queue: str, bodies: list[bytes]) -> None:
    conn = connect(port)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    conn.close()


def test_redelivered_flags_across_two_kill_9_restarts_and_a_clean_one(tmp_path) -> None:
    """The redelivered flag after one and after two kill -9 restarts, then a clean one (issue
    #22: the flags of recovered messages are journaled as runs of ids, DELIVERED_RUNS). A
    backlog of a few chunks of ids on a paged queue (window 64, so most of it is recovered
    as id runs): after each unclean stop every message comes back redelivered; the flags
    journaled at each restart survive the next one and a clean stop; a message published
    after the last unclean restart and never delivered comes back redelivered=false after a
    clean stop, as before."""
    b = BrokerProcess(str(tmp_path / "data"), "--memory-budget", "1MiB",
                      "--queue-page-window", "64")
    first = [b"a%d" % i for i in range(2500)]
    second = [b"b%d" % i for i in range(700)]
    b.start()
    _publish(b.port, "q", first)
    b.kill()
    # restart 1 (unclean): the whole backlog is redelivered; look at it without taking it
    b.start()
    conn = connect(b.port)
    ch = conn.channel()
    seen = []
    for _ in range(100):
        m, _p, body = ch.basic_get("q", auto_ack=False)
        seen.append((body, m.redelivered))
    assert seen == [(x, True) for x in first[:100]]
    conn.close()  # the 100 go back, in order
    _publish(b.port, "q", second)  # never delivered before the next crash
    b.kill()
    # restart 2 (unclean again): everything redelivered, in publish order
    b.start()
    conn = connect(b.port)
    ch = conn.channel()
    ch.basic_publish("", "q", b"fresh", pika.BasicProperties(delivery_mode=2))
    conn.close()
    assert b.stop() == 0
    # restart 3 after a clean stop: the flags of both unclean restarts were journaled
    b.start()
    got = _drain_flags(b.port, "q")
    assert got == [(x, True) for x in first + second] + [(b"fresh", False)]
    assert b.stop() == 0
