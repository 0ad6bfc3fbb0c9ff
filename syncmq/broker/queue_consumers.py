"""Attaching and detaching a queue's consumers.

:class:`QueueConsumers` is a part of :class:`~syncmq.broker.queue.Queue` (a base class with no
state of its own; the registry is ``Queue.consumers``, a ``queues.consumers.ConsumerRing``,
guarded by the queue lock like the rest of the queue): exclusivity is decided here, under that
lock, and a consume-ok is written before the first delivery to its consumer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..wire._spec import ACCESS_REFUSED
from ..wire.errors import AMQPChannelError
from .consumer import Consumer


class QueueConsumers:
    """Consumer registration of a queue (a mixin of ``Queue``)."""

    __slots__ = ()

    def add_consumer(self, consumer: Consumer,
                     announce: Callable[[], None] | None = None) -> bool:
        """Attach ``consumer`` and start delivering to it.

        Exclusivity is checked here, under the queue lock, so two ``basic.consume`` racing on
        different workers cannot both pass it: an exclusive consumer already attached, or an
        exclusive one asked for while others are, raises ACCESS_REFUSED (rabbit_amqqueue's
        text) with nothing changed. ``announce`` (the consume-ok) is called before the first
        delivery: under the lock when the consumer is attached, so no delivery precedes it.

        False if the queue was deleted since the caller looked it up (a concurrent delete,
        auto-delete or expiry): the consumer is not attached, ``announce`` runs, then its
        channel is told it is cancelled (``consumer_cancelled``, no lock held), as the deletion
        tells the others."""
        with self.guard:
            gone = self.deleted
            if not gone:
                consumers = self.consumers
                if consumers.n_exclusive or (consumer.exclusive and len(consumers)):
                    raise AMQPChannelError(
                        ACCESS_REFUSED,
                        f"ACCESS_REFUSED - queue '{self.name}' in vhost '{self.vhost}' "
                        "in exclusive use")
                if announce is not None:
                    announce()
                consumers.add(consumer)
                self.had_consumers = True
                if self.ready:
                    if self.single_active or len(consumers) == 1:
                        self._dispatch_locked()
                    else:
                        # what is ready is there because no other consumer could take it
                        # (one that gets credit back is dispatched to then): only the
                        # newcomer can, so offer it alone instead of scanning every consumer
                        # (O(1) a consume)
                        self._dispatch_locked(only=consumer)
        if gone:
            if announce is not None:
                announce()
            consumer.channel.consumer_cancelled(consumer)
        return not gone

    def active_consumer(self) -> Consumer | None:
        """Single active consumer: the one receiving messages (None without SAC)."""
        if not self.single_active:
            return None
        return self.consumers.first()

    def remove_consumer(self, consumer: Consumer) -> bool:
        """Detach ``consumer``; True if the queue should now be auto-deleted."""
        with self.guard:
            was_active = self.single_active and self.consumers.first() is consumer
            if not self.consumers.remove(consumer):
                return False
            if not self.consumers:
                self.last_used = time.monotonic()
                if self.behind:  # no consumer to be behind: a store again
                    self._caught_up_locked()
                if self.options.expires is not None and not self._expires_armed:
                    self._arm_expires_locked()
            elif was_active and self.ready:
                self._dispatch_locked()  # the next consumer takes over
            return self.auto_delete and self.had_consumers and not self.consumers
