"""Resource exhaustion: many connections, channels, queues and consumers, a 100 MiB message,
clients that never read (output back-pressure), and a slowloris.

Sizes come from ``SYNCMQ_STRESS_SCALE``: ``ci`` (default: CI stays fast) or ``full`` (the
sizes of issue 10: 5,000 connections, 100,000 queues...; ``bench/stress_full.py`` runs this
module that way and prints the figures). Each test records its figures (times, broker RSS,
fds) with :func:`record`: printed, and appended as a JSON line to ``SYNCMQ_STRESS_REPORT``
when that is set.

Broker memory is read from /proc/PID/status (VmRSS) and its fds from /proc/PID/fd. Every wait
is for an event (a frame, EOF, a count reaching its value) with a generous deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import select
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pika
import pytest
from amqp_raw import RawClient, connect

from syncmq.wire import _spec
from syncmq.wire.frames import PROTOCOL_HEADER, encode_content, encode_frame, parse_frames

pytestmark = pytest.mark.slow

SCALE = os.environ.get("SYNCMQ_STRESS_SCALE", "ci")
SIZES = {
    "ci": {"connections": 1000, "channels": 2000, "queues": 10_000, "consumers": 1000,
           "big_message": 100 * 2**20, "flood": 160 * 2**20, "slowloris": 60},
    "full": {"connections": 5000, "channels": 2000, "queues": 100_000, "consumers": 1000,
             "big_message": 100 * 2**20, "flood": 1024 * 2**20, "slowloris": 600},
}[SCALE]
MiB = 2**20
FRAME_MAX = 131072
# extra broker options for the back-pressure tests; e.g. "--max-pending-output 4GiB" turns
# the bound off, to see those tests fail without it
BP_ARGS = os.environ.get("SYNCMQ_STRESS_BROKER_ARGS", "").split()
REPO = Path(__file__).resolve().parent.parent


def record(test: str, **figures) -> None:
    rec = {"test": test, "scale": SCALE, **figures}
    print(json.dumps(rec))
    path = os.environ.get("SYNCMQ_STRESS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def nfds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(cond, timeout: float, what: str, step: float = 0.05) -> None:
    """Wait until ``cond()`` (a count in /proc, say) holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def round_trip(port: int, timeout: float = 30.0) -> float:
    """A well-behaved pika client: declare, publish, get. Returns the seconds it took."""
    t0 = time.monotonic()
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, socket_timeout=timeout, blocked_connection_timeout=timeout,
        stack_timeout=timeout))
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        body = os.urandom(32)
        ch.basic_publish("", q, body)
        deadline = time.monotonic() + timeout
        while True:
            _m, _p, got = ch.basic_get(q, auto_ack=True)
            if got is not None:
                break
            assert time.monotonic() < deadline, "the message never arrived"
            conn.process_data_events(0.01)
        assert got == body
    finally:
        conn.close()
    return time.monotonic() - t0


