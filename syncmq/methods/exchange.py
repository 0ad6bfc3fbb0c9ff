"""exchange.* handlers: declare, delete, bind, unbind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..broker.exchange import EXCHANGE_TYPES
from ..wire import _spec
from . import access
from .durable_reply import reply_when_durable

if TYPE_CHECKING:
    from .session import Channel, Session

E = _spec.Exchange


def declare(session: Session, ch: Channel, m: E.Declare, _p, _b) -> None:
    vh = session.vhost
    if not m.passive:
        # RabbitMQ's order: unknown type (503) and the default exchange (403) come before the
        # configure check; declare_exchange raises those, so let it.
        if m.exchange == "" or m.type not in EXCHANGE_TYPES:
            vh.declare_exchange(m.exchange, m.type, m.passive, m.durable, m.auto_delete,
                                m.internal, m.arguments)
        access.configure(session, "exchange", m.exchange)
        ae = (m.arguments or {}).get("alternate-exchange")
        if isinstance(ae, str) and m.exchange not in vh.exchanges:
            # creating with an alternate exchange: read on this one, write on the AE
            access.read(session, "exchange", m.exchange)
            access.write(session, "exchange", ae)
    vh.declare_exchange(
        m.exchange, m.type, m.passive, m.durable, m.auto_delete, m.internal, m.arguments
    )
    reply_when_durable(session, ch.id, m, None if m.no_wait else E.DeclareOk())


def delete(session: Session, ch: Channel, m: E.Delete, _p, _b) -> None:
    if m.exchange == "" or m.exchange.startswith("amq."):
        session.vhost.delete_exchange(m.exchange, m.if_unused)  # 403 before configure
    access.configure(session, "exchange", m.exchange)
    session.vhost.delete_exchange(m.exchange, m.if_unused)
    reply_when_durable(session, ch.id, m, None if m.no_wait else E.DeleteOk())


def bind(session: Session, ch: Channel, m: E.Bind, _p, _b) -> None:
    vh = session.vhost
    access.write(session, "exchange", m.destination)
    if m.destination == "" or m.source == "":
        vh.bind("", vh.default_exchange, m.routing_key, m.arguments)  # 403
    access.read(session, "exchange", m.source)
    access.topic_bind(session, m.source, m.routing_key)
    vh.get_exchange(m.source)  # rabbit_binding:add reports a missing source first
    vh.bind(m.source, vh.get_exchange(m.destination), m.routing_key, m.arguments)
    reply_when_durable(session, ch.id, m, None if m.no_wait else E.BindOk())


def unbind(session: Session, ch: Channel, m: E.Unbind, _p, _b) -> None:
    vh = session.vhost
    access.write(session, "exchange", m.destination)
    if m.destination == "" or m.source == "":
        vh.unbind("", vh.default_exchange, m.routing_key, m.arguments)  # 403
    access.read(session, "exchange", m.source)
    access.topic_bind(session, m.source, m.routing_key)
    # idempotent (rabbit_binding:remove): a missing source, destination or binding is
    # unbind-ok; permissions above are checked all the same
    vh.unbind(m.source, vh.exchanges.get(m.destination), m.routing_key, m.arguments)
    reply_when_durable(session, ch.id, m, None if m.no_wait else E.UnbindOk())


HANDLERS = {
    E.Declare.INDEX: declare,
    E.Delete.INDEX: delete,
    E.Bind.INDEX: bind,
    E.Unbind.INDEX: unbind,
}
