"""queue.* handlers: declare, bind, unbind, purge, delete."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..broker.args import REPLY_TO
from ..broker.broker import generate_queue_name
from ..wire import _spec
from ..wire.errors import AMQPChannelError
from . import access
from .durable_reply import reply_when_durable

if TYPE_CHECKING:
    from .session import Channel, Session

Q = _spec.Queue


def _queue_name(ch: Channel, name: str) -> str:
    """An empty queue name means the channel's most recently declared queue (RabbitMQ)."""
    if name:
        return name
    if not ch.last_queue:
        raise AMQPChannelError(
            _spec.NOT_FOUND, "NOT_FOUND - no previously declared queue"
        )
    return ch.last_queue


def _declare_reply_to(session: Session, ch: Channel, m: Q.Declare) -> None:
    """Declaring the direct reply-to pseudo-queue (passive or not, as rabbit_channel): it
    exists (0 messages, 1 consumer) if it is ``amq.rabbitmq.reply-to`` or names a channel
    still consuming from it; else 404."""
    name = m.queue
    if name != REPLY_TO and (
            not name.startswith(REPLY_TO + ".")
            or session.broker.reply_consumers.get(name[len(REPLY_TO) + 1:]) is None):
        raise AMQPChannelError(
            _spec.NOT_FOUND, f"NOT_FOUND - no queue '{name}' in vhost '{session.vhost.name}'")
    if not m.no_wait:
        session.send_method(ch.id, Q.DeclareOk(queue=name, message_count=0, consumer_count=1))


def declare(session: Session, ch: Channel, m: Q.Declare, _p, _b) -> None:
    if m.queue.startswith(REPLY_TO):
        _declare_reply_to(session, ch, m)
        return
    # a passive declare of "" is not the channel's last queue (RabbitMQ 3.10: 404 "no queue
    # ''"), unlike the other queue methods
    name = m.queue or ("" if m.passive else generate_queue_name())
    if not m.passive:
        if m.queue.startswith("amq."):
            # RabbitMQ checks the reserved prefix before the configure permission
            session.vhost.declare_queue(name, False, m.durable, m.exclusive, m.auto_delete,
                                        m.arguments, session)
        # a server-named queue is checked against its generated amq.gen-* name (RabbitMQ)
        access.configure(session, "queue", name)
        dlx = (m.arguments or {}).get("x-dead-letter-exchange")
        if isinstance(dlx, str) and name not in session.vhost.queues:
            # creating with a dead-letter exchange: read on the queue, write on the DLX
            access.read(session, "queue", name)
            access.write(session, "exchange", dlx)
    q, created = session.vhost.declare_queue(
        name, m.passive, m.durable, m.exclusive, m.auto_delete, m.arguments, session,
        server_named=not m.queue, renew=not (m.passive and m.no_wait),
    )
    if created and m.exclusive:
        session.exclusive_queues.append(q)
    ch.last_queue = q.name
    reply_when_durable(session, ch.id, m, None if m.no_wait else Q.DeclareOk(
        queue=q.name, message_count=q.message_count(), consumer_count=q.consumer_count()))


def bind(session: Session, ch: Channel, m: Q.Bind, _p, _b) -> None:
    vh = session.vhost
    name = _queue_name(ch, m.queue)
    # RabbitMQ's order (rabbit_channel:binding_action_with_checks): write on the queue, the
    # default exchange (403), read on the exchange, and only then do the two have to exist
    access.write(session, "queue", name)
    if m.exchange == "":
        vh.bind("", None, m.routing_key, m.arguments)  # raises 403
    access.read(session, "exchange", m.exchange)
    access.topic_bind(session, m.exchange, m.routing_key)
    # rabbit_binding:add: a missing exchange is reported before a missing queue, and the
    # exclusive check (405) comes after the binding's validation (in vh.bind)
    vh.get_exchange(m.exchange)
    q = vh.queues.get(name)
    if q is None:
        vh.get_queue(name)  # raises 404
    vh.bind(m.exchange, q, m.routing_key, m.arguments, session)
    reply_when_durable(session, ch.id, m, None if m.no_wait else Q.BindOk())


def unbind(session: Session, ch: Channel, m: Q.Unbind, _p, _b) -> None:
    vh = session.vhost
    name = _queue_name(ch, m.queue)
    # RabbitMQ's order (rabbit_channel:binding_action_with_checks): write on the queue, the
    # default exchange (403), read on the exchange; permissions are checked even when the
    # queue, the exchange or the binding does not exist
    access.write(session, "queue", name)
    if m.exchange == "":
        vh.unbind("", None, m.routing_key, m.arguments)  # raises 403
    access.read(session, "exchange", m.exchange)
    access.topic_bind(session, m.exchange, m.routing_key)
    # idempotent (rabbit_binding:remove): a missing queue, exchange or binding is unbind-ok
    vh.unbind(m.exchange, vh.queues.get(name), m.routing_key, m.arguments, session)
    reply_when_durable(session, ch.id, m, Q.UnbindOk())


def purge(session: Session, ch: Channel, m: Q.Purge, _p, _b) -> None:
    name = _queue_name(ch, m.queue)
    access.read(session, "queue", name)
    q = session.vhost.get_queue(name, session)
    n = q.purge()
    reply_when_durable(session, ch.id, m, None if m.no_wait else Q.PurgeOk(message_count=n))


def delete(session: Session, ch: Channel, m: Q.Delete, _p, _b) -> None:
    name = _queue_name(ch, m.queue)
    access.configure(session, "queue", name)
    result = session.vhost.delete_queue(name, m.if_unused, m.if_empty, session)
    count, consumers = result if result is not None else (0, [])
    # RabbitMQ answers delete-ok first and only then sends basic.cancel to the queue's
    # consumers (the channel learns of the queue's end afterwards): clients waiting for
    # delete-ok on a consuming channel (py-amqp, kombu's SimpleQueue) depend on that order
    def cancel_consumers() -> None:
        for c in consumers:
            c.channel.consumer_cancelled(c)

    reply_when_durable(session, ch.id, m, None if m.no_wait else Q.DeleteOk(message_count=count),
                       cancel_consumers if consumers else None)


HANDLERS = {
    Q.Declare.INDEX: declare,
    Q.Bind.INDEX: bind,
    Q.Unbind.INDEX: unbind,
    Q.Purge.INDEX: purge,
    Q.Delete.INDEX: delete,
}
