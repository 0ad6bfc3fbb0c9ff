"""Queue credit flow (issue #22, docs/architecture.md "Flow control"): a queue with consumers
whose backlog passes ``--queue-flow-high`` stops its publishers' connections from being read
until it is down to half of it; other connections are not affected, a connection that also
consumes with acks is never paused, the memory alarm keeps working on its own, and every
publish is still confirmed.

Bounds are compared with the threshold and the input a paused connection may still have in
flight (the reactor's FLOW_HIGH reads), never with time."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request

import amqp_raw
import pika
import pytest

from syncmq.broker.flow import OFF, FlowLimits
from syncmq.reactor.reading import FLOW_HIGH, RECV_SIZE
from syncmq.wire import _spec

HIGH = 200  # --queue-flow-high in these tests
BODY = b"x" * 8192
# What a connection may still publish once its queue is behind: the input it has already
# handed to its worker (FLOW_HIGH reads) and what the reactor reads before the pause takes
# effect, in messages of BODY's size (header and frames ~ 100 octets more).
SLACK = 2 * FLOW_HIGH * RECV_SIZE // (len(BODY) + 100)
BOUND = HIGH + SLACK


def _params(port: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", port, heartbeat=0,
                                     blocked_connection_timeout=None)


class SlowConsumer(threading.Thread):
    """Consumes ``queue`` on its own connection, acking each message after ``delay`` s (a
    slow consumer: the test wants one slower than the publisher, not a timing)."""

    def __init__(self, port: int, queue: str, delay: float = 0.002, prefetch: int = 20,
                 stuck: bool = False) -> None:
        super().__init__(daemon=True)
        self.port, self.queue, self.delay, self.prefetch = port, queue, delay, prefetch
        self.stuck = stuck  # never ack (a consumer that takes nothing more)
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.received = 0

    def run(self) -> None:
        conn = pika.BlockingConnection(_params(self.port))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=self.prefetch)

        def on(chx, method, props, body):
            self.received += 1
            if not self.stuck:
                time.sleep(self.delay)
                chx.basic_ack(method.delivery_tag)

        ch.basic_consume(self.queue, on)
        self.ready.set()
        try:
            while not self.stop.is_set():
                conn.process_data_events(time_limit=0.05)
            conn.close()
        except pika.exceptions.AMQPError:
            if not self.stop.is_set():
                raise  # (after stop: its queue may be deleted under it; that is the test's)


class Publisher(threading.Thread):
    """Publishes ``n`` messages of ``body`` to ``queue`` as fast as pika goes (no confirms)."""

    def __init__(self, port: int, queue: str, n: int, body: bytes = BODY) -> None:
        super().__init__(daemon=True)
        self.port, self.queue, self.n, self.body = port, queue, n, body
        self.sent = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            conn = pika.BlockingConnection(_params(self.port))
            ch = conn.channel()
            for _ in range(self.n):
                if self.stop.is_set():
                    break
                ch.basic_publish("", self.queue, self.body)
                self.sent += 1
            conn.close()
        except BaseException as e:  # reported by the test
            self.error = e


def _depth(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def _connection_states(b) -> list[str]:
    req = urllib.request.Request(f"http://127.0.0.1:{b.management_port}/api/connections")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return [c["state"] for c in json.load(r)]


def _run_against_slow_consumer(b, n: int, body: bytes = BODY,
                               delay: float = 0.002) -> tuple[int, bool]:
    """One fast publisher, one slow consumer on queue ``q``: the deepest the queue got
    while the publisher ran, and whether a connection was seen in state ``flow``."""
    mon = pika.BlockingConnection(_params(b.port))
    mch = mon.channel()
    mch.queue_declare("q")
    cons = SlowConsumer(b.port, "q", delay=delay)
    cons.start()
    assert cons.ready.wait(30)
    pub = Publisher(b.port, "q", n, body)
    pub.start()
    deepest, saw_flow = 0, False
    while pub.is_alive():
        deepest = max(deepest, _depth(mch, "q"))
        saw_flow = saw_flow or "flow" in _connection_states(b)
        pub.join(0.05)
    assert pub.error is None and pub.sent == n
    # the publisher can be done (its bytes in the socket) before the first sample: keep
    # sampling until the broker has every message (queued, or at most a prefetch unacked)
    deadline = time.monotonic() + 30
    while (depth := _depth(mch, "q")) + cons.received + cons.prefetch < n:
        deepest = max(deepest, depth)
        assert time.monotonic() < deadline, (depth, cons.received, n)
        time.sleep(0.02)
    deepest = max(deepest, depth)
    cons.stop.set()
    cons.join(10)
    mon.close()
    return deepest, saw_flow


def test_slow_consumer_bounds_the_backlog(broker_factory):
    """The publisher keeps trying, the queue's depth stays under the threshold plus what a
    paused connection has in flight, and /api/connections shows the publisher as ``flow``."""
    n = 4 * BOUND
    b = broker_factory("--queue-flow-high", str(HIGH))
    deepest, saw_flow = _run_against_slow_consumer(b, n)
    assert deepest <= BOUND, (deepest, BOUND)
    assert saw_flow


def test_without_flow_the_backlog_grows(broker_factory):
    """The same run with credit flow off: the queue goes well past that bound (so the bound
    above is the scheme's doing, not the consumer keeping up)."""
    n = 4 * BOUND
    b = broker_factory("--queue-flow-high", "0")
    deepest, saw_flow = _run_against_slow_consumer(b, n)
    assert deepest > 2 * BOUND, (deepest, BOUND)
    assert not saw_flow


def _paused_behind_stuck_consumer(b, queue: str, other: str, n: int, body: bytes):
    """Declares ``queue`` and ``other``, puts a consumer that takes nothing more on ``queue``
    and starts a publisher of ``n`` x ``body`` to it; returns once a connection is in state
    ``flow`` (the publisher alive and without error meanwhile): (mon, mch, cons, pub)."""
    mon = pika.BlockingConnection(_params(b.port))
    mch = mon.channel()
    mch.queue_declare(queue)
    mch.queue_declare(other)
    cons = SlowConsumer(b.port, queue, stuck=True, prefetch=1)
    cons.start()
    assert cons.ready.wait(30)
    pub = Publisher(b.port, queue, n, body)
    pub.start()
    deadline = time.monotonic() + 30
    while "flow" not in _connection_states(b):
        assert time.monotonic() < deadline, "the publisher was never paused"
        assert pub.error is None and pub.is_alive()
        time.sleep(0.02)
    return mon, mch, cons, pub


def _publish_confirmed(port: int, queue: str, n: int, prefix: bytes) -> None:
    """Publishes ``n`` messages to ``queue`` on a new connection, each one confirmed."""
    conn = pika.BlockingConnection(_params(port))
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", queue, prefix + b"%d" % i)
    conn.close()


def test_other_publishers_are_not_slowed(broker_factory):
    """While a publisher is throttled behind a stuck consumer, a second connection publishes
    N confirmed messages to another queue and gets every confirm."""
    b = broker_factory("--queue-flow-high", str(HIGH))
    # far more than it will get to send
    mon, mch, cons, pub = _paused_behind_stuck_consumer(b, "slow", "other", 100 * BOUND, BODY)
    n = 2000
    _publish_confirmed(b.port, "other", n, b"m")
    assert _depth(mch, "other") == n
    assert pub.is_alive() and pub.sent < 100 * BOUND  # still held back meanwhile
    # a stuck consumer is not waited for forever, but the backlog grows by bursts only
    assert _depth(mch, "slow") < 100 * BOUND
    pub.stop.set()
    cons.stop.set()
    mch.queue_delete("slow")  # (its consumers go: the publisher is read again)
    pub.join(30)
    assert not pub.is_alive()
    mon.close()
    cons.join(10)


def test_publish_and_consume_on_one_connection(broker_factory):
    """One connection publishes to a queue and consumes it with acks (prefetch 10, far below
    the backlog): it is never paused (its acks must be read), so it gets everything back."""
    b = broker_factory("--queue-flow-high", "50")
    conn = pika.BlockingConnection(_params(b.port))
    ch = conn.channel()
    ch.queue_declare("loop")
    ch.basic_qos(prefetch_count=10)
    got = []

    def on(chx, method, props, body):
        got.append(body)
        chx.basic_ack(method.delivery_tag)

    ch.basic_consume("loop", on)
    pch = conn.channel()
    n = 3000
    for i in range(n):
        pch.basic_publish("", "loop", b"%d" % i)
    deadline = time.monotonic() + 60
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n}"
        conn.process_data_events(time_limit=0.1)
    assert got == [b"%d" % i for i in range(n)]
    conn.close()


