"""The federation plugin's runtime parameters, ``federation-upstream`` and
``federation-upstream-set``: validated as RabbitMQ 3.10's ``rabbit_federation_parameters``
does (same keys, order and texts), stored by the parameter store, never run (syncmq has no
federation links: a RabbitMQ downstream federates from syncmq, see ``broker/federation.py``).

An upstream needs ``uri`` (an AMQP URI or a list of them; an empty list passes, as in
RabbitMQ); a set is a list of objects each needing ``upstream`` (a string). Both take the
shared keys below; numbers are not range-checked (RabbitMQ takes a negative
``prefetch-count`` or ``max-hops``). A value that is neither an object nor a list is refused
with the store's text (``require_object_or_list``; RabbitMQ's validator crashes on it: 500).
"""

from __future__ import annotations

from typing import Any

from ..broker.erlterm import term
from ..broker.parameters import require_object_or_list, validation_failed
from .validation import binary, boolean, enum, number, proplist, uris

# (key, check, mandatory) after the component's own key, in RabbitMQ's order
SHARED = [
    ("exchange", binary, False),
    ("queue", binary, False),
    ("consumer-tag", binary, False),
    ("prefetch-count", number, False),
    ("reconnect-delay", number, False),
    ("max-hops", number, False),
    ("expires", number, False),
    ("message-ttl", number, False),
    ("trust-user-id", boolean, False),
    ("ack-mode", enum(("no-ack", "on-publish", "on-confirm")), False),
    ("resource-cleanup-mode", enum(("default", "never")), False),
    ("ha-policy", binary, False),
    ("bind-nowait", boolean, False),
]
UPSTREAM = [("uri", uris, True), *SHARED]
SET_MEMBER = [("upstream", binary, True), *SHARED]


def upstream_problems(name: str, value: Any) -> list[str]:
    return proplist(name, UPSTREAM, value)


def set_problems(name: str, value: Any) -> list[str]:
    """Each member's problems, in the set's order (an object value is an empty set)."""
    if isinstance(value, dict):  # (a non-empty one: RabbitMQ's validator crashes, 500)
        return [] if not value else [f"{name} not a list {term(value)}"]
    out: list[str] = []
    for member in value:
        out += proplist(name, SET_MEMBER, member)
    return out


def validate_upstream(vhost: str, name: str, value: Any) -> None:
    """The store's ``validate`` for ``federation-upstream``."""
    require_object_or_list(name, value)
    errs = upstream_problems(name, value)
    if errs:
        raise validation_failed(*errs)


def validate_set(vhost: str, name: str, value: Any) -> None:
    """The store's ``validate`` for ``federation-upstream-set``."""
    require_object_or_list(name, value)
    errs = set_problems(name, value)
    if errs:
        raise validation_failed(*errs)
