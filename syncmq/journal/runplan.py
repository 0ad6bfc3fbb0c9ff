"""Which segments compaction takes, and when (the choice; ``compaction.py`` does the work).

A *closed* segment (any but the current one) is *dirty* when ``live + floor < threshold * size``
(``floor`` is what its last compaction had to keep although not live, so a segment is not
rewritten again for nothing). Two neighbouring closed segments that are both *small* (under
``segment_bytes / 8``) are worth merging. A run starts at the oldest dirty or mergeable segment
and is extended while the expected output stays under ``segment_bytes``.

A segment being drained
=======================

A FIFO drain acks a backlog's PUBLISH records in log order, so the segment at the head of the
drain goes from all live to all dead in seconds. Compacting it when it is half dead copies
records that die moments later, and the output, half dead again soon, is copied again: the
drain pays for a second write of its backlog. So the journal thread's automatic compaction
(``find_run(current, defer_draining=True)``) leaves a dirty segment alone while its live bytes
fall fast enough to reach nothing within ``DRAIN_HORIZON`` seconds, measured over
``DRAIN_WINDOW`` seconds at a time (``Segment.drain``; a segment is left alone for its first
window, not yet measured); once the drain stops or slows (a consumer gone, a slow one) the
next window's measure lets it be compacted as before, and a segment with nothing live left is
never deferred (deleting it copies nothing). While a segment is deferred the journal thread
looks again every ``DRAIN_WINDOW`` even when nothing is written, so an idle broker still gets
its disk space back. This is only a choice of *when*: which records a job keeps is unchanged,
and an acked record that is not compacted yet is just dead bytes on disk (recovery replays its
ACK). :meth:`Journal.compact` (``run_all``) compacts everything at once, draining or not.

A dead run (a run a job would keep nothing of, deleted without being read) is decided here
too (:meth:`RunPlanner.dead_run`); the rule and why it is safe: ``compaction.py``, "A dead
run".

Used only from the thread that owns the journal state (see ``state.py``): no lock.
"""

from __future__ import annotations

from collections.abc import Callable

from . import format as fmt
from .state import NO_REF, JournalState, Segment

__all__ = ["RunPlanner", "DRAIN_WINDOW", "DRAIN_HORIZON"]

#: Seconds over which the fall of a dirty segment's live bytes is measured.
DRAIN_WINDOW = 1.0
#: A dirty segment whose live bytes fall fast enough to reach nothing within this many seconds
#: is not compacted by the journal thread (see "A segment being drained").
DRAIN_HORIZON = 30.0


class RunPlanner:
    """The choice of compaction runs; mixed into :class:`~syncmq.journal.compaction.Compactor`,
    which sets ``state``, ``segment_bytes``, ``threshold``, ``clock``, ``drain_window``,
    ``drain_horizon`` and ``deferred``."""

    state: JournalState
    segment_bytes: int
    threshold: float
    clock: Callable[[], float]
    drain_window: float
    drain_horizon: float
    deferred: bool

    def _dirty(self, seg: Segment) -> bool:
        if seg.size == 0:
            return True
        kept = seg.live + seg.floor
        return kept < seg.size and kept < self.threshold * seg.size

    def _small(self, seg: Segment) -> bool:
        return fmt.FILE_HEADER.size + seg.size < self.segment_bytes // 8

    def _draining(self, seg: Segment, now: float) -> bool:
        """True while ``seg``'s live bytes fall fast enough to reach nothing within
        ``drain_horizon`` seconds (the head of a queue's drain: compacting it would copy
        records that die moments later). The fall is measured over ``drain_window`` seconds
        at a time (the first window counts as draining: not measured yet); a segment with
        nothing live is never draining (deleting it copies nothing)."""
        live = seg.live
        if not live:
            return False
        d = seg.drain
        if d is None:
            seg.drain = [now, live, True]
            return True
        since, then, draining = d
        if now - since >= self.drain_window:
            fell = then - live
            draining = fell > 0 and live * (now - since) <= fell * self.drain_horizon
            seg.drain = [now, live, draining]
        return draining

    def find_run(self, current: int, defer_draining: bool = False) -> list[int] | None:
        """The next run to compact (segment numbers, ascending), or None. O(segments).

        With ``defer_draining`` (the journal thread's automatic compaction), a dirty segment
        that is being drained (:meth:`_draining`) is neither compacted nor part of a run, and
        :attr:`deferred` says whether one was left for that reason (the journal thread then
        looks again after ``drain_window`` even if nothing is written)."""
        segs = self.state.segments
        closed = sorted(no for no in segs if no < current)
        now = self.clock() if defer_draining else 0.0
        self.deferred = False

        def skip(seg: Segment) -> bool:
            if defer_draining and self._draining(seg, now):
                self.deferred = True
                return True
            return False

        for i, no in enumerate(closed):
            seg = segs[no]
            dirty = self._dirty(seg)
            nxt = segs[closed[i + 1]] if i + 1 < len(closed) else None
            if not dirty and not (self._small(seg) and nxt is not None and self._small(nxt)):
                continue
            if dirty and skip(seg):
                continue
            run = [no]
            est = seg.live + seg.floor if dirty else seg.size
            for n in closed[i + 1 :]:
                s = segs[n]
                d = self._dirty(s)
                if not (d or self._small(s)) or (d and skip(s)):
                    break
                e = s.live + s.floor if d else s.size
                if est + e > self.segment_bytes:
                    break
                run.append(n)
                est += e
            if len(run) == 1 and not dirty:
                continue  # a clean segment alone (its small neighbour deferred): a copy of itself
            return run
        return None

    def dead_run(self, run: list[int]) -> bool:
        """True if a job over ``run`` would keep nothing, known without reading it
        (``compaction.py``, "A dead run"): nothing live, no entity/parameter/tombstone record, and no
        id its ACK/DELIVERED/DELIVERED_RUNS records name can be a PUBLISH of a segment before
        it. O(segments), per job."""
        segs = self.state.segments
        min_ref = NO_REF
        for no in run:
            seg = segs[no]
            if seg.live or not seg.msgs_only:
                return False
            if seg.min_ref < min_ref:
                min_ref = seg.min_ref
        if min_ref == NO_REF:
            return True  # (no ids named: only PUBLISH records, as a drained backlog's: O(run))
        a = run[0]
        return all(seg.max_pub < min_ref for no, seg in segs.items() if no < a)
