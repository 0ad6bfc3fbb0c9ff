"""A dynamic shovel's definition (the value of the runtime parameter ``shovel``): RabbitMQ
3.10's keys, validation and defaults (``rabbit_shovel_parameters``).

:func:`validate` collects every problem, in RabbitMQ's order and with its texts, and raises
one :class:`ParameterError` whose text is RabbitMQ's reason (``Validation failed\\n\\n`` and
one line per problem). :func:`parse` turns a valid definition into a :class:`ShovelSpec`.

Differences, stated: ``src-protocol``/``dest-protocol`` accept only ``amqp091`` (syncmq has
no AMQP 1.0 client); the Erlang line wrapping of long terms in texts is not reproduced; the
check that the user setting the parameter may reach a direct URI's vhost is not made (the
store's ``validate`` is not given the user).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..broker.erlterm import term
from ..broker.parameters import validation_failed
from . import uri as urimod
from .validation import binary, boolean, enum, number, proplist, uris

DEFAULT_PREFETCH = 1000
DEFAULT_RECONNECT_DELAY = 5
ACK_MODES = ("no-ack", "on-publish", "on-confirm")
PROTOCOLS = ("amqp091",)

# dest-publish-properties keys -> the kind of value (pika's BasicProperties attribute names)
PUBLISH_PROPERTIES = {
    "content_type": "str", "content_encoding": "str", "delivery_mode": "num",
    "priority": "num", "correlation_id": "str", "reply_to": "str", "expiration": "str",
    "message_id": "str", "timestamp": "num", "type": "str", "user_id": "str",
    "app_id": "str", "cluster_id": "str",
}


def _delete_after(key, v):
    if v in ("never", "queue-length") or (
            isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return None
    return (f'{key} should be a number greater than or equal to 0, "never" or '
            f'"queue-length", actually was {term(v)}')


def _queue_name(key, v):
    err = binary(key, v)
    if err is None and len(v.encode()) > 255:
        return f"{key} should be less than 255 bytes, actually was {len(v.encode())}"
    return err


def _properties(key, v):
    if not isinstance(v, dict):
        return [f"{key} not a list {term(v)}"]
    checks = {k: (binary if kind == "str" else number) for k, kind in
              PUBLISH_PROPERTIES.items()}
    return proplist(key, [(k, c, False) for k, c in checks.items()], v)


# (key, check, mandatory), in RabbitMQ's order: the shovel's, the source's, the destination's
VALIDATION = [
    ("reconnect-delay", number, False),
    ("ack-mode", enum(ACK_MODES), False),
    ("src-protocol", enum(PROTOCOLS), False),
    ("dest-protocol", enum(PROTOCOLS), False),
    ("src-uri", uris, True),
    ("src-exchange", binary, False),
    ("src-exchange-key", binary, False),
    ("src-queue", binary, False),
    ("prefetch-count", number, False),
    ("src-prefetch-count", number, False),
    ("delete-after", _delete_after, False),
    ("src-delete-after", _delete_after, False),
    ("dest-uri", uris, True),
    ("dest-exchange", binary, False),
    ("dest-exchange-key", binary, False),
    ("dest-queue", _queue_name, False),
    ("add-forward-headers", boolean, False),
    ("add-timestamp-header", boolean, False),
    ("dest-add-forward-headers", boolean, False),
    ("dest-add-timestamp-header", boolean, False),
    ("publish-properties", _properties, False),
    ("dest-publish-properties", _properties, False),
]


def _one_of(value: dict, a: str, b: str) -> str:
    has_a, has_b = a in value, b in value
    return "both" if has_a and has_b else ("zero" if not (has_a or has_b) else "one")


def problems(name: str, value: Any) -> list[str]:
    """Every problem with a definition, RabbitMQ's texts in its order (empty: valid)."""
    if not isinstance(value, dict):
        return [f"{name} not a list {term(value)}"]
    out = []
    src = _one_of(value, "src-exchange", "src-queue")
    if src == "zero":
        out.append("Must specify 'src-exchange' or 'src-queue'")
    elif src == "both":
        out.append("Cannot specify 'src-exchange' and 'src-queue'")
    delete_after = value.get("src-delete-after", value.get("delete-after"))
    if (isinstance(delete_after, int) and not isinstance(delete_after, bool)
            and value.get("ack-mode") == "no-ack"):
        out.append("Cannot specify 'no-ack' and numerical 'delete-after'")
    if _one_of(value, "dest-exchange", "dest-queue") == "both":
        out.append("Cannot specify 'dest-exchange' and 'dest-queue'")
    return out + proplist(name, VALIDATION, value)


def validate(vhost: str, name: str, value: Any) -> None:
    """The store's ``validate`` for the component ``shovel``."""
    errs = problems(name, value)
    if errs:
        raise validation_failed(*errs)


@dataclass
class ShovelSpec:
    """A valid definition, parsed (RabbitMQ's defaults filled in). Immutable once built."""

    vhost: str
    name: str
    src_uris: list[str]
    dest_uris: list[str]
    src_queue: str | None
    src_exchange: str | None
    src_exchange_key: str
    dest_queue: str | None
    dest_exchange: str | None
    dest_exchange_key: str | None
    ack_mode: str
    prefetch: int
    delete_after: str | int
    reconnect_delay: float
    add_forward_headers: bool
    add_timestamp_header: bool
    publish_properties: dict = field(default_factory=dict)

    def source_details(self) -> dict:
        """The status's source fields (``src_queue``, or ``src_exchange`` + key)."""
        if self.src_queue is not None:
            return {"src_queue": self.src_queue}
        return {"src_exchange": self.src_exchange, "src_exchange_key": self.src_exchange_key}

    def dest_details(self) -> dict:
        d = {"dest_exchange": self.dest_exchange, "dest_exchange_key": self.dest_exchange_key,
             "dest_queue": self.dest_queue}
        return {k: v for k, v in d.items() if v is not None}


def direct_vhost(uri: str) -> str | None:
    """The vhost a direct URI (``amqp://`` with no host: this broker) names; None for a
    network URI or one that does not parse."""
    try:
        ep = urimod.parse(uri)
    except urimod.URIError:
        return None
    return ep.vhost if ep.local else None


def _uris(v) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def parse(vhost: str, name: str, value: dict) -> ShovelSpec:
    """A :class:`ShovelSpec` from a definition :func:`validate` accepted."""
    g = value.get
    return ShovelSpec(
        vhost=vhost, name=name,
        src_uris=_uris(g("src-uri")), dest_uris=_uris(g("dest-uri")),
        src_queue=g("src-queue"), src_exchange=g("src-exchange"),
        src_exchange_key=g("src-exchange-key", ""),
        dest_queue=g("dest-queue"), dest_exchange=g("dest-exchange"),
        dest_exchange_key=g("dest-exchange-key"),
        ack_mode=g("ack-mode", "on-confirm"),
        prefetch=int(g("src-prefetch-count", g("prefetch-count", DEFAULT_PREFETCH))),
        delete_after=g("src-delete-after", g("delete-after", "never")),
        reconnect_delay=g("reconnect-delay", DEFAULT_RECONNECT_DELAY),
        add_forward_headers=g("dest-add-forward-headers", g("add-forward-headers", False)),
        add_timestamp_header=g("dest-add-timestamp-header", g("add-timestamp-header", False)),
        publish_properties=dict(g("dest-publish-properties", g("publish-properties", {}))),
    )