@pytest.fixture(scope="module", autouse=True)
def _nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * SIZES["connections"] + 1024))
    if hard != resource.RLIM_INFINITY and hard < SIZES["connections"] + 256:
        pytest.skip(f"the hard limit of open files ({hard}) is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def read_body(c: RawClient, timeout: float = 60) -> bytes:
    """The content header and body frames after a deliver or get-ok: the body."""
    f = c.read_method(timeout)
    assert f.type == _spec.FRAME_HEADER, f
    size = struct.unpack_from(">Q", f.payload, 4)[0]
    parts = []
    n = 0
    while n < size:
        f = c.read_method(timeout)
        assert f.type == _spec.FRAME_BODY, f
        parts.append(f.payload)
        n += len(f.payload)
    return b"".join(parts)


def _frame(ch: int, m: _spec.Method) -> bytes:
    return encode_frame(_spec.FRAME_METHOD, ch, m.encode())


def _read_methods(c: RawClient, n: int, cls: type, timeout: float = 120.0) -> list:
    """The next ``n`` frames of method ``cls`` (heartbeats skipped; anything else fails)."""
    deadline = time.monotonic() + timeout
    out = []
    while len(out) < n:
        f = c.read_method(max(0.001, deadline - time.monotonic()))
        assert isinstance(f.method, cls), f
        out.append(f)
    return out


# ---------------------------------------------------------------------------------------------
# the open files limit


def test_cli_raises_the_open_files_soft_limit():
    code = (
        "import logging, resource, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "from syncmq.cli import raise_nofile_limit\n"
        "raise_nofile_limit()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard) or hard < 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("True"), r.stdout
    assert "raised the open files limit" in r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# many connections, channels, queues, consumers


def _handshake_bytes() -> bytes:
    start_ok = _spec.Connection.StartOk(
        client_properties={"product": "stress"}, mechanism="PLAIN",
        response=b"\x00guest\x00guest", locale="en_US")
    return b"".join([
        PROTOCOL_HEADER, _frame(0, start_ok),
        _frame(0, _spec.Connection.TuneOk(channel_max=16, frame_max=FRAME_MAX, heartbeat=0)),
        _frame(0, _spec.Connection.Open(virtual_host="/")),
    ])


def open_connections(port: int, n: int, timeout: float = 300.0) -> list[socket.socket]:
    """``n`` connections through the whole handshake (pipelined), driven with epoll (the
    client's fds go beyond select()'s 1024)."""
    hello = _handshake_bytes()
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    bufs: dict[int, bytearray] = {}
    done = 0
    deadline = time.monotonic() + timeout

    def pump(wait: float) -> None:
        nonlocal done
        for key, _ in sel.select(wait):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            assert data, "the broker closed a connection during the handshake"
            buf = bufs[s.fileno()]
            buf += data
            frames, used = parse_frames(buf, 0)
            del buf[:used]
            for ftype, _ch, payload in frames:
                if ftype == _spec.FRAME_METHOD and isinstance(
                        _spec.decode_method(payload), _spec.Connection.OpenOk):
                    done += 1
                    sel.unregister(s)

    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(hello)
        s.setblocking(False)
        socks.append(s)
        bufs[s.fileno()] = bytearray()
        sel.register(s, selectors.EVENT_READ)
        pump(0)
    while done < n:
        assert time.monotonic() < deadline, f"only {done} of {n} connections opened"
        pump(1.0)
    sel.close()
    return socks


def test_many_connections(broker_factory):
    n = SIZES["connections"]
    b = broker_factory("--heartbeat", "0")
    pid = b.proc.pid
    fds0, rss0 = nfds(pid), rss(pid)
    t0 = time.monotonic()
    socks = open_connections(b.port, n)
    open_s = time.monotonic() - t0
    wait_for(lambda: nfds(pid) >= fds0 + n, 60, f"{n} connections in the broker")
    rss1, fds1 = rss(pid), nfds(pid)
    rt = round_trip(b.port)
    for s in socks:
        s.close()
    t1 = time.monotonic()
    wait_for(lambda: nfds(pid) <= fds0 + 2, 120, "the broker to close every connection")
    close_s = time.monotonic() - t1
    record("many_connections", connections=n, open_s=round(open_s, 2),
           close_s=round(close_s, 2), broker_fds=fds1, rss_before_mib=round(rss0 / MiB, 1),
           rss_open_mib=round(rss1 / MiB, 1),
           rss_per_connection_kib=round((rss1 - rss0) / n / 1024, 1),
           pika_round_trip_s=round(rt, 3))
    assert round_trip(b.port) < 30


def test_2000_channels_on_one_connection(broker):
    n = SIZES["channels"]
    pid = broker.proc.pid
    rss0 = rss(pid)
    with connect(broker.port) as c:
        t0 = time.monotonic()
        c.send(b"".join(_frame(i, _spec.Channel.Open()) for i in range(1, n + 1)))
        oks = _read_methods(c, n, _spec.Channel.OpenOk)
        assert sorted(f.channel for f in oks) == list(range(1, n + 1))
        open_s = time.monotonic() - t0
        rss1 = rss(pid)
        # every channel works: qos on each
        c.send(b"".join(_frame(i, _spec.Basic.Qos(prefetch_count=i)) for i in range(1, n + 1)))
        assert len(_read_methods(c, n, _spec.Basic.QosOk)) == n
        c.send(b"".join(_frame(i, _spec.Channel.Close(reply_code=200, reply_text=""))
                        for i in range(1, n + 1)))
        assert len(_read_methods(c, n, _spec.Channel.CloseOk)) == n
    record("channels", channels=n, open_s=round(open_s, 2),
           rss_per_channel_kib=round((rss1 - rss0) / n / 1024, 2))


def test_many_queues(broker_factory):
    n = SIZES["queues"]
    b = broker_factory("--heartbeat", "0")
    pid = b.proc.pid
    rss0 = rss(pid)
    tag = os.urandom(3).hex()
    names = [f"many-{tag}-{i}" for i in range(n)]
    batch = 1000
    with connect(b.port) as c:
        c.open_channel(1)
        t0 = time.monotonic()
        for i in range(0, n, batch):
            c.send(b"".join(_frame(1, _spec.Queue.Declare(queue=q)) for q in names[i:i + batch]))
            got = _read_methods(c, len(names[i:i + batch]), _spec.Queue.DeclareOk)
            assert got[-1].method.queue == names[min(i + batch, n) - 1]
        declare_s = time.monotonic() - t0
        rss1 = rss(pid)
        # the last queue routes and serves like any other
        rt = round_trip(b.port)
        c.publish(1, "", names[-1], b"last")
        c.send_method(1, _spec.Queue.Declare(queue=names[-1], passive=True))
        assert c.expect_method(1, _spec.Queue.DeclareOk).message_count == 1
        t1 = time.monotonic()
        for i in range(0, n, batch):
            c.send(b"".join(_frame(1, _spec.Queue.Delete(queue=q)) for q in names[i:i + batch]))
            _read_methods(c, len(names[i:i + batch]), _spec.Queue.DeleteOk)
        delete_s = time.monotonic() - t1
    record("many_queues", queues=n, declare_s=round(declare_s, 2),
           declares_per_s=round(n / declare_s), delete_s=round(delete_s, 2),
           rss_before_mib=round(rss0 / MiB, 1), rss_declared_mib=round(rss1 / MiB, 1),
           rss_per_queue_kib=round((rss1 - rss0) / n / 1024, 2),
           pika_round_trip_s=round(rt, 3))


def test_1000_consumers_on_one_queue(broker, unique):
    n = SIZES["consumers"]
    per = 3
    with connect(broker.port) as cons, connect(broker.port) as pub:
        cons.open_channel(1)
        cons.send_method(1, _spec.Queue.Declare(queue=unique, auto_delete=True))
        cons.expect_method(1, _spec.Queue.DeclareOk)
        cons.send(b"".join(_frame(1, _spec.Basic.Consume(queue=unique, consumer_tag=f"c{i}",
                                                         no_ack=True)) for i in range(n)))
        _read_methods(cons, n, _spec.Basic.ConsumeOk)
        pub.open_channel(1)
        bodies = [b"m%d" % i for i in range(n * per)]
        data = []
        for body in bodies:
            data.append(_frame(1, _spec.Basic.Publish(routing_key=unique)))
            data.extend(bytes(x) for x in encode_content(1, 60, b"\x00\x00", body, FRAME_MAX))
        t0 = time.monotonic()
        pub.send(b"".join(data))
        counts: dict[str, int] = {}
        got = []
        while len(got) < len(bodies):
            f = cons.read_method(60)
            assert isinstance(f.method, _spec.Basic.Deliver), f
            counts[f.method.consumer_tag] = counts.get(f.method.consumer_tag, 0) + 1
            cons.read_method(60)  # header
            got.append(cons.read_method(60).payload)
        deliver_s = time.monotonic() - t0
        assert sorted(got) == sorted(bodies)
        assert len(counts) == n and set(counts.values()) == {per}, "not round-robin"
        cons.send(b"".join(_frame(1, _spec.Basic.Cancel(consumer_tag=f"c{i}"))
                           for i in range(n - 1)))
        _read_methods(cons, n - 1, _spec.Basic.CancelOk)
        cons.send_method(1, _spec.Queue.Declare(queue=unique, passive=True))
        assert cons.expect_method(1, _spec.Queue.DeclareOk).consumer_count == 1
    record("consumers", consumers=n, messages=len(bodies), deliver_s=round(deliver_s, 2))


# ---------------------------------------------------------------------------------------------
# a 100 MiB message


def test_100_mib_message(broker, unique):
    size = SIZES["big_message"]
    assert size <= 128 * MiB  # --max-message-size's default
    body = os.urandom(1024) * (size // 1024)
    digest = hashlib.sha256(body).hexdigest()
    pid = broker.proc.pid
    rss0 = rss(pid)
    with connect(broker.port) as pub, connect(broker.port) as get:
        pub.open_channel(1)
        pub.send_method(1, _spec.Queue.Declare(queue=unique, auto_delete=True))
        pub.expect_method(1, _spec.Queue.DeclareOk)
        pub.send_method(1, _spec.Confirm.Select())
        pub.expect_method(1, _spec.Confirm.SelectOk)
        t0 = time.monotonic()
        pub.send_method(1, _spec.Basic.Publish(routing_key=unique))
        for chunk in encode_content(1, 60, b"\x00\x00", body, pub.frame_max):
            pub.sock.sendall(chunk)
        pub.expect_method(1, _spec.Basic.Ack, timeout=120)
        publish_s = time.monotonic() - t0
        rss_peak = rss(pid)
        t1 = time.monotonic()
        get.open_channel(1)
        get.send_method(1, _spec.Basic.Get(queue=unique, no_ack=True))
        get.expect_method(1, _spec.Basic.GetOk, timeout=120)
        hdr = get.read_method(120)
        assert hdr.type == _spec.FRAME_HEADER
        assert struct.unpack_from(">Q", hdr.payload, 4)[0] == size
        parts = []
        n = 0
        frames = 0
        while n < size:
            f = get.read_method(120)
            assert f.type == _spec.FRAME_BODY and len(f.payload) <= FRAME_MAX - 8
            parts.append(f.payload)
            n += len(f.payload)
            frames += 1
        get_s = time.monotonic() - t1
        assert n == size and hashlib.sha256(b"".join(parts)).hexdigest() == digest
    record("big_message", mib=size // MiB, body_frames=frames, publish_confirmed_s=round(
        publish_s, 2), get_s=round(get_s, 2), rss_before_mib=round(rss0 / MiB, 1),
        rss_after_publish_mib=round(rss_peak / MiB, 1))


# ---------------------------------------------------------------------------------------------
# clients that never read: output back-pressure


@pytest.mark.parametrize("no_ack", [True, False], ids=["no-ack", "ack-unlimited-prefetch"])
def test_consumer_that_never_reads(broker_factory, unique, no_ack):
    """A consumer that never reads its socket gets at most about --max-pending-output of
    deliveries buffered for it; the rest stays in its queue (here capped by x-max-length), so
    the broker's RSS stays flat however much is published, and other connections go on."""
    total = SIZES["flood"]
    msg = 256 * 1024
    keep = 16
    b = broker_factory("--heartbeat", "0", *BP_ARGS)
    pid = b.proc.pid
    slow = connect(b.port)
    slow.open_channel(1)
    slow.send_method(1, _spec.Queue.Declare(queue=unique, arguments={"x-max-length": keep}))
    slow.expect_method(1, _spec.Queue.DeclareOk)
    slow.send_method(1, _spec.Basic.Consume(queue=unique, no_ack=no_ack))
    slow.expect_method(1, _spec.Basic.ConsumeOk)
    # from now on `slow` reads nothing until the end
    pub = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0))
    ch = pub.channel()
    ch.confirm_delivery()
    body = os.urandom(msg)
    ch.basic_publish("", unique, body)  # warm-up: allocations the broker keeps anyway
    rss0 = rss(pid)
    peak = rss0
    t0 = time.monotonic()
    rt = None
    for i in range(total // msg):
        ch.basic_publish("", unique, body)  # confirmed: the broker has handled it
        if i % 16 == 0:
            peak = max(peak, rss(pid))
        if i == total // msg // 2:
            rt = round_trip(b.port)  # another connection is not affected
    publish_s = time.monotonic() - t0
    peak = max(peak, rss(pid))
    ready = ch.queue_declare(unique, passive=True).method.message_count
    record("consumer_never_reads", no_ack=no_ack, published_mib=total // MiB,
           publish_s=round(publish_s, 2), rss_before_mib=round(rss0 / MiB, 1),
           rss_peak_mib=round(peak / MiB, 1), queue_ready=ready,
           pika_round_trip_s=round(rt, 3))
    # bounded: the 8 MiB watermark + the queue's 16 x 256 KiB + one message + slack, far
    # below what was published (without back-pressure RSS grows by all of it)
    assert peak - rss0 < 48 * MiB, f"RSS grew by {(peak - rss0) / MiB:.0f} MiB"
    assert ready == keep, "deliveries were not held back"
    assert rt < 20
    # the consumer starts reading: its deliveries resume (the refill on drain) up to the end
    last = b"the-end"
    ch.basic_publish("", unique, last)
    deadline = time.monotonic() + 120
    seen = 0
    while True:
        f = slow.read_method(max(0.001, deadline - time.monotonic()))
        if isinstance(f.method, _spec.Basic.Deliver):
            seen += 1
            tag = f.method.delivery_tag
            payload = read_body(slow)
            if payload == last:
                break
            if not no_ack:
                slow.send_method(1, _spec.Basic.Ack(delivery_tag=tag))
    assert seen > keep
    slow.close()
    pub.close()


def test_consumer_that_never_reads_is_closed_after_two_heartbeats(broker_factory, unique):
    """Reading a connection is paused while its output is over the watermark, so its
    heartbeats cannot be seen; one that has not taken a single octet (not even our heartbeats)
    for two intervals is closed as a dead peer, and its queue goes to other consumers."""
    b = broker_factory("--heartbeat", "1", *BP_ARGS)
    slow = connect(b.port, heartbeat=1)
    slow.open_channel(1)
    slow.send_method(1, _spec.Queue.Declare(queue=unique))
    slow.expect_method(1, _spec.Queue.DeclareOk)
    slow.send_method(1, _spec.Basic.Consume(queue=unique, no_ack=True))
    slow.expect_method(1, _spec.Basic.ConsumeOk)
    pub = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0))
    ch = pub.channel()
    body = os.urandom(256 * 1024)
    for _ in range(160):  # 40 MiB: well over the kernel buffers and the 8 MiB watermark
        ch.basic_publish("", unique, body)
    b.wait_for_log("has neither read nor sent anything", timeout=60)
    wait_for(lambda: ch.queue_declare(unique, passive=True).method.consumer_count == 0, 30,
             "the consumer to be gone")
    assert ch.queue_declare(unique, passive=True).method.message_count > 0
    pub.close()
    slow.close()


