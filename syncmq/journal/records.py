"""Decoding side of the journal format (see ``syncmq.journal.format``): one ``NamedTuple`` per
record type, the bounds-checked payload reader, the publish fast paths and ``iter_records``.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

from .encoding import (
    _TX,
    _U16,
    _U32,
    _U64,
    DEST_EXCHANGE,
    DEST_QUEUE,
    FILE_HEADER,
    MAX_PAYLOAD,
    RECORD_HEADER,
    T_ACK,
    T_BINDING_ADD,
    T_BINDING_REMOVE,
    T_DELIVERED,
    T_DELIVERED_RUNS,
    T_EXCHANGE_DECLARE,
    T_EXCHANGE_DELETE,
    T_GLOBAL_CLEAR,
    T_GLOBAL_SET,
    T_ID_MARK,
    T_PARAM_CLEAR,
    T_PARAM_SET,
    T_PUBLISH,
    T_PUBLISH_AT,
    T_QUEUE_DECLARE,
    T_QUEUE_DELETE,
    T_QUEUE_PURGE,
    T_TX,
    T_VHOST_ADD,
    T_VHOST_DELETE,
    FormatError,
    encode_ack,
    encode_binding_add,
    encode_binding_remove,
    encode_delivered,
    encode_delivered_runs,
    encode_exchange_declare,
    encode_exchange_delete,
    encode_global_clear,
    encode_global_set,
    encode_param_clear,
    encode_param_set,
    encode_publish,
    encode_publish_at,
    encode_queue_declare,
    encode_queue_delete,
    encode_queue_purge,
    encode_vhost_add,
    encode_vhost_delete,
    frame,
)

# ---------------------------------------------------------------------------------------------
# Decoded records


class VhostAdd(NamedTuple):
    name: str
    TYPE = T_VHOST_ADD

    def encode(self) -> bytes:
        return encode_vhost_add(self.name)


class VhostDelete(NamedTuple):
    name: str
    TYPE = T_VHOST_DELETE

    def encode(self) -> bytes:
        return encode_vhost_delete(self.name)


class ExchangeDeclare(NamedTuple):
    vhost: str
    name: str
    type: str
    flags: int
    arguments: bytes
    TYPE = T_EXCHANGE_DECLARE

    def encode(self) -> bytes:
        return encode_exchange_declare(*self)


class ExchangeDelete(NamedTuple):
    vhost: str
    name: str
    TYPE = T_EXCHANGE_DELETE

    def encode(self) -> bytes:
        return encode_exchange_delete(*self)


class QueueDeclare(NamedTuple):
    vhost: str
    name: str
    flags: int
    arguments: bytes
    TYPE = T_QUEUE_DECLARE

    def encode(self) -> bytes:
        return encode_queue_declare(*self)


class QueueDelete(NamedTuple):
    vhost: str
    name: str
    TYPE = T_QUEUE_DELETE

    def encode(self) -> bytes:
        return encode_queue_delete(*self)


class QueuePurge(NamedTuple):
    vhost: str
    name: str
    TYPE = T_QUEUE_PURGE

    def encode(self) -> bytes:
        return encode_queue_purge(*self)


class BindingAdd(NamedTuple):
    vhost: str
    source: str
    destination: str
    destination_kind: int
    routing_key: str
    arguments: bytes
    TYPE = T_BINDING_ADD

    def encode(self) -> bytes:
        return encode_binding_add(*self)


class BindingRemove(NamedTuple):
    vhost: str
    source: str
    destination: str
    destination_kind: int
    routing_key: str
    arguments: bytes
    TYPE = T_BINDING_REMOVE

    def encode(self) -> bytes:
        return encode_binding_remove(*self)


class Publish(NamedTuple):
    msg_id: int
    vhost: str
    queues: tuple[str, ...]
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes
    published_ms: int = 0  # PUBLISH_AT's; 0 for a PUBLISH
    TYPE = T_PUBLISH

    def encode(self) -> bytes:
        if self.published_ms:
            return encode_publish_at(self.published_ms, *self[:7])
        return encode_publish(*self[:7])


class Ack(NamedTuple):
    vhost: str
    queue: str
    msg_ids: tuple[int, ...]
    TYPE = T_ACK

    def encode(self) -> bytes:
        return encode_ack(*self)


class Delivered(NamedTuple):
    vhost: str
    queue: str
    msg_ids: tuple[int, ...]
    TYPE = T_DELIVERED

    def encode(self) -> bytes:
        return encode_delivered(*self)


class DeliveredRuns(NamedTuple):
    vhost: str
    queue: str
    runs: tuple[tuple[int, int], ...]  # (first id, count >= 1): ids first .. first+count-1
    TYPE = T_DELIVERED_RUNS

    def encode(self) -> bytes:
        return encode_delivered_runs(*self)


class ParamSet(NamedTuple):
    vhost: str
    component: str
    name: str
    value: bytes  # JSON text (UTF-8), opaque to the journal
    TYPE = T_PARAM_SET

    def encode(self) -> bytes:
        return encode_param_set(*self)


class ParamClear(NamedTuple):
    vhost: str
    component: str
    name: str
    TYPE = T_PARAM_CLEAR

    def encode(self) -> bytes:
        return encode_param_clear(*self)


class GlobalSet(NamedTuple):
    name: str
    value: bytes  # JSON text (UTF-8)
    TYPE = T_GLOBAL_SET

    def encode(self) -> bytes:
        return encode_global_set(*self)


class GlobalClear(NamedTuple):
    name: str
    TYPE = T_GLOBAL_CLEAR

    def encode(self) -> bytes:
        return encode_global_clear(*self)


Record = (
    VhostAdd | VhostDelete | ExchangeDeclare | ExchangeDelete | QueueDeclare | QueueDelete
    | QueuePurge | BindingAdd | BindingRemove | Publish | Ack | Delivered | ParamSet
    | ParamClear | GlobalSet | GlobalClear | DeliveredRuns
)


# ---------------------------------------------------------------------------------------------
# Decoding


class _Reader:
    """Cursor over one payload; every read checks bounds (FormatError past the end)."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def _need(self, n: int) -> int:
        p = self.pos
        if p + n > self.end:
            raise FormatError("payload truncated")
        self.pos = p + n
        return p

    def u8(self) -> int:
        return self.buf[self._need(1)]

    def u16(self) -> int:
        return _U16.unpack_from(self.buf, self._need(2))[0]

    def u64(self) -> int:
        return _U64.unpack_from(self.buf, self._need(8))[0]

    def s(self) -> str:
        n = _U16.unpack_from(self.buf, self._need(2))[0]
        p = self._need(n)
        try:
            return str(self.buf[p : p + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError("invalid UTF-8 in a name") from exc

    def b(self) -> bytes:
        n = _U32.unpack_from(self.buf, self._need(4))[0]
        p = self._need(n)
        return bytes(self.buf[p : p + n])

    def str_list(self) -> tuple[str, ...]:
        n = self.u16()
        return tuple(self.s() for _ in range(n))

    def ids(self) -> tuple[int, ...]:
        n = _U32.unpack_from(self.buf, self._need(4))[0]
        p = self._need(8 * n)
        return struct.unpack_from(f">{n}Q", self.buf, p)

    def runs(self) -> tuple[tuple[int, int], ...]:
        """A run-list: u32 count, then count x (first:u64, count:u64), every count >= 1."""
        n = _U32.unpack_from(self.buf, self._need(4))[0]
        flat = struct.unpack_from(f">{2 * n}Q", self.buf, self._need(16 * n))
        if 0 in flat[1::2]:
            raise FormatError("empty run")
        return tuple(zip(flat[::2], flat[1::2], strict=True))

    def done(self) -> None:
        if self.pos != self.end:
            raise FormatError("trailing bytes in payload")


def publish_body_span(record: bytes | memoryview) -> tuple[int, int]:
    """``(offset, length)`` of the body inside the whole framed PUBLISH(_AT) ``record``."""
    r = _Reader(record, RECORD_HEADER.size)
    r.u64()
    r.s()
    r.str_list()
    r.s()
    r.s()
    r.b()
    if record[8] == T_PUBLISH_AT:
        r.u64()
    n = _U32.unpack_from(record, r._need(4))[0]
    return r.pos, n



def _dec_binding(r: _Reader) -> tuple[str, str, str, int, str, bytes]:
    vhost, source, destination = r.s(), r.s(), r.s()
    kind = r.u8()
    if kind not in (DEST_QUEUE, DEST_EXCHANGE):
        raise FormatError("bad destination_kind")
    return vhost, source, destination, kind, r.s(), r.b()


def _decode(rtype: int, r: _Reader) -> Record:
    if rtype == T_PUBLISH or rtype == T_PUBLISH_AT:
        rec = _publish_fast(r.buf, r.pos, r.end, True, rtype == T_PUBLISH_AT)
        r.pos = r.end
        return rec
    if rtype == T_ACK:
        return Ack(r.s(), r.s(), r.ids())
    if rtype == T_DELIVERED:
        return Delivered(r.s(), r.s(), r.ids())
    if rtype == T_DELIVERED_RUNS:
        return DeliveredRuns(r.s(), r.s(), r.runs())
    if rtype == T_QUEUE_DECLARE:
        return QueueDeclare(r.s(), r.s(), r.u16(), r.b())
    if rtype == T_EXCHANGE_DECLARE:
        return ExchangeDeclare(r.s(), r.s(), r.s(), r.u16(), r.b())
    if rtype == T_BINDING_ADD:
        return BindingAdd(*_dec_binding(r))
    if rtype == T_BINDING_REMOVE:
        return BindingRemove(*_dec_binding(r))
    if rtype == T_QUEUE_DELETE:
        return QueueDelete(r.s(), r.s())
    if rtype == T_QUEUE_PURGE:
        return QueuePurge(r.s(), r.s())
    if rtype == T_EXCHANGE_DELETE:
        return ExchangeDelete(r.s(), r.s())
    if rtype == T_VHOST_ADD:
        return VhostAdd(r.s())
    if rtype == T_VHOST_DELETE:
        return VhostDelete(r.s())
    if rtype == T_TX:
        return Tx(_U32.unpack_from(r.buf, r._need(4))[0], r.u64())
    if rtype == T_ID_MARK:
        return IdMark(r.u64())
    if rtype == T_PARAM_SET:
        return ParamSet(r.s(), r.s(), r.s(), r.b())
    if rtype == T_PARAM_CLEAR:
        return ParamClear(r.s(), r.s(), r.s())
    if rtype == T_GLOBAL_SET:
        return GlobalSet(r.s(), r.b())
    if rtype == T_GLOBAL_CLEAR:
        return GlobalClear(r.s())
    raise FormatError(f"unknown record type {rtype}")


def decode_payload(
    rtype: int, buf: bytes | memoryview, start: int = 0, end: int | None = None
) -> Record:
    """Decode the payload ``buf[start:end]`` of a record of type ``rtype``.

    Raises :class:`FormatError` if it does not follow the layout exactly (no trailing bytes).
    """
    r = _Reader(buf, start, end)
    rec = _decode(rtype, r)
    r.done()
    return rec


_U64_U16 = struct.Struct(">QH")


def _publish_fast(buf: bytes | memoryview, p: int, end: int, full: bool,
                  timed: bool = False, copy_body: bool = True) -> tuple:
    """Hot path of PUBLISH decoding (recovery and the writer): no cursor object. Overruns
    show up as ``p != end`` at the end, or as struct/Unicode errors."""
    try:
        mid, n = _U64_U16.unpack_from(buf, p)
        p += 10
        vhost = str(buf[p : p + n], "utf-8")
        p += n
        cnt = _U16.unpack_from(buf, p)[0]
        p += 2
        queues = []
        for _ in range(cnt):
            n = _U16.unpack_from(buf, p)[0]
            p += 2
            queues.append(str(buf[p : p + n], "utf-8"))
            p += n
        if not full:
            if p > end:
                raise FormatError("PUBLISH payload truncated")
            return mid, vhost, tuple(queues)
        n = _U16.unpack_from(buf, p)[0]
        p += 2
        exchange = str(buf[p : p + n], "utf-8")
        p += n
        n = _U16.unpack_from(buf, p)[0]
        p += 2
        routing_key = str(buf[p : p + n], "utf-8")
        p += n
        n = _U32.unpack_from(buf, p)[0]
        p += 4
        properties = bytes(buf[p : p + n])
        p += n
        published_ms = 0
        if timed:
            published_ms = _U64.unpack_from(buf, p)[0]
            p += 8
        n = _U32.unpack_from(buf, p)[0]
        p += 4
        body = bytes(buf[p : p + n]) if copy_body else b""
        body_len = n
        p += n
    except (struct.error, UnicodeDecodeError) as exc:
        raise FormatError(f"bad PUBLISH payload: {exc}") from None
    if p != end:
        raise FormatError("PUBLISH payload length mismatch")
    rec = Publish(mid, vhost, tuple(queues), exchange, routing_key, properties, body,
                  published_ms)
    return rec if copy_body else (rec, body_len)


def decode_publish(buf: bytes | memoryview, start: int, end: int,
                   rtype: int = T_PUBLISH) -> Publish:
    """Decode the PUBLISH (or, with ``rtype``, PUBLISH_AT) payload ``buf[start:end]`` (fast
    path of :func:`decode_payload`)."""
    return _publish_fast(buf, start, end, True, rtype == T_PUBLISH_AT)


def decode_publish_meta(buf: bytes | memoryview, start: int, end: int,
                        rtype: int = T_PUBLISH) -> tuple[Publish, int]:
    """Like :func:`decode_publish` but without copying the body: ``(record with body b"",
    body length)`` (recovery with a memory budget reads bodies back only when needed)."""
    return _publish_fast(buf, start, end, True, rtype == T_PUBLISH_AT, False)


def decode_publish_head(
    buf: bytes | memoryview, start: int, end: int
) -> tuple[int, str, tuple[str, ...]]:
    """``(msg_id, vhost, queues)`` of the PUBLISH payload ``buf[start:end]``, body not copied."""
    return _publish_fast(buf, start, end, False)


def decode_ids_record(
    buf: bytes | memoryview, start: int, end: int
) -> tuple[str, str, tuple[int, ...]]:
    """``(vhost, queue, msg_ids)`` of an ACK or DELIVERED payload ``buf[start:end]``."""
    p = start
    try:
        n = _U16.unpack_from(buf, p)[0]
        p += 2
        vhost = str(buf[p : p + n], "utf-8")
        p += n
        n = _U16.unpack_from(buf, p)[0]
        p += 2
        queue = str(buf[p : p + n], "utf-8")
        p += n
        n = _U32.unpack_from(buf, p)[0]
        p += 4
        if p + 8 * n != end:
            raise FormatError("id list length mismatch")
        ids = struct.unpack_from(f">{n}Q", buf, p)
    except (struct.error, UnicodeDecodeError) as exc:
        raise FormatError(f"bad id-list payload: {exc}") from None
    return vhost, queue, ids


def decode_record(record: bytes | memoryview) -> Record:
    """Decode one whole framed record, CRC checked."""
    if len(record) < RECORD_HEADER.size:
        raise FormatError("record shorter than its header")
    length, crc, rtype = RECORD_HEADER.unpack_from(record, 0)
    if length != len(record) - RECORD_HEADER.size:
        raise FormatError("record length mismatch")
    if zlib.crc32(memoryview(record)[8:]) != crc:
        raise FormatError("record CRC mismatch")
    return decode_payload(rtype, record, RECORD_HEADER.size)


def iter_records(
    buf: bytes | memoryview, start: int = FILE_HEADER.size
) -> tuple[list[tuple[int, int, int]], int, str | None]:
    """Scan the records of one segment image ``buf`` from ``start``.

    Returns ``(records, good_end, problem)``: ``records`` is a list of ``(offset, type,
    payload_length)`` for every whole record with a valid CRC, in order; ``good_end`` is the
    offset just past the last of them; ``problem`` is None if the scan reached the end of
    ``buf`` exactly, else a short description of the torn or corrupt record at ``good_end``.
    """
    out: list[tuple[int, int, int]] = []
    size = len(buf)
    pos = start
    hsize = RECORD_HEADER.size
    unpack = RECORD_HEADER.unpack_from
    crc32 = zlib.crc32
    mv = memoryview(buf)
    while pos < size:
        if pos + hsize > size:
            return out, pos, "torn record header"
        length, crc, rtype = unpack(buf, pos)
        end = pos + hsize + length
        if length > MAX_PAYLOAD or end > size:
            return out, pos, "record runs past the end of the file"
        if crc32(mv[pos + 8 : end]) != crc:
            return out, pos, "record CRC mismatch"
        out.append((pos, rtype, length))
        pos = end
    return out, pos, None


# ---------------------------------------------------------------------------------------------
# Transactions (TX: one tx.commit's records as a unit; see "Transactions" in format.py)


class Tx(NamedTuple):
    count: int  # records that follow as one unit
    nbytes: int  # their bytes, record headers included
    TYPE = T_TX

    def encode(self) -> bytes:
        return frame(T_TX, _TX.pack(self.count, self.nbytes))


class IdMark(NamedTuple):
    max_id: int  # every message id used before this record is at most this
    TYPE = T_ID_MARK

    def encode(self) -> bytes:
        return frame(T_ID_MARK, _U64.pack(self.max_id))


def tx_unit_end(buf: bytes | memoryview, pos: int, size: int) -> int | None:
    """For the TX record at ``buf[pos]`` (CRC already checked), the offset just past its
    unit if every one of its records is in ``buf[:size]`` whole with a good CRC, else None
    (the unit is torn: drop it with the TX record)."""
    hsize = RECORD_HEADER.size
    length = RECORD_HEADER.unpack_from(buf, pos)[0]
    if length != _TX.size:
        return None
    count, nbytes = _TX.unpack_from(buf, pos + hsize)
    p = start = pos + hsize + length
    mv = memoryview(buf)
    try:
        for _ in range(count):
            if p + hsize > size:
                return None
            n, crc, _t = RECORD_HEADER.unpack_from(buf, p)
            end = p + hsize + n
            if end > size or zlib.crc32(mv[p + 8 : end]) != crc:
                return None
            p = end
    finally:
        mv.release()
    return p if p - start == nbytes else None
