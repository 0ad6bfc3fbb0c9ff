"""Virtual hosts: the unit of isolation, owning exchanges, queues and bindings.

Every check of declare/delete/bind that RabbitMQ makes lives here and raises
:class:`AMQPChannelError` (or :class:`AMQPConnectionError` where RabbitMQ's error is hard) with
RabbitMQ's reply text. The caller (a method handler) supplies the class/method ids.

Locking: ``VirtualHost.lock`` serialises changes to the exchange and queue tables and to
bindings. The tables are plain dicts that are only mutated under that lock and read without it
(single ``dict.get`` calls are atomic, also on free-threaded CPython); matchers are replaced,
never mutated, so routing takes no lock at all. Queue locks may be taken while holding the vhost
lock (vhost lock first), never the other way round.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from .args import check_declare_arguments, check_queue_type, wire_type
from .deadletter import (
    DEAD_LETTER_EVENT,
    count_by_reason,
    dead_lettered,
    is_cycle,
    queue_type_module,
)
from .equivalence import check_equivalent_exchange, check_equivalent_queue
from .exchange import EXCHANGE_TYPES, KEYLESS, Exchange
from .federation import FEDERATION_UPSTREAM
from .federation import check_arguments as check_federation_arguments
from .message import Message
from .publish import publish
from .queue import Consumer, Queue
from .routing import validate_headers_binding
from .timers import Scheduler
from .vhost_limits import Limits

log = logging.getLogger("syncmq.vhost")

PREDECLARED = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)
TRACE = "amq.rabbitmq.trace"

# ``owner`` of bind/unbind when no connection asks (management, definitions): no 405 check
ANY_OWNER = object()

class VirtualHost:
    """A vhost with its default and pre-declared exchanges."""

    def __init__(self, name: str, durability: Any = None,
                 scheduler: Scheduler | None = None, body_store: Any = None,
                 reply_consumers: dict | None = None,
                 count: Callable[..., None] | None = None,
                 policies: Any = None, flow_limits: Any = None) -> None:
        self.name = name
        # ``Broker.count`` (queues declared/created/deleted, dead letters: /metrics), or a
        # no-op.
        self.broker_count: Callable[..., None] = count or (lambda _event, _n=1: None)
        # The broker's ``policy_registry.PolicyRegistry`` (None for a vhost used alone):
        # a queue or exchange gets its policy at creation from it.
        self.policies = policies
        # Credit flow thresholds (the broker's ``flow.FlowLimits``; None: off), read by each
        # queue when it is created.
        self.flow_limits = flow_limits
        # Direct reply-to consumers (the broker's map, see ``Broker.reply_consumers``).
        self.reply_consumers: dict[str, Any] = (
            reply_consumers if reply_consumers is not None else {})
        # The memory budget's ``queues.spill.BodyStore`` (the broker's), or None.
        self.body_store = body_store
        # The journal side (``durability.Durability``) or None for a broker without one.
        self.durability = durability
        # Timers for TTL and x-expires (the broker's; a hook-less one when used alone).
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self._cycles_logged: set = set()  # dead-letter cycles already warned about
        # Guards changes to ``exchanges``, ``queues`` and every exchange's matcher.
        self.lock = threading.Lock()
        # The route generation: a new value (unique, from ``_gens``) stored after every change
        # that can alter where a publish goes (``routes_changed``); publishers keep a route
        # while it is unchanged (``methods.basic.publish``).
        self._gens = itertools.count(1)
        self.routes_gen = 0
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        # max-connections/max-queues in force and the open-connection count (vhost_limits)
        self.limits = Limits(name)
        self.default_exchange = Exchange(name, "", "direct", True, False, False, None)
        self.exchanges[""] = self.default_exchange
        for ename, etype in PREDECLARED:
            self.exchanges[ename] = Exchange(name, ename, etype, True, False, False, None)
        # RabbitMQ's firehose exchange exists in every vhost (internal: nothing publishes to
        # it here, syncmq has no tracer; tools list it and may bind to it)
        self.exchanges[TRACE] = Exchange(name, TRACE, "topic", True, False, True, None)

    def _not_found_exchange(self, name: str) -> AMQPChannelError:
        return AMQPChannelError(
            _spec.NOT_FOUND, f"NOT_FOUND - no exchange '{name}' in vhost '{self.name}'"
        )

    def _not_found_queue(self, name: str) -> AMQPChannelError:
        return AMQPChannelError(
            _spec.NOT_FOUND, f"NOT_FOUND - no queue '{name}' in vhost '{self.name}'"
        )

    def routes_changed(self) -> None:
        """Something a route depends on just changed (an exchange or queue declared or
        deleted, a binding added or removed, an alternate exchange set by a policy): a
        route cached before is stale from now on.

        The one invalidation of every cached route (``Channel.route_*``, see
        ``methods.basic.publish``). The caller calls it *after* the change is visible, and a
        publisher reads ``routes_gen`` *before* it routes, so a route cached with the
        current value saw every change made before that value was stored. Each value is
        stored once (``next`` of a counter is atomic), so calls from threads that do not
        hold ``lock`` (the policy registry's) are safe too: a late store of an older value
        only makes a cached route look stale."""
        self.routes_gen = next(self._gens)

    # ---- exchanges ----

    def get_exchange(self, name: str) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise self._not_found_exchange(name)
        return ex

    def declare_exchange(
        self,
        name: str,
        type_: str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict | None,
    ) -> tuple[Exchange, bool]:
        """exchange.declare; returns (exchange, created).

        RabbitMQ's order: passive declares only look up (the default exchange is 403); else
        the type is checked (503), then the default exchange (403); an existing exchange only
        has to be equivalent (406), so redeclaring ``amq.direct`` as it is succeeds, while the
        reserved ``amq.`` prefix (403) is checked only when creating.
        """
        if passive:
            if name == "":
                raise _default_exchange_refused()
            return self.get_exchange(name), False
        if type_ not in EXCHANGE_TYPES:  # RabbitMQ 3.10.8's words: '' is invalid, not unknown
            word = "invalid" if type_ == "" else "unknown"
            raise AMQPConnectionError(
                _spec.COMMAND_INVALID, f"COMMAND_INVALID - {word} exchange type '{type_}'"
            )
        if name == "":
            raise _default_exchange_refused()
        with self.lock:
            ex = self.exchanges.get(name)
            if ex is not None:
                check_equivalent_exchange(self.name, ex, type_, durable, auto_delete,
                                          internal, arguments)
                if ex.durable and self.durability is not None:
                    self.durability.touched()  # its record may still wait for its fsync
                return ex, False
            if name.startswith("amq."):
                raise AMQPChannelError(
                    _spec.ACCESS_REFUSED,
                    f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'",
                )
            ae = (arguments or {}).get("alternate-exchange")
            if ae is not None and not isinstance(ae, str):
                raise AMQPChannelError(
                    _spec.PRECONDITION_FAILED,
                    f"PRECONDITION_FAILED - invalid type '{wire_type(ae)}' for arg "
                    f"'alternate-exchange' in exchange '{name}' in vhost '{self.name}'",
                )
            if type_ == FEDERATION_UPSTREAM:
                check_federation_arguments(arguments)  # the type's validate, on creation
            ex = Exchange(self.name, name, type_, durable, auto_delete, internal, arguments,
                          self._exchange_policies(name))
            self.exchanges[name] = ex
            self.routes_changed()
            if self.durability is not None:
                self.durability.exchange_declared(ex)
            return ex, True

    def delete_exchange(self, name: str, if_unused: bool) -> Exchange | None:
        """exchange.delete; deleting a missing exchange is not an error (RabbitMQ 3.x)."""
        if name == "" or name.startswith("amq."):
            raise AMQPChannelError(
                _spec.ACCESS_REFUSED,
                f"ACCESS_REFUSED - deletion of system exchange '{name}' in vhost "
                f"'{self.name}' not allowed"
                if name else "ACCESS_REFUSED - operation not permitted on the default exchange",
            )
        with self.lock:
            ex = self.exchanges.get(name)
            if ex is None:
                return None
            # RabbitMQ: "unused" means no bindings with this exchange as their source; being
            # the destination of an exchange-to-exchange binding does not count
            if if_unused and len(ex.matcher):
                raise AMQPChannelError(
                    _spec.PRECONDITION_FAILED,
                    f"PRECONDITION_FAILED - exchange '{name}' in vhost '{self.name}' in use",
                )
            self._delete_exchange_locked(ex)
            return ex

    def _delete_exchange_locked(self, ex: Exchange) -> None:
        del self.exchanges[ex.name]
        if self.durability is not None:
            self.durability.exchange_deleted(ex)
        # bindings where it is the destination go too
        for other in list(self.exchanges.values()):
            if other.e2e:
                self._drop_destination_locked(other, ex)
        self.routes_changed()

    def _drop_destination_locked(self, ex: Exchange, dest: Any) -> None:
        before = len(ex.matcher)
        if before == 0:
            return
        m = ex.matcher.without_destination(dest)
        removed = before - len(m)
        if removed:
            ex.matcher = m
            if isinstance(dest, Exchange):
                ex.e2e -= removed
            if ex.auto_delete and len(m) == 0 and ex.name in self.exchanges:
                self._delete_exchange_locked(ex)

    # ---- queues ----

    def get_queue(self, name: str, owner: Any = None) -> Queue:
        """The queue named ``name``; 404 if missing, 405 if exclusive to another connection."""
        q = self.queues.get(name)
        if q is None:
            raise self._not_found_queue(name)
        if q.exclusive_owner is not None and q.exclusive_owner is not owner:
            raise self._locked(name)
        return q

    def _check_owner(self, destination: Any, owner: Any) -> None:
        """405 if ``destination`` is a queue exclusive to a connection other than ``owner``."""
        if owner is not ANY_OWNER and isinstance(destination, Queue) and \
                destination.exclusive_owner is not None and destination.exclusive_owner is not owner:
            raise self._locked(destination.name)

    def _locked(self, name: str) -> AMQPChannelError:
        return AMQPChannelError(
            _spec.RESOURCE_LOCKED,
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in "
            f"vhost '{self.name}'. It could be originally declared on another connection or "
            "the exclusive property value does not match that of the original declaration.",
        )

    def declare_queue(
        self,
        name: str,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict | None,
        owner: Any,
        server_named: bool = False,
        renew: bool = True,
    ) -> tuple[Queue, bool]:
        """queue.declare; ``name`` is already server-generated if it was empty. An existing
        queue's ``x-expires`` lease is renewed, but by a passive declare with ``renew``
        False (no-wait: RabbitMQ renews when the queue process is asked for the declare-ok's
        counts, and a passive no-wait declare asks nothing)."""
        if passive:
            q = self.get_queue(name, owner)
            if renew:
                q.touch()
            return q, False
        if name.startswith("amq.") and not server_named:
            raise AMQPChannelError(
                _spec.ACCESS_REFUSED,
                f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'",
            )
        self.broker_count("queues_declared")
        with self.lock:
            q = self.queues.get(name)
            if q is not None:
                # rabbit_amqqueue:check_exclusive_access(Q, Owner, strict), before durable and
                # the rest: the declared exclusivity must match the queue's, else 405
                if q.exclusive_owner is not (owner if exclusive else None):
                    raise self._locked(name)
                check_equivalent_queue(self.name, q, durable, auto_delete, arguments)
                q.touch()
                if q.journaled:
                    self.durability.touched()  # its record may still wait for its fsync
                return q, False
            self.limits.check_queue(name, len(self.queues))  # before arguments, as RabbitMQ
            args = arguments or {}
            if args:
                check_declare_arguments(name, self.name, args)
                self._check_queue_type(name, args, durable, exclusive, auto_delete)
            q = Queue(self.name, name, durable, owner if exclusive else None, auto_delete,
                      arguments, self.durability, self, self._queue_policies(name, args))
            self.queues[name] = q
            self.routes_changed()
            if q.journaled:
                self.durability.queue_declared(q)
        self.broker_count("queues_created")
        return q, True

    def _check_queue_type(self, name: str, args: dict, durable: bool, exclusive: bool,
                          auto_delete: bool) -> None:
        """``x-queue-type``: classic; quorum is served by a classic queue; stream is refused.

        A quorum queue is a replicated FIFO; on one node its observable AMQP 0-9-1 behaviour
        is a durable classic queue's, so clients that ask for one (Celery, MassTransit) keep
        working, after RabbitMQ's declare-time checks of quorum queues (so code that works
        here works there). A stream is not a FIFO (consuming does not remove, consumers
        choose an offset); a classic queue in its place would silently change semantics, so
        it is a 406.
        """
        check_queue_type(name, self.name, args, durable, exclusive, auto_delete)
        if args.get("x-queue-type") == "quorum":
            log.warning("quorum queue declared; served by a classic queue (single node)",
                        extra={"queue": name, "vhost": self.name})

    def delete_queue(
        self, name: str, if_unused: bool, if_empty: bool, owner: Any
    ) -> tuple[int, list[Consumer]] | None:
        """queue.delete; returns (message_count, detached consumers), None if missing."""
        with self.lock:
            q = self.queues.get(name)
            if q is None:
                return None
            if q.exclusive_owner is not None and q.exclusive_owner is not owner:
                raise self._locked(name)
            # the queue process's order (rabbit_amqqueue_process delete): not empty first
            if if_empty and q.message_count():
                raise AMQPChannelError(
                    _spec.PRECONDITION_FAILED,
                    f"PRECONDITION_FAILED - queue '{name}' in vhost '{self.name}' not empty",
                )
            if if_unused and q.consumer_count():
                raise AMQPChannelError(
                    _spec.PRECONDITION_FAILED,
                    f"PRECONDITION_FAILED - queue '{name}' in vhost '{self.name}' in use",
                )
            return self._delete_queue_locked(q)

    def delete_queue_object(self, q: Queue) -> tuple[int, list[Consumer]] | None:
        """Delete ``q`` if it is still the queue of that name (auto-delete, exclusive)."""
        with self.lock:
            if self.queues.get(q.name) is not q:
                return None
            return self._delete_queue_locked(q)

    def expire_queue(self, q: Queue) -> None:
        """``x-expires``: the queue has been unused long enough (no queue lock held)."""
        deleted = self.delete_queue_object(q)
        if deleted is not None:
            log.debug("queue expired", extra={"queue": q.name, "vhost": self.name})
            for c in deleted[1]:
                c.channel.consumer_cancelled(c)

    def _delete_queue_locked(self, q: Queue) -> tuple[int, list[Consumer]]:
        del self.queues[q.name]
        self.broker_count("queues_deleted")
        if q.journaled:
            self.durability.queue_deleted(q)
        for ex in list(self.exchanges.values()):
            self._drop_destination_locked(ex, q)
        self.routes_changed()
        return q.mark_deleted()

    # ---- bindings ----

    def bind(
        self, source: str, destination: Any, routing_key: str, arguments: dict | None,
        owner: Any = ANY_OWNER,
    ) -> None:
        """Bind ``destination`` (a Queue or Exchange) to exchange ``source``.

        RabbitMQ's order (``rabbit_binding:add``): the source, then the destination must exist
        (404), the binding must be valid (406 for headers ``x-match``), and only then is a
        queue exclusive to a connection other than ``owner`` refused (405); ``ANY_OWNER``
        (management, definitions) skips that check."""
        if source == "" or destination is self.default_exchange:
            raise _default_exchange_refused()  # RabbitMQ's text, for queue and exchange bind
        with self.lock:
            ex = self.get_exchange(source)
            if ex.type == "headers":
                err = validate_headers_binding(arguments or {})
                if err:
                    raise AMQPChannelError(_spec.PRECONDITION_FAILED,
                                           f"PRECONDITION_FAILED - {err}")
            if isinstance(destination, Queue) and self.queues.get(destination.name) is not \
                    destination:
                raise self._not_found_queue(destination.name)
            if isinstance(destination, Exchange) and self.exchanges.get(destination.name) is \
                    not destination:
                raise self._not_found_exchange(destination.name)
            self._check_owner(destination, owner)
            args = arguments or {}
            if ex.matcher.has_binding(destination, routing_key, args):
                if self.durability is not None:
                    self.durability.touched()  # its record may still wait for its fsync
                return
            ex.matcher = ex.matcher.with_binding(destination, routing_key, args)
            if isinstance(destination, Exchange):
                ex.e2e += 1
            self.routes_changed()
            if self.durability is not None:
                self.durability.binding_added(ex, destination, routing_key, args)

    def unbind(
        self, source: str, destination: Any, routing_key: str, arguments: dict | None,
        owner: Any = ANY_OWNER,
    ) -> None:
        """Remove a binding, idempotently as RabbitMQ's ``rabbit_binding:remove``: a missing
        source exchange, a missing destination (``destination`` None) or a missing binding
        is success; only an existing binding to a queue exclusive to a connection other than
        ``owner`` is refused (405), and the default exchange always is (403)."""
        if source == "" or destination is self.default_exchange:
            raise AMQPChannelError(
                _spec.ACCESS_REFUSED,
                "ACCESS_REFUSED - operation not permitted on the default exchange",
            )
        with self.lock:
            ex = self.exchanges.get(source)
            args = arguments or {}
            if ex is None or destination is None or \
                    not ex.matcher.has_binding(destination, routing_key, args):
                return
            self._check_owner(destination, owner)
            ex.matcher = ex.matcher.without_binding(destination, routing_key, args)
            if isinstance(destination, Exchange):
                ex.e2e -= 1
            self.routes_changed()
            if self.durability is not None:
                self.durability.binding_removed(ex, destination, routing_key, args)
            if ex.auto_delete and len(ex.matcher) == 0 and ex.name in self.exchanges:
                self._delete_exchange_locked(ex)

    # ---- recovery (journal replay at start-up; nothing is journaled again) ----

    def restore_exchange(self, name: str, type_: str, auto_delete: bool, internal: bool,
                         arguments: dict) -> Exchange:
        with self.lock:
            ex = Exchange(self.name, name, type_, True, auto_delete, internal, arguments,
                          self._exchange_policies(name))
            self.exchanges[name] = ex
            self.routes_changed()
            return ex

    def restore_queue(self, name: str, auto_delete: bool, arguments: dict) -> Queue:
        with self.lock:
            q = Queue(self.name, name, True, None, auto_delete, arguments, self.durability,
                      self, self._queue_policies(name, arguments))
            self.queues[name] = q
            self.routes_changed()
            return q

    def restore_binding(self, source: str, destination: str, to_exchange: bool,
                        routing_key: str, arguments: dict) -> bool:
        with self.lock:
            ex = self.exchanges.get(source)
            dest = (self.exchanges if to_exchange else self.queues).get(destination)
            if ex is None or dest is None:
                return False
            ex.matcher = ex.matcher.with_binding(dest, routing_key, arguments)
            if to_exchange:
                ex.e2e += 1
            self.routes_changed()
            return True

    # ---- policies (called with ``lock`` held: see policy_registry) ----

    def _queue_policies(self, name: str, arguments: dict | None) -> tuple:
        if self.policies is None:
            return (None, None)
        qtype = (arguments or {}).get("x-queue-type")
        return self.policies.for_queue(self.name, name,
                                       qtype if isinstance(qtype, str) else "classic")

    def _exchange_policies(self, name: str) -> tuple:
        if self.policies is None:
            return (None, None)
        return self.policies.for_exchange(self.name, name)

    # ---- routing ----

    def route(self, ex: Exchange, message: Message) -> list[Queue]:
        """Every queue ``message`` published to ``ex`` reaches (each once). Takes no lock."""
        if ex.e2e or ex.alternate is not None or message.cc or message.bcc:
            return self._route_walk(ex, message)
        if ex is self.default_exchange:
            q = self.queues.get(message.routing_key)
            return [q] if q is not None else []
        headers = message.headers if ex.needs_headers else None
        return list(ex.matcher.route(message.routing_key, headers))

    def _route_walk(self, ex: Exchange, message: Message) -> list[Queue]:
        """Routing with exchange-to-exchange bindings, alternate exchanges or CC/BCC keys.

        As RabbitMQ's ``rabbit_exchange:route``: breadth-first over exchanges, each visited
        once; an exchange whose own bindings match nothing hands the message to its alternate
        exchange (if that exists); every routing key (the publish one, CC, BCC) is matched.
        """
        keys = message.routing_keys if (message.cc or message.bcc) else None
        queues: dict[int, Queue] = {}
        seen: set[int] = set()
        pending = [ex]
        default = self.default_exchange
        while pending:
            x = pending.pop()
            if id(x) in seen:
                continue
            seen.add(id(x))
            if x is default:
                dests: Any = [q for k in (keys or (message.routing_key,))
                              if (q := self.queues.get(k)) is not None]
            else:
                h = message.headers if x.needs_headers else None
                if keys is None or x.type in KEYLESS:
                    dests = x.matcher.route(message.routing_key, h)
                else:
                    dests = set()
                    for k in keys:
                        dests.update(x.matcher.route(k, h))
            if not dests and x.alternate is not None:
                ae = self.exchanges.get(x.alternate)
                if ae is not None:
                    pending.append(ae)
            for d in dests:
                if isinstance(d, Queue):
                    queues[id(d)] = d
                else:
                    pending.append(d)
        return list(queues.values())

    # ---- dead-lettering ----

    def dead_letter(self, source: Queue, letters: list[tuple[Message, str]],
                    dlx: str | None, dlrk: str | None) -> None:
        """Publish ``letters`` (message, reason) from ``source`` to its dead-letter exchange
        ``dlx`` with ``dlrk`` (None: each message's own keys), both from the one snapshot of
        the queue's settings taken under its lock (``Queue._publish_letters``).

        Called with no queue lock held, with every dead letter the queue made, also without
        a dead-letter exchange: each is counted here (the node-wide counters by queue type,
        strategy and reason, ``Broker.count``: one stats-lock hold per reason in the batch).
        A missing exchange drops them (as RabbitMQ: counted as ``disabled``); so do cycles
        without a rejection. Each new message goes through the broker's one publish
        (``broker.publish``): persistent ones reaching durable queues are journaled with a
        new PUBLISH record (the source already recorded their ACK).
        """
        ex = self.exchanges.get(dlx) if dlx is not None else None
        qtype = queue_type_module(source.options.queue_type)
        strategy = "disabled" if ex is None else "at_most_once"
        for reason, n in count_by_reason(letters).items():  # once per batch, not per letter
            self.broker_count(DEAD_LETTER_EVENT[(qtype, strategy, reason)], n)
        if ex is None:
            return
        for message, reason in letters:
            new, deaths = dead_lettered(message, reason, source.name, dlx, dlrk)
            queues = self.route(ex, new)
            if reason != "rejected" and queues:
                kept = [q for q in queues if not is_cycle(q.name, deaths)]
                if len(kept) != len(queues):
                    self._log_cycle(source, queues, kept)
                    queues = kept
            publish(self, ex, new, queues=queues)

    def _log_cycle(self, source: Queue, queues: list[Queue], kept: list[Queue]) -> None:
        dropped = tuple(sorted(q.name for q in queues if q not in kept))
        key = (source.name, dropped)
        if key not in self._cycles_logged and len(self._cycles_logged) < 1000:
            self._cycles_logged.add(key)
            log.warning("message dropped: dead-letter cycle without a rejection",
                        extra={"queue": source.name, "vhost": self.name,
                               "cycle": list(dropped)})


def _default_exchange_refused() -> AMQPChannelError:
    return AMQPChannelError(
        _spec.ACCESS_REFUSED, "ACCESS_REFUSED - operation not permitted on the default exchange"
    )
