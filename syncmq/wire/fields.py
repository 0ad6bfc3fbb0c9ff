"""AMQP 0-9-1 field values and field tables: the byte layout of ``table`` and ``array`` values.

This module owns the encoding and decoding of field tables (``connection.start`` properties,
``queue.declare`` arguments, the ``headers`` message property, ...) and of the primitive string
helpers the generated method codec (:mod:`syncmq.wire._spec`) calls. Pure and stdlib-only.

Type codes are RabbitMQ's (as in ``rabbit_binary_parser``), not the 0-9-1 spec's errata:

====  ==========================  ===============================================
code  wire                        Python (decode)
====  ==========================  ===============================================
t     octet, 0 = false            bool
b     int8                        int
B     uint8                       int
s     int16                       int
u     uint16                      int
I     int32                       int
i     uint32                      int
l     int64                       int  (``L`` is accepted on decode as well, as RabbitMQ does)
f     float32                     float
d     float64                     float
D     scale octet + int32         decimal.Decimal
S     uint32 length + octets      str if valid UTF-8, else bytes
A     uint32 length + values      list
T     uint64 seconds since epoch  naive UTC datetime.datetime (an int if past year 9999)
F     uint32 length + table       dict
V     nothing                     None
x     uint32 length + octets      bytes
====  ==========================  ===============================================

Encoding picks the type from the Python value: bool -> t, int -> I (or l when it does not fit
32 bits, or T for 2**63 .. 2**64-1, which only a timestamp can hold), float -> d, Decimal -> D, str -> S, bytes/bytearray/memoryview -> x, dict -> F,
list/tuple -> A, datetime -> T, None -> V.

Errors (reply texts are RabbitMQ-style, ``"SYNTAX_ERROR - explanation"``): anything malformed
on decode raises :class:`AMQPConnectionError` with 502 SYNTAX_ERROR
(never IndexError, struct.error, UnicodeDecodeError or RecursionError). Table keys are decoded
as UTF-8 with ``surrogateescape`` so that any key round-trips to the same octets. Values that
cannot be encoded (a key longer than 255 octets, an int outside -2**63 .. 2**64-1, an unsupported type,
nesting deeper than :data:`MAX_DEPTH`) raise :class:`AMQPConnectionError` with 541
INTERNAL_ERROR: encoding is the broker's own doing, not the peer's. Every decoded table
re-encodes (equal values, though not always the same type codes: ``i`` comes back as ``I``/``l``,
``S`` holding invalid UTF-8 as ``x``).
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

from .errors import AMQPConnectionError

__all__ = [
    "MAX_DEPTH",
    "Long",
    "decode_table",
    "decode_table_body",
    "encode_table",
    "decode_array",
    "encode_array",
    "decode_shortstr",
    "decode_longstr",
    "encode_shortstr",
    "encode_longstr",
    "encode_value",
    "shortstr_bytes",
    "longstr_bytes",
    "truncated_shortstr",
]

#: Maximum nesting of tables/arrays inside one another (decode and encode).
MAX_DEPTH = 64

_SYNTAX_ERROR = 502
_INTERNAL_ERROR = 541

_S_B = struct.Struct(">B")
_S_b = struct.Struct(">b")
_S_H = struct.Struct(">H")
_S_h = struct.Struct(">h")
_S_I = struct.Struct(">I")
_S_i = struct.Struct(">i")
_S_Q = struct.Struct(">Q")
_S_q = struct.Struct(">q")
_S_f = struct.Struct(">f")
_S_d = struct.Struct(">d")
_S_Bi = struct.Struct(">Bi")

_U32 = _S_I.unpack_from
_P32 = _S_I.pack

#: ``_BYTE[n] == bytes((n,))``: one-octet length prefixes without a struct call.
_BYTE = tuple(bytes((i,)) for i in range(256))

_EMPTY_TABLE = b"\x00\x00\x00\x00"

_EPOCH = datetime.datetime(1970, 1, 1)
_MAX_TIMESTAMP = int((datetime.datetime.max - _EPOCH).total_seconds())
_ONE_SECOND = datetime.timedelta(seconds=1)
_UTC = datetime.UTC

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1

_DECODE_ERRORS = (struct.error, IndexError, ValueError, OverflowError, RecursionError)


def _syntax(text: str) -> AMQPConnectionError:
    return AMQPConnectionError(_SYNTAX_ERROR, "SYNTAX_ERROR - " + text)


def _internal(text: str) -> AMQPConnectionError:
    return AMQPConnectionError(_INTERNAL_ERROR, "INTERNAL_ERROR - " + text)


# --------------------------------------------------------------------------------------------
# decoding


# Fixed-size scalar types: code -> (unpack_from, size, name in the error text)
_FIXED = {
    73: (_S_i.unpack_from, 4, "int32"),  # 'I'
    108: (_S_q.unpack_from, 8, "int64"),  # 'l' (RabbitMQ reads 'l' and 'L' as signed)
    76: (_S_q.unpack_from, 8, "int64"),  # 'L'
    100: (_S_d.unpack_from, 8, "double"),  # 'd'
    102: (_S_f.unpack_from, 4, "float"),  # 'f'
    98: (_S_b.unpack_from, 1, "int8"),  # 'b'
    66: (_S_B.unpack_from, 1, "uint8"),  # 'B'
    115: (_S_h.unpack_from, 2, "int16"),  # 's'
    117: (_S_H.unpack_from, 2, "uint16"),  # 'u'
    105: (_U32, 4, "uint32"),  # 'i'
}


def _span(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Start and end of a value with a 32-bit length prefix at ``pos`` (within ``end``)."""
    if pos + 4 > end:
        raise _syntax(f"field table: truncated {what}")
    n = _U32(buf, pos)[0]
    pos += 4
    vend = pos + n
    if vend > end:
        raise _syntax(f"field table: {what} runs past the end")
    return pos, vend


