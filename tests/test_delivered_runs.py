"""Redelivered marks as runs of ids and the replay of a backlog as runs (issue #22).

After an unclean stop the broker journals the redelivered flag of every recovered message as
DELIVERED_RUNS records (``format.py``, "Delivered runs"), and replay adds a backlog's PUBLISH
records a run at a time (``MessageTable.add_run``). Here: the table's run operations against
their one-id-at-a-time counterparts, bad DELIVERED_RUNS records, a journal with the per-id
marks older versions wrote, and the start's cost at N and 4N messages.
"""

from __future__ import annotations

import os
import random
import struct
import time

import pytest
from journal_helpers import barrier, open_journal

from syncmq.journal import format as fmt
from syncmq.journal.msgtable import CHUNK_BITS, MessageTable
from syncmq.journal.recovery import CLEAN_MARKER

A, B = ("/", "a"), ("/", "b")
N = 1 << CHUNK_BITS


def _table(rnd: random.Random, big: bool = True) -> tuple[MessageTable, list[int]]:
    """A table shaped like a broker's: whole chunks of one queue, of two, gaps, some acked,
    some delivered id by id, and (``big``) one message in ``_big`` (its record past 4 GiB)."""
    t = MessageTable()
    mids: list[int] = []
    mid, off = rnd.choice([1, N - 3]), 0
    for _ in range(rnd.randint(3, 6)):
        shape = rnd.choice(["one", "one", "two", "gap"])
        n = rnd.choice([N, 2 * N, N // 2 + 7])
        for m in range(mid, mid + n, 2 if shape == "gap" else 1):
            t.add(m, 1, off, 100, (A, B) if shape == "two" else (A,))
            mids.append(m)
            off += 100
        mid += n
    if big:
        t.add(mid, 1, 1 << 33, 100, (A,))  # a _big entry
        mids.append(mid)
    for m in rnd.sample(mids, k=len(mids) // 8):
        t.remove(m, A)
    for m in rnd.sample(mids, k=len(mids) // 8):
        t.mark_delivered(m, rnd.choice([A, B]))
    return t, mids


def _flags(t: MessageTable) -> dict:
    return {mid: (v.queues, v.delivered) for mid, v in t.items()}


@pytest.mark.parametrize("seed", range(8))
def test_mark_delivered_run_is_mark_delivered_of_each_id(seed):
    rnd = random.Random(seed)
    t, mids = _table(rnd)
    t2, _ = _table(random.Random(seed))
    lo, hi = min(mids) - 3, max(mids) + 3
    for _ in range(4):
        first = rnd.randint(lo, hi)
        count = rnd.choice([1, 5, N, 3 * N, hi - first + 1])
        qk = rnd.choice([A, B])
        t.mark_delivered_run(qk, first, count)
        for m in range(first, first + count):
            t2.mark_delivered(m, qk)
        assert _flags(t) == _flags(t2)
        t._check()
        want = [m for m in range(first, first + count) if t.is_delivered(m, qk)]
        runs = t.delivered_runs(qk, first, count)
        assert [m for a, n in runs for m in range(a, a + n)] == want
        assert all(a + n < b for (a, n), (b, _m) in zip(runs, runs[1:], strict=False))


def test_a_backlog_marked_as_one_run_costs_a_slice_a_chunk():
    t = MessageTable()
    for m in range(1, 8 * N):
        t.add(m, 1, m * 10, 10, (A,))
    t.mark_delivered_run(A, 1, 8 * N - 1)
    assert all(t.is_delivered(m, A) for m in range(1, 8 * N))
    assert t.delivered_runs(A, 0, 10 * N) == [(1, 8 * N - 1)]
    assert t.delivered_runs(B, 0, 10 * N) == []


@pytest.mark.parametrize("seed", range(6))
def test_add_run_is_add_of_each_id_or_nothing(seed):
    rnd = random.Random(seed)
    t, _ = _table(rnd, big=False)
    t2, _ = _table(random.Random(seed), big=False)
    top = max(t.ids())
    for _ in range(5):
        first = rnd.choice([top + 1, top + rnd.randint(2, 3 * N), top - 5])
        n = rnd.choice([1, 7, N, 2 * N + 3])
        offs = sorted(rnd.sample(range(10**6), n))
        sizes = [rnd.randint(20, 2000) for _ in range(n)]
        route = rnd.choice([(A,), (B,), (A, B)])
        before = _flags(t)
        if t.add_run(range(first, first + n), 2, offs, sizes, route):
            for i in range(n):
                assert t2.add(first + i, 2, offs[i], sizes[i], route)
            top = max(top, first + n - 1)
        else:  # refused: a slot at or after its first id in a chunk it touches
            assert first <= top and _flags(t) == before
        assert _flags(t) == _flags(t2)
        assert {m: t.loc(m) for m in t.ids()} == {m: t2.loc(m) for m in t2.ids()}
        t._check()
    assert not t.add_run(range(top + 1, top + 2), 1 << 33, [0], [10], (A,))  # seg too big
    tb, _ = _table(random.Random(seed))
    assert not tb.add_run(range(10**6, 10**6 + 3), 1, [0, 10, 20], [10] * 3, (A,))  # a _big


def test_bad_delivered_runs_records_are_refused_or_skipped(tmp_path):
    """An empty run cannot be encoded; a CRC-good DELIVERED_RUNS record whose payload does not
    decode (an empty run, a count past its end) is skipped and logged at recovery, and every
    other record still recovers."""
    with pytest.raises(fmt.FormatError):
        fmt.encode_delivered_runs("/", "q", [(5, 0)])
    j, _rec = open_journal(tmp_path)
    j.append(fmt.encode_queue_declare("/", "q", 1, b""))
    for mid in range(1, 4):
        j.append(fmt.encode_publish(mid, "/", ["q"], "", "q", b"", b"m%d" % mid))
    head = struct.pack(">H1sH1s", 1, b"/", 1, b"q")
    j.append(fmt.frame(fmt.T_DELIVERED_RUNS, head + struct.pack(">IQQ", 1, 1, 0)))
    j.append(fmt.frame(fmt.T_DELIVERED_RUNS, head + struct.pack(">IQQ", 2, 1, 3)))
    j.append(fmt.encode_delivered_runs("/", "q", [(2, 1)]))
    barrier(j)
    j.close()
    j, rec = open_journal(tmp_path)
    assert rec.stats.skipped_records == 2
    assert [(m.msg_id, m.delivered) for m in rec.queue("/", "q").messages] == [
        (1, False), (2, True), (3, False)]
    j.close()


def _backlog(path, n: int, per_id_marks: bool = False) -> None:
    """``n`` persistent messages on durable queue q; ``per_id_marks``: then the marks 0.9.0's
    ``journal_started`` wrote after an unclean stop (DELIVERED records of 65,536 ids)."""
    j, _rec = open_journal(path)
    j.append(fmt.encode_queue_declare("/", "q", 1, b""))
    for mid in range(1, n + 1):
        j.append_publish(fmt.encode_publish(mid, "/", ["q"], "", "q", b"", b"x" * 100),
                         mid, "/", ("q",))
    if per_id_marks:
        for a in range(1, n + 1, 65536):
            j.append(fmt.encode_delivered("/", "q", list(range(a, min(a + 65536, n + 1)))))
    barrier(j)
    j._finish()  # as kill -9: no CLEAN marker
    os.close(j._lock_fd)


def _start(path, spill=None):
    """A broker's start on ``path`` as the server does it (recover_into, journal_started);
    with ``spill``, a memory budget and a paged queue (window 64) as ``--memory-budget``
    gives. Returns the broker, its journal and the start's CPU seconds."""
    from syncmq.broker.broker import Broker
    from syncmq.broker.durability import Durability
    from syncmq.journal import Journal
    from syncmq.queues.spill import BodyStore

    c0 = time.process_time()
    journal = Journal(str(path))
    store = None
    if spill is not None:
        store = BodyStore(str(spill), 1 << 20)
        store.page_window = 64
        store.attach_journal(journal.reader)
    broker = Broker(durability=Durability(journal), body_store=store)
    journal.open()
    if store is not None:
        store.open()
    broker.durability.recover_into(broker)
    journal.start()
    broker.durability.journal_started()
    assert broker.durability.wait_durable() is None
    return broker, journal, time.process_time() - c0


def test_a_journal_with_per_id_marks_still_replays(tmp_path):
    """The marks older versions journaled after an unclean stop (DELIVERED id lists) still
    flag their messages: after a clean stop (nothing flagged for being unclean) a message
    is redelivered exactly when such a record named it."""
    n = 3000
    _backlog(tmp_path, n, per_id_marks=True)
    j, _rec = open_journal(tmp_path)
    j.append(fmt.encode_publish(n + 1, "/", ["q"], "", "q", b"", b"new"))
    j.close()  # clean: CLEAN written
    assert os.path.exists(tmp_path / CLEAN_MARKER)
    broker, journal, _cpu = _start(tmp_path)
    q = broker.vhosts["/"].queues["q"]
    flags = [q.ready.pop()[1][1] for _ in range(n + 1)]
    assert flags == [True] * n + [False]
    journal.close()


def _marks_bytes(path) -> int:
    """Bytes of the DELIVERED and DELIVERED_RUNS records in ``path``'s segments."""
    total = 0
    for name in sorted(os.listdir(path)):
        if name.endswith(fmt.SEGMENT_SUFFIX):
            data = (path / name).read_bytes()
            for _off, rtype, length in fmt.iter_records(data)[0]:
                if rtype in (fmt.T_DELIVERED, fmt.T_DELIVERED_RUNS):
                    total += fmt.RECORD_HEADER.size + length
    return total


def test_start_after_kill_costs_flat_per_message_and_its_marks_do_not_grow(tmp_path):
    """The start after an unclean stop at N and 4N messages, with a memory budget (the
    paged queue takes the backlog as id runs, as ``--memory-budget`` does): the redelivered
    marks it journals are the same few bytes (one run), and its CPU per message does not
    grow (a per-message cost that grew with N, or per-id marks, would show as a ratio near
    4 per message or bytes 4x). Then the second start after a second kill: the marks of the
    first are replayed, every message is still flagged, and nothing more is journaled."""
    n = 20_000
    costs = {}
    for k in (n, 4 * n):
        d = tmp_path / str(k)
        _backlog(d, k)
        cpu, marks = [], []
        for _restart in range(2):
            broker, journal, c = _start(d, tmp_path / f"spill-{k}-{_restart}")
            q = broker.vhosts["/"].queues["q"]
            assert q.message_count() == k and q.ready.pop()[1][1]  # redelivered
            cpu.append(c)
            journal._finish()  # kill -9 again
            os.close(journal._lock_fd)
            broker.body_store.close()
            marks.append(_marks_bytes(d))
        # the second start found every message marked by the first: it journals nothing
        assert 0 < marks[0] == marks[1], marks
        costs[k] = (min(cpu) / k, marks[1])
    assert costs[n][1] == costs[4 * n][1] < 100
    ratio = costs[4 * n][0] / costs[n][0]
    print(f"start CPU per message: N={n} {costs[n][0] * 1e6:.2f} us, "
          f"4N {costs[4 * n][0] * 1e6:.2f} us, ratio {ratio:.2f}")
    assert ratio < 2.0, (ratio, costs)
