"""Recovery: rebuild the durable state from the segment files.

:func:`recover_dir` is what :meth:`Journal.recover` runs. In order:

1. Delete leftover compaction outputs (``*.seg.tmp``): they were never renamed into place, so
   the files they were copying from are all still there.
2. Read every segment header. A file whose header says ``covers_from = a`` stands for the
   segments ``a..no-1``; any of those still present are stale (compaction crashed after its
   rename and before its deletes) and are deleted unread.
3. Replay the remaining segments in ascending order, record by record, into a
   :class:`~syncmq.journal.state.JournalState`. At the first torn or corrupt record (or segment
   header), the file is truncated at the end of the last good record (fsynced), every later
   segment is deleted, and one log line says what was dropped (bytes, segments). A record
   with a good CRC whose payload does not decode was written whole by someone: it is skipped
   and logged, not treated as a tear.
4. Messages left on queues that do not exist are dropped (counted in the stats).

Clean stops: :meth:`Journal.close` writes the ``CLEAN`` marker file once everything is written
and fsynced without an I/O error; :meth:`Journal.recover` takes it away (durably) before the
journal accepts anything, and reports ``RecoveredState.clean``. Without it (a crash, kill -9, a
power loss, a failed journal) any recovered message may have been delivered although its
DELIVERED record did not reach the disk, so the broker flags them all ``redelivered``.

The result, :class:`RecoveredState`, lists what is declared (minus what was deleted) and, per
durable queue, its live messages in publish order, with ``delivered`` set where a DELIVERED
record was seen for that queue (the broker should then set ``redelivered``). One message routed
to several queues appears once per queue, sharing the same ``properties`` and ``body`` objects.

Cost: one sequential read of each segment; O(records) time, memory O(live messages + entities
+ dead PUBLISH records still on disk) for the journal state (``msgtable.py``: ~32 bytes a
live message). With ``stream=True`` (the broker's start-up) each queue's messages are decoded
one at a time as the broker takes them, and a segment map's pages leave RSS once it is
replayed and once a queue has read past it, so the peak is the live state plus one message,
not every recovered message (``bench/journal_recovery.py``).
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

from . import format as fmt
from .idruns import IdRuns
from .state import JournalState, Segment

__all__ = ["RecoveredMessage", "RecoveredQueue", "RecoveredState", "RecoveryStats",
           "recover_dir", "list_segments", "fsync_dir", "CLEAN_MARKER", "take_clean_marker",
           "write_clean_marker"]

log = logging.getLogger("syncmq.journal")

_HEADER_ID = struct.Struct(">IIBQ")  # a record header and a PUBLISH payload's id


@dataclass(slots=True)
class RecoveredMessage:
    """One live message on one queue."""

    msg_id: int
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes | None  # None: left in the journal (``recover_dir(load_bodies=False)``)
    delivered: bool
    #: wall-clock ms of the original publish when a TTL applies (PUBLISH_AT), else 0
    published_ms: int = 0
    body_len: int = 0
    #: how many recovered queues hold this message (the broker shares one ``Message``)
    copies: int = 1


@dataclass(slots=True)
class RecoveredQueue:
    """A durable queue as last declared, with its live messages in publish order: in
    ``messages``, or (``recover_dir(stream=True)``) produced one at a time by
    :meth:`iter_messages`, ``count`` of them."""

    vhost: str
    name: str
    flags: int
    arguments: bytes
    messages: list[RecoveredMessage] = field(default_factory=list)
    count: int = 0
    #: streamed: the ids of ``count`` messages in publish order (``IdRuns``); the broker may
    #: take the first few through :meth:`iter_messages` and hand the rest over as id runs
    ids: IdRuns | None = None
    #: streamed: no message of this queue is also on another queue (``MessageTable.alone_on``)
    alone: bool = False
    #: streamed: ``delivered_runs(first, count)``, the ids of that run already marked
    #: delivered on this queue, as runs (``MessageTable.delivered_runs``; before the start)
    delivered_runs: Callable[[int, int], list[tuple[int, int]]] | None = None
    _stream: Callable[[], Iterator[RecoveredMessage]] | None = None

    def iter_messages(self) -> Iterator[RecoveredMessage]:
        """The queue's messages in publish order (streamed: once, before the journal starts)."""
        if self._stream is None:
            return iter(self.messages)
        stream, self._stream = self._stream, None
        return stream()


