"""What one compaction job keeps, record by record (``compaction.py`` runs the job).

:class:`_JobOutput` applies the rules of ``compaction.py``'s "Which records are kept" to the
records of a run as the job reads them, writes what it keeps to the job's temporary output
and remembers where each kept record went, for the compactor's swap. Used only from the
thread that owns the journal state (see ``state.py``): no lock.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING

from . import format as fmt
from .state import NO_REF, binding_key

if TYPE_CHECKING:
    from .compaction import Compactor

__all__ = ["_JobOutput"]

_RUNS_PER_RECORD = 1 << 16  # a trimmed DELIVERED_RUNS record's runs at most (1 MiB)

_U64 = struct.Struct(">Q")

_TOMBSTONES = {fmt.T_VHOST_DELETE, fmt.T_EXCHANGE_DELETE, fmt.T_QUEUE_DELETE, fmt.T_QUEUE_PURGE,
               fmt.T_BINDING_REMOVE, fmt.T_PARAM_CLEAR, fmt.T_GLOBAL_CLEAR}


def _target_key(rtype: int, rec: fmt.Record) -> tuple:
    if rtype == fmt.T_VHOST_DELETE:
        return ("v", rec.name)
    if rtype == fmt.T_EXCHANGE_DELETE:
        return ("x", rec.vhost, rec.name)
    if rtype in (fmt.T_QUEUE_DELETE, fmt.T_QUEUE_PURGE):
        return ("q", rec.vhost, rec.name)
    if rtype == fmt.T_PARAM_CLEAR:
        return ("p", rec.vhost, rec.component, rec.name)
    if rtype == fmt.T_GLOBAL_CLEAR:
        return ("g", rec.name)
    return binding_key(rec)


def _entity_keys(rec: fmt.Record) -> list[tuple]:
    t = rec.TYPE
    if t == fmt.T_VHOST_ADD:
        return [("v", rec.name)]
    if t == fmt.T_EXCHANGE_DECLARE:
        return [("v", rec.vhost), ("x", rec.vhost, rec.name)]
    if t == fmt.T_QUEUE_DECLARE:
        return [("v", rec.vhost), ("q", rec.vhost, rec.name)]
    if t == fmt.T_PARAM_SET:
        return [("v", rec.vhost), ("p", rec.vhost, rec.component, rec.name)]
    if t == fmt.T_GLOBAL_SET:
        return [("g", rec.name)]
    dkind = "q" if rec.destination_kind == fmt.DEST_QUEUE else "x"
    return [("v", rec.vhost), ("x", rec.vhost, rec.source), (dkind, rec.vhost, rec.destination),
            binding_key(rec)]


class _JobOutput:
    """What one compaction job keeps: the records of its run that are still live, written in
    pieces of about 1 MiB to the temporary output file (created on the first write, so a run
    with nothing live writes nothing), and what the state needs to know about them."""

    def __init__(self, comp: Compactor, run: list[int]) -> None:
        st = comp.state
        self.comp = comp
        self.stats = comp.stats
        self.run = run
        self.a = run[0]
        self.covers_from = st.segments[run[0]].covers_from
        self.msgs, self.dead_seg, self.key_segs = st.msgs, st.dead_seg, st.key_segs
        self.tables = {fmt.T_VHOST_ADD: st.vhosts, fmt.T_EXCHANGE_DECLARE: st.exchanges,
                       fmt.T_QUEUE_DECLARE: st.queues, fmt.T_BINDING_ADD: st.bindings,
                       fmt.T_PARAM_SET: st.params, fmt.T_GLOBAL_SET: st.globals}
        self.header = fmt.encode_file_header(run[-1], self.covers_from)
        self.out: list[bytes] = []
        self.pending = 0  # bytes in ``out``
        self.off = len(self.header)  # the output's size so far
        self.fd: int | None = None
        # kept: (kind, ident, old_seg, old_off, new_off, size); kind 'm' message, else table
        self.kept: list[tuple] = []
        self.kept_ids: set[int] = set()
        self.run_keys: set[tuple] = set()
        # the output's Segment fields (see state.py): no entity/tombstone kept yet, the
        # smallest id a kept ACK/DELIVERED/DELIVERED_RUNS names
        self.msgs_only = True
        self.min_ref = NO_REF

    def keep(self, data: bytes) -> None:
        self.out.append(data)
        self.off += len(data)
        self.pending += len(data)
        self.stats.records_kept += 1

    def flush(self) -> None:
        if not self.out:
            return
        comp = self.comp
        if self.fd is None:
            self.fd = os.open(comp._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            comp._tmp_fd = self.fd
            _write_all(self.fd, self.header)
            self.stats.bytes_written += len(self.header)
        data = b"".join(self.out)
        _write_all(self.fd, data)
        self.stats.bytes_written += len(data)
        self.out.clear()
        self.pending = 0

    def take(self, no: int, mm, off: int, rend: int, rtype: int, size: int) -> None:
        """Keep the record at ``mm[off:rend]`` of segment ``no`` if it is live (maybe
        trimmed: an ACK/DELIVERED record keeps only the ids still needed), else drop it."""
        if rtype == fmt.T_PUBLISH or rtype == fmt.T_PUBLISH_AT:
            self._publish(no, mm, off, rend, size)
        elif rtype == fmt.T_ACK or rtype == fmt.T_DELIVERED:
            self._ids(mm, off, rend, rtype)
        elif rtype == fmt.T_DELIVERED_RUNS:
            self._runs(mm, off, rend)
        elif rtype == fmt.T_TX or rtype == fmt.T_ID_MARK:
            # a closed segment holds whole units: the kept records stand alone; an ID_MARK
            # of a closed segment is covered by the current segment's (see format.py)
            self.stats.records_dropped += 1
        else:
            self._entity(no, mm, off, rend, rtype, size)

    def _publish(self, no: int, mm, off: int, rend: int, size: int) -> None:
        hsize = fmt.RECORD_HEADER.size
        mid = _U64.unpack_from(mm, off + hsize)[0]
        m = self.msgs.loc(mid)
        if m is not None and m[0] == no and m[1] == off:
            _mid, vh, queues = fmt.decode_publish_head(mm, off + hsize, rend)
            run_keys = self.run_keys
            run_keys.add(("v", vh))
            for q in queues:
                run_keys.add(("q", vh, q))
            new_off = self.off
            self.keep(mm[off:rend])
            self.kept.append(("m", mid, no, off, new_off, size))
            self.kept_ids.add(mid)
        else:
            self.stats.records_dropped += 1

    def _ids(self, mm, off: int, rend: int, rtype: int) -> None:
        try:
            vh, q, ids = fmt.decode_ids_record(mm, off + fmt.RECORD_HEADER.size, rend)
        except fmt.FormatError:
            self.stats.records_dropped += 1
            return
        msgs = self.msgs
        if rtype == fmt.T_ACK:
            need = []
            for x in ids:
                if x in self.kept_ids:
                    need.append(x)
                    continue
                m = msgs.loc(x)
                s = m[0] if m is not None else self.dead_seg.get(x)
                if s is not None and s < self.a:
                    need.append(x)
        else:
            qk = (vh, q)
            need = [x for x in ids if msgs.is_delivered(x, qk)]
        if need:
            mn = min(need)  # (kept records only)
            if mn < self.min_ref:
                self.min_ref = mn
        if len(need) == len(ids):
            self.keep(mm[off:rend])
        elif need:
            self.keep((fmt.encode_ack if rtype == fmt.T_ACK else fmt.encode_delivered)(
                vh, q, need))
        else:
            self.stats.records_dropped += 1

    def _runs(self, mm, off: int, rend: int) -> None:
        """A DELIVERED_RUNS record keeps the parts of its runs still live and delivered on
        its queue (as runs, in records of at most ``_RUNS_PER_RECORD``)."""
        try:
            rec = fmt.decode_payload(fmt.T_DELIVERED_RUNS, mm, off + fmt.RECORD_HEADER.size,
                                     rend)
        except fmt.FormatError:
            self.stats.records_dropped += 1
            return
        qk = (rec.vhost, rec.queue)
        need = [r for a, n in rec.runs for r in self.msgs.delivered_runs(qk, a, n)]
        for a, _n in need:
            if a < self.min_ref:
                self.min_ref = a
        if need == list(rec.runs):
            self.keep(mm[off:rend])
        elif need:
            for i in range(0, len(need), _RUNS_PER_RECORD):
                self.keep(fmt.encode_delivered_runs(rec.vhost, rec.queue,
                                                    need[i:i + _RUNS_PER_RECORD]))
        else:
            self.stats.records_dropped += 1

    def _entity(self, no: int, mm, off: int, rend: int, rtype: int, size: int) -> None:
        try:
            rec = fmt.decode_payload(rtype, mm, off + fmt.RECORD_HEADER.size, rend)
        except fmt.FormatError:
            self.stats.records_dropped += 1
            return
        if rtype in _TOMBSTONES:
            key = _target_key(rtype, rec)
            if key in self.run_keys or any(s < self.a for s in self.key_segs.get(key, ())):
                self.msgs_only = False
                self.keep(mm[off:rend])
            else:
                self.stats.records_dropped += 1
            return
        tkey = _table_key(rtype, rec)
        ent = self.tables[rtype].get(tkey)
        if ent is not None and (no, off, size) in ent.locs:
            self.run_keys.update(_entity_keys(rec))
            self.msgs_only = False
            new_off = self.off
            self.keep(mm[off:rend])
            self.kept.append((rtype, tkey, no, off, new_off, size))
        else:
            self.stats.records_dropped += 1


def _table_key(rtype: int, rec: fmt.Record) -> object:
    if rtype == fmt.T_VHOST_ADD:
        return rec.name
    if rtype == fmt.T_BINDING_ADD:
        return binding_key(rec)
    if rtype == fmt.T_PARAM_SET:
        return (rec.vhost, rec.component, rec.name)
    if rtype == fmt.T_GLOBAL_SET:
        return rec.name
    return (rec.vhost, rec.name)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    mv = memoryview(data)
    while mv:
        n = os.write(fd, mv)
        if n <= 0:  # pragma: no cover - os.write raises instead
            raise OSError(errno.EIO, "short write")
        mv = mv[n:]
