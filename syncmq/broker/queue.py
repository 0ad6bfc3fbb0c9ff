"""Queues and consumers: the lock-sharded part of the broker.

Locking (see docs/architecture.md):

- ``Queue.lock`` guards the queue's ready messages, its consumers, its unacked count and its
  ``deleted`` flag. Each queue has its own lock (lock sharding): publishes to different queues
  never contend.
- Delivery calls ``consumer.channel.deliver(...)`` with the queue lock held; the channel takes
  its own lock inside. The order is therefore always *queue lock, then channel lock*; code that
  holds a channel lock never takes a queue lock. No code holds two queue locks at once.
- Dead letters (expired, rejected, dropped for a length limit) are collected under the queue
  lock into ``_letters`` and published to the dead-letter exchange only after the lock is
  released (``_publish_letters``): publishing takes other queues' locks. Operations that can
  make dead letters hold the lock through ``with self.guard:``, which does both.

Extensions (``syncmq.broker.args``): TTL, dead-lettering, length limits, priorities, consumer
priorities, single active consumer, ``x-expires``. A queue without them pays one ``if`` on a
queue attribute per operation; see docs/architecture.md, "Expiry and dead-lettering".

Memory budget (``store``: the broker's ``BodyStore``, None without ``--memory-budget``):
bodies of routed messages are put in the store by the router, with one reference per queue;
each queue releases its reference wherever a message leaves it for good (ack, reject,
no-ack delivery, expiry, length limit, purge, deletion; dead letters once they have been
republished). The store's lock is a leaf, taken inside this queue's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from itertools import repeat
from operator import attrgetter
from typing import Any

from ..queues.consumers import ConsumerRing
from ..queues.ready import PriorityReadyQueue, ReadyQueue
from .args import QueueOptions
from .consumer import Consumer, DeliveryFailed, DeliveryTarget
from .flow import QueueCredit
from .message import Message, settle_copies
from .policies import Policy, effective_definition, queue_settings
from .queue_checks import QueueChecks
from .queue_consumers import QueueConsumers
from .queue_limits import QueueLimits
from .queue_paging import QueuePaging

log = logging.getLogger("syncmq.queue")

# Most messages one consumer is handed per Channel.deliver_many call (bounds how far one
# dispatch may overshoot the output high watermark)
DISPATCH_BATCH = 128
# What Queue.publish answers: the queue was deleted meanwhile, the message is on it, or its
# length limit refused it (x-overflow = reject-publish(-dlx); still "routed" for mandatory)
GONE, ENQUEUED, REFUSED = 0, 1, 2

_SIZE = attrgetter("size")  # a message's body bytes


class _Guard:
    """``with queue.guard:`` holds ``queue.lock`` and, once it is released, publishes the dead
    letters collected meanwhile (``Queue._letters``): publishing takes other queues' locks, so
    it must not happen under this one. Every queue operation that can make a dead letter runs
    under it; on an exception the letters stay for the next operation.

    The per-message operations (``publish_many``, ``dispatch``, ``settle``) spell the same
    thing out instead (``with self.lock:``, ``_take_letters_locked`` as the last step under it,
    publish them after): a context manager written in Python costs two calls per use, ~7% of
    a 1-publisher/1-consumer load's samples."""

    __slots__ = ("queue", "lock")

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.lock = queue.lock

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        q = self.queue
        taken = q._take_letters_locked() if exc_type is None and q._letters else None
        self.lock.release()
        if taken:
            q._publish_letters(*taken)


