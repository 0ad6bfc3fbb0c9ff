"""kill -9 right after a durable declare-ok / bind-ok / delete-ok: the object is never lost
nor resurrected (issue #25; durable changes are answered once fsynced, see
methods/durable_reply.py).

Each cycle starts the broker on the same data directory, checks everything the earlier cycles
were told (every declared-ok queue/exchange/binding is there, every deleted-ok one is gone),
then runs one kind of change in a loop, each waiting for its -ok, and SIGKILLs the broker
after a random number of them: the last -ok came a moment before the kill. A background
persistent publisher keeps the journal busy (small segments: compaction runs too), which is
when the broker used to lose them. Bounded by a count of cycles, not by time.
"""

from __future__ import annotations

import random
import threading

import pika
import pytest
from brokerproc import BrokerProcess

CYCLES = 9  # 3 of each kind


def _connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, heartbeat=0, socket_timeout=60, blocked_connection_timeout=60))


class _Run:
    """One cycle's changes on a thread; ``done`` lists those whose -ok arrived."""

    def __init__(self, port: int, kind: int, cycle: int, doomed: list[str]) -> None:
        self.port, self.kind, self.cycle, self.doomed = port, kind, cycle, doomed
        self.done: list[str] = []
        # the deletion under way when the kill came: its queue may be gone and its exchange
        # not (no -ok was seen for the pair), so it is checked neither way afterwards
        self.in_flight: str | None = None
        self.count = threading.Semaphore(0)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            ch = _connect(self.port).channel()
            for i in range(100_000):
                name = f"c{self.cycle}-{i}"
                if self.kind == 0:
                    ch.queue_declare(name, durable=True)
                    ch.exchange_declare("x" + name, "fanout", durable=True)
                elif self.kind == 1:
                    ch.queue_bind("q-bound", "x-src", routing_key=name)
                else:
                    if not self.doomed:
                        return
                    name = self.in_flight = self.doomed.pop()
                    ch.queue_delete(name)
                    ch.exchange_delete("x" + name)
                self.done.append(name)
                self.in_flight = None
                self.count.release()
        except Exception:  # the kill
            return
        finally:
            for _ in range(100):  # nothing more to do: let the main thread kill now
                self.count.release()


def _load(port: int, stop: threading.Event) -> None:
    try:
        ch = _connect(port).channel()
        props = pika.BasicProperties(delivery_mode=2)
        while not stop.is_set():
            ch.basic_publish("", "q-load", b"l" * 2000, props)
    except Exception:
        return


def _check(port: int, declared: set[str], deleted: set[str], bound: set[str]) -> None:
    conn = _connect(port)
    try:
        for name in sorted(declared - deleted):
            ch = conn.channel()
            ch.queue_declare(name, passive=True)  # 404 if lost
            ch.exchange_declare("x" + name, passive=True)
            ch.close()
        for name in sorted(deleted):
            ch = conn.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                ch.queue_declare(name, passive=True)
            assert e.value.reply_code == 404, f"queue {name} resurrected"
            ch = conn.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                ch.exchange_declare("x" + name, passive=True)
            assert e.value.reply_code == 404, f"exchange x{name} resurrected"
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_purge("q-bound")
        for rk in sorted(bound):  # each binding still routes
            ch.basic_publish("x-src", rk, b"b", mandatory=True)
        assert ch.queue_declare("q-bound", passive=True).method.message_count == len(bound)
        ch.queue_purge("q-bound")
    finally:
        conn.close()


def test_kill_right_after_durable_ok(tmp_path) -> None:
    rng = random.Random(25)
    broker = BrokerProcess(str(tmp_path / "data"), "--journal-segment-bytes", str(1 << 20))
    declared: set[str] = set()
    deleted: set[str] = set()
    bound: set[str] = set()
    for cycle in range(CYCLES + 1):
        broker.start()
        try:
            if cycle == 0:
                ch = _connect(broker.port).channel()
                ch.exchange_declare("x-src", "direct", durable=True)
                ch.queue_declare("q-bound", durable=True)
                ch.queue_declare("q-load", durable=True, arguments={"x-max-length": 2000})
                ch.connection.close()
            _check(broker.port, declared, deleted, bound)
            if cycle == CYCLES:
                break
            kind = cycle % 3
            run = _Run(broker.port, kind, cycle, sorted(declared - deleted))
            stop = threading.Event()
            load = threading.Thread(target=_load, args=(broker.port, stop), daemon=True)
            load.start()
            run.thread.start()
            target = rng.randrange(5, 30)
            for _ in range(target):
                if not run.count.acquire(timeout=60):
                    break
        finally:
            broker.kill()
        stop.set()
        run.thread.join(60)
        load.join(60)
        assert run.done, "no change was answered"
        if kind == 0:
            declared.update(run.done)
        elif kind == 1:
            bound.update(run.done)
        else:
            deleted.update(run.done)
            if run.in_flight is not None:
                declared.discard(run.in_flight)
    broker.stop()
    assert declared and bound and deleted


def test_pipelined_methods_keep_their_order_behind_a_durable_declare(broker, unique) -> None:
    """The methods after a durable declare (sent in the same write) wait for its -ok, then
    run in order: replies keep the request order, and the publish reaches the new queue."""
    from amqp_raw import FRAME_METHOD, connect

    from syncmq.wire import _spec
    from syncmq.wire.frames import encode_content, encode_frame

    Q = _spec.Queue
    a, b = f"{unique}-a", f"{unique}-b"
    with connect(broker.port) as c:
        c.open_channel(1)
        data = [encode_frame(FRAME_METHOD, 1, m.encode()) for m in (
            Q.Declare(queue=a, durable=True), Q.Declare(queue=b, auto_delete=True),
            Q.Bind(queue=a, exchange="amq.direct", routing_key=a),
            _spec.Basic.Publish(exchange="amq.direct", routing_key=a))]
        data += [bytes(x) for x in encode_content(1, 60, b"\x10\x00\x02", b"hello", 4096)]
        data += [encode_frame(FRAME_METHOD, 1, m.encode()) for m in (
            Q.Declare(queue=a, passive=True), Q.Delete(queue=a), Q.Delete(queue=b))]
        c.send(b"".join(bytes(x) for x in data))
        assert c.expect_method(1, Q.DeclareOk).queue == a
        assert c.expect_method(1, Q.DeclareOk).queue == b
        c.expect_method(1, Q.BindOk)
        ok = c.expect_method(1, Q.DeclareOk)
        assert (ok.queue, ok.message_count) == (a, 1)
        assert c.expect_method(1, Q.DeleteOk).message_count == 1
        c.expect_method(1, Q.DeleteOk)
