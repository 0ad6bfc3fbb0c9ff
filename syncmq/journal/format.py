"""The journal's on-disk format, byte by byte.

The journal knows nothing of AMQP: names are ``str``, counters are ``int``, and anything the
broker wants stored verbatim (encoded field tables, encoded content-header properties, message
bodies) is opaque ``bytes``.

Data directory
==============

::

    <data_dir>/LOCK                       advisory lock (flock) held by the open journal
    <data_dir>/0000000000000001.seg       segment files, 16 lower-case hex digits, ascending
    <data_dir>/0000000000000002.seg
    <data_dir>/0000000000000002.seg.tmp   compaction output being written (deleted on recovery)

Segments are read in ascending number order; that order, and the order of records inside a
segment, is the *log order*. Only the highest-numbered segment (the *current* one) is ever
appended to. Compaction (see ``compaction.py``) replaces a run of closed segments
``a..b`` by one file named ``b`` whose header says ``covers_from = a``; the files ``a..b-1``
are then stale and are deleted (by compaction, or by recovery if it crashed first).

Segment file
============

Every segment starts with a fixed header (:data:`FILE_HEADER`, big-endian, 32 bytes)::

    offset  size  field
    0       8     magic        b"SYNCMQJ1"
    8       2     version      u16, currently 1 (:data:`VERSION`)
    10      2     flags        u16, 0 (reserved)
    12      8     segment_no   u64, equals the number in the file name
    20      8     covers_from  u64, lowest segment number whose records this file stands for:
                               == segment_no for a segment written by appends; < segment_no
                               for a compaction output (files covers_from..segment_no-1 are
                               stale)
    28      4     header_crc   u32, CRC-32 of bytes 0..27

followed by zero or more records back to back, up to the end of the file.

Record
======

Each record is a fixed 9-byte header (:data:`RECORD_HEADER`, big-endian) and a payload::

    offset  size    field
    0       4       length   u32, number of payload bytes (not counting this header);
                             at most :data:`MAX_PAYLOAD`
    4       4       crc      u32, zlib CRC-32 of the type byte followed by the payload
    8       1       type     u8, one of the ``T_*`` codes below
    9       length  payload  type-specific, see below

A record is *torn or corrupt* if its header runs past the end of the file, its length exceeds
``MAX_PAYLOAD`` or the end of the file, or its CRC does not match. Recovery stops at the first
such record and truncates the file there. A record whose CRC matches but whose payload does not
decode (or whose type is unknown to this version) was written whole, so recovery skips it and
logs it, rather than discarding everything after it.

Payload field encodings (all integers big-endian, unsigned)::

    u8 / u16 / u64       1 / 2 / 8 bytes
    str                  u16 byte length, then that many bytes of UTF-8
    bytes                u32 byte length, then the bytes (opaque to the journal)
    str-list             u16 count, then count x str
    id-list              u32 count, then count x u64

Payloads by type (``flags`` are the broker's bits, stored verbatim)::

    1  VHOST_ADD         name:str
    2  VHOST_DELETE      name:str
    3  EXCHANGE_DECLARE  vhost:str name:str type:str flags:u16 arguments:bytes
    4  EXCHANGE_DELETE   vhost:str name:str
    5  QUEUE_DECLARE     vhost:str name:str flags:u16 arguments:bytes
    6  QUEUE_DELETE      vhost:str name:str
    7  QUEUE_PURGE       vhost:str name:str
    8  BINDING_ADD       vhost:str source:str destination:str destination_kind:u8
                         routing_key:str arguments:bytes      (destination_kind 0 queue, 1 exchange)
    9  BINDING_REMOVE    same as BINDING_ADD
    10 PUBLISH           msg_id:u64 vhost:str queues:str-list exchange:str routing_key:str
                         properties:bytes body:bytes
    13 PUBLISH_AT        msg_id:u64 vhost:str queues:str-list exchange:str routing_key:str
                         properties:bytes published_ms:u64 body:bytes
    11 ACK               vhost:str queue:str msg_ids:id-list
    12 DELIVERED         vhost:str queue:str msg_ids:id-list

The body is the last field of PUBLISH and PUBLISH_AT, so it is the last ``len(body)`` bytes
of the record (``reader.py`` reads bodies back from there).

PUBLISH_AT (added after version 1's first records; a journal without it still recovers, and a
PUBLISH is still written for a message no TTL applies to) is a PUBLISH that also carries the
wall-clock time of the publish in ms since the epoch, written when a TTL applies to the message
on one of its queues: recovery hands it to the broker so that a TTL keeps counting from the
original publish across restarts (each queue's deadline is ``published_ms`` plus the lower of
its ``x-message-ttl`` and the message's ``expiration``, both known at recovery). Everything
that reads ``(msg_id, vhost, queues)`` treats both types alike.

Meaning (applied in log order by recovery, see ``recovery.py`` and ``state.py``):

* A declare of an existing entity replaces its flags/arguments (a re-declare); a QUEUE_DECLARE
  of a queue that does not exist starts it empty.
* QUEUE_DELETE removes the queue, its bindings (as destination) and its messages; QUEUE_PURGE
  removes its messages; EXCHANGE_DELETE removes the exchange and the bindings where it is
  source or destination; VHOST_DELETE removes everything in the vhost.
* Bindings are identified by all their fields (``arguments`` compared as bytes: the broker must
  encode equal tables to equal bytes).
* PUBLISH puts one message on each listed queue; ``msg_id`` must be unique for the life of the
  data directory (recovery reports ``next_msg_id``). ACK removes the message from one queue; a
  message is dead once it is on no queue. DELIVERED marks it delivered on that queue (recovery
  reports ``delivered=True``, i.e. redelivered). ACK/DELIVERED ids unknown at that point are
  ignored.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "MAGIC", "VERSION", "FILE_HEADER", "RECORD_HEADER", "MAX_PAYLOAD", "FormatError",
    "T_VHOST_ADD", "T_VHOST_DELETE", "T_EXCHANGE_DECLARE", "T_EXCHANGE_DELETE",
    "T_QUEUE_DECLARE", "T_QUEUE_DELETE", "T_QUEUE_PURGE", "T_BINDING_ADD", "T_BINDING_REMOVE",
    "T_PUBLISH", "T_ACK", "T_DELIVERED", "T_PUBLISH_AT", "PUBLISH_TYPES", "TYPE_NAMES", "DEST_QUEUE", "DEST_EXCHANGE",
    "VhostAdd", "VhostDelete", "ExchangeDeclare", "ExchangeDelete", "QueueDeclare",
    "QueueDelete", "QueuePurge", "BindingAdd", "BindingRemove", "Publish", "Ack", "Delivered",
    "Record", "encode_file_header", "decode_file_header", "segment_name", "parse_segment_name",
    "frame", "decode_payload", "decode_record", "iter_records", "check_record",
    "encode_vhost_add", "encode_vhost_delete", "encode_exchange_declare",
    "encode_exchange_delete", "encode_queue_declare", "encode_queue_delete",
    "encode_queue_purge", "encode_binding_add", "encode_binding_remove", "encode_publish",
    "encode_ack", "encode_delivered", "encode_publish_at", "publish_body_span",
    "decode_publish_head", "decode_ids_record", "decode_publish", "decode_publish_meta",
]

MAGIC = b"SYNCMQJ1"
VERSION = 1

#: magic, version, flags, segment_no, covers_from (the CRC follows, see FILE_HEADER_CRC).
_FILE_HEADER_BODY = struct.Struct(">8sHHQQ")
#: The whole 32-byte segment file header, CRC included.
FILE_HEADER = struct.Struct(">8sHHQQI")
#: length (payload bytes), crc32 (over type byte + payload), type.
RECORD_HEADER = struct.Struct(">IIB")
#: Largest payload accepted (2 GiB - 1); a bigger length field means corruption.
MAX_PAYLOAD = 0x7FFF_FFFF

SEGMENT_SUFFIX = ".seg"
TMP_SUFFIX = ".seg.tmp"

T_VHOST_ADD = 1
T_VHOST_DELETE = 2
T_EXCHANGE_DECLARE = 3
T_EXCHANGE_DELETE = 4
T_QUEUE_DECLARE = 5
T_QUEUE_DELETE = 6
T_QUEUE_PURGE = 7
T_BINDING_ADD = 8
T_BINDING_REMOVE = 9
T_PUBLISH = 10
T_ACK = 11
T_DELIVERED = 12
T_PUBLISH_AT = 13
#: the record types of a message's publish
PUBLISH_TYPES = (T_PUBLISH, T_PUBLISH_AT)

DEST_QUEUE = 0
DEST_EXCHANGE = 1

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_TYPE_BYTE = [bytes([t]) for t in range(256)]


class FormatError(ValueError):
    """A payload, header or file name that does not follow this module's format."""


