"""``MessageTable.by_queue``'s whole-chunk runs and ``alone_on``, against a plain model
(``fuzz/test_msgtable_state.py`` rarely fills a chunk; these do: a backlog's shape)."""

from __future__ import annotations

import random

import pytest

from syncmq.journal.idruns import IdRuns
from syncmq.journal.msgtable import CHUNK_BITS, MessageTable

A, B = ("/", "a"), ("/", "b")
N = 1 << CHUNK_BITS


def _expect(_t: MessageTable, live: dict[int, tuple]) -> dict:
    out: dict = {}
    for mid, (_seg, _off, route) in sorted(live.items(), key=lambda kv: kv[1][:2]):
        for qk in route:
            out.setdefault(qk, []).append(mid)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_by_queue_is_log_order_with_whole_chunks_as_runs(seed):
    rnd = random.Random(seed)
    t = MessageTable()
    live: dict[int, tuple] = {}
    off = 0
    mid = rnd.choice([1, N - 3, N])
    for _ in range(rnd.randint(3, 6)):
        shape = rnd.choice(["run", "two", "shuffled", "gap"])
        n = rnd.choice([N, 2 * N, N // 2 + 7])
        mids = list(range(mid, mid + n))
        if shape == "gap":
            mids = mids[::2]
        order = mids[:]
        if shape == "shuffled":  # ids in another order than the log
            rnd.shuffle(order)
        for m in order:
            route = (A, B) if shape == "two" else (A,)
            t.add(m, 1, off, 100, route)
            live[m] = (1, off, route)
            off += 100
        mid += n
    for m in rnd.sample(sorted(live), k=len(live) // 10):  # some acked
        for qk in live[m][2]:
            t.remove(m, qk)
        del live[m]
    for m in rnd.sample(sorted(live), k=len(live) // 10):
        t.mark_delivered(m, A)
    got = {qk: list(ids) for qk, ids in t.by_queue().items()}
    assert got == _expect(t, live)
    assert t.alone_on(A) == all(len(r) == 1 for *_x, r in live.values())


def test_a_full_chunk_of_one_queue_costs_one_run():
    t = MessageTable()
    for m in range(N, 5 * N):
        t.add(m, 1, m * 10, 10, (A,))
    t.mark_delivered(N + 5, A)
    ids = t.by_queue()[A]
    assert list(ids) == list(range(N, 5 * N))
    assert ids.nbytes() == 16 and t.alone_on(A)


def test_idruns_runs_and_append_run():
    r = IdRuns()
    r.append(5)
    r.append_run(6, 10)
    r.append_run(20, 1)
    r.append_run(30, 4)
    r.append(34)
    want = [5, *range(6, 16), 20, *range(30, 35)]
    assert list(r) == want and len(r) == len(want)
    for skip in range(len(want) + 1):
        flat = [a + i for a, n in r.runs(skip) for i in range(n)]
        assert flat == want[skip:], skip


@pytest.mark.parametrize("case", ["shuffled", "earlier"])
def test_a_full_chunk_out_of_log_order_is_not_taken_as_a_run(case):
    """A chunk whose ids are not in log order, or that was logged before the previous one:
    the queue still comes out in log order."""
    t = MessageTable()
    live = {}
    tail = list(range(2 * N, 3 * N))
    if case == "shuffled":
        random.Random(1).shuffle(tail)
    for off, m in enumerate([*range(N, 2 * N), *tail]):
        t.add(m, 1, off, 10, (A,))
        live[m] = (1, off, (A,))
    if case == "earlier":
        for m in range(3 * N, 4 * N):  # a full chunk logged before the others (segment 0)
            t.add(m, 0, m, 10, (A,))
            live[m] = (0, m, (A,))
    got = {qk: list(ids) for qk, ids in t.by_queue().items()}
    assert got == _expect(t, live)


@pytest.mark.parametrize("seed", range(8))
def test_mark_delivered_ids_marks_whole_chunks_as_one_by_one(seed):
    """DELIVERED ids (a list from the journal thread, a tuple at replay) covering whole
    one-queue chunks are marked a chunk at a time: the same table as marking each id."""
    rnd = random.Random(seed)
    fast, slow = MessageTable(), MessageTable()
    mids = list(range(N - 5, 6 * N))
    for t in (fast, slow):
        for m in mids:
            t.add(m, 1, m, 10, (B, A) if N * 3 <= m < N * 3 + 10 else (A,))
    for m in rnd.sample(range(5 * N, 6 * N), 20):  # dead slots in the last chunk only
        for t in (fast, slow):
            t.remove(m, A)
    ids = list(range(rnd.randint(N - 5, 2 * N), rnd.randint(4 * N + 100, 6 * N)))
    if seed % 2:
        ids.remove(2 * N + 7)  # a hole in a whole chunk
    if seed % 3 == 0:
        ids.insert(ids.index(4 * N + 3), 4 * N + 3)  # a repeat
    q = rnd.choice([A, B])
    fast.mark_delivered_ids(q, tuple(ids) if seed % 4 == 1 else ids)
    for m in ids:
        slow.mark_delivered(m, q)
    assert list(fast.items()) == list(slow.items())
    fast._check()


def _twin_tables(rnd: random.Random) -> tuple[MessageTable, MessageTable, list[int]]:
    """Two equal tables holding runs of a queue's and of two queues' messages, with gaps
    (write-cancelled ids), some delivered, over several chunks."""
    tables = (MessageTable(), MessageTable())
    mids: list[int] = []
    mid, off = rnd.choice([1, N - 40, N]), 0
    for _ in range(rnd.randint(3, 7)):
        n = rnd.choice([20, 60, N // 2, N + 5])
        route = rnd.choice([(A,), (A,), (A, B)])
        run = list(range(mid, mid + n))
        seg = rnd.randint(1, 3)
        for t in tables:
            t.add_run(run, seg, [off + 100 * i for i in range(n)],
                      [50 + m % 101 for m in run], route)
        mids += run
        off += 100 * n
        mid += n + rnd.choice([0, 0, 3])  # (a gap: ids that were never written)
    for m in rnd.sample(mids, k=len(mids) // 5):
        for t in tables:
            t.mark_delivered(m, A)
    return tables[0], tables[1], mids


@pytest.mark.parametrize("seed", range(12))
def test_remove_ids_of_consecutive_runs_matches_removing_them_one_by_one(seed):
    """``remove_ids``' fast path (``RunMarks._remove_span``: a run of consecutive ids in a
    chunk of one queue dies in one step) leaves the table as ``remove`` of each id does,
    and reports the same dead ``(mid, seg, size)`` in the same order."""
    rnd = random.Random(seed)
    fast, slow, mids = _twin_tables(rnd)
    for _ in range(4):
        a = rnd.randrange(len(mids))
        ids = mids[a:a + rnd.choice([5, 16, 40, 300, N + 50])]
        if rnd.random() < 0.3:
            ids = ids + [max(mids) + 1000]  # an unknown id after the run
        shape = rnd.choice([list, tuple])
        dead = fast.remove_ids(A, shape(ids))
        expect = []
        for m in ids:
            r = slow.remove(m, A)
            if r:
                expect.append((m, r[0], r[1]))
        assert dead == expect
        assert len(fast) == len(slow) and fast.queue_counts == slow.queue_counts
        assert {m: (fast.loc(m), fast.copies(m), fast.is_delivered(m, B)) for m in mids} == \
            {m: (slow.loc(m), slow.copies(m), slow.is_delivered(m, B)) for m in mids}
        fast._check()
    assert fast.remove_ids(A, mids) == [(m, s, z) for m in mids
                                        if (r := slow.remove(m, A)) and (s := r[0], z := r[1])]
    assert {qk: list(v) for qk, v in fast.by_queue().items()} == \
        {qk: list(v) for qk, v in slow.by_queue().items()}
    fast._check()
