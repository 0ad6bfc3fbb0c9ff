"""The memory budget (``--memory-budget``): bodies of queued messages beyond it spill to a few
append-only files in ``<data-dir>/spill`` and come back intact, in order, however they leave
the queue; the spill files go once the queues are drained; the broker's RSS stays bounded.

Unit tests of ``syncmq.queues.spill`` first, then a real broker with pika clients.
"""

from __future__ import annotations

import json
import os
import random
import threading

import pika
import pytest
from amqp_helpers import connection

from syncmq.queues.spill import BodyStore, SpillFiles

KiB = 1024
MiB = 1024 * 1024


# ---- syncmq.queues.spill alone ----


class _Msg:
    """What BodyStore needs of a message."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.store_key = 0

    def load_body(self) -> bytes:
        return self.store.load(self)


def test_spill_files_rotate_read_back_and_delete_empty_files(tmp_path):
    d = tmp_path / "spill"
    d.mkdir()
    (d / "00000007.spill").write_bytes(b"left over by a previous run")
    s = SpillFiles(str(d), file_bytes=10 * KiB)
    s.open()
    assert os.listdir(d) == []  # start-up clears what a previous run left
    rng = random.Random(1)
    data = {k: rng.randbytes(rng.randrange(0, 3 * KiB)) for k in range(200)}
    for k, v in data.items():
        s[k] = v
    s._check()
    assert len(s) == 200 and s.bytes == sum(map(len, data.values()))
    assert 1 < s.file_count() < 200 // 2  # rotated, never one file per value
    assert len(os.listdir(d)) == s.file_count()
    for k in rng.sample(list(data), 200):
        assert s[k] == data[k]
    s[3] = b"replaced"
    data[3] = b"replaced"
    assert s[3] == b"replaced"
    # deleting in FIFO order frees the oldest files first
    files_before = s.file_count()
    for k in range(150):
        del s[k]
        s._check()
    assert s.file_count() < files_before
    assert all(s[k] == data[k] for k in range(150, 200))
    for k in range(150, 200):
        del s[k]
    s._check()
    assert len(s) == 0 and s.bytes == 0
    assert sum(os.path.getsize(d / f) for f in os.listdir(d)) == 0
    assert len(os.listdir(d)) <= 1  # at most the (truncated) active file
    with pytest.raises(KeyError):
        s[5]
    s.close()
    assert os.listdir(d) == []


def test_body_store_refcounts_spills_beyond_budget_and_loads_without_promoting(tmp_path):
    store = BodyStore(str(tmp_path / "spill"), budget=64 * KiB, file_bytes=256 * KiB)
    store.open()
    msgs = [_Msg(bytes([i]) * (4 * KiB)) for i in range(100)]
    for m in msgs:
        store.put(m, 2)  # routed to two queues: stored once
        assert m.body is None and m.store_key and m.stored_size == 4 * KiB
    st = store.stats()
    assert st["messages"] == 100
    assert st["memory_bytes"] <= 64 * KiB
    assert st["spilled_messages"] >= 100 - 16
    # the oldest spilled first (zict's LRU); loading does not bring them back into memory
    assert msgs[0].load_body() == bytes([0]) * (4 * KiB)
    assert store.stats()["spilled_messages"] == st["spilled_messages"]
    for i, m in enumerate(msgs):
        assert m.load_body() == bytes([i]) * (4 * KiB)
    for m in msgs:
        store.release(m)  # the first queue is done: still there for the second
    assert store.stats()["messages"] == 100
    store.release_many(msgs)
    st = store.stats()
    assert st["messages"] == 0 and st["spilled_bytes"] == 0 and st["memory_bytes"] == 0
    unstored = _Msg(b"x")
    store.release(unstored)  # never stored (store_key 0): ignored
    store.close()


def test_body_store_is_safe_from_many_threads(tmp_path):
    store = BodyStore(str(tmp_path / "spill"), budget=32 * KiB, file_bytes=64 * KiB)
    store.open()
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                batch = [_Msg(rng.randbytes(rng.randrange(1, 2 * KiB))) for _ in range(5)]
                expect = [m.body for m in batch]
                for m in batch:
                    store.put(m, 1)
                for m, b in zip(batch, expect, strict=True):
                    assert m.load_body() == b
                store.release_many(batch)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert store.stats()["messages"] == 0
    store.slow._check()
    store.close()


# ---- a real broker ----


def _spill_files(b) -> dict[str, int]:
    d = os.path.join(b.data_dir, "spill")
    return {f: os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)}


def _rss_kib(b) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the broker process in KiB."""
    fields = {}
    with open(f"/proc/{b.proc.pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _store_stats_at_stop(b) -> dict:
    assert b.stop() == 0, b.log_tail()
    line = b.wait_for_log("body store closed")
    return json.loads(line)["body_store"]


def _bodies(n: int, seed: int) -> list[bytes]:
    """Distinct bodies: mostly 1 KiB, every 8th 64 KiB (the index is in the first bytes)."""
    rng = random.Random(seed)
    return [i.to_bytes(4, "big") + rng.randbytes((64 * KiB if i % 8 == 7 else KiB) - 4)
            for i in range(n)]


def _consume(conn, ch, queue: str, n: int, prefetch: int = 200) -> list[bytes]:
    got: list[bytes] = []
    ch.basic_qos(prefetch_count=prefetch)

    def on_msg(_ch, method, _props, body):
        got.append(body)
        _ch.basic_ack(method.delivery_tag)
        if len(got) == n:
            _ch.stop_consuming()

    tag = ch.basic_consume(queue, on_msg)
    conn.call_later(60, ch.stop_consuming)
    ch.start_consuming()
    ch.basic_cancel(tag)
    return got


def test_backlog_spills_to_a_few_files_and_drains_intact_in_order(broker_factory):
    b = broker_factory("--memory-budget", "2MiB")
    bodies = _bodies(4400, seed=7)  # ~40 MB to one queue, ~1/4 of it to a second one too
    volume = sum(map(len, bodies))
    assert volume > 36 * MiB
    rss0, _ = _rss_kib(b)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("big")
        ch.queue_declare("also")
        ch.exchange_declare("both", "fanout")
        ch.queue_bind("big", "both")
        ch.queue_bind("also", "both")
        ch.confirm_delivery()
        also = []
        for i, body in enumerate(bodies):
            if i % 4 == 0:
                ch.basic_publish("both", "", body)
                also.append(body)
            else:
                ch.basic_publish("", "big", body)
        files = _spill_files(b)
        spilled = sum(files.values())
        assert spilled > volume - 8 * MiB, (spilled, volume)  # all but ~the budget
        assert 2 <= len(files) <= 20, files  # a few files, not one per message
        rss, _ = _rss_kib(b)
        # bounded: the budget, the per-message index, allocator slack; not the backlog
        assert (rss - rss0) * KiB < volume / 2, (rss0, rss, volume)

        got = _consume(conn, ch, "big", len(bodies))
        assert len(got) == len(bodies)
        assert got == bodies  # intact and in order (the 1/4 routed twice too)
        # the other queue still has its copies
        got_also = _consume(conn, ch, "also", len(also))
        assert got_also == also
        ch.queue_declare("big", passive=True)
    # drained: nothing left on disk (at most the truncated active file)
    files = _spill_files(b)
    assert sum(files.values()) == 0 and len(files) <= 1, files
    st = _store_stats_at_stop(b)
    assert st["messages"] == 0 and st["memory_bytes"] == 0, st


def test_requeue_on_connection_close_and_get_return_spilled_bodies(broker_factory):
    b = broker_factory("--memory-budget", "256KiB")
    bodies = _bodies(400, seed=3)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("rq")
        for body in bodies:
            ch.basic_publish("", "rq", body)
        # a round trip on the channel: every publish before it has been handled (and spilled)
        assert ch.queue_declare("rq", passive=True).method.message_count == len(bodies)
        assert sum(_spill_files(b).values()) > 2 * MiB
        # a consumer takes 150 without acking, then its connection goes: they are requeued
        with connection(b.port) as c2:
            ch2 = c2.channel()
            ch2.basic_qos(prefetch_count=150)
            seen: list[bytes] = []

            def on_msg(_ch, _method, _props, body):
                seen.append(body)
                if len(seen) == 150:
                    _ch.stop_consuming()

            ch2.basic_consume("rq", on_msg)
            c2.call_later(30, ch2.stop_consuming)
            ch2.start_consuming()
            assert seen == bodies[:150]
        # basic.get, ack mode (reject one with requeue, ack the rest) and no-ack
        m, _p, body = ch.basic_get("rq")
        assert m.redelivered and body == bodies[0]
        ch.basic_reject(m.delivery_tag, requeue=True)
        got = []
        for i in range(len(bodies)):
            m, _p, body = ch.basic_get("rq", auto_ack=(i % 2 == 0))
            assert m is not None, i
            assert m.redelivered == (i < 150), i
            got.append(body)
            if i % 2:
                ch.basic_ack(m.delivery_tag)
        assert got == bodies
        assert ch.basic_get("rq")[0] is None
    files = _spill_files(b)
    assert sum(files.values()) == 0, files
    st = _store_stats_at_stop(b)
    assert st["messages"] == 0, st


def test_purge_delete_ttl_and_dead_letters_release_spilled_bodies(broker_factory):
    b = broker_factory("--memory-budget", "64KiB")
    bodies = _bodies(120, seed=5)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("p")
        ch.queue_declare("d")
        ch.queue_declare("dead")
        ch.queue_declare("ttl", arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                           "x-dead-letter-routing-key": "dead"})
        ch.queue_declare("lim", arguments={"x-max-length": 10, "x-dead-letter-exchange": "",
                                           "x-dead-letter-routing-key": "dead"})
        for body in bodies:
            for q in ("p", "d", "lim"):
                ch.basic_publish("", q, body)
        ch.confirm_delivery()
        for body in bodies[:20]:
            ch.basic_publish("", "ttl", body)  # expires at once: dead-lettered, body intact
        assert ch.queue_purge("p").method.message_count == len(bodies)
        ch.queue_delete("d")
        # lim kept its last 10; 110 heads were dead-lettered, then the 20 expired ones
        expect_dead = bodies[:110] + bodies[:20]
        got = _consume(conn, ch, "dead", len(expect_dead))
        assert got == expect_dead
        got = _consume(conn, ch, "lim", 10)
        assert got == bodies[110:]
    files = _spill_files(b)
    assert sum(files.values()) == 0, files
    st = _store_stats_at_stop(b)
    assert st["messages"] == 0, st


