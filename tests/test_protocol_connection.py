"""Connection life cycle: handshake and tuning with real clients (pika Blocking and Select),
heartbeats both ways, the handshake timeout, clean close from either side, and SIGTERM.

Every wait is on an event (a socket read with a deadline, a broker log line, a process exit),
never a bare sleep; deadlines are generous so a loaded 2-core machine passes.
"""

from __future__ import annotations

import hashlib
import signal
import time

import pika
import pika.exceptions
import pytest
from amqp_raw import EOF, FRAME_HEARTBEAT, RawClient, connect

from syncmq.wire import _spec

C = _spec.Connection
Ch = _spec.Channel
B = _spec.Basic
Q = _spec.Queue


def params(port: int, **kw) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(host="127.0.0.1", port=port, connection_attempts=1,
                                     socket_timeout=10, **kw)


def wait_for_line(broker, *parts: str, timeout: float = 30.0) -> str:
    """Block until one log line contains every one of ``parts``."""
    with broker._cond:
        ok = broker._cond.wait_for(
            lambda: any(all(p in line for p in parts) for line in broker.lines), timeout)
        assert ok, f"no log line with {parts!r}; log:\n{broker.log_tail()}"
        return next(line for line in broker.lines if all(p in line for p in parts))


def peer_of(impl) -> str:
    host, port = impl._transport._sock.getsockname()[:2]
    return f'"peer": "{host}:{port}"'


# ---- pika BlockingConnection and SelectConnection ----


def test_blocking_connection_100_channels_and_clean_close(broker, unique):
    conn = pika.BlockingConnection(params(broker.port))
    peer = peer_of(conn._impl)
    p = conn._impl.params
    assert (p.frame_max, p.channel_max, p.heartbeat) == (131072, 2047, 60)  # server's offer
    channels = [conn.channel() for _ in range(100)]
    assert len({ch.channel_number for ch in channels}) == 100
    for ch in channels:
        assert ch.is_open
        ch.close()
    # the numbers are free again
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True)
    ch.basic_publish("", unique, b"hello")
    assert ch.basic_get(unique, auto_ack=True)[2] == b"hello"
    conn.close()
    assert conn.is_closed
    wait_for_line(broker, "connection closed by client", peer)


def test_select_connection_100_channels_and_clean_close(broker):
    state: dict = {"opened": 0, "closed": 0, "reason": None, "peer": None, "error": None}

    def on_open(conn):
        state["peer"] = peer_of(conn)
        state["params"] = conn.params
        for _ in range(100):
            conn.channel(on_open_callback=on_channel_open)

    def on_channel_open(ch):
        state["opened"] += 1
        ch.add_on_close_callback(on_channel_closed)
        if state["opened"] == 100:
            for c in list(conn._channels.values()):
                c.close()

    def on_channel_closed(ch, reason):
        state["closed"] += 1
        if not isinstance(reason, pika.exceptions.ChannelClosedByClient):
            state["error"] = reason
        if state["closed"] == 100:
            conn.close()

    def on_open_error(conn, err):
        state["error"] = err
        conn.ioloop.stop()

    def on_closed(conn, reason):
        state["reason"] = reason
        conn.ioloop.stop()

    conn = pika.SelectConnection(params(broker.port), on_open_callback=on_open,
                                 on_open_error_callback=on_open_error,
                                 on_close_callback=on_closed)
    conn.ioloop.call_later(30, conn.ioloop.stop)  # bound the test, never reached when it passes
    conn.ioloop.start()
    assert state["error"] is None, state["error"]
    assert (state["opened"], state["closed"]) == (100, 100)
    assert isinstance(state["reason"], pika.exceptions.ConnectionClosedByClient), state["reason"]
    assert state["params"].frame_max == 131072
    wait_for_line(broker, "connection closed by client", state["peer"])


