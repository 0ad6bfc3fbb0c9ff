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
from brokerproc import fd_targets
from journal_helpers import open_journal

from syncmq.queues.spill import BodyStore, SpillFiles

KiB = 1024
MiB = 1024 * 1024


# ---- syncmq.queues.spill alone ----


class _Msg:
    """What BodyStore needs of a message."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.store_key = 0
        self.properties = b"\x10\x00\x02"
        self.routing_key = "rk"

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
        assert m.body is None and m.store_key and m.size == 4 * KiB
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


def test_body_store_shares_repeated_sizes_properties_and_routing_keys(tmp_path):
    store = BodyStore(str(tmp_path / "spill"), budget=64 * KiB)
    store.open()
    msgs = []
    for i in range(3):
        m = _Msg(bytes(bytearray(1000)))
        m.properties = bytes(bytearray(b"\x10\x00\x02"))  # equal, distinct objects
        m.routing_key = "".join(["r", "k", str(i % 2)])
        msgs.append(m)
    assert msgs[0].properties is not msgs[1].properties
    for m in msgs:
        store.put(m, 1)
    assert msgs[0].properties is msgs[1].properties is msgs[2].properties
    assert msgs[0].routing_key is msgs[2].routing_key and msgs[1].routing_key == "rk1"
    assert msgs[0].size is msgs[1].size == 1000
    store.release_many(msgs)
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


def test_persistent_bodies_are_read_back_from_the_journal_not_written_twice(brokers_on_dir):
    start, restart = brokers_on_dir
    b = start("--memory-budget", "128KiB")
    bodies = _bodies(200, seed=11)
    volume = sum(map(len, bodies))
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("durable-q", durable=True)
        ch.queue_declare("transient-q")
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", "durable-q", body,
                             pika.BasicProperties(delivery_mode=2))
        # every body beyond the budget left memory, and none was written to a spill file:
        # the journal has them (confirmed, so fsynced, before they were evicted)
        assert sum(_spill_files(b).values()) == 0
        # the same bodies as transient messages do spill (the store works as before)
        for body in bodies[:40]:
            ch.basic_publish("", "transient-q", body)
        assert sum(_spill_files(b).values()) > sum(map(len, bodies[:40])) - 256 * KiB
        got = _consume(conn, ch, "transient-q", 40)
        assert got == bodies[:40]
    st = _store_stats_at_stop(b)
    assert st["journal_messages"] > 150 and st["journal_bytes"] > volume - 256 * KiB, st
    assert st["spill_written_bytes"] < sum(map(len, bodies[:40])) + 1, st
    b2 = restart(b, "--memory-budget", "128KiB")
    # recovered messages go into the store too, and are evicted to references again
    assert sum(_spill_files(b2).values()) == 0
    with connection(b2.port) as conn:
        ch = conn.channel()
        got = _consume(conn, ch, "durable-q", len(bodies))
        assert got == bodies
    assert sum(_spill_files(b2).values()) == 0
    st = _store_stats_at_stop(b2)
    assert st["messages"] == 0 and st["journal_fds"] == 0 and st["spill_written_bytes"] == 0, st
    # acked: gone after another restart too
    b3 = restart(b2, "--memory-budget", "128KiB")
    with connection(b3.port) as conn:
        ch = conn.channel()
        assert ch.queue_declare("durable-q", durable=True).method.message_count == 0


# ---- persistent bodies read back from the journal (syncmq.journal.reader) ----


class _PMsg(_Msg):
    """A journaled message as the store sees it."""

    def __init__(self, body: bytes, msg_id: int) -> None:
        super().__init__(body)
        self.msg_id = msg_id


def _journal_and_store(tmp_path, budget: int, segment_bytes: int = 64 * KiB):
    from syncmq.journal import format as jf

    j, _ = open_journal(str(tmp_path / "data"), segment_bytes=segment_bytes, auto_compact=False)
    j.append(jf.encode_queue_declare("/", "keep", 1, b""))
    j.append(jf.encode_queue_declare("/", "churn", 1, b""))
    store = BodyStore(str(tmp_path / "data" / "spill"), budget=budget, file_bytes=256 * KiB)
    store.attach_journal(j.reader)
    store.open()
    return j, store


def _publish_journaled(j, store, bodies: dict[int, bytes], queue_of) -> dict[int, _PMsg]:
    """PUBLISH records for ``bodies`` (msg_id -> body), fsynced, then put in the store."""
    from syncmq.journal import format as jf

    for mid, body in bodies.items():
        j.append(jf.encode_publish(mid, "/", [queue_of(mid)], "", "rk", b"\x00\x00", body))
    done = threading.Event()
    j.sync_barrier(lambda _e: done.set())
    assert done.wait(30)
    msgs = {}
    for mid, body in bodies.items():
        m = msgs[mid] = _PMsg(body, mid)
        store.put(m, 1, journaled=True)
    return msgs


def _ack(j, queue: str, ids: list[int]) -> None:
    from syncmq.journal import format as jf

    j.append(jf.encode_ack("/", queue, ids))
    done = threading.Event()
    j.sync_barrier(lambda _e: done.set())
    assert done.wait(30)


def _deleted_segment_fds(under) -> list[str]:
    """Our open fds on journal segment files under ``under`` that were deleted or replaced."""
    return [t for t in fd_targets()
            if t.startswith(str(under)) and ".seg" in t and t.endswith("(deleted)")]


def test_journaled_bodies_are_referenced_not_spilled_and_survive_compaction(tmp_path):
    j, store = _journal_and_store(tmp_path, budget=16 * KiB)
    rng = random.Random(4)
    bodies = {mid: mid.to_bytes(4, "big") + rng.randbytes(rng.randrange(0, 3 * KiB))
              for mid in range(1, 601)}
    msgs = _publish_journaled(j, store, bodies, lambda mid: "keep" if mid % 3 == 0 else "churn")
    st = store.stats()
    assert st["journal_messages"] >= 590 and st["spilled_messages"] == st["journal_messages"]
    assert st["spill_written_bytes"] == 0 and st["spill_file_bytes"] == 0  # written once only
    assert st["memory_bytes"] <= 16 * KiB
    store.slow._check()
    segs_before = j.segment_numbers()
    assert len(segs_before) > 5
    # two thirds die: the closed segments fall below half live and compaction rewrites them,
    # moving the records of the spilled "keep" messages to new files
    churn = [mid for mid in bodies if mid % 3]
    _ack(j, "churn", churn)
    for mid in churn:
        store.release(msgs[mid])
    assert j.compact(timeout=60) >= 1
    assert j.compaction_stats.segments_deleted > 0
    assert j.segment_numbers() != segs_before
    store.slow._check()
    # every reference now points at a file that is still in the directory: the replaced
    # segments' inodes are not held open (disk use follows compaction)
    assert _deleted_segment_fds(tmp_path) == []
    for mid in bodies:
        if mid % 3 == 0:
            assert msgs[mid].load_body() == bodies[mid], mid
    assert store.stats()["spill_written_bytes"] == 0
    # a body read after its message died in the journal (dead letter, no-ack get) is still
    # intact: its reference pins the bytes even once compaction has dropped the record
    keep = [mid for mid in bodies if mid % 3 == 0]
    _ack(j, "keep", keep[:50])
    assert j.compact(timeout=60) >= 1
    for mid in keep[:50]:
        assert msgs[mid].load_body() == bodies[mid], mid
    store.release_many([msgs[mid] for mid in keep])
    st = store.stats()
    assert st["messages"] == 0 and st["journal_messages"] == 0 and st["journal_fds"] == 0
    j.close()
    store.close()
    assert _deleted_segment_fds(tmp_path) == []


def test_bodies_spill_while_their_record_is_not_durable_or_not_in_the_journal(tmp_path):
    j, store = _journal_and_store(tmp_path, budget=4 * KiB)
    # a journaled message whose PUBLISH record the journal does not have (yet): spilled
    ghost = _PMsg(b"g" * (8 * KiB), 99999)
    store.put(ghost, 1, journaled=True)
    # put with journaled=False (e.g. also routed to a non-durable queue): spilled too
    from syncmq.journal import format as jf

    j.append(jf.encode_publish(5, "/", ["keep"], "", "rk", b"\x00\x00", b"m" * (8 * KiB)))
    done = threading.Event()
    j.sync_barrier(lambda _e: done.set())
    assert done.wait(30)
    mixed = _PMsg(b"m" * (8 * KiB), 5)
    store.put(mixed, 2, journaled=False)
    st = store.stats()
    assert st["journal_messages"] == 0 and st["spill_written_bytes"] == 16 * KiB
    assert ghost.load_body() == b"g" * (8 * KiB) and mixed.load_body() == b"m" * (8 * KiB)
    # without a journal attached the key is a plain one
    j.close()
    store.close()


def _broker_deleted_segment_fds(b) -> list[str]:
    out = []
    d = f"/proc/{b.proc.pid}/fd"
    for fd in os.listdir(d):
        try:
            target = os.readlink(f"{d}/{fd}")
        except OSError:
            continue
        if ".seg" in target and target.endswith("(deleted)"):
            out.append(target)
    return out


def _seg_bytes(b) -> int:
    """Bytes of the journal's segment files (those in the directory)."""
    total = 0
    for f in os.listdir(b.data_dir):
        if f.endswith(".seg"):
            try:
                total += os.path.getsize(os.path.join(b.data_dir, f))
            except FileNotFoundError:
                pass
    return total


