"""Encoding side of the journal format (see ``syncmq.journal.format`` for the format itself):
constants, the segment file header, record framing and checking, one encoder per record type.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

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
#: a transaction's marker: the records of one tx.commit follow as a unit (format.py)
T_TX = 14
#: the high-water mark of message ids (see format.py, "Message ids")
T_ID_MARK = 15
#: runtime parameters (see format.py, "Runtime parameters")
T_PARAM_SET = 16
T_PARAM_CLEAR = 17
T_GLOBAL_SET = 18
T_GLOBAL_CLEAR = 19
#: DELIVERED of runs of consecutive ids (see format.py, "Delivered runs")
T_DELIVERED_RUNS = 20
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


def _runs(runs: Sequence[tuple[int, int]]) -> bytes:
    flat = [v for run in runs for v in run]
    if len(flat) != 2 * len(runs) or any(c < 1 for _f, c in runs):
        raise FormatError("a run is (first id, count >= 1)")
    return struct.pack(f">I{len(flat)}Q", len(runs), *flat)


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
#: (vhost, exchange, routing_key, queues) -> the encoded fields between msg_id and properties
_publish_routes: dict[tuple, bytes] = {}


def _publish_route(vhost: str, queues: Sequence[str], exchange: str, routing_key: str) -> bytes:
    if len(queues) > 0xFFFF:
        raise FormatError("too many queues")
    parts = [_s(vhost), _U16.pack(len(queues))]
    parts.extend(_s(q) for q in queues)
    parts += [_s(exchange), _s(routing_key)]
    return b"".join(parts)


#: (vhost, exchange, routing_key, queues, properties) -> the encoded fields between msg_id and
#: the body's length (route, properties' length, properties), for properties of at most
#: ``_MID_PROPS_MAX`` octets. Both caches are bounded by entries (4,096) and by the octets
#: they hold (``_CACHE_OCTETS``: a wide fanout's route is kilobytes, and per-message
#: properties miss every time), cleared whole when either is reached (a miss only).
_publish_mids: dict[tuple, bytes] = {}
_MID_PROPS_MAX = 512
_CACHE_OCTETS = 1 << 20
_cached_octets = [0, 0]  # held by _publish_routes, by _publish_mids


def _cache(cache: dict, which: int, key: tuple, value: bytes) -> None:
    """Keep ``value`` in ``cache`` (one of encode_publish's two), clearing it first when it
    holds 4,096 entries or ``_CACHE_OCTETS`` octets of values (their keys hold the same
    strings again, at most as many octets)."""
    held = _cached_octets[which] + len(value)
    if len(cache) >= 4096 or held > _CACHE_OCTETS:
        cache.clear()
        held = len(value)
    _cached_octets[which] = held
    cache[key] = value


def encode_publish(
    msg_id: int, vhost: str, queues: Sequence[str], exchange: str, routing_key: str,
    properties: bytes, body: bytes,
) -> bytes:
    """PUBLISH of one message routed to ``queues`` (all durable, at least one).

    Hot path (one call per persistent publish): the fields that repeat from one publish to the
    next (vhost, queues, exchange, routing key and, when short, the properties) are encoded
    once per distinct value and cached (bounded); the CRC runs over the parts, and the record
    is joined once."""
    if queues.__class__ is not tuple:
        queues = tuple(queues)
    key = (vhost, exchange, routing_key, queues, properties)
    mid = _publish_mids.get(key)
    if mid is None:
        rkey = key[:4]
        route = _publish_routes.get(rkey)
        if route is None:
            route = _publish_route(vhost, queues, exchange, routing_key)
            _cache(_publish_routes, 0, rkey, route)
        mid = route + _U32.pack(len(properties)) + properties
        if len(properties) <= _MID_PROPS_MAX:
            _cache(_publish_mids, 1, key, mid)
    nb = len(body)
    n = len(mid) + nb + 12
    if n > MAX_PAYLOAD:
        raise FormatError("record payload too large")
    head = _U64.pack(msg_id) + mid + _U32.pack(nb)
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


def encode_delivered_runs(vhost: str, queue: str, runs: Sequence[tuple[int, int]]) -> bytes:
    """DELIVERED_RUNS: a DELIVERED of every id of the ``(first, count)`` runs (``count`` >=
    1): 16 bytes a run instead of 8 an id (the marks of a recovered backlog, issue #22)."""
    return frame(T_DELIVERED_RUNS, _s(vhost) + _s(queue) + _runs(runs))


_TX = struct.Struct(">IQ")


def encode_tx(records: Sequence[bytes]) -> bytes:
    """The TX record to write right before ``records`` (framed records): their count and
    byte length (headers included)."""
    return frame(T_TX, _TX.pack(len(records), sum(len(r) for r in records)))


def encode_id_mark(max_id: int) -> bytes:
    """The ID_MARK record: every message id used so far is at most ``max_id``."""
    return frame(T_ID_MARK, _U64.pack(max_id))


def encode_param_set(vhost: str, component: str, name: str, value: bytes) -> bytes:
    """PARAM_SET: the runtime parameter ``(vhost, component, name)`` is now ``value`` (its
    JSON text, opaque to the journal)."""
    return frame(T_PARAM_SET, _s(vhost) + _s(component) + _s(name) + _b(value))


def encode_param_clear(vhost: str, component: str, name: str) -> bytes:
    return frame(T_PARAM_CLEAR, _s(vhost) + _s(component) + _s(name))


def encode_global_set(name: str, value: bytes) -> bytes:
    """GLOBAL_SET: the global parameter ``name`` is now ``value`` (JSON text)."""
    return frame(T_GLOBAL_SET, _s(name) + _b(value))


def encode_global_clear(name: str) -> bytes:
    return frame(T_GLOBAL_CLEAR, _s(name))


# ---------------------------------------------------------------------------------------------
# Decoded records


TYPE_NAMES: dict[int, str] = {
    T_VHOST_ADD: "VHOST_ADD", T_VHOST_DELETE: "VHOST_DELETE",
    T_EXCHANGE_DECLARE: "EXCHANGE_DECLARE", T_EXCHANGE_DELETE: "EXCHANGE_DELETE",
    T_QUEUE_DECLARE: "QUEUE_DECLARE", T_QUEUE_DELETE: "QUEUE_DELETE",
    T_QUEUE_PURGE: "QUEUE_PURGE", T_BINDING_ADD: "BINDING_ADD",
    T_BINDING_REMOVE: "BINDING_REMOVE", T_PUBLISH: "PUBLISH", T_ACK: "ACK",
    T_DELIVERED: "DELIVERED", T_PUBLISH_AT: "PUBLISH_AT", T_TX: "TX",
    T_ID_MARK: "ID_MARK", T_PARAM_SET: "PARAM_SET", T_PARAM_CLEAR: "PARAM_CLEAR",
    T_GLOBAL_SET: "GLOBAL_SET", T_GLOBAL_CLEAR: "GLOBAL_CLEAR",
    T_DELIVERED_RUNS: "DELIVERED_RUNS",
}
