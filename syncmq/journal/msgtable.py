"""The journal's live messages, packed: about 26 bytes a message instead of a Python object.

A backlog of N persistent messages keeps N entries here for as long as they are queued, so
this is the part of the journal whose size is per message (issue #22: 10,000,000 queued
messages in bounded memory). :class:`MessageTable` answers, for a live message id: where its
PUBLISH record is (segment, offset, size), which queues still hold it, and on which of them
it was delivered.

Layout
======

Ids are grouped in *chunks* of ``2**CHUNK_BITS`` consecutive ids (``mid >> CHUNK_BITS``); a
chunk holds four parallel arrays, sorted by id, one slot per message it has seen since its
last tidy:

* ``ids`` (``array('H')``): the message id's low ``CHUNK_BITS`` bits (the chunk's key is
  the rest), 2 bytes;
* ``loc`` (this and the next two are ``array('Q')``, 8 bytes each): ``seg << 32 | off``,
  the record's segment and offset;
* ``info``: ``size << 32 | route``, the record's size (header included) and its *route id*;
* ``masks``: ``delivered << 32 | remaining``, two bit sets over the route's queues.

A *route* is the deduplicated tuple of queue keys of a PUBLISH (interned, one id per distinct
tuple, freed when no live message uses it any more); bit ``i`` of ``remaining`` says the
message is still on ``route[i]``, bit ``i`` of ``delivered`` that a DELIVERED record was seen
for it on that queue. A message dies when ``remaining`` becomes 0: its slot stays (dead) until
the chunk is tidied (rebuilt with live slots only, once dead slots outnumber live ones 3 to 1)
or deleted (no live slot left). Ids are handed out by a counter, so a backlog fills whole
chunks: 26 bytes a slot, plus a chunk's fixed cost (~600 bytes) spread over up to 1,024
messages.

Whatever does not fit a slot (a route of more than :data:`MAX_ROUTE` queues, a segment number
or an offset of 2**32 or more) is kept as a plain object in ``_big`` instead: exact, just not
packed. Every query looks there too (only when it is not empty).

``queue_counts[qk]`` is how many live messages are on queue ``qk`` (absent: none). A queue's
messages are found by scanning the chunks that hold a route through it (``chunk.routes``, the
route ids its slots used since the chunk was made or last tidied: a superset of its live
slots' routes; a route is freed when no chunk lists it), in id order; :meth:`by_queue` gives them in log order
(segment, offset), which is publish order.

Ownership: like :class:`~syncmq.journal.state.JournalState`, whose part it is: no lock, one
thread at a time (recovery, then the journal thread); the segment reader reads :meth:`loc`
under its own lock while the journal thread is the only writer (see ``reader.py``).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from .msgruns import _LOW, _M32, CHUNK_BITS, MAX_ROUTE, RunMarks, _bits, _Chunk

__all__ = ["MessageTable", "MsgView", "CHUNK_BITS", "MAX_ROUTE"]

QKey = tuple[str, str]
Route = tuple[QKey, ...]


class MsgView(NamedTuple):
    """A snapshot of one live message (tests, diagnostics: not the hot paths)."""

    seg: int
    off: int
    size: int
    queues: Route  # the queues still holding it, in route order
    delivered: frozenset  # of the queues where it was delivered


class _Big:
    """A message that does not fit a chunk slot (see the module docstring)."""

    __slots__ = ("seg", "off", "size", "queues", "delivered")

    def __init__(self, seg: int, off: int, size: int, queues: Route) -> None:
        self.seg, self.off, self.size = seg, off, size
        self.queues = list(queues)
        self.delivered: set[QKey] = set()


class MessageTable(RunMarks):
    """Live messages by id; see the module docstring (runs of ids: ``msgruns.py``)."""

    _chunk_type = _Chunk

    def __init__(self) -> None:
        self._chunks: dict[int, _Chunk] = {}
        self._big: dict[int, _Big] = {}
        self._routes: list[Route | None] = []
        self._route_bits: list[dict[QKey, int] | None] = []
        self._route_refs: list[int] = []
        self._route_ids: dict[Route, int] = {}
        self._free_routes: list[int] = []
        #: live messages per queue key (absent: none)
        self.queue_counts: dict[QKey, int] = {}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    # -- routes -------------------------------------------------------------------------------

    def _route_id(self, route: Route) -> int:
        rid = self._route_ids.get(route)
        if rid is None:
            bits = {qk: i for i, qk in enumerate(route)}
            if self._free_routes:
                rid = self._free_routes.pop()
                self._routes[rid], self._route_bits[rid] = route, bits
            else:
                rid = len(self._routes)
                self._routes.append(route)
                self._route_bits.append(bits)
                self._route_refs.append(0)
            self._route_ids[route] = rid
        return rid

    def _route_unref(self, rid: int) -> None:
        refs = self._route_refs[rid] - 1
        self._route_refs[rid] = refs
        if not refs:
            del self._route_ids[self._routes[rid]]
            self._routes[rid] = self._route_bits[rid] = None
            self._free_routes.append(rid)

    # -- lookups ------------------------------------------------------------------------------

    def _slot(self, mid: int) -> tuple[_Chunk, tuple, int] | None:
        """The chunk, its arrays and the index of ``mid``'s slot, live or dead, or None. The
        arrays are taken once: another thread may read through them (:meth:`loc`) while the
        journal thread replaces them."""
        c = self._chunks.get(mid >> CHUNK_BITS)
        if c is None:
            return None
        a = c.a
        ids = a[0]
        lo = mid & _LOW
        i = bisect_left(ids, lo)
        if i < len(ids) and ids[i] == lo:
            return c, a, i
        return None

    def __contains__(self, mid: int) -> bool:
        s = self._slot(mid)
        if s is not None and s[1][3][s[2]] & _M32:
            return True
        return bool(self._big) and mid in self._big

    def loc(self, mid: int) -> tuple[int, int, int] | None:
        """``(segment, offset, size)`` of live message ``mid``'s PUBLISH record, or None
        (any thread: the segment reader's lookups)."""
        s = self._slot(mid)
        if s is not None:
            _c, a, i = s
            if a[3][i] & _M32:
                loc = a[1][i]
                return loc >> 32, loc & _M32, a[2][i] >> 32
        if self._big:
            b = self._big.get(mid)
            if b is not None:
                return b.seg, b.off, b.size
        return None

    def get(self, mid: int) -> MsgView | None:
        s = self._slot(mid)
        if s is not None:
            c, _a, i = s
            m = c.a[3][i]
            if m & _M32:
                route = self._routes[c.a[2][i] & _M32]
                loc = c.a[1][i]
                return MsgView(loc >> 32, loc & _M32, c.a[2][i] >> 32,
                               tuple(route[b] for b in _bits(m & _M32)),
                               frozenset(route[b] for b in _bits(m >> 32)))
        if self._big:
            b = self._big.get(mid)
            if b is not None:
                return MsgView(b.seg, b.off, b.size, tuple(b.queues), frozenset(b.delivered))
        return None

    def ids(self) -> Iterator[int]:
        """Live message ids (chunk by chunk, then the big ones)."""
        for key, c in list(self._chunks.items()):
            masks = c.a[3]
            base = key << CHUNK_BITS
            for i, lo in enumerate(c.a[0]):
                if masks[i] & _M32:
                    yield base | lo
        yield from list(self._big)

    def items(self) -> Iterator[tuple[int, MsgView]]:
        for mid in self.ids():
            yield mid, self.get(mid)

    def copies(self, mid: int) -> int:
        """How many queues still hold live message ``mid`` (0: not live)."""
        s = self._slot(mid)
        if s is not None:
            m = s[1][3][s[2]] & _M32
            if m:
                return m.bit_count()
        b = self._big.get(mid) if self._big else None
        return len(b.queues) if b is not None else 0

    def place(self, mid: int, qk: QKey) -> tuple[int, int, int, int, bool]:
        """``(segment, offset, size, copies, delivered on qk)`` of live message ``mid`` in one
        lookup (recovery hands each message over with all of these)."""
        s = self._slot(mid)
        if s is not None:
            c, a, i = s
            m = a[3][i]
            if m & _M32:
                loc, info = a[1][i], a[2][i]
                bit = self._route_bits[info & _M32].get(qk)
                return (loc >> 32, loc & _M32, info >> 32, (m & _M32).bit_count(),
                        bit is not None and (m >> (32 + bit)) & 1 == 1)
        b = self._big[mid]  # KeyError: not live
        return b.seg, b.off, b.size, len(b.queues), qk in b.delivered

    def is_delivered(self, mid: int, qk: QKey) -> bool:
        """Whether live message ``mid`` is on ``qk`` and was delivered there."""
        s = self._slot(mid)
        if s is not None:
            c, _a, i = s
            m = c.a[3][i]
            if m & _M32:
                bit = self._route_bits[c.a[2][i] & _M32].get(qk)
                return bit is not None and (m >> (32 + bit)) & 1 == 1
        b = self._big.get(mid) if self._big else None
        return b is not None and qk in b.delivered

    # -- changes ------------------------------------------------------------------------------

    def add(self, mid: int, seg: int, off: int, size: int, route: Route) -> bool:
        """Make ``mid`` live on every queue of ``route`` (non-empty, no repeats), its record at
        ``(seg, off, size)``; False (and nothing changes) if it is live already."""
        key = mid >> CHUNK_BITS
        lo = mid & _LOW
        c = self._chunks.get(key)
        i = -1
        if c is not None:
            ids = c.a[0]
            n = len(ids)
            if n and ids[n - 1] < lo:
                i = n
            else:
                i = bisect_left(ids, lo)
                if i < n and ids[i] == lo and c.a[3][i] & _M32:
                    return False
        if self._big and mid in self._big:
            return False
        qc = self.queue_counts
        for qk in route:
            qc[qk] = qc.get(qk, 0) + 1
        self._n += 1
        if seg > _M32 or off > _M32 or size > _M32 or len(route) > MAX_ROUTE:
            self._big[mid] = _Big(seg, off, size, route)
            return True
        rid = self._route_ids.get(route)
        if rid is None:
            rid = self._route_id(route)
        if c is None:
            c = self._chunks[key] = _Chunk()
            i = 0
        loc, info, masks = (seg << 32) | off, (size << 32) | rid, (1 << len(route)) - 1
        a = c.a
        ids = a[0]
        # readers (``loc``) find a slot by its id: the id goes in last, the mask (liveness)
        # after the location, and slots that move get new arrays
        if i == len(ids):
            a[1].append(loc)
            a[2].append(info)
            a[3].append(masks)
            ids.append(lo)
        elif ids[i] == lo:  # the dead slot of an earlier PUBLISH with this id
            a[1][i], a[2][i] = loc, info
            a[3][i] = masks
        else:
            new = tuple(array(x.typecode, x) for x in a)
            for x, v in zip(new, (lo, loc, info, masks), strict=True):
                x.insert(i, v)
            c.a = new
        c.live += 1
        if rid not in c.routes:
            c.routes.add(rid)
            self._route_refs[rid] += 1
        return True

    def _count_down(self, qk: QKey) -> None:
        qc = self.queue_counts
        n = qc[qk] - 1
        if n:
            qc[qk] = n
        else:
            del qc[qk]

    def _die(self, key: int, c: _Chunk, i: int, rid: int, tidy: bool = True) -> None:
        """Slot ``i`` of chunk ``c`` just lost its last queue (``tidy``: the chunk may be
        rebuilt now, which moves its slots)."""
        self._n -= 1
        c.live -= 1
        if not c.live:
            del self._chunks[key]
            for r in c.routes:
                self._route_unref(r)
        elif tidy and len(c.a[0]) >= 64 and len(c.a[0]) > 4 * c.live:
            self._tidy(c)

    def _tidy(self, c: _Chunk) -> None:
        """Rebuild ``c`` with its live slots only (new arrays: see :meth:`_slot`)."""
        a = c.a
        masks, info = a[3], a[2]
        keep = [i for i, m in enumerate(masks) if m & _M32]
        c.a = tuple(array(x.typecode, [x[i] for i in keep]) for x in a)
        routes = {info[i] & _M32 for i in keep}
        for r in c.routes - routes:
            self._route_unref(r)
        c.routes = routes

    def remove(self, mid: int, qk: QKey) -> tuple[int, int] | bool | None:
        """Take live message ``mid`` off queue ``qk`` (an ACK, or its queue is purged): None if
        it was not on it, False if other queues still hold it, else ``(seg, size)`` of its
        record (it is dead now)."""
        key = mid >> CHUNK_BITS
        c = self._chunks.get(key)
        if c is not None:
            ids = c.a[0]
            lo = mid & _LOW
            i = bisect_left(ids, lo)
            if i < len(ids) and ids[i] == lo:
                m = c.a[3][i]
                if m & _M32:
                    info = c.a[2][i]
                    bit = self._route_bits[info & _M32].get(qk)
                    if bit is None or not (m >> bit) & 1:
                        return None
                    m &= ~((1 << bit) | (1 << (32 + bit)))
                    c.a[3][i] = m
                    self._count_down(qk)
                    if m & _M32:
                        return False
                    seg = c.a[1][i] >> 32
                    self._die(key, c, i, info & _M32)
                    return seg, info >> 32
        b = self._big.get(mid) if self._big else None
        if b is None or qk not in b.queues:
            return None
        b.queues.remove(qk)
        b.delivered.discard(qk)
        self._count_down(qk)
        if b.queues:
            return False
        del self._big[mid]
        self._n -= 1
        return b.seg, b.size

    def mark_delivered(self, mid: int, qk: QKey) -> None:
        """A DELIVERED record for ``mid`` on ``qk`` (nothing if it is not on ``qk``)."""
        s = self._slot(mid)
        if s is not None:
            c, _a, i = s
            m = c.a[3][i]
            if m & _M32:
                bit = self._route_bits[c.a[2][i] & _M32].get(qk)
                if bit is not None and (m >> bit) & 1:
                    c.a[3][i] = m | (1 << (32 + bit))
                return
        b = self._big.get(mid) if self._big else None
        if b is not None and qk in b.queues:
            b.delivered.add(qk)

    def remove_ids(self, qk: QKey, ids: Iterable[int]) -> list[tuple[int, int, int]]:
        """:meth:`remove` of each of ``ids`` from ``qk`` (an ACK record); returns ``(mid, seg,
        size)`` of those that died. The hot path of acks: a run of consecutive ids in a chunk
        of ``(qk,)`` alone dies in one step (``RunMarks._remove_span``); otherwise a chunk
        without tidied-away slots is indexed by ``mid - first id`` instead of a binary
        search."""
        dead: list[tuple[int, int, int]] = []
        chunks = self._chunks
        route_bits = self._route_bits
        qc = self.queue_counts
        if not isinstance(ids, (list, tuple, range)):
            ids = list(ids)
        k, n_ids, tried = 0, len(ids), -1
        while k < n_ids:
            mid = ids[k]
            key = mid >> CHUNK_BITS
            if key != tried:  # (a chunk that refused the fast path is not asked again)
                took = self._remove_span(qk, ids, k, dead)
                if took:
                    k += took
                    continue
                tried = key
            k += 1
            c = chunks.get(key)
            if c is not None:
                a = c.a
                ids_ = a[0]
                n = len(ids_)
                lo = mid & _LOW
                i = lo - ids_[0] if n else -1
                if not (0 <= i < n and ids_[i] == lo):
                    i = bisect_left(ids_, lo)
                if i < n and ids_[i] == lo:
                    masks = a[3]
                    m = masks[i]
                    if m & _M32:  # else: dead, or moved to _big
                        info = a[2][i]
                        bit = route_bits[info & _M32].get(qk)
                        if bit is None or not (m >> bit) & 1:
                            continue
                        m &= ~((1 << bit) | (1 << (32 + bit)))
                        masks[i] = m
                        left = qc[qk] - 1
                        if left:
                            qc[qk] = left
                        else:
                            del qc[qk]
                        if not m & _M32:
                            dead.append((mid, a[1][i] >> 32, info >> 32))
                            self._die(key, c, i, info & _M32)
                        continue
            if self._big:
                r = self.remove(mid, qk)
                if r:
                    dead.append((mid, r[0], r[1]))
        return dead

    def mark_delivered_ids(self, qk: QKey, ids: Iterable[int]) -> None:
        """:meth:`mark_delivered` of each of ``ids`` (a DELIVERED record)."""
        chunks = self._chunks
        route_bits = self._route_bits
        j = 0
        for k, mid in enumerate(ids):
            if j:  # (the rest of a chunk marked whole by _mark_chunk)
                j -= 1
                continue
            c = chunks.get(mid >> CHUNK_BITS)
            if c is not None:
                a = c.a
                ids_ = a[0]
                n = len(ids_)
                lo = mid & _LOW
                if lo == ids_[0] and n >= 64 and isinstance(ids, (list, tuple)):
                    j = self._mark_chunk(c, qk, ids, k)
                    if j:
                        j -= 1
                        continue
                i = lo - ids_[0] if n else -1
                if not (0 <= i < n and ids_[i] == lo):
                    i = bisect_left(ids_, lo)
                if i < n and ids_[i] == lo:
                    masks = a[3]
                    m = masks[i]
                    if m & _M32:
                        bit = route_bits[a[2][i] & _M32].get(qk)
                        if bit is not None and (m >> bit) & 1:
                            masks[i] = m | (1 << (32 + bit))
                        continue
            if self._big:
                self.mark_delivered(mid, qk)

    def _mark_chunk(self, c: _Chunk, qk: QKey, ids: list[int] | tuple[int, ...],
                    k: int) -> int:
        """:meth:`mark_delivered_ids`' step for a chunk that is one run (consecutive live
        slots of one route ``(qk,)``) whose ids all follow ``ids[k]`` (its first) in ``ids``:
        every mask set delivered in one slice assignment (same length, in place: readers
        see each slot whole). Returns how many ids of ``ids`` it covered (0: nothing done,
        take them one by one)."""
        if len(c.routes) != 1:
            return 0
        route = self._routes[next(iter(c.routes))]
        ids_, _loc, _info, masks = c.a
        n = len(ids_)
        if route != (qk,) or ids_[n - 1] - ids_[0] != n - 1 or \
                masks.count(1) + masks.count(_M32 + 2) != n:
            return 0
        mid = ids[k]
        if ids[k:k + n] != type(ids)(range(mid, mid + n)):
            return 0
        masks[:] = array("Q", (_M32 + 2,)) * n
        return n

    def move(self, mid: int, old_seg: int, old_off: int, seg: int, off: int) -> bool:
        """Compaction copied ``mid``'s record from ``(old_seg, old_off)`` to ``(seg, off)``:
        record it if ``mid`` is live with its record there; return whether it was."""
        s = self._slot(mid)
        if s is not None:
            c, _a, i = s
            if c.a[3][i] & _M32 and c.a[1][i] == (old_seg << 32) | old_off:
                if seg <= _M32 and off <= _M32:
                    c.a[1][i] = (seg << 32) | off
                    return True
                self._to_big(mid, c, i)
                b = self._big[mid]
                b.seg, b.off = seg, off
                return True
        b = self._big.get(mid) if self._big else None
        if b is not None and b.seg == old_seg and b.off == old_off:
            b.seg, b.off = seg, off
            return True
        return False

    def _to_big(self, mid: int, c: _Chunk, i: int) -> None:
        """Move live slot ``i`` of ``c`` to ``_big`` (its new place does not fit a slot)."""
        v = self.get(mid)
        b = self._big[mid] = _Big(v.seg, v.off, v.size, v.queues)
        b.delivered = set(v.delivered)
        self._n += 1  # _die counts it out
        c.a[3][i] = 0
        self._die(mid >> CHUNK_BITS, c, i, c.a[2][i] & _M32, tidy=False)

    def kill_queue(self, qk: QKey) -> list[tuple[int, int, int]]:
        """Take every live message off ``qk``; returns ``(mid, seg, size)`` of those that died
        (O(messages of the chunks that hold a route through ``qk``))."""
        dead: list[tuple[int, int, int]] = []
        if not self.queue_counts.get(qk):
            return dead
        rids = {rid: bits[qk] for rid, bits in enumerate(self._route_bits)
                if bits is not None and qk in bits}
        for key, c in list(self._chunks.items()):
            if not any(rid in rids for rid in c.routes):
                continue
            masks, info = c.a[3], c.a[2]
            for i in range(len(masks)):
                m = masks[i]
                if not m & _M32:
                    continue
                rid = info[i] & _M32
                bit = rids.get(rid)
                if bit is None or not (m >> bit) & 1:
                    continue
                m &= ~((1 << bit) | (1 << (32 + bit)))
                masks[i] = m
                if not m & _M32:
                    dead.append(((key << CHUNK_BITS) | c.a[0][i], c.a[1][i] >> 32,
                                 info[i] >> 32))
                    self._die(key, c, i, rid, tidy=False)
            if self._chunks.get(key) is c and len(c.a[0]) >= 64 and len(c.a[0]) > 4 * c.live:
                self._tidy(c)
        for mid in [mid for mid, b in self._big.items() if qk in b.queues]:
            r = self.remove(mid, qk)
            if r:
                dead.append((mid, r[0], r[1]))
        self.queue_counts.pop(qk, None)
        return dead

    def alone_on(self, qk: QKey) -> bool:
        """Whether no live message of queue ``qk`` is also on another queue (every route
        through ``qk`` that may still be live is ``(qk,)``; conservative: a route is freed
        only when no chunk lists it). O(routes + big)."""
        for route in self._routes:
            if route is not None and len(route) > 1 and qk in route:
                return False
        return not any(qk in b.queues and len(b.queues) > 1 for b in self._big.values())

    # -- checks -------------------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the table's own invariants (tests; O(messages))."""
        counts: dict[QKey, int] = {}
        refs: dict[int, int] = {}
        n = 0
        for key, c in self._chunks.items():
            assert len(c.a[0]) == len(c.a[1]) == len(c.a[2]) == len(c.a[3])
            assert all(c.a[0][j] < c.a[0][j + 1] for j in range(len(c.a[0]) - 1)), key
            live = 0
            routes: set[int] = set()
            assert c.a[0].typecode == "H" and all(lo <= _LOW for lo in c.a[0]), key
            for i, lo in enumerate(c.a[0]):
                mid = (key << CHUNK_BITS) | lo
                m = c.a[3][i]
                if not m & _M32:
                    continue
                live += 1
                rid = c.a[2][i] & _M32
                route = self._routes[rid]
                assert route is not None and m & _M32 < (1 << len(route))
                assert (m >> 32) & ~m == 0, (mid, m)  # delivered only where still queued
                routes.add(rid)
                for b in _bits(m & _M32):
                    counts[route[b]] = counts.get(route[b], 0) + 1
                assert mid not in self._big
            assert live == c.live > 0, key
            assert routes <= c.routes, key
            for rid in c.routes:
                assert self._routes[rid] is not None
                refs[rid] = refs.get(rid, 0) + 1
            n += live
        for b in self._big.values():
            assert b.queues and len(set(b.queues)) == len(b.queues)
            assert b.delivered <= set(b.queues)
            for qk in b.queues:
                counts[qk] = counts.get(qk, 0) + 1
        n += len(self._big)
        assert n == self._n
        assert counts == self.queue_counts
        for rid, route in enumerate(self._routes):
            if route is None:
                assert rid in self._free_routes
            else:
                assert self._route_ids[route] == rid
                assert self._route_refs[rid] == refs.get(rid, 0) > 0