def test_consume_sent_after_a_throttled_burst(broker_factory):
    """A connection floods a queue another connection consumes without acking (so it is
    paused), and then consumes that queue itself with acks, in the same write: the
    basic.consume behind the burst is read (the pause is dropped once the connection has a
    manual-ack consumer) and the connection drains the queue."""
    b = broker_factory("--queue-flow-high", "50")
    other = pika.BlockingConnection(_params(b.port))
    och = other.channel()
    och.queue_declare("mixed")
    och.basic_qos(prefetch_count=1)
    och.basic_consume("mixed", lambda *a: None)  # holds one message, never acks
    c = amqp_raw.connect(b.port)
    c.open_channel(1)
    n = 2000
    burst = b"".join(
        [amqp_raw.encode_frame(_spec.FRAME_METHOD, 1, _spec.Basic.Publish(
            exchange="", routing_key="mixed").encode())]
        + [bytes(x) for x in amqp_raw.encode_content(1, 60, b"\x00\x00", b"y" * 1000,
                                                      c.frame_max)])
    sender = threading.Thread(target=c.send, args=(burst * n + amqp_raw.encode_frame(
        _spec.FRAME_METHOD, 1, _spec.Basic.Consume(queue="mixed", consumer_tag="me").encode()),),
        daemon=True)
    sender.start()
    c.expect_method(1, _spec.Basic.ConsumeOk, timeout=60)
    got = 0
    deadline = time.monotonic() + 60
    while got < n - 1:  # the other consumer holds one
        assert time.monotonic() < deadline, f"only {got}"
        f = c.read_frame(30)
        if f.type == _spec.FRAME_METHOD:
            m = _spec.decode_method(f.payload)
            if isinstance(m, _spec.Basic.Deliver):
                got += 1
                c.send_method(1, _spec.Basic.Ack(delivery_tag=m.delivery_tag))
    sender.join(10)
    c.close()
    other.close()