def test_persistent_messages_recover_from_the_journal_with_a_budget(brokers_on_dir):
    start, restart = brokers_on_dir
    b = start("--memory-budget", "128KiB")
    bodies = _bodies(200, seed=11)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("durable-q", durable=True)
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", "durable-q", body,
                             pika.BasicProperties(delivery_mode=2))
        assert sum(_spill_files(b).values()) > MiB
    assert b.stop() == 0, b.log_tail()
    b2 = restart(b, "--memory-budget", "128KiB")
    # recovered messages go into the store too (spilled beyond the budget)
    assert sum(_spill_files(b2).values()) > MiB
    with connection(b2.port) as conn:
        ch = conn.channel()
        got = _consume(conn, ch, "durable-q", len(bodies))
        assert got == bodies
    assert sum(_spill_files(b2).values()) == 0
    # acked: gone after another restart too
    assert b2.stop() == 0
    b3 = restart(b2, "--memory-budget", "128KiB")
    with connection(b3.port) as conn:
        ch = conn.channel()
        assert ch.queue_declare("durable-q", durable=True).method.message_count == 0


@pytest.fixture
def brokers_on_dir(tmp_path_factory):
    from brokerproc import BrokerProcess

    started = []
    data_dir = str(tmp_path_factory.mktemp("syncmq-data"))

    def start(*extra):
        b = BrokerProcess(data_dir, *extra).start()
        started.append(b)
        return b

    def restart(old, *extra):
        assert old.proc.poll() is not None
        return start(*extra)

    yield start, restart
    for b in started:
        if b.proc.poll() is None:
            b.stop()
        assert not b.tracebacks(), "\n".join(b.tracebacks())
