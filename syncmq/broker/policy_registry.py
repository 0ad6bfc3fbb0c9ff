"""The policies in force and their live application to queues and exchanges.

The runtime-parameter store (``broker.parameters``, components ``policy`` and
``operator_policy``) holds the policies' values and makes them durable; this registry is the
derived state that matching needs: per vhost, the validated :class:`~.policies.Policy`
objects in name order (user and operator policies apart), rebuilt by the store's ``apply``
callback (:meth:`PolicyRegistry.apply`) and read by declares without a lock (one dict read
of an immutable tuple).

Live application (:meth:`PolicyRegistry.apply`): the vhost's tables are replaced, then every
queue and exchange of the vhost is matched again (a regex search per policy, no message
touched) and only those whose policy or operator policy changed get ``set_policy`` (a lock
hold each, one at a time), as RabbitMQ's ``update_matched_objects``. Cost: O(objects x
policies) matching plus the work of the objects that changed; publishers and consumers of
other queues are never blocked (no queue lock is held for longer than one queue's update).

Locking: ``PolicyRegistry.lock`` serialises changes and their application, so the last
change is the one every object ends with. Order: this lock first, then ``VirtualHost.lock``
(held only to copy the vhost's queue and exchange lists, so that a queue declared meanwhile
is either in the copy or matched against the new tables at its declare), then one queue lock
at a time (dead letters of a lowered limit are published after it, as always). Declares take
``VirtualHost.lock`` and read the tables without this lock.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from .policies import Policy, PolicyError, match, not_applicable, validate

log = logging.getLogger("syncmq.policy")

COMPONENTS = {"policy": False, "operator_policy": True}  # component -> operator?
_EMPTY: tuple[Policy, ...] = ()


class PolicyRegistry:
    """Policies and operator policies per vhost, and their application (see the module
    docstring for the locking)."""

    def __init__(self, vhosts: Callable[[], dict[str, Any]]) -> None:
        self._vhosts = vhosts  # the broker's vhost table (name -> VirtualHost)
        self.lock = threading.Lock()
        # vhost -> policies sorted by name; replaced, never mutated (read without the lock)
        self._user: dict[str, tuple[Policy, ...]] = {}
        self._op: dict[str, tuple[Policy, ...]] = {}

    # ---- the parameter store's component callbacks ----

    def register(self, parameters: Any) -> None:
        """Register the ``policy`` and ``operator_policy`` components on the broker's
        runtime-parameter store (its values are applied through :meth:`apply`)."""
        for component in COMPONENTS:
            parameters.register(
                component,
                validate=lambda vhost, name, value, c=component: self.validate(
                    c, vhost, name, value),
                apply=lambda vhost, name, value, c=component: self.apply(
                    c, vhost, name, value))

    def validate(self, component: str, vhost: str, name: str, value: Any) -> Policy:
        """PolicyError (RabbitMQ's text) for a refused value."""
        return validate(vhost, name, value, COMPONENTS[component])

    def apply(self, component: str, vhost: str, name: str, value: Any | None) -> int:
        """A policy was set (``value``) or cleared (None): new tables for the vhost, then
        every object of it matched again. Returns how many objects changed."""
        operator = COMPONENTS[component]
        policy = None if value is None else validate(vhost, name, value, operator)
        if policy is not None and not operator:
            skipped = not_applicable(policy)
            if skipped:
                log.warning("policy keys accepted but not applicable in syncmq (no such "
                            "feature)", extra={"vhost": vhost, "policy": name,
                                               "keys": skipped})
        table = self._op if operator else self._user
        with self.lock:
            old = table.get(vhost, _EMPTY)
            if policy is not None and any(
                    p.name == name and json.dumps(p.value()) == json.dumps(policy.value())
                    for p in old):
                # the same policy is in force already (recovery after :meth:`preload`): no
                # object can change, so none is matched again (O(1), not O(objects x
                # policies) per policy at a restart)
                return 0
            kept = [p for p in old if p.name != name]
            if policy is not None:
                kept.append(policy)
            kept.sort(key=lambda p: p.name)
            if kept:
                table[vhost] = tuple(kept)
            else:
                table.pop(vhost, None)
            vh = self._vhosts().get(vhost)
            return self._reapply(vh) if vh is not None else 0

    def preload(self, parameters: Any) -> int:
        """Recovery, before any queue or exchange is restored: put the journaled policies
        (``(vhost, component, name, json)`` records, as ``Parameters.restore`` takes) in the
        tables without applying them, so that each restored queue gets its policy at
        creation, before its messages (a message's deadline under a policy's
        ``message-ttl`` then counts from its journaled publish time, as RabbitMQ persists
        each message's expiry). The store's own restore applies them again afterwards
        (nothing changes then). A value that does not validate is skipped here (the store's
        restore logs it). Returns how many were loaded."""
        n = 0
        with self.lock:
            for vhost, component, name, raw in parameters:
                if component not in COMPONENTS:
                    continue
                try:
                    policy = validate(vhost, name, json.loads(raw), COMPONENTS[component])
                except (ValueError, PolicyError):
                    continue
                table = self._op if policy.operator else self._user
                kept = [p for p in table.get(vhost, _EMPTY) if p.name != name]
                kept.append(policy)
                kept.sort(key=lambda p: p.name)
                table[vhost] = tuple(kept)
                n += 1
        return n

    # ---- reading ----

    def get(self, component: str, vhost: str, name: str) -> Policy | None:
        table = self._op if COMPONENTS[component] else self._user
        for p in table.get(vhost, _EMPTY):
            if p.name == name:
                return p
        return None

    def list(self, component: str, vhost: str | None = None) -> list[Policy]:
        """RabbitMQ's listing order: by vhost, then by name."""
        table = self._op if COMPONENTS[component] else self._user
        return [p for vh in sorted(table) if vhost is None or vh == vhost
                for p in table.get(vh, _EMPTY)]

    def for_queue(self, vhost: str, name: str,
                  queue_type: str = "classic") -> tuple[Policy | None, Policy | None]:
        """(policy, operator policy) for a queue being declared. No lock."""
        return (match(self._user.get(vhost, _EMPTY), name, "queue", queue_type),
                match(self._op.get(vhost, _EMPTY), name, "queue", queue_type))

    def for_exchange(self, vhost: str, name: str) -> tuple[Policy | None, Policy | None]:
        return (match(self._user.get(vhost, _EMPTY), name, "exchange"),
                match(self._op.get(vhost, _EMPTY), name, "exchange"))

    # ---- live application ----

    def _reapply(self, vh: Any) -> int:
        """Under ``self.lock``: match every queue and exchange of ``vh`` again."""
        with vh.lock:
            queues = list(vh.queues.values())
            exchanges = list(vh.exchanges.values())
        changed = 0
        for q in queues:
            p, op = self.for_queue(vh.name, q.name, q.options.queue_type)
            if p is not q.policy or op is not q.op_policy:
                q.set_policy(p, op)
                changed += 1
        moved = False
        for ex in exchanges:
            p, op = self.for_exchange(vh.name, ex.name)
            if p is not ex.policy or op is not ex.op_policy:
                ex.set_policy(p, op)  # (its alternate exchange may change)
                changed += 1
                moved = True
        if moved:
            vh.routes_changed()
        return changed


__all__ = ["PolicyRegistry", "PolicyError", "COMPONENTS"]
