"""Messages: immutable once published and shared by every queue they are routed to.

The content header's property list is kept exactly as received (``properties``, raw bytes from
the property-flags word on) and decoded only when a feature needs a property (persistence,
priority, TTL, the headers exchange). The body is one ``bytes`` object, never copied.

With a memory budget (``--memory-budget``, ``syncmq.queues.spill.BodyStore``) the body of a
routed message lives in the store while queues hold it: ``BodyStore.put`` sets ``store_key``
(non-zero), ``store``, ``store_refs`` and ``body = None`` before any queue sees the message;
deliveries call :meth:`Message.load_body` when ``body`` is None. Without a budget
``store_key`` stays 0 and the other two are never set.

``size`` (the body's length) is a plain attribute, set once by the constructor (and by the
store when it adopts a body recovery never read): the queues' byte counters read it several
times per message, and a property would cost a Python call each time.
"""

from __future__ import annotations

import re
import struct

from ..wire import _spec

_B = struct.Struct(">B")
_H = struct.Struct(">H")

# Property-flag bits of basic's content header (bit 15 is the first property).
_FLAG_HEADERS = 1 << 13
_FLAG_DELIVERY_MODE = 1 << 12
_FLAG_PRIORITY = 1 << 11
_FLAG_REPLY_TO = 1 << 9
_FLAG_EXPIRATION = 1 << 8
_DECODE_FLAGS = _FLAG_DELIVERY_MODE | _FLAG_EXPIRATION
_DECODE_HIGH = _DECODE_FLAGS >> 8  # both are in the flags' high octet: one octet test
# The property lists most publishers send (none, or delivery-mode alone: what load tools
# and most clients send) -> ``persistent``: one dict lookup instead of the flags' tests
# (``methods.basic.publish`` tests membership: none of them needs a check there either)
PLAIN_PROPERTIES = {b"\x00\x00": False, b"\x10\x00\x01": False, b"\x10\x00\x02": True}


def _shortstr(s: str) -> bytes:
    # surrogateescape: a name decoded from octets that are not UTF-8 goes out as those octets
    b = s.encode("utf-8", "surrogateescape")
    return _B.pack(len(b)) + b


class Message:
    """One published message.

    Invariant: every attribute is written before the message is handed to a queue and never
    changed afterwards, except the lazily computed caches (``_props``, ``_exchange_rk``), whose
    racing computation by two threads yields equal values, so they need no lock, and
    ``store_refs``, which the body store's lock guards.
    """

    __slots__ = (
        "exchange", "routing_key", "properties", "body", "msg_id", "_props", "_exchange_rk",
        "persistent", "ttl", "cc", "bcc", "size",
        # memory budget (set by BodyStore.put; the last two only when store_key != 0)
        "store_key", "store", "store_refs",
        # a journaled publish of a confirm channel: its tracker's ``ConfirmLink`` (early
        # confirms, ``methods.confirm``), else None
        "confirm",
    )

    def __init__(self, exchange: str, routing_key: str, properties: bytes, body: bytes,
                 cc: tuple[str, ...] = (), bcc: tuple[str, ...] = ()) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.size = len(body)  # body bytes, also while the body is in the body store
        self.msg_id = 0
        self.store_key = 0
        self.confirm = None
        self._props: _spec.BasicProperties | None = None
        self._exchange_rk: bytes | None = None
        # Sender-selected distribution: routing keys from the CC and BCC headers (the BCC
        # header itself is already gone from ``properties``).
        self.cc = cc
        self.bcc = bcc
        # per-message TTL in ms (the ``expiration`` property), None when there is none
        self.ttl: int | None = None
        # delivery-mode and expiration cost one lookup for the usual property lists, else
        # one flags test unless the publisher set them
        persistent = PLAIN_PROPERTIES.get(properties)
        if persistent is not None:
            self.persistent = persistent
        else:
            self.persistent = False
            if len(properties) > 1 and properties[0] & _DECODE_HIGH:
                p = self.props
                self.persistent = p.delivery_mode == 2
                if p.expiration is not None:
                    self.ttl = _ttl(p.expiration)

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

    def load_body(self) -> bytes:
        """The body of a message whose ``body`` is None (it is in the body store): read it
        back (from disk if it spilled); the caller uses it for one delivery."""
        return self.store.load(self)

    def with_body(self) -> Message:
        """A copy carrying its body, for a delivery made after the last queue released it
        (basic.get with no-ack)."""
        m = Message.__new__(Message)
        for name in Message.__slots__:
            try:
                setattr(m, name, getattr(self, name))
            except AttributeError:
                pass
        if self.body is None:
            m.body = self.load_body()
        m.store_key = 0
        return m

    @property
    def priority(self) -> int:
        """The ``priority`` property (0 when absent); decoded only by priority queues."""
        props = self.properties
        if len(props) < 2 or not _H.unpack_from(props)[0] & _FLAG_PRIORITY:
            return 0
        return self.props.priority or 0

    @property
    def routing_keys(self) -> list[str]:
        """Every routing key the message was published with (its own, then CC, then BCC)."""
        return [self.routing_key, *self.cc, *self.bcc]

    def has_reply_to(self) -> bool:
        props = self.properties
        return len(props) >= 2 and bool(_H.unpack_from(props)[0] & _FLAG_REPLY_TO)


MAX_EXPIRY = 4294967295  # ms; RabbitMQ's ?MAX_EXPIRY_TIMER
_INT_PREFIX = re.compile(r"[+-]?[0-9]+")


def parse_expiration(value: str) -> int:
    """The ``expiration`` property as ms; ValueError carrying RabbitMQ's reason if invalid.

    As rabbit_basic:parse_expiration: ``string:to_integer`` of the value (an optional sign and
    digits), nothing may follow, and the number must be within 0 .. ``MAX_EXPIRY``.
    """
    m = _INT_PREFIX.match(value)
    if m is None:
        raise ValueError("no_integer")
    rest = value[m.end():]
    if rest:
        raise ValueError(f'{{leftover_string,"{rest}"}}')
    n = int(m.group())
    if n < 0:
        raise ValueError(f"{{value_negative,{n}}}")
    if n > MAX_EXPIRY:
        raise ValueError(f"{{value_too_large,{n}}}")
    return n


def _ttl(expiration: str) -> int:
    try:
        return parse_expiration(expiration)
    except ValueError:
        return -1  # invalid: basic.publish refuses the message (406)


def settle_copies(messages: list[Message]) -> None:
    """Queue copies of ``messages`` (each with a ``confirm`` link, ``methods.confirm``) were
    acked or rejected without requeue (``Queue.settle``, after its lock is released): tell
    their confirm trackers (``ConfirmTracker.settled``), one call per tracker."""
    t = messages[0].confirm.tracker
    for m in messages:  # (a loop, not all() of a generator: no frame per ack)
        if m.confirm.tracker is not t:
            break
    else:
        if t is not None:
            t.settled(messages)
        return
    by: dict = {}
    for m in messages:
        tr = m.confirm.tracker
        if tr is not None:
            by.setdefault(tr, []).append(m)
    for tr, ms in by.items():
        tr.settled(ms)
