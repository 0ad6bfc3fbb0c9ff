"""The message table's operations on runs of consecutive ids (issue #22): the DELIVERED_RUNS
record's marks (``format.py``, "Delivered runs") applied and, for compaction, read back
(``MessageTable.add_run`` adds a run of PUBLISH records).

A recovered backlog's ids come from one counter, so after an unclean stop the broker journals
its redelivered flags as a few runs (``Durability.journal_started``) and replay marks them here
chunk by chunk: a chunk that is all one queue's live messages is marked in one slice
assignment, any other slot by slot (the same rule as :meth:`MessageTable.mark_delivered`).

:class:`RunMarks` is a mixin of :class:`~syncmq.journal.msgtable.MessageTable` (the layout,
the constants and the ownership rules are that module's: one thread at a time; a mask is
replaced whole, in place, so a reader of ``loc`` never sees a slot half written).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

__all__ = ["RunMarks", "CHUNK_BITS", "MAX_ROUTE"]

CHUNK_BITS = 10  # at most 16: a slot's id is an array('H') item
MAX_ROUTE = 32
_M32 = 0xFFFF_FFFF
_LOW = (1 << CHUNK_BITS) - 1  # an id's place in its chunk (what a chunk's ``ids`` store)
_LIVE1 = 1  # mask of a live, undelivered message on route bit 0
_DELIVERED1 = _M32 + 2  # ... and delivered there (1 << 32 | 1)


class RunMarks:
    """Mixin: DELIVERED of a run of ids, and which ids of a run are delivered on a queue."""

    __slots__ = ()

    def _one_queue_chunk(self, c, qk) -> bool:
        """Whether every slot of chunk ``c`` that may be live is on the route ``(qk,)``."""
        return len(c.routes) == 1 and self._routes[next(iter(c.routes))] == (qk,)

    def mark_delivered_run(self, qk, first: int, count: int) -> None:
        """:meth:`mark_delivered` of ids ``first .. first + count - 1`` on queue ``qk`` (a
        DELIVERED_RUNS record's run). Cost per chunk of 2**CHUNK_BITS ids: a chunk whose
        slots all lie in the run, all live on ``(qk,)`` alone, is marked in one slice
        assignment; others slot by slot."""
        end = first + count
        chunks = self._chunks
        route_bits = self._route_bits
        mid = first
        while mid < end:
            key = mid >> CHUNK_BITS
            stop = min(end, (key + 1) << CHUNK_BITS)
            c = chunks.get(key)
            if c is not None:
                a = c.a
                ids_, _loc, info, masks = a
                lo, hi = mid & _LOW, ((stop - 1) & _LOW) + 1
                n = len(ids_)
                if n and ids_[0] >= lo and ids_[n - 1] < hi and self._one_queue_chunk(c, qk) \
                        and masks.count(_LIVE1) + masks.count(_DELIVERED1) == n:
                    masks[:] = array("Q", (_DELIVERED1,)) * n
                else:
                    for k in range(bisect_left(ids_, lo), bisect_left(ids_, hi)):
                        m = masks[k]
                        if m & _M32:
                            bit = route_bits[info[k] & _M32].get(qk)
                            if bit is not None and (m >> bit) & 1:
                                masks[k] = m | (1 << (32 + bit))
            mid = stop
        if self._big:
            for mid in [m for m in self._big if first <= m < end]:
                self.mark_delivered(mid, qk)

    def delivered_runs(self, qk, first: int, count: int) -> list[tuple[int, int]]:
        """The ids of ``first .. first + count - 1`` that are live and delivered on ``qk``, as
        ``(first, count)`` runs (compaction keeps those of a DELIVERED_RUNS record). A chunk
        of consecutive ids all delivered on ``(qk,)`` alone costs no per-slot step."""
        out: list[tuple[int, int]] = []

        def add(a: int, n: int) -> None:
            if out and out[-1][0] + out[-1][1] == a:
                out[-1] = (out[-1][0], out[-1][1] + n)
            else:
                out.append((a, n))

        end = first + count
        chunks = self._chunks
        route_bits = self._route_bits
        mid = first
        while mid < end:
            key = mid >> CHUNK_BITS
            stop = min(end, (key + 1) << CHUNK_BITS)
            c = chunks.get(key)
            if c is not None:
                ids_, _loc, info, masks = c.a
                base = key << CHUNK_BITS
                n = len(ids_)
                if n and ids_[n - 1] - ids_[0] == n - 1 and masks.count(_DELIVERED1) == n \
                        and self._one_queue_chunk(c, qk):
                    a, b = max(mid, base + ids_[0]), min(stop, base + ids_[n - 1] + 1)
                    if a < b:
                        add(a, b - a)
                else:
                    lo, hi = mid & _LOW, ((stop - 1) & _LOW) + 1
                    for k in range(bisect_left(ids_, lo), bisect_left(ids_, hi)):
                        m = masks[k]
                        if m & _M32:
                            bit = route_bits[info[k] & _M32].get(qk)
                            if bit is not None and (m >> (32 + bit)) & 1:
                                add(base | ids_[k], 1)
            mid = stop
        if self._big:
            for mid in sorted(m for m, b in self._big.items()
                              if first <= m < end and qk in b.delivered):
                add(mid, 1)
        return out