def test_consumer_that_heartbeats_but_never_reads_stays_connected(broker_factory, unique):
    """Issue #19: a peer over the output bound that sends heartbeats is alive (RabbitMQ keeps
    reading it): its heartbeats pile up unread in the kernel and the broker sees them grow
    (FIONREAD). It stays connected for many intervals; once it goes silent it is closed."""
    b = broker_factory("--heartbeat", "1", *BP_ARGS)
    slow = connect(b.port, heartbeat=1)
    slow.open_channel(1)
    slow.send_method(1, _spec.Queue.Declare(queue=unique))
    slow.expect_method(1, _spec.Queue.DeclareOk)
    slow.send_method(1, _spec.Basic.Consume(queue=unique, no_ack=True))
    slow.expect_method(1, _spec.Basic.ConsumeOk)
    pub = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0))
    ch = pub.channel()
    body = os.urandom(256 * 1024)
    for _ in range(160):  # 40 MiB: well over the kernel buffers and the 8 MiB watermark
        ch.basic_publish("", unique, body)
    # the broker holds messages back for it: its output is over the bound
    wait_for(lambda: ch.queue_declare(unique, passive=True).method.message_count > 0, 30,
             "deliveries to be held back")
    for _ in range(16):  # 8 s: four times the two-interval timeout, heartbeating
        slow.send_frame(_spec.FRAME_HEARTBEAT, 0, b"")
        pub.sleep(0.5)
    assert ch.queue_declare(unique, passive=True).method.consumer_count == 1
    assert not any("neither read nor sent" in line for line in b.lines)
    # silent from now on: closed as a dead peer
    b.wait_for_log("has neither read nor sent anything", timeout=60)
    wait_for(lambda: ch.queue_declare(unique, passive=True).method.consumer_count == 0, 30,
             "the consumer to be gone")
    pub.close()
    slow.close()


