"""The memory budget: message bodies beyond it spill to disk.

Two pieces:

* :class:`SpillFiles`, a ``MutableMapping[int, bytes]`` over a few append-only files in
  ``<data-dir>/spill/`` (never one file per message). An in-memory index maps a key to one
  packed int (file number, offset, length: one int object per entry instead of a tuple of
  three); values are appended with ``os.write`` to the *active* file and read back with
  ``os.pread``. The active file is rotated once it reaches ``file_bytes``; a file is deleted
  (the active one truncated) as soon as no entry lives in it any more. A file with one
  long-lived entry keeps its whole size on disk: there is no compaction, which is fine for
  queues (they drain in order, so files empty in order). Spilled bodies are transient (a
  persistent message is in the journal too), so the directory is emptied when the store is
  opened: nothing in it survives a restart.

* Bodies of journaled messages (``BodyStore.put(..., journaled=True)``, key ``msg_id``) are
  not written: once their PUBLISH record is durable, eviction indexes a reference into the
  journal segment instead (``journal.reader``: an fd that pins the file's bytes, re-pointed by
  :meth:`SpillFiles.relocate` when compaction moves the record).

* :class:`BodyStore`, the broker's side: ``zict.Buffer(fast=dict, slow=SpillFiles, n=budget,
  weight=len(body))``. ``put`` moves a message's body into the store under a unique key and
  records how many queues hold it (``store_refs``: a message routed to several queues is
  stored once); ``load`` reads it back for a delivery; ``release`` drops one queue's
  reference and deletes the body with the last one. Eviction is zict's LRU: the least
  recently stored bodies (a FIFO queue's head) go to disk first. ``load`` reads a spilled
  body straight from the files without moving it back into memory (zict's ``__getitem__``
  would, and would evict another body to make room): a delivered body is usually acked and
  deleted soon, so promoting it would only write another body to disk.

Thread-safety: zict is not thread-safe, and neither is :class:`SpillFiles`. ``BodyStore.lock``
guards the buffer, the spill files and index, the key counter and every message's
``store_refs``. It is a *leaf* lock but for one: it is taken inside queue and channel locks
(delivery loads a body with both held) and the only lock taken while holding it is the journal
reader's (``SegmentReader.lock``, a leaf), to locate a record on eviction. Disk reads and
writes of spilled bodies happen with it held; they are ``pread``/``write`` calls on open
files (no fsync: the data need not survive a crash), so it is held for microseconds.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

from zict import Buffer
from zict.utils import InsertionSortedSet

__all__ = ["SpillFiles", "BodyStore", "SPILL_DIR"]

log = logging.getLogger("syncmq.spill")

SPILL_DIR = "spill"
MiB = 1 << 20
_LEN_BITS = 40  # length and offset: up to 1 TiB each
_LEN_MASK = (1 << _LEN_BITS) - 1


class _File:
    __slots__ = ("no", "fd", "path", "size", "live")

    def __init__(self, no: int, fd: int, path: str) -> None:
        self.no = no
        self.fd = fd
        self.path = path
        self.size = 0  # bytes appended (the next write's offset)
        self.live = 0  # entries located in this file


class SpillFiles(MutableMapping):
    """``int -> bytes`` stored in a few append-only files; index in memory.

    Costs: ``__setitem__`` one ``write`` (plus an ``open`` when rotating), ``__getitem__`` one
    ``pread``, ``__delitem__`` O(1) (plus an ``unlink`` when a file empties). Not thread-safe:
    :class:`BodyStore` calls it with its lock held.
    """

    def __init__(self, directory: str, file_bytes: int = 64 * MiB) -> None:
        self.directory = directory
        self.file_bytes = max(1, file_bytes)
        # key -> (file no << 80) | (offset << 40) | length, or for a body referenced in the
        # journal -((fd serial << 80) | (offset << 40) | length)
        self._index: dict[int, int] = {}
        self._files: dict[int, _File] = {}
        self._active: _File | None = None
        self._next_no = 0
        self.bytes = 0  # live bytes in the spill files (sum of their lengths in the index)
        self.written_bytes = 0  # bytes ever written to the spill files
        # Bodies already in the journal (see BodyStore.put): a positive key is a ``msg_id``;
        # ``locator`` (journal.reader.SegmentReader, duck-typed) finds its PUBLISH record.
        self.locator: Any = None
        self._jfds: dict[int, list] = {}  # fd serial -> [SegmentFd, entries referencing it]
        self.journal_bytes = 0  # live bytes referenced in the journal
        self.journal_count = 0  # entries referenced in the journal

    def open(self) -> None:
        """Create the directory and delete whatever a previous run left in it."""
        os.makedirs(self.directory, exist_ok=True)
        for name in os.listdir(self.directory):
            if name.endswith((".spill", ".page")):  # (.page: queues.paged)
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass

    def _new_file(self) -> _File:
        no = self._next_no
        self._next_no = no + 1
        path = os.path.join(self.directory, f"{no:08d}.spill")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        f = self._files[no] = _File(no, fd, path)
        return f

    def __setitem__(self, key: int, value: bytes) -> None:
        if key in self._index:
            del self[key]
        if key > 0 and self.locator is not None:
            loc = self.locator.locate(key, len(value))
            if loc is not None:  # in the journal already: keep a reference, write nothing
                self._add_ref(key, loc[0], loc[1], len(value))
                return
        f = self._active
        if f is None or f.size >= self.file_bytes:
            if f is not None and f.live == 0:
                self._drop(f)
            f = self._active = self._new_file()
        offset = f.size
        view = memoryview(value)
        n = len(view)
        done = 0
        while done < n:
            done += os.pwrite(f.fd, view[done:], offset + done)
        f.size = offset + n
        f.live += 1
        self.bytes += n
        self.written_bytes += n
        self._index[key] = (f.no << (2 * _LEN_BITS)) | (offset << _LEN_BITS) | n

    def _add_ref(self, key: int, sfd: Any, offset: int, n: int) -> None:
        """Index ``key`` as ``n`` bytes at ``offset`` of the journal segment open as ``sfd``."""
        serial = sfd.serial
        ent = self._jfds.get(serial)
        if ent is None:
            self._jfds[serial] = [sfd, 1]
        else:
            ent[1] += 1
        self.journal_bytes += n
        self.journal_count += 1
        self._index[key] = -((serial << (2 * _LEN_BITS)) | (offset << _LEN_BITS) | n)

    def _drop_ref(self, loc: int) -> None:
        loc = -loc
        serial = loc >> (2 * _LEN_BITS)
        ent = self._jfds[serial]
        ent[1] -= 1
        if ent[1] == 0:
            del self._jfds[serial]  # the fd closes once the journal's cache forgot it too
        self.journal_bytes -= loc & _LEN_MASK
        self.journal_count -= 1

    def relocate(self, old: dict[int, Any], new: Any, moves: list[tuple[int, int, int, int]]
                 ) -> int:
        """Compaction moved ``(msg_id, old_seg, old_off, new_off)`` records into the file open
        as ``new``; ``old`` maps each replaced segment number to its fd. Re-point the
        references that were into those fds; returns how many."""
        if new is None or not self._jfds:
            return 0
        old_serials = {seg: f.serial for seg, f in old.items() if f.serial in self._jfds}
        if not old_serials:
            return 0
        index = self._index
        n_moved = 0
        shift = 2 * _LEN_BITS
        for mid, old_seg, old_off, new_off in moves:
            serial = old_serials.get(old_seg)
            if serial is None:
                continue
            loc = index.get(mid)
            if loc is None or loc >= 0:
                continue
            p = -loc
            if p >> shift != serial:
                continue  # taken after the move (already points at the new file)
            offset = (p >> _LEN_BITS) & _LEN_MASK
            n = p & _LEN_MASK
            self._drop_ref(loc)
            self._add_ref(mid, new, offset - old_off + new_off, n)
            n_moved += 1
        return n_moved

    def __getitem__(self, key: int) -> bytes:
        loc = self._index[key]
        if loc < 0:
            p = -loc
            return self._jfds[p >> (2 * _LEN_BITS)][0].pread(
                p & _LEN_MASK, (p >> _LEN_BITS) & _LEN_MASK)
        n = loc & _LEN_MASK
        offset = (loc >> _LEN_BITS) & _LEN_MASK
        f = self._files[loc >> (2 * _LEN_BITS)]
        data = os.pread(f.fd, n, offset)
        if len(data) != n:  # a short read means the file was damaged under us
            raise OSError(f"spill file {f.path}: short read at {offset} ({len(data)} of {n})")
        return data

    def __delitem__(self, key: int) -> None:
        loc = self._index.pop(key)
        if loc < 0:
            self._drop_ref(loc)
            return
        self.bytes -= loc & _LEN_MASK
        f = self._files[loc >> (2 * _LEN_BITS)]
        f.live -= 1
        if f.live == 0:
            if f is self._active:
                # empty again: start it over rather than rotating
                os.ftruncate(f.fd, 0)
                f.size = 0
            else:
                self._drop(f)

    def _drop(self, f: _File) -> None:
        del self._files[f.no]
        if f is self._active:
            self._active = None
        os.close(f.fd)
        try:
            os.unlink(f.path)
        except FileNotFoundError:
            pass

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._index))

    def __len__(self) -> int:
        return len(self._index)

    def file_count(self) -> int:
        return len(self._files)

    def disk_bytes(self) -> int:
        """Bytes in the spill files (live and dead)."""
        return sum(f.size for f in self._files.values())

    def close(self) -> None:
        """Close and delete every file (spilled bodies never survive a restart). The paged
        queues' files beside them are their queues' (``Broker.close_pages`` closes them
        first); :meth:`open` deletes whatever a previous run left."""
        for f in list(self._files.values()):
            self._drop(f)
        self._index.clear()
        self._jfds.clear()
        self.bytes = 0
        self.journal_bytes = 0
        self.journal_count = 0

    def _check(self) -> None:
        """Invariants (tests)."""
        live: dict[int, int] = {}
        total = 0
        refs: dict[int, int] = {}
        jtotal = 0
        for loc in self._index.values():
            if loc < 0:
                serial = -loc >> (2 * _LEN_BITS)
                refs[serial] = refs.get(serial, 0) + 1
                jtotal += -loc & _LEN_MASK
                continue
            no = loc >> (2 * _LEN_BITS)
            live[no] = live.get(no, 0) + 1
            total += loc & _LEN_MASK
            assert ((loc >> _LEN_BITS) & _LEN_MASK) + (loc & _LEN_MASK) <= self._files[no].size
        assert total == self.bytes
        assert jtotal == self.journal_bytes and sum(refs.values()) == self.journal_count
        assert {k: v[1] for k, v in self._jfds.items()} == refs
        for no, f in self._files.items():
            assert f.live == live.get(no, 0), (no, f.live, live.get(no, 0))
            assert f.live > 0 or f is self._active


_INTERN_MAX = 4096
_INTERN_PROPS_BYTES = 256
# compacted(): containers smaller than SHRINK_MIN bytes are left alone; a table is oversized
# beyond SHRINK_ENTRY bytes per entry (generous: an OrderedDict entry costs ~100), 8 times
# over; SHRINK_MAX_ENTRIES bounds the O(len) rebuild (the store's lock is held meanwhile).
SHRINK_MIN = 256 * 1024
SHRINK_ENTRY = 128
SHRINK_MAX_ENTRIES = 1 << 16


def compacted(c: Any) -> Any:
    """``c`` itself, or a rebuilt copy (same type, same order) when its table is mostly empty.

    A dict, OrderedDict or set keeps the table of its largest size after its keys are deleted
    (CPython shrinks only on insert-driven resizes, never on deletion): after a backlog of N
    messages drained, each per-message index keeps ~40-60 bytes times N (measured: 9 MiB of
    empty tables after 126,000 messages), for the life of the process. O(len(c))."""
    size = sys.getsizeof(c)
    n = len(c)
    if size <= SHRINK_MIN or size <= 8 * SHRINK_ENTRY * n or n > SHRINK_MAX_ENTRIES:
        return c
    return type(c)(c)


def _intern(table: dict, value: Any) -> Any:
    """``value`` or an equal object seen before (``table`` holds at most _INTERN_MAX)."""
    v = table.get(value)
    if v is not None:
        return v
    if len(table) < _INTERN_MAX:
        table[value] = value
    return value


def _weight(_key: int, value: bytes) -> int:
    return len(value)


class _OrderedKeys(InsertionSortedSet):
    """zict's insertion-ordered set over an ``OrderedDict`` instead of a ``dict``.

    zict's LRU finds the key to evict with ``next(iter(order))``. On a ``dict`` whose oldest
    keys keep being deleted that scans every deleted slot left at the front until the next
    resize: O(keys in memory) per eviction (measured: 70 us per put with a 64 MiB budget of
    1 KiB bodies, against 8 us). An ``OrderedDict`` is a linked list: O(1)."""

    __slots__ = ()

    def __init__(self, other: Iterable = ()) -> None:
        self._d = OrderedDict.fromkeys(other)


class BodyStore:
    """Message bodies of queued messages, within a memory budget (see the module docstring).

    Every public method takes :attr:`lock` (a leaf lock) and is O(1) plus the disk access it
    needs (eviction on ``put`` writes what no longer fits; ``load`` of a spilled body reads it).
    """

    def __init__(self, directory: str, budget: int, file_bytes: int | None = None) -> None:
        if file_bytes is None:
            # files of about the budget, 4..64 MiB: a drained file is deleted soon
            file_bytes = min(64 * MiB, max(4 * MiB, budget))
        self.budget = budget
        # classic queues keep at most this many ready messages in memory and page the rest
        # out to files beside the spill files (queues.paged; 0: off). Set before any queue
        # exists (the server, from --queue-page-window).
        self.page_window = 0
        # ids of the paged queues (queues.paged) with messages in their page files: added
        # and discarded by each queue under its own lock (set.add/discard are atomic), read
        # by may_touch_disk without a lock
        self.paging: set[int] = set()
        self.slow = SpillFiles(directory, file_bytes)
        self.buffer: Buffer = Buffer({}, self.slow, n=budget, weight=_weight)
        self._fast = self.buffer.fast  # zict.LRU over the dict
        self._fast.order = _OrderedKeys(self._fast.order)
        self._fast.heavy = _OrderedKeys(self._fast.heavy)
        self._keys = itertools.count(1)
        # Guards the buffer, the spill files, the key counter and messages' ``store_refs``
        # (zict is not thread-safe). Leaf lock: taken inside queue and channel locks.
        self.lock = threading.Lock()
        self._write_errors = 0
        # Interning of what a backlog repeats in every message (see put): body sizes, raw
        # property bytes, routing keys. Bounded: past _INTERN_MAX entries nothing new is added.
        self._sizes: dict[int, int] = {}
        self._props: dict[bytes, bytes] = {}
        self._keys_rk: dict[str, str] = {}

    def open(self) -> None:
        """Create ``<data-dir>/spill`` and empty it (call once the data dir is locked)."""
        self.slow.open()

    def attach_journal(self, reader: Any) -> None:
        """Let bodies of journaled messages be evicted to references into the journal
        (``journal.reader.SegmentReader``) instead of spill files; call before any put."""
        self.slow.locator = reader
        reader.on_relocate = self._relocated

    def _relocated(self, old: dict[int, Any], new: Any, moves: list) -> None:
        """Compaction moved journal records (journal thread): re-point our references."""
        with self.lock:
            self.slow.relocate(old, new, moves)

    def put(self, message: Any, refs: int, journaled: bool = False) -> None:
        """Move ``message.body`` into the store for ``refs`` queues (refs >= 1).

        ``journaled``: every one of the ``refs`` queues is named by the message's PUBLISH
        record (``message.msg_id``): if the body is evicted once that record is written and
        fsynced, it is not written again but read back from the journal (``msg_id`` is then
        its key; other bodies get negative keys). Otherwise, or before that, it spills to the spill files.

        Call before the message is visible to any queue: it sets ``store_key``, ``store``,
        ``store_refs``, ``size`` (interned) and then ``body = None``, and drops the message's
        decoded-properties cache (144+ bytes a message in a backlog; decoded again if a
        queue needs a property)."""
        body = message.body
        with self.lock:
            if journaled and message.msg_id and self.slow.locator is not None:
                key = message.msg_id  # shares the message's int: no extra object
                if key in self.buffer:
                    # never replace another entry (its references would then count for
                    # this one): a body is stored once per message, with a reference per
                    # queue, so this is a bug elsewhere; keep both, the new one unjournaled
                    log.error("message body %d stored twice", key)
                    key = -next(self._keys)
            else:
                key = -next(self._keys)
            try:
                self.buffer[key] = body
            except OSError as e:
                # eviction failed (disk full...): zict kept everything in memory
                self._write_errors += 1
                if self._write_errors == 1 or self._write_errors % 10000 == 0:
                    log.error("cannot spill message bodies to disk, keeping them in memory "
                              "(%d failures): %s", self._write_errors, e)
            self._adopt_locked(message, key, refs, len(body))

    def put_journaled(self, message: Any, body_len: int, refs: int = 1) -> bool:
        """Recovery: index the body of journaled ``message`` (on ``refs`` queues, each named
        in its PUBLISH record; one ``Message`` shared by them, as :meth:`put`), which was never
        read into memory, as a reference into the journal (``body_len`` bytes). False if the
        journal cannot locate it: load the body and :meth:`put` it instead."""
        with self.lock:
            locator = self.slow.locator
            loc = locator.locate(message.msg_id, body_len) if locator is not None else None
            if loc is None:
                return False
            key = message.msg_id
            if key in self.buffer:
                return False  # a duplicate id: keep the first, load this one (put: own key)
            self.slow._add_ref(key, loc[0], loc[1], body_len)
            self._adopt_locked(message, key, refs, body_len)
        return True

    def in_journal(self, message: Any) -> bool:
        """Whether the body of stored ``message`` can be read back from the journal now (its
        PUBLISH record is live, written and fsynced): a paged queue then writes a page record
        without the body (``queues/paged.py``) and :meth:`adopt_journaled` indexes it again
        at page-in. Its journal record stays live while the message is on any queue, and
        compaction moves are looked up by id, so a later lookup finds it too (any thread)."""
        locator = self.slow.locator
        return (locator is not None and message.msg_id > 0 and message.store_key > 0
                and locator.locate(message.msg_id, message.size) is not None)

    def journal_prefix(self, messages: list[Any]) -> int:
        """How many of the leading stored ``messages`` (each keyed by its msg id: ``put(...,
        journaled=True)``) are :meth:`in_journal` now, stopping at the first that is not
        (``SegmentReader.durable_prefix``: one lock hold for a run, no fd)."""
        locator = self.slow.locator
        if locator is None:
            return 0
        return locator.durable_prefix([(m.msg_id, m.size) for m in messages])

    def sync_journal(self) -> bool:
        """Ask the journal for an fsync of what it was given so far, not waiting for it
        (``SegmentReader.request_sync``): a paged queue's tail then becomes :meth:`in_journal`
        without a confirm or a segment's end. False if no journal or nothing asked."""
        locator = self.slow.locator
        return locator is not None and locator.request_sync()

    def read_journaled(self, wanted: list[tuple[int, int]]) -> list[bytes | None]:
        """Bodies ``(msg_id, body_len)`` read from the journal now (``SegmentReader.
        read_many``: a span of neighbouring records at a time), None for one it does not
        hold (live, durable); a paged queue's page-in keeps them on its messages. Does not
        touch the store (no lock). Raises ``OSError`` on a read error."""
        locator = self.slow.locator
        if locator is None:
            return [None] * len(wanted)
        return locator.read_many(wanted)

    def adopt_journaled(self, message: Any, body_len: int) -> None:
        """Page-in of a message paged out by reference (:meth:`in_journal`): index its body
        as the journal's record (:meth:`put_journaled`), or, if its id is in the store already
        (another queue's copy of the message), read it back and :meth:`put` it under its own
        key. Raises ``OSError`` if the journal cannot give it back (not live: a bug)."""
        if self.put_journaled(message, body_len):
            return
        body = self.slow.locator.read(message.msg_id, body_len)
        if body is None:
            raise OSError(f"journaled message {message.msg_id} is not in the journal")
        message.body = body
        self.put(message, 1)

    def _adopt_locked(self, message: Any, key: int, refs: int, size: int) -> None:
        """The message's body is now in the store under ``key`` (lock held)."""
        message.store_key = key
        message.store = self
        message.store_refs = refs
        message.size = _intern(self._sizes, size)  # (equal ints shared in a backlog)
        message.body = None
        # the decoded properties (cached when the publisher set delivery-mode or
        # expiration) cost more than the raw bytes kept beside them: decoded again on use
        message._props = None
        # a queued message's own copies of its property bytes and routing key cost ~90
        # bytes; a publisher mostly repeats a few of them: share equal ones (the message
        # is not visible to any queue yet, and an equal object changes nothing)
        props = message.properties
        if len(props) <= _INTERN_PROPS_BYTES:
            message.properties = _intern(self._props, props)
        message.routing_key = _intern(self._keys_rk, message.routing_key)

    def load(self, message: Any) -> bytes:
        """The body of a stored message (read from disk if spilled; not moved back)."""
        key = message.store_key
        with self.lock:
            d = self._fast.d
            body = d.get(key)
            if body is None:
                body = self.slow[key]
        return body

    def release(self, message: Any) -> None:
        """One queue is done with ``message``; the last one deletes its body. A message that
        was never stored (``store_key`` 0) is ignored."""
        if not message.store_key:
            return
        with self.lock:
            self._release_locked(message)

    def release_many(self, messages: Iterable[Any]) -> None:
        with self.lock:
            for m in messages:
                if m.store_key:
                    self._release_locked(m)

    def _release_locked(self, message: Any) -> None:
        refs = message.store_refs - 1
        message.store_refs = refs
        if refs == 0:
            try:
                del self.buffer[message.store_key]
            except KeyError:
                log.error("message body %d missing from the store", message.store_key)
        elif refs < 0:
            log.error("message body %d released once too often", message.store_key)

    def shrink(self) -> int:
        """Rebuild the index containers left oversized by a drained backlog (see
        :func:`compacted`); returns how many were rebuilt. The memory monitor calls it (reactor
        thread) before ``malloc_trim`` when RSS is well above what is accounted. Takes the
        lock only if it is free: the reactor must not wait for a holder's disk read or write
        (as :meth:`memory_bytes`); busy, it rebuilds nothing (0) and the next trim tries
        again. O(entries) only for a container 8 times too large, and at most
        SHRINK_MAX_ENTRIES."""
        if not self.lock.acquire(blocking=False):
            return 0
        done = 0
        try:
            fast, slow = self._fast, self.slow
            for owner, attr in ((fast, "d"), (fast, "weights"), (fast.order, "_d"),
                                (fast.heavy, "_d"), (slow, "_index")):
                old = getattr(owner, attr)
                new = compacted(old)
                if new is not old:
                    setattr(owner, attr, new)
                    done += 1
        finally:
            self.lock.release()
        return done

    def may_touch_disk(self) -> bool:
        """A put may evict to disk or a delivery read a body or page back: bodies are
        spilled, a queue has paged messages out, or the bodies in memory are past half the
        budget. Racy reads without the lock (a hint for the reactor thread, which must not do
        disk I/O: ``methods.hand_over``)."""
        return bool(len(self.slow) or self.paging
                    or self._fast.total_weight > self.budget // 2)

    def memory_bytes(self) -> int:
        """Bytes of bodies in memory, read without the lock (one attribute read: an estimate
        for memory accounting on the reactor thread, which must not wait for a disk I/O)."""
        return int(self._fast.total_weight)

    def stats(self) -> dict[str, int]:
        """Counters for logs, the management API and tests."""
        with self.lock:
            return {
                "budget": self.budget,
                "messages": len(self._fast.d) + len(self.slow),
                "memory_bytes": int(self._fast.total_weight),
                "spilled_messages": len(self.slow),
                "spilled_bytes": self.slow.bytes,
                "spill_files": self.slow.file_count(),
                "spill_file_bytes": self.slow.disk_bytes(),
                "spill_written_bytes": self.slow.written_bytes,
                "journal_messages": self.slow.journal_count,
                "journal_bytes": self.slow.journal_bytes,
                "journal_fds": len(self.slow._jfds),
            }

    def close(self) -> None:
        with self.lock:
            self.slow.close()
