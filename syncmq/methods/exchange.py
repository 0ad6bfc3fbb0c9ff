"""exchange.* handlers: declare, delete, bind, unbind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import _spec
from . import access

if TYPE_CHECKING:
    from .session import Channel, Session

E = _spec.Exchange


def declare(session: Session, ch: Channel, m: E.Declare, _p, _b) -> None:
    if not m.passive:
        access.configure(session, "exchange", m.exchange)
    session.vhost.declare_exchange(
        m.exchange, m.type, m.passive, m.durable, m.auto_delete, m.internal, m.arguments
    )
    if not m.no_wait:
        session.send_method(ch.id, E.DeclareOk())


def delete(session: Session, ch: Channel, m: E.Delete, _p, _b) -> None:
    access.configure(session, "exchange", m.exchange)
    session.vhost.delete_exchange(m.exchange, m.if_unused)
    if not m.no_wait:
        session.send_method(ch.id, E.DeleteOk())


def bind(session: Session, ch: Channel, m: E.Bind, _p, _b) -> None:
    vh = session.vhost
    dest = vh.get_exchange(m.destination)
    vh.get_exchange(m.source)
    access.write(session, "exchange", m.destination)
    access.read(session, "exchange", m.source)
    vh.bind(m.source, dest, m.routing_key, m.arguments)
    if not m.no_wait:
        session.send_method(ch.id, E.BindOk())


def unbind(session: Session, ch: Channel, m: E.Unbind, _p, _b) -> None:
    vh = session.vhost
    dest = vh.get_exchange(m.destination)
    vh.get_exchange(m.source)
    access.write(session, "exchange", m.destination)
    access.read(session, "exchange", m.source)
    vh.unbind(m.source, dest, m.routing_key, m.arguments)
    if not m.no_wait:
        session.send_method(ch.id, E.UnbindOk())


HANDLERS = {
    E.Declare.INDEX: declare,
    E.Delete.INDEX: delete,
    E.Bind.INDEX: bind,
    E.Unbind.INDEX: unbind,
}
