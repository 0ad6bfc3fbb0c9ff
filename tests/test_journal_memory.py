"""The journal gives back what a drained backlog made it hold (issue #22).

Every message a drain acks is a dead PUBLISH until compaction drops its segment; the journal
state lists it in ``dead_seg`` (a dict: id -> segment) and in its segment's ``dead_ids``. Once
compaction dropped those segments, ``dead_seg`` must not keep the table of its largest size
(CPython dicts never shrink on deletion): what stays after a backlog of N then 4N drained does
not depend on N.
"""

from __future__ import annotations

import sys

from journal_helpers import barrier, open_journal

from syncmq.journal import format as fmt
from syncmq.journal.state import FIT_MIN, fit


def _backlog(j, first: int, n: int) -> None:
    """``n`` persistent messages published to ``q``, then all acked (a FIFO drain)."""
    for mid in range(first, first + n):
        j.append(fmt.Publish(mid, "/", ("q",), "", "q", b"\x90\x00", b"b" * 64).encode())
    for mid in range(first, first + n, 100):
        j.append(fmt.Ack("/", "q", tuple(range(mid, min(mid + 100, first + n)))).encode())
    barrier(j)


def test_dead_ids_table_comes_back_after_a_drained_backlog(tmp_path):
    j, _ = open_journal(tmp_path, segment_bytes=64 * 1024, auto_compact=False)
    j.append(fmt.QueueDeclare("/", "q", 0b10, b"").encode())
    st = j._state  # journal thread idle between barriers: safe to inspect
    left = {}
    first = 1
    for n in (20_000, 80_000):
        _backlog(j, first, n)
        first += n
        peak = sys.getsizeof(st.dead_seg)
        assert len(st.dead_seg) >= n // 2  # drained messages are dead PUBLISHes on disk
        j.compact()  # drops every closed segment: only the current one's dead ids stay
        st.check()
        assert len(st.dead_seg) < 2000
        left[n] = sys.getsizeof(st.dead_seg)
        assert left[n] < peak // 10, (n, peak, left[n])
    assert left[80_000] <= max(FIT_MIN, 2 * left[20_000]), left
    j.close()


def test_fit_rebuilds_in_place_only_a_mostly_empty_table():
    d = {i: i & 7 for i in range(100_000)}
    same = d
    for i in range(60_000):  # 40% still there: left alone (a rebuild would not pay)
        del d[i]
    size = sys.getsizeof(d)
    assert not fit(d) and sys.getsizeof(d) == size
    for i in range(60_000, 99_000):
        del d[i]
    assert fit(d)
    assert d is same and d == {i: i & 7 for i in range(99_000, 100_000)}
    assert sys.getsizeof(d) < size // 50
    assert not fit(d)  # nothing oversized left: nothing rebuilt
    assert not fit({})  # small tables never are


def test_a_mostly_dead_current_segment_is_closed_and_compacted(tmp_path, monkeypatch):
    """Compaction takes closed segments only: a drained backlog of small messages that fits
    in the current segment (64 MiB: ~600,000 records of ~100 bytes) left every one of them a
    dead id in the state until new records filled the segment. Once the current segment
    holds ROLL_DEAD dead PUBLISH records and little live, the journal closes it; compaction
    then drops it and the dead ids with it."""
    from syncmq.journal import segfiles

    monkeypatch.setattr(segfiles, "ROLL_DEAD", 5_000)
    j, _ = open_journal(tmp_path)  # 64 MiB segments, auto compaction
    j.append(fmt.QueueDeclare("/", "q", 0b10, b"").encode())
    barrier(j)
    first_seg = j._seg_no
    _backlog(j, 1, 20_000)  # ~3 MB of records: far from filling a segment
    j.append(fmt.QueueDeclare("/", "q2", 0b10, b"").encode())  # a batch after the drain
    barrier(j)
    j.compact()
    st = j._state
    st.check()
    assert j._seg_no > first_seg, "the dead current segment was not closed"
    assert len(st.dead_seg) < 5_000, len(st.dead_seg)
    assert sum(len(s.dead_ids) for s in st.segments.values()) < 5_000
    j.close()
    # the queue declares survive (the roll and compaction kept what is live)
    j2, rec = open_journal(tmp_path, start=False)
    assert {q.name for q in rec.queues} >= {"q", "q2"}
    j2.close()
