"""Consumers, and what a queue needs of the channel it delivers to.

The channel side lives in ``syncmq.methods.channel_state`` (a layer above); a queue sees it
only through :class:`DeliveryTarget`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .message import Message
    from .queue import Queue


class DeliveryFailed(Exception):
    """``DeliveryTarget.deliver_many``: preparing delivery ``taken`` of the batch raised (the
    ``__cause__``); the first ``taken`` were delivered, the rest were not touched."""

    def __init__(self, taken: int) -> None:
        super().__init__(f"delivery failed after {taken} of a batch")
        self.taken = taken


class DeliveryTarget(Protocol):
    """What a queue needs of a consuming channel (implemented in ``syncmq.methods``)."""

    def deliver(
        self, consumer: Consumer, queue: Queue, seq: int, message: Message, redelivered: bool
    ) -> bool:
        """Deliver if the consumer has credit; return False (and do nothing) otherwise.

        Called with ``queue.lock`` held; takes the channel's lock inside. If it raises it
        has changed nothing (the message stays where it is).
        """

    def deliver_many(self, consumer: Consumer, queue: Queue, pairs: list) -> int:
        """Deliver a prefix of ``pairs`` (``(seq, (message, redelivered))``) as far as the
        consumer's credit goes; return how many were taken (as :meth:`deliver`, batched).

        Called with ``queue.lock`` held; takes the channel's lock inside. If preparing a
        delivery raises, the ones before it are delivered and :class:`DeliveryFailed` is
        raised with their count (the exception as its cause); the rest are untouched.
        """

    def consumer_cancelled(self, consumer: Consumer) -> None:
        """The queue was deleted under the consumer (called with no queue lock held)."""


class Consumer:
    """One basic.consume subscription. Immutable after creation except ``unacked``,
    ``encode`` and ``encoded``, which are guarded by the owning channel's lock."""

    __slots__ = (
        "tag", "queue", "channel", "no_ack", "exclusive", "prefetch", "unacked", "arguments",
        "prefix", "priority", "encode", "encoded",
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
        priority: int = 0,
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
        self.priority = priority  # x-priority: higher-priority consumers are served first
        # The channel's encoder of this consumer's deliveries and the list it appends to
        # (made at the first delivery and kept: methods.channel_state.Channel._record_locked)
        self.encode = None
        self.encoded: list | None = None
