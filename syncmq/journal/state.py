"""The journal's model of what is live, and where on disk it lives.

:class:`JournalState` applies records in log order. Recovery builds one by replaying every
segment (and keeps the decoded PUBLISH records so it can hand the live messages to the broker);
the writer thread then keeps it up to date by applying every record it writes, and compaction
reads it to decide which records of a closed segment must be kept.

Ownership: a ``JournalState`` has no lock. It belongs to the thread that runs recovery until
:meth:`Journal.start`, then to the ``syncmq-journal`` thread alone (the writer and compaction
both run there). Other threads only read the plain-int counters exposed by the journal.

Liveness (what compaction keeps):

* an entity record (VHOST_ADD, EXCHANGE_DECLARE, QUEUE_DECLARE, BINDING_ADD) is live while its
  entity exists; a re-declare does not kill the earlier declare (both stay live, the last one
  gives the attributes), so dropping records never turns a re-declare into a creation;
* a PUBLISH is live while its message is on at least one queue;
* a PARAM_SET / GLOBAL_SET is live while it gives its parameter's current value: a later set
  of the same parameter kills it (a value is replaced whole), a clear or a VHOST_DELETE too;
* ACK, DELIVERED, the deletes/purge and the parameter clears are never counted live; compaction keeps the ones that
  still matter (see ``compaction.py``), using :attr:`key_segs` and :attr:`dead_seg`.

Invariants (checked by :meth:`check`):

* ``seg.live`` is the byte size of the live records located in ``seg``;
* :attr:`msgs` (a packed :class:`~syncmq.journal.msgtable.MessageTable`) holds every live
  message: its record's place, the queues still holding it, where it was delivered; its
  ``queue_counts`` are the live messages per queue; the record of a live message is counted
  in its segment's ``live``;
* ``dead_seg[m] == s`` only if ``m`` is not live and ``m`` is listed in ``segments[s].dead_ids``;
* ``key_segs[k]`` is the set of segments whose ``keys`` contain ``k``;
* ``seg.max_pub`` is at least the id of every PUBLISH record in ``seg`` (live ones and its
  ``dead_ids``), ``seg.min_ref`` at most every id an ACK/DELIVERED/DELIVERED_RUNS record in
  ``seg`` names, and ``seg.msgs_only`` is False if ``seg`` holds an entity, parameter or
  tombstone record (one located there is checked; the others are not kept in memory). Both
  are exact for what ``apply`` saw, so replay after a restart gives the same values.

Memory after a drained backlog (issue #22): every message a drain acks is a dead PUBLISH
until compaction drops its segment, so :attr:`dead_seg` grows to the dead messages of every
segment compaction has not reached yet (millions when a large backlog drains faster than
compaction rewrites it) and, a dict, keeps that table when its keys are deleted.
:meth:`fit_dead` therefore rebuilds it in place once its table is :data:`FIT_FACTOR`
times larger than its entries need (:func:`fit`; amortized O(1) a deletion, on the journal
thread after a compaction job, outside the reader's lock, never per message). A segment's ``dead_ids`` is an ``array('Q')``: 8 bytes a dead
id instead of a list slot and an int object (~40), for as long as the segment is on disk.
"""

from __future__ import annotations

import logging
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import repeat

from . import format as fmt
from .msgtable import MessageTable

__all__ = ["JournalState", "Segment", "Entity", "NO_REF", "vhost_key", "exchange_key",
           "queue_key", "binding_key"]

log = logging.getLogger("syncmq.journal")

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")

NO_REF = 1 << 64  # Segment.min_ref of a segment naming no id (above every u64 id)

Key = tuple  # ('v', vh) | ('x', vh, name) | ('q', vh, name) | ('b', vh, src, dst, kind, rk, args)
#             | ('p', vh, component, name) | ('g', name)
QKey = tuple[str, str]

FIT_MIN = 64 * 1024  # a table under this many bytes is never rebuilt (~1,500 entries)
FIT_ENTRY = 48  # table bytes an entry costs at most in a table sized for its dict (42 measured)
FIT_FACTOR = 8  # rebuilt when its table is this many times what its entries need
FIT_LOG = 4 << 20  # a rebuild of a table this large is logged at info (~100,000 entries)


