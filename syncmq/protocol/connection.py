"""Sans-IO state machine of one AMQP connection (the h11 model): frames in, events out.

States and the methods each accepts on channel 0 (anything else is a hard error, 504
CHANNEL_ERROR "unexpected method in connection state", as RabbitMQ's ``handle_method0``):

=================  ===========================================  ==========================
state              accepted on channel 0                         next state
=================  ===========================================  ==========================
AWAIT_START_OK     connection.start-ok                           AWAIT_TUNE_OK (by handler)
AWAIT_TUNE_OK      connection.tune-ok                            AWAIT_OPEN
AWAIT_OPEN         connection.open, connection.close             OPEN
OPEN               connection.close, connection.update-secret;   CLOSING / CLOSED
                   frames on other channels
CLOSING            connection.close, connection.close-ok only    CLOSED
CLOSED             nothing (input is dropped)                    -
=================  ===========================================  ==========================

Before OPEN any frame on a non-zero channel is 505 UNEXPECTED_FRAME; in CLOSING everything but
channel-0 close/close-ok is dropped. Whether a hard error is answered with connection.close or
with a silent hang-up depends on the state (see ``syncmq.methods.session``); this module only
raises it.

The handler layer (``syncmq.methods``) performs the transitions that need the broker (login,
vhost check) by setting ``state``; this module checks frame order, channel numbers and content
assembly, and turns frames into events ``(channel_id, method, properties, body)``
(``properties``/``body`` are None for methods without content).

Owned by the connection's worker thread; no locks.
"""

from __future__ import annotations

from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from .channel import CLOSING as CH_CLOSING
from .channel import OPEN as CH_OPEN
from .channel import PEER_CLOSED as CH_PEER_CLOSED
from .channel import ChannelProtocol

AWAIT_START_OK = "await-start-ok"
AWAIT_TUNE_OK = "await-tune-ok"
AWAIT_OPEN = "await-open"
OPEN = "open"
CLOSING = "closing"
CLOSED = "closed"

_CONNECTION_CLASS = _spec.Connection.Start.CLASS_ID
_CHANNEL_CLASS = _spec.Channel.Open.CLASS_ID

# What each state accepts on channel 0, by method index. AWAIT_OPEN also takes a close (RabbitMQ
# answers one with 504 "unexpected method in connection state opening"; a close-ok is friendlier
# and ends the connection all the same).
_ACCEPTS: dict[str, frozenset] = {
    AWAIT_START_OK: frozenset({_spec.Connection.StartOk.INDEX}),
    AWAIT_TUNE_OK: frozenset({_spec.Connection.TuneOk.INDEX}),
    AWAIT_OPEN: frozenset({_spec.Connection.Open.INDEX, _spec.Connection.Close.INDEX}),
    OPEN: frozenset({_spec.Connection.Close.INDEX, _spec.Connection.UpdateSecret.INDEX}),
    CLOSING: frozenset({_spec.Connection.Close.INDEX, _spec.Connection.CloseOk.INDEX}),
    CLOSED: frozenset(),
}

# RabbitMQ's names of the states, for reply texts
_RABBIT_STATE = {
    AWAIT_START_OK: "starting", AWAIT_TUNE_OK: "tuning", AWAIT_OPEN: "opening",
    OPEN: "running", CLOSING: "closing", CLOSED: "closed",
}

_CHANNEL_OPEN = _spec.Channel.Open.INDEX
_CHANNEL_CLOSE = _spec.Channel.Close.INDEX
_CHANNEL_CLOSE_OK = _spec.Channel.CloseOk.INDEX

_PUBLISH_IDS = b"\x00\x3c\x00\x28"  # class 60 (basic), method 40 (publish)
_ACK_IDS = b"\x00\x3c\x00\x50"  # class 60 (basic), method 80 (ack)
_ACK_DECODE = _spec.Basic.Ack.decode

FRAME_METHOD = _spec.FRAME_METHOD
FRAME_HEADER = _spec.FRAME_HEADER
FRAME_BODY = _spec.FRAME_BODY
FRAME_HEARTBEAT = _spec.FRAME_HEARTBEAT


class ChannelEventError(Exception):
    """A soft error on a channel, raised out of :meth:`ConnectionProtocol.receive`.

    Carries the events decoded before it, so none is lost: the handler processes ``events``
    first, then closes channel ``channel_id`` with ``error``.
    """

    def __init__(self, events: list, channel_id: int, error: AMQPChannelError, rest: list):
        super().__init__(error)
        self.events = events
        self.channel_id = channel_id
        self.error = error
        self.rest = rest


