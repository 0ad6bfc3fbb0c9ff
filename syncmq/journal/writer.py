"""The journal: group commit of records to append-only segment files.

Life cycle (one ``Journal`` per data directory; the directory is ``flock``-ed while open)::

    j = Journal(data_dir, fsync="batch")
    j.open()                  # create the directory, take the lock
    state = j.recover()       # RecoveredState: rebuild the broker from it
    j.start()                 # thread "syncmq-journal"
    j.append(format.encode_publish(...), callback)   # from any thread, never blocks on disk
    ...
    j.close()                 # write + fsync what is queued, stop the thread (idempotent)

Threads and locks
=================

Worker threads call :meth:`append`, :meth:`append_publish`, :meth:`append_many`,
:meth:`append_ids` and :meth:`sync_barrier`; they only take ``_lock`` for a few list
operations. The ``syncmq-journal`` thread takes everything queued at once (a *batch*, the
coalesced ids of :meth:`append_ids` last), writes it with one ``writev`` per segment touched,
fsyncs once, fires the callbacks in append order, then applies the batch to its liveness state
(after the callbacks, so a confirm never waits for that bookkeeping) and, when idle or between
batches, runs a bounded compaction step (put off, for at most ``COMPACT_MAX_DEFER``, while an
item with a callback waits). fsync releases the GIL, so workers keep appending
meanwhile.

* ``_lock`` guards ``_pending`` (queued items), ``_ids`` (coalesced ACK/DELIVERED ids),
  ``_error``, ``_closing`` and ``_thread``; its condition ``_wakeup`` wakes the journal thread.
  It is never held during I/O or callbacks.
* Everything else (file descriptors, segment numbers, the :class:`JournalState`, the
  compactor) belongs to the journal thread once started (before that, to the caller of
  ``open``/``recover``/``start``); no lock.
* :attr:`metrics` are plain ints written by the journal thread; reading them without a lock
  may see a slightly old value, nothing worse.

fsync modes
===========

``"batch"`` (default, group commit): every batch that contains a callback or a barrier is
written then fsynced once; callbacks fire after the fsync. A batch of callback-less records
(e.g. DELIVERED) is written without an fsync of its own and becomes durable with the next one.

``"always"``: no coalescing across calls: each ``append``/``append_many`` call (one *item*) is
written and fsynced on its own, in order, before the next item; its callback fires after its
own fsync. Costs one fsync per call that has a callback.

``"never"``: batches are written but never fsynced (except by :meth:`sync_barrier` and
:meth:`close`); callbacks fire once the data is written (it survives a process crash, not a
power loss).

Compaction always fsyncs its output (and the directory) before deleting anything, whatever
the mode, so it never puts data that was already durable at risk.

Contract for the caller (the broker)
====================================

* ``msg_id`` values are unique for the life of the data directory: start from
  ``RecoveredState.next_msg_id`` (it never goes backwards across compaction and restarts:
  ID_MARK records, see ``format.py``).
* Append a QUEUE_DECLARE before the queue can receive messages (a declare of a queue that does
  not exist starts it empty at that point of the log), and a PUBLISH before the ACK/DELIVERED
  records that refer to it. Records appended from one thread keep their order; across threads
  the log order is the order in which ``append`` calls took the lock.
* Encode binding/queue/exchange ``arguments`` deterministically (equal tables, equal bytes).
* ``append`` does not apply back-pressure: bound what is in flight (e.g. the publisher-confirm
  window, unconfirmed ``tx.commit``), as the queued records are held in memory until written.

Callbacks
=========

``callback(error)``: ``error`` is None once the records are durable (as above), or the
exception that prevented it. Callbacks run on the journal thread, in the order their items
were appended, and must be cheap and non-blocking (e.g. queue a confirm to the reactor):
the next batch waits for them. An exception raised by a callback is logged and ignored.

Errors
======

An ``OSError`` while writing, fsyncing or starting a segment (ENOSPC, EIO, ...) puts the
journal into the *failed* state: one ``ERROR`` line is logged on ``syncmq.journal``, every
callback of the failed batch and of everything queued behind it is called with the error,
then ``on_error(exc)`` is called (on the journal thread). While failed, ``append`` and friends
raise :class:`JournalFailed` at once (its ``__cause__`` is the original error). Nothing that
was reported durable is lost: the failed batch never got a success callback.
:meth:`reset_error` (any thread) cuts the current segment back to its last durable end,
rebuilds the liveness state from disk and resumes; it raises if that fails again.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import NoReturn

from . import format as fmt
from . import recovery as _recovery
from .compaction import Compactor
from .control import JournalControl
from .groupcommit import GroupCommit
from .items import (
    FSYNC_BUCKETS,
    Callback,
    JournalClosed,
    JournalError,
    JournalFailed,
    JournalMetrics,
    _encode_ids,
    _Item,
    cancel_acked,
    drop_cancelled,
    hold_delivered,
)
from .reader import SegmentReader
from .recovery import RecoveredState, recover_dir
from .segfiles import SegmentFiles
from .state import JournalState

__all__ = ["Journal", "JournalError", "JournalFailed", "JournalClosed", "JournalMetrics",
           "Callback", "FSYNC_MODES", "FSYNC_BUCKETS"]

log = logging.getLogger("syncmq.journal")

FSYNC_MODES = ("batch", "always", "never")
MiB = 1 << 20
#: Longest time (s) a compaction step is put off while confirms wait for a batch.
COMPACT_MAX_DEFER = 0.05
class Journal(SegmentFiles, GroupCommit, JournalControl):
    """Append-only, group-committed journal in ``data_dir``; see the module docstring.

    :param fsync: ``"batch"`` (default), ``"always"`` or ``"never"``.
    :param segment_bytes: a segment is closed once it would grow past this (a single larger
        record gets a segment of its own).
    :param on_error: called as ``on_error(exc)`` on the journal thread after an I/O error.
    :param compact_threshold: closed segments whose live fraction falls below it are compacted.
    :param auto_compact: compact on the journal thread between batches (bounded steps).
    :param compact_step_bytes: input bytes per compaction step.

    Slots (its mixins have none of their own): 33 attributes are past the 29 keys up to
    which CPython 3.11 shares an instance dict's keys and specialises loads from it, and
    ``append`` runs for every persistent publish.
    """

    __slots__ = (
        "data_dir", "fsync_mode", "segment_bytes", "on_error", "compact_threshold",
        "auto_compact", "compact_step_bytes", "metrics", "_lock", "_wakeup", "_pending",
        "_ids", "_held", "_waiting", "_error", "_closing", "_thread", "_lock_fd", "_state",
        "_compactor", "_fd", "_seg_no", "_seg_size", "_durable_end", "_dirty", "_mark_due",
        "_unsynced", "_compact_failed_at", "_closed", "_clean_end", "durable_mark", "reader",
        "_unapplied",
    )

    def __init__(self, data_dir: str | os.PathLike[str], fsync: str = "batch",
                 segment_bytes: int = 64 * MiB, on_error: Callable[[Exception], None] | None = None,
                 *, compact_threshold: float = 0.5, auto_compact: bool = True,
                 compact_step_bytes: int = 1 * MiB) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {FSYNC_MODES}, not {fsync!r}")
        if segment_bytes < 1024:
            raise ValueError("segment_bytes must be at least 1024")
        self.data_dir = os.fspath(data_dir)
        self.fsync_mode = fsync
        self.segment_bytes = segment_bytes
        self.on_error = on_error
        self.compact_threshold = compact_threshold
        self.auto_compact = auto_compact
        self.compact_step_bytes = compact_step_bytes
        self.metrics = JournalMetrics()

        # Guards _pending, _error, _closing and _thread: shared between appending threads and
        # the journal thread. Never held during I/O or callbacks.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)  # "there is work" for the journal thread
        self._pending: list[_Item] = []
        # Coalesced ACK/DELIVERED ids (append_ids): (type, vhost, queue) -> ids, in first-append
        # order; written as one record per key at the end of the next batch.
        self._ids: dict[tuple[int, str, str], list[int]] = {}
        # DELIVERED ids held back one batch by the journal thread (``items.hold_delivered``;
        # journal thread only): written with the next batch unless acked by then
        self._held: dict[tuple[int, str, str], list[int]] = {}
        self._waiting = False  # an item in _pending has a callback (or is a barrier)
        self._error: Exception | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

        # Owned by the journal thread once started (see the module docstring).
        self._lock_fd: int | None = None
        self._state: JournalState | None = None
        self._compactor: Compactor | None = None
        self._fd: int | None = None  # current segment, opened O_APPEND
        self._seg_no = 0
        self._seg_size = 0  # file size of the current segment
        self._durable_end = 0  # offset up to which the current segment is known durable
        self._dirty = False  # current segment written since its last fsync
        self._mark_due = False  # the reopened current segment still needs its ID_MARK
        self._unsynced: list[str] = []  # closed segments written but not fsynced ("never")
        self._compact_failed_at = -1  # segment number when compaction last failed
        self._closed = False
        self._clean_end = False  # _finish synced everything without an error (CLEAN marker)
        #: ``(current segment, offset up to which it is durable)``, replaced as one tuple so
        #: that another thread reads a consistent pair (``reader.SegmentReader.locate``)
        self.durable_mark: tuple[int, int] = (0, 0)
        #: body references into the segments for the memory budget (``reader.py``)
        self.reader = SegmentReader(self.data_dir, self)
        # Written chunks not yet applied to the state: (records, offsets, PUBLISH runs,
        # segment; see GroupCommit._write_group). Applied
        # after the batch's fsync and callbacks, so confirms do not wait for the bookkeeping.
        self._unapplied: list[tuple[list[bytes], list[int], list, object]] = []

    # -- life cycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Create ``data_dir`` if needed and lock it (``JournalError`` if another journal has
        it)."""
        if self._lock_fd is not None:
            return
        os.makedirs(self.data_dir, exist_ok=True)
        fd = os.open(os.path.join(self.data_dir, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalError(f"journal directory {self.data_dir} is in use") from None
        self._lock_fd = fd

    def recover(self, load_bodies: bool = True, stream: bool = False) -> RecoveredState:
        """Replay the segments (truncating a torn tail) and return what they hold; see
        ``recovery.py``. Must be called after :meth:`open` and before :meth:`start`.
        ``load_bodies=False`` leaves message bodies in the segments (``body`` None): read
        them back through :attr:`reader`."""
        if self._lock_fd is None:
            raise JournalError("open() the journal before recover()")
        if self._thread is not None:
            raise JournalError("recover() must be called before start()")
        result, state = recover_dir(self.data_dir, load_bodies, stream)
        result.clean = _recovery.take_clean_marker(self.data_dir)
        self._state = state
        self._compactor = Compactor(self.data_dir, state, self.segment_bytes,
                                    self.compact_threshold, self.compact_step_bytes,
                                    reader=self.reader)
        self._open_current()
        st = result.stats
        log.info("journal recovered %s: %d segment(s), %d record(s), %d live message(s), "
                 "%d queue(s) in %.3f s", self.data_dir, st.segments, st.records,
                 st.live_messages, len(result.queues), st.seconds)
        return result

    def start(self) -> None:
        """Start the ``syncmq-journal`` thread. Requires :meth:`recover`."""
        if self._state is None:
            raise JournalError("recover() must be called before start()")
        with self._lock:
            if self._thread is not None or self._closing:
                raise JournalError("journal already started or closed")
            self._write_reopen_mark()
            self._thread = threading.Thread(target=self._run, name="syncmq-journal",
                                            daemon=True)
            self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        """The journal thread once started (for joining and inspection)."""
        return self._thread

    def close(self, timeout: float | None = None) -> None:
        """Write and fsync everything queued, stop the thread, release the directory.

        Idempotent; later appends raise :class:`JournalClosed`. An in-progress compaction
        job is abandoned (safe: see ``compaction.py``)."""
        with self._lock:
            self._closing = True
            thread = self._thread
            self._wakeup.notify()
        if thread is threading.current_thread():
            return  # called from a callback: the thread finishes up when it stops
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise JournalError("journal thread did not stop in time")
        else:
            self._finish()
        if self._lock_fd is not None:
            if self._clean_end:
                try:
                    _recovery.write_clean_marker(self.data_dir)
                except OSError as exc:
                    log.error("journal: cannot mark %s cleanly closed: %s", self.data_dir, exc)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _finish(self) -> None:
        """Abandon compaction, fsync and close the segment (journal thread, or the caller of
        close() if the thread never ran). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.abort()
        if self._fd is not None:
            try:
                if self._error is None:
                    self._sync_all()
                    # everything appended is on disk: the next recovery may trust the
                    # DELIVERED records (close() writes the CLEAN marker)
                    self._clean_end = not self._pending and not self._ids and not self._held
            except OSError as exc:
                log.error("journal: final fsync of %s failed: %s", self.data_dir, exc)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appending (any thread) ---------------------------------------------------------------

    def append(self, record: bytes, callback: Callback | None = None) -> None:
        """Queue one framed record (from the ``format.encode_*`` builders).

        Never blocks on disk. ``callback(error)`` fires on the journal thread once the record
        is durable (per the fsync mode) or failed. Raises ``format.FormatError`` for a
        malformed record, :class:`JournalFailed` / :class:`JournalClosed` when not accepting.
        """
        fmt.check_record(record)
        self._enqueue(_Item((record,), callback))

    def append_publish(self, record: bytes, msg_id: int, vhost: str,
                       queues: tuple[str, ...]) -> None:
        """:meth:`append` for a PUBLISH built by ``format.encode_publish(msg_id, vhost, queues,
        ...)`` with these very values (the caller's promise: the record is not checked, and
        the journal thread applies ``(msg_id, vhost, queues)`` to its state instead of
        decoding the record). No callback: confirms wait for :meth:`sync_barrier`.

        Consecutive calls for one route go into one *run* item (``items._Item``): the last
        pending item is extended when it is a run of the same ``vhost`` and ``queues``, so a
        publisher's batch costs one item, not one a message; the log order is the order in
        which the calls took ``_lock``, as for any append. Refused (raises) exactly as
        :meth:`append`: each call checks the journal's state under the lock."""
        with self._lock:
            if self._error is not None or self._closing or self._thread is None:
                self._refused()
            pending = self._pending
            if pending:
                head = pending[-1].head
                if head is not None and head[2] == queues and head[1] == vhost:
                    pending[-1].records.append(record)
                    head[0].append(msg_id)
                    return
            pending.append(_Item([record], None, False, None, ([msg_id], vhost, queues)))
            if len(pending) == 1 and not self._ids:
                self._wakeup.notify()

    def append_many(self, records: Iterable[bytes], callback: Callback | None = None) -> None:
        """Queue several records as one item: written contiguously, in order, with a single
        ``callback`` for all of them (e.g. a transaction's publishes and acks)."""
        recs = list(records)
        for r in recs:
            fmt.check_record(r)
        self._enqueue(_Item(recs, callback))

    def append_unit(self, records: Iterable[bytes], callback: Callback | None = None) -> None:
        """:meth:`append_many` as one transaction: a TX record, then ``records``, all in one
        segment, so that recovery applies all of them or none (``format.py``,
        "Transactions"). Used by ``tx.commit`` (``Durability.transaction``)."""
        recs = list(records)
        for r in recs:
            fmt.check_record(r)
        if recs:
            self._enqueue(_Item([fmt.encode_tx(recs), *recs], callback, unit=True))

    def append_ids(self, rtype: int, vhost: str, queue: str, ids: Iterable[int]) -> None:
        """Queue message ids for an ACK or DELIVERED record of ``queue`` (no callback).

        Ids queued for the same ``(rtype, vhost, queue)`` between two batches are coalesced
        into one record, written at the end of the next batch: after every item appended
        before them (so never before the PUBLISH they refer to) and before that batch's fsync
        (so a later :meth:`sync_barrier` covers them). DELIVERED ids wait one batch more and
        are dropped if acked meanwhile (``items.hold_delivered``): a barrier does not cover
        them, a clean :meth:`close` does. They can only move *later* in the log,
        which is safe for these two types (ids unknown at that point are ignored by replay).
        In ``"always"`` mode they are appended at once as their own record instead (each item
        is synced on its own there, and a barrier must not fire before them).
        Raises like :meth:`append`; an empty ``ids`` is a no-op.
        """
        if rtype != fmt.T_ACK and rtype != fmt.T_DELIVERED:
            raise fmt.FormatError(f"append_ids takes ACK or DELIVERED, not type {rtype}")
        if self.fsync_mode == "always":
            ids = list(ids)
            if ids:
                enc = fmt.encode_ack if rtype == fmt.T_ACK else fmt.encode_delivered
                self._enqueue(_Item((enc(vhost, queue, ids),), None))
            return
        key = (rtype, vhost, queue)
        with self._lock:
            if self._error is not None:
                raise JournalFailed(f"journal failed: {self._error}") from self._error
            if self._closing or self._thread is None:
                raise JournalClosed("journal is not running")
            pending = self._ids
            lst = pending.get(key)
            if lst is not None:
                lst.extend(ids)
                return
            lst = list(ids)
            if not lst:
                return
            pending[key] = lst
            if len(pending) == 1 and not self._pending:
                self._wakeup.notify()

    def sync_barrier(self, callback: Callback) -> None:
        """``callback(None)`` once everything appended before this call is durable (forces an
        fsync, also in ``"never"`` mode)."""
        self._enqueue(_Item((), callback, sync=True))

    def _refused(self) -> NoReturn:
        """Raise why the journal takes no appends (``_lock`` held: failed, or not running)."""
        if self._error is not None:
            raise JournalFailed(f"journal failed: {self._error}") from self._error
        raise JournalClosed("journal is not running")

    def _enqueue(self, item: _Item) -> None:
        with self._lock:
            if self._error is not None or self._closing or self._thread is None:
                self._refused()
            self._pending.append(item)
            if item.callback is not None or item.sync:
                self._waiting = True
            if len(self._pending) == 1 and not self._ids:
                self._wakeup.notify()

    # -- the journal thread -------------------------------------------------------------------

    def _compaction_wanted(self) -> bool:
        c = self._compactor
        if c is None or not self.auto_compact:
            return False
        if c.busy:
            return True
        if self._compact_failed_at == self._seg_no:
            c.deferred = False  # (nothing looked at: no timed look again until the next roll)
            return False
        run = c.find_run(self._seg_no, defer_draining=True)
        if run is None:
            return False
        c.start(run)
        return True

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._finish()

    def _take_batch_locked(self) -> tuple[list[_Item], dict]:
        """The queued items and coalesced ids, detached (``_lock`` held; journal thread). The
        ids returned are never the dict :meth:`append_ids` writes to: when none are queued
        the caller gets an empty dict of its own, since it reads them after releasing the
        lock (once the live dict was kept when empty, an append landed in it meanwhile and
        the journal thread encoded it while a worker grew it: "dictionary changed size
        during iteration", the journal failed)."""
        items = self._pending
        self._pending = []
        self._waiting = False
        ids = self._ids
        if not ids:
            return items, {}
        self._ids = {}
        return items, ids

    def _loop(self) -> None:
        want_compact = self._compaction_wanted()
        last_step = 0.0
        while True:
            with self._lock:
                while not self._pending and not self._ids and not self._closing and \
                        not want_compact:
                    if self._compactor is not None and self._compactor.deferred:
                        # a draining segment was left alone: look at it again even if
                        # nothing is written (its drain may have stopped)
                        self._wakeup.wait(self._compactor.drain_window)
                        break
                    self._wakeup.wait()
                items, ids = self._take_batch_locked()
                closing = self._closing
            if items or ids or (closing and self._held):
                try:
                    if ids and items:
                        gone = cancel_acked(items, ids)
                        if gone:
                            items = drop_cancelled(items, ids, gone)
                            self.metrics.cancelled += len(gone)
                    if ids or self._held:
                        ids, self._held = hold_delivered(self._held, ids, closing)
                        if ids:
                            items.append(_Item(_encode_ids(ids), None))
                    self._process(items)
                except BaseException:  # pragma: no cover - a bug; keep the thread honest
                    self.metrics.internal_errors += 1
                    log.exception("journal thread: unexpected error")
                    self._fail(OSError(errno.EIO, "internal journal error"), [])
                if self._error is None:
                    try:
                        self._roll_if_dead()  # (a drained backlog's dead records: issue #22)
                    except OSError as exc:
                        self._fail(exc, [])
            if closing and not items:
                break
            compactor = self._compactor
            assert compactor is not None
            if compactor.busy and self._waiting and not closing and \
                    time.monotonic() - last_step < COMPACT_MAX_DEFER:
                # a confirm or commit waits in _pending: its batch first (a step holds the
                # thread for ~1-2 ms, the last one of a job for longer); compaction still
                # gets a step at least every COMPACT_MAX_DEFER seconds
                want_compact = True
                continue
            if compactor.busy:  # started by _compaction_wanted, maybe finished by compact()
                last_step = time.monotonic()
                before = compactor.stats.aborted
                try:
                    compactor.step()
                except Exception:  # a bug: stop compacting, keep journaling
                    self.metrics.internal_errors += 1
                    log.exception("journal compaction failed")
                    compactor.abort()
                    before = -1
                if compactor.stats.aborted != before:
                    self._compact_failed_at = self._seg_no
            want_compact = self._error is None and self._compaction_wanted()
