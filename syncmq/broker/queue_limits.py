"""The queue extensions that make a message leave without a consumer: TTL expiry, length
limits (``x-max-length``, ``x-max-length-bytes``, ``x-overflow``), dead letters, and the
queue's own lease (``x-expires``).

:class:`QueueLimits` is a part of :class:`~syncmq.broker.queue.Queue` (its base class, no
state of its own); every ``*_locked`` method runs with the queue's lock held. Dead letters
are collected in ``Queue._letters`` under the lock and published by the queue's ``guard``
once the lock is released (``_publish_letters``), so no code holds two queue locks.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .policies import effective_definition, queue_settings

if TYPE_CHECKING:
    from .args import QueueOptions
    from .message import Message
    from .policies import Policy

_TIMER_SLACK = 0.002  # s after a deadline a timer fires, so that the deadline has passed


class QueueLimits:
    """Expiry, length limits, dead letters and ``x-expires`` of a queue (a mixin of
    ``Queue``: the attributes it uses are the queue's)."""

    __slots__ = ()

    # ---- effective settings (arguments + policy + operator policy) ----

    def _copy_settings(self, o: QueueOptions) -> None:
        """Make ``o`` the queue's effective settings: ``options`` (their one owner) and the
        hot path's copies. At creation, or under the lock (``set_policy``); ``ready_bytes`` is
        kept whatever ``track_bytes`` is (``queue_checks``)."""
        self.options = o
        self.message_ttl = o.message_ttl  # ms or None
        self.max_length = o.max_length
        self.max_bytes = o.max_bytes
        self.limited = o.max_length is not None or o.max_bytes is not None
        self.track_bytes = o.max_bytes is not None
        self.overflow = o.overflow
        self.dlx = o.dlx
        # publish_many may take this queue's messages (nothing per message to decide)
        self.batchable = not self.limited and o.message_ttl is None and not self.max_priority

    def set_policy(self, policy: Policy | None, op_policy: Policy | None) -> None:
        """Live: the policy and operator policy that now apply (``PolicyRegistry``, no other
        lock held). As RabbitMQ's ``process_args_policy``: a lower length limit drops (or
        dead-letters) from the head at once under drop-head, and is only enforced on later
        publishes under reject-publish(-dlx); a new ``message-ttl`` applies to messages
        enqueued from now on (each message's deadline is fixed at enqueue), and what is
        already due expires now; a new ``expires`` starts a new lease. O(1) plus what is
        dropped, except that a ``max-length-bytes`` newly in force sums the ready bytes
        once. Dead letters are published after the lock (``guard``)."""
        definition = effective_definition(policy, op_policy)
        o = queue_settings(self.arguments, definition)
        with self.guard:
            self.policy, self.op_policy, self.effective = policy, op_policy, definition
            if self.deleted or o == self.options:
                return
            old = self.options
            self._copy_settings(o)  # (ready_bytes is always kept: nothing to recount)
            if self.limited:
                self._drop_over_limit_locked()
            if self.expiry:
                self._expire_locked(time.monotonic())
                self._arm_ttl_timer_locked()
            if o.expires != old.expires:
                self._expires_gen += 1
                self._expires_armed = False
                if o.expires is not None and self.host is not None and not self.consumers:
                    self.last_used = time.monotonic()
                    self._arm_expires_locked()

    # ---- expiry, length limits, dead letters (all *_locked: queue lock held) ----

    def _expired_locked(self, message: Message) -> None:
        """``message`` (already off the ready queue) expired: dead-letter or drop it."""
        self.stats_expired += 1
        self._discard_locked(message, "expired", True, True)

    def _discard_locked(self, message: Message, reason: str, was_ready: bool,
                        dead_letter: bool) -> None:
        """``message`` leaves this queue for good without a consumer (expired, dropped or
        refused for a length limit): the one place for its ready bytes, its journal ACK, and
        its dead letter or body reference. ``dead_letter``: it is one (RabbitMQ counts it
        even when there is no dead-letter exchange to republish it to), so it joins
        ``_letters``, counted and published (or dropped) after the lock (see ``_Guard``).
        For credit flow (``flow.py``), a queue whose ready messages and bytes fell to
        ``flow_low`` and ``flow_low_bytes`` this way (expiry, drop-head, a lower limit a policy brought) is caught up, as after
        a delivery: no consumer may take anything to tell its publishers otherwise."""
        if was_ready:
            self.ready_bytes -= message.size
            if message.msg_id and self.journaled:
                self.persistent_count -= 1
                self.persistent_bytes -= message.size
            if self.behind and self._below_low_locked():
                self._caught_up_locked()
        if message.msg_id and self.journaled:
            self.durability.acked(self, [message.msg_id])  # its PUBLISH record named us
        if dead_letter:
            self._letters.append((message, reason))
        elif self.store is not None:
            self.store.release(message)

    def _expire_locked(self, now: float) -> None:
        """Drop (or dead-letter) expired messages at the head. O(expired)."""
        ready = self.ready
        expiry = self.expiry
        while True:
            head = ready.peek()
            if head is None:
                return
            deadline = expiry.get(head[0])
            if deadline is None or deadline >= now:
                return
            ready.pop()
            del expiry[head[0]]
            self._expired_locked(head[1][0])

    def _drop_undelivered_locked(self, message: Message) -> None:
        """RabbitMQ's shortcut for a queue with a TTL of 0 and no dead-letter exchange: a
        message no consumer took at once is discarded, even behind older messages (a
        policy's TTL of 0 on a queue with a backlog, whose head has no deadline)."""
        tail = self.ready.pop_tail()
        if tail is None:
            return
        seq, item = tail
        if item[0] is not message:  # delivered; the tail is an older message
            self.ready.requeue(seq, item)
            return
        self.expiry.pop(seq, None)
        self._expired_locked(message)

    def _arm_ttl_timer_locked(self) -> None:
        """Make sure a timer fires when the head expires, consumers or not."""
        head = self.ready.peek()
        if head is None or self.host is None:
            return
        deadline = self.expiry.get(head[0])
        if deadline is None:
            return
        at = self._ttl_timer_at
        if at is not None and at <= deadline:
            return
        now = time.monotonic()
        if self.host.scheduler.schedule(deadline - now + _TIMER_SLACK, self._ttl_timer):
            self._ttl_timer_at = deadline

    def _ttl_timer(self) -> None:
        """On a worker: the head's deadline passed."""
        with self.guard:
            self._ttl_timer_at = None
            if self.deleted:
                return
            if self.expiry:
                self._expire_locked(time.monotonic())
                if self.consumers and self.ready:
                    self._dispatch_locked()
                self._arm_ttl_timer_locked()

    def _would_overflow(self, message: Message) -> bool:
        """RabbitMQ's ``will_overflow``: one more ready message would break a limit."""
        if self.max_length is not None and len(self.ready) + 1 > self.max_length:
            return True
        return self.max_bytes is not None and self.ready_bytes + message.size > \
            self.max_bytes

    def _over_limit(self) -> bool:
        if self.max_length is not None and len(self.ready) > self.max_length:
            return True
        return self.max_bytes is not None and self.ready_bytes > self.max_bytes

    def _refuse_locked(self, message: Message) -> None:
        """reject-publish(-dlx): the message is not enqueued here."""
        self.stats_dropped += 1
        self._discard_locked(message, "maxlen", False, self.overflow == "reject-publish-dlx")

    def _drop_over_limit_locked(self) -> None:
        """drop-head: drop (or dead-letter) from the head until within the limits."""
        if self.overflow != "drop-head":
            return
        ready = self.ready
        while self._over_limit():
            item = ready.pop()
            if item is None:
                return
            seq, (message, _redelivered) = item
            if self.expiry:
                self.expiry.pop(seq, None)
            self.stats_dropped += 1
            self._discard_locked(message, "maxlen", True, True)

    def _publish_letters(self, letters: list[tuple[Message, str]],
                         target: QueueOptions) -> None:
        """Count dead letters and publish them to the dead-letter exchange if there is one
        (``VirtualHost.dead_letter``, no queue lock held), then release their bodies (they
        kept this queue's reference to be republished).

        ``target`` is the queue's ``options`` read under the lock when the letters were
        taken: the exchange and the routing key come from that one immutable snapshot, never
        from the queue's attributes after the lock, where a policy change landing in between
        could give the exchange of one policy and the key of the next."""
        host = self.host
        try:
            if host is None:
                return
            if target.dlx is not None:
                self.stats_dead_lettered += len(letters)
            host.dead_letter(self, letters, target.dlx, target.dlrk)
        finally:
            if self.store is not None:
                self.store.release_many([m for m, _ in letters])

    # ---- x-expires ----

    def touch(self) -> None:
        """queue.declare (also passive, but for a passive no-wait one) renews an
        ``x-expires`` lease."""
        if self.options.expires is not None:
            self.last_used = time.monotonic()

    def _arm_expires_locked(self) -> None:
        delay = self.last_used + self.options.expires / 1000.0 - time.monotonic()
        gen = self._expires_gen
        if self.host.scheduler.schedule(delay + _TIMER_SLACK,
                                        lambda: self._expires_timer(gen)):
            self._expires_armed = True

    def _expires_timer(self, gen: int = 0) -> None:
        """On a worker: delete the queue if it has been unused for ``expires`` ms (a timer
        of a lease a policy change replaced does nothing)."""
        with self.lock:
            if gen != self._expires_gen:
                return
            self._expires_armed = False
            if self.deleted or self.consumers or self.options.expires is None:
                return  # re-armed when the last consumer goes
            if time.monotonic() < self.last_used + self.options.expires / 1000.0:
                self._arm_expires_locked()
                return
        self.host.expire_queue(self)