def _decode_value(buf: bytes, code: int, pos: int, end: int, depth: int) -> tuple[Any, int]:
    """Decode one value of type ``code`` at ``pos``; it must end at or before ``end``."""
    # Ordered by how often each type shows up in practice.
    if code == 83:  # 'S' long string
        pos, vend = _span(buf, pos, end, "long string")
        raw = buf[pos:vend]
        try:
            return raw.decode(), vend
        except UnicodeDecodeError:
            return raw, vend
    if code == 116:  # 't' bool
        if pos + 1 > end:
            raise _syntax("field table: truncated bool")
        return buf[pos] != 0, pos + 1
    fixed = _FIXED.get(code)
    if fixed is not None:
        unpack, size, what = fixed
        if pos + size > end:
            raise _syntax(f"field table: truncated {what}")
        return unpack(buf, pos)[0], pos + size
    if code == 70:  # 'F' nested table
        pos, vend = _span(buf, pos, end, "nested table")
        return _decode_entries(buf, pos, vend, depth + 1), vend
    if code == 65:  # 'A' array
        pos, vend = _span(buf, pos, end, "array")
        return _decode_items(buf, pos, vend, depth + 1), vend
    if code == 120:  # 'x' byte array
        pos, vend = _span(buf, pos, end, "byte array")
        return buf[pos:vend], vend
    if code == 84:  # 'T' timestamp
        if pos + 8 > end:
            raise _syntax("field table: truncated timestamp")
        seconds = _S_Q.unpack_from(buf, pos)[0]
        if seconds > _MAX_TIMESTAMP:
            return seconds, pos + 8  # beyond datetime's range: keep the number
        return _EPOCH + datetime.timedelta(seconds=seconds), pos + 8
    if code == 86:  # 'V' void
        return None, pos
    if code == 68:  # 'D' decimal
        if pos + 5 > end:
            raise _syntax("field table: truncated decimal")
        scale, value = _S_Bi.unpack_from(buf, pos)
        return decimal.Decimal(value).scaleb(-scale), pos + 5
    raise _syntax(f"field table: unknown field type {chr(code)!r}")