def _wait(cond, what: str, timeout: float = 30.0) -> None:
    """Wait (bounded) for a condition on the broker's files, checking every 50 ms."""
    ev = threading.Event()
    deadline = timeout / 0.05
    n = 0
    while not cond():
        n += 1
        if n > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        ev.wait(0.05)


def _publish_keep_and_churn(b, n: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """Persistent bodies to durable "keep" (every 4th) and "churn" (the rest), confirmed."""
    rng = random.Random(seed)
    keep, churn = [], []
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("keep", durable=True)
        ch.queue_declare("churn", durable=True)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2)
        for i in range(n):
            body = i.to_bytes(4, "big") + rng.randbytes(rng.randrange(0, 2 * KiB))
            q = "keep" if i % 4 == 0 else "churn"
            (keep if q == "keep" else churn).append(body)
            ch.basic_publish("", q, body, props)
    return keep, churn


def test_compaction_while_spilled_persistent_bodies_are_referenced_then_restart(
        brokers_on_dir):
    start, restart = brokers_on_dir
    args = ("--memory-budget", "32KiB", "--journal-segment-bytes", "64KiB")
    b = start(*args)
    keep, churn = _publish_keep_and_churn(b, 2400, seed=21)
    assert sum(_spill_files(b).values()) == 0  # referenced in the journal, not spilled
    seg_bytes = _seg_bytes(b)
    assert seg_bytes > 20 * 64 * KiB  # many segments
    with connection(b.port) as conn:
        ch = conn.channel()
        assert _consume(conn, ch, "churn", len(churn)) == churn
    # three quarters of every closed segment died: compaction rewrites them, moving the
    # records of "keep", whose bodies are referenced by the body store
    b.wait_for_log("journal compaction:", timeout=60)
    _wait(lambda: _seg_bytes(b) < seg_bytes / 2, "compaction to shrink the journal", timeout=60)
    # the references followed the records: no replaced segment is held open
    _wait(lambda: _broker_deleted_segment_fds(b) == [], "no fd on a deleted segment")
    with connection(b.port) as conn:
        ch = conn.channel()
        half = len(keep) // 2
        assert _consume(conn, ch, "keep", half) == keep[:half]  # byte for byte
    assert sum(_spill_files(b).values()) == 0
    st = _store_stats_at_stop(b)
    assert st["spill_written_bytes"] == 0, st
    b2 = restart(b, *args)
    with connection(b2.port) as conn:
        ch = conn.channel()
        assert _consume(conn, ch, "keep", len(keep) - half) == keep[half:]
        assert ch.queue_declare("keep", durable=True).method.message_count == 0
        assert ch.queue_declare("churn", durable=True).method.message_count == 0
    assert sum(_spill_files(b2).values()) == 0


