"""Resource alarms: the memory high watermark blocks publishers with connection.blocked and
lets them go with connection.unblocked once memory is back under it."""

from __future__ import annotations

import select
import time

import amqp_raw
import pika

from syncmq.wire import _spec


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


def _method_of(frame):
    if frame.type != _spec.FRAME_METHOD:
        return None
    return _spec.decode_method(frame.payload)


def _next_method(client, cls, timeout: float):
    """Wait for a method of type ``cls`` from the broker (other frames are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        m = _method_of(client.read_frame(max(0.01, deadline - time.monotonic())))
        if isinstance(m, cls):
            return m


def test_memory_alarm_blocks_and_unblocks_publishers(broker_factory):
    """A raw publisher (its sends never block the test: it only writes when the socket is
    writable) floods 1 MiB messages until connection.blocked; a consumer on another connection
    is still served and purges; connection.unblocked follows and publishing works again."""
    b = broker_factory("--memory-high-watermark", "160MiB")
    assert _rss(b.proc.pid) < 120 * 1024 * 1024, "idle broker already near the watermark"
    admin = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    ach = admin.channel()
    ach.queue_declare("alarm-backlog")
    pub = amqp_raw.connect(b.port, capabilities={"connection.blocked": True})
    pub.open_channel(1)
    body = b"x" * (1024 * 1024)
    one = b"".join(
        [amqp_raw.encode_frame(_spec.FRAME_METHOD, 1, _spec.Basic.Publish(
            exchange="", routing_key="alarm-backlog").encode())]
        + [bytes(c) for c in amqp_raw.encode_content(1, 60, b"\x00\x00", body, pub.frame_max)])
    pending = memoryview(b"")
    blocked = None
    deadline = time.monotonic() + 60
    while blocked is None:  # at most ~400 MiB; the watermark is 160 MiB
        assert time.monotonic() < deadline, "no connection.blocked"
        if not pending:
            pending = memoryview(one)
        r, w, _ = select.select([pub.sock], [pub.sock], [], 0.5)
        if w:
            pending = pending[pub.sock.send(pending[:262144]):]
        if r:
            try:
                m = _method_of(pub.read_frame(0.01))
            except TimeoutError:
                continue
            if isinstance(m, _spec.Connection.Blocked):
                blocked = m
    assert blocked.reason == "low on memory"
    b.wait_for_log("memory resource limit alarm")
    # consumers are served while publishers are blocked
    method, _props, got = ach.basic_get("alarm-backlog", auto_ack=True)
    assert got == body
    ach.queue_purge("alarm-backlog")
    _next_method(pub, _spec.Connection.Unblocked, 30)
    b.wait_for_log("cleared")
    # the broker reads the publisher again: finish the cut message, then publish once more
    ach.queue_declare("alarm-after")
    pub.sock.settimeout(30)
    pub.sock.sendall(pending)
    pub.publish(1, "", "alarm-after", b"again")
    assert _wait(admin, lambda: ach.queue_declare("alarm-after", passive=True).method
                 .message_count == 1, 30)
    pub.close()
    admin.close()


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


def test_the_alarm_is_in_effect_when_its_log_line_is_written(tmp_path):
    """State first, then the log line: whoever reads the line (a test's wait_for_log, an
    operator) finds the broker already acting on it, for setting and for clearing."""
    import logging
    import types

    from syncmq.alarms import ResourceMonitor

    broker = types.SimpleNamespace(alarms=frozenset())
    seen: list[tuple[str, frozenset]] = []

    class Probe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.getMessage().split(" resource")[0], broker.alarms))

    mon = ResourceMonitor(broker, list, lambda *a: None, 0, 1 << 62, str(tmp_path))
    mon.sample_memory = lambda: (0, 0)  # (no memory watermark: the disk alarm only)
    logger = logging.getLogger("syncmq.alarms")
    probe, level = Probe(), logger.level
    logger.addHandler(probe)
    logger.setLevel(logging.INFO)
    try:
        assert mon.check() == {"disk"}
        mon.disk_free_limit = 1
        assert mon.check() == frozenset()
    finally:
        logger.removeHandler(probe)
        logger.setLevel(level)
    assert seen == [("disk", frozenset({"disk"})), ("disk", frozenset())]
