"""A ready FIFO whose tail is paged out to disk (classic queues under a memory budget).

:class:`PagedReadyQueue` is a :class:`~syncmq.queues.ready.ReadyQueue` (same API, same
``(seq, (message, redelivered))`` pairs) that keeps at most ``window`` messages in memory,
the *head*; what is pushed while the head is full goes to the *tail*:

- ``_pend``: the newest tail pairs, still objects; a push that finds :data:`PAGE_BATCH`
  of them there writes them with one ``write`` first (their body-store references are
  then released), so the newest pair is always an object (the TTL-0 drop's ``pop_tail``
  returns the very message it was given). A write that fails (disk full, a short write)
  leaves nothing in the files and ``_pend`` in memory, written again once it doubled.
  Persistent messages whose PUBLISH record is not fsynced yet (a live publisher runs ahead
  of group commit) end the write: they wait in ``_pend`` until it is, to be paged out by
  reference (below), and the queue asks the journal for that fsync once
  (``BodyStore.sync_journal``: a publisher without confirms asks for none); only past
  ``pend_max`` (``max(window, 16 * batch)``) are they written whole (:meth:`_writable`);
- the page files: append-only segments (``<spill dir>/q<id>-<n>.page``, about
  ``seg_bytes`` each) holding one self-contained record per message: seq, redelivered, the
  message's exchange, routing key, raw properties, CC/BCC keys, msg id, persistent flag,
  TTL and body (:func:`_encode`). Nothing per paged message stays in memory: the records
  sit back to back from a read position in the first segment to the end of the last one,
  each with its length at both ends (so the newest can be taken off the end too).
  A message whose body the journal holds (persistent, on a durable queue, its PUBLISH
  fsynced: ``BodyStore.journal_prefix``) is written *by reference*: flag ``_JOURNAL``, its
  body length and no body bytes (~100 bytes a message instead of ~1.1 KB for 1 KiB; a recovered
  backlog is not written a second time). Paging it in indexes the body as the journal's
  record again (``BodyStore.adopt_journaled``, looked up by message id, so compaction may
  have moved it); the record stays live while the message is on the queue. A page-in the
  journal cannot serve (a bug) stops at that record, which stays first in the tail.

- the recovered runs (``push_run``, recovery after an unclean stop only): the tail's front
  can be runs of consecutive journal message ids (``_runs``, ``_run_n`` messages with seqs
  from ``_run_seq``), nothing per message; page-in takes them first and decodes each from
  its PUBLISH record (``store.slow.locator.publish_meta``); the queue counts their bytes
  then (``counted``). Allowed only while the tail holds nothing else, so they stay first.

Paging in (``_page_in``) happens when a pop or peek leaves the head below half the window:
records are read in one ``pread`` of up to :data:`READ_CHUNK` bytes and rebuilt as
``Message`` objects. A paged-in body stays on its message while the head holds less than
``loose_bytes`` (4 MiB) of such bodies, else it goes back into the body store (so the budget
still bounds bodies, whatever their size): putting every body back in the store and
releasing it again cost as much CPU as the rest of a page-in. ``_loose`` counts them
(decreased when such a message leaves the head by ``pop``; one requeued later is not
counted again: at most a prefetch more). A segment is unlinked once read through.

Order: every seq in the tail is above every seq in the head (pushes go to the tail while
it is not empty; a requeued or put-back pair was popped from the head, so its seq is below
every tail seq and it goes to the head as in ``ReadyQueue``). ``pop_tail``/``requeue`` of
the newest message (TTL 0 drops) work on the tail's end.

Counters: ``paged_count`` and ``paged_bytes`` (body bytes) of the messages in the page
files (``/api/queues`` ``messages_paged_out``). The queue's own counters (ready bytes,
persistent count) include paged messages: a message is counted once when pushed.

Page files are transient: recovery rebuilds a queue from the journal (recovered messages
past the window are paged again); the spill directory is emptied at start-up. Not
thread-safe: the owning queue's lock guards it (file I/O happens under it, as the body
store's does under its own lock).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from itertools import islice

from .page_records import _HEAD, _LEN, _decode, _decode_many, _encode, _Seg
from .paged_runs import IdRunTail
from .ready import ReadyQueue

__all__ = ["PagedReadyQueue", "PAGE_BATCH"]

log = logging.getLogger("syncmq.paged")

PAGE_BATCH = 256  # tail pairs written per write
READ_CHUNK = 1 << 20  # bytes read per pread when paging in
SEG_BYTES = 64 << 20  # page segment size (a record never spans two)
LOOSE_BYTES = 4 << 20  # paged-in bodies a queue's head may hold outside the body store

_ids = itertools.count(1)


class PagedReadyQueue(IdRunTail, ReadyQueue):
    """A :class:`ReadyQueue` that keeps at most ``window`` messages in memory and pages the
    rest out to files in ``directory`` (see the module docstring). ``store``: the body
    store (``queues.spill.BodyStore``) paged-out messages leave and paged-in ones re-enter
    (None: bodies stay on the messages).
    """

    __slots__ = ("window", "batch", "store", "directory", "seg_bytes", "paged_count", "paged_bytes",
                 "_pend", "_segs", "_rpos", "_id", "_nseg", "_names", "written_bytes", "_tail_hi", "_cls", "loose_bytes", "_loose",
                 "_out_at", "write_errors", "_runs", "_run_n", "_run_seq", "_run_red",
                 "counted", "pend_max", "_sync_asked")

    def __init__(self, message_class, store, directory: str, window: int,
                 seg_bytes: int = SEG_BYTES, batch: int = PAGE_BATCH,
                 loose_bytes: int = LOOSE_BYTES, first_seq: int = 0) -> None:
        super().__init__(first_seq)
        self.batch = max(1, batch)
        self._cls = message_class  # the broker's Message (queues never import broker)
        self.window = max(2, window)
        self.store = store
        self.directory = directory
        self.seg_bytes = seg_bytes
        self.paged_count = 0  # messages in the page files
        self.paged_bytes = 0  # their body bytes
        self.written_bytes = 0  # bytes ever written to page files
        self._pend: deque = deque()  # newest tail pairs, not written yet
        self._segs: deque[_Seg] = deque()  # page segments, oldest first
        self._rpos = 0  # read position in _segs[0]
        self._id = next(_ids)
        self._nseg = 0
        self._names: dict[bytes, str] = {}
        self._tail_hi = -1  # seq of the pair pop_tail took from the tail (see requeue)
        self.loose_bytes = loose_bytes
        self._loose = 0  # bytes of paged-in bodies in the head outside the store
        self._out_at = self.batch  # _pend's length that writes it out (more after errors)
        # _pend's length past which bodies whose journal record is not fsynced yet are
        # written whole instead of waiting in memory (see _writable)
        self.pend_max = max(self.window, 16 * self.batch)
        self._sync_asked = False  # a journal fsync was asked for since the last write
        self.write_errors = 0  # page writes that failed (the tail stayed in memory)
        # the recovered tail as runs of journal ids (push_run): [first id, count] each, the
        # front of the tail; _run_n messages with seqs _run_seq.., all redelivered or not
        self._runs: deque[list[int]] = deque()
        self._run_n = 0
        self._run_seq = 0
        self._run_red = False
        #: ``counted(message, seq, published_ms)``: a run message becomes a pair (page-in,
        #: pop_tail); the queue counts its bytes (and TTL) then (its lock held)
        self.counted = None

    # -- adding ---------------------------------------------------------------------------

    def push(self, item) -> int:
        """Append a new item (to the head while it has room and the tail is empty); return
        its seq. O(1), plus one write per :data:`PAGE_BATCH` tail pushes."""
        seq = self._next_seq
        self._next_seq = seq + 1
        pend = self._pend
        if not pend and not self.paged_count and \
                len(self._fresh) + len(self._requeued) < self.window:
            self._fresh.append((seq, item))
            return seq
        if len(pend) >= self._out_at:  # (before the append: the newest stays an object)
            self._page_out()
        pend.append((seq, item))
        return seq

    def push_journaled(self, item) -> int | None:
        """Recovery: :meth:`push` of a pair whose message has ``body`` None and no store
        reference, its body being only in the journal (its PUBLISH replayed from disk); it
        is paged out by reference, no store entry made for it. None, and nothing done, if
        it would go to the head (which has room and an empty tail): push it stored then.
        Until written it waits in ``_pend`` like any pair; paged in from there, it gets its
        store reference as one read from a page file does."""
        pend = self._pend
        if not pend and not self.paged_count and \
                len(self._fresh) + len(self._requeued) < self.window:
            return None
        seq = self._next_seq
        self._next_seq = seq + 1
        if len(pend) >= self._out_at:
            self._page_out()
        pend.append((seq, item))
        return seq

    def push_many(self, items) -> None:
        """Append new items in order, as ``push`` of each would: the head's room in one
        ``ReadyQueue.push_many`` (in C), the rest one by one to the tail."""
        items = iter(items)
        room = self.window - len(self._fresh) - len(self._requeued)
        if room > 0 and not self._pend and not self.paged_count:
            ReadyQueue.push_many(self, islice(items, room))
        push = self.push
        for item in items:
            push(item)

    def requeue(self, seq: int, item) -> None:
        """Put back a popped pair: to the head (it was popped from there, so its seq is
        below every tail seq), or to the tail's end if :meth:`pop_tail` took it from there."""
        if seq == self._tail_hi:
            self._tail_hi = -1
            if self._pend or self.paged_count:
                if len(self._pend) >= self._out_at:
                    self._page_out()
                self._pend.append((seq, item))
                return
        ReadyQueue.requeue(self, seq, item)

    # -- taking ---------------------------------------------------------------------------

    def pop(self):
        """Remove and return the lowest pair; pages in when the head runs below half the
        window. O(1) amortised, plus a read per half window of pops."""
        if len(self._fresh) + len(self._requeued) <= self.window >> 1 and \
                (self._pend or self.paged_count):
            self._page_in()
        pair = ReadyQueue.pop(self)
        if self._loose and pair is not None:
            m = pair[1][0]
            if not m.store_key:
                self._loose = max(0, self._loose - len(m.body))
        return pair

    def take(self, k: int) -> list:
        """``ReadyQueue.take``: by ``pop`` calls while a tail waits (they page in) or the
        head holds paged-in bodies (they are counted out), else in C as there."""
        if self._pend or self.paged_count or self._loose:
            return self._take_popping(k)
        return ReadyQueue.take(self, k)

    def peek(self):
        if not (self._fresh or self._requeued) and (self._pend or self.paged_count):
            self._page_in()
        return ReadyQueue.peek(self)

    def pop_tail(self):
        """Remove and return the newest pair. O(1), a read if it is in a page file."""
        if self._pend:
            pair = self._pend[-1]
            m = pair[1][0]
            if m.body is None and not m.store_key:  # (push_journaled)
                self.store.adopt_journaled(m, m.size)
            self._pend.pop()
        elif self._run_n and not self._segs:
            run = self._runs[-1]
            mid = run[0] + run[1] - 1
            pair = self._run_pair(mid, self._run_seq + self._run_n - 1)
            run[1] -= 1
            if not run[1]:
                self._runs.pop()
            self._run_n -= 1
            self.paged_count -= 1
            if not self.paged_count:
                self._unpaged()
        elif self.paged_count:
            seg = self._segs[-1]
            n = _LEN.unpack(os.pread(seg.fd, _LEN.size, seg.end - _LEN.size))[0]
            pair = _decode(os.pread(seg.fd, n, seg.end - n), self._names, self._cls)
            # (its body stays on it: it is expired at once or goes back to the tail; one
            # paged out by reference is indexed in the store again, before anything changes)
            if pair[1][0].body is None:
                self.store.adopt_journaled(pair[1][0], pair[1][0].size)
            seg.end -= n
            os.ftruncate(seg.fd, seg.end)
            self._count_out(pair, -1)
            if seg.end == (self._rpos if len(self._segs) == 1 else 0):
                self._drop_seg(-1)
        else:
            return ReadyQueue.pop_tail(self)
        self._tail_hi = pair[0]
        return pair

    def purge(self) -> list:
        """Remove and return every pair still in memory, in order; the page files must have
        been emptied by :meth:`purge_paged` first."""
        assert not self.paged_count
        out = [item for _, item in ReadyQueue.pairs(self)]
        self._fresh.clear()
        self._requeued.clear()
        out.extend(item for _, item in self._pend)
        self._pend.clear()
        self._loose = 0
        return out

    def purge_paged(self, visit) -> int:
        """Drop every paged-out message: ``visit(seqs, msg_ids, sizes)`` is called for each
        run of them (lists, in order) before the files are deleted; returns how many.
        Reads the records' headers only, never builds messages. O(paged)."""
        n = 0
        seq = self._run_seq
        while self._runs:  # (their bytes were never counted: sizes 0)
            first, count = self._runs.popleft()
            for lo in range(first, first + count, 65536):
                k = min(65536, first + count - lo)
                visit(list(range(seq, seq + k)), list(range(lo, lo + k)), [0] * k)
                seq += k
                n += k
        self._run_n = 0
        while self._segs:
            seg = self._segs[0]
            pos = self._rpos
            while pos < seg.end:
                buf = os.pread(seg.fd, min(READ_CHUNK, seg.end - pos), pos)
                seqs, ids, sizes = [], [], []
                p = 0
                while p + _HEAD.size <= len(buf):  # (a record may end past buf: skipped)
                    h = _HEAD.unpack_from(buf, p)
                    seqs.append(h[1])
                    ids.append(h[2])
                    sizes.append(h[10])
                    p += h[0]
                pos += p
                n += len(seqs)
                visit(seqs, ids, sizes)
            self._drop_seg()
        self.paged_count = self.paged_bytes = 0
        self._unpaged()
        return n

    def remove_if(self, predicate) -> list:
        """Not supported with a tail (no queue operation removes from the middle)."""
        if self._pend or self.paged_count:
            raise NotImplementedError("remove_if on a paged queue")
        return ReadyQueue.remove_if(self, predicate)

    def close(self) -> None:
        """Delete the page files (the queue is gone)."""
        while self._segs:
            self._drop_seg()
        self._runs.clear()
        self._run_n = 0
        self.paged_count = self.paged_bytes = 0
        self._unpaged()

    def _unpaged(self) -> None:
        """No message of this queue is in the page files any more (BodyStore.paging)."""
        if self.store is not None:
            self.store.paging.discard(self._id)

    # -- paging ---------------------------------------------------------------------------

    def _page_out(self) -> None:
        """Write the oldest pairs of ``_pend`` to the page files in one write and release
        their bodies: every pair, or the oldest ones up to the first whose PUBLISH record is
        not fsynced yet (see :meth:`_writable`); nothing yet (looked at again after
        ``batch // 8`` more pushes) if fewer than half a batch can go."""
        pend = self._pend
        bodies = self._writable()
        n = len(bodies)
        if n < len(pend) and (not n or n < self.batch >> 1):
            self._out_at = len(pend) + max(1, self.batch >> 3)
            if not self._sync_asked:  # (once until the next write: see _writable)
                self._sync_asked = True
                self.store.sync_journal()
            return
        records = []
        size = 0
        for (seq, item), body in zip(islice(pend, n), bodies, strict=True):
            m = item[0]
            records.append(_encode(seq, m, item[1], body))
            size += m.size if body is None else len(body)
        data = b"".join(records)
        try:
            self._write(data)
        except OSError as e:
            # (disk full...): the tail stays in memory, and is written once it is twice
            # as long (amortised O(1) a push while the writes fail; nothing is lost)
            self._out_at = 2 * len(pend)
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                log.error("cannot page queue messages out to disk, keeping them in memory "
                          "(%d failures): %s", self.write_errors, e)
            return
        self.written_bytes += len(data)
        self.paged_count += n
        self.paged_bytes += size
        store = self.store
        if n == len(pend):
            out = [item[0] for _, item in pend]
            pend.clear()
        else:
            out = [pend.popleft()[1][0] for _ in range(n)]
        self._out_at = len(pend) + self.batch
        self._sync_asked = False
        if store is not None:
            store.paging.add(self._id)  # (see BodyStore.may_touch_disk)
            store.release_many(out)

    def _writable(self) -> list:
        """The bodies to write for the oldest pairs of ``_pend`` that can be paged out now,
        in order (None: by reference to the journal, no body bytes).

        A message whose body the journal holds (store key > 0: persistent on durable queues,
        ``BodyStore.put(journaled=True)``) goes by reference once its PUBLISH record is
        written and fsynced (``BodyStore.journal_prefix``, a run of :attr:`batch` pairs at
        a time, stopping at the first that is not); one that is not yet (a live
        publisher runs ahead of group commit by up to its confirm window) ends the list, so
        it waits in ``_pend`` for its fsync rather than being written whole. Only when
        ``_pend`` reached ``pend_max`` (the journal far behind, or failing) does it and
        everything after it go whole. A pair pushed by :meth:`push_journaled` (no store
        reference, body only in the journal) always goes by reference; other bodies whole."""
        store = self.store
        force = len(self._pend) >= self.pend_max
        whole = False  # (forced, past the first not durable: the rest go whole)
        bodies: list = []
        pairs = iter(self._pend)
        while run := list(islice(pairs, self.batch)):
            # the journal's messages of the run (store key > 0), looked up in one call
            cands = [] if whole else [m for _s, (m, _r) in run
                                      if m.body is None and m.store_key > 0]
            durable = store.journal_prefix(cands) if cands else 0
            seen = 0
            for _seq, (m, _r) in run:
                body = m.body
                if body is None and m.store_key:
                    if m.store_key < 0 or whole:
                        body = m.load_body()
                    else:
                        if seen >= durable:
                            if not force:
                                return bodies
                            whole = True
                            body = m.load_body()
                        seen += 1
                bodies.append(body)
        return bodies

    def _write(self, data: bytes) -> None:
        """Append ``data`` to the last segment (a new one when it is full);
        on an error (a short write included) nothing of ``data`` stays in the files."""
        seg = self._segs[-1] if self._segs else None
        if seg is None or (seg.end and seg.end + len(data) > self.seg_bytes):
            seg = self._new_seg()
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(seg.fd, view[done:], seg.end + done)
        except OSError:
            if seg.end == 0:  # (a segment made for this write: a last one is never empty)
                self._drop_seg(-1)
            elif done:
                try:
                    os.ftruncate(seg.fd, seg.end)
                except OSError:  # (records past seg.end are never read)
                    pass
            raise
        seg.end += len(data)

    def _page_in(self) -> None:
        """Move tail pairs to the head until it holds ``window`` (page files first, then
        ``_pend``)."""
        fresh = self._fresh
        want = self.window - len(fresh) - len(self._requeued)
        names = self._names
        if self._run_n and want > 0:
            want -= self._runs_in(want, fresh)
            if self._run_n:
                return  # (the head is full, or a message the journal cannot serve)
        cls = self._cls
        while want > 0 and self._segs:
            seg = self._segs[0]
            pos = self._rpos
            buf = os.pread(seg.fd, min(READ_CHUNK, seg.end - pos), pos)
            n = _LEN.unpack_from(buf, 0)[0]
            if n > len(buf):
                buf = os.pread(seg.fd, n, pos)
            pairs, p = _decode_many(buf, want, names, cls)
            done = self._adopt_run(pairs)
            stop = done < len(pairs)
            if stop:  # (the record it stopped at stays first in the tail)
                del pairs[done:]
                p = 0
                for _ in range(done):
                    p += _LEN.unpack_from(buf, p)[0]
            if done:
                self.paged_count -= done
                self.paged_bytes -= sum([pair[1][0].size for pair in pairs])
                fresh.extend(pairs)
                if not self.paged_count:
                    self._unpaged()
            want -= done
            self._rpos = pos + p
            if stop:
                return
            if self._rpos >= seg.end:
                self._drop_seg()
        pend = self._pend
        while want > 0 and pend:
            pair = pend[0]
            m = pair[1][0]
            if m.body is None and not m.store_key:  # (push_journaled: see _adopt_run)
                try:
                    self.store.adopt_journaled(m, m.size)
                except OSError as e:
                    log.error("cannot page a message in: %s", e)
                    return
            fresh.append(pend.popleft())
            want -= 1

    def _adopt_run(self, pairs: list) -> int:
        """Give the messages of paged-in ``pairs`` their bodies, in order; returns how many
        got theirs (fewer only if the journal could not serve one paged out by reference:
        a bug, logged; the caller leaves it and the rest in the tail, nothing is lost or
        reordered).

        A body stays on its message while the head's paged-in bodies (``_loose``) stay under
        ``loose_bytes``; beyond, it goes into the body store. For a record by reference the
        first means reading it from the journal now: those of the run are read together
        (``BodyStore.read_journaled``: one ``pread`` per span of neighbouring records instead
        of a store entry and a ``pread`` per delivery); the second indexes it as the
        journal's record again (``BodyStore.adopt_journaled``)."""
        store = self.store
        loose, room = self._loose, self.loose_bytes
        keep = []  # per pair: the body stays on the message
        wanted = []  # (msg_id, size) of the by-reference ones kept: read now
        for _seq, (m, _r) in pairs:
            n = m.size
            k = loose + n <= room or store is None
            if k:
                loose += n
                if m.body is None:
                    wanted.append((m.msg_id, n))
            keep.append(k)
        bodies: list = []
        if wanted:
            try:
                bodies = store.read_journaled(wanted)
            except OSError as e:
                log.warning("cannot read paged messages back from the journal: %s", e)
                bodies = [None] * len(wanted)
        w = 0
        for i, (_seq, (m, _r)) in enumerate(pairs):
            try:
                if keep[i]:
                    if m.body is None:
                        body = bodies[w]
                        w += 1
                        if body is None:  # (not served: the store tries, and raises)
                            store.adopt_journaled(m, m.size)
                            continue
                        m.body = body
                    self._loose += m.size
                elif m.body is None:
                    store.adopt_journaled(m, m.size)
                else:
                    store.put(m, 1)
            except OSError as e:
                log.error("cannot page a message in: %s", e)
                return i
        return len(pairs)

    def _count_out(self, pair, sign: int) -> None:
        self.paged_count += sign
        self.paged_bytes += sign * pair[1][0].size
        if not self.paged_count:
            self._unpaged()

    def _new_seg(self) -> _Seg:
        self._nseg += 1
        path = os.path.join(self.directory, f"q{self._id}-{self._nseg}.page")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        seg = _Seg(fd, path)
        if not self._segs:
            self._rpos = 0
        self._segs.append(seg)
        return seg

    def _drop_seg(self, end: int = 0) -> None:
        """Close and delete the first (``end`` 0) or the last (-1) segment."""
        if end == 0 or len(self._segs) == 1:
            seg = self._segs.popleft()
            self._rpos = 0
        else:
            seg = self._segs.pop()
        os.close(seg.fd)
        try:
            os.unlink(seg.path)
        except FileNotFoundError:
            pass

    # -- looking --------------------------------------------------------------------------

    def pairs(self):
        """Every pair in order, paged ones read back as new messages with their bodies and
        without a body-store reference (tests and checks only: O(n) memory)."""
        yield from ReadyQueue.pairs(self)
        seq = self._run_seq
        for first, count in list(self._runs):
            for mid in range(first, first + count):
                yield self._run_pair(mid, seq, False)
                seq += 1
        for i, seg in enumerate(list(self._segs)):
            pos = self._rpos if i == 0 else 0
            while pos < seg.end:
                n = _LEN.unpack(os.pread(seg.fd, _LEN.size, pos))[0]
                pair = _decode(os.pread(seg.fd, n, pos), self._names, self._cls)
                m = pair[1][0]
                if m.body is None:
                    m.body = self.store.slow.locator.read(m.msg_id, m.size)
                yield pair
                pos += n
        yield from list(self._pend)

    def count(self) -> int:
        """Ready messages, paged out or not (see ``ReadyQueue.count``).  O(1)."""
        return len(self._fresh) + len(self._requeued) + len(self._pend) + self.paged_count

    __len__ = count

    def __bool__(self) -> bool:
        return bool(self._fresh or self._requeued or self._pend or self.paged_count)

    @property
    def loose_held(self) -> int:
        """Bytes of paged-in bodies the head keeps on its messages, outside the body store
        (``_loose``: the memory accounting adds them to the store's)."""
        return self._loose

    @property
    def resident(self) -> int:
        """Ready messages held in memory (head and unwritten tail)."""
        return len(self._fresh) + len(self._requeued) + len(self._pend)

    def __repr__(self) -> str:
        return (f"<PagedReadyQueue {len(self._fresh) + len(self._requeued)} in memory, "
                f"{len(self._pend)} pending, {self.paged_count} paged>")

    def _check(self) -> None:
        """The head's invariants, plus: every tail seq above every head seq, in order, and
        the paged counters equal to the page files' records."""
        ReadyQueue._check(self)
        head = [seq for seq, _ in ReadyQueue.pairs(self)]
        tail = [pair for pair in self.pairs()][len(head):]
        seqs = [seq for seq, _ in tail]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        if head and seqs:
            assert max(head) < seqs[0], (max(head), seqs[0])
        assert all(s < self._next_seq for s in seqs)
        paged = tail[:len(tail) - len(self._pend)]
        assert len(paged) == self.paged_count, (len(paged), self.paged_count)
        assert sum(run[1] for run in self._runs) == self._run_n
        assert sum(len(m.body) for _, (m, _r) in paged[self._run_n:]) == self.paged_bytes
