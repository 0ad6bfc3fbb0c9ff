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

        The written chunks are queued in ``_unapplied``: the caller applies them to the state
        after the callbacks (:meth:`_apply_written`), so a confirm never waits for that
        bookkeeping. Nothing between the write and the fsync takes the GIL for long."""
        if not items:
            return
        m = self.metrics
        need_sync = False
        n_appends = 0
        n_records = 0
        never = self.fsync_mode == "never"
        bufs: list[bytes] = []
        offs: list[int] = []
        heads: list[tuple | None] = []
        pos = self._seg_size
        limit = self.segment_bytes
        hsize = fmt.FILE_HEADER.size
        nbytes = 0
        for it in items:
            if it.sync or (it.callback is not None and not never):
                need_sync = True
            recs = it.records
            if not recs:
                continue
            n_appends += 1
            n_records += len(recs)
            head = it.head
            if it.unit:  # a transaction goes whole into one segment (roll before it)
                n = sum(len(r) for r in recs)
                if pos + n > limit and pos > hsize:
                    self._write_chunk(bufs, offs, heads, pos - self._seg_size)
                    bufs, offs, heads = [], [], []
                    self._roll()
                    pos = self._seg_size
                limit_now, limit = limit, 1 << 62
            for rec in recs:
                n = len(rec)
                if pos + n > limit and pos > hsize:
                    self._write_chunk(bufs, offs, heads, pos - self._seg_size)
                    bufs, offs, heads = [], [], []
                    self._roll()
                    pos = self._seg_size
                bufs.append(rec)
                offs.append(pos)
                heads.append(head)
                pos += n
                nbytes += n
            if it.unit:
                limit = limit_now
        self._write_chunk(bufs, offs, heads, pos - self._seg_size)
        if need_sync:
            self._sync_all()
        if never:
            self._durable_end = self._seg_size
            self.durable_mark = (self._seg_no, self._durable_end)
        m.records += n_records
        m.bytes += nbytes
        m.appends += n_appends
        m.batches += 1
        if n_appends > m.max_batch:
            m.max_batch = n_appends

    def _apply_written(self) -> None:
        """Apply the written but not yet applied records to the state, in log order.

        A run of consecutive PUBLISH records of one route (``append_publish`` items: their
        ``(msg_id, vhost, queues)`` is known, nothing to decode) is applied in one step
        (``JournalState.publish_run``): a batch of one publisher's messages costs a few calls,
        not four a message."""
        chunks = self._unapplied
        if not chunks:
            return
        self._unapplied = []
        state = self._state
        assert state is not None
        apply = state.apply
        hsize = fmt.RECORD_HEADER.size
        for bufs, offs, heads, seg in chunks:
            n = len(bufs)
            i = 0
            while i < n:
                head = heads[i]
                if head is None:
                    rec = bufs[i]
                    try:
                        apply(rec[8], rec, 0, len(rec) - hsize, seg, offs[i])
                    except (fmt.FormatError, UnicodeDecodeError) as exc:
                        self.metrics.apply_errors += 1
                        log.warning("journal: written record at %016x:%d does not decode "
                                    "(%s)", seg.no, offs[i], exc)
                    i += 1
                    continue
                vhost, queues = head[1], head[2]
                j = i + 1
                while j < n:
                    h = heads[j]
                    if h is None or h[2] != queues or h[1] != vhost:
                        break
                    j += 1
                sizes = [len(b) for b in bufs[i:j]]
                seg.size += sum(sizes)
                state.publish_run([h[0] for h in heads[i:j]], vhost, queues, seg, offs[i:j],
                                  sizes)
                i = j

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
