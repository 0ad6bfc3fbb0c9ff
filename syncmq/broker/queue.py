"""Queues and consumers: the lock-sharded part of the broker.

Locking (see docs/architecture.md):

- ``Queue.lock`` guards the queue's ready messages, its consumers, its unacked count and its
  ``deleted`` flag. Each queue has its own lock (lock sharding): publishes to different queues
  never contend.
- Delivery calls ``consumer.channel.deliver(...)`` with the queue lock held; the channel takes
  its own lock inside. The order is therefore always *queue lock, then channel lock*; code that
  holds a channel lock never takes a queue lock. No code holds two queue locks at once.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Protocol

from ..queues.ready import ReadyQueue
from .message import Message


class DeliveryTarget(Protocol):
    """What a queue needs of a consuming channel (implemented in ``syncmq.methods``)."""

    def deliver(
        self, consumer: Consumer, queue: Queue, seq: int, message: Message, redelivered: bool
    ) -> bool:
        """Deliver if the consumer has credit; return False (and do nothing) otherwise.

        Called with ``queue.lock`` held; takes the channel's lock inside.
        """

    def consumer_cancelled(self, consumer: Consumer) -> None:
        """The queue was deleted under the consumer (called with no queue lock held)."""


class Consumer:
    """One basic.consume subscription. Immutable after creation except ``unacked``, which is
    guarded by the owning channel's lock."""

    __slots__ = (
        "tag", "queue", "channel", "no_ack", "exclusive", "prefetch", "unacked", "arguments",
        "prefix",
    )

    def __init__(
        self,
        tag: str,
        queue: Queue,
        channel: DeliveryTarget,
        no_ack: bool,
        exclusive: bool,
        prefetch: int,
        arguments: dict | None,
        prefix: bytes = b"",
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.channel = channel
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch
        self.unacked = 0
        self.arguments = arguments or {}
        self.prefix = prefix  # encoded start of this consumer's basic.deliver payloads


class Queue:
    """A classic queue: FIFO of message references, consumers served round-robin."""

    __slots__ = (
        "vhost", "name", "durable", "exclusive_owner", "auto_delete", "arguments", "lock",
        "ready", "consumers", "unacked_count", "deleted", "had_consumers", "declared_at",
        "stats_published", "stats_delivered", "stats_acked", "durability", "journaled",
    )

    def __init__(
        self,
        vhost: str,
        name: str,
        durable: bool,
        exclusive_owner: Any,
        auto_delete: bool,
        arguments: dict | None,
        durability: Any = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        # A durable, non-exclusive queue on a broker with a journal keeps its persistent
        # messages there (exclusive queues die with their connection, so never survive).
        self.journaled = bool(durability is not None and durable and exclusive_owner is None)
        self.durability = durability if self.journaled else None
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        # Guards everything below; see the module docstring for the lock order.
        self.lock = threading.Lock()
        self.ready = ReadyQueue()
        self.consumers: deque[Consumer] = deque()
        self.unacked_count = 0
        self.deleted = False
        self.had_consumers = False
        self.stats_published = 0
        self.stats_delivered = 0
        self.stats_acked = 0

    def __repr__(self) -> str:
        return f"<Queue {self.vhost!r}/{self.name!r}>"

    # ---- publishing and delivery ----

    def publish(self, message: Message) -> bool:
        """Enqueue ``message`` and deliver what consumers can take. O(1) + deliveries.

        Returns False if the queue was deleted meanwhile.
        """
        with self.lock:
            if self.deleted:
                return False
            self.ready.push((message, False))
            self.stats_published += 1
            if self.consumers:
                self._dispatch_locked()
        return True

    def dispatch(self) -> None:
        """Deliver ready messages to consumers with credit (after acks freed some)."""
        with self.lock:
            if self.consumers and self.ready:
                self._dispatch_locked()

    def _dispatch_locked(self) -> None:
        ready = self.ready
        consumers = self.consumers
        while consumers:
            head = ready.peek()
            if head is None:
                return
            seq, (message, redelivered) = head
            n = len(consumers)
            for i in range(n):
                c = consumers[i]
                if c.channel.deliver(c, self, seq, message, redelivered):
                    ready.pop()
                    self.stats_delivered += 1
                    if message.msg_id and self.journaled:
                        if c.no_ack:
                            self.durability.acked(self, [message.msg_id])
                        elif not redelivered:
                            self.durability.delivered(self, message.msg_id)
                    if not c.no_ack:
                        self.unacked_count += 1
                    if n > 1:
                        consumers.rotate(-(i + 1))
                    break
            else:
                return

    def get(self, no_ack: bool) -> tuple[int, Message, bool, int] | None:
        """Pop the head for basic.get: ``(seq, message, redelivered, remaining)`` or None."""
        with self.lock:
            item = self.ready.pop()
            if item is None:
                return None
            seq, (message, redelivered) = item
            self.stats_delivered += 1
            if message.msg_id and self.journaled:
                if no_ack:
                    self.durability.acked(self, [message.msg_id])
                elif not redelivered:
                    self.durability.delivered(self, message.msg_id)
            if not no_ack:
                self.unacked_count += 1
            return seq, message, redelivered, len(self.ready)

    def requeue(self, entries: list[tuple[int, Message]]) -> None:
        """Put unacked messages back at their original positions, marked redelivered."""
        with self.lock:
            self.unacked_count -= len(entries)
            if self.deleted:
                return
            self.ready.requeue_many([(seq, (msg, True)) for seq, msg in entries])
            if self.consumers:
                self._dispatch_locked()

    def settle(self, entries: list[tuple[int, Message]]) -> None:
        """Unacked ``(seq, message)`` entries were acked (or rejected without requeue)."""
        count = len(entries)
        with self.lock:
            self.unacked_count -= count
            self.stats_acked += count
            if self.journaled and not self.deleted:
                self.durability.acked(self, [m.msg_id for _, m in entries if m.msg_id])

    # ---- consumers ----

    def add_consumer(self, consumer: Consumer) -> None:
        """Attach ``consumer`` and start delivering to it. The caller checked exclusivity."""
        with self.lock:
            self.consumers.append(consumer)
            self.had_consumers = True
            if self.ready:
                self._dispatch_locked()

    def has_exclusive_consumer(self) -> bool:
        return any(c.exclusive for c in self.consumers)

    def remove_consumer(self, consumer: Consumer) -> bool:
        """Detach ``consumer``; True if the queue should now be auto-deleted."""
        with self.lock:
            try:
                self.consumers.remove(consumer)
            except ValueError:
                return False
            return self.auto_delete and self.had_consumers and not self.consumers

    # ---- management ----

    def message_count(self) -> int:
        return len(self.ready)

    def consumer_count(self) -> int:
        return len(self.consumers)

    def purge(self) -> int:
        """Drop every ready message (unacked ones stay); returns how many."""
        with self.lock:
            purged = self.ready.purge()
            if self.journaled:
                # ACKs of exactly what was dropped: a QUEUE_PURGE record would also drop the
                # unacked messages, which RabbitMQ keeps (they may still be requeued).
                self.durability.acked(self, [m.msg_id for m, _ in purged if m.msg_id])
            return len(purged)

    def restore_message(self, message: Message, delivered: bool) -> None:
        """Recovery: append a journaled message (redelivered if it had been delivered)."""
        with self.lock:
            self.ready.push((message, delivered))

    def mark_deleted(self) -> tuple[int, list[Consumer]]:
        """Delete: drop ready messages and detach consumers; returns (messages, consumers)."""
        with self.lock:
            self.deleted = True
            n = len(self.ready)
            self.ready.purge()
            consumers = list(self.consumers)
            self.consumers.clear()
            return n, consumers