class ConnectionProtocol:
    """Frame demultiplexer and handshake/close states of one connection."""

    __slots__ = ("state", "channels", "channel_max", "frame_max", "max_body_size")

    def __init__(self, channel_max: int, frame_max: int, max_body_size: int) -> None:
        self.state = AWAIT_START_OK
        self.channels: dict[int, ChannelProtocol] = {}
        self.channel_max = channel_max
        self.frame_max = frame_max
        self.max_body_size = max_body_size

    def receive(self, frames: list) -> tuple[list, list]:
        """Turn a batch of frames into ``(events, rest)``, in order.

        ``rest`` is non-empty when a handshake or close method changed what later frames mean:
        the handler handles ``events``, then calls ``receive(rest)`` again.

        Raises :class:`AMQPConnectionError` for a hard error (the events before it are lost,
        which is harmless: the connection is closing) and :class:`ChannelEventError` for a soft
        error in content assembly (with the events decoded before it and the frames after it).

        Reply codes follow RabbitMQ's ``rabbit_reader`` (``handle_frame``, ``handle_method0``,
        ``create_channel``), ``rabbit_command_assembler`` and ``rabbit_channel``; each check
        names its source.
        """
        events = []
        append = events.append
        channels = self.channels
        state = self.state
        n = len(frames)
        i = 0  # index of the next frame: ``frames[i:]`` is what follows the current one
        while i < n:
            ftype, ch, payload = frames[i]
            i += 1
            if state == CLOSED:
                break
            if state == CLOSING:
                # rabbit_reader handle_frame when ?IS_STOPPING: channel-0 methods are still
                # decoded (close gets close-ok, close-ok ends it), everything else is dropped.
                if ch == 0 and ftype == FRAME_METHOD:
                    method = _spec.decode_method(payload)
                    if method.INDEX in _ACCEPTS[CLOSING]:
                        append((0, method, None, None))
                        return events, frames[i:]
                continue
            if ch == 0:
                if ftype == FRAME_METHOD:
                    method = _spec.decode_method(payload)
                    if method.INDEX not in _ACCEPTS[state]:
                        # rabbit_reader handle_method0 catch-all: channel_error (504), also
                        # for a non-connection method on channel 0.
                        raise AMQPConnectionError(
                            _spec.CHANNEL_ERROR,
                            f"CHANNEL_ERROR - unexpected method {method.NAME} in connection "
                            f"state {_RABBIT_STATE[state]}",
                            method.CLASS_ID, method.METHOD_ID,
                        )
                    append((0, method, None, None))
                    if method.INDEX in _STATE_CHANGERS:
                        # the handler must act before the rest of the batch is read
                        return events, frames[i:]
                    continue
                if ftype == FRAME_HEARTBEAT:
                    continue
                # rabbit_reader handle_frame(Type, 0, ...): content on channel 0 is
                # unexpected_frame (505).
                raise AMQPConnectionError(
                    _spec.UNEXPECTED_FRAME,
                    f"UNEXPECTED_FRAME - content frame of type {ftype} on channel 0",
                )
            if state != OPEN:
                # rabbit_reader handle_frame catch-all before the connection runs:
                # unexpected_frame (505) for any frame on a non-zero channel.
                raise AMQPConnectionError(
                    _spec.UNEXPECTED_FRAME,
                    f"UNEXPECTED_FRAME - frame of type {ftype} on channel {ch} before "
                    "connection.open-ok",
                )
            if ftype == FRAME_HEARTBEAT:
                # rabbit_reader handle_frame: heartbeat on a non-zero channel is
                # unexpected_frame (505), not a frame_error.
                raise AMQPConnectionError(
                    _spec.UNEXPECTED_FRAME,
                    f"UNEXPECTED_FRAME - heartbeat frame on channel {ch}",
                )
            cp = channels.get(ch)
            if ftype == FRAME_METHOD:
                if cp is not None and cp.state == CH_OPEN and not cp.expecting_content:
                    # Fast paths for an open channel between contents, where the general path
                    # below would only decode the method and append it.
                    ids = payload[:4]
                    if ids == _PUBLISH_IDS:
                        if i < n and frames[i][0] == FRAME_HEADER and frames[i][1] == ch:
                            # method + header (+ body) in one step; None when anything is
                            # unusual, and the general path raises what applies
                            ev = cp.publish_run(payload, frames[i][2],
                                                frames[i + 1] if i + 1 < n else None)
                            if ev is not None:
                                append((ch, ev[0], ev[1], ev[2]))
                                i += ev[3]
                                continue
                    elif ids == _ACK_IDS:
                        append((ch, _ACK_DECODE(payload, 4), None, None))
                        continue
                method = _spec.decode_method(payload)
                if cp is None:
                    if method.INDEX != _CHANNEL_OPEN:
                        # rabbit_channel handle_method in state starting: channel_error
                        raise AMQPConnectionError(
                            _spec.CHANNEL_ERROR,
                            f"CHANNEL_ERROR - expected 'channel.open' on channel {ch}, "
                            f"got {method.NAME}",
                            method.CLASS_ID, method.METHOD_ID,
                        )
                    if self.channel_max and len(channels) >= self.channel_max:
                        # rabbit_reader create_channel: RabbitMQ limits the number of open
                        # channels (not the channel number) with not_allowed (530).
                        raise AMQPConnectionError(
                            _spec.NOT_ALLOWED,
                            f"NOT_ALLOWED - number of channels opened ({len(channels)}) has "
                            f"reached the negotiated channel_max ({self.channel_max})",
                            method.CLASS_ID, method.METHOD_ID,
                        )
                    channels[ch] = ChannelProtocol(ch, self.max_body_size)
                    append((ch, method, None, None))
                    continue
                if cp.state == CH_CLOSING:
                    # after we sent channel.close: only close/close-ok matter (rabbit_channel
                    # in state closing ignores the rest)
                    if method.INDEX == _CHANNEL_CLOSE_OK:
                        # the number is free from here on, also for the rest of this batch
                        del channels[ch]
                        append((ch, method, None, None))
                    elif method.INDEX == _CHANNEL_CLOSE:
                        append((ch, method, None, None))  # crossing closes: keep waiting
                    continue
                if cp.state == CH_PEER_CLOSED:
                    # the client closed it; frames until our close-ok is sent are dropped, as
                    # by a rabbit_channel in state closing
                    continue
                if method.INDEX == _CHANNEL_CLOSE and not cp.expecting_content:
                    # The handler decides: close-ok and forget, or, if an earlier event of
                    # this batch made us send channel.close first (crossing closes), close-ok
                    # and keep waiting for the client's close-ok.
                    cp.state = CH_PEER_CLOSED
                    append((ch, method, None, None))
                    continue
                if method.INDEX == _CHANNEL_CLOSE_OK:
                    # close-ok without our close: rabbit_channel's catch-all, command_invalid
                    raise AMQPConnectionError(
                        _spec.COMMAND_INVALID,
                        f"COMMAND_INVALID - unexpected channel.close-ok on channel {ch}",
                        method.CLASS_ID, method.METHOD_ID,
                    )
                # content assembly first (505 for a method in the middle of content), as in
                # rabbit_reader process_frame -> rabbit_command_assembler -> rabbit_channel
                ev = cp.method_frame(method)
                if method.INDEX == _CHANNEL_OPEN:
                    # rabbit_channel: channel_error "second 'channel.open' seen" (504)
                    raise AMQPConnectionError(
                        _spec.CHANNEL_ERROR,
                        "CHANNEL_ERROR - second 'channel.open' seen",
                        method.CLASS_ID, method.METHOD_ID,
                    )
                if method.CLASS_ID == _CONNECTION_CLASS:
                    # rabbit_channel handle_method catch-all: command_invalid (503)
                    raise AMQPConnectionError(
                        _spec.COMMAND_INVALID,
                        f"COMMAND_INVALID - unimplemented method {method.NAME} on channel {ch}"
                        " (connection methods belong on channel 0)",
                        method.CLASS_ID, method.METHOD_ID,
                    )
                if ev is not None:
                    append((ch, method, None, None))
            else:  # FRAME_HEADER or FRAME_BODY (parse_frames rejects any other type)
                if cp is None:
                    # RabbitMQ creates the channel process, whose command assembler (state
                    # 'method') rejects content: unexpected_frame (505).
                    raise AMQPConnectionError(
                        _spec.UNEXPECTED_FRAME,
                        f"UNEXPECTED_FRAME - expected method frame, got non method frame "
                        f"instead (channel {ch} is not open)",
                    )
                if cp.state != CH_OPEN and not cp.expecting_content:
                    continue
                try:
                    if ftype == FRAME_HEADER:
                        ev = cp.header_frame(payload)
                    elif ftype == FRAME_BODY:
                        ev = cp.body_frame(payload)
                    else:  # keep the state machine total
                        raise AMQPConnectionError(
                            _spec.FRAME_ERROR, f"FRAME_ERROR - unknown frame type {ftype}"
                        )
                except AMQPChannelError as err:
                    raise ChannelEventError(events, ch, err, frames[i:]) from None
                if ev is not None and cp.state != CH_CLOSING:
                    append((ch, ev[0], ev[1], ev[2]))
        return events, []

    def channel_closing(self, channel_id: int) -> None:
        """We sent channel.close: drop the channel's frames until close-ok."""
        cp = self.channels.get(channel_id)
        if cp is not None:
            cp.state = CH_CLOSING

    def channel_is_closing(self, channel_id: int) -> bool:
        """True while we wait for the client's channel.close-ok."""
        cp = self.channels.get(channel_id)
        return cp is not None and cp.state == CH_CLOSING

    def channel_closed(self, channel_id: int) -> None:
        """The channel is gone (close-ok sent or received); its number may be reused.

        A channel that is open again (a channel.open read after the close-ok, in the same
        batch) is left alone."""
        cp = self.channels.get(channel_id)
        if cp is not None and cp.state != CH_OPEN:
            del self.channels[channel_id]


# Connection methods after which the handler must run before the rest of the batch is read,
# because they change what the following frames mean (state, frame_max, channel_max).
_STATE_CHANGERS = frozenset(
    {
        _spec.Connection.StartOk.INDEX,
        _spec.Connection.TuneOk.INDEX,
        _spec.Connection.Open.INDEX,
        _spec.Connection.Close.INDEX,
        _spec.Connection.CloseOk.INDEX,
    }
)
