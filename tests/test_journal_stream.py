"""Streamed recovery (``Journal.recover(stream=True)``, the broker's start-up): the same
messages, flags and order as a whole-list recovery, and a peak heap bounded by the live
journal state, not by every recovered message (issue #22)."""

from __future__ import annotations

import tracemalloc

from journal_helpers import barrier, open_journal

from syncmq.journal import Journal
from syncmq.journal import format as fmt


def _fill(path, n: int, fanout: bool = True) -> None:
    j, _ = open_journal(path, segment_bytes=64 * 1024)
    for q in ("a", "b", "c"):
        j.append(fmt.encode_queue_declare("/", q, 0))
    # ids out of log order now and then, some on several queues
    ids = list(range(1, n + 1))
    for k in range(0, n - 1, 7):
        ids[k], ids[k + 1] = ids[k + 1], ids[k]
    for mid in ids:
        queues = ("a", "b") if fanout and mid % 3 == 0 else ("a",) if mid % 2 else ("c",)
        j.append_publish(fmt.encode_publish(mid, "/", queues, "", "rk", b"\x00\x00",
                                            b"x" * (mid % 50)), mid, "/", queues)
    j.append(fmt.encode_delivered("/", "a", [m for m in ids if m % 5 == 0]))
    j.append(fmt.encode_delivered("/", "b", [m for m in ids if m % 4 == 0]))
    j.append(fmt.encode_ack("/", "a", [m for m in ids if m % 11 == 0]))
    barrier(j)
    j.close()


def _recover(path, stream: bool, load_bodies: bool = True):
    j = Journal(path)
    j.open()
    return j, j.recover(load_bodies=load_bodies, stream=stream)


def _view(rec):
    return {q.name: [(m.msg_id, m.exchange, m.routing_key, m.properties, m.body, m.delivered,
                      m.body_len, m.copies) for m in q.iter_messages()]
            for q in rec.queues}


def test_streamed_recovery_hands_over_what_a_whole_recovery_lists(tmp_path):
    _fill(tmp_path, 3000)
    j1, whole = _recover(tmp_path, False)
    expect = _view(whole)
    j1.close()
    assert len(expect["a"]) > 1000 and expect["b"] and expect["c"]
    for load_bodies in (True, False):
        j2, streamed = _recover(tmp_path, True, load_bodies)
        assert [q.count for q in streamed.queues] == [len(expect[q.name])
                                                      for q in streamed.queues]
        got = _view(streamed)
        streamed.release()
        j2.close()
        if not load_bodies:
            expect_meta = {k: [(*m[:4], None, *m[5:]) for m in v] for k, v in expect.items()}
            assert got == expect_meta
        else:
            assert got == expect
    # log order, not id order: the swapped ids come back as they were published
    ids = [m[0] for m in expect["a"]]
    assert ids != sorted(ids)


def _stream_peak(path, n: int) -> float:
    _fill(path, n, fanout=False)
    tracemalloc.start()
    j, rec = _recover(path, True, load_bodies=False)
    count = 0
    for q in rec.queues:
        for _m in q.iter_messages():
            count += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rec.release()
    j.close()
    assert count == sum(q.count for q in rec.queues) > 0.9 * n
    return peak


def test_streamed_recovery_peak_heap_is_the_live_state_not_the_messages(tmp_path):
    """Peak traced heap of a streamed recovery at N and 4N messages: the extra 3N cost what
    the packed journal state and the per-queue id lists cost (~40 bytes a message), where a
    whole-list recovery holds a decoded record and a ``RecoveredMessage`` each (~300)."""
    n = 5000
    small = _stream_peak(tmp_path / "n", n)
    big = _stream_peak(tmp_path / "4n", 4 * n)
    per_message = (big - small) / (3 * n)
    assert per_message < 100, per_message


def test_unclean_restart_journals_delivered_for_every_message_in_pieces(tmp_path, monkeypatch):
    """After an unclean stop every recovered message is redelivered, and ``journal_started``
    makes that durable with DELIVERED records of ``MARK_PIECE`` ids each (a backlog of
    millions is never one list of ids): the next recovery finds every message delivered."""
    import os

    from syncmq.broker import durability as dmod
    from syncmq.broker.broker import Broker
    from syncmq.journal.recovery import CLEAN_MARKER

    n = 200
    _fill(tmp_path, n, fanout=False)
    os.unlink(tmp_path / CLEAN_MARKER)  # as after kill -9
    monkeypatch.setattr(dmod, "MARK_PIECE", 7)
    j = Journal(tmp_path)
    j.open()
    d = dmod.Durability(j)
    b = Broker(durability=d)
    counts = d.recover_into(b)
    assert counts["messages"] > 0.9 * n
    j.start()
    d.journal_started()
    assert d.wait_durable() is None
    j.close()
    j2, rec = _recover(tmp_path, False)
    got = _view(rec)
    j2.close()
    assert sum(len(v) for v in got.values()) == counts["messages"]
    assert all(m[5] for v in got.values() for m in v), "a message not marked delivered"
