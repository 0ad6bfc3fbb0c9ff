"""Control of a running journal: requests that run on the journal thread as control items
(:meth:`JournalControl.compact`, :meth:`JournalControl.reset_error`), and the failed state:
entering it after an I/O error (every waiting append fails) and leaving it. A mixin of
:class:`syncmq.journal.writer.Journal`, whose fields it uses; ``_error`` and ``_pending`` are
guarded by the journal's ``_lock``, the rest runs on the journal thread.
"""

from __future__ import annotations

import logging
import os
import threading

from .compaction import CompactionStats, Compactor
from .items import JournalClosed, JournalError, JournalFailed, _Item
from .recovery import recover_dir

log = logging.getLogger("syncmq.journal")


class JournalControl:
    """The control and failed-state part of :class:`~syncmq.journal.writer.Journal`."""

    __slots__ = ()

    @property
    def error(self) -> Exception | None:
        """The I/O error that put the journal into the failed state, or None."""
        return self._error

    def reset_error(self, timeout: float | None = None) -> None:
        """Leave the failed state: truncate the current segment to its last durable end,
        rebuild the liveness state from disk, accept appends again. Raises the new error if
        that fails (the journal stays failed)."""
        done = threading.Event()
        box: list[BaseException] = []

        def control() -> None:
            try:
                self._reset_locked_out()
            except BaseException as exc:  # reported to the caller below
                box.append(exc)
            finally:
                done.set()

        with self._lock:
            if self._error is None:
                return
            if self._thread is None or self._closing:
                raise JournalClosed("journal is not running")
            self._pending.append(_Item((), None, control=control))
            self._wakeup.notify()
        if not done.wait(timeout):
            raise JournalError("reset_error timed out")
        if box:
            raise box[0]

    def _fail_items(self, items: list[_Item], exc: Exception) -> None:
        for it in items:
            if it.control is not None:
                it.control()
            elif it.callback is not None:
                try:
                    it.callback(exc)
                except Exception:
                    log.exception("journal callback raised")

    def _fail(self, exc: Exception, items: list[_Item]) -> None:
        """Enter the failed state: fail ``items`` and everything queued, then ``on_error``."""
        with self._lock:
            first = self._error is None
            self._error = exc
            queued = self._pending
            self._pending = []
            self._ids = {}  # nobody waits for these (see append_ids)
            self._held = {}  # (nor for these; a failed journal's stop is unclean anyway)
            self._waiting = False
        self.metrics.errors += 1
        if self._compactor is not None:
            self._compactor.abort()
        if first:
            log.error("journal write to %s failed: %s; failing %d pending append(s); appends "
                      "refused until reset_error()", self.data_dir, exc,
                      len(items) + len(queued))
        self._fail_items(items, exc)
        self._fail_items(queued, exc)
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("journal on_error callback raised")

    def _reset_locked_out(self) -> None:
        """Journal thread: recover from the failed state (see :meth:`reset_error`)."""
        if self._fd is not None:
            os.ftruncate(self._fd, self._durable_end)
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        _result, state = recover_dir(self.data_dir)
        self._state = state
        self.reader.forget()
        self._compactor = Compactor(self.data_dir, state, self.segment_bytes,
                                    self.compact_threshold, self.compact_step_bytes,
                                    reader=self.reader)
        self._open_current()
        self._write_reopen_mark()
        with self._lock:
            self._error = None
        log.warning("journal %s: error state cleared, appends accepted again", self.data_dir)

    def compact(self, timeout: float | None = None) -> int:
        """Run compaction until no closed segment qualifies; return the number of jobs.

        On the journal thread when it runs (this call waits for it), else inline."""
        if self._compactor is None:
            raise JournalError("recover() must be called before compact()")
        with self._lock:
            running = self._thread is not None and not self._closing
        if self._closed:
            raise JournalClosed("journal is closed")
        if not running:
            return self._compactor.run_all(self._seg_no)
        done = threading.Event()
        box: list = []

        def control() -> None:
            try:
                if self._error is not None:
                    raise JournalFailed(f"journal failed: {self._error}") from self._error
                box.append(self._compactor.run_all(self._seg_no))
            except BaseException as exc:  # reported to the caller below
                box.append(exc)
            finally:
                done.set()

        with self._lock:
            self._pending.append(_Item((), None, control=control))
            self._wakeup.notify()
        if not done.wait(timeout):
            raise JournalError("compact timed out")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    @property
    def compaction_stats(self) -> CompactionStats:
        assert self._compactor is not None
        return self._compactor.stats
