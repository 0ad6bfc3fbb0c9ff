"""The broker's one publish: route a message, journal it, store its body, enqueue it.

Every publisher goes through :func:`publish`: ``basic.publish`` (one by one, or in runs), ``tx.commit``, dead-lettering
(``VirtualHost.dead_letter``) and the management API's publish endpoint. What it does, in
order (the order is what makes the journal and the memory budget safe):

1. route (no lock: exchanges' matchers are immutable), or for a default-exchange publish to
   ``amq.rabbitmq.reply-to.<suffix>`` hand the message straight to the consuming channel
   (direct reply-to: no queue, no journal, no store);
2. journal a persistent message that reaches a durable queue (its PUBLISH record is appended
   before the message is on any queue, so no ACK can precede it);
3. put its body in the memory budget's store with one reference per queue (marked journaled
   when every reference is a queue named in the record: then it is read back from the journal
   instead of spilled);
4. enqueue it on each queue (``Queue.publish``), or add it to a :class:`PublishRun` (enqueued
   later with one ``Queue.publish_many`` per queue).

The outcome is a :class:`PublishResult`; what a publisher does with it (basic.return,
publisher confirms, tx.commit-ok, an HTTP answer) is the publisher's business.

Threads: any thread may publish (a connection's worker, a queue's dead-lettering, the
management server); nothing here holds a lock across steps, and each queue takes its own lock
in step 4. A :class:`PublishRun` belongs to one thread (its owner's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .args import REPLY_TO
from .durability import NotDurable
from .message import Message
from .queue import ENQUEUED, REFUSED

if TYPE_CHECKING:
    from .exchange import Exchange
    from .queue import Queue
    from .vhost import VirtualHost

REPLY_PREFIX = REPLY_TO + "."

# Most publishes to one queue a run holds back before enqueueing them (bounds how long its
# consumers wait for the first)
RUN_MAX = 128


class PublishResult:
    """What became of one publish (read by the publisher; never shared).

    - ``queues``: the queues it was routed to (empty for direct reply-to);
    - ``routed``: a queue took it, or refused it for a limit, or a direct reply-to consumer
      got it (``not routed``: unroutable, a mandatory publish is returned);
    - ``rejected``: a queue refused it (``x-overflow`` = reject-publish(-dlx)): a publisher
      confirm is a basic.nack;
    - ``journaled``: its PUBLISH record was appended (or the journal refused it): a confirm,
      commit-ok or HTTP answer waits for the next journal barrier, which fails if the record
      could not be made durable;
    - ``dropped``: the journal refused it and the publisher asked for ``must_journal``: it is
      on no queue.
    """

    __slots__ = ("queues", "routed", "rejected", "journaled", "dropped")

    def __init__(self, queues: list, routed: bool, rejected: bool = False,
                 journaled: bool = False, dropped: bool = False) -> None:
        self.queues = queues
        self.routed = routed
        self.rejected = rejected
        self.journaled = journaled
        self.dropped = dropped

    def __repr__(self) -> str:
        return (f"<PublishResult routed={self.routed} rejected={self.rejected} "
                f"journaled={self.journaled} dropped={self.dropped} queues={self.queues}>")


class PublishRun:
    """Publishes held back per queue and enqueued together (one lock hold and one dispatch
    per queue and run instead of one per message).

    Only a non-mandatory publish without a TTL bound for a ``batchable`` queue (no length
    limit, TTL or priorities) joins a run: its outcome does not depend on the queue's answer.
    The owner flushes the run before anything that could observe a held-back publish (for a
    connection: before any method other than basic.publish/basic.ack, at the end of each
    batch, when a channel is released); :func:`publish` flushes it before it enqueues a
    publish that does not join, so a queue keeps its publishers' order.

    ``stalled``: the queues this run's publishes went to that were behind their consumers
    (``Queue.behind``, see ``broker.flow``), noted when their run is enqueued (a batchable
    queue: no cost per message) or when a publish goes to them one by one; the owner asks
    them for credit and empties it.

    :func:`publish` adds to ``pending`` itself (no call per message) and flushes the run
    when a queue's list reaches ``RUN_MAX``.

    Owned by one thread (a connection's worker); not thread-safe.
    """

    __slots__ = ("pending", "stalled")

    def __init__(self) -> None:
        # queue -> messages to enqueue, in order; the same dict object for the run's life
        self.pending: dict[Queue, list[Message]] = {}
        self.stalled: set[Queue] = set()

    def flush(self) -> None:
        """Enqueue every held-back publish. Every queue's run is enqueued even if one raises
        (one try per queue, not per message); then the first error is raised."""
        pending = self.pending
        if not pending:
            return
        if len(pending) == 1:  # (the usual case: one queue, nothing else to enqueue after)
            q, messages = pending.popitem()
            q.publish_many(messages)
            if q.behind:
                self.stalled.add(q)
            return
        runs = list(pending.items())
        pending.clear()
        error = None
        for q, messages in runs:
            try:
                q.publish_many(messages)
                if q.behind:
                    self.stalled.add(q)
            except Exception as e:
                if error is None:
                    error = e
        if error is not None:
            raise error


def publish(vhost: VirtualHost, ex: Exchange, message: Message, mandatory: bool = False,
            must_journal: bool = False, run: PublishRun | None = None,
            queues: list[Queue] | None = None,
            result: PublishResult | None = None) -> PublishResult:
    """Route ``message`` published to ``ex`` and enqueue it (see the module docstring).

    ``must_journal``: a persistent message for a durable queue that the journal refuses is
    dropped (``result.dropped``) rather than queued as a transient one (publishers that
    promise durability: confirm and tx channels, the management API). ``run``: non-mandatory
    publishes may be held back in it (see :class:`PublishRun`). ``queues``: the publisher
    chose the queues itself (dead-lettering routes, then drops cycles); no routing and no
    direct reply-to then. ``result``: fill this object in instead of a new one (a hot
    publisher's own, reused: it is valid until that publisher's next publish).
    """
    rejected = journaled = False
    if queues is None:
        if not ex.name and message.routing_key.startswith(REPLY_PREFIX):
            target = vhost.reply_consumers.get(message.routing_key[len(REPLY_PREFIX):])
            routed = target is not None and target.deliver_reply(message)
            return _result(result, NO_QUEUES, routed, False, False, False)
        queues = vhost.route(ex, message)
    hold = run is not None and not mandatory and message.ttl is None
    if run is not None and not hold and run.pending:
        run.flush()  # earlier held-back publishes first: a queue keeps the publish order
    if not queues:
        return _result(result, queues, False, False, False, False)
    in_journal = False  # every reference is a queue named in a durable-bound PUBLISH record
    if message.persistent and vhost.durability is not None:
        try:
            in_journal = journaled = vhost.durability.publish(vhost.name, message, queues)
        except NotDurable:
            journaled = True  # its barrier fails: confirms are nacks, commits fail
            if must_journal:
                return _result(result, queues, True, False, True, True)
    store = vhost.body_store
    if store is not None:
        store.put(message, len(queues), in_journal and all(q.journaled for q in queues))
    if hold:  # its outcome does not depend on a batchable queue's answer: routed
        pending = run.pending
        for q in queues:
            if q.batchable:  # (PublishRun.add, inlined: one call less per message)
                held = pending.get(q)
                if held is None:
                    pending[q] = [message]
                else:
                    held.append(message)
                    if len(held) >= RUN_MAX:
                        run.flush()
            else:
                if q.publish(message) == REFUSED:
                    rejected = True
                if q.behind:
                    run.stalled.add(q)
        if result is None:
            return PublishResult(queues, True, rejected, journaled, False)
        # (the per-message path: filled in here rather than by a call to _result)
        result.queues, result.routed, result.rejected, result.journaled, result.dropped = (
            queues, True, rejected, journaled, False)
        return result
    else:
        routed = False
        for q in queues:
            r = q.publish(message)
            if r:
                routed = True
                if r == REFUSED:
                    rejected = True
            if q.behind and run is not None:
                run.stalled.add(q)
    return _result(result, queues, routed, rejected, journaled, False)


def _result(result: PublishResult | None, queues: list, routed: bool, rejected: bool,
            journaled: bool, dropped: bool) -> PublishResult:
    """``result`` filled in, or a new one."""
    if result is None:
        return PublishResult(queues, routed, rejected, journaled, dropped)
    result.queues = queues
    result.routed = routed
    result.rejected = rejected
    result.journaled = journaled
    result.dropped = dropped
    return result


# the queues of a direct reply-to publish's result (none: it went to a channel)
NO_QUEUES: list = []

__all__ = ["ENQUEUED", "NO_QUEUES", "REFUSED", "PublishResult", "PublishRun", "publish"]