def test_kill_9_while_persistent_bodies_are_spilled_loses_nothing(brokers_on_dir):
    start, restart = brokers_on_dir
    args = ("--memory-budget", "32KiB", "--journal-segment-bytes", "64KiB")
    b = start(*args)
    keep, churn = _publish_keep_and_churn(b, 1600, seed=22)
    with connection(b.port) as conn:
        ch = conn.channel()
        # drain some of churn (compaction may be running when the broker dies)
        ch.basic_qos(prefetch_count=100)
        got = _consume(conn, ch, "churn", 600)
        assert got == churn[:600]
    b.kill()
    b2 = restart(b, *args)
    assert sum(_spill_files(b2).values()) == 0  # emptied at start-up, nothing spilled since
    with connection(b2.port) as conn:
        ch = conn.channel()
        assert _consume(conn, ch, "keep", len(keep)) == keep
        # acks not yet durable when killed may bring some of the first 600 back
        n = ch.queue_declare("churn", durable=True).method.message_count
        assert len(churn) - 600 <= n <= len(churn)
        rest = _consume(conn, ch, "churn", n)
        assert rest == churn[len(churn) - n:]
    st = _store_stats_at_stop(b2)
    assert st["messages"] == 0 and st["spill_written_bytes"] == 0, st


def test_recovery_leaves_journaled_bodies_in_the_journal(tmp_path):
    """With a budget, recovery reads no body into memory: every recovered message of a durable
    queue becomes a reference into the journal at once (a restart with a backlog larger than
    RAM costs the index), and the bodies read back intact."""
    from syncmq.broker.broker import Broker
    from syncmq.broker.durability import Durability
    from syncmq.journal import Journal
    from syncmq.journal import format as jf
    from syncmq.wire import _spec

    data = str(tmp_path / "data")
    props = _spec.BasicProperties(delivery_mode=2).encode()
    rng = random.Random(8)
    bodies = {mid: rng.randbytes(rng.randrange(1, 4 * KiB)) for mid in range(1, 301)}
    j, _ = open_journal(data, segment_bytes=64 * KiB)
    j.append(jf.encode_queue_declare("/", "dq", 1, b""))
    for mid, body in bodies.items():
        j.append(jf.encode_publish(mid, "/", ["dq"], "", "dq", props, body))
    j.close()

    j2 = Journal(data, segment_bytes=64 * KiB)
    store = BodyStore(os.path.join(data, "spill"), budget=1 * MiB)
    store.attach_journal(j2.reader)
    broker = Broker(durability=Durability(j2), body_store=store)
    j2.open()
    store.open()
    counts = broker.durability.recover_into(broker)
    assert counts["messages"] == 300
    st = store.stats()
    assert st["journal_messages"] == 300 and st["memory_bytes"] == 0, st
    assert st["spill_written_bytes"] == 0
    q = broker.vhosts["/"].queues["dq"]
    got = []
    while (item := q.get(no_ack=True)) is not None:
        got.append((item[1].msg_id, item[1].body))
    assert got == list(bodies.items())
    j2.close()
    store.close()