# ---------------------------------------------------------------------------------------------
# File header and names


def encode_file_header(segment_no: int, covers_from: int | None = None) -> bytes:
    """Return the 32-byte header of segment ``segment_no`` (``covers_from`` defaults to it)."""
    if covers_from is None:
        covers_from = segment_no
    body = _FILE_HEADER_BODY.pack(MAGIC, VERSION, 0, segment_no, covers_from)
    return body + _U32.pack(zlib.crc32(body))


def decode_file_header(data: bytes | memoryview) -> tuple[int, int]:
    """Return ``(segment_no, covers_from)`` or raise :class:`FormatError`."""
    if len(data) < FILE_HEADER.size:
        raise FormatError("short segment header")
    magic, version, _flags, seg_no, covers_from, crc = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise FormatError(f"bad magic {magic!r}")
    if zlib.crc32(data[: _FILE_HEADER_BODY.size]) != crc:
        raise FormatError("segment header CRC mismatch")
    if version != VERSION:
        raise FormatError(f"unsupported journal version {version}")
    if covers_from > seg_no:
        raise FormatError("covers_from after segment_no")
    return seg_no, covers_from


def segment_name(segment_no: int) -> str:
    """File name of segment ``segment_no``: 16 hex digits + ``.seg``."""
    return f"{segment_no:016x}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """Segment number of a file name, or None if it is not a segment file name."""
    if len(name) != 16 + len(SEGMENT_SUFFIX) or not name.endswith(SEGMENT_SUFFIX):
        return None
    try:
        return int(name[:16], 16)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Framing


def frame(rtype: int, payload: bytes) -> bytes:
    """Return a whole record (header + payload) of type ``rtype``."""
    if len(payload) > MAX_PAYLOAD:
        raise FormatError("record payload too large")
    tb = _TYPE_BYTE[rtype]
    return RECORD_HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(tb)), rtype) + payload


def check_record(record: bytes) -> int:
    """Cheap structural check of one framed record (no CRC); return its type.

    Used by :meth:`Journal.append` to refuse a malformed record before it reaches the disk.
    """
    if len(record) < RECORD_HEADER.size:
        raise FormatError("record shorter than its header")
    length, _crc, rtype = RECORD_HEADER.unpack_from(record, 0)
    if length != len(record) - RECORD_HEADER.size:
        raise FormatError("record length field does not match its size")
    if rtype not in TYPE_NAMES:
        raise FormatError(f"unknown record type {rtype}")
    return rtype


# ---------------------------------------------------------------------------------------------
# Field encoders


def _s(value: str) -> bytes:
    b = value.encode("utf-8")
    if len(b) > 0xFFFF:
        raise FormatError("string longer than 65535 bytes")
    return _U16.pack(len(b)) + b


def _b(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def _ids(ids: Sequence[int]) -> bytes:
    n = len(ids)
    return struct.pack(f">I{n}Q", n, *ids)


# ---------------------------------------------------------------------------------------------
# Record builders: each returns a whole framed record ready for Journal.append


def encode_vhost_add(name: str) -> bytes:
    return frame(T_VHOST_ADD, _s(name))


def encode_vhost_delete(name: str) -> bytes:
    return frame(T_VHOST_DELETE, _s(name))


def encode_exchange_declare(
    vhost: str, name: str, type: str, flags: int, arguments: bytes = b""
) -> bytes:
    return frame(
        T_EXCHANGE_DECLARE, _s(vhost) + _s(name) + _s(type) + _U16.pack(flags) + _b(arguments)
    )


def encode_exchange_delete(vhost: str, name: str) -> bytes:
    return frame(T_EXCHANGE_DELETE, _s(vhost) + _s(name))


def encode_queue_declare(vhost: str, name: str, flags: int, arguments: bytes = b"") -> bytes:
    return frame(T_QUEUE_DECLARE, _s(vhost) + _s(name) + _U16.pack(flags) + _b(arguments))


def encode_queue_delete(vhost: str, name: str) -> bytes:
    return frame(T_QUEUE_DELETE, _s(vhost) + _s(name))


def encode_queue_purge(vhost: str, name: str) -> bytes:
    return frame(T_QUEUE_PURGE, _s(vhost) + _s(name))


def _binding(
    vhost: str, source: str, destination: str, destination_kind: int, routing_key: str,
    arguments: bytes,
) -> bytes:
    if destination_kind not in (DEST_QUEUE, DEST_EXCHANGE):
        raise FormatError("destination_kind must be 0 (queue) or 1 (exchange)")
    return (
        _s(vhost) + _s(source) + _s(destination) + _U8.pack(destination_kind)
        + _s(routing_key) + _b(arguments)
    )


def encode_binding_add(
    vhost: str, source: str, destination: str, destination_kind: int, routing_key: str,
    arguments: bytes = b"",
) -> bytes:
    return frame(
        T_BINDING_ADD,
        _binding(vhost, source, destination, destination_kind, routing_key, arguments),
    )


def encode_binding_remove(
    vhost: str, source: str, destination: str, destination_kind: int, routing_key: str,
    arguments: bytes = b"",
) -> bytes:
    return frame(
        T_BINDING_REMOVE,
        _binding(vhost, source, destination, destination_kind, routing_key, arguments),
    )


_PUBLISH_TYPE_CRC = zlib.crc32(_TYPE_BYTE[T_PUBLISH])
#: (vhost, exchange, routing_key, *queues) -> the encoded fields between msg_id and properties
_publish_routes: dict[tuple, bytes] = {}


def _publish_route(vhost: str, queues: Sequence[str], exchange: str, routing_key: str) -> bytes:
    if len(queues) > 0xFFFF:
        raise FormatError("too many queues")
    parts = [_s(vhost), _U16.pack(len(queues))]
    parts.extend(_s(q) for q in queues)
    parts += [_s(exchange), _s(routing_key)]
    return b"".join(parts)


def encode_publish(
    msg_id: int, vhost: str, queues: Sequence[str], exchange: str, routing_key: str,
    properties: bytes, body: bytes,
) -> bytes:
    """PUBLISH of one message routed to ``queues`` (all durable, at least one).

    Hot path (one call per persistent publish): the fields that repeat from one publish to the
    next (vhost, queues, exchange, routing key) are encoded once per distinct route and cached
    (bounded); the CRC runs over the parts, and the record is joined once."""
    key = (vhost, exchange, routing_key, *queues)
    route = _publish_routes.get(key)
    if route is None:
        route = _publish_route(vhost, queues, exchange, routing_key)
        if len(_publish_routes) >= 4096:
            _publish_routes.clear()
        _publish_routes[key] = route
    head = (_U64.pack(msg_id) + route + _U32.pack(len(properties)) + properties
            + _U32.pack(len(body)))
    n = len(head) + len(body)
    if n > MAX_PAYLOAD:
        raise FormatError("record payload too large")
    crc = zlib.crc32(body, zlib.crc32(head, _PUBLISH_TYPE_CRC))
    return b"".join((RECORD_HEADER.pack(n, crc, T_PUBLISH), head, body))


def encode_publish_at(
    published_ms: int, msg_id: int, vhost: str, queues: Sequence[str], exchange: str,
    routing_key: str, properties: bytes, body: bytes,
) -> bytes:
    """PUBLISH_AT: a PUBLISH that also records when it was published (wall-clock ms), for a
    message a TTL applies to on one of ``queues``."""
    if len(queues) > 0xFFFF:
        raise FormatError("too many queues")
    parts = [_U64.pack(msg_id), _s(vhost), _U16.pack(len(queues))]
    parts.extend(_s(q) for q in queues)
    parts += [_s(exchange), _s(routing_key), _U32.pack(len(properties)), properties,
              _U64.pack(published_ms), _U32.pack(len(body)), body]
    return frame(T_PUBLISH_AT, b"".join(parts))


def encode_ack(vhost: str, queue: str, msg_ids: Sequence[int]) -> bytes:
    return frame(T_ACK, _s(vhost) + _s(queue) + _ids(msg_ids))


def encode_delivered(vhost: str, queue: str, msg_ids: Sequence[int]) -> bytes:
    return frame(T_DELIVERED, _s(vhost) + _s(queue) + _ids(msg_ids))


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


Record = (
    VhostAdd | VhostDelete | ExchangeDeclare | ExchangeDelete | QueueDeclare | QueueDelete
    | QueuePurge | BindingAdd | BindingRemove | Publish | Ack | Delivered
)

TYPE_NAMES: dict[int, str] = {
    T_VHOST_ADD: "VHOST_ADD", T_VHOST_DELETE: "VHOST_DELETE",
    T_EXCHANGE_DECLARE: "EXCHANGE_DECLARE", T_EXCHANGE_DELETE: "EXCHANGE_DELETE",
    T_QUEUE_DECLARE: "QUEUE_DECLARE", T_QUEUE_DELETE: "QUEUE_DELETE",
    T_QUEUE_PURGE: "QUEUE_PURGE", T_BINDING_ADD: "BINDING_ADD",
    T_BINDING_REMOVE: "BINDING_REMOVE", T_PUBLISH: "PUBLISH", T_ACK: "ACK",
    T_DELIVERED: "DELIVERED", T_PUBLISH_AT: "PUBLISH_AT",
}


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

    def done(self) -> None:
        if self.pos != self.end:
            raise FormatError("trailing bytes in payload")


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
