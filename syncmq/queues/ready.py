"""Ready-message FIFOs: plain and per-priority.

Every message pushed gets a per-queue sequence number (a monotonically increasing int).  A
message that was delivered and then requeued (``basic.reject``/``basic.nack`` with requeue, a
channel closing with unacked deliveries, ``basic.recover``) goes back to its *original* position,
i.e. before every message published after it, as RabbitMQ's classic queues do.

Layout: ``_fresh``, a deque of ``(seq, item)`` pairs in increasing seq order, and ``_requeued``, a
binary heap of ``(seq, item)`` pairs.  ``pop`` takes whichever head has the lower seq.  Items only
leave from the front, so a requeued seq is normally lower than every fresh one; when it is lower
than the fresh head it is simply put back at the front of the deque (O(1)), so the heap is only
used when several deliveries come back out of order.  ``pop`` compares the two heads, so the order
is right whatever seqs are requeued, as long as a seq is never in the queue twice.

The pairs are built once, by ``push``, and handed out as they are by ``pop``/``peek``: popping
allocates nothing.

Not thread-safe by itself: the owning queue's lock guards it.
"""

from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush, merge
from itertools import count, repeat, starmap
from operator import itemgetter

__all__ = ["ReadyQueue", "PriorityReadyQueue"]

_first = itemgetter(0)
_second = itemgetter(1)


class _Resident:
    """What a ready queue that pages nothing out answers to the paging calls of a queue
    (see ``queues.paged.PagedReadyQueue``)."""

    __slots__ = ()

    paged_count = 0  # messages paged out to disk
    paged_bytes = 0  # their body bytes
    loose_held = 0  # paged-in body bytes held outside the body store
    window = None  # messages kept in memory (a paged queue's bound; None: every one)

    @property
    def resident(self) -> int:
        """Ready messages held in memory (all of them)."""
        return len(self)

    def purge_paged(self, visit) -> int:
        """Drop the paged-out messages (none here): see ``PagedReadyQueue.purge_paged``."""
        return 0

    def close(self) -> None:
        """The queue is gone (nothing to delete here)."""