# ---- a persistent message on several durable queues, recovered with a budget ----


def _publish_fanout(b, queues: list[str], n: int, seed: int) -> list[bytes]:
    """Persistent bodies through a fanout exchange bound to durable ``queues``, confirmed."""
    bodies = _bodies(n, seed)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.exchange_declare("fan", "fanout", durable=True)
        for q in queues:
            ch.queue_declare(q, durable=True)
            ch.queue_bind(q, "fan")
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2)
        for body in bodies:
            ch.basic_publish("fan", "", body, props)
    return bodies


def _drain_all_after_restart(b2, queues: list[str], bodies: list[bytes]) -> None:
    with connection(b2.port) as conn:
        ch = conn.channel()
        # the first queue acks every copy; the others must still have their bodies
        assert _consume(conn, ch, queues[0], len(bodies)) == bodies
        for q in queues[1:]:
            assert _consume(conn, ch, q, len(bodies)) == bodies  # byte for byte
            assert ch.queue_declare(q, durable=True).method.message_count == 0
    st = _store_stats_at_stop(b2)
    assert st["messages"] == 0 and st["journal_fds"] == 0, st


@pytest.mark.parametrize("stop", ["restart", "kill_9"])
def test_restart_keeps_one_body_per_message_routed_to_several_durable_queues(
        brokers_on_dir, stop):
    """Recovery used to make one body-store entry with one reference per queue copy under the
    same key (the msg_id), each replacing the previous: acking the copies of one queue deleted
    the bodies of the others (KeyError in delivery, the consumer's connection closed 541)."""
    start, restart = brokers_on_dir
    args = ("--memory-budget", "128KiB")
    queues = ["fan-1", "fan-2", "fan-3"]
    b = start(*args)
    bodies = _publish_fanout(b, queues, 120, seed=31)  # ~1.1 MB: mostly evicted
    if stop == "kill_9":
        b.kill()
    else:
        assert b.stop() == 0, b.log_tail()
    b2 = restart(b, *args)
    _drain_all_after_restart(b2, queues, bodies)


