"""The message table's operations on runs of consecutive ids (issue #22): the DELIVERED_RUNS
record's marks (``format.py``, "Delivered runs") applied and, for compaction, read back
(:meth:`RunMarks.add_run` adds a run of PUBLISH records, :meth:`RunMarks.by_queue` lists each
queue's live ids as runs in log order for recovery).

A recovered backlog's ids come from one counter, so after an unclean stop the broker journals
its redelivered flags as a few runs (``Durability.journal_started``) and replay marks them here
chunk by chunk: a chunk that is all one queue's live messages is marked in one slice
assignment, any other slot by slot (the same rule as :meth:`MessageTable.mark_delivered`).

:class:`RunMarks` is a mixin of :class:`~syncmq.journal.msgtable.MessageTable` (the layout and
the ownership rules are that module's: one thread at a time; a mask is replaced whole, in
place, so a reader of ``loc`` never sees a slot half written). The chunk type and the layout
constants live here so that both modules share them without an import cycle.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence

from .idruns import IdRuns

__all__ = ["RunMarks", "CHUNK_BITS", "MAX_ROUTE"]

QKey = tuple[str, str]
Route = tuple[QKey, ...]

CHUNK_BITS = 10  # at most 16: a slot's id is an array('H') item
MAX_ROUTE = 32
_M32 = 0xFFFF_FFFF
_LOW = (1 << CHUNK_BITS) - 1  # an id's place in its chunk (what a chunk's ``ids`` store)
_LIVE1 = 1  # mask of a live, undelivered message on route bit 0
_DELIVERED1 = _M32 + 2  # ... and delivered there (1 << 32 | 1)
#: the type of ``ids[k:j]`` for an ACK's ids (``MessageTable.remove_ids``), from a range
_AS_SEQ = {list: list, tuple: tuple, range: lambda r: r}


class _Chunk:
    __slots__ = ("a", "live", "routes")

    def __init__(self) -> None:
        #: (ids, loc, info, masks): replaced as one tuple when slots move (insert, tidy);
        #: ``ids`` holds each id's low :data:`CHUNK_BITS` bits (the chunk's key is the rest)
        self.a = (array("H"), array("Q"), array("Q"), array("Q"))
        self.live = 0  # slots with a non-zero ``remaining``
        self.routes: set[int] = set()  # route ids of its slots (a superset of the live ones)


def _bits(mask: int) -> Iterator[int]:
    i = 0
    while mask:
        if mask & 1:
            yield i
        mask >>= 1
        i += 1


class RunMarks:
    """Mixin: DELIVERED of a run of ids, and which ids of a run are delivered on a queue."""

    __slots__ = ()

    def _one_queue_chunk(self, c, qk) -> bool:
        """Whether every slot of chunk ``c`` that may be live is on the route ``(qk,)``."""
        return len(c.routes) == 1 and self._routes[next(iter(c.routes))] == (qk,)

    def _remove_span(self, qk: QKey, ids: Sequence[int], k: int,
                     dead: list[tuple[int, int, int]]) -> int:
        """The fast path of ``MessageTable.remove_ids`` (an ACK record): when ``ids[k:]``
        starts with at least 16 consecutive ids in one chunk whose every slot is on the route
        ``(qk,)`` alone, all of them live there, they all die at once (one slice assignment,
        no call a message), their ``(mid, seg, size)`` appended to ``dead`` in order,
        as the id-by-id path would. Returns how many ids it took (0: none, nothing changed;
        the caller goes id by id). Ends like ``_die`` of each: the chunk is deleted when
        nothing in it lives, or tidied when dead slots outnumber live ones 3 to 1."""
        mid = ids[k]
        key = mid >> CHUNK_BITS
        c = self._chunks.get(key)
        if c is None or not self._one_queue_chunk(c, qk):
            return 0
        ids_, loc, info, masks = c.a
        n = len(ids_)
        lo = mid & _LOW
        i = bisect_left(ids_, lo)
        if i == n or ids_[i] != lo:
            return 0
        stop = min(len(ids), k + ((key + 1) << CHUNK_BITS) - mid)
        j = bisect_right(ids, mid + stop - k - 1, k, stop)  # (ascending: checked below)
        length = j - k
        i2 = i + length
        if length < 16 or i2 > n or ids_[i2 - 1] != lo + length - 1 or \
                ids[k:j] != _AS_SEQ[ids.__class__](range(mid, mid + length)):
            return 0
        span = masks[i:i2]
        if span.count(_LIVE1) + span.count(_DELIVERED1) != length:
            return 0
        masks[i:i2] = array("Q", bytes(8 * length))
        dead += [(m, x >> 32, y >> 32)  # (a comprehension beats map() of int methods here)
                 for m, x, y in zip(range(mid, mid + length), loc[i:i2], info[i:i2],
                                    strict=True)]
        qc = self.queue_counts
        left = qc[qk] - length
        if left:
            qc[qk] = left
        else:
            del qc[qk]
        self._n -= length
        c.live -= length
        if not c.live:
            del self._chunks[key]
            for r in c.routes:
                self._route_unref(r)
        elif n >= 64 and n > 4 * c.live:
            self._tidy(c)
        return length

    def _chunks_in(self, first: int, end: int) -> Iterator[tuple[int, _Chunk, int, int]]:
        """``(key, chunk, start, stop)`` for each chunk that exists over ids ``first ..
        end - 1``, in id order: the ids ``start .. stop - 1`` are its part of the range."""
        chunks = self._chunks
        mid = first
        while mid < end:
            key = mid >> CHUNK_BITS
            stop = min(end, (key + 1) << CHUNK_BITS)
            c = chunks.get(key)
            if c is not None:
                yield key, c, mid, stop
            mid = stop

    def mark_delivered_run(self, qk, first: int, count: int) -> None:
        """:meth:`mark_delivered` of ids ``first .. first + count - 1`` on queue ``qk`` (a
        DELIVERED_RUNS record's run). Cost per chunk of 2**CHUNK_BITS ids: a chunk whose
        slots all lie in the run, all live on ``(qk,)`` alone, is marked in one slice
        assignment; others slot by slot."""
        end = first + count
        route_bits = self._route_bits
        for _key, c, mid, stop in self._chunks_in(first, end):
            ids_, _loc, info, masks = c.a
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
        route_bits = self._route_bits
        for key, c, mid, stop in self._chunks_in(first, end):
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
        if self._big:
            for mid in sorted(m for m, b in self._big.items()
                              if first <= m < end and qk in b.delivered):
                add(mid, 1)
        return out

    def add_run(self, mids: Sequence[int], seg: int, offs: Sequence[int],
                sizes: Sequence[int], route: Route) -> bool:
        """:meth:`add` of each of ``mids`` (records ``(seg, offs[i], sizes[i])``, one route)
        in bulk when each goes at the end of its chunk: strictly ascending, every chunk's part
        above that chunk's last slot, nothing in ``_big``, every field fits a slot. False (and
        nothing changes) otherwise: the caller adds them one by one. Used for the journal
        thread's run of a batch's PUBLISH records and recovery's replay of a backlog
        (``JournalState.publish_run``; ``mids`` is a ``range`` there, over many chunks): four
        ``extend`` calls a chunk instead of four ``append`` calls a message, the ids last
        (readers, see :meth:`add`)."""
        if (self._big or seg > _M32 or len(route) > MAX_ROUTE or max(offs) > _M32
                or max(sizes) > _M32):
            return False
        if not (isinstance(mids, range) and mids.step == 1):
            prev = -1
            for mid in mids:  # strictly ascending (one publisher's are; several interleave)
                if mid <= prev:
                    return False
                prev = mid
        chunks = self._chunks
        parts = []  # (key, i, j): mids[i:j] go to chunk key
        i, n = 0, len(mids)
        while i < n:
            key = mids[i] >> CHUNK_BITS
            j = bisect_left(mids, (key + 1) << CHUNK_BITS, i)
            c = chunks.get(key)
            if c is not None and c.a[0] and c.a[0][-1] >= mids[i] & _LOW:
                return False
            parts.append((key, i, j))
            i = j
        rid = self._route_ids.get(route)
        if rid is None:
            rid = self._route_id(route)
        qc = self.queue_counts
        for qk in route:
            qc[qk] = qc.get(qk, 0) + n
        self._n += n
        hi = seg << 32
        mask = array("Q", ((1 << len(route)) - 1,))
        for key, i, j in parts:
            c = chunks.get(key)
            if c is None:
                c = chunks[key] = _Chunk()
            a = c.a
            a[1].extend([hi | off for off in offs[i:j]])
            a[2].extend([(size << 32) | rid for size in sizes[i:j]])
            a[3].extend(mask * (j - i))
            lo = mids[i] & _LOW
            if mids[j - 1] - mids[i] == j - i - 1:  # (consecutive: a range, no Python step)
                a[0].extend(range(lo, lo + j - i))
            else:
                a[0].extend([m & _LOW for m in mids[i:j]])
            c.live += j - i
            if rid not in c.routes:
                c.routes.add(rid)
                self._route_refs[rid] += 1
        return True

    def by_queue(self) -> dict[QKey, IdRuns]:
        """Per queue, the ids of its live messages (:class:`IdRuns`: a backlog of consecutive
        ids costs a few bytes) in log order of their records (segment, then offset): publish
        order (recovery). Ids mostly come in log order already; a queue where they do not is
        sorted by location afterwards."""
        out: dict[QKey, IdRuns] = {}
        last: dict[QKey, int] = {}  # per queue, the location of its last id so far
        unsorted: set[QKey] = set()
        routes = self._routes
        for key, c in sorted(self._chunks.items()):
            ids, loc, info, masks = c.a
            base = key << CHUNK_BITS
            if self._run_of(c, base, out, last):  # (a backlog's whole chunk as one run)
                continue
            for i in range(len(ids)):
                m = masks[i] & _M32
                if not m:
                    continue
                route = routes[info[i] & _M32]
                here = loc[i]
                for b in _bits(m):
                    qk = route[b]
                    a = out.get(qk)
                    if a is None:
                        a = out[qk] = IdRuns()
                    elif last[qk] > here:
                        unsorted.add(qk)
                    last[qk] = here
                    a.append(base | ids[i])
        if self._big:
            for mid, b in self._big.items():
                for qk in b.queues:
                    out.setdefault(qk, IdRuns()).append(mid)
                    unsorted.add(qk)
        for qk in unsorted:
            out[qk] = IdRuns(sorted(out[qk], key=self._sort_key))
        return out

    def _run_of(self, c: _Chunk, base: int, out: dict[QKey, IdRuns],
                last: dict[QKey, int]) -> bool:
        """:meth:`by_queue`'s step for a chunk that is one run: every slot live, consecutive
        ids, one route of one queue, locations ascending after that queue's last: its ids
        appended as one run (C-speed checks, no per-slot Python). False, nothing done,
        otherwise."""
        if len(c.routes) != 1:
            return False
        route = self._routes[next(iter(c.routes))]
        ids, loc, _info, masks = c.a
        n = len(ids)
        if route is None or len(route) != 1 or not n or ids[n - 1] - ids[0] != n - 1 or \
                masks.count(1) + masks.count(_M32 + 2) != n:
            return False
        qk = route[0]
        a = out.get(qk)
        if (a is not None and last[qk] > loc[0]) or list(loc) != sorted(loc):
            return False
        if a is None:
            a = out[qk] = IdRuns()
        a.append_run(base | ids[0], n)
        last[qk] = loc[n - 1]
        return True

    def _sort_key(self, mid: int) -> tuple[int, int]:
        seg, off, _size = self.loc(mid)
        return seg, off