def test_frame_max_8192_is_honoured_pika(broker, unique):
    conn = pika.BlockingConnection(params(broker.port, frame_max=8192))
    try:
        assert conn._impl.params.frame_max == 8192
        ch = conn.channel()
        ch.queue_declare(unique, auto_delete=True)
        body = bytes(range(256)) * 400  # 100 KiB
        ch.basic_publish("", unique, body)
        _m, _p, got = ch.basic_get(unique, auto_ack=True)
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        # and through a consumer (basic.deliver)
        ch.basic_publish("", unique, body)
        _m, _p, got = next(ch.consume(unique, auto_ack=True, inactivity_timeout=10))
        assert got == body
        ch.cancel()
    finally:
        conn.close()


def test_frame_max_8192_broker_never_sends_larger_frames(broker, unique):
    body = bytes(range(256)) * 400
    with connect(broker.port, frame_max=8192) as c:
        c.open_channel(1)
        c.send_method(1, Q.Declare(queue=unique, auto_delete=True))
        c.expect_method(1, Q.DeclareOk)
        c.publish(1, "", unique, body)  # the client splits at 8192 - 8 too
        c.send_method(1, B.Get(queue=unique, no_ack=True))
        c.expect_method(1, B.GetOk)
        header = c.read_frame()
        assert header.type == _spec.FRAME_HEADER
        parts = []
        while sum(map(len, parts)) < len(body):
            f = c.read_frame()
            assert f.type == _spec.FRAME_BODY and len(f.payload) + 8 <= 8192
            parts.append(f.payload)
        assert b"".join(parts) == body


def test_client_close_gets_close_ok(broker):
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(0, C.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        c.expect_method(0, C.CloseOk)
        c.expect_eof()


def test_server_close_waits_for_close_ok(broker):
    """After a 503 the broker sends connection.close and keeps the socket until close-ok.

    A second connection in the same state never answers: the broker drops it only after
    CLOSE_OK_TIMEOUT. The EOF of the one that answered must come first (an order of events on
    the broker's own clock, not a wall-clock limit)."""
    with connect(broker.port) as c, connect(broker.port) as control:
        for x in (c, control):
            x.open_channel(1)
            x.send_method(1, C.Open(virtual_host="/"))
            assert x.expect_close() == (503, 10, 40)
        assert c.still_open(0.3)  # no EOF, nothing else sent, while we hold back close-ok
        c.send_close_ok()
        c.expect_eof(timeout=15.0)
        assert control.still_open(0.0), "the close-ok did not end the connection"
        control.expect_eof(timeout=15.0)  # dropped without close-ok, later


def test_server_close_without_close_ok_is_dropped(broker):
    """A client that never answers close-ok does not keep the connection forever."""
    with connect(broker.port) as c:
        c.send_method(0, Q.Declare(queue="x"))
        assert c.expect_close() == (504, 50, 10)
        c.expect_eof(timeout=15.0)


# ---- heartbeats and the handshake timeout ----


def test_silent_client_is_disconnected_after_two_heartbeats(broker_factory):
    """The broker sends a heartbeat every half interval while idle and drops a silent peer
    after two intervals: the heartbeats received before the EOF count its patience in its
    own clock (at most 4 sent before the 2 s are up; a broker waiting 10 intervals sends ~20).
    A loaded machine only delays the broker's ticks, which lowers the count."""
    b = broker_factory("--heartbeat", "1")
    with connect(b.port, heartbeat=1) as c:  # heartbeat=1 in tune-ok, then we go silent
        assert c.tune.heartbeat == 1
        t0 = time.monotonic()
        frames = c.expect_eof(timeout=30.0)
        elapsed = time.monotonic() - t0
        beats = sum(f.type == FRAME_HEARTBEAT for f in frames)
        assert 1 <= beats <= 5, frames  # the broker's own; not an 11th-interval close
        assert elapsed >= 1.5, elapsed  # about two intervals, not at the first
        peer = c.sock.getsockname()
    wait_for_line(b, "missed heartbeats", f"{peer[0]}:{peer[1]}")


def test_client_sending_heartbeats_stays_connected(broker_factory):
    b = broker_factory("--heartbeat", "1")
    with connect(b.port, heartbeat=1) as c:
        c.open_channel(1)
        deadline = time.monotonic() + 4.5
        seen = 0
        while time.monotonic() < deadline:
            try:
                f = c.read_frame(timeout=0.4)
                seen += f.type == FRAME_HEARTBEAT
            except TimeoutError:
                pass
            c.send_frame(FRAME_HEARTBEAT, 0, b"")
        assert seen >= 2
        c.send_method(1, Q.Declare(queue="", exclusive=True))
        c.expect_method(1, Q.DeclareOk)


def test_pika_heartbeat_1_stays_connected_past_4_seconds(broker_factory, unique):
    b = broker_factory("--heartbeat", "1")
    conn = pika.BlockingConnection(params(b.port, heartbeat=1))
    try:
        assert conn._impl.params.heartbeat == 1
        peer = peer_of(conn._impl)
        ch = conn.channel()
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.25)
        assert conn.is_open
        ch.queue_declare(unique, auto_delete=True)
        ch.basic_publish("", unique, b"x")
        assert ch.basic_get(unique, auto_ack=True)[2] == b"x"
    finally:
        conn.close()
    assert not any("missed heartbeats" in line and peer.split('"')[-2] in line
                   for line in b.lines)


