"""End to end under a simulated power loss (issue #25): syncmq runs with the journal's file
layer replaced by ``fuzz.powerloss`` (``python -m fuzz.powerloss_broker``), real pika clients
declare durable queues, publish with confirms and commit multi-queue transactions, and at a
random file-system event the broker "loses power": the image of what was fsynced (torn tails
included) is written and the process ends on the spot. A normal syncmq then starts on the
image: every declared-ok queue, confirmed message and committed transaction must be there,
every transaction whole or absent, every recovered message flagged redelivered (no clean
stop), nothing never published. A kill -9 cannot show this: it keeps the page cache.

FUSE would do the same below an unmodified broker; this layer needs no mount (and no
privileges), at the price of living in the broker process (test-only module, nothing in
the production code paths).
"""

from __future__ import annotations

import random
import sys
import threading

import pika
from amqp_helpers import connect
from brokerproc import BrokerProcess

CYCLES = 3
TX_BATCH = 20


class _Clients:
    def __init__(self, port: int, cycle: int) -> None:
        self.port, self.cycle = port, cycle
        self.declared: list[str] = []
        self.confirmed: list[bytes] = []
        self.committed: list[int] = []
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._declare, self._publish, self._commit)]

    def _declare(self) -> None:
        try:
            ch = connect(self.port).channel()
            for i in range(100_000):
                name = f"d{self.cycle}-{i}"
                ch.queue_declare(name, durable=True)
                self.declared.append(name)
        except Exception:
            return

    def _publish(self) -> None:
        try:
            ch = connect(self.port).channel()
            ch.confirm_delivery()
            props = pika.BasicProperties(delivery_mode=2)
            for i in range(1_000_000):
                body = b"c%d-%d-" % (self.cycle, i) + b"p" * (i % 700)
                ch.basic_publish("", "pl", body, props)
                self.confirmed.append(body)
        except Exception:
            return

    def _commit(self) -> None:
        try:
            ch = connect(self.port).channel()
            ch.tx_select()
            props = pika.BasicProperties(delivery_mode=2)
            for batch in range(1_000_000):
                for i in range(TX_BATCH):
                    ch.basic_publish("tx-fan2" if i % 2 else "", "" if i % 2 else "ta",
                                     b"t%d-%d-%d" % (self.cycle, batch, i) + b"x" * 300, props)
                ch.tx_commit()
                self.committed.append(batch)
        except Exception:
            return


def _drain(ch, queue: str) -> list[tuple[bytes, bool]]:
    out = []
    while True:
        m, _p, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append((body, m.redelivered))


def test_power_loss_keeps_every_confirmed_declared_and_committed_thing(tmp_path) -> None:
    rng = random.Random(2025)
    data = str(tmp_path / "d0")
    b = BrokerProcess(data, "--journal-segment-bytes", str(256 * 1024)).start()
    ch = connect(b.port).channel()
    ch.queue_declare("pl", durable=True)
    ch.exchange_declare("tx-fan2", "fanout", durable=True)
    for q in ("ta", "tb"):
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, "tx-fan2")
    ch.connection.close()
    assert b.stop() == 0
    declared: set[str] = set()
    for cycle in range(CYCLES):
        image = str(tmp_path / f"d{cycle + 1}")
        pb = BrokerProcess(data, "--journal-segment-bytes", str(256 * 1024))
        pb.args = [sys.executable, "-m", "fuzz.powerloss_broker", "--cut-at",
                   str(rng.randrange(60, 600)), "--image", image, "--seed", str(cycle),
                   "--", *pb.args[3:]]
        pb.start()
        clients = _Clients(pb.port, cycle)
        for t in clients.threads:
            t.start()
        assert pb.proc.wait(300) == 99, pb.log_tail()  # the power cut
        for t in clients.threads:
            t.join(60)
        assert clients.confirmed or clients.declared or clients.committed
        declared.update(clients.declared)
        b = BrokerProcess(image).start()
        conn = connect(b.port)
        for name in sorted(declared):
            c = conn.channel()
            c.queue_declare(name, passive=True)  # 404 if a declared-ok queue was lost
            c.close()
        ch = conn.channel()
        got = _drain(ch, "pl")
        assert all(redelivered for _b, redelivered in got), "unclean stop: all redelivered"
        bodies = {body for body, _r in got}
        lost = [x[:20] for x in clients.confirmed if x not in bodies]
        assert not lost, f"cycle {cycle}: confirmed messages lost: {lost[:5]}"
        assert all(body.startswith(b"c%d-" % cycle) for body in bodies), "phantom message"
        counts: dict[int, int] = {}
        for q in ("ta", "tb"):
            for body, _r in _drain(ch, q):
                batch = int(body.split(b"-")[1])
                counts[batch] = counts.get(batch, 0) + 1
        full = TX_BATCH // 2 * 2 + TX_BATCH // 2  # fanout to 2 queues + 1 direct per pair
        assert all(n == full for n in counts.values()), f"tx partly recovered: {counts}"
        assert set(clients.committed) <= set(counts), "committed transaction lost"
        conn.close()
        assert b.stop() == 0
        data = image