@dataclass(slots=True)
class RecoveryStats:
    segments: int = 0  # segment files replayed
    records: int = 0  # records replayed (valid CRC)
    bytes: int = 0  # bytes replayed, file headers included
    skipped_records: int = 0  # valid CRC but undecodable payload
    truncated_bytes: int = 0  # cut off the torn/corrupt tail
    dropped_segments: int = 0  # whole segments deleted after the tear
    stale_segments: int = 0  # superseded by a compaction output, deleted
    tmp_files: int = 0  # leftover compaction outputs deleted
    orphaned_messages: int = 0  # (message, queue) pairs on queues that do not exist
    duplicate_publishes: int = 0  # PUBLISH records with an id already live (ignored)
    live_messages: int = 0  # distinct live messages
    seconds: float = 0.0


@dataclass(slots=True)
class RecoveredState:
    """What the broker rebuilds from. Entities come in the order they were (first) declared."""

    vhosts: list[str]
    exchanges: list[fmt.ExchangeDeclare]
    queues: list[RecoveredQueue]
    bindings: list[fmt.BindingAdd]
    next_msg_id: int
    stats: RecoveryStats
    #: the last run stopped cleanly (its CLEAN marker was there, see :func:`take_clean_marker`);
    #: False after a crash, a kill or a power loss: any message may have been delivered
    clean: bool = True
    #: runtime parameters (PARAM_SET records, the current value of each) and global ones
    parameters: list[fmt.ParamSet] = field(default_factory=list)
    global_parameters: list[fmt.GlobalSet] = field(default_factory=list)
    #: the segment maps the streamed queues read from (closed by :meth:`release`)
    images: dict[int, mmap.mmap] = field(default_factory=dict)

    def release(self) -> None:
        """Close the segment maps of a streamed recovery (its queues are read)."""
        images, self.images = self.images, {}
        for image in images.values():
            image.close()

    def queue(self, vhost: str, name: str) -> RecoveredQueue | None:
        """The recovered queue ``vhost``/``name``, or None (O(queues))."""
        for q in self.queues:
            if q.vhost == vhost and q.name == name:
                return q
        return None


def fsync_dir(path: str) -> None:
    """fsync a directory so that file creations, renames and deletions in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Written by a journal that closed cleanly (everything written and fsynced, no I/O error),
#: removed by the next recovery before anything else happens (see ``take_clean_marker``).
CLEAN_MARKER = "CLEAN"


def take_clean_marker(data_dir: str) -> bool:
    """Whether the previous run stopped cleanly; removes the marker (and makes the removal
    durable) so that a crash of this run is seen as one by the next recovery."""
    path = os.path.join(data_dir, CLEAN_MARKER)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(data_dir)
    return True


def write_clean_marker(data_dir: str) -> None:
    """Mark a clean stop: called once the journal's last records are fsynced."""
    path = os.path.join(data_dir, CLEAN_MARKER)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(data_dir)


def list_segments(data_dir: str) -> tuple[dict[int, str], list[str]]:
    """``({segment_no: path}, [tmp paths])`` of the files in ``data_dir``."""
    segs: dict[int, str] = {}
    tmps: list[str] = []
    for name in os.listdir(data_dir):
        no = fmt.parse_segment_name(name)
        if no is not None:
            segs[no] = os.path.join(data_dir, name)
        elif name.endswith(fmt.TMP_SUFFIX):
            tmps.append(os.path.join(data_dir, name))
    return segs, tmps


def _read_header(path: str) -> tuple[int, int] | str:
    try:
        with open(path, "rb") as f:
            data = f.read(fmt.FILE_HEADER.size)
        return fmt.decode_file_header(data)
    except fmt.FormatError as exc:
        return str(exc)



