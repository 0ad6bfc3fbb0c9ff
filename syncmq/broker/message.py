"""Messages: immutable once published and shared by every queue they are routed to.

The content header's property list is kept exactly as received (``properties``, raw bytes from
the property-flags word on) and decoded only when a feature needs a property (persistence,
priority, TTL, the headers exchange). The body is one ``bytes`` object, never copied.
"""

from __future__ import annotations

import struct

from ..wire import _spec

_B = struct.Struct(">B")
_H = struct.Struct(">H")

# Property-flag bits of basic's content header (bit 15 is the first property).
_FLAG_HEADERS = 1 << 13
_FLAG_DELIVERY_MODE = 1 << 12


def _shortstr(s: str) -> bytes:
    b = s.encode("utf-8")
    return _B.pack(len(b)) + b


class Message:
    """One published message.

    Invariant: every attribute is written before the message is handed to a queue and never
    changed afterwards, except the lazily computed caches (``_props``, ``_exchange_rk``), whose
    racing computation by two threads yields equal values, so they need no lock.
    """

    __slots__ = (
        "exchange", "routing_key", "properties", "body", "msg_id", "_props", "_exchange_rk",
        "persistent",
    )

    def __init__(self, exchange: str, routing_key: str, properties: bytes, body: bytes) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.msg_id = 0
        self._props: _spec.BasicProperties | None = None
        self._exchange_rk: bytes | None = None
        self.persistent = _delivery_mode(properties) == 2

    @property
    def props(self) -> _spec.BasicProperties:
        """The decoded content properties (decoded once, on first use)."""
        p = self._props
        if p is None:
            p = self._props = _spec.BasicProperties.decode(self.properties)
        return p

    @property
    def headers(self) -> dict | None:
        props = self.properties
        if len(props) < 2 or not _H.unpack_from(props)[0] & _FLAG_HEADERS:
            return None
        return self.props.headers

    @property
    def exchange_rk(self) -> bytes:
        """The encoded ``exchange`` and ``routing-key`` shortstrs, shared by every delivery."""
        b = self._exchange_rk
        if b is None:
            b = self._exchange_rk = _shortstr(self.exchange) + _shortstr(self.routing_key)
        return b

    @property
    def size(self) -> int:
        return len(self.body)


def _delivery_mode(properties: bytes) -> int:
    """delivery-mode without decoding the whole header when it is cheap to skip to it."""
    if len(properties) < 2:
        return 0
    flags = _H.unpack_from(properties)[0]
    if not flags & _FLAG_DELIVERY_MODE:
        return 0
    dm = _spec.BasicProperties.decode(properties).delivery_mode
    return dm or 0