def test_publisher_that_never_reads(broker_factory):
    """Mandatory publishes to nowhere come back as basic.return (the whole body) and confirms:
    a publisher that never reads them is not read either once its unsent output is over the
    watermark, so it cannot make the broker buffer without bound."""
    cap = SIZES["flood"]
    b = broker_factory("--heartbeat", "0", *BP_ARGS)
    pid = b.proc.pid
    c = connect(b.port)
    c.open_channel(1)
    c.send_method(1, _spec.Confirm.Select())
    c.expect_method(1, _spec.Confirm.SelectOk)
    body = os.urandom(64 * 1024)
    one = _frame(1, _spec.Basic.Publish(routing_key="nowhere-" + os.urandom(4).hex(),
                                        mandatory=True))
    one += b"".join(bytes(x) for x in encode_content(1, 60, b"\x00\x00", body, c.frame_max))
    rss0 = peak = rss(pid)
    c.sock.setblocking(False)
    sent = 0
    pending = memoryview(b"")
    stalled_at = None
    while sent < cap:
        if not pending:
            pending = memoryview(one)
        try:
            n = c.sock.send(pending)
        except BlockingIOError:
            # the broker stopped reading us (or the box stalls): wait for it to take more
            _, w, _ = select.select([], [c.sock], [], 5.0)
            if not w:
                stalled_at = sent
                break
            continue
        pending = pending[n:]
        sent += n
        if sent // MiB != (sent - n) // MiB:
            peak = max(peak, rss(pid))
    peak = max(peak, rss(pid))
    rt = round_trip(b.port)
    record("publisher_never_reads", sent_mib=round(sent / MiB, 1), cap_mib=cap // MiB,
           rss_before_mib=round(rss0 / MiB, 1), rss_peak_mib=round(peak / MiB, 1),
           pika_round_trip_s=round(rt, 3))
    assert stalled_at is not None, f"the broker read all {cap // MiB} MiB without pushing back"
    assert peak - rss0 < 48 * MiB, f"RSS grew by {(peak - rss0) / MiB:.0f} MiB"
    assert rt < 20
    # once it reads, everything is answered: one return per publish and the last confirm
    publishes = (sent + len(pending)) // len(one) if pending else sent // len(one)
    rest = bytes(pending)
    c.sock.setblocking(True)
    sender = threading.Thread(target=c.sock.sendall, args=(rest,), daemon=True)
    sender.start()
    returns = 0
    acked = 0
    deadline = time.monotonic() + 120
    while acked < publishes:
        f = c.read_frame(max(0.001, deadline - time.monotonic()))
        if isinstance(f.method, _spec.Basic.Return):
            returns += 1
        elif isinstance(f.method, _spec.Basic.Ack):
            acked = f.method.delivery_tag
    sender.join(30)
    assert returns == publishes
    c.close()


