"""Vhost limits (issue #16): ``max-connections`` and ``max-queues`` per vhost, as RabbitMQ's
``rabbit_vhost_limit``.

Where they live: the runtime-parameter store (``parameters.py``), component ``vhost-limits``,
name ``limits``, value ``{"max-connections": N, "max-queues": N}`` (either key optional; an
empty value is ``[]``, as RabbitMQ writes an empty proplist). This module registers the
component (:class:`Component`): its ``validate`` refuses what RabbitMQ's
``rabbit_parameter_validation:proplist`` refuses, with RabbitMQ's texts, and its ``apply``
puts the limits in force on the vhost's :class:`Limits`. Nothing else keeps a copy.
``Component`` (``broker.vhost_limits``) registers it and updates one key at a time (the
management API's ``/api/vhost-limits/{vhost}/{name}``).

Semantics (RabbitMQ 3.10.8, checked against it by tests/interop/test_vhost_limits_differential):
a limit N >= 0 refuses the (N+1)th connection or queue (0 refuses every one); a negative
limit or none is no limit. Lowering a limit below what exists closes and deletes nothing; only
new connections and new queues are refused. Redeclaring an existing queue (or a passive
declare) is never refused.

Ownership and locks:

* :class:`Limits` (``VirtualHost.limits``, one per vhost) owns the vhost's limits in force
  (``max_connections``, ``max_queues``: an int >= 0 or None; written by ``apply`` only, read
  without a lock: one attribute load) and its count of open connections (``connections``),
  changed only under ``Limits.lock`` (a leaf), where :meth:`Limits.open_connection` checks
  and counts in one step, so two opens racing on two workers cannot both pass the limit.
* The queue count is ``len(VirtualHost.queues)``, owned by the vhost lock:
  ``VirtualHost.declare_queue`` checks ``max_queues`` under it, before it adds a queue.
* With no limit set the cost is one attribute test per queue creation and one leaf-lock
  hold per connection open and close (the count has to exist: a limit may be set later).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from .erlterm import proplist, term
from .parameters import validation_failed

if TYPE_CHECKING:
    from .broker import Broker

COMPONENT = "vhost-limits"
NAME = "limits"
KEYS = ("max-connections", "max-queues")  # rabbit_vhost_limit's validation order

__all__ = ["COMPONENT", "NAME", "KEYS", "Limits", "Component", "validate"]


class Limits:
    """One vhost's limits in force and its open-connection count (see the module docstring
    for who writes what under which lock)."""

    __slots__ = ("vhost", "max_connections", "max_queues", "connections", "lock")

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.max_connections: int | None = None  # None: no limit
        self.max_queues: int | None = None
        self.connections = 0  # open AMQP connections to the vhost (under ``lock``)
        self.lock = threading.Lock()

    def set(self, value: Any) -> None:
        """``apply``: put a stored value (or None, cleared) in force."""
        value = value if isinstance(value, dict) else {}
        self.max_connections = _limit(value.get("max-connections"))
        self.max_queues = _limit(value.get("max-queues"))

    def open_connection(self, username: str) -> None:
        """Count one more open connection, or refuse it (530, RabbitMQ's text) if the vhost
        is at ``max-connections``; checked and counted under ``lock`` in one step."""
        with self.lock:
            limit = self.max_connections
            if limit is not None and self.connections >= limit:
                raise connection_refused(self.vhost, username, limit)
            self.connections += 1

    def close_connection(self) -> None:
        """A connection counted by :meth:`open_connection` is gone."""
        with self.lock:
            self.connections -= 1

    def check_queue(self, name: str, n_queues: int) -> None:
        """Called by ``VirtualHost.declare_queue`` under the vhost lock, before it creates
        queue ``name``: 406 if the vhost already has ``max-queues`` queues."""
        limit = self.max_queues
        if limit is not None and n_queues >= limit:
            raise AMQPChannelError(
                _spec.PRECONDITION_FAILED,
                f"PRECONDITION_FAILED - cannot declare queue '{name}': queue limit in vhost "
                f"'{self.vhost}' ({limit}) is reached")


def connection_refused(vhost: str, username: str, limit: int) -> AMQPConnectionError:
    return AMQPConnectionError(
        _spec.NOT_ALLOWED,
        f"NOT_ALLOWED - access to vhost '{vhost}' refused for user '{username}': "
        f"connection limit ({limit}) is reached")


def _limit(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


# ---- the component ----------------------------------------------------------------------


def validate(vhost: str, name: str, value: Any) -> None:
    """RabbitMQ's checks of a ``vhost-limits`` value (``proplist`` with two optional integer
    keys), its error lines in its order: unrecognised keys first, then each key's type, the
    last key first. A name other than ``limits`` is refused (RabbitMQ stores it, answers 500
    and then fails every vhost-limits request of the vhost)."""
    if name != NAME:
        raise validation_failed(f"vhost limits must be named {NAME}, not {name}")
    if isinstance(value, list):
        if value:
            raise validation_failed(f"Unrecognised terms {term(value)} in {name}")
        return
    if not isinstance(value, dict):
        raise validation_failed(f"{name} not a list {term(value)}")
    errors = []
    unknown = [(k, v) for k, v in value.items() if k not in KEYS]
    if unknown:
        errors.append(f"Unrecognised terms {proplist(unknown)} in {name}")
    for key in reversed(KEYS):
        if key in value:
            v = value[key]
            if not isinstance(v, int) or isinstance(v, bool):
                errors.append(f"{key} should be a number, actually was {term(v)}")
    if errors:
        raise validation_failed(*errors)


class Component:
    """The ``vhost-limits`` component of one broker (``broker.vhost_limits``): registered on
    its parameter store at creation. ``apply`` finds the vhost by name (a vhost created later
    reads its stored limits in ``Broker.add_vhost``). ``_update`` (a leaf lock of the
    management side) makes :meth:`update`'s read-merge-set of one key atomic against another
    update: two PUTs of different keys both land."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._update = threading.Lock()
        broker.parameters.register(COMPONENT, validate=validate, apply=self._apply)

    def _apply(self, vhost: str, name: str, value: Any) -> None:
        vh = self._broker.vhosts.get(vhost)
        if vh is not None and name == NAME:
            vh.limits.set(value)

    def value(self, vhost: str) -> Any | None:
        """The stored value of ``vhost``'s limits, or None."""
        return self._broker.parameters.get(COMPONENT, vhost, NAME)

    def update(self, vhost: str, key: str, value: Any, clear: bool = False,
               user: str | None = None) -> None:
        """Set one limit to ``value`` (or ``clear`` it), keeping the others, as RabbitMQ's
        ``update_limit``/``clear_limit``: the key set goes first, the others keep their
        order; nothing left is stored as ``[]`` (RabbitMQ keeps the emptied parameter).
        ParameterError/NotFound as ``Parameters.set``."""
        with self._update:
            old = self.value(vhost)
            rest = {k: v for k, v in (old.items() if isinstance(old, dict) else ()) if k != key}
            new = rest if clear else {key: value, **rest}
            self._broker.parameters.set(COMPONENT, vhost, NAME, new or [], user=user)