def test_confirms_arrive_for_every_publish(broker_factory):
    """A confirm-mode publisher throttled behind a slow consumer still gets one ack for every
    message it published (raw client: the whole flood is written at once, acks read after)."""
    b = broker_factory("--queue-flow-high", str(HIGH))
    mon = pika.BlockingConnection(_params(b.port))
    mon.channel().queue_declare("conf")
    cons = SlowConsumer(b.port, "conf", delay=0.0005)
    cons.start()
    assert cons.ready.wait(30)
    c = amqp_raw.connect(b.port)
    c.open_channel(1)
    c.send_method(1, _spec.Confirm.Select())
    c.expect_method(1, _spec.Confirm.SelectOk)
    n = 3 * BOUND
    one = b"".join(
        [amqp_raw.encode_frame(_spec.FRAME_METHOD, 1, _spec.Basic.Publish(
            exchange="", routing_key="conf").encode())]
        + [bytes(x) for x in amqp_raw.encode_content(1, 60, b"\x00\x00", BODY, c.frame_max)])
    sender = threading.Thread(target=c.send, args=(one * n,), daemon=True)
    sender.start()
    acked = 0
    deadline = time.monotonic() + 120
    while acked < n:
        assert time.monotonic() < deadline, f"confirmed {acked} of {n}"
        m = c.expect_method(1, _spec.Basic.Ack, timeout=60)
        acked = m.delivery_tag if m.multiple else acked + 1
    assert acked == n
    sender.join(10)
    cons.stop.set()
    cons.join(10)
    c.close()
    mon.close()


@pytest.mark.parametrize("flow", ["0", str(HIGH)])
def test_memory_alarm_still_blocks(broker_factory, flow):
    """The memory alarm pauses a publisher with its own reason, whether credit flow is on or
    off: a publisher to a queue without consumers (never behind) gets connection.blocked."""
    b = broker_factory("--queue-flow-high", flow, "--memory-high-watermark", "1MiB")
    b.wait_for_log("memory resource limit alarm")
    c = amqp_raw.connect(b.port, capabilities={"connection.blocked": True})
    c.open_channel(1)
    c.send_method(1, _spec.Queue.Declare(queue="alarm"))
    c.expect_method(1, _spec.Queue.DeclareOk)
    c.publish(1, "", "alarm", b"z" * 1000)
    m = c.expect_method(0, _spec.Connection.Blocked, timeout=30)
    assert m.reason == "low on memory"
    c.close()