def _remove_leftovers(segs: dict[int, str], tmps: list[str],
                      stats: RecoveryStats) -> tuple[dict, bool]:
    """Delete unfinished compaction outputs and the segments a finished compaction
    superseded (removed from ``segs``); returns every remaining segment's header (or why it
    is unreadable) and whether the directory changed (the caller fsyncs it)."""
    changed_dir = False
    for path in tmps:
        os.unlink(path)
        stats.tmp_files += 1
        changed_dir = True
    if tmps:
        log.info("journal recovery: deleted %d unfinished compaction output(s)", len(tmps))

    headers: dict[int, tuple[int, int] | str] = {no: _read_header(p) for no, p in segs.items()}
    stale: set[int] = set()
    for no, h in headers.items():
        if isinstance(h, tuple) and h[0] == no and h[1] < no:
            stale.update(n for n in segs if h[1] <= n < no)
    for no in sorted(stale):
        os.unlink(segs.pop(no))
        stats.stale_segments += 1
        changed_dir = True
    if stale:
        log.info("journal recovery: deleted %d segment(s) superseded by compaction", len(stale))
    return headers, changed_dir


def recover_dir(data_dir: str, load_bodies: bool = True,
                stream: bool = False) -> tuple[RecoveredState, JournalState]:
    """Recover ``data_dir`` (which must exist and be locked by the caller); see the module
    docstring. Returns the broker-facing state and the journal's liveness state.

    ``stream``: the queues' messages are decoded one at a time by
    :meth:`RecoveredQueue.iter_messages` (from the journal state and the segment maps, which
    the result keeps until :meth:`RecoveredState.release`), so memory holds the live state and
    the message being handed over, not every recovered message at once; they must be read
    before the journal state changes (before ``Journal.start``)."""
    t0 = time.perf_counter()
    stats = RecoveryStats()
    state = JournalState()
    segs, tmps = list_segments(data_dir)
    # Pass 1 replays every segment decoding only PUBLISH heads; pass 2 (_build) decodes the
    # live messages' records from these read-only maps, so dead bodies are never copied.
    images: dict[int, mmap.mmap] = {}
    headers, changed_dir = _remove_leftovers(segs, tmps, stats)

    order = sorted(segs)
    for i, no in enumerate(order):
        path = segs[no]
        h = headers[no]
        if not isinstance(h, tuple) or h[0] != no:
            why = h if isinstance(h, str) else f"header names segment {h[0]}"
            _drop_from(order[i:], segs, stats, f"segment {no:016x}: bad header ({why})",
                       last=(i == len(order) - 1))
            changed_dir = True
            break
        seg = state.add_segment(no, h[1])
        with open(path, "rb") as f:
            data = images[no] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        stats.segments += 1
        n_records, good_end, problem = _replay(state, data, seg, path, stats)
        _drop_pages(data)  # its pages are read again (live records only) by the build
        stats.records += n_records
        stats.bytes += good_end
        if problem is not None:
            cut = len(data) - good_end
            later = order[i + 1 :]
            later_bytes = sum(os.path.getsize(segs[n]) for n in later)
            data.close()  # never touch pages past a truncation (SIGBUS)
            with open(path, "r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
                images[no] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            for n in later:
                os.unlink(segs[n])
            stats.truncated_bytes += cut
            stats.dropped_segments += len(later)
            changed_dir = changed_dir or bool(later)
            level = logging.WARNING if not later else logging.ERROR
            log.log(level, "journal recovery: %s at %s offset %d: truncated %d byte(s) after "
                    "%d good record(s); dropped %d later segment(s) (%d bytes)", problem,
                    path, good_end, cut, n_records, len(later), later_bytes)
            break
    if changed_dir:
        fsync_dir(data_dir)

    stats.orphaned_messages = state.kill_orphans()
    stats.duplicate_publishes = state.duplicate_publishes
    ok = False
    try:
        result = _build(state, stats, images, load_bodies, stream)
        ok = True
    finally:
        if not (ok and stream):
            for image in images.values():
                image.close()
    stats.seconds = time.perf_counter() - t0
    return result, state


def _publish_run(state: JournalState, run0: int, vhost: str, queues: tuple, seg: Segment,
                 offs: array, sizes: array) -> None:
    """Apply a run :func:`_replay` gathered: ids ``run0..``, records at ``offs``/``sizes``."""
    seg.size += sum(sizes)
    state.publish_run(range(run0, run0 + len(offs)), vhost, queues, seg, offs, sizes)


def _apply_record(apply: Callable, data: mmap.mmap, pos: int, end: int, rtype: int,
                  seg: Segment, path: str, stats: RecoveryStats) -> tuple | None:
    """:func:`_replay`'s step for a record that does not extend the pending run (not on a
    backlog's per-message path): a PUBLISH is decoded and returned as the head of a new run,
    ``(id, vhost, queues, head length, head bytes)``; any other record is applied; an
    undecodable one is counted and logged (None)."""
    hsize = fmt.RECORD_HEADER.size
    try:
        if rtype == fmt.T_PUBLISH or rtype == fmt.T_PUBLISH_AT:
            mid, vhost, queues = fmt.decode_publish_head(data, pos + hsize, end)
            hlen = 2 + sum(2 + len(x.encode()) for x in (vhost, *queues))
            p = pos + hsize + 8
            return mid, vhost, queues, hlen, data[p : p + hlen]
        apply(rtype, data, pos, end - pos - hsize, seg)
    except (fmt.FormatError, UnicodeDecodeError) as exc:
        if rtype == fmt.T_PUBLISH or rtype == fmt.T_PUBLISH_AT:
            seg.size += end - pos  # (apply counts the others' before decoding)
        stats.skipped_records += 1
        log.warning("journal recovery: skipped undecodable %s record at %s:%d (%s)",
                    fmt.TYPE_NAMES.get(rtype, f"type-{rtype}"), path, pos, exc)
    return None


def _replay(state: JournalState, data: mmap.mmap, seg: Segment, path: str,
            stats: RecoveryStats) -> tuple[int, int, str | None]:
    """Apply every whole record of one segment image; the loop of ``format.iter_records``
    fused with ``JournalState.apply`` (the hot path of recovery). Returns ``(records,
    good_end, problem)`` as ``iter_records`` does.

    PUBLISH records of consecutive ids with the same ``(vhost, queues)`` (a backlog) are
    gathered into a run (their offsets and sizes) and applied as one
    (``JournalState.publish_run``), before any other record and at the end: the table takes
    a run in bulk, so a message costs this loop's few steps, not a table insert (#22)."""
    size = len(data)
    pos = fmt.FILE_HEADER.size
    hsize = fmt.RECORD_HEADER.size
    unpack = fmt.RECORD_HEADER.unpack_from
    crc32 = zlib.crc32
    mv = memoryview(data)
    apply = state.apply
    flush = partial(_publish_run, state)
    T_PUBLISH, T_PUBLISH_AT = fmt.T_PUBLISH, fmt.T_PUBLISH_AT
    unpack_id = _HEADER_ID.unpack_from
    hlen, hbytes, vhost, queues = 0, None, "", ()  # the last PUBLISH's (vhost, queues)
    # the pending run: ids run0.., records at offs/sizes (arrays: 8 bytes a record, no int)
    run0, offs, sizes = 0, array("Q"), array("Q")
    n = 0
    problem = None
    unit_end = 0  # end of the TX unit being replayed (checked whole before its first record)
    try:
        while pos < size:
            if pos + hsize > size:
                problem = "torn record header"
                break
            if pos + hsize + 8 <= size:  # the header and a PUBLISH's id in one call
                length, crc, rtype, mid = unpack_id(data, pos)
            else:
                length, crc, rtype = unpack(data, pos)
            end = pos + hsize + length
            if length > fmt.MAX_PAYLOAD or end > size:
                problem = "record runs past the end of the file"
                break
            if crc32(mv[pos + 8 : end]) != crc:
                problem = "record CRC mismatch"
                break
            if rtype == fmt.T_TX and pos >= unit_end:
                # a transaction: all of its records, or none (cut off with its TX record)
                tx_end = fmt.tx_unit_end(data, pos, size)
                if tx_end is None:
                    problem = "incomplete transaction"
                    break
                unit_end = tx_end
            n += 1
            if rtype == T_PUBLISH or rtype == T_PUBLISH_AT:
                # a backlog repeats one (vhost, queues): the same bytes after the id decode
                # the same (length-prefixed fields), so only the id is unpacked
                p = pos + hsize + 8
                if p + hlen <= end and data[p : p + hlen] == hbytes:
                    if mid != run0 + len(offs):
                        if offs:
                            flush(run0, vhost, queues, seg, offs, sizes)
                            offs, sizes = array("Q"), array("Q")
                        run0 = mid
                    offs.append(pos)
                    sizes.append(end - pos)
                    pos = end
                    continue
            if offs:
                flush(run0, vhost, queues, seg, offs, sizes)
                offs, sizes = array("Q"), array("Q")
            started = _apply_record(apply, data, pos, end, rtype, seg, path, stats)
            if started is not None:  # a PUBLISH that starts a new run
                run0, vhost, queues, hlen, hbytes = started
                offs, sizes = array("Q", (pos,)), array("Q", (end - pos,))
            pos = end
        if offs:
            flush(run0, vhost, queues, seg, offs, sizes)
    finally:
        mv.release()
    return n, pos, problem


def _drop_from(nos: list[int], segs: dict[int, str], stats: RecoveryStats, why: str,
               last: bool) -> None:
    total = 0
    for n in nos:
        total += os.path.getsize(segs[n])
        os.unlink(segs[n])
    stats.dropped_segments += len(nos)
    stats.truncated_bytes += total
    log.log(logging.WARNING if last else logging.ERROR,
            "journal recovery: %s: dropped %d segment(s) (%d bytes)", why, len(nos), total)


def _drop_pages(image: mmap.mmap) -> None:
    """Take a segment map's pages out of this process's RSS (they stay in the page cache)."""
    if len(image) and hasattr(mmap, "MADV_DONTNEED"):
        image.madvise(mmap.MADV_DONTNEED)


def _build(state: JournalState, stats: RecoveryStats, images: dict[int, mmap.mmap],
           load_bodies: bool = True, stream: bool = False) -> RecoveredState:
    queues: list[RecoveredQueue] = []
    by_queue = state.msgs.by_queue()
    # a message on several queues is decoded once: msg_id -> [message, copies still to hand]
    shared: dict[int, list] = {}
    for qk, ent in state.queues.items():
        rec = ent.rec
        rq = RecoveredQueue(rec.vhost, rec.name, rec.flags, rec.arguments)
        mids = by_queue.pop(qk, None)
        if mids is not None:
            rq.count = len(mids)
            gen = _messages(state, images, qk, mids, shared, load_bodies)
            if stream:
                rq._stream = lambda gen=gen: gen
                rq.ids, rq.alone = mids, state.msgs.alone_on(qk)
                rq.delivered_runs = partial(state.msgs.delivered_runs, qk)
            else:
                rq.messages.extend(gen)
        queues.append(rq)
    stats.live_messages = len(state.msgs)
    return RecoveredState(
        vhosts=list(state.vhosts),
        exchanges=[e.rec for e in state.exchanges.values()],
        queues=queues,
        bindings=[e.rec for e in state.bindings.values()],
        next_msg_id=state.max_id + 1,
        stats=stats,
        parameters=[e.rec for e in state.params.values()],
        global_parameters=[e.rec for e in state.globals.values()],
        images=images if stream else {},
    )


def _messages(state: JournalState, images: dict[int, mmap.mmap], qk: tuple[str, str],
              mids: Iterable[int], shared: dict[int, list],
              load_bodies: bool) -> Iterator[RecoveredMessage]:
    """Queue ``qk``'s messages ``mids`` (in log order), decoded one by one; a segment's pages
    are dropped from RSS once the queue has moved past it."""
    msgs = state.msgs
    place = msgs.place
    hsize = fmt.RECORD_HEADER.size
    decode = fmt.decode_publish if load_bodies else fmt.decode_publish_meta
    cur = -1
    img = None
    for mid in mids:
        entry = shared.get(mid)
        if entry is not None:
            p = entry[0]
            entry[1] -= 1
            if not entry[1]:
                del shared[mid]
            yield RecoveredMessage(mid, p.exchange, p.routing_key, p.properties, p.body,
                                   msgs.is_delivered(mid, qk), p.published_ms, p.body_len,
                                   p.copies)
            continue
        seg, off, size, copies, delivered = place(mid, qk)
        if seg != cur:
            if img is not None:
                _drop_pages(img)
            cur, img = seg, images[seg]
        r = decode(img, off + hsize, off + size, img[off + 8])
        if load_bodies:
            body, n = r.body, len(r.body)
        else:
            (r, n), body = r, None
        p = RecoveredMessage(mid, r.exchange, r.routing_key, r.properties, body, delivered,
                             r.published_ms, n, copies)
        if copies > 1:
            shared[mid] = [p, copies - 1]
        yield p
    if img is not None:
        _drop_pages(img)


def segment_file_size(seg: Segment) -> int:
    """Size of ``seg``'s file according to the state (header + records)."""
    return fmt.FILE_HEADER.size + seg.size
