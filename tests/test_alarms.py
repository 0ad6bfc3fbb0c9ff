"""Resource alarms: the memory high watermark blocks publishers with connection.blocked and
lets them go with connection.unblocked once memory is back under it."""

from __future__ import annotations

import time

import pika


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _wait(conn, cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        conn.process_data_events(time_limit=0.1)
    return True


def test_memory_alarm_blocks_and_unblocks_publishers(broker_factory):
    b = broker_factory("--memory-high-watermark", "160MiB")
    assert _rss(b.proc.pid) < 120 * 1024 * 1024, "idle broker already near the watermark"
    events: list[str] = []
    pub = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    pub.add_on_connection_blocked_callback(lambda _c, m: events.append(m.method.reason))
    pub.add_on_connection_unblocked_callback(lambda _c, _m: events.append("unblocked"))
    ch = pub.channel()
    ch.queue_declare("alarm-backlog")
    body = b"x" * (1024 * 1024)
    for _ in range(400):  # 1 MiB bodies until the broker says it is blocked
        ch.basic_publish("", "alarm-backlog", body)
        pub.process_data_events(time_limit=0)
        if events:
            break
    assert _wait(pub, lambda: bool(events), 30), "no connection.blocked"
    assert events[0] == "low on memory"
    b.wait_for_log("memory resource limit alarm")
    # a consumer on another connection is still served while publishers are blocked
    other = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    och = other.channel()
    method, _props, got = och.basic_get("alarm-backlog", auto_ack=True)
    assert got == body
    och.queue_purge("alarm-backlog")
    other.close()
    assert _wait(pub, lambda: "unblocked" in events, 30), "no connection.unblocked"
    b.wait_for_log("cleared")
    # and the publisher works again
    ch.queue_declare("alarm-after")
    ch.basic_publish("", "alarm-after", b"again")
    assert _wait(pub, lambda: ch.queue_declare("alarm-after", passive=True).method.message_count
                 == 1, 10)
    pub.close()


def test_disk_alarm_blocks_publishers_on_connect(broker_factory):
    b = broker_factory("--disk-free-limit", "1000000G")  # more than any disk here
    b.wait_for_log("disk resource limit alarm")
    events: list[str] = []
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    conn.add_on_connection_blocked_callback(lambda _c, m: events.append(m.method.reason))
    ch = conn.channel()
    ch.queue_declare("disk-alarm")  # consuming-side work is not blocked
    assert not events
    ch.basic_publish("", "disk-alarm", b"x")  # the first publish blocks the connection
    assert _wait(conn, lambda: bool(events), 15)
    assert events == ["low on disk"]
    # the message that was read is queued; the connection is not read any more
    other = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    assert other.channel().queue_declare("disk-alarm", passive=True).method.message_count == 1
    other.close()


def test_max_connections(broker_factory):
    b = broker_factory("--max-connections", "2")
    kept = [pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
            for _ in range(2)]
    try:
        import pytest

        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", b.port, connection_attempts=1))
        b.wait_for_log("limit of 2 connections")
    finally:
        kept[0].close()
    # a freed slot can be used again
    again = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    again.close()
    kept[1].close()
