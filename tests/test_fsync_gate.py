"""No basic.ack and no tx.commit-ok leaves the broker before the fsync of its records.

The journal's test-only fsync gate (``SYNCMQ_TEST_FSYNC_GATE``, docs/architecture.md "The fsync
gate") makes every segment fsync take a shared ``flock`` on a file first. These tests hold an
exclusive ``flock`` on it, publish (or commit), wait until the journal thread is seen blocked
on the gate in ``/proc/locks`` (an event, not a sleep), make a round trip on another channel
(the broker has handled everything sent before it), check that no confirm / commit-ok came,
then release the gate and check that it comes.

Mutations these catch (issue #24): sending the confirm before the journal write, and firing the
journal callbacks before the fsync.

Early confirms (issue #22): a persistent message acked (or rejected without requeue) on every
durable queue it was routed to is confirmed without waiting for its fsync, as RabbitMQ does;
the tests below show the confirm arriving while the fsync is held only then (a real pika
consumer acks), and a kill -9 that loses nothing it should keep.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import time

import pika
import pytest
from amqp_raw import RawClient, connect
from brokerproc import BrokerProcess

from syncmq.wire import _spec

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/locks"),
                                reason="needs Linux /proc/locks to see the journal wait")

PERSISTENT = struct.pack(">HB", 0x1000, 2)  # flags: delivery-mode present; delivery-mode 2
_DEV_INO = re.compile(r"^[0-9a-f]+:[0-9a-f]+:(\d+)$")


class Gate:
    """The test's side of the fsync gate: an exclusive flock it takes and releases."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.ino = os.fstat(self.fd).st_ino

    def hold(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def waiters(self) -> int:
        """Locks blocked on the gate file (``->`` lines of /proc/locks)."""
        n = 0
        with open("/proc/locks") as f:
            for line in f:
                if "->" not in line:
                    continue
                for tok in line.split():
                    m = _DEV_INO.match(tok)
                    if m and int(m.group(1)) == self.ino:
                        n += 1
        return n

    def wait_for_journal(self, c: RawClient, unwanted: type, timeout: float = 20.0) -> None:
        """Block until the journal thread waits on the gate (bounded); meanwhile, nothing
        ``unwanted`` may arrive on ``c``."""
        deadline = time.monotonic() + timeout
        while self.waiters() == 0:
            assert time.monotonic() < deadline, "the journal never reached an fsync"
            try:
                f = c.read_method(timeout=0.005)
            except TimeoutError:
                continue
            raise AssertionError(f"{f} while the fsync is held")


@pytest.fixture
def gated(tmp_path):
    gate = Gate(str(tmp_path / "fsync-gate"))
    env = dict(os.environ, SYNCMQ_TEST_FSYNC_GATE=gate.path)
    b = BrokerProcess(str(tmp_path / "data"), env=env).start()
    yield b, gate
    gate.release()  # never leave the broker's shutdown fsync blocked
    os.close(gate.fd)
    rc = b.stop()
    assert rc == 0, b.log_tail()
    assert not b.tracebacks(), "\n".join(b.tracebacks())


def _setup(b: BrokerProcess, queue: str) -> RawClient:
    c = connect(b.port)
    for ch in (1, 2):
        c.open_channel(ch)
    c.send_method(1, _spec.Queue.Declare(queue=queue, durable=True))
    c.expect_method(1, _spec.Queue.DeclareOk)
    return c


def _round_trip_without(c: RawClient, unwanted: type) -> None:
    """basic.qos on channel 2; every frame before its qos-ok must not be ``unwanted``."""
    c.send_method(2, _spec.Basic.Qos(prefetch_count=7))
    while True:
        f = c.read_method()
        assert not isinstance(f.method, unwanted), f"{f} before the fsync"
        if f.channel == 2 and isinstance(f.method, _spec.Basic.QosOk):
            return


def _publish(c: RawClient, queue: str, body: bytes) -> None:
    c.send_method(1, _spec.Basic.Publish(exchange="", routing_key=queue))
    c.send_content(1, body, PERSISTENT)


def _segments_size(data_dir: str) -> int:
    return sum(os.path.getsize(os.path.join(data_dir, n)) for n in os.listdir(data_dir)
               if n.endswith(".seg") or n[:1].isdigit())


def test_no_confirm_before_fsync(gated):
    b, gate = gated
    c = _setup(b, "gate-confirm")
    c.send_method(1, _spec.Confirm.Select())
    c.expect_method(1, _spec.Confirm.SelectOk)
    before = _segments_size(b.data_dir)
    gate.hold()
    for i in range(3):
        _publish(c, "gate-confirm", b"m%d" % i)
    gate.wait_for_journal(c, _spec.Basic.Ack)
    _round_trip_without(c, _spec.Basic.Ack)
    assert _segments_size(b.data_dir) > before  # written, waiting for its fsync
    assert c.still_open(0.2)  # still nothing on the wire while the fsync is held
    gate.release()
    last = 0
    while last < 3:
        m = c.expect_method(1, _spec.Basic.Ack)
        assert m.delivery_tag > last
        last = m.delivery_tag
    c.close()


def test_no_commit_ok_before_fsync(gated):
    b, gate = gated
    c = _setup(b, "gate-tx")
    c.send_method(1, _spec.Tx.Select())
    c.expect_method(1, _spec.Tx.SelectOk)
    _publish(c, "gate-tx", b"in tx")
    gate.hold()
    c.send_method(1, _spec.Tx.Commit())
    gate.wait_for_journal(c, _spec.Tx.CommitOk)
    # The connection's replies keep their order behind a commit waiting for its fsync
    # (methods/durable_reply.py), so no round trip on another channel can come back first:
    # a qos on channel 2 is answered only after commit-ok, and nothing at all arrives
    # while the fsync is held (a commit-ok sent early was sent while the commit was handled,
    # before wait_for_journal saw the journal thread block on the gate).
    c.send_method(2, _spec.Basic.Qos(prefetch_count=7))
    with pytest.raises(TimeoutError):
        c.read_method(timeout=0.5)
    assert c.still_open(0.2)
    gate.release()
    c.expect_method(1, _spec.Tx.CommitOk)
    c.expect_method(2, _spec.Basic.QosOk)
    c.send_method(1, _spec.Basic.Get(queue="gate-tx", no_ack=True))
    assert isinstance(c.read_method().method, _spec.Basic.GetOk)
    c.close()


# ---- early confirms (issue #22) ----


def _consumer(b: BrokerProcess, queue: str):
    """A pika channel consuming ``queue`` with manual acks; returns (connection, channel,
    next_delivery) where ``next_delivery()`` is the next (method, body)."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=100)
    gen = ch.consume(queue, inactivity_timeout=20)

    def next_delivery():
        method, _props, body = next(gen)
        assert method is not None, "no delivery"
        return method, body

    return conn, ch, next_delivery


def _settled(ch) -> None:
    """A round trip on the consumer's channel: the broker handled its acks before."""
    ch.basic_qos(prefetch_count=100)


def _no_confirm(c: RawClient) -> None:
    """Nothing arrives for the publisher (its batch was handled: a round trip first)."""
    _round_trip_without(c, _spec.Basic.Ack)
    with pytest.raises(TimeoutError):
        c.read_method(timeout=0.3)


def _confirm_select(b: BrokerProcess, *queues: str) -> RawClient:
    c = _setup(b, queues[0])
    for q in queues[1:]:
        c.send_method(1, _spec.Queue.Declare(queue=q, durable=True))
        c.expect_method(1, _spec.Queue.DeclareOk)
    c.send_method(1, _spec.Confirm.Select())
    c.expect_method(1, _spec.Confirm.SelectOk)
    return c


def test_a_message_acked_by_its_consumer_is_confirmed_while_the_fsync_is_held(gated):
    b, gate = gated
    c = _confirm_select(b, "early")
    conn, ch, next_delivery = _consumer(b, "early")
    gate.hold()
    _publish(c, "early", b"m1")
    gate.wait_for_journal(c, _spec.Basic.Ack)  # its PUBLISH is in the fsync being held
    method, body = next_delivery()
    assert body == b"m1"
    _no_confirm(c)  # delivered, not acked: nothing yet
    ch.basic_ack(method.delivery_tag)
    m = c.expect_method(1, _spec.Basic.Ack, timeout=20)  # while the fsync is still held
    assert (m.delivery_tag, m.multiple) == (1, False)
    assert gate.waiters() > 0
    # more of them, acked with multiple=true: one confirm up to the last
    for i in range(2, 6):
        _publish(c, "early", b"m%d" % i)
    for _ in range(4):
        method, _body = next_delivery()
    ch.basic_ack(method.delivery_tag, multiple=True)
    last = 1
    while last < 5:
        m = c.expect_method(1, _spec.Basic.Ack, timeout=20)
        assert m.delivery_tag > last
        last = m.delivery_tag
    assert gate.waiters() > 0
    gate.release()
    _round_trip_without(c, _spec.Basic.Ack)  # never twice
    ch.cancel()
    conn.close()
    c.close()


def test_no_early_confirm_until_every_queue_settled_it(gated):
    """Routed to two durable queues: acked on one, no confirm; rejected with requeue on the
    other, none either; rejected without requeue there (RabbitMQ treats it as settled, the
    message is gone from the queue): confirmed, the fsync still held."""
    b, gate = gated
    c = _confirm_select(b, "early-a", "early-b")
    c.send_method(1, _spec.Queue.Bind(queue="early-b", exchange="amq.fanout"))
    c.expect_method(1, _spec.Queue.BindOk)
    c.send_method(1, _spec.Queue.Bind(queue="early-a", exchange="amq.fanout"))
    c.expect_method(1, _spec.Queue.BindOk)
    conn_a, ch_a, next_a = _consumer(b, "early-a")
    conn_b, ch_b, next_b = _consumer(b, "early-b")
    gate.hold()
    c.send_method(1, _spec.Basic.Publish(exchange="amq.fanout", routing_key=""))
    c.send_content(1, b"both", PERSISTENT)
    gate.wait_for_journal(c, _spec.Basic.Ack)
    method_a, _ = next_a()
    ch_a.basic_ack(method_a.delivery_tag)
    _settled(ch_a)
    _no_confirm(c)  # acked on one of its two queues
    method_b, _ = next_b()
    ch_b.basic_nack(method_b.delivery_tag, requeue=True)
    _settled(ch_b)
    _no_confirm(c)  # back on early-b
    method_b, body = next_b()
    assert (body, method_b.redelivered) == (b"both", True)
    ch_b.basic_reject(method_b.delivery_tag, requeue=False)
    m = c.expect_method(1, _spec.Basic.Ack, timeout=20)
    assert m.delivery_tag == 1 and gate.waiters() > 0
    gate.release()
    for conn in (conn_a, conn_b):
        conn.close()
    c.close()


def test_a_confirm_waits_for_the_fsync_of_earlier_unsettled_publishes(gated):
    """Confirms stay in order: publish 1 (no consumer queue) waits for its fsync, so the
    early-settled publish 2 is confirmed with it after the release, not before."""
    b, gate = gated
    c = _confirm_select(b, "early", "nobody")
    conn, ch, next_delivery = _consumer(b, "early")
    gate.hold()
    _publish(c, "nobody", b"kept")
    _publish(c, "early", b"acked")
    gate.wait_for_journal(c, _spec.Basic.Ack)
    method, _ = next_delivery()
    ch.basic_ack(method.delivery_tag)
    _settled(ch)
    _no_confirm(c)
    gate.release()
    m = c.expect_method(1, _spec.Basic.Ack, timeout=20)
    if m.delivery_tag == 1:  # (acks 1 then 2, or both at once)
        m = c.expect_method(1, _spec.Basic.Ack, timeout=20)
    assert (m.delivery_tag, m.multiple) in ((2, True), (2, False))
    conn.close()
    c.close()


def _queue_bodies(b: BrokerProcess, queue: str) -> list[bytes]:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    ch = conn.channel()
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            break
        out.append(body)
    conn.close()
    return out


def test_kill_9_after_early_confirms_keeps_what_is_unacked_only(gated):
    """Publishes confirmed by their fsync and never acked come back after kill -9; those
    confirmed early (acked while the fsync was held) do not, and their PUBLISH records were
    never written (write cancel: the PUBLISH and its ACK met in one journal batch)."""
    b, gate = gated
    c = _confirm_select(b, "kept", "early")
    for i in range(3):
        _publish(c, "kept", b"kept-body-%d" % i)
    last = 0
    while last < 3:
        last = c.expect_method(1, _spec.Basic.Ack, timeout=20).delivery_tag
    conn, ch, next_delivery = _consumer(b, "early")
    gate.hold()
    _publish(c, "kept", b"kept-body-3")  # the batch the journal thread holds in its fsync
    gate.wait_for_journal(c, _spec.Basic.Ack)
    for i in range(5):
        _publish(c, "early", b"early-body-%d" % i)
    for _ in range(5):
        method, _body = next_delivery()
    ch.basic_ack(method.delivery_tag, multiple=True)
    _settled(ch)
    _no_confirm(c)  # publish 4 (k3) waits for its fsync, and the early ones behind it
    gate.release()
    last = 3
    while last < 9:
        last = c.expect_method(1, _spec.Basic.Ack, timeout=20).delivery_tag
    conn.close()
    # a durable declare is answered after an fsync covering everything appended before it
    c.send_method(1, _spec.Queue.Declare(queue="fence", durable=True))
    c.expect_method(1, _spec.Queue.DeclareOk)
    segs = sorted(n for n in os.listdir(b.data_dir) if n.endswith(".seg"))
    data = b"".join(open(os.path.join(b.data_dir, n), "rb").read() for n in segs)
    assert b"kept-body-3" in data
    assert not any(b"early-body-%d" % i in data for i in range(5))
    b.kill()
    b.start()
    assert _queue_bodies(b, "kept") == [b"kept-body-%d" % i for i in range(4)]
    assert _queue_bodies(b, "early") == []
