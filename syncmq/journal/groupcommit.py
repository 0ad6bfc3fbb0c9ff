"""The journal thread's batch: write it (one ``writev`` per segment touched), fsync once,
fire the callbacks in append order, then apply the records to the liveness state. A mixin of
:class:`syncmq.journal.writer.Journal` (the group commit described in its module docstring),
whose fields it uses; everything here runs on the journal thread, no lock held.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
import time
from itertools import accumulate

from . import format as fmt
from .items import FSYNC_BUCKETS, _Item

log = logging.getLogger("syncmq.journal")

_fdatasync = getattr(os, "fdatasync", os.fsync)
#: Test-only fault injection (docs/architecture.md, "The fsync gate"): a file named by
#: ``SYNCMQ_TEST_FSYNC_GATE`` when this module is imported. Every segment fsync then first
#: takes a shared ``flock`` on it, so a test holding an exclusive ``flock`` holds every fsync
#: (and every confirm and commit-ok behind it) until it lets go. Unset in production: the
#: only cost is one ``is None`` test per fsync, none per message.
_FSYNC_GATE = os.environ.get("SYNCMQ_TEST_FSYNC_GATE") or None


def _pass_fsync_gate(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # blocks while a test holds LOCK_EX
    finally:
        os.close(fd)


def _add_run(runs: list[list], a: int, b: int, mids: list[int], vhost: str,
             queues: tuple[str, ...]) -> None:
    """Note records ``a:b`` of a chunk as a PUBLISH run; joined to the previous run when it
    ends at ``a`` with the same route (a new list then: ``mids`` may be an item's)."""
    if runs:
        last = runs[-1]
        if last[1] == a and last[4] == queues and last[3] == vhost:
            last[1] = b
            last[2] = last[2] + mids
            return
    runs.append([a, b, mids, vhost, queues])


class _Chunk:
    """What :meth:`GroupCommit._write_group` collects for one ``writev``: the records, their
    offsets in the current segment, their PUBLISH runs, the segment's end after them
    (``pos``) and the bytes of the whole group so far (``nbytes``)."""

    __slots__ = ("bufs", "offs", "runs", "pos", "nbytes")

    def __init__(self, pos: int) -> None:
        self.bufs: list[bytes] = []
        self.offs: list[int] = []
        self.runs: list[list] = []
        self.pos = pos
        self.nbytes = 0


class GroupCommit:
    """Writing, syncing and applying a batch (part of :class:`~syncmq.journal.writer.Journal`)."""

    __slots__ = ()

    def _process(self, items: list[_Item]) -> None:
        """Write, sync and call back one batch, then apply it to the state (journal thread)."""
        if self._error is not None:
            self._fail_items(items, self._error)
            return
        if self.fsync_mode == "always":
            groups = [[it] for it in items]
        else:
            groups = [items]
        for gi, group in enumerate(groups):
            writes = [it for it in group if it.control is None]
            try:
                self._write_group(writes)
            except OSError as exc:
                self._apply_written()
                rest = [it for g in groups[gi:] for it in g if it.control is None]
                self._fail(exc, rest)
                # control items still run (reset_error, compact)
                for g in groups[gi:]:
                    for it in g:
                        if it.control is not None:
                            it.control()
                return
            for it in group:
                if it.control is not None:
                    self._apply_written()  # a control item may read the state
                    it.control()
                elif it.callback is not None:
                    try:
                        it.callback(None)
                    except Exception:
                        log.exception("journal callback raised")
            self._apply_written()

    def _write_group(self, items: list[_Item]) -> None:
        """Write ``items`` (one ``writev`` per segment touched) and fsync if one waits.

        The written chunks are queued in ``_unapplied`` with their PUBLISH runs (``[first,
        end, msg_ids, vhost, queues]``, indexes into the chunk's records): the caller applies
        them to the state after the callbacks (:meth:`_apply_written`), so a confirm never
        waits for that bookkeeping. A run item (``append_publish``) that fits in the current
        segment is added in a few C calls (``extend``, ``accumulate``), not record by record.
        Nothing between the write and the fsync takes the GIL for long."""
        if not items:
            return
        m = self.metrics
        need_sync = False
        n_appends = 0
        n_records = 0
        never = self.fsync_mode == "never"
        ch = _Chunk(self._seg_size)
        limit = self.segment_bytes
        for it in items:
            if it.sync or (it.callback is not None and not never):
                need_sync = True
            recs = it.records
            if not recs:
                continue
            head = it.head
            if head is not None:  # a run of PUBLISH records (append_publish)
                k = len(recs)
                n_appends += k
                n_records += k
                sizes = list(map(len, recs))
                total = sum(sizes)
                pos = ch.pos
                if pos + total <= limit:
                    bufs, offs = ch.bufs, ch.offs
                    a = len(bufs)
                    bufs += recs
                    offs += accumulate(sizes, initial=pos)
                    ch.pos = offs.pop()
                    ch.nbytes += total
                    _add_run(ch.runs, a, len(bufs), head[0], head[1], head[2])
                else:  # the segment rolls inside the run
                    ch = self._put(ch, recs, limit, head)
                continue
            n_appends += 1
            n_records += len(recs)
            if it.unit:  # a transaction goes whole into one segment (roll before it)
                if ch.pos + sum(len(r) for r in recs) > limit and \
                        ch.pos > fmt.FILE_HEADER.size:
                    ch = self._roll_chunk(ch)
                ch = self._put(ch, recs, 1 << 62)
            else:
                ch = self._put(ch, recs, limit)
        self._write_chunk(ch.bufs, ch.offs, ch.runs, ch.pos - self._seg_size)
        if need_sync:
            self._sync_all()
        if never:
            self._durable_end = self._seg_size
            self.durable_mark = (self._seg_no, self._durable_end)
        m.records += n_records
        m.bytes += ch.nbytes
        m.appends += n_appends
        m.batches += 1
        if n_appends > m.max_batch:
            m.max_batch = n_appends

    def _put(self, ch: _Chunk, recs: list[bytes] | tuple[bytes, ...], limit: int,
             head: tuple | None = None) -> _Chunk:
        """Add ``recs`` to ``ch`` one by one, rolling the segment before a record that would
        take it past ``limit`` (unless the segment is empty); ``head``: they are a PUBLISH
        run. Returns the chunk now being filled."""
        hsize = fmt.FILE_HEADER.size
        mids = head[0] if head is not None else None
        for k, rec in enumerate(recs):
            n = len(rec)
            if ch.pos + n > limit and ch.pos > hsize:
                ch = self._roll_chunk(ch)
            if mids is not None:
                _add_run(ch.runs, len(ch.bufs), len(ch.bufs) + 1, [mids[k]], head[1], head[2])
            ch.bufs.append(rec)
            ch.offs.append(ch.pos)
            ch.pos += n
            ch.nbytes += n
        return ch

    def _roll_chunk(self, ch: _Chunk) -> _Chunk:
        """Write ``ch`` to the current segment, roll to a new one; its empty chunk."""
        self._write_chunk(ch.bufs, ch.offs, ch.runs, ch.pos - self._seg_size)
        self._roll()
        nxt = _Chunk(self._seg_size)
        nxt.nbytes = ch.nbytes
        return nxt

    def _apply_written(self) -> None:
        """Apply the written but not yet applied records to the state, in log order.

        A run of consecutive PUBLISH records of one route (``append_publish`` runs: their
        ``(msg_id, vhost, queues)`` is known, nothing to decode) is applied in one step
        (``JournalState.publish_run``): a batch of one publisher's messages costs a few calls,
        not four a message; other records are decoded and applied one by one."""
        chunks = self._unapplied
        if not chunks:
            return
        self._unapplied = []
        state = self._state
        assert state is not None
        for bufs, offs, runs, seg in chunks:
            i = 0
            for a, b, mids, vhost, queues in runs:
                if i < a:
                    self._apply_records(bufs, offs, seg, i, a)
                sizes = list(map(len, bufs[a:b]))
                seg.size += sum(sizes)
                state.publish_run(mids, vhost, queues, seg, offs[a:b], sizes)
                i = b
            if i < len(bufs):
                self._apply_records(bufs, offs, seg, i, len(bufs))

    def _apply_records(self, bufs: list[bytes], offs: list[int], seg: object, i: int,
                       j: int) -> None:
        """Decode and apply the records ``bufs[i:j]`` of ``seg`` (not PUBLISH runs)."""
        apply = self._state.apply
        hsize = fmt.RECORD_HEADER.size
        for k in range(i, j):
            rec = bufs[k]
            try:
                apply(rec[8], rec, 0, len(rec) - hsize, seg, offs[k])
            except (fmt.FormatError, UnicodeDecodeError) as exc:
                self.metrics.apply_errors += 1
                log.warning("journal: written record at %016x:%d does not decode "
                            "(%s)", seg.no, offs[k], exc)

    def _sync(self) -> None:
        assert self._fd is not None
        if _FSYNC_GATE is not None:
            _pass_fsync_gate(_FSYNC_GATE)
        t0 = time.perf_counter()
        _fdatasync(self._fd)
        elapsed = time.perf_counter() - t0
        m = self.metrics
        m.fsyncs += 1
        m.fsync_seconds_sum += elapsed
        m.fsync_buckets[bisect.bisect_left(FSYNC_BUCKETS, elapsed)] += 1
        self._dirty = False
        self._durable_end = self._seg_size
        self.durable_mark = (self._seg_no, self._durable_end)

    def _sync_all(self) -> None:
        """fsync closed segments left unsynced ("never" mode), then the current one."""
        while self._unsynced:
            path = self._unsynced[0]
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                self._unsynced.pop(0)
                continue
            try:
                os.fsync(fd)
                self.metrics.fsyncs += 1
            finally:
                os.close(fd)
            self._unsynced.pop(0)
        if self._dirty:
            self._sync()
