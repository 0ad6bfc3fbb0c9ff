"""What the reactor thread, standing in for a connection's idle worker, hands back to it.

The reactor runs a small read of publishes and acks in the idle worker's place
(``reactor.reading.Reader._read``; the transport's ``standing_in`` is set meanwhile, and
:class:`~.session.Session` copies it to ``Session.standing_in`` per batch). Its frame-level
checks (``reading._light``) bound the frames, not what handling them costs: that depends on
the broker's state. While the reactor runs a task, every other connection's reads, writes,
heartbeats and handshakes wait, so what may cost more than a message's worth goes back to
the worker, decided before it has any effect:

- the whole input (:func:`input_heavy`), while a resource alarm is on (the publisher is
  blocked, a ``connection.blocked`` sent) or the memory budget's store may touch the disk (it
  holds spilled bodies, queues have paged messages out, or its bodies in memory are past half
  the budget: a put may evict, an ack's next delivery may read a body back);
- one publish and everything after it (:func:`publish_heavy`, raising :class:`HandOver` in
  ``basic.publish``): a route walk (exchange-to-exchange bindings, an alternate exchange,
  CC/BCC, a headers exchange's matching), more than ``STAND_IN_QUEUES`` queues (a fanout to
  10,000), or a queue whose publish may do more than append (a length limit: overflow,
  reject-publish nacks, drop-head dead-lettering; a TTL; priorities; a paged FIFO past half
  its window) or with more than ``STAND_IN_CONSUMERS`` consumers; a publish on a channel's
  cached route (``methods.basic.publish``: no walk to pay) is tested on its queues alone
  (:func:`queues_heavy`);
- one ack and everything after it (:func:`ack_heavy`, in ``basic.ack``) if its queue is such
  a queue (the ack's settle delivers the next messages: an offer to each consumer, expiry and
  its dead-lettering). basic.reject and basic.nack never reach the reactor
  (``reading._light``: they may dead-letter).
- a publish or ack that fails with a channel error (an unknown delivery tag, a missing
  exchange): the handlers raise it before any effect, and closing the channel requeues its
  unacked messages and may delete an auto-delete queue (``Session._handle`` hands the event
  and the rest over; the worker runs it again and closes the channel there).

The hand-over parks the input on a :class:`~.durable_reply.Hold` without a reply and queues
:func:`~.durable_reply.resume` on the worker: input read meanwhile is parked behind it (on the
reactor standing in or on the worker), so the connection's order holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .durable_reply import Hold, resume

if TYPE_CHECKING:
    from ..broker.exchange import Exchange
    from ..broker.message import Message
    from ..broker.queue import Queue
    from ..broker.vhost import VirtualHost
    from .channel_state import Channel
    from .session import Session

# Most queues a publish handled on the reactor thread may reach (each is a queue lock, an
# append and perhaps a delivery)
STAND_IN_QUEUES = 4
# Most consumers a queue may have for its publishes and acks to be handled there (a message
# is offered to each consumer in turn until one has credit: O(consumers) when most have
# none)
STAND_IN_CONSUMERS = 8


class HandOver(Exception):  # noqa: N818 (not an error: a signal to Session._handle)
    """Raised by a handler running on the reactor standing in, before it changed anything:
    the event and the rest of the input go to the worker."""


def to_worker(session: Session) -> Hold:
    """Park the rest of this input (the caller fills the hold) and queue its handling on
    the connection's worker. The session's worker task is running (on the reactor standing
    in), so the worker runs ``resume`` only after it."""
    session.standing_in = False
    hold = session.hold = Hold(0, None, None, None)
    session.transport.worker.submit(resume, session, None)
    return hold


def input_heavy(session: Session) -> bool:
    """The broker's state may make any publish or ack costly (see the module docstring)."""
    if session.blocked:
        return True
    store = session.vhost.body_store if session.vhost is not None else None
    return store is not None and store.may_touch_disk()


def publish_heavy(vhost: VirtualHost, ex: Exchange, message: Message) -> bool:
    """Publishing ``message`` to ``ex`` may cost more than one message's worth. O(1) for a
    direct, fanout or topic exchange: the matcher's set of queues is counted, not copied
    (``VirtualHost.route`` copies it: O(queues) for a fanout to 10,000), and at most
    ``STAND_IN_QUEUES`` queues are looked at."""
    if ex.e2e or ex.alternate is not None or ex.needs_headers or message.cc or message.bcc:
        return True
    if ex is vhost.default_exchange:
        q = vhost.queues.get(message.routing_key)
        return q is not None and _queue_heavy(q)
    return queues_heavy(ex.matcher.route(message.routing_key, None))


def queues_heavy(queues) -> bool:
    """A publish to ``queues`` (a route; a channel's cached one costs no walk, so this is all
    its publishes test, ``methods.basic.publish``) may cost more than one message's worth:
    more than ``STAND_IN_QUEUES`` queues, or one that may do more than an append and one
    delivery (:func:`_queue_heavy`)."""
    if len(queues) > STAND_IN_QUEUES:
        return True
    for q in queues:
        if _queue_heavy(q):
            return True
    return False


def ack_heavy(ch: Channel, tag: int) -> bool:
    """Settling delivery ``tag`` of ``ch`` (no ``multiple``) may cost more than a message's
    worth: its queue is heavy (see :func:`_queue_heavy`). An unknown tag is not (its 406 is
    cheap). The entry is read without ``ch.lock``: only this connection's task removes
    entries, and it is the caller."""
    entry = ch.unacked.get(tag)
    return entry is not None and _queue_heavy(entry[0])


def _queue_heavy(q: Queue) -> bool:
    """A publish to ``q`` or a settle on it may do more than an append or a removal and one
    delivery: a limit, TTL or priorities (not ``batchable``), many consumers, or a paged FIFO
    past half its window (racy reads: a hint)."""
    if not q.batchable or q.consumers.count > STAND_IN_CONSUMERS:
        return True
    window = q.ready.window  # (None: not a paged FIFO)
    return window is not None and q.ready.count() >= window // 2