class ReadyQueue(_Resident):
    """FIFO of ready messages ordered by a per-queue sequence number.

    Requeued messages go back to their original position (RabbitMQ classic-queue semantics), i.e.
    before every message that was published after them.
    """

    __slots__ = ("_fresh", "_requeued", "_next_seq")

    def __init__(self, first_seq: int = 0) -> None:
        # (seq, item) pairs never delivered (or requeued in front of them), seq increasing
        self._fresh: deque[tuple[int, object]] = deque()
        # heap of (seq, item) pairs requeued behind the front of _fresh
        self._requeued: list[tuple[int, object]] = []
        self._next_seq = first_seq

    # -- adding ---------------------------------------------------------------------------------

    def push(self, item) -> int:
        """Append a new item; return its seq (monotonic).  O(1)."""
        seq = self._next_seq
        self._next_seq = seq + 1
        self._fresh.append((seq, item))
        return seq

    def push_many(self, items) -> None:
        """Append new items in order, as ``push`` of each would.  O(k), in C (no Python call
        per item: ``Queue.publish_many``'s runs)."""
        fresh = self._fresh
        n = len(fresh)
        fresh.extend(zip(count(self._next_seq), items))
        self._next_seq += len(fresh) - n

    def _append(self, seq: int, item) -> None:
        """Append ``item`` with a seq chosen by the caller, above every seq in the queue.  O(1).

        Used by PriorityReadyQueue, whose levels share one counter.
        """
        self._fresh.append((seq, item))
        if seq >= self._next_seq:
            self._next_seq = seq + 1

    def requeue(self, seq: int, item) -> None:
        """Put back a previously popped item at its original position.

        O(1) when ``seq`` is below every fresh seq (the usual case), else O(log r) for r requeued
        items waiting.  ``seq`` must not be in the queue already.
        """
        fresh = self._fresh
        if not fresh or seq < fresh[0][0]:
            fresh.appendleft((seq, item))
        else:
            heappush(self._requeued, (seq, item))

    def requeue_many(self, pairs) -> None:
        """Put back many ``(seq, item)`` pairs at once, in any order.

        O(k log k) for k pairs, plus O(log r) for each one that cannot go to the front.
        """
        pairs = sorted(pairs, key=_first, reverse=True)
        fresh = self._fresh
        requeued = self._requeued
        for pair in pairs:
            if not fresh or pair[0] < fresh[0][0]:
                fresh.appendleft((pair[0], pair[1]))
            else:
                heappush(requeued, (pair[0], pair[1]))

    # -- taking ---------------------------------------------------------------------------------

    def pop(self) -> tuple[int, object] | None:
        """Remove and return ``(seq, item)`` with the lowest seq; None when empty.

        O(1) while nothing requeued is waiting behind the front, else O(log r).
        """
        requeued = self._requeued
        fresh = self._fresh
        if requeued and (not fresh or requeued[0][0] < fresh[0][0]):
            return heappop(requeued)
        if fresh:
            return fresh.popleft()
        return None

    def take(self, k: int) -> list:
        """Remove and return up to ``k`` (>= 1) ``(seq, item)`` pairs from the front, in order:
        what ``k`` calls of ``pop`` would return, fewer only when that leaves the queue empty
        (or, paged, when its page-in stopped: ``Queue._ran_dry_locked``). The batch
        dispatch's one call per batch. O(k), in C while nothing requeued waits behind the
        front: a lone message is pushed and taken without a Python loop."""
        fresh = self._fresh
        if self._requeued:
            return self._take_popping(k)
        if len(fresh) <= k:
            out = list(fresh)
            fresh.clear()
            return out
        return list(starmap(fresh.popleft, repeat((), k)))

    def _take_popping(self, k: int) -> list:
        """``take`` by ``pop`` calls (requeued pairs waiting, a paged tail, priorities)."""
        out: list = []
        pop = self.pop
        while len(out) < k:
            pair = pop()
            if pair is None:
                break
            out.append(pair)
        return out

    def peek(self) -> tuple[int, object] | None:
        """``(seq, item)`` that ``pop`` would return, without removing it; None when empty.  O(1)."""
        requeued = self._requeued
        fresh = self._fresh
        if requeued and (not fresh or requeued[0][0] < fresh[0][0]):
            return requeued[0]
        if fresh:
            return fresh[0]
        return None

    def sample(self, k: int) -> list:
        """Up to ``k`` items from each end of the fresh FIFO (memory accounting reads it
        without the queue's lock: it may raise IndexError if the queue changes meanwhile)."""
        fresh = self._fresh
        n = len(fresh)
        if n <= 2 * k:
            return [pair[1] for pair in list(fresh)]
        return [fresh[i][1] for i in range(k)] + [fresh[-1 - i][1] for i in range(k)]

    def pop_while(self, predicate) -> list:
        """Pop items from the front while ``predicate(item)`` is true; return them in order.

        For expiry at the head.  O(k) for k items removed (times O(log r) for requeued ones).
        """
        out = []
        while True:
            pair = self.peek()
            if pair is None or not predicate(pair[1]):
                return out
            self.pop()
            out.append(pair[1])

    def pop_tail(self) -> tuple[int, object] | None:
        """Remove and return ``(seq, item)`` with the highest seq; None when empty.

        O(1) while nothing requeued is waiting, else O(r).
        """
        requeued = self._requeued
        fresh = self._fresh
        if not requeued:
            return fresh.pop() if fresh else None
        i = max(range(len(requeued)), key=lambda j: requeued[j][0])
        if fresh and fresh[-1][0] > requeued[i][0]:
            return fresh.pop()
        pair = requeued[i]
        last = requeued.pop()
        if i < len(requeued):
            requeued[i] = last
            heapify(requeued)
        return pair

    def purge(self) -> list:
        """Remove and return every item, in delivery order.  O(n + r log r)."""
        out = list(self)
        self._fresh.clear()
        self._requeued.clear()
        return out

    def remove_if(self, predicate) -> list:
        """Remove the items for which ``predicate(item)`` is true; return them in delivery order.

        O(n) calls of the predicate, plus O(r log r) to restore the heap.
        """
        removed: list[tuple[int, object]] = []
        if self._requeued:
            keep = []
            for pair in self._requeued:
                (removed if predicate(pair[1]) else keep).append(pair)
            if len(keep) != len(self._requeued):
                heapify(keep)
                self._requeued = keep
            removed.sort(key=_first)
        fresh_removed = []
        keep_fresh = deque()
        for pair in self._fresh:
            (fresh_removed if predicate(pair[1]) else keep_fresh).append(pair)
        if fresh_removed:
            self._fresh = keep_fresh
        if not removed:
            return [pair[1] for pair in fresh_removed]
        return [pair[1] for pair in merge(removed, fresh_removed, key=_first)]

    # -- looking --------------------------------------------------------------------------------

    def pairs(self):
        """Iterate ``(seq, item)`` in delivery order.  O(n) in all, O(r log r) to start."""
        if not self._requeued:
            return iter(self._fresh)
        return merge(sorted(self._requeued, key=_first), self._fresh, key=_first)

    def __iter__(self):
        """Iterate items in delivery order (for listing / browsing).  Same cost as ``pairs``."""
        return map(_second, self.pairs())

    def count(self) -> int:
        """Number of ready items.  O(1).

        ``len(q)`` is this same function; the per-message path calls ``q.count()`` instead:
        a call from Python code runs in the caller's interpreter loop, while ``len()`` or a
        truth test of an object whose ``__len__``/``__bool__`` is Python code enters a new
        one from C (several hundred instructions more, #15)."""
        return len(self._fresh) + len(self._requeued)

    __len__ = count

    def __bool__(self) -> bool:
        return bool(self._fresh) or bool(self._requeued)

    @property
    def next_seq(self) -> int:
        """The seq the next ``push`` will return."""
        return self._next_seq

    def __repr__(self) -> str:
        return (f"<ReadyQueue {len(self._fresh)} fresh, {len(self._requeued)} requeued, "
                f"next seq {self._next_seq}>")

    def _check(self) -> None:
        """Assert the invariants.  O(n)."""
        seen = set()
        prev = None
        for pair in self._fresh:
            assert type(pair) is tuple and len(pair) == 2, pair
            seq = pair[0]
            assert isinstance(seq, int), seq
            assert seq < self._next_seq, (seq, self._next_seq)
            if prev is not None:
                assert prev < seq, ("fresh not increasing", prev, seq)
            prev = seq
            seen.add(seq)
        h = self._requeued
        for i, pair in enumerate(h):
            assert type(pair) is tuple and len(pair) == 2, pair
            seq = pair[0]
            assert isinstance(seq, int), seq
            assert seq < self._next_seq, (seq, self._next_seq)
            if i:
                assert h[(i - 1) // 2][0] < seq, ("heap order", i)
            assert seq not in seen, ("seq twice", seq)
            seen.add(seq)
        assert len(seen) == len(self._fresh) + len(self._requeued), len(seen)


class PriorityReadyQueue(_Resident):
    """Ready messages by priority: higher priority first, FIFO (by seq) within a priority.

    Priorities above ``max_priority`` count as ``max_priority`` and a missing priority (None)
    as 0, as RabbitMQ does.  One ReadyQueue per level, sharing one seq counter, so a seq still
    names one message queue-wide.
    """

    __slots__ = ("_levels", "_max", "_top", "_len", "_next_seq")

    def __init__(self, max_priority: int, first_seq: int = 0) -> None:
        if not isinstance(max_priority, int) or max_priority < 0:
            raise ValueError(f"max_priority must be an int >= 0, not {max_priority!r}")
        self._max = max_priority
        self._levels = [ReadyQueue(first_seq) for _ in range(max_priority + 1)]
        # no level above _top holds anything
        self._top = 0
        self._len = 0
        self._next_seq = first_seq

    @property
    def max_priority(self) -> int:
        return self._max

    def _level(self, priority) -> int:
        if priority is None or priority <= 0:
            return 0
        if priority >= self._max:
            return self._max
        return int(priority)

    def push(self, item, priority: int | None = 0) -> int:
        """Append a new item at ``priority``; return its seq.  O(1)."""
        p = self._level(priority)
        seq = self._next_seq
        self._next_seq = seq + 1
        self._levels[p]._append(seq, item)
        if p > self._top:
            self._top = p
        self._len += 1
        return seq

    def requeue(self, seq: int, item, priority: int | None = 0) -> None:
        """Put back a popped item at its original position within its priority.

        O(1) usually, O(log r) when it goes behind the front (see ReadyQueue.requeue).
        """
        p = self._level(priority)
        lvl = self._levels[p]
        lvl.requeue(seq, item)
        if seq >= lvl._next_seq:
            lvl._next_seq = seq + 1
        if p > self._top:
            self._top = p
        self._len += 1

    def requeue_many(self, triples) -> None:
        """Put back many ``(seq, item, priority)`` triples, in any order.  O(k log k)."""
        by_level: dict[int, list] = {}
        for seq, item, priority in triples:
            by_level.setdefault(self._level(priority), []).append((seq, item))
        for p, pairs in by_level.items():
            lvl = self._levels[p]
            lvl.requeue_many(pairs)
            top_seq = max(pairs, key=_first)[0]
            if top_seq >= lvl._next_seq:
                lvl._next_seq = top_seq + 1
            self._len += len(pairs)
            if p > self._top:
                self._top = p

    def _first_level(self) -> ReadyQueue | None:
        levels = self._levels
        t = self._top
        while t > 0 and not levels[t]:
            t -= 1
        self._top = t
        lvl = levels[t]
        return lvl if lvl else None

    def pop(self) -> tuple[int, object] | None:
        """Remove and return ``(seq, item)`` of the highest priority, lowest seq; None if empty.

        O(1) amortised (a scan down over empty levels is paid for by the pushes above them).
        """
        lvl = self._first_level()
        if lvl is None:
            return None
        self._len -= 1
        return lvl.pop()

    take = ReadyQueue._take_popping  # (see ReadyQueue.take)

    def peek(self) -> tuple[int, object] | None:
        """What ``pop`` would return, without removing it.  O(1) amortised."""
        lvl = self._first_level()
        return None if lvl is None else lvl.peek()

    def sample(self, k: int) -> list:
        """Up to ``k`` items from each end of every non-empty level (see ReadyQueue.sample)."""
        return [item for lvl in self._levels if lvl for item in lvl.sample(k)]

    def pop_while(self, predicate) -> list:
        """Pop from the front while ``predicate(item)`` holds; return the items.  O(k)."""
        out = []
        while True:
            pair = self.peek()
            if pair is None or not predicate(pair[1]):
                return out
            self.pop()
            out.append(pair[1])

    def pop_tail(self) -> tuple[int, object] | None:
        """Remove and return the item that would be delivered last; None if empty.  O(P)."""
        for lvl in self._levels:
            if lvl:
                self._len -= 1
                return lvl.pop_tail()
        return None

    def purge(self) -> list:
        """Remove and return every item in delivery order.  O(n + P)."""
        out = list(self)
        for lvl in self._levels:
            lvl._fresh.clear()
            lvl._requeued.clear()
        self._len = 0
        self._top = 0
        return out

    def remove_if(self, predicate) -> list:
        """Remove items for which ``predicate(item)`` holds; return them in delivery order.  O(n)."""
        out = []
        for lvl in reversed(self._levels):
            if lvl:
                out.extend(lvl.remove_if(predicate))
        self._len -= len(out)
        return out

    def pairs(self):
        """Iterate ``(seq, item)`` in delivery order.  O(n + P)."""
        for lvl in reversed(self._levels):
            if lvl:
                yield from lvl.pairs()

    def __iter__(self):
        """Iterate items in delivery order.  O(n + P)."""
        return map(_second, self.pairs())

    def count(self) -> int:
        """Number of ready items.  O(1) (see ``ReadyQueue.count``)."""
        return self._len

    __len__ = count

    def __bool__(self) -> bool:
        return self._len > 0

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def __repr__(self) -> str:
        return f"<PriorityReadyQueue max {self._max}, {self._len} ready>"

    def _check(self) -> None:
        """Assert the invariants.  O(n + P)."""
        assert len(self._levels) == self._max + 1
        assert 0 <= self._top <= self._max
        total = 0
        seen: set[int] = set()
        for p, lvl in enumerate(self._levels):
            lvl._check()
            if p > self._top:
                assert not lvl, ("item above top", p, self._top)
            assert lvl._next_seq <= self._next_seq
            for seq, _ in lvl.pairs():
                assert seq not in seen, ("seq twice", seq)
                seen.add(seq)
            total += len(lvl)
        assert total == self._len, (total, self._len)
