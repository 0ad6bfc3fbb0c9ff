"""Per-connection and per-channel state where the protocol meets the broker.

A :class:`Session` is the reactor's handler for one connection; every call into it runs on the
connection's worker thread (``syncmq.workers``), so its own fields need no lock. The exceptions
are the parts of a :class:`Channel` that queues touch from *other* workers when they deliver to
its consumers: those are guarded by ``Channel.lock`` (see its docstring), which is always taken
after a queue lock, never before one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..broker.broker import Broker
from ..broker.message import Message
from ..broker.queue import Consumer, DeliveryFailed, Queue
from ..protocol import connection as pconn
from ..protocol.channel import encode_deliver, encode_get_ok
from ..protocol.connection import ChannelEventError, ConnectionProtocol
from ..queues.unacked import UnackedMap
from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from ..wire.frames import encode_delivery, encode_method_frame

if TYPE_CHECKING:
    from ..broker.vhost import VirtualHost

log = logging.getLogger("syncmq.connection")


class Transport(Protocol):
    """What a session needs of its connection's transport (``syncmq.reactor.Transport``,
    which lives a layer above and is therefore not imported here). All thread-safe."""

    peer: Any
    pending_out: int  # unsent output bytes (read without a lock: see ``throttle``)
    out_high: int  # the output high watermark

    def throttle(self) -> bool: ...
    def write(self, chunks: list) -> None: ...
    def write1(self, data: bytes) -> None: ...
    def close_after_flush(self) -> None: ...
    def abort(self) -> None: ...
    def stop_reading(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_frame_max(self, frame_max: int) -> None: ...
    def set_heartbeat(self, seconds: int) -> None: ...
    def mark_open(self) -> None: ...
    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None: ...

CLOSE_OK_TIMEOUT = 3.0  # seconds to wait for connection.close-ok before dropping the socket
# Seconds between a fatal error and the hang-up when we do not wait for close-ok: after a frame
# error (the byte stream lost sync, so a close-ok could not be read) and for the silent close of
# a failed handshake. RabbitMQ sleeps ?SILENT_CLOSE_DELAY (3 s) in both places (rabbit_reader
# fatal_frame_error / handle_exception): a grace period for the connection.close to reach the
# client, and a brake on clients that retry failed handshakes in a loop. We wait 1 s: it costs a
# socket and a timer here (never a thread), and keeps the same two properties.
SILENT_CLOSE_DELAY = 1.0
# Most publishes to one queue a session holds back before enqueueing them (Session.flush_runs)
RUN_MAX = 128


@dataclass
class Settings:
    """Limits the server offers in connection.tune, and other per-connection settings."""

    frame_max: int = 131072
    channel_max: int = 2047
    heartbeat: int = 60
    max_message_size: int = 128 * 1024 * 1024
    product: str = "syncmq"
    cluster_name: str = "syncmq@localhost"
    server_properties: dict = field(default_factory=dict)  # --server-properties overrides


SERVER_CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}


class Channel:
    """One open channel.

    ``lock`` guards ``unacked``, ``next_tag``, ``consumers``, ``global_unacked``, every
    consumer's ``unacked`` count, ``flow_active`` and ``closing``: deliveries arrive from any
    worker (with a queue lock held), while acks, consume and cancel come from this connection's
    worker. Everything else (confirm and tx state, prefetch settings, ``last_queue``) is touched
    only by the connection's worker.
    """

    __slots__ = (
        "session", "id", "lock", "unacked", "next_tag", "consumers", "prefetch_count",
        "global_prefetch", "global_unacked", "flow_active", "closing", "confirm",
        "publish_seq", "confirm_sent", "tx", "tx_publishes", "tx_acks", "last_queue",
        "write_ok", "read_ok", "durable_pending", "durable_done", "n_publish", "n_confirm",
        "n_return", "n_deliver", "n_get",
        "n_redeliver", "n_ack", "stats_folded", "reply_consumer", "publish_rejected",
        "nack_seqs", "last_publish", "last_exchange_rk",
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
        self.flow_active = True
        self.closing = False
        self.confirm = False
        self.publish_seq = 0
        self.confirm_sent = 0
        self.tx = False
        self.tx_publishes: list = []
        self.tx_acks: list = []
        self.last_queue = ""
        # Publisher confirms of journaled messages: the highest publish seq waiting for an
        # fsync, and the highest one known durable (worker-only, like the rest of confirms).
        self.durable_pending = 0
        self.durable_done = 0
        self.write_ok: set[str] = set()  # exchanges this user may publish to (cache)
        self.read_ok: set[str] = set()
        # Message counters for the management API and /metrics: plain ints, each written by
        # one thread at a time (n_deliver/n_get/n_redeliver under ``lock``, the rest by this
        # connection's worker); readers take unlocked snapshots.
        self.n_publish = self.n_confirm = self.n_return = self.n_ack = 0
        self.n_deliver = self.n_get = self.n_redeliver = 0
        self.stats_folded = False
        # Direct reply-to: (consumer tag, reply-to suffix, deliver prefix) of this channel's
        # amq.rabbitmq.reply-to consumer, or None; written by this connection's worker under
        # ``lock``, read by other workers' deliver_reply under it.
        self.reply_consumer: tuple[str, str, bytes] | None = None
        # Publisher confirms to send as basic.nack (x-overflow=reject-publish), in order; and
        # whether the publish being routed was refused (worker-only, like the rest).
        self.nack_seqs: list[int] = []
        self.publish_rejected = False
        # The last basic.publish method handled and its exchange and routing key encoded for
        # deliveries (worker-only; see methods.basic.publish)
        self.last_publish: _spec.Basic.Publish | None = None
        self.last_exchange_rk = b""

    # ---- called by queues (any worker, queue lock held) ----

    def deliver(
        self, consumer: Consumer, queue: Queue, seq: int, message: Message, redelivered: bool
    ) -> bool:
        t = self.session.transport
        if t.pending_out > t.out_high and t.throttle():
            # Output back-pressure: the client is not reading what it was sent. No credit
            # until the reactor has sent enough; it then calls Session.output_drained.
            return False
        if not consumer.no_ack and (
            (consumer.prefetch and consumer.unacked >= consumer.prefetch)
            or (self.global_prefetch and self.global_unacked >= self.global_prefetch)
        ):
            # No credit, read without the lock: a queue with a backlog asks on every publish,
            # and taking the lock each time convoys the publisher's worker with the consumer's.
            # A stale "full" is safe: credit is freed under the lock and then the queues
            # are dispatched again (Channel.settle), after this refusal.
            return False
        with self.lock:
            if self.closing or not self.flow_active:
                return False
            no_ack = consumer.no_ack
            if not no_ack:
                if consumer.prefetch and consumer.unacked >= consumer.prefetch:
                    return False
                if self.global_prefetch and self.global_unacked >= self.global_prefetch:
                    return False
            # encode first, then change state: if the body cannot be read nothing has changed
            # and the message stays at the head of its queue
            tag = self.next_tag
            session = self.session
            body = message.body
            if body is None:  # memory budget: the body is in the store (perhaps on disk)
                body = message.load_body()
            frames = encode_deliver(
                self.id, consumer.prefix, tag, redelivered, message.exchange_rk,
                message.properties, body, session.frame_max,
            )
            if not no_ack:
                consumer.unacked += 1
                self.global_unacked += 1
                self.unacked.add(tag, (queue, seq, message, consumer))
            self.next_tag = tag + 1
            self.n_deliver += 1
            if redelivered:
                self.n_redeliver += 1
            session.transport.write(frames)
        return True

    def deliver_many(self, consumer: Consumer, queue: Queue, pairs: list) -> int:
        """Deliver a prefix of ``pairs`` (``(seq, (message, redelivered))`` as the ready queue
        hands them out) as far as the consumer's credit goes; return how many were taken.

        The batch form of :meth:`deliver` (same checks, same order of delivery tags): one
        hold of the channel lock, one write of every delivery's frames to the transport.
        Called with ``queue.lock`` held, like :meth:`deliver`; the caller puts back what was
        not taken.
        """
        t = self.session.transport
        if t.pending_out > t.out_high and t.throttle():
            return 0
        no_ack = consumer.no_ack
        with self.lock:
            if self.closing or not self.flow_active:
                return 0
            k = len(pairs)
            if not no_ack:
                if consumer.prefetch and consumer.prefetch - consumer.unacked < k:
                    k = consumer.prefetch - consumer.unacked
                if self.global_prefetch and self.global_prefetch - self.global_unacked < k:
                    k = self.global_prefetch - self.global_unacked
                if k <= 0:
                    return 0
            # Each message is encoded before it is recorded: if reading or encoding message i
            # raises, messages 0..i-1 are delivered (recorded, counted, written) and i.. are
            # untouched, for the queue to put back at its head (one try per batch).
            tag0 = tag = self.next_tag
            session = self.session
            frame_max = session.frame_max
            prefix = consumer.prefix
            ch_id = self.id
            add = self.unacked.add
            chunks: list = []
            extend = chunks.extend
            redelivered_n = 0
            failed = None
            try:
                for i in range(k):
                    seq, (message, redelivered) = pairs[i]
                    body = message.body
                    if body is None:  # memory budget: the body is in the store
                        body = message.load_body()
                    extend(encode_deliver(ch_id, prefix, tag, redelivered, message.exchange_rk,
                                          message.properties, body, frame_max))
                    if not no_ack:
                        add(tag, (queue, seq, message, consumer))
                    if redelivered:
                        redelivered_n += 1
                    tag += 1
            except Exception as e:
                failed = e
                k = tag - tag0
            if k:
                if not no_ack:
                    consumer.unacked += k
                    self.global_unacked += k
                self.next_tag = tag
                self.n_deliver += k
                self.n_redeliver += redelivered_n
                session.transport.write(chunks)
        if failed is not None:
            raise DeliveryFailed(k) from failed
        return k

    def deliver_reply(self, message: Message) -> bool:
        """Direct reply-to: deliver ``message`` to this channel's reply consumer (any worker;
        no-ack, so no unacked entry and no prefetch). False if there is none any more."""
        with self.lock:
            rc = self.reply_consumer
            if rc is None or self.closing:
                return False
            tag = self.next_tag
            self.next_tag = tag + 1
            self.n_deliver += 1
            session = self.session
            session.transport.write(
                encode_deliver(
                    self.id, rc[2], tag, False, message.exchange_rk,
                    message.properties, message.body, session.frame_max,
                )
            )
        return True

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

    # ---- called by this connection's worker ----

    def send_get_ok(
        self, queue: Queue, seq: int, message: Message, redelivered: bool, remaining: int,
        no_ack: bool,
    ) -> None:
        with self.lock:
            tag = self.next_tag
            self.next_tag = tag + 1
            self.n_get += 1
            if redelivered:
                self.n_redeliver += 1
            if not no_ack:
                self.unacked.add(tag, (queue, seq, message, None))
            session = self.session
            body = message.body
            if body is None:  # memory budget: the body is in the store (perhaps on disk)
                body = message.load_body()
            session.transport.write(
                encode_get_ok(
                    self.id, tag, redelivered, message.exchange_rk, remaining,
                    message.properties, body, session.frame_max,
                )
            )

    def take_unacked(self, tag: int, multiple: bool) -> list:
        """Remove and return the entries ``tag`` names; 406 if it names none."""
        with self.lock:
            if multiple:
                entries = self.unacked.pop_all() if tag == 0 else self.unacked.pop_upto(tag)
                if not entries and tag != 0:
                    raise _unknown_tag(tag)
            else:
                e = self.unacked.pop(tag)
                if e is None:
                    raise _unknown_tag(tag)
                entries = [e]
            for e in entries:
                c = e[3]
                if c is not None and not c.no_ack:
                    c.unacked -= 1
                    self.global_unacked -= 1
        return entries

    def settle(self, entries: list, requeue: bool, reject: bool = False) -> None:
        """Apply acks (requeue=False), rejections (``reject``: dead-lettered where the queue
        has a dead-letter exchange) or requeues to the queues, then refill consumers."""
        by_queue: dict[int, tuple[Queue, list]] = {}
        for q, seq, msg, _c in entries:
            slot = by_queue.get(id(q))
            if slot is None:
                by_queue[id(q)] = (q, [(seq, msg)])
            else:
                slot[1].append((seq, msg))
        if requeue:
            for q, items in by_queue.values():
                q.requeue(items)
            self.refill()
            return
        # Acks and rejections: each queue settles and delivers what the freed credit allows
        # under one hold of its lock. Without a global prefetch the credit freed is only that
        # of these queues' consumers, so no refill (and no channel lock) is needed for the
        # others; this connection's worker is the only writer of ``global_prefetch``.
        for q, items in by_queue.values():
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

    STATS = ("publish", "confirm", "return_unroutable", "deliver", "get", "redeliver", "ack")

    def stats(self) -> tuple[int, ...]:
        """The counters in :attr:`STATS` order (an unlocked snapshot, for monitoring)."""
        return (self.n_publish, self.n_confirm, self.n_return, self.n_deliver, self.n_get,
                self.n_redeliver, self.n_ack)

    def fold_stats(self) -> None:
        """The channel is going away: add its counters to the broker's totals (once)."""
        if not self.stats_folded:
            self.stats_folded = True
            self.session.broker.add_closed_stats(self.stats())

    def release(self) -> None:
        """Channel closed (by either side) or connection gone: cancel consumers, requeue
        unacked messages in order, drop tx state. Idempotent."""
        session = self.session
        if session.pending_acks or session.pending_publish:
            session.flush_runs()  # acks the client sent before this
        with self.lock:
            self.closing = True
            consumers = list(self.consumers.values())
            self.consumers.clear()
            entries = self.unacked.pop_all()
            self.global_unacked = 0
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