def test_recovery_stores_a_message_on_several_queues_once(tmp_path):
    """In-process: one store entry per recovered body, one reference per queue holding it,
    the same ``Message`` on each queue (as a live publish routes it)."""
    from syncmq.broker.broker import Broker
    from syncmq.broker.durability import Durability
    from syncmq.journal import Journal
    from syncmq.journal import format as jf
    from syncmq.wire import _spec

    data = str(tmp_path / "data")
    props = _spec.BasicProperties(delivery_mode=2).encode()
    rng = random.Random(9)
    bodies = {mid: rng.randbytes(rng.randrange(1, 4 * KiB)) for mid in range(1, 101)}
    j, _ = open_journal(data, segment_bytes=64 * KiB)
    for q in ("a", "b", "c"):
        j.append(jf.encode_queue_declare("/", q, 1, b""))
    for mid, body in bodies.items():
        # every other message to all three queues, the rest to "a" and "c"
        names = ["a", "b", "c"] if mid % 2 else ["a", "c"]
        j.append(jf.encode_publish(mid, "/", names, "", "a", props, body))
    j.close()

    for budget in (0, 1 * MiB):  # references into the journal, or bodies read at recovery
        j2 = Journal(data, segment_bytes=64 * KiB)
        store = BodyStore(os.path.join(data, f"spill{budget}"), budget=max(budget, 1))
        if budget:
            store.attach_journal(j2.reader)
        broker = Broker(durability=Durability(j2), body_store=store)
        j2.open()
        store.open()
        counts = broker.durability.recover_into(broker)
        assert counts["messages"] == 250
        assert store.stats()["messages"] == 100, store.stats()
        qs = broker.vhosts["/"].queues
        got: dict[str, list] = {}
        for name in ("a", "c", "b"):
            got[name] = []
            while (item := qs[name].get(no_ack=True)) is not None:
                got[name].append((item[1].msg_id, item[1].body))
            if name == "a":
                assert store.stats()["messages"] == 100  # the other queues still hold them
        assert got["a"] == got["c"] == list(bodies.items())
        assert got["b"] == [(m, b) for m, b in bodies.items() if m % 2]
        assert store.stats()["messages"] == 0
        j2.close()
        store.close()
