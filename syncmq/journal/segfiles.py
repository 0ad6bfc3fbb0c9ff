"""Segment files of the journal: writing records at the end of the current segment, opening,
rolling and creating segments. A mixin of :class:`syncmq.journal.writer.Journal`, whose fields
it uses; everything here runs on the journal thread (or before it starts), which owns the file
descriptors and segment numbers (see the writer's module docstring).
"""

from __future__ import annotations

import errno
import os

from . import format as fmt
from .recovery import fsync_dir

_IOV_MAX = 1024


class SegmentFiles:
    """The segment-file half of :class:`~syncmq.journal.writer.Journal` (journal thread)."""

    __slots__ = ()

    def _write_chunk(self, bufs: list[bytes], offs: list[int], heads: list[tuple | None],
                     want: int) -> None:
        """Write ``bufs`` (``want`` bytes in all) at the end of the current segment; queue
        them for :meth:`_apply_written`."""
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
        self._unapplied.append((bufs, offs, heads, self._state.segments[self._seg_no]))

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
        else:
            self._new_segment(last + 1)

    def _roll(self) -> None:
        """Close the current segment (fsynced unless "never") and start the next one."""
        if self._dirty:
            if self.fsync_mode != "never":
                self._sync()
            else:
                self._unsynced.append(self._seg_path(self._seg_no))
        self._new_segment(self._seg_no + 1)

    def _new_segment(self, no: int) -> None:
        path = self._seg_path(no)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            header = fmt.encode_file_header(no)
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
        self._state.add_segment(no)
        self.metrics.segments_created += 1

    def segment_numbers(self) -> list[int]:
        """Segment files currently in the data directory (reads the directory)."""
        return sorted(n for n in (fmt.parse_segment_name(x) for x in os.listdir(self.data_dir))
                      if n is not None)

    def disk_usage(self) -> int:
        """Total bytes of the segment files (reads the directory)."""
        return sum(os.path.getsize(os.path.join(self.data_dir, fmt.segment_name(n)))
                   for n in self.segment_numbers())