def fit(d: dict) -> bool:
    """Rebuild ``d`` in place (same object: holders keep their reference) when its table is
    mostly empty: CPython never shrinks a dict on deletion, so a dict that once held N
    entries keeps ~40-80 bytes times N for the life of the process. True if it was rebuilt.
    O(1) unless rebuilt; the rebuild is O(len(d)) and happens only after ``len(d)`` fell
    :data:`FIT_FACTOR`-fold below what the table was sized for, so it is amortized over
    those deletions."""
    size = sys.getsizeof(d)
    if size <= FIT_MIN or size <= FIT_FACTOR * FIT_ENTRY * len(d):
        return False
    items = list(d.items())  # (an insert-driven refill sizes the table for these alone)
    d.clear()
    d.update(items)
    return True


def vhost_key(vhost: str) -> Key:
    return ("v", vhost)


def exchange_key(vhost: str, name: str) -> Key:
    return ("x", vhost, name)


def queue_key(vhost: str, name: str) -> Key:
    return ("q", vhost, name)


def binding_key(rec: fmt.BindingAdd | fmt.BindingRemove) -> Key:
    return ("b", *rec)


class Segment:
    """In-memory facts about one segment file (record bytes exclude the file header)."""

    __slots__ = ("no", "covers_from", "size", "live", "floor", "keys", "dead_ids", "drain",
                 "msgs_only", "min_ref", "max_pub")

    def __init__(self, no: int, covers_from: int | None = None) -> None:
        self.no = no
        self.covers_from = no if covers_from is None else covers_from
        self.size = 0  # bytes of records in the file
        self.live = 0  # bytes of live records (see module docstring)
        self.floor = 0  # bytes kept by the last compaction although not live (needed tombstones)
        self.keys: set[Key] = set()  # entity keys mentioned by non-tombstone records here
        self.dead_ids = array("Q")  # ids of dead PUBLISH records still in this file
        # compaction's measure of how fast ``live`` falls: None, or [since, live then,
        # draining] (see compaction.py, "A segment being drained"; journal thread only)
        self.drain: list | None = None
        # what compaction needs to delete a dead run unread (compaction.py, "A dead run"):
        # no entity, parameter or tombstone record here (only PUBLISH/PUBLISH_AT, ACK,
        # DELIVERED, DELIVERED_RUNS, TX, ID_MARK; set False by ``apply`` for any other)
        self.msgs_only = True
        # the smallest id named by an ACK/DELIVERED/DELIVERED_RUNS record here (NO_REF: none)
        self.min_ref = NO_REF
        # the largest id of a PUBLISH record here (-1: none)
        self.max_pub = -1

    def __repr__(self) -> str:
        return f"<Segment {self.no} size={self.size} live={self.live} floor={self.floor}>"


class Entity:
    """A live vhost, exchange, queue or binding: its latest record and where its records are."""

    __slots__ = ("rec", "locs")

    def __init__(self, rec: fmt.Record, loc: tuple[int, int, int]) -> None:
        self.rec = rec
        self.locs: list[tuple[int, int, int]] = [loc]  # (segment, offset, size), log order


