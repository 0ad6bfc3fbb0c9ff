"""Exchanges: a name, a type and an immutable matcher over its bindings.

The matcher (``syncmq.broker.routing``) is copy-on-write: binding changes build a new one under
the vhost's lock and publish it with a single attribute store, so routing a message reads
``exchange.matcher`` once and takes no lock.
"""

from __future__ import annotations

from .federation import FEDERATION_UPSTREAM, typed_arguments
from .policies import Policy, alternate_exchange, effective_definition
from .routing import Matcher, matcher_for

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers", FEDERATION_UPSTREAM)
# Types that route by the message's headers (the exchange reads ``message.headers``)
HEADER_ROUTED = ("headers", FEDERATION_UPSTREAM)
# Types that ignore the routing key: one match per publish, whatever the CC/BCC keys
KEYLESS = ("fanout", "headers", FEDERATION_UPSTREAM)


class Exchange:
    """One exchange. ``matcher`` and ``e2e`` are replaced (never mutated) under the vhost lock."""

    __slots__ = (
        "vhost", "name", "type", "durable", "auto_delete", "internal", "arguments", "matcher",
        "e2e", "needs_headers", "alternate", "policy", "op_policy",
    )

    def __init__(
        self,
        vhost: str,
        name: str,
        type_: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict | None,
        policies: tuple[Policy | None, Policy | None] = (None, None),
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.type = type_
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments or {}
        if type_ == FEDERATION_UPSTREAM:
            self.arguments = typed_arguments(self.arguments)
        self.matcher: Matcher = matcher_for(type_, self.arguments)
        self.e2e = 0  # number of bindings whose destination is an exchange
        self.needs_headers = type_ in HEADER_ROUTED
        # The alternate exchange's name (``alternate-exchange`` argument, else policy):
        # where messages go that this exchange's own bindings do not route anywhere.
        self.alternate: str | None = None
        self.set_policy(*policies)

    def set_policy(self, policy: Policy | None, op_policy: Policy | None) -> None:
        """The policy and operator policy that now apply (at creation, or live from the
        ``PolicyRegistry``): ``alternate`` is replaced with one attribute store, so routing
        (which reads it once, without a lock) sees the old or the new one."""
        self.policy, self.op_policy = policy, op_policy
        self.alternate = alternate_exchange(self.arguments,
                                            effective_definition(policy, op_policy))

    def __repr__(self) -> str:
        return f"<Exchange {self.vhost!r}/{self.name!r} {self.type}>"

    def route(self, routing_key: str, headers: dict | None):
        """Destinations (queues and exchanges) bound to this exchange that match."""
        return self.matcher.route(routing_key, headers)
