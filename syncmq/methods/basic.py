"""basic.* handlers: qos, consume, cancel, publish, get, ack, nack, reject, recover.

``publish`` is the per-message hot path: one exchange lookup, a cached permission check, one
``Message`` object shared by every queue it is routed to, and no logging.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from ..broker.args import REPLY_TO, check_consume_arguments, wire_type
from ..broker.broker import generate_consumer_tag
from ..broker.message import PLAIN_PROPERTIES, Message, parse_expiration
from ..broker.publish import NO_QUEUES, PublishResult, PublishRun
from ..broker.publish import publish as broker_publish
from ..broker.queue import Consumer
from ..protocol.channel import deliver_prefix
from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from . import access
from .hand_over import HandOver, ack_heavy, publish_heavy, queues_heavy
from .queue import _queue_name

if TYPE_CHECKING:
    from ..broker.exchange import Exchange
    from .session import Channel, Session

B = _spec.Basic


def qos(session: Session, ch: Channel, m: B.Qos, _p, _b) -> None:
    if m.prefetch_size:
        raise AMQPConnectionError(
            _spec.NOT_IMPLEMENTED, f"NOT_IMPLEMENTED - prefetch_size!=0 ({m.prefetch_size})"
        )
    with ch.lock:
        if m.global_:
            ch.global_prefetch = m.prefetch_count
            ch.global_gets = sum(1 for _t, e in ch.unacked.items() if e[3] is None)
        else:
            ch.prefetch_count = m.prefetch_count
            ch.global_prefetch = 0  # rabbit_channel: a per-consumer qos unlimits the channel
    session.send_method(ch.id, B.QosOk())
    ch.refill()


def consume(session: Session, ch: Channel, m: B.Consume, _p, _b) -> None:
    if m.consumer_tag and (m.consumer_tag in ch.consumers or (
            ch.reply_consumer is not None and ch.reply_consumer[0] == m.consumer_tag)):
        raise AMQPConnectionError(
            _spec.NOT_ALLOWED, f"NOT_ALLOWED - attempt to reuse consumer tag '{m.consumer_tag}'"
        )
    if m.queue == REPLY_TO:
        _consume_reply_to(session, ch, m)
        return
    name = _queue_name(ch, m.queue)
    access.read(session, "queue", name)
    q = session.vhost.get_queue(name, session)
    priority = check_consume_arguments(name, session.vhost.name, m.arguments) \
        if m.arguments else 0
    tag = m.consumer_tag or generate_consumer_tag()
    consumer = Consumer(tag, q, ch, m.no_ack, m.exclusive, ch.prefetch_count, m.arguments,
                        deliver_prefix(tag), priority)
    with ch.lock:
        ch.consumers[tag] = consumer
    announce = None if m.no_wait else (
        lambda: session.send_method(ch.id, B.ConsumeOk(consumer_tag=tag)))
    try:
        q.add_consumer(consumer, announce)  # checks exclusivity under the queue lock
    except AMQPChannelError:
        with ch.lock:
            ch.consumers.pop(tag, None)
        raise


def _consume_reply_to(session: Session, ch: Channel, m: B.Consume) -> None:
    """Direct reply-to: consume from the ``amq.rabbitmq.reply-to`` pseudo-queue (no-ack only,
    one per channel; rabbit_channel's texts)."""
    if not m.no_ack:
        raise AMQPChannelError(_spec.PRECONDITION_FAILED,
                               "PRECONDITION_FAILED - reply consumer cannot acknowledge")
    if ch.reply_consumer is not None:
        raise AMQPChannelError(_spec.PRECONDITION_FAILED,
                               "PRECONDITION_FAILED - reply consumer already set")
    tag = m.consumer_tag or generate_consumer_tag()
    suffix = secrets.token_urlsafe(18)
    with ch.lock:
        ch.reply_consumer = (tag, suffix, deliver_prefix(tag))
    session.broker.reply_consumers[suffix] = ch
    if not m.no_wait:
        session.send_method(ch.id, B.ConsumeOk(consumer_tag=tag))


def cancel(session: Session, ch: Channel, m: B.Cancel, _p, _b) -> None:
    rc = ch.reply_consumer
    if rc is not None and rc[0] == m.consumer_tag:
        ch.drop_reply_consumer()
        if not m.no_wait:
            session.send_method(ch.id, B.CancelOk(consumer_tag=m.consumer_tag))
        return
    with ch.lock:
        c = ch.consumers.pop(m.consumer_tag, None)
    if c is not None and c.queue.remove_consumer(c):
        session.auto_delete_queue(c.queue)
    if not m.no_wait:
        session.send_method(ch.id, B.CancelOk(consumer_tag=m.consumer_tag))


def _exchange_to_publish_to(session: Session, ch: Channel, m: B.Publish):
    """The exchange ``m`` publishes to, after RabbitMQ's checks in its order: write
    permission (cached per channel), existence, internal, topic permission."""
    vhost = session.vhost
    name = m.exchange
    if name not in ch.write_ok:  # RabbitMQ: the write check comes before the lookup
        access.write(session, "exchange", name)
        ch.write_ok.add(name)
    ex = vhost.exchanges.get(name)
    if ex is None:
        raise AMQPChannelError(
            _spec.NOT_FOUND, f"NOT_FOUND - no exchange '{name}' in vhost '{vhost.name}'"
        )
    if ex.internal:
        raise AMQPChannelError(
            _spec.ACCESS_REFUSED,
            f"ACCESS_REFUSED - cannot publish to internal exchange '{name}' in vhost "
            f"'{vhost.name}'",
        )
    if ex.type == "topic":
        _check_topic(session, m)
    return ex


def _check_topic(session: Session, m: B.Publish) -> None:
    """The topic permission check of a publish to a topic exchange (each publish: the
    permissions may change), with no call when the user has no topic permissions."""
    if session.topic_perms is not None or session.broker.users is not session.topic_store:
        access.topic(session, m.exchange, m.routing_key, "write")


def publish(session: Session, ch: Channel, m: B.Publish, props: bytes, body: bytes) -> None:
    """basic.publish. A publish of the channel's previous decoded method (the protocol's
    pre-pass reuses it for the same payload: the same exchange, routing key and flags) with
    no property that needs a check reuses that publish's checks (write permission, the
    exchange's existence, internal) and its route (``Channel.route_*``) while the vhost's
    route generation is the one it was routed at (``VirtualHost.routes_gen``: no declare,
    delete, bind, unbind or policy since could have changed them), in this batch or a later
    one (a lone publisher's messages). What can change without a new generation is checked
    on every publish: tx mode, the topic permission, a resource alarm and, on the reactor
    standing in, the hand-over test of the route's queues (the route itself, a walk or not,
    costs nothing then)."""
    vhost = session.vhost
    if (m is ch.last_publish and ch.route_gen == vhost.routes_gen and not ch.tx
            and (props in PLAIN_PROPERTIES or not (props[0] & _RARE_HIGH or props[1] & _RARE_LOW))):
        if ch.route_topic:
            _check_topic(session, m)
        if session.blocked:
            session.block_publisher()
        queues = ch.route_queues
        if session.standing_in and queues_heavy(queues):
            raise HandOver  # (nothing changed yet: the worker handles it from the start)
        message = Message(m.exchange, m.routing_key, props, body)
        message._exchange_rk = ch.last_exchange_rk
        ch.n_publish += 1
        confirms = ch.confirms
        result = broker_publish(vhost, ch.route_ex, message, False, confirms is not None,
                                session.run, queues, ch.publish_result)
        if not result.routed:
            ch.n_drop += 1
        if confirms is not None:
            confirms.published(result, message)
            session.confirm_dirty.add(confirms)
        return
    if m.immediate:  # RabbitMQ rejects this before any other check
        raise AMQPConnectionError(_spec.NOT_IMPLEMENTED, "NOT_IMPLEMENTED - immediate=true")
    gen = vhost.routes_gen  # (read before the route: see VirtualHost.routes_changed)
    name = m.exchange
    ex = _exchange_to_publish_to(session, ch, m)
    if session.blocked:
        session.block_publisher()  # a resource alarm is on: this is the last read for now
    message = Message(name, m.routing_key, props, body)
    if m is ch.last_publish:
        # the same decoded method as the previous publish (the protocol's fast path reuses
        # it): the same encoded exchange and routing key for deliveries
        message._exchange_rk = ch.last_exchange_rk
    else:
        ch.last_publish = m
        ch.last_exchange_rk = message.exchange_rk
        ch.route_gen = -1  # (the cached route is the previous method's: not m's)
    # One test of the property flags for the rare features: user-id check, expiration,
    # reply-to and CC/BCC headers (a publisher that sets none of them pays only this).
    rare = len(props) >= 2 and (props[0] << 8 | props[1]) & _FLAGS_RARE
    if rare:
        message = _rare_checks(session, ch, message, props)
    if session.standing_in and publish_heavy(vhost, ex, message):
        raise HandOver  # (nothing changed yet: the worker handles it from the start)
    ch.n_publish += 1
    if ch.tx:
        ch.tx_publishes.append((ex, message, m.mandatory))
        return
    confirms = ch.confirms
    if m.mandatory:
        result = route(session, ch, ex, message, True, confirms is not None, session.run)
    else:  # (no basic.return: straight to the broker, with the channel's reused result)
        result = broker_publish(vhost, ex, message, False, confirms is not None, session.run,
                                None, ch.publish_result)
        if not result.routed:
            ch.n_drop += 1
        if not rare and not ex.needs_headers and result.queues is not NO_QUEUES:
            # (NO_QUEUES: a direct reply-to, not routed through queues)
            # the next publishes of this method route the same (see above)
            queues = result.queues
            ch.route_gen = gen
            ch.route_ex = ex
            ch.route_queues = queues
            ch.route_topic = ex.type == "topic"
    if confirms is not None:
        confirms.published(result, message)  # sent at the end of the batch (Session._receive)
        session.confirm_dirty.add(confirms)


def _rare_checks(session: Session, ch: Channel, message: Message, props: bytes) -> Message:
    """The checks of a publish with a rare property (reply-to, user-id, expiration, CC/BCC
    headers) in rabbit_channel's order: direct reply-to (maybe_set_fast_reply_to), user-id,
    expiration; CC/BCC are checked when routing. Returns the message to publish."""
    if message.has_reply_to() and message.props.reply_to == REPLY_TO and \
            ch.reply_consumer is None:
        raise AMQPChannelError(_spec.PRECONDITION_FAILED,
                               "PRECONDITION_FAILED - fast reply consumer does not exist")
    if props[1] & _FLAG_USER_ID:
        _check_user_id(session, props)
    if message.ttl is not None and message.ttl < 0:
        _invalid_expiration(message)
    if message.has_reply_to() or (b"CC" in props and message.headers and (
            "CC" in message.headers or "BCC" in message.headers)):
        message = _rewrite(session, ch, message)
    return message


def _invalid_expiration(message: Message) -> None:
    value = message.props.expiration
    try:
        parse_expiration(value)
    except ValueError as e:
        raise AMQPChannelError(
            _spec.PRECONDITION_FAILED,
            f"PRECONDITION_FAILED - invalid expiration '{value}': {e}") from None


def _header_routes(headers: dict, key: str) -> tuple[str, ...]:
    """CC/BCC routing keys (rabbit_basic:header_routes): an array of strings, else a 406."""
    v = headers.get(key)
    if v is None and key not in headers:
        return ()
    if not isinstance(v, list):
        raise AMQPChannelError(
            _spec.PRECONDITION_FAILED,
            f'PRECONDITION_FAILED - invalid message: {{unacceptable_type_in_header,"{key}",'
            f"{wire_type(v)}}}")
    return tuple(r for r in v if isinstance(r, str))


def _rewrite(session: Session, ch: Channel, message: Message) -> Message:
    """Sender-selected distribution (CC/BCC headers) and direct reply-to (``reply_to``):
    the few publishes that need their properties decoded, and perhaps re-encoded."""
    props = message.props
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    changed = False
    headers = props.headers
    if headers and ("CC" in headers or "BCC" in headers):
        cc = _header_routes(headers, "CC")
        bcc = _header_routes(headers, "BCC")
        if "BCC" in headers:  # BCC keys route, but the header is not delivered
            headers = dict(headers)
            del headers["BCC"]
            changed = True
    reply_to = props.reply_to
    if reply_to == REPLY_TO:
        rc = ch.reply_consumer
        if rc is None:
            raise AMQPChannelError(
                _spec.PRECONDITION_FAILED,
                "PRECONDITION_FAILED - fast reply consumer does not exist")
        reply_to = f"{REPLY_TO}.{rc[1]}"
        changed = True
    if not changed and not cc and not bcc:
        return message
    properties = message.properties
    if changed:
        new = _spec.BasicProperties(**{f: getattr(props, f) for f in props.FIELDS})
        new.headers = headers
        new.reply_to = reply_to
        properties = new.encode()
    return Message(message.exchange, message.routing_key, properties, message.body, cc, bcc)


_FLAG_USER_ID = 0x10  # user-id in the low byte of the basic property flags (0x0010)
# basic property flags that send a publish down the slow path: headers (CC/BCC), reply-to,
# expiration (its validity), user-id
_FLAGS_RARE = (1 << 13) | (1 << 9) | (1 << 8) | _FLAG_USER_ID
_RARE_HIGH = _FLAGS_RARE >> 8  # (the same bits, octet by octet)
_RARE_LOW = _FLAGS_RARE & 0xFF


def _check_user_id(session: Session, props: bytes) -> None:
    """A user-id property must name the connection's user (the rule is
    ``User.user_id_refusal``'s, shared with the management API's publish): 406 otherwise."""
    refusal = session.user.user_id_refusal(_spec.BasicProperties.decode(props).user_id)
    if refusal is not None:
        raise AMQPChannelError(_spec.PRECONDITION_FAILED, f"PRECONDITION_FAILED - {refusal}")


def route(session: Session, ch: Channel, ex: Exchange, message: Message, mandatory: bool,
          must_journal: bool = True, run: PublishRun | None = None) -> PublishResult:
    """A channel's publish (basic.publish, tx.commit): the broker's one publish
    (``broker.publish``), then basic.return if it was mandatory and unroutable.

    ``must_journal`` (confirm and tx channels): a persistent message the journal refuses is
    dropped; its confirm is a nack (or the commit fails) once the barrier reports the error.
    ``run``: basic.publish outside tx lets the broker hold publishes back in the session's
    run (see ``broker.publish.PublishRun``).
    """
    body = message.body  # the body store takes it off the message
    result = broker_publish(session.vhost, ex, message, mandatory, must_journal, run)
    if not mandatory and not result.routed:
        ch.n_drop += 1
    elif mandatory and not result.routed:
        ch.n_return += 1
        session.send_content(
            ch.id,
            B.Return(reply_code=_spec.NO_ROUTE, reply_text="NO_ROUTE", exchange=message.exchange,
                     routing_key=message.routing_key),
            message.properties, body,
        )
    return result


def get(session: Session, ch: Channel, m: B.Get, _p, _b) -> None:
    name = _queue_name(ch, m.queue)
    access.read(session, "queue", name)
    q = session.vhost.get_queue(name, session)
    r = q.get(m.no_ack)
    if r is None:
        ch.n_get_empty += 1
        session.send_method(ch.id, B.GetEmpty())
        return
    seq, message, redelivered, remaining = r
    ch.send_get_ok(q, seq, message, redelivered, remaining, m.no_ack)


def ack(session: Session, ch: Channel, m: B.Ack, _p, _b) -> None:
    if ch.tx:
        _tx_collect(ch, m.delivery_tag, m.multiple, False)
        return
    if session.standing_in and not m.multiple and ack_heavy(ch, m.delivery_tag):
        raise HandOver  # (nothing changed yet: the worker handles it from the start)
    entries = ch.take_unacked(m.delivery_tag, m.multiple)
    ch.n_ack += len(entries)
    session.defer_ack(ch, entries)  # settled with the rest of this run of acks


def nack(session: Session, ch: Channel, m: B.Nack, _p, _b) -> None:
    if ch.tx:
        _tx_collect(ch, m.delivery_tag, m.multiple, True if m.requeue else None)
        return
    ch.settle(ch.take_unacked(m.delivery_tag, m.multiple), requeue=m.requeue, reject=True)


def reject(session: Session, ch: Channel, m: B.Reject, _p, _b) -> None:
    if ch.tx:
        _tx_collect(ch, m.delivery_tag, False, True if m.requeue else None)
        return
    ch.settle(ch.take_unacked(m.delivery_tag, False), requeue=m.requeue, reject=True)


def _tx_collect(ch: Channel, tag: int, multiple: bool, requeue: bool | None) -> None:
    """An ack/nack/reject in tx mode: record the tags it names (applied on tx.commit).

    As RabbitMQ does, the tags are collected now: a tag that is not outstanding, or already
    acknowledged in this transaction, is a 406 at once (not a partial commit later). Until
    the commit the deliveries stay unacked (and keep counting against prefetch); a rollback
    simply forgets them. ``ch.tx_acks`` maps tag -> requeue (False: ack, True: requeue,
    None: reject without requeue, i.e. dead-letter), in the order collected.
    """
    pending = ch.tx_acks
    with ch.lock:
        if multiple:
            tags = []
            for t in ch.unacked:
                if tag and t > tag:
                    break
                if t not in pending:
                    tags.append(t)
        else:
            tags = [tag] if tag in ch.unacked and tag not in pending else []
    if not tags and not (multiple and tag == 0):
        raise AMQPChannelError(
            _spec.PRECONDITION_FAILED, f"PRECONDITION_FAILED - unknown delivery tag {tag}"
        )
    for t in tags:
        pending[t] = requeue


def _recover(session: Session, ch: Channel, requeue: bool) -> None:
    if not requeue:
        raise AMQPConnectionError(_spec.NOT_IMPLEMENTED, "NOT_IMPLEMENTED - requeue=false")
    entries = ch.take_all_unacked()
    if entries:
        ch.settle(entries, requeue=True)


def recover(session: Session, ch: Channel, m: B.Recover, _p, _b) -> None:
    _recover(session, ch, m.requeue)
    session.send_method(ch.id, B.RecoverOk())


def recover_async(session: Session, ch: Channel, m: B.RecoverAsync, _p, _b) -> None:
    _recover(session, ch, m.requeue)


HANDLERS = {
    B.Qos.INDEX: qos,
    B.Consume.INDEX: consume,
    B.Cancel.INDEX: cancel,
    B.Publish.INDEX: publish,
    B.Get.INDEX: get,
    B.Ack.INDEX: ack,
    B.Nack.INDEX: nack,
    B.Reject.INDEX: reject,
    B.Recover.INDEX: recover,
    B.RecoverAsync.INDEX: recover_async,
}
