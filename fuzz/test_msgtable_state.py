"""Hypothesis: the journal's packed message table (``journal/msgtable.py``) answers exactly as
a plain dict-of-objects model, through publishes in and out of id order, fan-out to several
queues (up to past the packed limit of ``MAX_ROUTE`` queues), deliveries, acks, purges,
compaction moves (also to places that do not fit a packed slot), dead ids published again, and
chunks that empty or are tidied."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from syncmq.journal.idruns import IdRuns
from syncmq.journal.msgtable import CHUNK_BITS, MAX_ROUTE, MessageTable

QS = [("/", f"q{i}") for i in range(MAX_ROUTE + 3)]
SMALL = st.lists(st.sampled_from(QS[:4]), min_size=1, max_size=4, unique=True)
WIDE = st.lists(st.sampled_from(QS), min_size=MAX_ROUTE - 1, max_size=MAX_ROUTE + 3,
                unique=True)
# ids around a few chunk boundaries, so chunks fill, empty and are tidied
IDS = st.one_of(st.integers(0, 3 << CHUNK_BITS), st.integers(2**40, 2**40 + 50))


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.t = MessageTable()
        # mid -> [seg, off, size, [queues], {delivered}]
        self.m: dict[int, list] = {}
        self.next = 1

    def _pick(self, data) -> int:
        """A live id most of the time (often one of the few oldest or newest, so that rules
        meet on the same message), else any id."""
        how = data.draw(st.integers(0, 3))
        if self.m and how:
            ids = sorted(self.m)
            if how < 3:
                ids = ids[:3] + ids[-3:]
            return data.draw(st.sampled_from(ids))
        return data.draw(IDS)

    @rule(data=st.data(), route=st.one_of(SMALL, SMALL, SMALL, WIDE),
          seg=st.one_of(st.integers(1, 50), st.just(2**32 + 1)),
          off=st.one_of(st.integers(0, 10**6), st.just(2**32 + 7)), size=st.integers(9, 5000))
    def add(self, data, route, seg, off, size) -> None:
        mid = self.next if data.draw(st.booleans()) else self._pick(data)
        self.next += data.draw(st.integers(1, 3))
        ok = self.t.add(mid, seg, off, size, tuple(route))
        assert ok == (mid not in self.m)
        if ok:
            self.m[mid] = [seg, off, size, list(route), set()]

    @rule(n=st.integers(1, 1100), route=SMALL)
    def add_many(self, n, route) -> None:
        for _ in range(n):
            mid = self.next
            self.next += 1
            if mid in self.m:
                continue
            assert self.t.add(mid, 3, mid * 10 % 2**32, 100, tuple(route))
            self.m[mid] = [3, mid * 10 % 2**32, 100, list(route), set()]

    @rule(data=st.data(), route=st.one_of(SMALL, SMALL, WIDE),
          seg=st.one_of(st.integers(1, 50), st.just(2**32 + 1)),
          n=st.integers(1, 40), start=st.one_of(st.none(), IDS))
    def add_run(self, data, route, seg, n, start) -> None:
        """A journal batch's run of PUBLISH records (``add_run``): in one step when it
        qualifies, else (nothing changed) one by one, as the journal thread does."""
        base = self.next if start is None else start
        mids = sorted(set(base + data.draw(st.integers(0, 3)) * i for i in range(n)))
        if data.draw(st.booleans()):  # out of order too, now and then
            mids = data.draw(st.permutations(mids))
        self.next = max(self.next, max(mids) + 1)
        offs = [data.draw(st.one_of(st.integers(0, 10**6), st.just(2**32 + 7)))
                if data.draw(st.integers(0, 9)) == 0 else 100 * i for i in range(len(mids))]
        sizes = [data.draw(st.integers(9, 5000)) for _ in mids]
        before = {m: list(v) for m, v in self.m.items()}
        if self.t.add_run(list(mids), seg, offs, sizes, tuple(route)):
            assert all(m not in before for m in mids)
            assert list(mids) == sorted(mids)
            for mid, off, size in zip(mids, offs, sizes, strict=True):
                self.m[mid] = [seg, off, size, list(route), set()]
        else:
            self.agrees()  # nothing changed
            for mid, off, size in zip(mids, offs, sizes, strict=True):
                ok = self.t.add(mid, seg, off, size, tuple(route))
                assert ok == (mid not in self.m)
                if ok:
                    self.m[mid] = [seg, off, size, list(route), set()]

    @rule(data=st.data(), q=st.sampled_from(QS))
    def remove(self, data, q) -> None:
        mid = self._pick(data)
        if data.draw(st.booleans()):
            r = self.t.remove(mid, q)
        else:  # the ACK path: expected dead ones as remove() says
            e = self.m.get(mid)
            dead = self.t.remove_ids(q, [mid])
            r = None if e is None or q not in e[3] else (
                (dead[0][1], dead[0][2]) if dead else False)
            assert all(d[0] == mid for d in dead)
        e = self.m.get(mid)
        if e is None or q not in e[3]:
            assert r is None
            return
        e[3].remove(q)
        e[4].discard(q)
        if e[3]:
            assert r is False
        else:
            assert r == (e[0], e[2])
            del self.m[mid]

    @rule(q=st.sampled_from(QS[:4]), keep=st.integers(0, 3), extra=st.lists(IDS, max_size=3))
    def ack_most(self, q, keep, extra) -> None:
        """Acks every message of ``q`` but one in ``keep + 1`` in one ACK record (chunks empty,
        or get tidied), with a few ids that are not on ``q``."""
        ids = [mid for mid in sorted(self.m) if not mid % (keep + 1) or q not in self.m[mid][3]]
        ids += [x for x in extra if x not in self.m]
        expect = [(mid, self.m[mid][0], self.m[mid][2]) for mid in ids
                  if mid in self.m and self.m[mid][3] == [q]]
        assert self.t.remove_ids(q, ids) == expect
        for mid in ids:
            if mid in self.m and q in self.m[mid][3]:
                e = self.m[mid]
                e[3].remove(q)
                e[4].discard(q)
                if not e[3]:
                    del self.m[mid]

    @rule(data=st.data(), q=st.sampled_from(QS))
    def delivered(self, data, q) -> None:
        mids = [self._pick(data)]
        if data.draw(st.booleans()):
            self.t.mark_delivered(mids[0], q)
        else:  # the DELIVERED record's path
            mids.append(self._pick(data))
            self.t.mark_delivered_ids(q, mids)
        for mid in mids:
            e = self.m.get(mid)
            if e is not None and q in e[3]:
                e[4].add(q)

    @rule(q=st.sampled_from(QS))
    def kill_queue(self, q) -> None:
        dead = self.t.kill_queue(q)
        expect = []
        for mid in sorted(self.m):
            e = self.m[mid]
            if q in e[3]:
                e[3].remove(q)
                e[4].discard(q)
                if not e[3]:
                    expect.append((mid, e[0], e[2]))
                    del self.m[mid]
        assert sorted(dead) == expect

    @rule(data=st.data(), seg=st.one_of(st.integers(1, 60), st.just(2**33)),
          off=st.integers(0, 10**6))
    def move(self, data, seg, off) -> None:
        mid = self._pick(data)
        e = self.m.get(mid)
        wrong = data.draw(st.booleans())
        old = (e[0], e[1] + (1 if wrong else 0)) if e is not None else (1, 0)
        moved = self.t.move(mid, old[0], old[1], seg, off)
        assert moved == (e is not None and not wrong)
        if moved:
            e[0], e[1] = seg, off

    @invariant()
    def agrees(self) -> None:
        t = self.t
        t._check()
        assert len(t) == len(self.m)
        assert set(t.ids()) == set(self.m)
        counts: dict = {}
        for mid, (seg, off, size, queues, dl) in self.m.items():
            assert mid in t
            assert t.loc(mid) == (seg, off, size)
            v = t.get(mid)
            assert list(v.queues) == queues and v.delivered == frozenset(dl)
            assert t.copies(mid) == len(queues)
            for q in queues:
                assert t.place(mid, q) == (seg, off, size, len(queues), q in dl)
            for q in QS[:5]:
                assert t.is_delivered(mid, q) == (q in dl)
            for q in queues:
                counts[q] = counts.get(q, 0) + 1
        assert t.queue_counts == counts
        order = t.by_queue()
        for q, mids in order.items():
            assert sorted(mids) == sorted(m for m, e in self.m.items() if q in e[3])
            keys = [(self.m[m][0], self.m[m][1]) for m in mids]
            assert keys == sorted(keys)
        assert set(order) == set(counts)


TableMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SYNCMQ_FUZZ_EXAMPLES", "100")), deadline=None,
    stateful_step_count=20)
test_msgtable = TableMachine.TestCase


def test_a_thousand_queued_messages_cost_about_26_bytes_each():
    """The packed layout: a backlog of consecutive ids costs its slots (26 bytes) plus a
    chunk's fixed cost spread over 1,024 ids, not an object per message."""
    import tracemalloc

    t = MessageTable()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    n = 100_000
    for mid in range(1, n + 1):
        t.add(mid, 7, mid * 1100, 1100, (("/", "q"),))
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert used / n < 32, used / n


@given(st.lists(st.one_of(st.integers(0, 40), st.integers(2**63 - 3, 2**63 - 1)), max_size=60))
def test_id_runs_give_back_the_ids_appended(ids):
    runs = IdRuns()
    for mid in ids:
        runs.append(mid)
    assert list(runs) == ids and len(runs) == len(ids)
    assert list(IdRuns(ids)) == ids


def test_id_runs_of_consecutive_ids_cost_per_run():
    runs = IdRuns(range(5, 100_005))
    runs.append(7)
    assert runs.nbytes() == 24 and len(runs) == 100_001
