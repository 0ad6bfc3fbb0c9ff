"""Compaction: make disk use track the live backlog, not the history.

What it does
============

The journal's :class:`~syncmq.journal.state.JournalState` knows, per segment, how many record
bytes are live (``seg.live``). A *closed* segment (any but the current one) is *dirty* when
``live + floor < threshold * size`` (``floor`` is what its last compaction had to keep although
not live, so a segment is not rewritten again for nothing). Two neighbouring closed segments
that are both *small* (under ``segment_bytes / 8``) are worth merging.

A compaction *job* takes a *run* of consecutive closed segments ``a..b`` (starting at the oldest
dirty or mergeable one, extended while the expected output stays under ``segment_bytes``),
copies the records that must be kept, **in their original order**, into
``<b>.seg.tmp`` whose header says ``segment_no = b, covers_from = a`` (or ``a``'s own
``covers_from``), fsyncs it, renames it over ``<b>.seg``, fsyncs the directory, and only then
deletes ``a..b-1`` (oldest first) and fsyncs the directory again. If nothing must be kept, it
writes no file and deletes ``a..b`` oldest first.

Which segments, and when: ``runplan.py`` (dirty and small segments, and the head of a drain,
which the journal thread leaves alone while it is being drained).

Which records are kept
======================

* live PUBLISH records, live entity declares and live parameter sets (per the state), byte
  for byte;
* a delete / purge / clear (VHOST_DELETE, EXCHANGE_DELETE, QUEUE_DELETE, QUEUE_PURGE,
  BINDING_REMOVE, PARAM_CLEAR, GLOBAL_CLEAR) if
  a record it could affect is still on disk before it: a record mentioning its target (vhost,
  exchange, queue or binding key) in a segment older than ``a`` (``state.key_segs``) or among
  the records this job has already kept;
* the ids of an ACK whose PUBLISH is still on disk before it: live, kept by this job, or dead
  but in a segment older than ``a`` (``state.dead_seg``); the ACK is re-encoded with just those;
* the ids of a DELIVERED whose message is still live and delivered on that queue (of a
  DELIVERED_RUNS, those parts of its runs, still as runs).

Everything else (dead publishes and declares, acks and deletes whose targets are gone) is
dropped, and so is every TX record (a closed segment only holds whole transactions: once their
records were replayed together they need no marker, see ``format.py``) and every ID_MARK (the
current segment holds one at least as high, see ``format.py``, "Message ids").

Why a crash never loses a live record nor resurrects a dead one
================================================================

Nothing ever moves in log order: the output replaces ``a..b`` at ``b``'s place, and the records
it keeps are a subsequence of theirs in the same order. So recovery after compaction replays a
subsequence of the original history, and it is enough that each dropped record be irrelevant to
the final state:

* a dead PUBLISH/declare is dropped only while what killed it is still on disk *after* it (a
  killer is never dropped while its target is on disk before it: rules above), so replay
  without it ends the same;
* a delete, purge or ACK is dropped only when nothing it affects remains before it; records
  appended later are after it in log order, where it never applied;
* decisions made at one step stay right at the later ones: new records only go to the current
  segment (after ``b``), a dead record never comes back to life, and a record kept because it
  was live at its step (then killed by a new record) is kept with every ACK/delete in the run
  that still applies to it (the ``kept`` id set and the keys of kept records).

For the files: until the rename, ``a..b`` are untouched and the ``.tmp`` is deleted by
recovery. The rename is atomic (the output was fsynced first, the directory right after): from
then on ``b`` holds everything needed from ``a..b``, and ``covers_from`` makes recovery delete
whatever of ``a..b-1`` is still there without reading it, so no record is replayed twice.
When nothing is kept, deleting oldest first is safe at every point: a file is deleted only when
all files before it in the run are gone, and a record never kills a record after it.

A dead run
==========

A run the job would keep nothing of is deleted without being read, oldest first as above
(``RunPlanner.dead_run``; ``CompactionStats.segments_unread``). In S3 (issue #22) every
message is acked within milliseconds: a closed segment holds PUBLISH, DELIVERED and ACK
records and soon nothing live, and reading it only to keep nothing cost ~6% of the GIL. Per
segment the state keeps, per record or per batch (never per id), ``msgs_only`` (no entity,
parameter or tombstone record), ``min_ref`` (the smallest id its ACK/DELIVERED/DELIVERED_RUNS
records name) and ``max_pub`` (its largest PUBLISH id). A run qualifies when every segment of
it has ``live == 0`` and ``msgs_only``, and every segment on disk older than its first has
``max_pub`` below the run's smallest ``min_ref``. Then every record of it is one the rules
above drop: no live record or tombstone; dead PUBLISH records (their killers are in the run or
after it); TX and ID_MARK; ACK ids with no PUBLISH on disk before the run (live or
``dead_seg``); DELIVERED ids with no live message before it (one naming a message published
*after* it never applied: a read job may keep it, dropping it is right too). Ids are compared,
not log positions (workers' ids are not in log order). Still read: recovery's DELIVERED_RUNS
after an unclean stop (old ids), an ACK of a message still on disk before the run (dead, or
live on another queue), any declare, delete, purge or parameter record, a transaction unit
naming older messages (a write-cancelled pair, ``items.cancel_acked``, wrote neither record).
Deleting oldest first stays safe: what is left of the run names nothing before it. The fields
come out of replay the same (``apply``/``publish_run`` set them, live and at recovery; a job's
output gets those of what it kept), and segments never appear before a run later, so the
decision holds.

Cost: a job reads each input byte once (mmap) and writes the kept bytes once; it runs on the
journal thread in steps of about ``step_bytes`` of input between write batches, or all at once
through :meth:`Journal.compact`. The state is owned by that thread (see ``state.py``), so no
lock is needed.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

from . import format as fmt
from .joboutput import _JobOutput
from .reader import Move, SegmentReader
from .recovery import fsync_dir
from .runplan import DRAIN_HORIZON, DRAIN_WINDOW, RunPlanner
from .state import JournalState, Segment

__all__ = ["Compactor", "CompactionStats", "CompactionAborted"]

log = logging.getLogger("syncmq.journal")

class CompactionAborted(Exception):
    """A job gave up (I/O error or an unreadable input); nothing was changed."""


@dataclass(slots=True)
class CompactionStats:
    """Counters (plain ints, written by the journal thread only)."""

    jobs: int = 0
    segments_in: int = 0
    segments_deleted: int = 0  # files removed (inputs not replaced by an output)
    bytes_read: int = 0
    segments_unread: int = 0  # of segments_in: deleted without being read (a dead run)
    bytes_written: int = 0
    records_kept: int = 0
    records_dropped: int = 0
    aborted: int = 0


class Compactor(RunPlanner):
    """Picks runs and runs jobs against one data directory and its state.

    Used only from the thread that owns ``state`` (see ``state.py``). ``crash_hook`` (tests)
    is called with a step name at each point where a crash matters: ``"written"``,
    ``"synced"``, ``"renamed"``, ``"deleted"`` (after each unlink of an input file).
    """

    def __init__(self, data_dir: str, state: JournalState, segment_bytes: int,
                 threshold: float = 0.5, step_bytes: int = 4 << 20,
                 do_fsync: bool = True, reader: SegmentReader | None = None) -> None:
        self.data_dir = data_dir
        # the body references handed out for the memory budget (see reader.py): file swaps
        # and state location updates happen under its lock, and it is told where kept
        # messages went
        self.reader = reader
        self.state = state
        self.segment_bytes = segment_bytes
        self.threshold = threshold
        self.step_bytes = step_bytes
        self.do_fsync = do_fsync
        self.stats = CompactionStats()
        self.crash_hook: Callable[[str], None] | None = None
        self._job: Generator[None, None, None] | None = None
        self._tmp_path: str | None = None
        self._tmp_fd: int | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.drain_window = DRAIN_WINDOW
        self.drain_horizon = DRAIN_HORIZON
        self.deferred = False  # the last find_run left a draining segment alone

    @property
    def busy(self) -> bool:
        """True while a job is in progress."""
        return self._job is not None

    def start(self, run: list[int]) -> None:
        assert self._job is None
        self._job = self._run_job(run)

    def step(self) -> bool:
        """Run the current job for about ``step_bytes`` of input; True when it is finished.

        An I/O error aborts the job (nothing changed, logged) and is not raised."""
        assert self._job is not None
        try:
            next(self._job)
            return False
        except StopIteration:
            self._job = None
            return True
        except (OSError, CompactionAborted) as exc:
            self._job = None
            self.stats.aborted += 1
            self._cleanup_tmp()
            log.error("journal compaction aborted, nothing changed: %s", exc)
            return True
        except BaseException:
            self._job = None
            raise

    def abort(self) -> None:
        """Abandon the current job, if any (its output is deleted; inputs untouched)."""
        if self._job is not None:
            self._job.close()
            self._job = None
            self._cleanup_tmp()

    def run_all(self, current: int, max_jobs: int = 1000) -> int:
        """Run jobs until no run qualifies; return how many ran."""
        n = 0
        if self._job is not None:
            while not self.step():
                pass
            n += 1
        while n < max_jobs:
            run = self.find_run(current)
            if run is None:
                break
            self.start(run)
            while not self.step():
                pass
            n += 1
        return n

    def _cleanup_tmp(self) -> None:
        if self._tmp_fd is not None:
            try:
                os.close(self._tmp_fd)
            except OSError:
                pass
            self._tmp_fd = None
        if self._tmp_path is not None:
            try:
                os.unlink(self._tmp_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("journal compaction: could not remove %s: %s", self._tmp_path, exc)
            self._tmp_path = None

    def _hook(self, name: str) -> None:
        if self.crash_hook is not None:
            self.crash_hook(name)

    def _path(self, no: int) -> str:
        return os.path.join(self.data_dir, fmt.segment_name(no))

    # -- one job ------------------------------------------------------------------------------

    def _run_job(self, run: list[int]) -> Generator[None, None, None]:
        """One job, a generator (one step per ``step_bytes`` of input): copy the live records
        of segments ``run`` into a new segment named after the last one, then put it in their
        place (or just delete them when nothing in them is live)."""
        job = _JobOutput(self, run)
        self._tmp_path = self._path(run[-1]) + ".tmp"
        unread = self.dead_run(run)
        if unread:
            # nothing of it would be kept: nothing to read (module docstring, "A dead run")
            self.stats.segments_in += len(run)
            self.stats.segments_unread += len(run)
        else:
            yield from self._copy_live(job)
        job.flush()
        self._hook("written")
        run_segs = [self.state.segments[no] for no in run]
        if job.fd is None:
            self._delete_dead_run(run, run_segs, unread)
        else:
            self._replace_run(job, run_segs)

    def _copy_live(self, job: _JobOutput) -> Generator[None, None, None]:
        """Read the run's segments record by record; ``job`` keeps what is live."""
        st = self.state
        stats = self.stats
        hsize = fmt.RECORD_HEADER.size
        read_since_yield = 0
        for no in job.run:
            stats.segments_in += 1
            with open(self._path(no), "rb") as f:
                fsize = os.fstat(f.fileno()).st_size
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if fsize else b""
            try:
                pos = fmt.FILE_HEADER.size
                end_of_data = fmt.FILE_HEADER.size + st.segments[no].size
                if end_of_data > fsize:
                    raise CompactionAborted(f"segment {no:016x} shorter than expected")
                while pos < end_of_data:
                    length, _crc, rtype = fmt.RECORD_HEADER.unpack_from(mm, pos)
                    rend = pos + hsize + length
                    if rend > end_of_data:
                        raise CompactionAborted(f"record past the end in segment {no:016x}")
                    size = rend - pos
                    off = pos
                    pos = rend
                    read_since_yield += size
                    stats.bytes_read += size
                    job.take(no, mm, off, rend, rtype, size)
                    if job.pending >= (1 << 20):
                        job.flush()
                    if read_since_yield >= self.step_bytes:
                        read_since_yield = 0
                        yield
            finally:
                if isinstance(mm, mmap.mmap):
                    mm.close()

    def _delete_dead_run(self, run: list[int], run_segs: list[Segment], unread: bool) -> None:
        """Nothing to keep: delete the segments, oldest first (see the module docstring)."""
        st = self.state
        stats = self.stats
        self._tmp_path = None
        for no in run:
            os.unlink(self._path(no))
            stats.segments_deleted += 1
            self._hook("deleted")
        if self.do_fsync:
            fsync_dir(self.data_dir)

        def drop_all() -> None:
            for no in run:
                st.drop_segment(no)

        if self.reader is not None:
            # no live message was in them: nothing to relocate, just forget their fds
            self.reader.swap(drop_all, run, None)
        else:
            drop_all()
        st.fit_dead()
        stats.jobs += 1
        log.info("journal compaction: deleted %d dead segment(s)%s (%d bytes)", len(run),
                 " unread" if unread else "", sum(fmt.FILE_HEADER.size + s.size for s in run_segs))

    def _replace_run(self, job: _JobOutput, run_segs: list[Segment]) -> None:
        """Make the job's output durable, rename it over the run's last segment, install it
        in the state, then delete the other inputs."""
        run, a, b = job.run, job.run[0], job.run[-1]
        fd = job.fd
        stats = self.stats
        if self.do_fsync:
            os.fsync(fd)
        os.close(fd)
        self._tmp_fd = None
        self._hook("synced")
        moves: list[Move] = []
        tmp_path = self._tmp_path

        def replace() -> None:
            os.replace(tmp_path, self._path(b))
            self._tmp_path = None
            # The output is now the truth for a..b: update the state before deleting the
            # inputs (under the reader's lock, with the rename: see reader.py).
            self._install(run, b, job.covers_from, job.off - len(job.header),
                          job, moves)

        if self.reader is not None:
            old_fds, new_fd = self.reader.swap(replace, run, b)
        else:
            replace()
        self.state.fit_dead()
        if self.do_fsync:
            fsync_dir(self.data_dir)
        self._hook("renamed")
        if self.reader is not None:
            self.reader.relocated(old_fds, new_fd, moves)
        for no in run[:-1]:
            try:
                os.unlink(self._path(no))
            except FileNotFoundError:
                pass
            stats.segments_deleted += 1
            self._hook("deleted")
        if self.do_fsync and len(run) > 1:
            fsync_dir(self.data_dir)
        stats.jobs += 1
        in_bytes = sum(fmt.FILE_HEADER.size + s.size for s in run_segs)
        log.info("journal compaction: %d segment(s) %016x..%016x, %d -> %d bytes", len(run),
                 a, b, in_bytes, job.off)

    def _install(self, run: list[int], b: int, covers_from: int, size: int, job: _JobOutput,
                 moves: list[Move]) -> None:
        """Replace the state of segments ``run`` by the job's output ``b`` (``size`` record
        bytes holding ``job.kept``); append ``(mid, old_seg, old_off, new_off)`` to ``moves``
        for every live message it kept. The output's ``msgs_only``, ``min_ref`` and
        ``max_pub`` are those of the records it holds, as replaying it would find them."""
        st = self.state
        kept = job.kept
        msgs, dead_seg = st.msgs, st.dead_seg
        tables = {fmt.T_VHOST_ADD: st.vhosts, fmt.T_EXCHANGE_DECLARE: st.exchanges,
                  fmt.T_QUEUE_DECLARE: st.queues, fmt.T_BINDING_ADD: st.bindings,
                  fmt.T_PARAM_SET: st.params, fmt.T_GLOBAL_SET: st.globals}
        new = Segment(b, covers_from)
        new.size = size
        new.msgs_only = job.msgs_only
        new.min_ref = job.min_ref
        dead_kept: list[int] = []
        max_pub = -1
        for kind, ident, old_seg, old_off, new_off, rsize in kept:
            if kind == "m":
                if ident > max_pub:
                    max_pub = ident
                if msgs.move(ident, old_seg, old_off, b, new_off):
                    new.live += rsize
                    moves.append((ident, old_seg, old_off, new_off))
                else:
                    dead_kept.append(ident)
            else:
                ent = tables[kind].get(ident)
                if ent is not None:
                    locs = ent.locs
                    for i, loc in enumerate(locs):
                        if loc == (old_seg, old_off, rsize):
                            locs[i] = (b, new_off, rsize)
                            new.live += rsize
                            break
        for no in run:
            st.drop_segment(no)
        st.segments[b] = new
        for mid in dead_kept:
            if mid not in msgs:
                dead_seg[mid] = b
                new.dead_ids.append(mid)
        new.max_pub = max_pub
        for key in job.run_keys:
            st.mention(new, key)
        new.floor = new.size - new.live
