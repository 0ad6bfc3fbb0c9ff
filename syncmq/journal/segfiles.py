"""Segment files of the journal: writing records at the end of the current segment, opening,
rolling and creating segments. A mixin of :class:`syncmq.journal.writer.Journal`, whose fields
it uses; everything here runs on the journal thread (or before it starts), which owns the file
descriptors and segment numbers (see the writer's module docstring).

Invariant (message ids never go backwards, see ``format.py``): the current segment holds an
ID_MARK record, written when it was created or reopened and durable before any compaction
can run, that is at least every message id in the segments before it. So compaction, which
only rewrites closed segments, may drop any record (and any older ID_MARK) without lowering
the ``max_id`` the next recovery finds.
"""

from __future__ import annotations

import errno
import os

from . import format as fmt
from .recovery import fsync_dir

_IOV_MAX = 1024
#: The current segment is closed early once it holds this many dead PUBLISH records and
#: under 1/ROLL_LIVE_SHARE of its bytes are live (:meth:`SegmentFiles._roll_if_dead`).
ROLL_DEAD = 1 << 16
ROLL_LIVE_SHARE = 8


class SegmentFiles:
    """The segment-file half of :class:`~syncmq.journal.writer.Journal` (journal thread)."""

    __slots__ = ()

    def _write_chunk(self, bufs: list[bytes], offs: list[int], runs: list[list],
                     want: int) -> None:
        """Write ``bufs`` (``want`` bytes in all) at the end of the current segment; queue
        them (with their PUBLISH ``runs``, see ``GroupCommit._write_group``) for
        :meth:`_apply_written`."""
        if not bufs:
            return
        fd = self._fd
        assert fd is not None
        if len(bufs) <= _IOV_MAX:
            n = os.writev(fd, bufs)
            if n != want:
                self._write_rest(fd, bufs, n)
        else:
            for i in range(0, len(bufs), _IOV_MAX):
                part = bufs[i : i + _IOV_MAX]
                n = os.writev(fd, part)
                if n != sum(len(b) for b in part):
                    self._write_rest(fd, part, n)
        self._seg_size += want
        self._dirty = True
        assert self._state is not None
        self._unapplied.append((bufs, offs, runs, self._state.segments[self._seg_no]))

    @staticmethod
    def _write_rest(fd: int, bufs: list[bytes], done: int) -> None:
        """Finish a short ``writev`` (rare: a signal, a full pipe-like device)."""
        mv = memoryview(b"".join(bufs))[done:]
        while mv:
            k = os.write(fd, mv)
            mv = mv[k:]

    def _seg_path(self, no: int) -> str:
        return os.path.join(self.data_dir, fmt.segment_name(no))

    def _open_current(self) -> None:
        """After recovery: append to the last segment if it is a plain one with room, else
        start a new one."""
        state = self._state
        assert state is not None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        last = max(state.segments) if state.segments else 0
        seg = state.segments.get(last)
        if seg is not None and seg.covers_from == last and \
                fmt.FILE_HEADER.size + seg.size < self.segment_bytes:
            self._fd = os.open(self._seg_path(last), os.O_WRONLY | os.O_APPEND)
            self._seg_no = last
            self._seg_size = fmt.FILE_HEADER.size + seg.size
            self._durable_end = self._seg_size
            self.durable_mark = (self._seg_no, self._durable_end)
            self._dirty = False
            self._mark_due = True  # see _write_reopen_mark
        else:
            self._new_segment(last + 1)

    def _write_reopen_mark(self) -> None:
        """Append (and fsync) an ID_MARK to a segment reopened by :meth:`_open_current`, before
        any compaction can drop ids from the closed ones. Called when the journal starts
        (a recovery that is only read changes no file)."""
        if not self._mark_due:
            return
        self._mark_due = False
        mark = self._id_mark()
        if not mark:
            return
        assert self._fd is not None and self._state is not None
        if os.write(self._fd, mark) != len(mark):
            raise OSError(errno.EIO, "short write of an ID_MARK record")
        if self.fsync_mode != "never":
            os.fsync(self._fd)
        self._account_mark(self._state.segments[self._seg_no], self._seg_size, mark)
        self._seg_size += len(mark)
        self._durable_end = self._seg_size
        self.durable_mark = (self._seg_no, self._durable_end)

    def _id_mark(self) -> bytes:
        """The ID_MARK record for a segment that becomes current (empty if no id was used)."""
        assert self._state is not None
        return fmt.encode_id_mark(self._state.max_id) if self._state.max_id else b""

    def _account_mark(self, seg, off: int, mark: bytes) -> None:
        if mark:
            assert self._state is not None
            self._state.apply(fmt.T_ID_MARK, mark, 0, len(mark) - fmt.RECORD_HEADER.size, seg,
                              off)

    def _roll(self) -> None:
        """Close the current segment (fsynced unless "never") and start the next one."""
        if self._dirty:
            if self.fsync_mode != "never":
                self._sync()
            else:
                self._unsynced.append(self._seg_path(self._seg_no))
        # the new segment's ID_MARK must cover the records just written: apply them first
        self._apply_written()
        self._new_segment(self._seg_no + 1)

    def _roll_if_dead(self) -> bool:
        """Close the current segment early when it holds :data:`ROLL_DEAD` dead PUBLISH
        records and little live (issue #22). Each dead PUBLISH still on disk costs the state
        an entry in ``dead_seg`` and in its segment's ``dead_ids`` until compaction drops the
        segment, and compaction only takes closed ones: a drained backlog of small messages
        left up to a whole segment of them (64 MiB of ~100-byte records: ~600,000 ids, ~50
        MiB of RSS) for as long as no new record filled it. Closed, it is compacted like
        any other. O(1); called by the journal thread after each batch."""
        assert self._state is not None
        seg = self._state.segments.get(self._seg_no)
        if seg is None or len(seg.dead_ids) < ROLL_DEAD or \
                seg.live * ROLL_LIVE_SHARE > seg.size:
            return False
        self._roll()
        return True

    def _new_segment(self, no: int) -> None:
        path = self._seg_path(no)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            mark = self._id_mark()
            header = fmt.encode_file_header(no) + mark
            if os.write(fd, header) != len(header):
                raise OSError(errno.EIO, "short write of a segment header")
            if self.fsync_mode != "never":
                os.fsync(fd)
                fsync_dir(self.data_dir)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._seg_no = no
        self._seg_size = len(header)
        self._durable_end = self._seg_size
        self.durable_mark = (self._seg_no, self._durable_end)
        self._dirty = False
        assert self._state is not None
        self._account_mark(self._state.add_segment(no), fmt.FILE_HEADER.size, mark)
        self.metrics.segments_created += 1

    def segment_numbers(self) -> list[int]:
        """Segment files currently in the data directory (reads the directory)."""
        return sorted(n for n in (fmt.parse_segment_name(x) for x in os.listdir(self.data_dir))
                      if n is not None)

    def disk_usage(self) -> int:
        """Total bytes of the segment files (reads the directory)."""
        return sum(os.path.getsize(os.path.join(self.data_dir, fmt.segment_name(n)))
                   for n in self.segment_numbers())