class Queue(QueueLimits, QueueCredit, QueueChecks, QueueConsumers, QueuePaging):
    """A classic queue: FIFO of message references, consumers served round-robin (within the
    highest consumer priority that has credit)."""

    __slots__ = (
        "vhost", "name", "durable", "exclusive_owner", "auto_delete", "arguments", "lock",
        "guard",
        "ready", "consumers", "unacked_count", "deleted", "had_consumers", "declared_at",
        "stats_published", "stats_delivered", "stats_acked", "durability", "journaled",
        # extensions (see syncmq.broker.args); ``options`` is the one owner of the effective
        # settings (arguments + policy + operator policy, syncmq.broker.policies), the
        # attributes after it are copies for the hot path; set at creation and replaced
        # under ``lock`` by ``set_policy`` (max_priority and single_active never change)
        "host", "options", "message_ttl", "max_priority", "limited", "track_bytes",
        "max_length", "max_bytes", "overflow", "dlx", "single_active",
        "batchable", "policy", "op_policy", "effective", "_expires_gen",
        # guarded by ``lock``
        "expiry", "ready_bytes", "unacked_bytes", "persistent_count", "persistent_bytes",
        "_letters", "_ttl_timer_at", "last_used", "_expires_armed",
        "stats_expired", "stats_dead_lettered", "stats_dropped",
        "store",  # BodyStore or None (memory budget); set once at creation
        # credit flow (syncmq.broker.flow): limits set once, the rest guarded by ``lock``
        "behind", "flow_high", "flow_low", "flow_high_bytes", "flow_low_bytes", "flow_waiters",
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
        host: Any = None,
        policies: tuple[Policy | None, Policy | None] = (None, None),
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
        # The owning VirtualHost (dead-letter routing, scheduling, x-expires); None for a
        # queue used alone.
        self.host = host
        self.store = getattr(host, "body_store", None)
        self._set_flow_limits(getattr(host, "flow_limits", None))
        self.policy, self.op_policy = policies
        # the effective policy definition (/api/queues effective_policy_definition)
        self.effective = effective_definition(*policies)
        o = queue_settings(self.arguments, self.effective)
        self.max_priority = o.max_priority if o.max_priority else None
        self.single_active = o.single_active
        self.track_bytes = False
        self._copy_settings(o)
        # Guards everything below; see the module docstring for the lock order.
        self.lock = threading.Lock()
        self.guard = _Guard(self)  # the lock, then the dead letters (see _Guard)
        self.ready: ReadyQueue | PriorityReadyQueue = (
            PriorityReadyQueue(self.max_priority) if self.max_priority else self._fifo())
        # delivery order, exclusive count, priorities: O(1) consume/cancel (queues.consumers)
        self.consumers = ConsumerRing(self.single_active)
        self.unacked_count = 0
        self.deleted = False
        self.had_consumers = False
        self.stats_published = 0
        self.stats_delivered = 0
        self.stats_acked = 0
        self.stats_expired = 0
        self.stats_dead_lettered = 0
        self.stats_dropped = 0
        # seq -> monotonic deadline, for ready and unacked messages that can expire (empty
        # unless the queue or a message has a TTL); entries leave on ack and when they expire
        self.expiry: dict[int, float] = {}
        # body bytes of the ready and of the unacked messages, and count and body bytes of
        # the persistent (journaled) ones among both: /api/queues' message_bytes* without a
        # scan (each changed where a message enters, moves or leaves; see queue_checks)
        self.ready_bytes = 0
        self.unacked_bytes = 0
        self.persistent_count = 0
        self.persistent_bytes = 0
        self._letters: list[tuple[Message, str]] = []  # dead letters to publish after unlock
        self._ttl_timer_at: float | None = None  # deadline of the pending expiry timer
        self.last_used = time.monotonic()  # x-expires: last consume/get/declare
        self._expires_armed = False
        self._expires_gen = 0  # x-expires timers of an older lease are ignored
        if o.expires is not None and host is not None:
            self._arm_expires_locked()

    def __repr__(self) -> str:
        return f"<Queue {self.vhost!r}/{self.name!r}>"

    # ---- publishing and delivery ----

    def publish(self, message: Message) -> int:
        """Enqueue ``message`` and deliver what consumers can take. O(1) + deliveries.

        Returns :data:`GONE` if the queue was deleted meanwhile, :data:`REFUSED` if its length
        limit refused it (``x-overflow`` = reject-publish or reject-publish-dlx), else
        :data:`ENQUEUED`. Publishers call it through ``broker.publish``, never directly.
        """
        with self.guard:
            if self.deleted:
                if self.store is not None:
                    self.store.release(message)
                return GONE
            if self.limited and self.overflow != "drop-head" and self._would_overflow(message):
                self._refuse_locked(message)
                return REFUSED
            now = self._enqueue_locked(message)
            if self.consumers.count and not self._dispatch_locked(now or None) and (
                    self.ready.count() > self.flow_high
                    or self.ready_bytes > self.flow_high_bytes):  # (none without consumers)
                self._check_behind_locked()
            if self.message_ttl == 0 and self.dlx is None and self.max_priority is None:
                self._drop_undelivered_locked(message)
            if self.limited:
                self._drop_over_limit_locked()
            if self.expiry:
                self._expire_locked(time.monotonic())
                self._arm_ttl_timer_locked()
            return ENQUEUED

    def _enqueue_locked(self, message: Message) -> float:
        """Push one message with what applies to it (TTL, priority, byte count); returns
        the time used as "now" (0.0 when nothing can expire)."""
        now = 0.0
        ttl = message.ttl
        if ttl is None and self.message_ttl is None and self.max_priority is None:
            self.ready.push((message, False))  # the plain queue's whole cost
        else:
            now = self._push_locked(message, ttl)
        self.stats_published += 1
        self.ready_bytes += message.size
        if self.journaled and message.msg_id:
            self.persistent_count += 1
            self.persistent_bytes += message.size
        return now

    def publish_many(self, messages: list[Message]) -> None:
        """Enqueue a run of messages without a TTL into a ``batchable`` queue (no length
        limit, TTL or priorities), in order, then deliver what consumers can take: what
        :meth:`publish` does for each, under one hold of the lock and with one dispatch.
        Dropped if the queue was deleted meanwhile. O(len(messages)) + deliveries.

        If a policy made the queue not batchable after the run took the messages, they
        are enqueued one by one with its new TTL and limits (drop-head applies; they were
        accepted before a reject-publish limit came, so they are not refused)."""
        with self.lock:  # (the guard inlined: see _Guard)
            if self.deleted:
                if self.store is not None:
                    for message in messages:
                        self.store.release(message)
                return
            if self.batchable:  # (no priorities: a plain ReadyQueue; no loop in Python)
                if len(messages) == 1:  # (a round trip's run: cheaper than the iterators)
                    message = messages[0]
                    self.ready.push((message, False))
                    self.ready_bytes += message.size
                else:
                    self.ready.push_many(zip(messages, repeat(False)))
                    self.ready_bytes += sum(map(_SIZE, messages))
                if self.journaled:
                    self._persistent_locked(messages, 1)
                self.stats_published += len(messages)
            else:
                for message in messages:
                    self._enqueue_locked(message)
            if self.consumers.count and not self._dispatch_locked() and (
                    self.ready.count() > self.flow_high
                    or self.ready_bytes > self.flow_high_bytes):  # (none without consumers)
                self._check_behind_locked()
            if self.limited:
                self._drop_over_limit_locked()
            if self.expiry:
                self._expire_locked(time.monotonic())
                self._arm_ttl_timer_locked()
            taken = self._take_letters_locked() if self._letters else None
        if taken:
            self._publish_letters(*taken)

    def _take_letters_locked(self) -> tuple[list[tuple[Message, str]], QueueOptions]:
        """Under ``lock``, when ``_letters`` is not empty (callers test that inline: no call
        on the common path): the dead letters collected so far, the list emptied, with the
        queue's ``options`` of this moment, the one snapshot their dead-letter exchange and
        routing key come from (``_publish_letters``, after the lock)."""
        letters, self._letters = self._letters, []
        return letters, self.options

    def _push_locked(self, message: Message, ttl: int | None) -> float:
        """Push with a priority and/or an expiry; returns the time used as "now"."""
        if self.max_priority is not None:
            seq = self.ready.push((message, False), message.priority)
        else:
            seq = self.ready.push((message, False))
        qttl = self.message_ttl
        if ttl is None and qttl is None:
            return 0.0
        if ttl is None or (qttl is not None and qttl < ttl):
            ttl = qttl
        now = time.monotonic()
        self.expiry[seq] = now + ttl / 1000.0
        return now

    def dispatch(self) -> None:
        """Deliver ready messages to consumers with credit (after acks freed some)."""
        with self.lock:  # (the guard inlined: see _Guard)
            if self.consumers.count and self.ready.count():
                self._dispatch_locked()
            taken = self._take_letters_locked() if self._letters else None
        if taken:
            self._publish_letters(*taken)

    def _dispatch_locked(self, now: float | None = None, only: Consumer | None = None) -> bool:
        """Deliver from the head while a consumer has credit. True when that left the ready
        queue empty (a publish then skips the flow check: nothing is behind), False when it
        may not be.

        ``now`` is the time expiry is judged by (a message whose deadline is not *before* it
        is deliverable): the publish passes its enqueue time so that a message with a TTL of
        0 still goes to a consumer that can take it at once, as in RabbitMQ.
        """
        consumers = self.consumers
        expiry = self.expiry
        sole = consumers.sole  # (the one consumer, or the single active one)
        if sole is not None and not expiry and self.max_priority is None:
            return self._dispatch_batch_locked(sole)
        ready = self.ready
        while consumers:
            head = ready.peek()
            if head is None:
                return self._ran_dry_locked()
            seq, (message, redelivered) = head
            if expiry:
                deadline = expiry.get(seq)
                if deadline is not None:
                    if now is None:
                        now = time.monotonic()
                    if deadline < now:
                        ready.pop()
                        del expiry[seq]
                        self._expired_locked(message)
                        continue
            # ``only``: offer messages to that consumer alone (a newcomer: see add_consumer)
            for c in ((consumers.sole,) if self.single_active
                      else consumers if only is None else (only,)):
                if c.channel.deliver(c, self, seq, message, redelivered):
                    ready.pop()
                    self._handed_out_locked((head,), 1, c.no_ack)
                    if not self.single_active:
                        consumers.rotate(c)
                    break
            else:
                return False
        return False

    def _dispatch_batch_locked(self, c: Consumer) -> bool:
        """One consumer to serve and nothing that can expire: hand it up to
        :data:`DISPATCH_BATCH` messages per ``deliver_many`` call (one channel lock hold and
        one transport write per batch instead of per message), taken with one
        ``ReadyQueue.take`` each. True when the ready queue was left empty (see
        :meth:`_dispatch_locked`).

        The consumer's credit is estimated from its counters without the channel lock; a
        stale "full" is safe (credit is freed under the channel lock and the queue is then
        dispatched again), and what the channel does not take goes back to its place.
        """
        take = self.ready.take
        deliver_many = c.channel.deliver_many
        no_ack = c.no_ack
        while True:
            want = DISPATCH_BATCH
            if not no_ack and c.prefetch:
                want = c.prefetch - c.unacked
                if want <= 0:
                    return False
                if want > DISPATCH_BATCH:
                    want = DISPATCH_BATCH
            pairs = take(want)
            if not pairs:
                return self._ran_dry_locked()
            try:
                taken = deliver_many(c, self, pairs)
            except DeliveryFailed as e:
                # a body could not be read (or encoded): what was delivered before it counts,
                # it and the rest go back to the head in order, then the error propagates
                failed = e
                taken = e.taken
            else:
                failed = None
            if taken < len(pairs):
                self.ready.requeue_many(pairs[taken:])
            if not taken:
                if failed is not None:
                    raise failed.__cause__ or failed
                return False
            self._handed_out_locked(pairs, taken, no_ack)
            if failed is not None:
                raise failed.__cause__ or failed
            if taken < want:  # the channel refused the rest, or the queue ran out (take)
                return taken == len(pairs) and self._ran_dry_locked()

    def _ran_dry_locked(self) -> bool:
        """The ready queue is empty, now that a ``take`` came back short or a ``peek`` with
        nothing: always so for a plain ``ReadyQueue``; a paged one may still hold messages
        its page-in could not bring back (the journal could not serve one, an I/O error:
        ``queues.paged``), which must still count for the flow check, so it is counted."""
        ready = self.ready
        return ready.__class__ is ReadyQueue or not ready.count()

    def _handed_out_locked(self, pairs: list | tuple, n: int, no_ack: bool) -> None:
        """The first ``n`` of ``pairs`` (``(seq, (message, redelivered))``) left the ready
        queue for a consumer or basic.get: the one place that accounts for it (counters,
        ready bytes, journal DELIVERED/ACK, and for no-ack the expiry entry and the body
        store's reference). A plain queue pays the bytes' sum, three additions and a test
        of ``behind``."""
        self.stats_delivered += n
        if n == 1:
            size = pairs[0][1][0].size
        else:
            size = 0
            for pair in (pairs if n == len(pairs) else pairs[:n]):  # (a loop: no frame)
                size += pair[1][0].size
        self.ready_bytes -= size
        if self.behind and self._below_low_locked():
            self._caught_up_locked()
        if not no_ack:
            self.unacked_count += n
            self.unacked_bytes += size
            if not self.journaled:
                return
        elif not (self.journaled or self.expiry or self.store is not None):
            return
        durability = self.durability
        if not no_ack:  # a journaled queue's first deliveries: one DELIVERED append a batch
            if durability is not None:
                ids = [m.msg_id for _, (m, redelivered) in
                       (pairs if n == len(pairs) else pairs[:n]) if m.msg_id and not redelivered]
                if ids:
                    durability.delivered(self, ids)
            return
        acked = []
        for i in range(n):
            seq, (message, _) = pairs[i]
            if message.msg_id:
                acked.append(message.msg_id)
                if self.journaled:
                    self.persistent_count -= 1
                    self.persistent_bytes -= message.size
            if self.expiry:
                self.expiry.pop(seq, None)
            if self.store is not None:
                self.store.release(message)
        if acked and durability is not None:
            durability.acked(self, acked)

    def get(self, no_ack: bool) -> tuple[int, Message, bool, int] | None:
        """Pop the head for basic.get: ``(seq, message, redelivered, remaining)`` or None."""
        with self.guard:
            self.last_used = time.monotonic()
            if self.expiry:
                self._expire_locked(self.last_used)
            item = self.ready.pop()
            if item is None:
                result = None
            else:
                seq, (message, redelivered) = item
                if no_ack and message.store_key:
                    # our reference is released below: the get-ok is encoded from a copy
                    # that carries the body
                    message = message.with_body()
                self._handed_out_locked((item,), 1, no_ack)
                if self.expiry:
                    # as RabbitMQ's fetch: expired messages now at the head are dropped
                    # before the count of those left (get-ok message_count)
                    self._expire_locked(self.last_used)
                result = seq, message, redelivered, len(self.ready)
            if self.expiry:
                self._arm_ttl_timer_locked()
        return result

    def requeue(self, entries: list[tuple[int, Message]]) -> None:
        """Put unacked messages back at their original positions, marked redelivered."""
        with self.guard:
            self.unacked_count -= len(entries)
            size = sum(m.size for _, m in entries)
            self.unacked_bytes -= size
            if self.deleted:
                if self.journaled:
                    self._persistent_locked([m for _, m in entries], -1)
                if self.store is not None:
                    self.store.release_many([m for _, m in entries])
                return
            if self.max_priority is not None:
                self.ready.requeue_many([(seq, (msg, True), msg.priority) for seq, msg in entries])
            else:
                self.ready.requeue_many([(seq, (msg, True)) for seq, msg in entries])
            self.ready_bytes += size
            if self.consumers:
                self._dispatch_locked()
            if self.expiry:
                self._expire_locked(time.monotonic())
                self._arm_ttl_timer_locked()
            if self.limited:
                self._drop_over_limit_locked()

    def settle(
        self, entries: list[tuple[int, Message]], rejected: bool = False, dispatch: bool = False
    ) -> None:
        """Unacked ``(seq, message)`` entries were acked, or rejected without requeue
        (``rejected``: then they are dead letters, counted, and republished if the queue has
        a dead-letter exchange).
        ``dispatch``: then deliver to consumers with credit under the same lock hold (what
        :meth:`dispatch` would do next, without taking the lock a second time)."""
        count = len(entries)
        size = 0
        for entry in entries:  # (a loop, not sum() of a generator: no frame per ack)
            size += entry[1].size
        with self.lock:  # (the guard inlined: see _Guard)
            self.unacked_count -= count
            self.unacked_bytes -= size
            if self.journaled:
                self._persistent_locked([m for _, m in entries], -1)
            self.stats_acked += count
            if self.expiry:
                for seq, _ in entries:
                    self.expiry.pop(seq, None)
            confirming = None
            if self.journaled and not self.deleted:
                self.durability.acked(self, [m.msg_id for _, m in entries if m.msg_id])
                confirming = [m for _, m in entries if m.confirm is not None]
            if rejected and not self.deleted:  # dead letters, with or without a DLX
                self._letters.extend([(m, "rejected") for _, m in entries])
            elif self.store is not None:
                self.store.release_many([m for _, m in entries])
            if dispatch and self.consumers.count and self.ready.count():
                self._dispatch_locked()
            taken = self._take_letters_locked() if self._letters else None
        if confirming:  # early publisher confirms (no queue lock held: see settle_copies)
            settle_copies(confirming)
        if taken:
            self._publish_letters(*taken)

    # ---- consumers ----

    # ---- management ----

    def message_count(self) -> int:
        return len(self.ready)

    def consumer_count(self) -> int:
        return len(self.consumers)

    def purge(self) -> int:
        """Drop every ready message (unacked ones stay); returns how many."""
        with self.lock:
            n = self._drop_paged_locked(self.durability.acked if self.journaled else None)
            if self.expiry:
                for seq, _ in list(self.ready.pairs()):
                    self.expiry.pop(seq, None)
            purged = self.ready.purge()
            self.ready_bytes = 0
            if self.behind:
                self._caught_up_locked()
            if self.journaled:
                self._persistent_locked([m for m, _ in purged], -1)
                # ACKs of exactly what was dropped: a QUEUE_PURGE record would also drop the
                # unacked messages, which RabbitMQ keeps (they may still be requeued).
                self.durability.acked(self, [m.msg_id for m, _ in purged if m.msg_id])
            if self.store is not None:
                self.store.release_many([m for m, _ in purged])
            return n + len(purged)

    def restore_message(self, message: Message, delivered: bool, published_ms: int = 0) -> None:
        """Recovery: append a journaled message (redelivered if it had been delivered).

        A TTL counts from ``published_ms`` (wall-clock ms of the original publish, journaled
        when a TTL applies), so a message whose TTL ran out while the broker was down expires
        at once; without it (a journal written before PUBLISH_AT) it counts from now."""
        with self.lock:
            if self.store is not None and not message.store_key:  # (recovery stores them)
                self.store.put(message, 1, True)  # its PUBLISH record names this queue
            if self.max_priority is not None:
                seq = self.ready.push((message, delivered), message.priority)
            else:
                seq = self.ready.push((message, delivered))
            self.ready_bytes += message.size
            if self.journaled:
                self._persistent_locked((message,), 1)
            ttl, qttl = message.ttl, self.message_ttl
            if ttl is not None or qttl is not None:
                if ttl is None or (qttl is not None and qttl < ttl):
                    ttl = qttl
                left = ttl if not published_ms else published_ms + ttl - time.time() * 1000.0
                self.expiry[seq] = time.monotonic() + left / 1000.0
                self._arm_ttl_timer_locked()

    def mark_deleted(self) -> tuple[int, list[Consumer]]:
        """Delete: drop ready messages and detach consumers; returns (messages, consumers)."""
        with self.lock:
            self.deleted = True
            n = len(self.ready)
            self._drop_paged_locked(self.durability.deleted_in_tx if self.journaled else None)
            purged = self.ready.purge()
            self.ready.close()
            self.expiry.clear()
            self.ready_bytes = 0
            if self.journaled:
                self._persistent_locked([m for m, _ in purged], -1)
            if self.journaled and self.durability is not None:
                self.durability.deleted_in_tx(self, [m.msg_id for m, _ in purged if m.msg_id])
            if self.store is not None:
                self.store.release_many([m for m, _ in purged])
                self.store.release_many([m for m, _ in self._letters])
            self._letters = []
            consumers = self.consumers.clear()
            if self.behind:
                self._caught_up_locked()
            return n, consumers


__all__ = ["Consumer", "DeliveryFailed", "DeliveryTarget", "Queue", "GONE", "ENQUEUED",
           "REFUSED"]