Handler = Callable[["Session", "Channel | None", Any, "bytes | None", "bytes | None"], None]


class Session:
    """The handler of one client connection (see ``syncmq.reactor.Handler``)."""

    def __init__(
        self,
        transport: Transport,
        broker: Broker,
        settings: Settings,
        handlers: dict[int, Handler],
        on_close: Callable[[Session], None] | None = None,
    ) -> None:
        self.transport = transport
        self.broker = broker
        self.settings = settings
        self.handlers = handlers
        self.on_close = on_close
        self.proto = ConnectionProtocol(
            settings.channel_max, settings.frame_max, settings.max_message_size
        )
        self.channels: dict[int, Channel] = {}
        self.frame_max = settings.frame_max
        self.channel_max = settings.channel_max
        self.heartbeat = 0
        self.user = None
        self.username = ""
        self.auth_mechanism = ""  # PLAIN, AMQPLAIN or EXTERNAL (for update-secret)
        self.vhost: VirtualHost | None = None
        self.client_properties: dict = {}
        self.capabilities: dict = {}
        self.exclusive_queues: list[Queue] = []
        self.confirm_dirty: set[Channel] = set()
        # Runs of publishes and acks (see defer_publish / defer_ack): queue -> messages to
        # enqueue, channel -> acked entries to settle; emptied by flush_runs before any other
        # kind of method is handled and at the end of every batch.
        self.pending_publish: dict[Queue, list[Message]] = {}
        self.pending_acks: dict[Channel, list] = {}
        self.journal_waiters: set[Channel] = set()
        # Publisher confirms are sent by this connection's worker and, for journaled
        # publishes, straight from the journal thread once their fsync is done
        # (_confirm_synced). This lock serialises the two: it guards every channel's
        # confirm_sent, durable_done and n_confirm and the writing of confirm frames, and the
        # connection's move out of OPEN in close() (so no confirm follows connection.close).
        # Order: confirm_lock, then Channel.lock, then Transport.out_lock; never taken with a
        # queue lock or a Channel.lock held.
        self.confirm_lock = threading.Lock()
        # Resource alarms (worker-only): ``blocked`` is the set of alarms in effect (falsy when
        # none); ``reading_paused`` once the connection published while blocked (RabbitMQ
        # blocks publishers, not consumers).
        self.blocked: frozenset | bool = False
        self.reading_paused = False
        self.released = False
        self.connected_at = time.time()
        self.peer = transport.peer

    # ---- output ----

    def send_method(self, channel_id: int, method: _spec.Method) -> None:
        self.transport.write1(encode_method_frame(channel_id, method))

    def send_content(self, channel_id: int, method: _spec.Method, props: bytes,
                     body: bytes) -> None:
        self.transport.write(
            encode_delivery(channel_id, method.encode(), props, body, self.frame_max)
        )

    # ---- reactor callbacks (on this connection's worker) ----

    def connection_made(self) -> None:
        s = self.settings
        self.send_method(
            0,
            _spec.Connection.Start(
                version_major=0,
                version_minor=9,
                server_properties={
                    "product": s.product,
                    "version": __version__,
                    "platform": "Python",
                    "copyright": "syncmq contributors",
                    "information": "An AMQP 0-9-1 broker in pure Python",
                    "cluster_name": s.cluster_name,
                    **s.server_properties,
                    "capabilities": dict(SERVER_CAPABILITIES),
                },
                mechanisms=b"PLAIN AMQPLAIN EXTERNAL"
                if getattr(self.transport, "peer_cert", None) else b"PLAIN AMQPLAIN",
                locales=b"en_US",
            ),
        )

    def frames_received(self, frames: list) -> None:
        if self.proto.state == pconn.CLOSED:
            return
        try:
            while frames:
                try:
                    events, frames = self.proto.receive(frames)
                except ChannelEventError as e:
                    self._handle(e.events)
                    self.channel_error(e.channel_id, e.error)
                    frames = e.rest
                    continue
                self._handle(events)
        except AMQPConnectionError as e:
            self.connection_error(e)
        except Exception:
            # A bug, not the peer's fault; still, never leave the connection hanging: log it
            # (with its traceback) and close the connection with 541 like RabbitMQ's reader
            # does when a handler crashes.
            log.exception("internal error handling frames", extra={"peer": _peer(self.peer)})
            self.connection_error(AMQPConnectionError(
                _spec.INTERNAL_ERROR, "INTERNAL_ERROR - the broker failed to handle a frame"))
        if self.journal_waiters:
            self._wait_for_journal()
        if self.confirm_dirty:
            self.flush_confirms()

    def _wait_for_journal(self) -> None:
        """One journal barrier per batch for every channel with journaled publishes; its
        confirms are sent from the journal thread as soon as the fsync is done."""
        pending = [(ch, ch.durable_pending) for ch in self.journal_waiters]
        self.journal_waiters.clear()
        worker = self.transport.worker
        self.broker.durability.barrier(
            lambda err: self._confirm_synced(pending, err, worker))

    def after_journal_sync(self, fn: Callable[[Exception | None], None]) -> None:
        """Run ``fn(error)`` on this connection's worker once everything journaled so far is
        durable (group commit: one fsync covers every connection's records of the batch)."""
        worker = self.transport.worker
        self.broker.durability.barrier(lambda err: worker.submit(fn, err))

    def _confirm_synced(self, pending: list, err: Exception | None, worker: Any) -> None:
        """Journal thread (or the worker if the journal refused the barrier): the publishes
        up to each ``(channel, upto)`` of ``pending`` are on disk; send their ``basic.ack``
        now instead of waiting for a hop through the worker's task queue.

        Only the plain case is handled here: a journal error, a channel with refused
        publishes to nack (``nack_seqs``), or later publishes that no other barrier will
        confirm (transient ones after ``upto``: the worker's end-of-batch flush may have held
        them back, waiting for this barrier) go to the worker, :meth:`_journal_synced`.
        Everything happens under ``confirm_lock`` and the channel's lock, so a confirm never
        follows connection.close or channel.close-ok and never goes out twice.
        """
        follow = err is not None
        if not follow:
            with self.confirm_lock:
                if self.proto.state != pconn.OPEN:
                    return
                for ch, upto in pending:
                    with ch.lock:
                        if ch.closing:
                            continue
                        if ch.nack_seqs:
                            follow = True
                            continue
                        if upto > ch.durable_done:
                            ch.durable_done = upto
                        if upto > ch.confirm_sent:
                            multiple = upto - ch.confirm_sent > 1
                            ch.n_confirm += upto - ch.confirm_sent
                            ch.confirm_sent = upto
                            self.send_method(ch.id, _spec.Basic.Ack(delivery_tag=upto,
                                                                    multiple=multiple))
                    # read after our update: a publish the worker's flush held back for us
                    if ch.publish_seq > ch.confirm_sent and ch.durable_pending <= upto:
                        follow = True
        if follow:
            worker.submit(self._journal_synced, pending, err)

    def _journal_synced(self, pending: list, err: Exception | None) -> None:
        """Worker: the rest of :meth:`_confirm_synced` (nacks, a journal error, trailing
        transient publishes)."""
        with self.confirm_lock:
            for ch, upto in pending:
                if ch.closing:
                    continue
                if err is not None and upto > ch.confirm_sent:
                    # the journal failed: nack what it could not make durable
                    multiple = upto - ch.confirm_sent > 1
                    ch.confirm_sent = upto
                    self.send_method(ch.id, _spec.Basic.Nack(delivery_tag=upto,
                                                             multiple=multiple,
                                                             requeue=False))
                if upto > ch.durable_done:
                    ch.durable_done = upto
                self.confirm_dirty.add(ch)
        self.flush_confirms()

    def defer_publish(self, queue: Queue, message: Message) -> None:
        """Enqueue ``message`` on ``queue`` at the end of the current run of publishes (see
        ``methods.basic.route``): one ``Queue.publish_many`` per queue and run."""
        pending = self.pending_publish.get(queue)
        if pending is None:
            self.pending_publish[queue] = [message]
        else:
            pending.append(message)
            if len(pending) >= RUN_MAX:  # bounds how long consumers wait for the first
                self.flush_runs()

    def defer_ack(self, ch: Channel, entries: list) -> None:
        """Settle acked ``entries`` (already taken off ``ch``'s unacked map, so a repeated tag
        is still a 406 at once) at the end of the current run of acks: one ``Queue.settle``
        and one dispatch per queue and run instead of one per ack."""
        pending = self.pending_acks.get(ch)
        if pending is None:
            self.pending_acks[ch] = entries
        else:
            pending.extend(entries)

    def flush_runs(self) -> None:
        """Enqueue deferred publishes and settle deferred acks (this connection's worker).

        Called before any method other than basic.publish/basic.ack is handled, at the end of
        each batch, and when a channel is released, so no other method of the connection can
        observe a publish not yet enqueued or an ack not yet applied."""
        # Every run is handled even if one raises (one try per queue or channel, not per
        # message): the others' publishes are enqueued and their acked entries settled
        # (those are off the channels' unacked maps already: dropped, they would stay unacked
        # on their queues for good); then the first error is raised.
        error = None
        if self.pending_publish:
            pending, self.pending_publish = self.pending_publish, {}
            for q, messages in pending.items():
                try:
                    q.publish_many(messages)
                except Exception as e:
                    if error is None:
                        error = e
        if self.pending_acks:
            acks, self.pending_acks = self.pending_acks, {}
            for ch, entries in acks.items():
                try:
                    ch.settle(entries, requeue=False)
                except Exception as e:
                    if error is None:
                        error = e
        if error is not None:
            raise error

    def _handle(self, events: list) -> None:
        try:
            self._handle_events(events)
        finally:
            if self.pending_publish or self.pending_acks:
                self.flush_runs()

    def _handle_events(self, events: list) -> None:
        handlers = self.handlers
        channels = self.channels
        proto = self.proto
        closed = pconn.CLOSED
        for ch_id, method, props, body in events:
            if proto.state == closed:
                return
            index = method.INDEX
            if (self.pending_publish or self.pending_acks) and index not in _RUN_METHODS:
                self.flush_runs()
            channel = channels.get(ch_id) if ch_id else None
            if index == _CHANNEL_OPEN and channel is None:
                channel = self.open_channel(ch_id)
            if channel is not None and channel.closing and index not in _CLOSE_METHODS:
                continue
            handler = handlers.get(index)
            if handler is None:
                raise AMQPConnectionError(
                    _spec.COMMAND_INVALID,
                    f"COMMAND_INVALID - method {method.NAME} is not accepted from a client",
                    method.CLASS_ID, method.METHOD_ID,
                )
            try:
                handler(self, channel, method, props, body)
            except AMQPChannelError as e:
                if not e.class_id:
                    e.class_id, e.method_id = method.CLASS_ID, method.METHOD_ID
                self.channel_error(ch_id, e)
            except AMQPConnectionError as e:
                if not e.class_id:
                    e.class_id, e.method_id = method.CLASS_ID, method.METHOD_ID
                raise

    def frame_error(self, exc: AMQPConnectionError) -> None:
        """The byte stream is broken (the reactor stopped reading): say why, then hang up.

        As RabbitMQ's ``fatal_frame_error``: the connection.close is sent (if the state allows
        one, see :meth:`connection_error`) but no close-ok is awaited, since nothing after the
        bad frame can be parsed; the socket is closed after a grace period.
        """
        self._log_error("connection", exc)
        state = self.proto.state
        if state in (pconn.CLOSING, pconn.CLOSED):
            self.proto.state = pconn.CLOSED
            self.release()
            self._hang_up(0)
            return
        with self.confirm_lock:  # no confirm from the journal thread after our close
            if self._answers_with_close(exc):
                self.send_method(0, _spec.Connection.Close(
                    reply_code=exc.reply_code, reply_text=exc.reply_text[:255],
                    class_id=exc.class_id, method_id=exc.method_id))
            self.proto.state = pconn.CLOSED
        self.release()
        self._hang_up(SILENT_CLOSE_DELAY)

    def output_drained(self) -> None:
        """The reactor sent our output down to its low watermark after a delivery had been
        refused for it (see ``Channel.deliver``): let every consumer have messages again."""
        if self.proto.state == pconn.CLOSED:
            return
        for ch in list(self.channels.values()):
            ch.refill(no_ack_too=True)

    def connection_lost(self) -> None:
        if self.proto.state not in (pconn.CLOSED,) and self.proto.state != pconn.CLOSING:
            if self.user is not None:
                log.info("client unexpectedly closed TCP connection",
                         extra={"peer": _peer(self.peer), "user": self.username,
                                "vhost": self.vhost.name if self.vhost else None})
        self.proto.state = pconn.CLOSED
        self.release()

    # ---- errors ----

    def channel_error(self, ch_id: int, e: AMQPChannelError) -> None:
        """Close channel ``ch_id`` with a soft error."""
        self._log_error("channel", e, ch_id)
        ch = self.channels.get(ch_id)
        if ch is not None:
            ch.release()
            self.confirm_dirty.discard(ch)
        self.proto.channel_closing(ch_id)
        self.send_method(ch_id, _spec.Channel.Close(
            reply_code=e.reply_code, reply_text=e.reply_text[:255],
            class_id=e.class_id, method_id=e.method_id))

    def connection_error(self, e: AMQPConnectionError) -> None:
        """Close the connection with a hard error; wait a while for close-ok.

        During the handshake RabbitMQ answers only some errors with connection.close (see
        :meth:`_answers_with_close`); the others end in a silent hang-up, as the spec asks of
        a failed negotiation ("close the socket without sending any further data").
        """
        self._log_error("connection", e)
        state = self.proto.state
        if state in (pconn.CLOSING, pconn.CLOSED):
            return
        if not self._answers_with_close(e):
            with self.confirm_lock:
                self.proto.state = pconn.CLOSED
            self.release()
            self.transport.stop_reading()
            self._hang_up(SILENT_CLOSE_DELAY)
            return
        self.close(e.reply_code, e.reply_text, e.class_id, e.method_id)

    def _answers_with_close(self, e: AMQPConnectionError) -> bool:
        """Whether a hard error in the current state gets a connection.close.

        rabbit_reader ``handle_exception``: always once the connection runs (or is closing);
        in ``opening`` (after tune-ok) always; in ``tuning`` only for not_allowed (530, a
        failed tune-ok negotiation); in ``starting`` only for access_refused (403) and only
        if the client announced the ``authentication_failure_close`` capability. Every other
        handshake error closes the socket silently.
        """
        state = self.proto.state
        if state in (pconn.OPEN, pconn.AWAIT_OPEN):
            return True
        if state == pconn.AWAIT_TUNE_OK:
            return e.reply_code == _spec.NOT_ALLOWED
        if state == pconn.AWAIT_START_OK:
            return (e.reply_code == _spec.ACCESS_REFUSED
                    and self.capabilities.get("authentication_failure_close") is True)
        return False

    def _hang_up(self, delay: float) -> None:
        """Close the socket after ``delay`` s, once what was written is sent; drop it anyway
        ``CLOSE_OK_TIMEOUT`` s later if the client does not read."""
        t = self.transport
        if delay > 0:
            t.call_later(delay, t.close_after_flush)
        else:
            t.close_after_flush()
        t.call_later(delay + CLOSE_OK_TIMEOUT, t.abort)

    def close(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Server-initiated connection.close (errors, shutdown)."""
        with self.confirm_lock:  # no confirm from the journal thread after our close
            if self.proto.state in (pconn.CLOSING, pconn.CLOSED):
                return
            self.send_method(0, _spec.Connection.Close(
                reply_code=code, reply_text=text[:255], class_id=class_id,
                method_id=method_id))
            self.proto.state = pconn.CLOSING
        self.release()
        t = self.transport
        t.call_later(CLOSE_OK_TIMEOUT, t.abort)

    def _log_error(self, scope: str, e: Exception, ch_id: int = 0) -> None:
        extra = {"peer": _peer(self.peer), "user": self.username,
                 "vhost": self.vhost.name if self.vhost else None,
                 "reply_code": getattr(e, "reply_code", 0)}
        if scope == "channel":
            extra["channel"] = ch_id
        log.warning("%s error: %s", scope, e, extra=extra)

    # ---- resources ----

    def open_channel(self, ch_id: int) -> Channel:
        ch = Channel(self, ch_id)
        self.channels[ch_id] = ch
        return ch

    def forget_channel(self, ch_id: int) -> None:
        ch = self.channels.pop(ch_id, None)
        if ch is not None:
            ch.fold_stats()
            ch.release()
            self.confirm_dirty.discard(ch)
        self.proto.channel_closed(ch_id)

    def auto_delete_queue(self, q: Queue) -> None:
        vh = self.broker.vhosts.get(q.vhost)
        if vh is None:
            return
        deleted = vh.delete_queue_object(q)
        if deleted:
            for c in deleted[1]:
                c.channel.consumer_cancelled(c)

    def release(self) -> None:
        """Give back every broker resource of the connection (idempotent)."""
        if self.released:
            return
        self.released = True
        for ch in list(self.channels.values()):
            ch.fold_stats()
            ch.release()
        self.confirm_dirty.clear()
        for q in self.exclusive_queues:
            self.auto_delete_queue(q)
        self.exclusive_queues = []
        if self.on_close is not None:
            self.on_close(self)

    def alarms_changed(self, alarms: frozenset) -> None:
        """A resource alarm was set or cleared (on this connection's worker)."""
        if self.proto.state != pconn.OPEN:
            return
        if alarms:
            self.blocked = alarms
        elif self.blocked:
            self.blocked = False
            if self.reading_paused:
                # only a connection that was told it is blocked hears that it is not
                self.reading_paused = False
                self.transport.resume_reading()
                if self.capabilities.get("connection.blocked") is True:
                    self.send_method(0, _spec.Connection.Unblocked())

    def block_publisher(self) -> None:
        """A publish arrived while an alarm is on: as RabbitMQ's reader, the connection
        becomes blocked now (consumers-only connections never are): connection.blocked to a
        client with that capability, and no more reading from its socket until the alarm
        clears."""
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
            if self.capabilities.get("connection.blocked") is True:
                reason = "low on memory" if "memory" in self.blocked else "low on disk"
                self.send_method(0, _spec.Connection.Blocked(reason=reason))

    def flush_confirms(self) -> None:
        """Send the publisher confirms accumulated during one batch: one ack per channel,
        with ``multiple`` when it covers several publishes (worker; takes ``confirm_lock``)."""
        with self.confirm_lock:
            for ch in self.confirm_dirty:
                upto = ch.publish_seq
                if ch.durable_pending > ch.durable_done:
                    upto = ch.durable_done  # later confirms wait for the journal (multiple)
                if ch.nack_seqs and not ch.closing:
                    self._send_nacks(ch, upto)
                if upto > ch.confirm_sent and not ch.closing:
                    multiple = upto - ch.confirm_sent > 1
                    ch.n_confirm += upto - ch.confirm_sent
                    ch.confirm_sent = upto
                    self.send_method(ch.id, _spec.Basic.Ack(delivery_tag=upto,
                                                            multiple=multiple))
        self.confirm_dirty.clear()

    def _send_nacks(self, ch: Channel, upto: int) -> None:
        """Refused publishes up to ``upto``: ack what precedes each, then nack it
        (``confirm_lock`` held)."""
        nacks = ch.nack_seqs
        while nacks and nacks[0] <= upto:
            seq = nacks.pop(0)
            if seq <= ch.confirm_sent:
                continue  # already nacked (a journal failure covered it)
            if seq - 1 > ch.confirm_sent:
                ch.n_confirm += seq - 1 - ch.confirm_sent
                self.send_method(ch.id, _spec.Basic.Ack(
                    delivery_tag=seq - 1, multiple=seq - 1 - ch.confirm_sent > 1))
            ch.confirm_sent = seq
            self.send_method(ch.id, _spec.Basic.Nack(delivery_tag=seq, multiple=False,
                                                     requeue=False))


_CHANNEL_OPEN = _spec.Channel.Open.INDEX
# methods whose effects may be applied at the end of a run of them (Session.flush_runs)
_RUN_METHODS = frozenset({_spec.Basic.Publish.INDEX, _spec.Basic.Ack.INDEX})
_CLOSE_METHODS = frozenset({_spec.Channel.Close.INDEX, _spec.Channel.CloseOk.INDEX})


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
