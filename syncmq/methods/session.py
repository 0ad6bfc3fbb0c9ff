"""Per-connection state where the protocol meets the broker.

A :class:`Session` is the reactor's handler for one connection; every call into it runs on the
connection's worker thread (``syncmq.workers``), so its own fields need no lock. Its channels
(``methods.channel_state.Channel``) are also touched by *other* workers when queues deliver to
their consumers (under ``Channel.lock``), and their publisher confirms by the journal thread
(under ``confirm_lock``, inside ``methods.confirm.ConfirmTracker``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..broker.broker import Broker
from ..broker.publish import PublishRun
from ..broker.queue import Queue
from ..protocol import connection as pconn
from ..protocol.connection import ChannelError, ConnectionProtocol
from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from .channel_state import Channel
from .confirm import ConfirmTracker
from .credit import Credit
from .durable_reply import Hold
from .hand_over import HandOver, input_heavy, to_worker
from .session_api import SERVER_CAPABILITIES, Settings, Transport

if TYPE_CHECKING:
    from ..broker.vhost import VirtualHost

log = logging.getLogger("syncmq.connection")


CLOSE_OK_TIMEOUT = 3.0  # seconds to wait for connection.close-ok before dropping the socket
# Seconds between a fatal error and the hang-up when we do not wait for close-ok: after a frame
# error (the byte stream lost sync, so a close-ok could not be read) and for the silent close of
# a failed handshake. RabbitMQ sleeps ?SILENT_CLOSE_DELAY (3 s) in both places (rabbit_reader
# fatal_frame_error / handle_exception): a grace period for the connection.close to reach the
# client, and a brake on clients that retry failed handshakes in a loop. We wait 1 s: it costs a
# socket and a timer here (never a thread), and keeps the same two properties.
SILENT_CLOSE_DELAY = 1.0


Handler = Callable[["Session", "Channel | None", Any, "bytes | None", "bytes | None"], None]


class Session:
    """The handler of one client connection (see ``syncmq.reactor.Handler``).

    Slots, not an instance dict: CPython 3.11 shares (and specialises attribute and method
    loads on) an instance dict's keys only up to 29 attributes; past that every ``self.x``
    and ``self.m()`` of the per-frame path is a generic lookup. A new attribute is one more
    name here."""

    __slots__ = (
        "transport", "broker", "settings", "handlers", "on_close", "proto", "channels",
        "frame_max", "channel_max", "heartbeat", "user", "username", "auth_mechanism",
        "vhost", "counted_in", "client_properties", "capabilities", "exclusive_queues",
        "confirm_dirty", "run", "pending_publish", "pending_acks", "hold", "confirm_lock",
        "standing_in",
        "blocked", "reading_paused", "credit", "released", "topic_store", "topic_perms",
        "counted", "counted_channels", "connected_at", "peer",
    )

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
        # the vhost's ``Limits`` this connection is counted in (from connection.open until
        # release gives the count back), else None
        self.counted_in: Any = None
        self.client_properties: dict = {}
        self.capabilities: dict = {}
        self.exclusive_queues: list[Queue] = []
        # Confirm trackers with publishes in the current batch (handed over at its end).
        self.confirm_dirty: set[ConfirmTracker] = set()
        # This batch runs on the reactor thread standing in for the idle worker (copied from
        # the transport per batch): handlers hand heavy work back (methods.hand_over)
        self.standing_in = False
        # Runs of publishes and acks: the run of held-back publishes (``broker.publish``),
        # and channel -> acked entries to settle (defer_ack); both emptied by flush_runs
        # before any other kind of method is handled and at the end of every batch.
        # ``pending_publish`` is the run's dict (the same object for the session's life).
        self.run = PublishRun()
        self.pending_publish = self.run.pending
        self.pending_acks: dict[Channel, list] = {}
        # a reply waiting for the journal, and what the connection parked behind it
        self.hold: Hold | None = None
        # Publisher confirms are sent by this connection's worker and, for journaled
        # publishes, straight from the journal thread once their fsync is done. This lock
        # is every ConfirmTracker's (see it for what it guards) and guards the connection's
        # move out of OPEN in close() and a channel's ``closing`` (Channel.release), so no
        # confirm follows connection.close or channel.close. Order: confirm_lock, then
        # Channel.lock, then Transport.out_lock; never taken with a queue lock or a
        # Channel.lock held.
        self.confirm_lock = threading.Lock()
        # Resource alarms (worker-only): ``blocked`` is the set of alarms in effect (falsy when
        # none); ``reading_paused`` once the connection published while blocked (RabbitMQ
        # blocks publishers, not consumers).
        self.blocked: frozenset | bool = False
        self.reading_paused = False
        # Queue credit flow (``methods.credit``): the queues this connection waits for.
        self.credit = Credit(self)
        self.released = False
        # Topic permissions of the user in the vhost, and the users store they came from
        # (methods/access.py: re-read when broker.users is replaced); worker-only.
        self.topic_store: Any = None
        self.topic_perms: dict | None = None
        # User limits (broker/user_usage.py): whether this connection is counted, and the
        # channels counted (released at close); worker-only.
        self.counted = False
        self.counted_channels: set[int] = set()
        self.connected_at = time.time()
        self.peer = transport.peer

    # ---- output ----

    def send_method(self, channel_id: int, method: _spec.Method) -> None:
        self.transport.write1(self.proto.send(channel_id, method))

    def send_content(self, channel_id: int, method: _spec.Method, props: bytes,
                     body: bytes) -> None:
        self.transport.write(self.proto.send_content(channel_id, method, props, body))

    # ---- reactor callbacks (on this connection's worker) ----

    def connection_made(self) -> None:
        if self.proto.state is not pconn.AWAIT_START_OK:
            return  # closed (shutdown, management API) before the protocol header came
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
        if self.proto.state is _CLOSED:
            return
        if self.hold is not None:  # a reply waits for the journal: see durable_reply.py
            self.hold.frames.extend(frames)
            return
        if getattr(self.transport, "standing_in", False):  # the reactor's turn: hand_over.py
            if input_heavy(self):
                to_worker(self).frames.extend(frames)
                return
            self.standing_in = True
            try:
                self._receive(frames, (), None)
            finally:
                self.standing_in = False
            return
        self._receive(frames, (), None)

    def _receive(self, frames: list, events: Any, error: ChannelError | None) -> None:
        """Handle ``events``, then ``error`` (a channel error the protocol layer raised after
        them), then ``frames``; park what is left on ``self.hold`` if a handler set one."""
        try:
            while True:
                if events:
                    self._handle(events)
                if self.hold is not None:
                    self.hold.error = error
                    self.hold.frames[:0] = frames
                    break
                if error is not None and self.proto.state is _OPEN:
                    # (a parked channel error after our connection.close: nothing more to say)
                    self.channel_error(error.channel_id, error.error)
                if not frames:
                    break
                events, frames, error = self.proto.receive(frames)
                if error is not None and type(error) is not ChannelError:
                    # a hard error: the events before it are dropped (the connection closes)
                    raise error
        except AMQPConnectionError as e:
            self.connection_error(e)
        except Exception:
            # A bug, not the peer's fault; still, never leave the connection hanging: log it
            # (with its traceback) and close the connection with 541 like RabbitMQ's reader
            # does when a handler crashes.
            log.exception("internal error handling frames", extra={"peer": _peer(self.peer)})
            self.connection_error(AMQPConnectionError(
                _spec.INTERNAL_ERROR, "INTERNAL_ERROR - the broker failed to handle a frame"))
        if self.confirm_dirty:
            # End of the batch: each channel with publishes in it hands them to its confirm
            # tracker, which sends what is due (one ack per channel, ``multiple`` when it
            # covers several); journaled publishes get one journal barrier for the batch, and
            # their confirms go out from the journal thread once the fsync is done.
            ConfirmTracker.hand_over(self.confirm_dirty, self.confirm_lock,
                                     self.broker.durability.barrier)
        if self.run.stalled or self.credit.paused:  # a queue it publishes to is behind
            self.credit.after_batch(self.run.stalled)

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
            try:
                self.run.flush()
            except Exception as e:
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
        """Handle ``events`` in order until the connection is closed or a reply is held; the
        runs of publishes and acks are flushed at the end whatever happens.

        The connection's state is read before the first event and after each channel-0
        method, not before every event: only this worker changes it, and among the handlers
        only connection.* ones (close, close-ok, the handshake) can leave it CLOSED (a
        channel-level error closes the channel, a connection-level one raises out of here;
        ``connection_lost`` is a task of its own)."""
        handlers = self.handlers
        channels = self.channels
        try:
            state = self.proto.state
            if state is _CLOSED:
                return
            # closing (our connection.close is sent, Session.release has run): methods
            # parked behind a held reply (durable_reply) are dropped but channel 0's, as
            # rabbit_reader drops all but channel 0 when ?IS_STOPPING; handled, a
            # channel.open would take a user count nothing gives back
            closing = state is not _OPEN
            for event in events:  # (no enumerate: its position is wanted only for a hold)
                ch_id, method, props, body = event
                if closing and ch_id:
                    continue
                index = method.INDEX
                if index not in _RUN_METHODS:
                    if self.pending_publish or self.pending_acks:
                        self.flush_runs()
                channel = channels.get(ch_id) if ch_id else None
                if channel is None:
                    if index == _CHANNEL_OPEN:
                        channel = self.open_channel(ch_id)  # (not closing)
                elif channel.closing and index not in _CLOSE_METHODS:
                    continue
                try:
                    handler = handlers[index]
                except KeyError:
                    raise AMQPConnectionError(
                        _spec.COMMAND_INVALID,
                        f"COMMAND_INVALID - method {method.NAME} is not accepted from a client",
                        method.CLASS_ID, method.METHOD_ID,
                    ) from None
                try:
                    handler(self, channel, method, props, body)
                except AMQPChannelError as e:
                    if self.standing_in:  # (the reactor's: the close, O(unacked), is not)
                        to_worker(self).events = events[_position(events, event):]
                        return
                    if not e.class_id:
                        e.class_id, e.method_id = method.CLASS_ID, method.METHOD_ID
                    self.channel_error(ch_id, e)
                except AMQPConnectionError as e:
                    if not e.class_id and not e.no_method:
                        e.class_id, e.method_id = method.CLASS_ID, method.METHOD_ID
                    raise
                except HandOver:  # (on the reactor standing in: nothing done yet)
                    to_worker(self).events = events[_position(events, event):]
                    return
                if self.hold is not None:  # the reply waits for the journal (durable_reply.py)
                    self.hold.events = events[_position(events, event) + 1 :]
                    return
                if not ch_id:
                    state = self.proto.state
                    if state is _CLOSED:
                        return
                    closing = state is not _OPEN
        finally:
            if self.pending_publish or self.pending_acks:
                self.flush_runs()

    def frame_error(self, exc: AMQPConnectionError) -> None:
        """The byte stream is broken (the reactor stopped reading): say why, then hang up.

        As RabbitMQ's ``fatal_frame_error``: the connection.close is sent (if the state allows
        one, see :meth:`connection_error`) but no close-ok is awaited, since nothing after the
        bad frame can be parsed; the socket is closed after a grace period.
        """
        self._log_error("connection", exc)
        state = self.proto.state
        if state in (pconn.CLOSING, pconn.CLOSED):
            self.proto.hang_up()
            self.release()
            self._hang_up(0)
            return
        with self.confirm_lock:  # no confirm from the journal thread after our close
            if self._answers_with_close(exc):
                self.send_method(0, _spec.Connection.Close(
                    reply_code=exc.reply_code, reply_text=exc.reply_text[:255],
                    class_id=exc.class_id, method_id=exc.method_id))
            self.proto.hang_up()
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
        self.proto.hang_up()
        self.release()

    # ---- errors ----

    def channel_error(self, ch_id: int, e: AMQPChannelError) -> None:
        """Close channel ``ch_id`` with a soft error."""
        self._log_error("channel", e, ch_id)
        ch = self.channels.get(ch_id)
        if ch is not None:
            ch.release()
            self.confirm_dirty.discard(ch.confirms)
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
                self.proto.hang_up()
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
        self.broker.count("channels_opened")
        return ch

    def forget_channel(self, ch_id: int) -> None:
        if ch_id in self.counted_channels:
            self.counted_channels.discard(ch_id)
            usage = self.broker.user_usage
            usage.release(usage.channels, self.username)
        ch = self.channels.pop(ch_id, None)
        if ch is not None:
            ch.fold_stats()
            ch.release()
            self.confirm_dirty.discard(ch.confirms)

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
        if self.vhost is not None:
            self.broker.count("connections_closed")
        usage = self.broker.user_usage
        for _ in range(len(self.counted_channels)):
            usage.release(usage.channels, self.username)
        self.counted_channels.clear()
        if self.counted:
            self.counted = False
            usage.release(usage.connections, self.username)
        self.credit.release()
        for ch in list(self.channels.values()):
            ch.fold_stats()
            ch.release()
        self.confirm_dirty.clear()
        for q in self.exclusive_queues:
            self.auto_delete_queue(q)
        self.exclusive_queues = []
        if self.counted_in is not None:
            self.counted_in.close_connection()
            self.counted_in = None
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
                self.transport.resume_reading("alarm")
                if self.capabilities.get("connection.blocked") is True:
                    self.send_method(0, _spec.Connection.Unblocked())

    def block_publisher(self) -> None:
        """A publish arrived while an alarm is on: as RabbitMQ's reader, the connection
        becomes blocked now (consumers-only connections never are): connection.blocked to a
        client with that capability, and no more reading from its socket until the alarm
        clears."""
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading("alarm")
            if self.capabilities.get("connection.blocked") is True:
                reason = "low on memory" if "memory" in self.blocked else "low on disk"
                self.send_method(0, _spec.Connection.Blocked(reason=reason))


def _position(events: list, event: tuple) -> int:
    """The index of ``event`` (that object: equal events may repeat) in ``events``."""
    for i, e in enumerate(events):
        if e is event:
            return i
    raise ValueError("event not in events")


_CHANNEL_OPEN = _spec.Channel.Open.INDEX
_CLOSED = pconn.CLOSED
_OPEN = pconn.OPEN
# methods whose effects may be applied at the end of a run of them (Session.flush_runs)
_RUN_METHODS = frozenset({_spec.Basic.Publish.INDEX, _spec.Basic.Ack.INDEX})
_CLOSE_METHODS = frozenset({_spec.Channel.Close.INDEX, _spec.Channel.CloseOk.INDEX})


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