@pytest.mark.parametrize("send_header", [False, True])
def test_handshake_timeout(broker_factory, send_header):
    b = broker_factory("--handshake-timeout", "2")
    with RawClient(b.port) as c:
        t0 = time.monotonic()
        if send_header:
            c.send_header()
            c.expect_method(0, C.Start)  # ... and never a start-ok
        c.expect_eof(timeout=15.0)
        assert time.monotonic() - t0 >= 1.5
    b.wait_for_log("handshake not completed")
    # a client that completes the handshake in time is not affected
    with connect(b.port) as c:
        c.open_channel(1)
        assert c.still_open(0.1)


def test_handshake_timeout_does_not_hit_open_connections(broker_factory):
    b = broker_factory("--handshake-timeout", "1")
    with connect(b.port) as c:
        c.open_channel(1)
        with RawClient(b.port) as idle:
            idle.expect_eof(timeout=15.0)  # the idle one is gone after the timeout ...
        c.send_method(1, Q.Declare(queue="", exclusive=True))  # ... this one is still open
        c.expect_method(1, Q.DeclareOk)


# ---- shutdown ----


def test_sigterm_closes_clients_with_320_and_exits_0(broker_factory, unique):
    b = broker_factory()
    conns = [pika.BlockingConnection(params(b.port)) for _ in range(3)]
    for i, conn in enumerate(conns):
        ch = conn.channel()
        ch.queue_declare(f"{unique}-{i}", auto_delete=True)
    raw = connect(b.port)
    raw.open_channel(1)
    b.proc.send_signal(signal.SIGTERM)
    assert raw.expect_close(timeout=15.0) == (320, 0, 0)
    assert raw.last_close.reply_text.startswith("CONNECTION_FORCED")
    raw.send_close_ok()
    raw.expect_eof()
    raw.close()
    for conn in conns:
        deadline = time.monotonic() + 15.0
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.2)
        assert info.value.reply_code == 320
        assert "CONNECTION_FORCED" in info.value.reply_text
    assert b.proc.wait(timeout=30) == 0
    assert not b.tracebacks()


def test_eof_is_seen_by_raw_client(broker):
    """The raw client's EOF detection itself (used by every test above)."""
    with RawClient(broker.port) as c:
        c.send(b"XXXXXXXX")
        c.read_octets(8)
        with pytest.raises(EOF):
            c.read_frame(timeout=10)