# ---------------------------------------------------------------------------------------------
# slowloris


def test_slowloris(broker_factory):
    """Sockets that send one octet a second (of the protocol header, of the handshake after
    a whole header, or nothing at all) are closed by the 2 s handshake timeout, while a
    well-behaved client connects and works."""
    n = SIZES["slowloris"]
    b = broker_factory("--handshake-timeout", "2")
    hello = _handshake_bytes()
    kinds = ["header", "handshake", "silent"]
    sel = selectors.DefaultSelector()
    conns = []
    t0 = time.monotonic()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", b.port), timeout=30)
        kind = kinds[i % 3]
        pos = 8 if kind == "handshake" else 0
        if kind == "handshake":
            s.sendall(hello[:8])
        s.setblocking(False)
        st = {"sock": s, "kind": kind, "pos": pos, "opened": time.monotonic(), "closed": None}
        conns.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    rt = round_trip(b.port)
    next_drip = time.monotonic() + 1
    deadline = t0 + 60
    while any(st["closed"] is None for st in conns):
        assert time.monotonic() < deadline, "slowloris sockets still open after 60 s"
        for key, _ in sel.select(max(0.0, next_drip - time.monotonic())):
            st = key.data
            try:
                data = st["sock"].recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                st["closed"] = time.monotonic()
                sel.unregister(st["sock"])
                st["sock"].close()
        if time.monotonic() >= next_drip:
            next_drip += 1
            for st in conns:
                if st["closed"] is None and st["kind"] != "silent" and st["pos"] < len(hello):
                    try:
                        st["sock"].send(hello[st["pos"]:st["pos"] + 1])
                        st["pos"] += 1
                    except OSError:
                        pass
    lifetimes = [st["closed"] - st["opened"] for st in conns]
    sel.close()
    record("slowloris", sockets=n, max_lifetime_s=round(max(lifetimes), 2),
           min_lifetime_s=round(min(lifetimes), 2), pika_round_trip_s=round(rt, 3))
    # closed by the timeout, not by finishing: 1 octet/s never completes 8 header octets
    # (let alone the handshake) within the 2 s timeout
    assert min(lifetimes) >= 1.5
    assert all(st["pos"] < len(hello) for st in conns)
    b.wait_for_log("handshake not completed within 2s")
    assert rt < 20
    assert round_trip(b.port) < 20

