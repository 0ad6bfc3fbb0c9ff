"""The broker: vhosts, users and the names it generates. Knows nothing of frames or sockets."""

from __future__ import annotations

import base64
import os
import threading
from typing import Any

from .auth import InternalLogin, UserStore
from .deadletter import DEAD_LETTER_EVENTS
from .flow import FlowLimits
from .parameters import Parameters
from .policy_registry import PolicyRegistry
from .timers import Scheduler
from .user_usage import UserUsage
from .vhost import VirtualHost
from .vhost_limits import Component as LimitsComponent


def _random_suffix() -> str:
    return base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")


def generate_queue_name() -> str:
    """A server-named queue, as RabbitMQ names them: ``amq.gen-`` + 22 url-safe characters."""
    return "amq.gen-" + _random_suffix()


def generate_consumer_tag() -> str:
    return "amq.ctag-" + _random_suffix()


# Counted events (``Broker.count``), RabbitMQ's connection_churn_metrics and auth attempts
EVENTS = ("connections_opened", "connections_closed", "channels_opened", "channels_closed",
          "queues_declared", "queues_created", "queues_deleted", "auth_attempts",
          "auth_attempts_failed")



class Broker:
    """Top of the broker model. ``vhosts`` is mutated only under ``lock``; read without it."""

    def __init__(self, users: UserStore | None = None, durability: Any = None,
                 body_store: Any = None) -> None:
        # Guards adding and removing vhosts.
        self.lock = threading.Lock()
        # ``durability.Durability`` when the broker has a journal, else None (all in memory).
        self.durability = durability
        # Resource alarms in effect ("memory", "disk"); replaced, never mutated (syncmq.alarms).
        self.alarms: frozenset[str] = frozenset()
        # Bytes the broker accounts for (syncmq.memory), set by the resource monitor; 0 until
        # its first sample. /api/nodes mem_used.
        self.memory_used = 0
        # Timers for TTL expiry and x-expires; the server installs the hook (``schedule``).
        self.scheduler = Scheduler()
        # ``queues.spill.BodyStore`` with a memory budget (``--memory-budget``), else None:
        # bodies of queued messages live there (see docs/architecture.md, "Memory budget").
        self.body_store = body_store
        # Direct reply-to: the suffix of ``amq.rabbitmq.reply-to.<suffix>`` -> the consuming
        # channel (``syncmq.methods`` object with ``deliver_reply``). Single dict operations
        # only (atomic); entries are added and removed by the owning connection's worker.
        self.reply_consumers: dict[str, Any] = {}
        # Guards ``closed_stats`` (message counters of closed channels, added up) and
        # ``events`` (connections, channels and queues opened/closed, logins: /metrics; dead
        # letters by series, :data:`DEAD_LETTER_EVENTS`). Taken once per such event, batch
        # of dead letters or scrape, never per message.
        self.stats_lock = threading.Lock()
        self.closed_stats: list[int] = []
        self.events: dict[str, int] = dict.fromkeys(EVENTS + DEAD_LETTER_EVENTS, 0)
        # Policies and operator policies in force (their values live in the parameter
        # store; see policy_registry): matched at declares, applied live on change.
        self.policies = PolicyRegistry(lambda: self.vhosts)
        # Credit flow thresholds (``flow.FlowLimits``, off until the server sets them),
        # shared by the vhosts and copied into each queue at creation.
        self.flow_limits = FlowLimits()
        self.vhosts: dict[str, VirtualHost] = {
            "/": VirtualHost("/", durability, self.scheduler, body_store,
                             self.reply_consumers, self.count, self.policies,
                             self.flow_limits)}
        self.users = users or UserStore()
        # Runtime parameters (policies, limits, shovels...: components register on it), see
        # ``parameters.py``; journaled through ``durability``.
        self.parameters = Parameters(durability, lambda vhost: vhost in self.vhosts)
        self.policies.register(self.parameters)
        # the credentials of the broker's own AMQP clients (shovels' local ends)
        self.internal_login = InternalLogin()
        # Open connections and channels per user (the user limits; ``user_usage``).
        self.user_usage = UserUsage()
        # the vhost-limits component (max-connections, max-queues), registered on it
        self.vhost_limits = LimitsComponent(self)

    def schedule(self, delay: float, fn) -> bool:
        """Run ``fn()`` on a worker about ``delay`` seconds from now (see ``timers``)."""
        return self.scheduler.schedule(delay, fn)

    def count(self, event: str, n: int = 1) -> None:
        """``n`` more ``event`` (a name in :data:`EVENTS` or :data:`DEAD_LETTER_EVENTS`; not
        on the message path: dead letters are counted once per batch)."""
        with self.stats_lock:
            self.events[event] += n

    def add_closed_stats(self, counts: tuple[int, ...]) -> None:
        """Add a closed channel's message counters to the totals and count the channel as
        closed (once per channel; not on the message path)."""
        with self.stats_lock:
            self.events["channels_closed"] += 1
            cs = self.closed_stats
            if len(cs) < len(counts):
                cs.extend([0] * (len(counts) - len(cs)))
            for i, n in enumerate(counts):
                cs[i] += n

    def close_pages(self) -> None:
        """The broker stops (nothing serves clients any more): every queue closes and
        deletes its page files (``QueuePaging.close_pages``) before the body store closes."""
        for vh in list(self.vhosts.values()):
            for q in list(vh.queues.values()):
                q.close_pages()

    def create_vhost(self, name: str) -> VirtualHost:
        """A vhost created by a client (management API, definitions import): as
        :meth:`add_vhost`, and a new one is journaled (VHOST_ADD) under :attr:`lock`, so it
        survives a restart without a users file; the caller answers after the fsync
        (``Durability.take_changed``). Recovery and the users store use :meth:`add_vhost`."""
        with self.lock:
            if name not in self.vhosts and self.durability is not None:
                self.durability.vhost_added(name)
            return self._add_vhost_locked(name)

    def remove_vhost(self, name: str) -> VirtualHost | None:
        """Take the vhost out of :attr:`vhosts` and journal VHOST_DELETE (under :attr:`lock`);
        the caller then closes its connections and deletes its objects and parameters. None
        if it does not exist."""
        with self.lock:
            vh = self.vhosts.pop(name, None)
            if vh is not None and self.durability is not None:
                self.durability.vhost_deleted(name)
            return vh

    def add_vhost(self, name: str) -> VirtualHost:
        """The vhost ``name``, created (not journaled) if it does not exist."""
        with self.lock:
            return self._add_vhost_locked(name)

    def _add_vhost_locked(self, name: str) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = VirtualHost(name, self.durability, self.scheduler, self.body_store,
                             self.reply_consumers, self.count, self.policies,
                             self.flow_limits)
            vh.limits.set(self.vhost_limits.value(name))
            self.vhosts[name] = vh
        return vh