class JournalState:
    """Live entities and messages, and per-segment liveness; see the module docstring."""

    def __init__(self) -> None:
        self.vhosts: dict[str, Entity] = {}
        self.exchanges: dict[QKey, Entity] = {}
        self.queues: dict[QKey, Entity] = {}
        self.bindings: dict[Key, Entity] = {}
        #: runtime parameters: (vhost, component, name) -> Entity; global: name -> Entity
        self.params: dict[tuple[str, str, str], Entity] = {}
        self.globals: dict[str, Entity] = {}
        #: live messages, packed (see ``msgtable.py``)
        self.msgs = MessageTable()
        #: id -> segment of a dead PUBLISH record still on disk
        self.dead_seg: dict[int, int] = {}
        self.segments: dict[int, Segment] = {}
        self.key_segs: dict[Key, set[int]] = {}
        self.max_id = 0
        self.duplicate_publishes = 0
        self._qkeys: dict[QKey, QKey] = {}  # interning of (vhost, queue) tuples
        self._routes: dict[tuple, tuple[QKey, ...]] = {}  # see _route; cleared with keys

    # -- segments -----------------------------------------------------------------------------

    def add_segment(self, no: int, covers_from: int | None = None) -> Segment:
        seg = Segment(no, covers_from)
        self.segments[no] = seg
        return seg

    def mention(self, seg: Segment, key: Key) -> None:
        if key not in seg.keys:
            seg.keys.add(key)
            s = self.key_segs.get(key)
            if s is None:
                self.key_segs[key] = {seg.no}
            else:
                s.add(seg.no)

    def forget_segment_keys(self, seg: Segment) -> None:
        self._routes.clear()
        for key in seg.keys:
            s = self.key_segs.get(key)
            if s is not None:
                s.discard(seg.no)
                if not s:
                    del self.key_segs[key]
        seg.keys = set()

    def drop_segment(self, no: int) -> None:
        """Forget segment ``no`` (its file is gone or stale): keys and dead ids."""
        seg = self.segments.pop(no)
        self.forget_segment_keys(seg)
        dead = self.dead_seg
        for mid in seg.dead_ids:
            if dead.get(mid) == no:
                del dead[mid]

    def fit_dead(self) -> None:
        """Give a drained backlog's dead-id table back (:func:`fit`), once a compaction job
        dropped its segments: called by the compactor after the reader's swap, never under
        the reader's lock (a rebuild is O(entries left), one C call holding the GIL)."""
        dead = self.dead_seg
        before = sys.getsizeof(dead)
        if fit(dead):
            # (a FIFO drain empties a segment's worth, ~1-3 MiB, every few seconds: said
            # only for a large backlog's table)
            log.log(logging.INFO if before >= FIT_LOG else logging.DEBUG,
                    "journal dead-id table rebuilt at its size", extra={
                "bytes_before": before, "bytes_after": sys.getsizeof(dead),
                "entries": len(dead)})

    # -- applying records ---------------------------------------------------------------------

    def _qkey(self, vhost: str, name: str) -> QKey:
        k = (vhost, name)
        return self._qkeys.setdefault(k, k)

    def apply(self, rtype: int, buf: bytes | memoryview, pos: int, length: int, seg: Segment,
              off: int | None = None) -> None:
        """Apply the record whose header is at ``buf[pos]`` (payload ``length`` bytes), which
        lives at offset ``off`` (default ``pos``) of ``seg``'s file. Raises
        :class:`format.FormatError` if the payload does not decode (the record's bytes still
        count in ``seg.size``)."""
        start = pos + fmt.RECORD_HEADER.size
        end = start + length
        size = end - pos
        if off is None:
            off = pos
        seg.size += size
        if rtype == fmt.T_PUBLISH or rtype == fmt.T_PUBLISH_AT:
            mid, vhost, queues = fmt.decode_publish_head(buf, start, end)
            self.publish(mid, vhost, queues, seg, off, size)
        elif rtype == fmt.T_ID_MARK:
            mid = fmt.decode_payload(rtype, buf, start, end).max_id
            if mid > self.max_id:
                self.max_id = mid
        elif rtype == fmt.T_TX:
            pass  # a transaction's marker: its records follow and are applied on their own
        else:
            if rtype != fmt.T_ACK and rtype != fmt.T_DELIVERED and rtype != fmt.T_DELIVERED_RUNS:
                seg.msgs_only = False  # (before decoding: an undecodable one counts too)
            self._apply_other(rtype, buf, start, end, seg, off, size)

    def _apply_other(self, rtype: int, buf: bytes | memoryview, start: int, end: int,
                     seg: Segment, off: int, size: int) -> None:
        """:meth:`apply` of an ACK, DELIVERED or entity record."""
        if rtype == fmt.T_ACK or rtype == fmt.T_DELIVERED:
            vhost, queue, ids = fmt.decode_ids_record(buf, start, end)
            if ids:
                mn = min(ids)  # (one C pass a record: ids are in no particular order)
                if mn < seg.min_ref:
                    seg.min_ref = mn
            (self.ack if rtype == fmt.T_ACK else self.delivered)(vhost, queue, ids)
        elif rtype == fmt.T_DELIVERED_RUNS:
            rec = fmt.decode_payload(rtype, buf, start, end)
            for first, _count in rec.runs:  # (a run, not an id)
                if first < seg.min_ref:
                    seg.min_ref = first
            self.delivered_runs(rec.vhost, rec.queue, rec.runs)
        else:
            self.apply_entity(fmt.decode_payload(rtype, buf, start, end), seg, off, size)

    def _route(self, seg: Segment, vhost: str, queues: tuple[str, ...]) -> tuple[QKey, ...]:
        """Deduplicated queue keys of a PUBLISH, its keys mentioned in ``seg`` (cached: most
        publishes repeat a few routes)."""
        ck = (seg.no, vhost, queues)
        route = self._routes.get(ck)
        if route is None:
            if len(self._routes) > 4096:
                self._routes.clear()
            self.mention(seg, ("v", vhost))
            qkeys: list[QKey] = []
            for q in queues:
                qk = self._qkey(vhost, q)
                if qk not in qkeys:
                    qkeys.append(qk)
                    self.mention(seg, ("q", vhost, q))
            route = self._routes[ck] = tuple(qkeys)
        return route

    def publish(self, mid: int, vhost: str, queues: tuple[str, ...], seg: Segment, off: int,
                size: int) -> None:
        if mid > self.max_id:
            self.max_id = mid
        if mid > seg.max_pub:
            seg.max_pub = mid
        route = self._routes.get((seg.no, vhost, queues))  # (_route's cache, no call)
        if route is None:
            route = self._route(seg, vhost, queues)
        if not route or not self.msgs.add(mid, seg.no, off, size, route):
            if route:  # broken contract (ids must be unique): keep the first
                self.duplicate_publishes += 1
            else:
                self.dead_seg[mid] = seg.no
            seg.dead_ids.append(mid)
            return
        if self.dead_seg:
            self.dead_seg.pop(mid, None)
        seg.live += size

    def publish_run(self, mids: Sequence[int], vhost: str, queues: tuple[str, ...],
                    seg: Segment, offs: Sequence[int], sizes: Sequence[int]) -> None:
        """:meth:`publish` of consecutive PUBLISH records of one route in ``seg`` (log
        order); ``MessageTable.add_run`` in one step when it can, else one by one (the
        journal thread's batches; recovery's replay, ``mids`` a ``range``)."""
        route = self._routes.get((seg.no, vhost, queues))
        if route is None:
            route = self._route(seg, vhost, queues)
        if len(mids) > 1 and route and self.msgs.add_run(mids, seg.no, offs, sizes, route):
            if mids[-1] > self.max_id:  # (add_run took them: ascending)
                self.max_id = mids[-1]
            if mids[-1] > seg.max_pub:
                seg.max_pub = mids[-1]
            if self.dead_seg:
                pop = self.dead_seg.pop
                for mid in mids:
                    pop(mid, None)
            seg.live += sum(sizes)
            return
        publish = self.publish
        for mid, off, size in zip(mids, offs, sizes, strict=True):
            publish(mid, vhost, queues, seg, off, size)

    def _killed(self, mid: int, seg_no: int, size: int) -> None:
        """Message ``mid`` (record of ``size`` bytes in segment ``seg_no``) just died."""
        seg = self.segments.get(seg_no)
        if seg is not None:
            seg.live -= size
            seg.dead_ids.append(mid)
            self.dead_seg[mid] = seg_no

    def _seen(self, ids: Iterable[int]) -> tuple | list | range:
        """``ids`` as a sequence, with ``max_id`` raised to the largest of them."""
        if not isinstance(ids, (tuple, list, range)):
            ids = tuple(ids)
        if ids:
            mx = max(ids)
            if mx > self.max_id:
                self.max_id = mx
        return ids

    def ack(self, vhost: str, queue: str, ids: Iterable[int]) -> None:
        ids = self._seen(ids)
        if not ids:
            return
        dead = self.msgs.remove_ids(self._qkey(vhost, queue), ids)
        if len(dead) > 1 and dead[0][1] == dead[-1][1] and len({d[1] for d in dead}) == 1:
            seg_no = dead[0][1]  # (one segment: _killed of them all, without a call each)
            seg = self.segments.get(seg_no)
            if seg is not None:
                mids = [d[0] for d in dead]
                seg.live -= sum([d[2] for d in dead])
                seg.dead_ids.extend(mids)
                self.dead_seg.update(zip(mids, repeat(seg_no)))
            return
        for mid, seg_no, size in dead:
            self._killed(mid, seg_no, size)

    def delivered(self, vhost: str, queue: str, ids: Iterable[int]) -> None:
        ids = self._seen(ids)
        if not ids:
            return
        self.msgs.mark_delivered_ids(self._qkey(vhost, queue), ids)

    def delivered_runs(self, vhost: str, queue: str, runs: Iterable[tuple[int, int]]) -> None:
        """A DELIVERED_RUNS record: :meth:`delivered` of every id of ``runs``, chunk by chunk
        of the table (``MessageTable.mark_delivered_run``), not id by id."""
        qk = self._qkey(vhost, queue)
        for first, count in runs:
            if first + count - 1 > self.max_id:
                self.max_id = first + count - 1
            self.msgs.mark_delivered_run(qk, first, count)

    def _kill_queue_msgs(self, qk: QKey) -> None:
        for mid, seg_no, size in self.msgs.kill_queue(qk):
            self._killed(mid, seg_no, size)

    def _dead_entity(self, ent: Entity) -> None:
        segs = self.segments
        for seg_no, _off, size in ent.locs:
            seg = segs.get(seg_no)
            if seg is not None:
                seg.live -= size

    def _declare(self, table: dict, key: object, rec: fmt.Record, seg: Segment, off: int,
                 size: int) -> bool:
        """Create or re-declare; return True if it created the entity."""
        seg.live += size
        ent = table.get(key)
        if ent is None:
            table[key] = Entity(rec, (seg.no, off, size))
            return True
        ent.rec = rec
        ent.locs.append((seg.no, off, size))
        return False

    def _replace(self, table: dict, key: object, rec: fmt.Record, seg: Segment, off: int,
                 size: int) -> None:
        """A parameter set: the new record is the only live one of ``key``."""
        old = table.get(key)
        if old is not None:
            self._dead_entity(old)
        seg.live += size
        table[key] = Entity(rec, (seg.no, off, size))

    def _remove_bindings(self, pred) -> None:
        dead = [k for k, ent in self.bindings.items() if pred(ent.rec)]
        for k in dead:
            self._dead_entity(self.bindings.pop(k))

    def apply_entity(self, rec: fmt.Record, seg: Segment, off: int, size: int) -> None:
        t = rec.TYPE
        if t == fmt.T_QUEUE_DECLARE:
            vh, name = rec.vhost, rec.name
            self.mention(seg, ("v", vh))
            self.mention(seg, ("q", vh, name))
            qk = self._qkey(vh, name)
            if self._declare(self.queues, qk, rec, seg, off, size):
                self._kill_queue_msgs(qk)  # a new queue starts empty
        elif t == fmt.T_EXCHANGE_DECLARE:
            self.mention(seg, ("v", rec.vhost))
            self.mention(seg, ("x", rec.vhost, rec.name))
            self._declare(self.exchanges, (rec.vhost, rec.name), rec, seg, off, size)
        elif t == fmt.T_BINDING_ADD:
            vh = rec.vhost
            self.mention(seg, ("v", vh))
            self.mention(seg, ("x", vh, rec.source))
            dkind = "q" if rec.destination_kind == fmt.DEST_QUEUE else "x"
            self.mention(seg, (dkind, vh, rec.destination))
            bk = binding_key(rec)
            self.mention(seg, bk)
            self._declare(self.bindings, bk, rec, seg, off, size)
        elif t == fmt.T_VHOST_ADD:
            self.mention(seg, ("v", rec.name))
            self._declare(self.vhosts, rec.name, rec, seg, off, size)
        elif t == fmt.T_PARAM_SET:
            self.mention(seg, ("v", rec.vhost))
            self.mention(seg, ("p", rec.vhost, rec.component, rec.name))
            self._replace(self.params, (rec.vhost, rec.component, rec.name), rec, seg, off, size)
        elif t == fmt.T_GLOBAL_SET:
            self.mention(seg, ("g", rec.name))
            self._replace(self.globals, rec.name, rec, seg, off, size)
        elif t == fmt.T_PARAM_CLEAR:
            ent = self.params.pop((rec.vhost, rec.component, rec.name), None)
            if ent is not None:
                self._dead_entity(ent)
        elif t == fmt.T_GLOBAL_CLEAR:
            ent = self.globals.pop(rec.name, None)
            if ent is not None:
                self._dead_entity(ent)
        elif t == fmt.T_BINDING_REMOVE:
            ent = self.bindings.pop(("b", *rec), None)
            if ent is not None:
                self._dead_entity(ent)
        elif t == fmt.T_QUEUE_PURGE:
            self._kill_queue_msgs(self._qkey(rec.vhost, rec.name))
        elif t == fmt.T_QUEUE_DELETE:
            vh, name = rec.vhost, rec.name
            qk = self._qkey(vh, name)
            ent = self.queues.pop(qk, None)
            if ent is not None:
                self._dead_entity(ent)
            self._kill_queue_msgs(qk)
            self._remove_bindings(
                lambda b: b.vhost == vh and b.destination_kind == fmt.DEST_QUEUE
                and b.destination == name)
        elif t == fmt.T_EXCHANGE_DELETE:
            vh, name = rec.vhost, rec.name
            ent = self.exchanges.pop((vh, name), None)
            if ent is not None:
                self._dead_entity(ent)
            self._remove_bindings(
                lambda b: b.vhost == vh and (b.source == name or (
                    b.destination_kind == fmt.DEST_EXCHANGE and b.destination == name)))
        elif t == fmt.T_VHOST_DELETE:
            vh = rec.name
            ent = self.vhosts.pop(vh, None)
            if ent is not None:
                self._dead_entity(ent)
            for table in (self.exchanges, self.queues, self.params):
                for k in [k for k in table if k[0] == vh]:
                    self._dead_entity(table.pop(k))
            self._remove_bindings(lambda b: b.vhost == vh)
            for qk in [qk for qk in self.msgs.queue_counts if qk[0] == vh]:
                self._kill_queue_msgs(qk)
        else:  # pragma: no cover - apply() routes the other types
            raise fmt.FormatError(f"not an entity record type {t}")

    def kill_orphans(self) -> int:
        """Kill messages on queues that do not exist (end of recovery); return how many
        (message, queue) pairs were dropped."""
        n = 0
        counts = self.msgs.queue_counts
        for qk in [qk for qk in counts if qk not in self.queues]:
            n += counts[qk]
            self._kill_queue_msgs(qk)
        return n

    # -- checks -------------------------------------------------------------------------------

    def check(self) -> None:
        """Assert the invariants of the module docstring (tests; O(state))."""
        live: dict[int, int] = {}
        self.msgs._check()
        for mid, msg in self.msgs.items():
            assert msg.queues, mid
            assert len(set(msg.queues)) == len(msg.queues)
            assert msg.delivered <= set(msg.queues)
            live[msg.seg] = live.get(msg.seg, 0) + msg.size
            assert mid not in self.dead_seg
            assert mid <= self.segments[msg.seg].max_pub, (mid, self.segments[msg.seg])
        for table in (self.vhosts, self.exchanges, self.queues, self.bindings, self.params,
                      self.globals):
            for ent in table.values():
                for seg_no, _off, size in ent.locs:
                    live[seg_no] = live.get(seg_no, 0) + size
                    assert not self.segments[seg_no].msgs_only, (ent.rec, seg_no)
        for no, seg in self.segments.items():
            assert seg.live == live.get(no, 0), (seg, live.get(no, 0))
            assert 0 <= seg.live <= seg.size, seg
            assert not seg.dead_ids or max(seg.dead_ids) <= seg.max_pub, seg
            assert 0 <= seg.min_ref <= NO_REF, seg
            for key in seg.keys:
                assert no in self.key_segs[key]
        for mid, s in self.dead_seg.items():
            assert mid not in self.msgs
            assert mid in self.segments[s].dead_ids
        for key, segs in self.key_segs.items():
            for s in segs:
                assert key in self.segments[s].keys
