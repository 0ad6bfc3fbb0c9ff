"""One open AMQP channel: where queues deliver to a client and where its acks settle.

Threads: a channel belongs to its connection's worker, except what queues touch from other
workers when they deliver to its consumers; that is guarded by ``Channel.lock`` (see the
class docstring), always taken after a queue lock, never before one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..broker.publish import PublishResult
from ..broker.queue import Consumer, DeliveryFailed, Queue
from ..protocol.channel import deliver_encoder, encode_deliver, encode_get_ok
from ..queues.unacked import UnackedMap
from ..wire import _spec
from ..wire.errors import AMQPChannelError

if TYPE_CHECKING:
    from ..broker.exchange import Exchange
    from ..broker.message import Message
    from .confirm import ConfirmTracker
    from .session import Session


class Channel:
    """One open channel.

    ``lock`` guards ``unacked``, ``next_tag``, ``consumers``, ``global_unacked``, every
    consumer's ``unacked`` count, ``flow_active``, ``reply_consumer`` and ``closing``
    (set once, with the session's ``confirm_lock`` held too: the confirm tracker's guard):
    deliveries arrive from any worker (with a queue lock held), while acks, consume and cancel
    come from this connection's worker. Publisher confirms have their own owner
    (``confirms``, a :class:`~syncmq.methods.confirm.ConfirmTracker`). Everything else (tx
    state, prefetch settings, ``last_queue``, the publish caches) is touched only by the
    connection's worker.

    Invariant (:meth:`_check`): ``global_unacked`` is the sum of the ack-mode consumers'
    ``unacked``, and each consumer's ``unacked`` is the number of its entries in ``unacked``.
    """

    __slots__ = (
        "session", "id", "lock", "unacked", "next_tag", "consumers", "prefetch_count",
        "global_prefetch", "global_unacked", "global_gets", "flow_active", "closing", "confirms",
        "tx", "tx_publishes", "tx_acks", "last_queue",
        "write_ok", "read_ok", "n_publish", "n_return", "n_deliver", "n_get",
        "n_redeliver", "n_ack", "n_deliver_no_ack", "n_get_no_ack", "n_get_empty", "n_drop",
        "stats_folded", "reply_consumer",
        "last_publish", "last_exchange_rk", "publish_result", "route_gen", "route_ex",
        "route_queues", "route_topic",
    )

    def __init__(self, session: Session, channel_id: int) -> None:
        self.session = session
        self.id = channel_id
        self.lock = threading.Lock()
        self.unacked = UnackedMap()
        self.next_tag = 1
        self.consumers: dict[str, Consumer] = {}
        self.prefetch_count = 0
        self.global_prefetch = 0
        self.global_unacked = 0
        # basic.gets unacked when the global qos was set: rabbit_limiter:limit_prefetch counts
        # them (later gets are not counted, and their acks or a recover never free them)
        self.global_gets = 0
        self.flow_active = True
        self.closing = False
        self.confirms: ConfirmTracker | None = None  # set by confirm.select
        self.tx = False
        self.tx_publishes: list = []
        self.tx_acks: list = []
        self.last_queue = ""
        self.write_ok: set[str] = set()  # exchanges this user may publish to (cache)
        self.read_ok: set[str] = set()
        # Message counters for the management API and /metrics: plain ints, each written by
        # one thread at a time (n_deliver/n_get/n_redeliver under ``lock``, the rest by this
        # connection's worker); readers take unlocked snapshots.
        self.n_publish = self.n_return = self.n_ack = 0
        self.n_deliver = self.n_get = self.n_redeliver = 0
        # for /metrics only (RabbitMQ's Prometheus families split these): the no-ack share of
        # n_deliver/n_get (under ``lock``), basic.get-empty and unroutable non-mandatory
        # publishes (this connection's worker)
        self.n_deliver_no_ack = self.n_get_no_ack = self.n_get_empty = self.n_drop = 0
        self.stats_folded = False
        # Direct reply-to: (consumer tag, reply-to suffix, deliver prefix) of this channel's
        # amq.rabbitmq.reply-to consumer, or None; written by this connection's worker under
        # ``lock``, read by other workers' deliver_reply under it.
        self.reply_consumer: tuple[str, str, bytes] | None = None
        # The last basic.publish method handled and its exchange and routing key encoded for
        # deliveries (worker-only; see methods.basic.publish)
        self.last_publish: _spec.Basic.Publish | None = None
        self.last_exchange_rk = b""
        # The result of this channel's last basic.publish, reused for the next one (worker)
        self.publish_result = PublishResult([], False)
        # The route of ``last_publish`` (its exchange and queues, and whether the exchange
        # is a topic one), valid while the vhost's ``routes_gen`` equals ``route_gen`` (-1:
        # none) (worker-only; see methods.basic.publish)
        self.route_gen = -1
        self.route_ex: Exchange | None = None
        self.route_queues: list = []
        self.route_topic = False

    @property
    def confirm(self) -> bool:
        """Whether the channel is in confirm mode."""
        return self.confirms is not None

    # ---- deliveries (any worker; the one way to record and encode one) ----

    def _record_locked(self, pairs: list | tuple, k: int, queue: Queue | None,
                       consumer: Consumer | None, prefix: bytes, no_ack: bool,
                       remaining: int = -1) -> int:
        """Deliver ``pairs[:k]`` (``(seq, (message, redelivered))``): assign delivery tags,
        encode each (basic.deliver with ``prefix``, or basic.get-ok when ``remaining`` >= 0),
        record the unacked entries and counters, write the frames in one call. ``lock`` held.

        Each message is encoded before it is recorded: if reading or encoding message i
        raises, 0..i-1 are delivered and :class:`DeliveryFailed` (i) is raised with the error
        as its cause; i.. are untouched. Returns ``k``.
        """
        tag0 = tag = self.next_tag
        session = self.session
        add = self.unacked.add
        redelivered_n = 0
        failed = None
        if consumer is not None and remaining < 0:
            # a consumer's deliveries: its encoder, kept from one delivery to the next (what
            # depends only on the exchange_rk and the sizes is packed once, also for a lone
            # message at a time); it appends to ``consumer.encoded``, emptied after the write
            encode = consumer.encode
            if encode is None:
                encode = self._encoder_locked(consumer)
            chunks = consumer.encoded
        else:
            # (a direct reply-to delivery or a basic.get-ok: one message, the branches below
            # that encode one message run once: no locals for what they read)
            encode = None
            chunks = []
        try:
            for i in range(k):
                seq, (message, redelivered) = pairs[i]
                body = message.body
                if body is None:  # memory budget: the body is in the store (perhaps on disk)
                    body = message.load_body()
                if encode is not None:
                    # (the cached slot first: the property is entered from C, ~10x the cost)
                    encode(tag, redelivered, message._exchange_rk or message.exchange_rk,
                           message.properties, body)
                elif remaining < 0:  # (direct reply-to: k == 1)
                    chunks += encode_deliver(self.id, prefix, tag, redelivered,
                                             message._exchange_rk or message.exchange_rk,
                                             message.properties, body, session.frame_max)
                else:  # (basic.get-ok: k == 1)
                    chunks += encode_get_ok(self.id, tag, redelivered, message.exchange_rk,
                                            remaining, message.properties, body,
                                            session.frame_max)
                if not no_ack:
                    add(tag, (queue, seq, message, consumer))
                if redelivered:
                    redelivered_n += 1
                tag += 1
        except Exception as e:
            failed = e
            k = tag - tag0
        if k:
            # The write first: on the reactor standing in it may send at once
            # (``Transport._wake``), so the counters come after the send; they are updated
            # whatever the write does, under the same hold of ``lock``. (Readers without the
            # lock, the dispatch's credit estimate and the management view, may see them a
            # moment late: the estimate is checked again here, under the lock.)
            try:
                session.transport.write(chunks)
            finally:
                if encode is not None:
                    chunks.clear()  # (the consumer's list: the transport holds its chunks)
                self._count_locked(k, tag, consumer, no_ack, remaining >= 0, redelivered_n)
        if failed is not None:
            raise DeliveryFailed(k) from failed
        return k

    def _count_locked(self, k: int, next_tag: int, consumer: Consumer | None, no_ack: bool,
                      get: bool, redelivered_n: int) -> None:
        """The counters of ``k`` deliveries just recorded (:meth:`_record_locked`, ``lock``
        held): the next delivery tag, the unacked counts (manual ack to a consumer), the
        deliver or basic.get counts and the redeliveries."""
        if consumer is not None and not no_ack:
            consumer.unacked += k
            self.global_unacked += k
        self.next_tag = next_tag
        if not get:
            self.n_deliver += k
            if no_ack:
                self.n_deliver_no_ack += k
        else:
            self.n_get += k
            if no_ack:
                self.n_get_no_ack += k
        if redelivered_n:
            self.n_redeliver += redelivered_n

    def _encoder_locked(self, consumer: Consumer):
        """``consumer``'s encoder (``lock`` held), made at its first delivery: consumers
        exist only on open channels, after the connection's tune, so ``frame_max`` is
        final."""
        out = consumer.encoded = []
        encode = consumer.encode = deliver_encoder(self.id, consumer.prefix,
                                                   self.session.frame_max, out)
        return encode

    def deliver(
        self, consumer: Consumer, queue: Queue, seq: int, message: Message, redelivered: bool
    ) -> bool:
        """One delivery if the consumer has credit (see ``broker.queue.DeliveryTarget``)."""
        if not consumer.no_ack and (
            (consumer.prefetch and consumer.unacked >= consumer.prefetch)
            or (self.global_prefetch
                and self.global_unacked + self.global_gets >= self.global_prefetch)
        ):
            # No credit, read without the lock: a queue with a backlog asks on every publish,
            # and taking the lock each time convoys the publisher's worker with the consumer's.
            # A stale "full" is safe: credit is freed under the lock and then the queues
            # are dispatched again (Channel.settle), after this refusal.
            return False
        try:
            return self.deliver_many(consumer, queue, ((seq, (message, redelivered)),)) == 1
        except DeliveryFailed as e:
            raise e.__cause__ from None  # nothing was delivered: the queue keeps the message

    def deliver_many(self, consumer: Consumer, queue: Queue, pairs: list | tuple) -> int:
        """Deliver a prefix of ``pairs`` (``(seq, (message, redelivered))`` as the ready queue
        hands them out) as far as the consumer's credit goes; return how many were taken.

        Called with ``queue.lock`` held: one hold of the channel lock, one write of every
        delivery's frames to the transport. The caller puts back what was not taken.
        """
        t = self.session.transport
        if t.pending_out > t.out_high and t.throttle():
            # Output back-pressure: the client is not reading what it was sent. No credit
            # until the reactor has sent enough; it then calls Session.output_drained.
            return 0
        no_ack = consumer.no_ack
        with self.lock:
            if self.closing or not self.flow_active:
                return 0
            k = len(pairs)
            if not no_ack:
                if consumer.prefetch and consumer.prefetch - consumer.unacked < k:
                    k = consumer.prefetch - consumer.unacked
                if self.global_prefetch:
                    free = self.global_prefetch - self.global_unacked - self.global_gets
                    if free < k:
                        k = free
                if k <= 0:
                    return 0
            return self._record_locked(pairs, k, queue, consumer, consumer.prefix, no_ack)

    def deliver_reply(self, message: Message) -> bool:
        """Direct reply-to: deliver ``message`` to this channel's reply consumer (any worker;
        no-ack, so no unacked entry and no prefetch). False if there is none any more, or if
        its connection's unsent output is over the bound (``--max-pending-output``): there is
        no queue to keep a reply in, so it is dropped (returned if mandatory) rather than
        buffered without limit for a client that does not read."""
        t = self.session.transport
        if t.pending_out > t.out_high and t.throttle():
            return False
        with self.lock:
            rc = self.reply_consumer
            if rc is None or self.closing:
                return False
            self._record_locked(((0, (message, False)),), 1, None, None, rc[2], True)
        return True

    def send_get_ok(
        self, queue: Queue, seq: int, message: Message, redelivered: bool, remaining: int,
        no_ack: bool,
    ) -> None:
        """basic.get-ok for a message ``queue`` handed out (this connection's worker)."""
        with self.lock:
            try:
                self._record_locked(((seq, (message, redelivered)),), 1, queue, None, b"",
                                    no_ack, remaining)
            except DeliveryFailed as e:
                raise e.__cause__ from None

    def drop_reply_consumer(self) -> None:
        """Forget the direct reply-to consumer (basic.cancel, channel close)."""
        with self.lock:
            rc = self.reply_consumer
            self.reply_consumer = None
        if rc is not None:
            self.session.broker.reply_consumers.pop(rc[1], None)

    def consumer_cancelled(self, consumer: Consumer) -> None:
        """The consumer's queue was deleted: forget it and tell the client (if it listens)."""
        with self.lock:
            if self.consumers.get(consumer.tag) is not consumer:
                return
            del self.consumers[consumer.tag]
            closing = self.closing
        session = self.session
        if not closing and session.capabilities.get("consumer_cancel_notify"):
            session.send_method(self.id, _spec.Basic.Cancel(consumer_tag=consumer.tag,
                                                           no_wait=True))

    # ---- acks (this connection's worker) ----

    def take_unacked(self, tag: int, multiple: bool) -> list:
        """Remove and return the entries ``tag`` names; 406 if it names none."""
        with self.lock:
            if multiple:
                entries = self.unacked.pop_all() if tag == 0 else self.unacked.pop_upto(tag)
                if not entries and tag != 0:
                    raise _unknown_tag(tag)
            else:  # (one entry: _forget_locked inlined)
                e = self.unacked.pop(tag)
                if e is None:
                    raise _unknown_tag(tag)
                c = e[3]
                if c is not None and not c.no_ack:
                    c.unacked -= 1
                    self.global_unacked -= 1
                return [e]
            self._forget_locked(entries)
        return entries

    def take_all_unacked(self) -> list:
        """Remove and return every unacked entry (basic.recover, channel close)."""
        with self.lock:
            entries = self.unacked.pop_all()
            self._forget_locked(entries)
        return entries

    def _forget_locked(self, entries: list) -> None:
        """``entries`` left the unacked map: give their consumers' credit back."""
        for e in entries:
            c = e[3]
            if c is not None and not c.no_ack:
                c.unacked -= 1
                self.global_unacked -= 1

    def settle(self, entries: list, requeue: bool, reject: bool = False) -> None:
        """Apply acks (requeue=False), rejections (``reject``: dead-lettered where the queue
        has a dead-letter exchange) or requeues to the queues, then refill consumers."""
        if len(entries) == 1:  # (one ack: its queue, without grouping)
            q, seq, msg, _c = entries[0]
            by_queue: Any = ((q, [(seq, msg)]),)
        else:
            groups: dict[int, tuple[Queue, list]] = {}
            for q, seq, msg, _c in entries:
                slot = groups.get(id(q))
                if slot is None:
                    groups[id(q)] = (q, [(seq, msg)])
                else:
                    slot[1].append((seq, msg))
            by_queue = groups.values()
        if requeue:
            for q, items in by_queue:
                q.requeue(items)
            self.refill()
            return
        # Acks and rejections: each queue settles and delivers what the freed credit allows
        # under one hold of its lock. Without a global prefetch the credit freed is only that
        # of these queues' consumers, so no refill (and no channel lock) is needed for the
        # others; this connection's worker is the only writer of ``global_prefetch``.
        for q, items in by_queue:
            q.settle(items, reject, dispatch=True)
        if self.global_prefetch:
            self.refill()

    def refill(self, no_ack_too: bool = False) -> None:
        """Credit was freed: let each queue this channel consumes from deliver more (acks free
        credit of ack-mode consumers only; a drained output, ``no_ack_too``, of every one)."""
        with self.lock:
            queues = {id(c.queue): c.queue for c in self.consumers.values()
                      if no_ack_too or not c.no_ack}
        for q in queues.values():
            q.dispatch()

    # ---- monitoring ----

    STATS = ("publish", "confirm", "return_unroutable", "deliver", "get", "redeliver", "ack")
    # STATS (the management API's message_stats) and the counters only /metrics shows
    METRIC_STATS = (*STATS, "deliver_no_ack", "get_no_ack", "get_empty", "drop_unroutable",
                    "received_confirm")

    @property
    def n_confirm(self) -> int:
        confirms = self.confirms
        return confirms.n_confirm if confirms is not None else 0

    def stats(self) -> tuple[int, ...]:
        """The counters in :attr:`STATS` order (an unlocked snapshot, for monitoring)."""
        return (self.n_publish, self.n_confirm, self.n_return, self.n_deliver, self.n_get,
                self.n_redeliver, self.n_ack)

    def metric_stats(self) -> tuple[int, ...]:
        """The counters in :attr:`METRIC_STATS` order (an unlocked snapshot)."""
        confirms = self.confirms
        return (*self.stats(), self.n_deliver_no_ack, self.n_get_no_ack, self.n_get_empty,
                self.n_drop, confirms.seq if confirms is not None else 0)

    def fold_stats(self) -> None:
        """The channel is going away: add its counters to the broker's totals (once)."""
        if not self.stats_folded:
            self.stats_folded = True
            self.session.broker.add_closed_stats(self.metric_stats())

    def _check(self) -> None:
        """The invariants in the class docstring (tests; takes ``lock``)."""
        with self.lock:
            per: dict[int, int] = {}
            for _tag, entry in self.unacked.items():
                c = entry[3]
                if c is not None and not c.no_ack:
                    per[id(c)] = per.get(id(c), 0) + 1
            consumers = {id(c): c for c in self.consumers.values()}
            for cid, n in per.items():
                c = consumers.get(cid)
                assert c is None or c.unacked == n, (c.tag if c else None, c.unacked, n)
            assert self.global_unacked == sum(per.values()), (self.global_unacked, per)
            assert all(tag < self.next_tag for tag, _ in self.unacked.items())

    # ---- closing ----

    def release(self) -> None:
        """Channel closed (by either side) or connection gone: cancel consumers, requeue
        unacked messages in order, drop tx state. Idempotent."""
        session = self.session
        if session.pending_acks or session.pending_publish:
            session.flush_runs()  # acks the client sent before this
        # ``closing`` with the session's confirm_lock held too: the confirm tracker reads it
        # under that lock alone, so no confirm follows the channel's close (or close-ok)
        with session.confirm_lock, self.lock:
            self.closing = True
            if self.confirms is not None:  # queued messages let go of the tracker
                self.confirms.link.tracker = None
            consumers = list(self.consumers.values())
            self.consumers.clear()
            entries = self.unacked.pop_all()
            self._forget_locked(entries)
        if self.reply_consumer is not None:
            self.drop_reply_consumer()
        # Requeue before detaching the consumers (``closing`` keeps them from taking anything
        # meanwhile), as RabbitMQ's queue does on a consumer's channel going down: a single
        # active consumer's successor then gets the requeued messages first, in order.
        if entries:
            self.settle(entries, requeue=True)
        for c in consumers:
            if c.queue.remove_consumer(c):
                session.auto_delete_queue(c.queue)
        self.tx_publishes = []
        self.tx_acks = []


def _unknown_tag(tag: int) -> AMQPChannelError:
    return AMQPChannelError(
        _spec.PRECONDITION_FAILED, f"PRECONDITION_FAILED - unknown delivery tag {tag}"
    )
