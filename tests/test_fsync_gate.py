"""No basic.ack and no tx.commit-ok leaves the broker before the fsync of its records.

The journal's test-only fsync gate (``SYNCMQ_TEST_FSYNC_GATE``, docs/architecture.md "The fsync
gate") makes every segment fsync take a shared ``flock`` on a file first. These tests hold an
exclusive ``flock`` on it, publish (or commit), wait until the journal thread is seen blocked
on the gate in ``/proc/locks`` (an event, not a sleep), make a round trip on another channel
(the broker has handled everything sent before it), check that no confirm / commit-ok came,
then release the gate and check that it comes.

Mutations these catch (issue #24): sending the confirm before the journal write, and firing the
journal callbacks before the fsync.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import time

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
