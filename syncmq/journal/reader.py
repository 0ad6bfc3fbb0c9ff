"""Reading message bodies back from the journal's segments (the memory budget's side).

With ``--memory-budget`` a persistent message on durable queues is already in the journal: its
PUBLISH record ends with the body (``format``: the body is the last ``len(body)`` bytes of the
record). Rather than writing it a second time to a spill file, the body store asks
:meth:`SegmentReader.locate` for a *reference*: an open :class:`SegmentFd` on the segment file
plus the body's offset, and later reads it with one ``pread``.

Why references stay valid whatever compaction does (the choice, see docs/architecture.md):

* **The fd pins the bytes.** A reference holds an fd opened on the segment file *as it was when
  the reference was taken*. Segment bytes are never rewritten in place: compaction writes a new
  file and renames it over ``<b>.seg`` and unlinks ``a..b-1``; on POSIX a renamed-over or
  unlinked file stays readable through an fd opened before. So a reference can never read the
  wrong bytes, even for a message the journal has meanwhile declared dead (a no-ack ``basic.get``
  or a dead letter read after its ACK record was appended), without any liveness contract
  between queues and the journal.
* **Relocation keeps disk use down.** A pinned inode costs its whole file until the last
  reference to it goes, which would defeat compaction for a backlog that spans many segments. So
  a compaction job, once its output has replaced its inputs, publishes where every live message
  it kept went (:attr:`on_relocate`); the store re-points its references to the new file and
  the old inode is freed when no reference remains (only references to messages the journal
  already considers dead stay on an old inode, for the moment it takes to deliver them).
* **Lookups and file swaps are atomic to each other.** :meth:`locate` resolves the message's
  current location in the journal state and the fd for that segment under :attr:`lock`;
  compaction renames its output, updates the state's locations and drops the replaced fds from
  the cache under the same lock (:meth:`swap`), so a lookup never pairs an old offset with a new
  file or the reverse.

Only records known durable are handed out (a closed segment, or the current one up to its last
fsync; :attr:`Journal.durable_mark`): after an I/O error the journal cuts its current segment
back to the last fsync, which must not take a referenced body with it.

**Bounded fds.** The reader keeps at most :data:`FD_CACHE` fds it is not asked for (an LRU of
the segments looked up last); every other ``SegmentFd`` lives only as long as a reference
holds it and is found again through a weak map while it does, so there is never more than
one fd per segment, compaction still finds every fd it must relocate, and a segment whose
references are all released has its fd closed once it falls out of the LRU (it used to be
kept for the life of the process).

Locks: :attr:`lock` guards the fd cache and the state's message locations (``seg``/``off``)
against compaction; it is taken by worker threads (inside the body store's lock) and by the
journal thread (compaction). Nothing else is taken while it is held, and it is held for a
dict lookup and at most an ``open`` (locate; read_many: up to :data:`LOOKUPS_HELD` of them)
or a ``rename`` and a state update (swap).
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from . import format as fmt
from .items import JournalError

__all__ = ["SegmentFd", "SegmentReader", "Move"]

_serials = itertools.count(1)
FD_CACHE = 32  # segment fds kept open with no reference (LRU)
SPAN_MAX = 1 << 20  # bytes read_many reads with one pread
LOOKUPS_HELD = 256  # locations read_many looks up per hold of the lock

#: ``(msg_id, segment before, record offset before, record offset after)`` of one message
#: moved by compaction (after: in the job's output segment).
Move = tuple[int, int, int, int]


def _ignore(_error: Exception | None) -> None:
    """A sync barrier's callback when nobody waits for it (:meth:`SegmentReader.request_sync`)."""


class SegmentFd:
    """A read-only fd on one segment file (one inode); closed when the last reference goes.

    ``serial`` is unique for the process, so a holder can tell two generations of the same
    segment number apart (compaction replaces ``<b>.seg`` by a new file)."""

    __slots__ = ("fd", "no", "serial", "__weakref__")

    def __init__(self, path: str, no: int) -> None:
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.no = no
        self.serial = next(_serials)

    def pread(self, n: int, offset: int) -> bytes:
        data = os.pread(self.fd, n, offset)
        if len(data) != n:
            raise OSError(f"journal segment {self.no:016x}: short read at {offset} "
                          f"({len(data)} of {n})")
        return data

    def close(self) -> None:
        """Close the fd now (idempotent; ``__del__`` does it otherwise)."""
        self.__del__()

    def __del__(self) -> None:
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            self.fd = -1
            try:
                os.close(fd)
            except OSError:
                pass