def _decode_entries(buf: bytes, pos: int, end: int, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise _syntax(f"field table: nested deeper than {MAX_DEPTH} levels")
    table: dict[str, Any] = {}
    while pos < end:
        kend = pos + 1 + buf[pos]
        if kend >= end:  # the key and at least the type code must fit
            raise _syntax("field table: truncated entry")
        key = buf[pos + 1 : kend].decode("utf-8", "surrogateescape")
        code = buf[kend]
        pos = kend + 1
        # The commonest types inline (same checks as _decode_value), the rest there.
        if code == 83 and pos + 4 <= end:  # 'S'
            vend = pos + 4 + _U32(buf, pos)[0]
            if vend > end:
                raise _syntax("field table: long string runs past the end")
            raw = buf[pos + 4 : vend]
            try:
                table[key] = raw.decode()
            except UnicodeDecodeError:
                table[key] = raw
            pos = vend
        elif code == 73 and pos + 4 <= end:  # 'I'
            table[key] = _S_i.unpack_from(buf, pos)[0]
            pos += 4
        else:
            table[key], pos = _decode_value(buf, code, pos, end, depth)
    return table


def _decode_items(buf: bytes, pos: int, end: int, depth: int) -> list[Any]:
    if depth > MAX_DEPTH:
        raise _syntax(f"field array: nested deeper than {MAX_DEPTH} levels")
    items: list[Any] = []
    append = items.append
    while pos < end:
        value, pos = _decode_value(buf, buf[pos], pos + 1, end, depth)
        append(value)
    return items


def decode_table_body(buf: bytes, start: int, end: int) -> dict[str, Any]:
    """Decode the entries of a field table occupying ``buf[start:end]`` (no length prefix).

    ``buf`` must be ``bytes`` and ``end <= len(buf)``. O(size of the table).
    """
    try:
        return _decode_entries(buf, start, end, 0)
    except _DECODE_ERRORS:
        raise _syntax("field table: malformed") from None


def decode_table(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[dict[str, Any], int]:
    """Decode a length-prefixed field table at ``offset``; return ``(table, new_offset)``.

    Raises :class:`AMQPConnectionError` (502) on anything malformed. O(size of the table).
    """
    if buf.__class__ is not bytes:
        buf = bytes(buf)
    try:
        n = _U32(buf, offset)[0]
        start = offset + 4
        end = start + n
        if end > len(buf):
            raise _syntax("field table: length runs past the end")
        if not n:
            return {}, end
        return _decode_entries(buf, start, end, 0), end
    except _DECODE_ERRORS:
        raise _syntax("field table: malformed") from None


def decode_array(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[list[Any], int]:
    """Decode a length-prefixed field array at ``offset``; return ``(items, new_offset)``."""
    if buf.__class__ is not bytes:
        buf = bytes(buf)
    try:
        n = _U32(buf, offset)[0]
        start = offset + 4
        end = start + n
        if end > len(buf):
            raise _syntax("field array: length runs past the end")
        return _decode_items(buf, start, end, 0), end
    except _DECODE_ERRORS:
        raise _syntax("field array: malformed") from None


def decode_shortstr(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[str, int]:
    """Decode a short string (octet length + UTF-8) at ``offset``; return ``(text, new_offset)``.

    Invalid UTF-8 is kept lossless with ``surrogateescape``.
    """
    try:
        end = offset + 1 + buf[offset]
        if end > len(buf):
            raise _syntax("short string runs past the end")
        return bytes(buf[offset + 1 : end]).decode("utf-8", "surrogateescape"), end
    except IndexError:
        raise _syntax("truncated short string") from None


def decode_longstr(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[bytes, int]:
    """Decode a long string (uint32 length + octets) at ``offset``; return ``(octets, new_offset)``."""
    try:
        end = offset + 4 + _U32(buf, offset)[0]
    except struct.error:
        raise _syntax("truncated long string") from None
    if end > len(buf):
        raise _syntax("long string runs past the end")
    return bytes(buf[offset + 4 : end]), end


# --------------------------------------------------------------------------------------------
# encoding


def shortstr_bytes(value: Any) -> bytes:
    """The octets of a short-string value (str is UTF-8, surrogateescape; bytes-likes as is)."""
    if value.__class__ is str:
        try:
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise _internal("short string is not encodable as UTF-8") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return shortstr_bytes(str(value))
    if value is None:
        return b""
    raise _internal(f"cannot encode {type(value).__name__} as a short string")


def longstr_bytes(value: Any) -> bytes:
    """The octets of a long-string value (str is UTF-8; bytes-likes as is; None is empty)."""
    return shortstr_bytes(value)


def encode_shortstr(value: Any) -> bytes:
    """Octet length + octets; more than 255 octets raises :class:`AMQPConnectionError` (541)."""
    raw = value if value.__class__ is bytes else shortstr_bytes(value)
    n = len(raw)
    if n > 255:
        raise _internal(f"short string of {n} octets is longer than 255")
    return _BYTE[n] + raw


def truncated_shortstr(value: Any) -> bytes:
    """Like :func:`encode_shortstr`, but cuts text longer than 255 octets (at a character
    boundary) instead of failing. Used for ``reply-text``, which may quote peer-chosen names."""
    raw = value if value.__class__ is bytes else shortstr_bytes(value)
    if len(raw) > 255:
        raw = raw[:255].decode("utf-8", "ignore").encode("utf-8")
    return _BYTE[len(raw)] + raw


def encode_longstr(value: Any) -> bytes:
    """uint32 length + octets."""
    raw = value if value.__class__ is bytes else longstr_bytes(value)
    return _P32(len(raw)) + raw


def _encode_key(key: Any, out: list[bytes]) -> None:
    if key.__class__ is str:
        try:
            raw = key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise _internal("field table key is not encodable as UTF-8") from None
    elif isinstance(key, (bytes, bytearray)):
        raw = bytes(key)
    else:
        raise _internal(f"field table key must be str, not {type(key).__name__}")
    n = len(raw)
    if n > 255:
        raise _internal(f"field table key of {n} octets is longer than 255")
    out.append(_BYTE[n])
    out.append(raw)


class Long(int):
    """An int always encoded as ``l`` (signed 64-bit), however small: RabbitMQ types some
    values so (the ``count`` of an ``x-death`` entry) and clients cast them to a long."""

    __slots__ = ()


def _encode_value(value: Any, out: list[bytes], depth: int) -> None:
    """Append the type code and encoding of ``value`` to ``out``."""
    t = value.__class__
    if t is str:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise _internal("field value is not encodable as UTF-8") from None
        out.append(b"S")
        out.append(_P32(len(raw)))
        out.append(raw)
    elif t is bool:
        out.append(b"t\x01" if value else b"t\x00")
    elif t is int:
        if _INT32_MIN <= value <= _INT32_MAX:
            out.append(b"I")
            out.append(_S_i.pack(value))
        elif _INT64_MIN <= value <= _INT64_MAX:
            out.append(b"l")
            out.append(_S_q.pack(value))
        elif _INT64_MAX < value <= _UINT64_MAX:
            # Only a timestamp holds an unsigned 64-bit value; it is also what such a number
            # decoded from (a timestamp past year 9999), so every decoded table re-encodes.
            out.append(b"T")
            out.append(_S_Q.pack(value))
        else:
            raise _internal(f"integer {value} does not fit in a 64-bit field")
    elif t is dict:
        out.append(b"F")
        out.append(_table_bytes(value, depth + 1))
    elif value is None:
        out.append(b"V")
    elif t is float:
        out.append(b"d")
        out.append(_S_d.pack(value))
    elif t is bytes or t is bytearray or t is memoryview:
        out.append(b"x")
        out.append(_P32(len(value)))
        out.append(bytes(value))
    elif t is list or t is tuple:
        out.append(b"A")
        out.append(_array_bytes(value, depth + 1))
    elif t is datetime.datetime:
        out.append(b"T")
        out.append(_S_Q.pack(_timestamp_seconds(value)))
    elif t is decimal.Decimal:
        out.append(b"D")
        out.append(_decimal_octets(value))
    elif t is Long:
        out.append(b"l")
        out.append(_S_q.pack(value))
    # Subclasses of the above (IntEnum, OrderedDict, ...), checked in the same order.
    elif isinstance(value, str):
        _encode_value(str(value), out, depth)
    elif isinstance(value, bool):
        _encode_value(bool(value), out, depth)
    elif isinstance(value, int):
        _encode_value(int(value), out, depth)
    elif isinstance(value, dict):
        _encode_value(dict(value), out, depth)
    elif isinstance(value, float):
        _encode_value(float(value), out, depth)
    elif isinstance(value, (bytes, bytearray)):
        _encode_value(bytes(value), out, depth)
    elif isinstance(value, (list, tuple)):
        _encode_value(list(value), out, depth)
    elif isinstance(value, datetime.datetime):
        out.append(b"T")
        out.append(_S_Q.pack(_timestamp_seconds(value)))
    elif isinstance(value, decimal.Decimal):
        out.append(b"D")
        out.append(_decimal_octets(value))
    else:
        raise _internal(f"cannot encode {type(value).__name__} in a field table")


def _timestamp_seconds(value: datetime.datetime) -> int:
    if value.tzinfo is not None:
        value = value.astimezone(_UTC).replace(tzinfo=None)
    seconds = (value - _EPOCH) // _ONE_SECOND
    if seconds < 0:
        raise _internal("timestamp before 1970 cannot be encoded")
    return seconds


def _decimal_octets(value: decimal.Decimal) -> bytes:
    if not value.is_finite():
        raise _internal("decimal value must be finite")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    unscaled = 0
    for digit in digits:
        unscaled = unscaled * 10 + digit
    if exponent > 0:
        unscaled *= 10**exponent
        exponent = 0
    if sign:
        unscaled = -unscaled
    scale = -exponent
    if scale > 255 or not _INT32_MIN <= unscaled <= _INT32_MAX:
        raise _internal(f"decimal {value} does not fit a scale octet and a signed 32-bit value")
    return _S_Bi.pack(scale, unscaled)


def _table_bytes(table: dict[Any, Any], depth: int) -> bytes:
    if depth > MAX_DEPTH:
        raise _internal(f"field table nested deeper than {MAX_DEPTH} levels")
    if not table:
        return _EMPTY_TABLE
    parts: list[bytes] = []
    for key, value in table.items():
        _encode_key(key, parts)
        _encode_value(value, parts, depth)
    body = b"".join(parts)
    return _P32(len(body)) + body


def _array_bytes(items: Any, depth: int) -> bytes:
    if depth > MAX_DEPTH:
        raise _internal(f"field array nested deeper than {MAX_DEPTH} levels")
    parts: list[bytes] = []
    for value in items:
        _encode_value(value, parts, depth)
    body = b"".join(parts)
    return _P32(len(body)) + body


def encode_table(table: dict[str, Any] | None) -> bytes:
    """Encode ``table`` with its uint32 length prefix; ``None`` or ``{}`` is the empty table.

    O(size of the table). Raises :class:`AMQPConnectionError` (541) for unencodable values.
    """
    if not table:
        return _EMPTY_TABLE
    return _table_bytes(table, 0)


def encode_array(items: list[Any] | tuple[Any, ...] | None) -> bytes:
    """Encode a field array with its uint32 length prefix."""
    if not items:
        return _EMPTY_TABLE
    return _array_bytes(items, 0)


def encode_value(value: Any) -> bytes:
    """Encode one field value with its type code (as it appears inside a table or array)."""
    parts: list[bytes] = []
    _encode_value(value, parts, 0)
    return b"".join(parts)
