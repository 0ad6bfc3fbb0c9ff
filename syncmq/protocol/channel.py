"""Sans-IO state of one AMQP channel as the wire sees it: open/closing (its transitions are the
``CHANNEL`` table of ``state.py``, applied by ``ConnectionProtocol``), and content assembly.

A content-bearing method (``basic.publish``) must be followed on the same channel by exactly one
content header frame and then body frames until ``body_size`` bytes have arrived; any other frame
on that channel in between is a 505 UNEXPECTED_FRAME connection error (frames of other channels
may interleave). The assembled body is one immutable ``bytes`` object: a single body frame's
payload is used as it is, several are joined once.

Also here: the per-delivery encoder (``encode_deliver``), the hot path of every consumer, and
the publisher confirm's frame (``encode_confirm``).

Owned by the connection's worker thread; no locks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from ..wire.frames import (
    COPY_MAX,
    FRAME_END_BYTE,
    FRAME_OVERHEAD,
    encode_delivery,
    parse_content_header,
)
from .state import ChState

OPEN = ChState.OPEN
CLOSING = ChState.CLOSING  # we sent channel.close and wait for close-ok; the rest is dropped
PEER_CLOSED = ChState.PEER_CLOSED  # the client sent channel.close; dropped until close-ok

_EXPECT_METHOD = 0
_EXPECT_HEADER = 1
_EXPECT_BODY = 2

_HH = struct.Struct(">HH")
_QB = struct.Struct(">QB")
_B = struct.Struct(">B")
# basic.deliver's three frame heads: the method frame's (type 1), the content header frame's
# after the method frame's end octet (type 2; class 60, weight 0, body size) and the body
# frame's after the header frame's end octet (type 3)
_S_METHOD_HEAD = struct.Struct(">BHI")
_S_HEADER_HEAD = struct.Struct(">BBHIHHQ")
_S_BODY_HEAD = struct.Struct(">BBHI")
_END = FRAME_END_BYTE


class ChannelProtocol:
    """Wire-level state of one channel (content assembly and open/closing)."""

    __slots__ = (
        "channel_id", "state", "_expect", "_method", "_props", "_body_size", "_parts",
        "_received", "max_body_size", "_last_publish", "_last_method",
    )

    def __init__(self, channel_id: int, max_body_size: int, state: ChState = OPEN) -> None:
        self.channel_id = channel_id
        self.state = state  # changed by ConnectionProtocol only, by the table in state.py
        self.max_body_size = max_body_size
        self._expect = _EXPECT_METHOD
        self._method: _spec.Method | None = None
        self._props = b""
        self._body_size = 0
        self._parts: list[bytes] = []
        self._received = 0
        self._last_publish = b""  # method payload of the last fast-path publish (connection._fast)
        self._last_method: _spec.Method | None = None  # and its decoded method

    @property
    def expecting_content(self) -> bool:
        return self._expect != _EXPECT_METHOD

    def _pending_ids(self) -> tuple[int, int]:
        """Class and method id of the content method being assembled (RabbitMQ reports
        content errors against it), 0/0 when there is none."""
        m = self._method
        return (m.CLASS_ID, m.METHOD_ID) if m is not None else (0, 0)

    def method_frame(self, method: _spec.Method) -> tuple | None:
        """Take a decoded method; returns a complete event or None while content is pending.

        Events: ``(method, None, None)`` for a method without content; the content event is
        returned by :meth:`body_frame`/:meth:`header_frame` once complete.
        """
        if self._expect != _EXPECT_METHOD:
            # rabbit_command_assembler:process, content_header / content_body states
            raise AMQPConnectionError(
                _spec.UNEXPECTED_FRAME,
                "UNEXPECTED_FRAME - expected content header for class 60, got non content "
                "header frame instead" if self._expect == _EXPECT_HEADER else
                "UNEXPECTED_FRAME - expected content body, got non content body frame instead",
                *self._pending_ids(),
            )
        if method.HAS_CONTENT:
            self._method = method
            self._expect = _EXPECT_HEADER
            return None
        return (method, None, None)

    def header_frame(self, payload: bytes) -> tuple | None:
        """Take a content header payload; returns the content event if the body is empty."""
        if self._expect != _EXPECT_HEADER:
            raise AMQPConnectionError(
                _spec.UNEXPECTED_FRAME,
                "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
                if self._expect == _EXPECT_METHOD else
                "UNEXPECTED_FRAME - expected content body, got non content body frame instead",
                *self._pending_ids(),
            )
        method = self._method
        class_id, body_size, props = parse_content_header(payload)
        if class_id != method.CLASS_ID:
            raise AMQPConnectionError(
                _spec.UNEXPECTED_FRAME,
                f"UNEXPECTED_FRAME - expected content header for class {method.CLASS_ID}, "
                f"got one for class {class_id} instead",
                method.CLASS_ID, method.METHOD_ID,
            )
        if body_size > self.max_body_size:
            # RabbitMQ: a message over max_message_size is a soft (channel) error.
            self._expect = _EXPECT_BODY
            self._body_size = body_size
            self._props = b""
            self._parts = []
            self._received = 0
            self._method = None
            raise AMQPChannelError(
                _spec.PRECONDITION_FAILED,
                f"PRECONDITION_FAILED - message size {body_size} is larger than configured "
                f"max size {self.max_body_size}",
                method.CLASS_ID, method.METHOD_ID,
            )
        if body_size == 0:
            self._expect = _EXPECT_METHOD
            self._method = None
            return (method, props, b"")
        self._props = props
        self._body_size = body_size
        self._parts = []
        self._received = 0
        self._expect = _EXPECT_BODY
        return None

    def body_frame(self, payload: bytes) -> tuple | None:
        """Take a body frame payload; returns the content event when the body is complete."""
        if self._expect != _EXPECT_BODY:
            raise AMQPConnectionError(
                _spec.UNEXPECTED_FRAME,
                "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
                if self._expect == _EXPECT_METHOD
                else "UNEXPECTED_FRAME - expected content header for class 60, got non "
                "content header frame instead",
                *self._pending_ids(),
            )
        self._received += len(payload)
        if self._received > self._body_size:
            raise AMQPConnectionError(
                _spec.FRAME_ERROR,
                f"FRAME_ERROR - content body larger than the declared size {self._body_size}",
            )
        if self._method is None:
            # discarding an oversize message (see header_frame)
            if self._received == self._body_size:
                self._expect = _EXPECT_METHOD
            return None
        if self._received < self._body_size:
            self._parts.append(payload)
            return None
        parts = self._parts
        if parts:
            parts.append(payload)
            body = b"".join(parts)
        else:
            body = payload
        event = (self._method, self._props, body)
        self._expect = _EXPECT_METHOD
        self._method = None
        self._props = b""
        self._parts = []
        return event


def shortstr(s: str) -> bytes:
    """Encode a shortstr (length octet + UTF-8). Raises ValueError when over 255 bytes."""
    b = s.encode("utf-8")
    if len(b) > 255:
        raise ValueError("shortstr longer than 255 bytes")
    return _B.pack(len(b)) + b


_DELIVER_IDS = _HH.pack(_spec.Basic.Deliver.CLASS_ID, _spec.Basic.Deliver.METHOD_ID)
_GET_OK_IDS = _HH.pack(_spec.Basic.GetOk.CLASS_ID, _spec.Basic.GetOk.METHOD_ID)
_L = struct.Struct(">L")


def deliver_prefix(consumer_tag: str) -> bytes:
    """The constant start of every ``basic.deliver`` payload for one consumer."""
    return _DELIVER_IDS + shortstr(consumer_tag)


def deliver_encoder(channel_id: int, prefix: bytes, frame_max: int,
                    out: list) -> Callable[[int, bool, bytes, bytes, bytes], None]:
    """The encoder of one run of ``basic.deliver`` methods with their contents (the hot path of
    every consumer): ``encode(delivery_tag, redelivered, exchange_rk, props, body)`` appends
    one delivery's chunks to ``out``.

    What is the same for every delivery of the run (channel, the consumer's ``prefix``,
    frame_max) is bound once. A body of 1 .. ``COPY_MAX`` octets that fits one frame (the
    common case) is a single bytes object: the three frames built by one join of the constant
    parts (``prefix``, the message's ``exchange_rk``, ``props`` and ``body``) and three
    precompiled struct packs. Anything else goes through ``encode_delivery`` (larger bodies
    as memoryview slices, no copy).
    """
    small = COPY_MAX if frame_max <= 0 else min(COPY_MAX, frame_max - FRAME_OVERHEAD)
    head_size = len(prefix) + 9  # + the exchange_rk: the method payload's size
    pack_method = _S_METHOD_HEAD.pack
    pack_tag = _QB.pack
    pack_header = _S_HEADER_HEAD.pack
    pack_body = _S_BODY_HEAD.pack
    join = b"".join
    append = out.append
    # The parts that depend only on the exchange_rk object and the props' and body's sizes,
    # kept from the last delivery (a run's messages share them): one pack a delivery, not 3
    last_rk = None
    last_props = last_n = -1
    head = mid = tail = b""

    def encode(delivery_tag: int, redelivered: bool, exchange_rk: bytes, props: bytes,
               body: bytes) -> None:
        nonlocal last_rk, last_props, last_n, head, mid, tail
        n = len(body)
        if exchange_rk is not last_rk or n != last_n or len(props) != last_props:
            if not 0 < n <= small:
                out.extend(encode_delivery(
                    channel_id, prefix + pack_tag(delivery_tag, redelivered) + exchange_rk,
                    props, body, frame_max))
                return
            last_rk = exchange_rk
            last_n = n
            last_props = len(props)
            head = pack_method(1, channel_id, head_size + len(exchange_rk)) + prefix
            mid = exchange_rk + pack_header(206, 2, channel_id, 12 + last_props, 60, 0, n)
            tail = pack_body(206, 3, channel_id, n)
        append(join((head, pack_tag(delivery_tag, redelivered), mid, props, tail, body, _END)))

    return encode


def encode_deliver(channel_id: int, prefix: bytes, delivery_tag: int, redelivered: bool,
                   exchange_rk: bytes, props: bytes, body: bytes, frame_max: int) -> list:
    """Chunks for one ``basic.deliver`` with its content: :func:`deliver_encoder`'s octets
    for a single delivery (``Channel._record_locked`` for a batch of one), without building
    an encoder (three packs and one join for a body of 1 .. ``COPY_MAX`` octets in one
    frame; ``encode_delivery`` for anything else)."""
    n = len(body)
    if 0 < n <= COPY_MAX and (frame_max <= 0 or n <= frame_max - FRAME_OVERHEAD):
        return [b"".join((
            _S_METHOD_HEAD.pack(1, channel_id, len(prefix) + 9 + len(exchange_rk)), prefix,
            _QB.pack(delivery_tag, redelivered), exchange_rk,
            _S_HEADER_HEAD.pack(206, 2, channel_id, 12 + len(props), 60, 0, n), props,
            _S_BODY_HEAD.pack(206, 3, channel_id, n), body, _END,
        ))]
    return encode_delivery(channel_id, prefix + _QB.pack(delivery_tag, redelivered)
                           + exchange_rk, props, body, frame_max)


_S_CONFIRM = struct.Struct(">BHIHHQBB")  # a whole basic.ack/nack frame (payload: 13 octets)
_ACK_ID = _spec.Basic.Ack.METHOD_ID
_NACK_ID = _spec.Basic.Nack.METHOD_ID


def encode_confirm(channel_id: int, delivery_tag: int, multiple: bool, nack: bool) -> bytes:
    """The frame of one publisher confirm: ``basic.ack`` (``multiple``) or, with ``nack``,
    ``basic.nack`` (``multiple``, requeue false); the same octets as encoding the method,
    in one pack (tests/test_hot_path.py compares them)."""
    return _S_CONFIRM.pack(1, channel_id, 13, 60, _NACK_ID if nack else _ACK_ID,
                           delivery_tag, 1 if multiple else 0, 206)


def encode_get_ok(
    channel_id: int,
    delivery_tag: int,
    redelivered: bool,
    exchange_rk: bytes,
    message_count: int,
    props: bytes,
    body: bytes,
    frame_max: int,
) -> list:
    """Chunks for one ``basic.get-ok`` with its content."""
    payload = (
        _GET_OK_IDS + _QB.pack(delivery_tag, 1 if redelivered else 0) + exchange_rk
        + _L.pack(message_count)
    )
    return encode_delivery(channel_id, payload, props, body, frame_max)