class SegmentReader:
    """Hands out references to PUBLISH bodies and keeps them valid; see the module docstring.

    :param journal: the owning ``Journal`` (duck-typed: ``durable_mark``, ``_state``).
    """

    def __init__(self, data_dir: str, journal: Any) -> None:
        self.data_dir = data_dir
        self.journal = journal
        self.lock = threading.Lock()
        # segment number -> fd on its current file: the last FD_CACHE looked up (LRU, strong)
        # and every one still alive (weak: held by references)
        self._fds: OrderedDict[int, SegmentFd] = OrderedDict()
        self._alive: weakref.WeakValueDictionary[int, SegmentFd] = \
            weakref.WeakValueDictionary()
        #: ``on_relocate(old_fds, new_fd, moves)`` after a compaction job replaced segments
        #: (journal thread, no journal lock held); ``old_fds`` maps a replaced segment number
        #: to the fd that was current for it, ``moves`` lists the live messages kept.
        self.on_relocate: Callable[[dict[int, SegmentFd], SegmentFd | None, list[Move]],
                                   None] | None = None

    def _path(self, no: int) -> str:
        return os.path.join(self.data_dir, fmt.segment_name(no))

    def _fd_locked(self, no: int) -> SegmentFd:
        fds = self._fds
        f = fds.get(no)
        if f is not None:
            fds.move_to_end(no)
            return f
        f = self._alive.get(no)
        if f is None:
            f = self._alive[no] = SegmentFd(self._path(no), no)
        fds[no] = f
        if len(fds) > FD_CACHE:
            fds.popitem(last=False)  # closed now unless a reference still holds it
        return f

    def _pop_locked(self, no: int) -> SegmentFd | None:
        """Forget segment ``no``'s current fd (compaction replaced the file)."""
        f = self._fds.pop(no, None)
        alive = self._alive.pop(no, None)
        return f if f is not None else alive

    def _durable_loc_locked(self, msg_id: int, body_len: int) -> tuple[int, int, int] | None:
        """``(segment, offset, size)`` of the PUBLISH record of live message ``msg_id`` if it
        holds at least ``body_len`` body bytes and is written and fsynced, else None: the one
        rule for what this reader hands out (:attr:`lock` held)."""
        journal = self.journal
        state = journal._state
        loc = state.msgs.loc(msg_id) if state is not None else None
        if loc is None:
            return None
        cur, durable = journal.durable_mark
        seg, off, size = loc
        if size < body_len or seg > cur or (seg == cur and off + size > durable):
            return None
        return loc

    def _durable_fd(self, msg_id: int, body_len: int) -> tuple[SegmentFd, int, int] | None:
        """``(fd, offset, size)`` of the PUBLISH record :meth:`_durable_loc_locked` allows,
        the fd taken under :attr:`lock` (it pins the bytes), or None (any thread)."""
        with self.lock:
            loc = self._durable_loc_locked(msg_id, body_len)
            if loc is None:
                return None
            seg, off, size = loc
            try:
                return self._fd_locked(seg), off, size
            except OSError:
                return None

    def locate(self, msg_id: int, body_len: int) -> tuple[SegmentFd, int] | None:
        """``(fd, offset)`` of the body of live message ``msg_id`` (``body_len`` bytes), or
        None if its PUBLISH is not written and fsynced yet, or not live (any thread)."""
        found = self._durable_fd(msg_id, body_len)
        if found is None:
            return None
        f, off, size = found
        return f, off + size - body_len

    def record(self, msg_id: int) -> bytes | None:
        """The whole PUBLISH record (header included) of live message ``msg_id``, read now,
        or None as :meth:`locate` (any thread: a paged queue's recovered tail is a run of
        message ids decoded from their records at page-in, ``queues/paged.py``)."""
        found = self._durable_fd(msg_id, 0)
        if found is None:
            return None
        f, off, size = found
        data = f.pread(size, off)
        return data if len(data) == size else None

    def publish_meta(self, msg_id: int) -> tuple[str, str, bytes, int, int] | None:
        """``(exchange, routing_key, properties, body_len, published_ms)`` of live message
        ``msg_id`` from its PUBLISH record (:meth:`record`), or None."""
        data = self.record(msg_id)
        if data is None:
            return None
        r, n = fmt.decode_publish_meta(data, fmt.RECORD_HEADER.size, len(data), data[8])
        return r.exchange, r.routing_key, r.properties, n, r.published_ms

    def durable_prefix(self, wanted: list[tuple[int, int]]) -> int:
        """How many of the leading ``(msg_id, body_len)`` :meth:`locate` would hand out now
        (live, written and fsynced), stopping at the first it would not: one hold of
        :attr:`lock` for at most :data:`LOOKUPS_HELD` lookups and no fd (a paged queue's
        page-out: which of its newest messages may go by reference). Any thread."""
        done = 0
        where = self._durable_loc_locked
        for i in range(0, len(wanted), LOOKUPS_HELD):
            with self.lock:
                for msg_id, n in wanted[i:i + LOOKUPS_HELD]:
                    if where(msg_id, n) is None:
                        return done
                    done += 1
        return done

    def request_sync(self) -> bool:
        """Ask the journal for an fsync of everything appended so far, without waiting (a
        paged queue whose newest messages wait for their PUBLISH records to be durable before
        it pages them out by reference: a publisher without confirms asks for no fsync, so
        otherwise only a segment's end would make them durable). Nothing in ``never`` mode,
        where a written record counts as durable. False if nothing was asked (any thread)."""
        journal = self.journal
        if getattr(journal, "fsync_mode", None) == "never":
            return False
        try:
            journal.sync_barrier(_ignore)
        except JournalError:  # (failed or closed: nothing will become durable)
            return False
        return True

    def read_many(self, wanted: list[tuple[int, int]]) -> list[bytes | None]:
        """The bodies of live messages ``(msg_id, body_len)``, read now, in order; None for
        one :meth:`locate` would not hand out. Bodies that lie close together in one segment
        (a paged queue's backlog: its PUBLISH records back to back) are read with one
        ``pread`` of their span (at most :data:`SPAN_MAX` bytes, and never more than twice
        the bodies' bytes plus a page), so a page-in costs a read per span, not one per
        message. Locations are taken under :attr:`lock`, the reads done after it with the
        fds they were taken on (which pin those bytes: see the module docstring)."""
        locs: list[tuple[SegmentFd, int, int] | None] = []
        where = self._durable_loc_locked
        for i in range(0, len(wanted), LOOKUPS_HELD):  # (the lock for at most that many)
            with self.lock:
                last, f = -1, None  # (one fd lookup per segment of the hold, not per record)
                for msg_id, n in wanted[i:i + LOOKUPS_HELD]:
                    loc = where(msg_id, n)
                    if loc is None:
                        locs.append(None)
                        continue
                    seg, off, size = loc
                    if seg != last:
                        try:
                            f = self._fd_locked(seg)
                        except OSError:
                            locs.append(None)
                            last = -1
                            continue
                        last = seg
                    locs.append((f, off + size - n, n))
        out: list[bytes | None] = []
        i = 0
        while i < len(locs):
            loc = locs[i]
            if loc is None:
                out.append(None)
                i += 1
                continue
            f, start, n = loc
            end, useful, j = start + n, n, i + 1
            while j < len(locs):
                nxt = locs[j]
                if nxt is None or nxt[0] is not f or nxt[1] < end:
                    break
                span = nxt[1] + nxt[2] - start
                if span > SPAN_MAX or span > 2 * (useful + nxt[2]) + 4096:
                    break
                end, useful, j = nxt[1] + nxt[2], useful + nxt[2], j + 1
            buf = f.pread(end - start, start)
            for k in range(i, j):
                _f, o, n = locs[k]  # type: ignore[misc]
                out.append(buf[o - start:o - start + n])
            i = j
        return out

    def read(self, msg_id: int, body_len: int) -> bytes | None:
        """The body of live message ``msg_id`` read now, or None (tests, diagnostics)."""
        loc = self.locate(msg_id, body_len)
        if loc is None:
            return None
        return loc[0].pread(body_len, loc[1])

    # -- the journal thread -------------------------------------------------------------------

    def swap(self, replace: Callable[[], None], run: Iterable[int], out: int | None) -> \
            tuple[dict[int, SegmentFd], SegmentFd | None]:
        """Compaction: run ``replace()`` (the rename and the state update) with the lock held,
        forget the fds of ``run``'s segments and, if ``out`` is not None, open the new file of
        segment ``out``. Returns the forgotten fds and the new one."""
        with self.lock:
            replace()
            old = {no: f for no in run if (f := self._pop_locked(no)) is not None}
            new = None
            if out is not None and old:
                try:
                    new = self._fd_locked(out)
                except OSError:
                    new = None
        return old, new

    def relocated(self, old: dict[int, SegmentFd], new: SegmentFd | None,
                  moves: list[Move]) -> None:
        """Tell the listener (the body store) where kept messages went (journal thread)."""
        cb = self.on_relocate
        if cb is not None and old:
            cb(old, new, moves)

    def forget(self) -> None:
        """Drop every cached fd (after the journal rebuilt its state, e.g. reset_error):
        references taken before keep theirs."""
        with self.lock:
            self._fds.clear()
            self._alive = weakref.WeakValueDictionary()

    def close(self) -> None:
        """The broker stopped (journal and body store closed, nothing reads): close every
        segment fd now, cached or still held by a reference (a reference used afterwards
        reads EBADF), rather than when a reference cycle is collected."""
        with self.lock:
            fds = list(self._fds.values()) + list(self._alive.values())
            self._fds.clear()
            self._alive = weakref.WeakValueDictionary()
        for f in fds:
            f.close()

    def cached_fds(self) -> int:
        """Fds open for segments: cached or held by references."""
        with self.lock:
            return len(set(self._fds) | set(self._alive.keys()))
