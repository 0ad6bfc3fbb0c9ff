"""AMQP 0-9-1 framing: cutting frames out of a byte stream and encoding frames for sending.

This module owns the frame layout (``type:octet channel:short size:long payload end:0xCE``),
the content-header layout (``class-id:short weight:short body-size:longlong properties``) and
the chunking of outgoing content into frames. It knows nothing of sockets: the reactor feeds
:func:`parse_frames` its receive buffer and writes the chunk lists the ``encode_*`` functions
return with ``socket.sendmsg`` (scatter/gather; large bodies are sent as ``memoryview`` slices,
never copied). Pure and stdlib-only.

Malformed input raises :class:`AMQPConnectionError` only, with RabbitMQ's reply codes
(``rabbit_reader`` / ``rabbit_command_assembler``):

* a frame larger than frame-max (checked from the 7-octet header, before the payload arrives)
  -> 501 FRAME_ERROR (rabbit_reader ``frame_too_large``, a fatal frame error). RabbitMQ
  tolerates 8 octets of slack for clients that miscount; ``parse_frames`` is exact unless
  given ``slack``.
* a frame-end octet other than 0xCE -> 501 FRAME_ERROR (``invalid_frame_end_marker``).
* an unknown frame type, or a heartbeat frame with a payload -> 501 FRAME_ERROR
  (``analyze_frame`` returns ``error`` -> ``frame_error(unknown_frame, ...)``).
* a content header shorter than its 14 fixed octets -> 501 FRAME_ERROR (same path); a non-zero
  weight -> 505 UNEXPECTED_FRAME (``rabbit_command_assembler:process`` finds no matching
  content-header clause and reports an unexpected frame).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .errors import AMQPConnectionError

if TYPE_CHECKING:
    from ._spec import Method

__all__ = [
    "PROTOCOL_HEADER",
    "HEARTBEAT_FRAME",
    "FRAME_END_BYTE",
    "FRAME_OVERHEAD",
    "parse_frames",
    "split_frames",
    "parse_content_header",
    "encode_frame",
    "encode_method_frame",
    "encode_content",
    "encode_delivery",
]

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
#: A heartbeat frame (type 8) on channel 0.
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
FRAME_END_BYTE = b"\xce"
#: Octets a frame adds around its payload: 7 of header, 1 frame-end.
FRAME_OVERHEAD = 8

#: Bodies up to this size are copied into the frame bytes (one chunk beats three iovecs);
#: larger ones go out as memoryview slices of the stored body.
COPY_MAX = 4096

_FRAME_METHOD = 1
_FRAME_HEADER = 2
_FRAME_BODY = 3
_FRAME_HEARTBEAT = 8
_FRAME_END = 206
_FRAME_ERROR = 501
_UNEXPECTED_FRAME = 505
_INTERNAL_ERROR = 541

_END = FRAME_END_BYTE
_S_FRAME = struct.Struct(">BHI")  # frame header: type, channel, payload size
_S_HEADER_FRAME = struct.Struct(">BHIHHQ")  # + content header: class-id, weight, body-size
_S_END_BODY = struct.Struct(">BBHI")  # previous frame's end octet + a body frame header
_S_END_HEADER_FRAME = struct.Struct(">BBHIHHQ")  # end octet + header frame + content header
_S_CONTENT_HEADER = struct.Struct(">HHQ")
_unpack_frame = _S_FRAME.unpack_from
_CONTENT_TYPES = (_FRAME_METHOD, _FRAME_HEADER, _FRAME_BODY)  # (a constant tuple: one test)


def _frame_error(text: str) -> AMQPConnectionError:
    return AMQPConnectionError(_FRAME_ERROR, "FRAME_ERROR - " + text)


# --------------------------------------------------------------------------------------------
# parsing


def split_frames(
    buf: bytes | bytearray | memoryview, frame_max: int, *, slack: int = 0
) -> tuple[list[tuple[int, int, bytes]], int, AMQPConnectionError | None]:
    """Cut every complete frame out of ``buf``: ``(frames, consumed, error)``.

    ``frames`` is ``[(frame_type, channel, payload), ...]``: payloads are immutable ``bytes``
    (slices of ``buf``; a ``bytearray`` or ``memoryview`` is first copied to ``bytes`` whole,
    one memcpy instead of a view and a copy per frame); an incomplete trailing frame is left
    unconsumed. ``frame_max`` bounds the whole frame (header + payload + end octet), 0 = no
    limit, and is checked as soon as a frame's 7-octet header is there. ``slack`` octets over
    frame_max are tolerated (RabbitMQ allows 8). No view of ``buf`` outlives the call, so a
    bytearray may be resized right after. O(frames + octets copied).

    Malformed input is not raised: ``error`` is the :class:`AMQPConnectionError` (501, see the
    module docstring) of the first bad frame, ``frames`` the complete frames before it and
    ``consumed`` the octets they took, so the caller acts on them first. Else ``error`` is None.
    Runs of same-sized (method, header, body) trios take one unpack a trio: :func:`_trio_for`.
    """
    n = len(buf)
    if n < 7:
        return [], 0, None
    limit = frame_max - FRAME_OVERHEAD + slack if frame_max > 0 else 0xFFFFFFFF
    frames: list[tuple[int, int, bytes]] = []
    append = frames.append
    pos = 0
    if buf.__class__ is bytes:
        src = buf
    else:
        with memoryview(buf) as view:
            src = view.cast("B").tobytes() if view.format != "B" else view.tobytes()
    last = n - 7  # a frame header starting after this is incomplete
    trio = None  # a run's (method, header, body) sizes: see _trio_for
    trio_len = size1 = size2 = size3 = 0
    learn = 2  # how many more times this call may look for one
    while pos <= last:
        if trio is not None:
            if pos + trio_len <= n:
                (t1, c1, s1, p1, e1, t2, c2, s2, p2, e2, t3, c3, s3, p3, e3) = trio(src, pos)
                if (s1 == size1 and s2 == size2 and s3 == size3 and t1 == 1 and t2 == 2
                        and t3 == 3 and e1 == 206 and e2 == 206 and e3 == 206):
                    append((1, c1, p1))
                    append((2, c2, p2))
                    append((3, c3, p3))
                    pos += trio_len
                    continue
            trio = None  # not the same shape: frame by frame again (and perhaps learn anew)
        ftype, channel, size = _unpack_frame(src, pos)
        if size > limit:
            return frames, pos, _frame_error(
                f"type {ftype}, channel {channel}: frame of {size + FRAME_OVERHEAD} octets "
                f"is larger than frame_max {frame_max}"
            )
        end = pos + 7 + size
        if end >= n:
            break
        if src[end] != _FRAME_END:
            return frames, pos, _frame_error(
                f"type {ftype}, channel {channel}: invalid frame end octet {src[end]:#04x}"
            )
        if ftype in _CONTENT_TYPES:  # method, header or body
            append((ftype, channel, src[pos + 7:end]))
            if ftype == _FRAME_BODY and learn and end + 24 < n and len(frames) > 2:
                learn -= 1
                got = _trio_for(frames)
                if got is not None:
                    trio, trio_len, size1, size2, size3 = got
        elif ftype == _FRAME_HEARTBEAT:
            if size:
                return frames, pos, _frame_error(
                    f"heartbeat frame with a payload of {size} octets")
            append((ftype, channel, b""))
        else:
            return frames, pos, _frame_error(f"unknown frame type {ftype} on channel {channel}")
        pos = end + 1
    return frames, pos, None


_TRIOS: dict[tuple[int, int, int], object] = {}  # sizes -> unpack_from of a whole trio


def _trio_for(frames: list) -> tuple | None:
    """``frames`` ends with a method, a content header and a body frame (a publish or a
    delivery of one body frame): ``(unpack, length, size1, size2, size3)`` to take the next
    three frames in one precompiled unpack when they have the same sizes (a publisher's run
    of same-sized messages), else None. One unpack a message instead of three unpacks and
    three slices: half of split_frames' instructions at S1.

    The unpack gives each frame's type, channel, size, payload and end octet; ``split_frames``
    takes the trio only if the types are 1, 2, 3, the sizes these (already checked against
    frame_max by this call) and the end octets 206, so it cuts the same frames as frame by
    frame. Shared by every thread: the cache is only added to (a racing insert stores an
    equal Struct), and cleared past 64 shapes."""
    (t1, _, p1), (t2, _, p2), (_, _, p3) = frames[-3:]
    if t1 != 1 or t2 != 2:
        return None
    key = (len(p1), len(p2), len(p3))
    unpack = _TRIOS.get(key)
    if unpack is None:
        if len(_TRIOS) >= 64:
            _TRIOS.clear()
        unpack = _TRIOS[key] = struct.Struct(
            f">BHI{key[0]}sBBHI{key[1]}sBBHI{key[2]}sB").unpack_from
    return unpack, sum(key) + 3 * FRAME_OVERHEAD, *key


def parse_frames(
    buf: bytes | bytearray | memoryview, frame_max: int, *, slack: int = 0
) -> tuple[list[tuple[int, int, bytes]], int]:
    """:func:`split_frames` for callers that stop at the first error: ``(frames, consumed)``,
    or the error raised (the frames before it are dropped)."""
    frames, consumed, error = split_frames(buf, frame_max, slack=slack)
    if error is not None:
        raise error
    return frames, consumed


def parse_content_header(payload: bytes | bytearray | memoryview) -> tuple[int, int, bytes]:
    """Split a content-header frame payload into ``(class_id, body_size, properties_raw)``.

    ``properties_raw`` starts at the property-flags word and is kept undecoded (see
    ``BasicProperties.decode``). 501 if shorter than 14 octets, 505 if the weight is not 0.
    """
    if len(payload) < 14:
        raise _frame_error(f"content header of {len(payload)} octets is too short")
    class_id, weight, body_size = _S_CONTENT_HEADER.unpack_from(payload, 0)
    if weight:
        raise AMQPConnectionError(
            _UNEXPECTED_FRAME,
            f"UNEXPECTED_FRAME - content header with non-zero weight {weight}",
            class_id,
        )
    return class_id, body_size, bytes(payload[12:])


# --------------------------------------------------------------------------------------------
# encoding


def encode_frame(frame_type: int, channel: int, payload: bytes | bytearray | memoryview) -> bytes:
    """One complete frame as bytes."""
    return b"".join((_S_FRAME.pack(frame_type, channel, len(payload)), payload, _END))


def encode_method_frame(channel: int, method: Method) -> bytes:
    """A method frame for ``method`` on ``channel``."""
    payload = method.encode()
    return b"".join((_S_FRAME.pack(_FRAME_METHOD, channel, len(payload)), payload, _END))


def _body_chunk_size(frame_max: int, body_size: int) -> int:
    if frame_max <= 0:
        return body_size or 1
    if frame_max <= FRAME_OVERHEAD:
        raise AMQPConnectionError(
            _INTERNAL_ERROR, f"INTERNAL_ERROR - frame_max {frame_max} leaves no room for a body"
        )
    return frame_max - FRAME_OVERHEAD


def _add_body(
    lead: list[bytes], channel: int, body: bytes | bytearray | memoryview, frame_max: int
) -> list[bytes | memoryview]:
    """Append the body frames to ``lead`` (complete frames, but for the last end octet)."""
    n = len(body)
    chunk = _body_chunk_size(frame_max, n)
    if n <= chunk:
        lead.append(_S_END_BODY.pack(_FRAME_END, _FRAME_BODY, channel, n))
        if n <= COPY_MAX:
            lead.append(body)  # type: ignore[arg-type]
            lead.append(_END)
            return [b"".join(lead)]
        return [b"".join(lead), body, _END]
    view = memoryview(body)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    lead.append(_S_END_BODY.pack(_FRAME_END, _FRAME_BODY, channel, chunk))
    out: list[bytes | memoryview] = [b"".join(lead), view[:chunk]]
    full = _S_END_BODY.pack(_FRAME_END, _FRAME_BODY, channel, chunk)
    pos = chunk
    while pos < n:
        left = n - pos
        if left >= chunk:
            out.append(full)
            out.append(view[pos : pos + chunk])
        else:
            out.append(_S_END_BODY.pack(_FRAME_END, _FRAME_BODY, channel, left))
            out.append(view[pos:])
        pos += chunk
    out.append(_END)
    return out


def encode_content(
    channel: int,
    class_id: int,
    properties_raw: bytes,
    body: bytes | bytearray | memoryview,
    frame_max: int,
) -> list[bytes | memoryview]:
    """The content-header frame and body frames for one message, as chunks for ``sendmsg``.

    ``properties_raw`` is the encoded properties (flags word first). Bodies are split at
    ``frame_max - 8`` octets (``frame_max`` 0 = no limit); an empty body sends the header frame
    only. Bodies over :data:`COPY_MAX` are not copied: their frames are [header octets,
    memoryview slice, end octet (+ next header)] chunks. O(number of frames).
    """
    n = len(body)
    header = _S_HEADER_FRAME.pack(_FRAME_HEADER, channel, 12 + len(properties_raw), class_id, 0, n)
    if not n:
        return [b"".join((header, properties_raw, _END))]
    return _add_body([header, properties_raw], channel, body, frame_max)


def encode_delivery(
    channel: int,
    method_payload: bytes,
    properties_raw: bytes,
    body: bytes | bytearray | memoryview,
    frame_max: int,
) -> list[bytes | memoryview]:
    """Method frame + content header + body frames for a content-bearing method (the per-message
    hot path of ``basic.deliver`` / ``basic.get-ok`` / ``basic.return``).

    ``method_payload`` is an encoded method (class id first; the content header takes the same
    class id). A body up to :data:`COPY_MAX` octets that fits one frame comes back as a single
    bytes object built by one join; larger bodies as in :func:`encode_content`.
    """
    n = len(body)
    lead = [
        _S_FRAME.pack(_FRAME_METHOD, channel, len(method_payload)),
        method_payload,
        _S_END_HEADER_FRAME.pack(
            _FRAME_END,
            _FRAME_HEADER,
            channel,
            12 + len(properties_raw),
            method_payload[0] << 8 | method_payload[1],
            0,
            n,
        ),
        properties_raw,
    ]
    if not n:
        lead.append(_END)
        return [b"".join(lead)]
    return _add_body(lead, channel, body, frame_max)