def test_error_after_a_throttled_publish_still_reads_close_ok(broker_factory):
    """One write holds a publish to a queue that is behind (its consumer is slow but moving,
    so the wait would last) and a method its handler answers with a hard error (exchange.declare
    of an unknown type: 503): the broker sends connection.close, and reads our close-ok at once (a clean
    close), instead of pausing the closing connection for credit and dropping the socket
    later with the close-ok unread (a reset)."""
    b = broker_factory("--queue-flow-high", "10")
    mon = pika.BlockingConnection(_params(b.port))
    mch = mon.channel()
    mch.queue_declare("behind")
    for _ in range(600):  # backlog before any consumer (never behind without consumers)
        mch.basic_publish("", "behind", b"m")
    cons = SlowConsumer(b.port, "behind", delay=0.02, prefetch=1)
    cons.start()
    assert cons.ready.wait(30)
    c = amqp_raw.connect(b.port)
    c.open_channel(1)
    publish = b"".join(
        [amqp_raw.encode_frame(_spec.FRAME_METHOD, 1, _spec.Basic.Publish(
            exchange="", routing_key="behind").encode())]
        + [bytes(x) for x in amqp_raw.encode_content(1, 60, b"\x00\x00", b"p", c.frame_max)])
    bad = _spec.Exchange.Declare(exchange="x", type="no-such-type")
    c.send(publish + amqp_raw.encode_frame(_spec.FRAME_METHOD, 1, bad.encode()))
    code, _, _ = c.expect_close(timeout=30)
    assert code == _spec.COMMAND_INVALID
    c.send_close_ok()
    assert amqp_raw._readable(c.sock, 30)
    # a clean end of stream; a reset if the broker dropped the socket with our close-ok
    # still unread (its close-ok timeout, after it had paused the closing connection)
    assert c.sock.recv(1) == b""
    cons.stop.set()
    cons.join(10)
    mon.close()


# ---- the bytes threshold (--queue-flow-high-bytes): large messages, few of them

BIG = b"b" * 65536
HIGH_BYTES = 4 * 1024 * 1024  # --queue-flow-high-bytes in these tests: 64 messages of BIG
# the message count threshold stays at its default (20,000): never reached here
BIG_BOUND = (HIGH_BYTES + 2 * FLOW_HIGH * RECV_SIZE) // len(BIG) + 1  # + in-flight input


@pytest.mark.parametrize("high_bytes,count", [(str(HIGH_BYTES), "20000"), (str(HIGH_BYTES), "0"),
                                              ("0", "20000")])
def test_large_messages_pause_their_publisher_by_bytes(broker_factory, high_bytes, count):
    """Large messages to a queue with a slow consumer: with the bytes threshold the queue's
    depth stays under it plus a paused connection's in-flight input, the publisher shows as
    ``flow`` and resumes (it sends everything); without it (only the message count, far off)
    the backlog grows past that bound (the consumer takes 100 a second at most) and no
    connection is ever in flow. The bytes threshold works alone too (``--queue-flow-high 0``)."""
    b = broker_factory("--queue-flow-high-bytes", high_bytes, "--queue-flow-high", count)
    n = 3 * BIG_BOUND
    deepest, saw_flow = _run_against_slow_consumer(b, n, BIG, delay=0.01)
    if high_bytes == "0":
        assert deepest > BIG_BOUND and not saw_flow, (deepest, BIG_BOUND)
    else:
        assert deepest <= BIG_BOUND and saw_flow, (deepest, BIG_BOUND)
    assert "flow" not in _connection_states(b)


def test_bytes_pause_leaves_other_publishers_alone_and_resumes(broker_factory):
    """A publisher of large messages behind a consumer that takes nothing more is in state
    ``flow`` (by bytes: far fewer messages than --queue-flow-high); meanwhile another
    connection publishes confirmed messages to another queue and gets every confirm. Once a
    consumer drains the queue, the publisher is read again and sends all of its messages."""
    b = broker_factory("--queue-flow-high-bytes", str(HIGH_BYTES))
    n = 8 * BIG_BOUND
    mon, mch, cons, pub = _paused_behind_stuck_consumer(b, "big", "small", n, BIG)
    assert _depth(mch, "big") < 20000
    _publish_confirmed(b.port, "small", 500, b"s")
    assert _depth(mch, "small") == 500
    assert pub.is_alive() and pub.sent < n  # still held back meanwhile
    drain = SlowConsumer(b.port, "big", delay=0, prefetch=50)
    drain.start()
    assert drain.ready.wait(30)
    pub.join(120)
    assert not pub.is_alive() and pub.error is None and pub.sent == n
    deadline = time.monotonic() + 60
    while drain.received + cons.received < n:
        assert time.monotonic() < deadline, (drain.received, cons.received, n)
        time.sleep(0.05)
    assert "flow" not in _connection_states(b)
    drain.stop.set()
    cons.stop.set()
    drain.join(10)
    cons.join(10)
    mon.close()


def test_flow_limits_each_threshold_alone():
    """A threshold that is off never holds a queue back, nor keeps it from catching up: its
    low watermark is then "any" (a queue behind by bytes with the count off catches up at
    half the bytes, not at an empty queue)."""
    limits = FlowLimits(0, None, 4096)
    assert (limits.high, limits.low, limits.high_bytes, limits.low_bytes) == (OFF, OFF, 4096, 2048)
    limits = FlowLimits(100)
    assert (limits.high, limits.low, limits.high_bytes, limits.low_bytes) == (100, 50, OFF, OFF)
