"""Sans-IO state machine of one AMQP connection (the h11 model): frames in, events out.

States and the methods each accepts on channel 0 (anything else is a hard error):

=================  ===========================================  ==========================
state              accepted                                      next state
=================  ===========================================  ==========================
AWAIT_START_OK     connection.start-ok                           AWAIT_TUNE_OK (by handler)
AWAIT_TUNE_OK      connection.tune-ok                            AWAIT_OPEN
AWAIT_OPEN         connection.open, connection.close             OPEN
OPEN               every method; channel frames                  CLOSING / CLOSED
CLOSING            connection.close, connection.close-ok only    CLOSED
CLOSED             nothing (input is dropped)                    -
=================  ===========================================  ==========================

The handler layer (``syncmq.methods``) performs the transitions that need the broker (login,
vhost check) by setting ``state``; this module checks frame order, channel numbers and content
assembly, and turns frames into events ``(channel_id, method, properties, body)``
(``properties``/``body`` are None for methods without content).

Owned by the connection's worker thread; no locks.
"""

from __future__ import annotations

from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from ..wire.frames import encode_method_frame
from .channel import CLOSING as CH_CLOSING
from .channel import ChannelProtocol

AWAIT_START_OK = "await-start-ok"
AWAIT_TUNE_OK = "await-tune-ok"
AWAIT_OPEN = "await-open"
OPEN = "open"
CLOSING = "closing"
CLOSED = "closed"

_CONNECTION_CLASS = _spec.Connection.Start.CLASS_ID
_CHANNEL_CLASS = _spec.Channel.Open.CLASS_ID

# What each state accepts on channel 0, by method index (None: anything).
_ACCEPTS: dict[str, frozenset | None] = {
    AWAIT_START_OK: frozenset({_spec.Connection.StartOk.INDEX}),
    AWAIT_TUNE_OK: frozenset({_spec.Connection.TuneOk.INDEX}),
    AWAIT_OPEN: frozenset({_spec.Connection.Open.INDEX, _spec.Connection.Close.INDEX}),
    OPEN: None,
    CLOSING: frozenset({_spec.Connection.Close.INDEX, _spec.Connection.CloseOk.INDEX}),
    CLOSED: frozenset(),
}

_CHANNEL_OPEN = _spec.Channel.Open.INDEX
_CHANNEL_CLOSE = _spec.Channel.Close.INDEX
_CHANNEL_CLOSE_OK = _spec.Channel.CloseOk.INDEX

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
        """
        events = []
        append = events.append
        channels = self.channels
        state = self.state
        for i, (ftype, ch, payload) in enumerate(frames):
            if state == CLOSED:
                break
            if ftype == FRAME_METHOD:
                method = _spec.decode_method(payload)
                if ch == 0:
                    accepts = _ACCEPTS[state]
                    if method.CLASS_ID != _CONNECTION_CLASS:
                        if state == CLOSING:
                            continue
                        raise AMQPConnectionError(
                            _spec.COMMAND_INVALID,
                            f"COMMAND_INVALID - {method.NAME} is not allowed on channel 0",
                            method.CLASS_ID, method.METHOD_ID,
                        )
                    if accepts is not None and method.INDEX not in accepts:
                        if state == CLOSING:
                            continue
                        raise AMQPConnectionError(
                            _spec.COMMAND_INVALID if state != OPEN else _spec.CHANNEL_ERROR,
                            f"COMMAND_INVALID - unexpected method {method.NAME} "
                            f"in connection state {state}",
                            method.CLASS_ID, method.METHOD_ID,
                        )
                    append((0, method, None, None))
                    if method.INDEX in _STATE_CHANGERS:
                        # the handler must act before the rest of the batch is read
                        return events, frames[i + 1:]
                    continue
                if state != OPEN:
                    if state == CLOSING:
                        continue
                    raise AMQPConnectionError(
                        _spec.CHANNEL_ERROR if state != AWAIT_START_OK else _spec.COMMAND_INVALID,
                        f"CHANNEL_ERROR - method {method.NAME} on channel {ch} before "
                        "connection.open",
                        method.CLASS_ID, method.METHOD_ID,
                    )
                if method.CLASS_ID == _CONNECTION_CLASS:
                    raise AMQPConnectionError(
                        _spec.COMMAND_INVALID,
                        f"COMMAND_INVALID - {method.NAME} is only allowed on channel 0",
                        method.CLASS_ID, method.METHOD_ID,
                    )
                cp = channels.get(ch)
                if cp is None:
                    if method.INDEX != _CHANNEL_OPEN:
                        raise AMQPConnectionError(
                            _spec.CHANNEL_ERROR,
                            f"CHANNEL_ERROR - expected 'channel.open' on channel {ch}, "
                            f"got {method.NAME}",
                            method.CLASS_ID, method.METHOD_ID,
                        )
                    if ch > self.channel_max:
                        raise AMQPConnectionError(
                            _spec.CHANNEL_ERROR,
                            f"CHANNEL_ERROR - channel {ch} is above the negotiated "
                            f"channel_max {self.channel_max}",
                            method.CLASS_ID, method.METHOD_ID,
                        )
                    channels[ch] = ChannelProtocol(ch, self.max_body_size)
                    append((ch, method, None, None))
                    continue
                if cp.state == CH_CLOSING:
                    # after we sent channel.close: only close/close-ok matter
                    if method.INDEX == _CHANNEL_CLOSE_OK or method.INDEX == _CHANNEL_CLOSE:
                        append((ch, method, None, None))
                        # the handler frees the number before the rest is read: a
                        # channel.open for it may follow in this very batch
                        return events, frames[i + 1:]
                    continue
                if method.INDEX == _CHANNEL_OPEN:
                    raise AMQPConnectionError(
                        _spec.CHANNEL_ERROR,
                        f"CHANNEL_ERROR - second 'channel.open' seen on channel {ch}",
                        method.CLASS_ID, method.METHOD_ID,
                    )
                ev = cp.method_frame(method)
                if ev is not None:
                    append((ch, method, None, None))
                    if method.INDEX == _CHANNEL_CLOSE:
                        return events, frames[i + 1:]  # as above
            elif ftype == FRAME_HEADER or ftype == FRAME_BODY:
                if ch == 0 or state not in (OPEN, CLOSING):
                    if state == CLOSING:
                        continue
                    raise AMQPConnectionError(
                        _spec.UNEXPECTED_FRAME if ch else _spec.COMMAND_INVALID,
                        f"UNEXPECTED_FRAME - content frame on channel {ch}",
                    )
                cp = channels.get(ch)
                if cp is None:
                    if state == CLOSING:
                        continue
                    raise AMQPConnectionError(
                        _spec.CHANNEL_ERROR,
                        f"CHANNEL_ERROR - content frame on channel {ch}, which is not open",
                    )
                if cp.state == CH_CLOSING and not cp.expecting_content:
                    continue
                try:
                    if ftype == FRAME_HEADER:
                        ev = cp.header_frame(payload)
                    else:
                        ev = cp.body_frame(payload)
                except AMQPChannelError as err:
                    raise ChannelEventError(events, ch, err, frames[i + 1:]) from None
                if ev is not None and cp.state != CH_CLOSING:
                    append((ch, ev[0], ev[1], ev[2]))
            elif ftype == FRAME_HEARTBEAT:
                if ch != 0:
                    raise AMQPConnectionError(
                        _spec.FRAME_ERROR,
                        f"FRAME_ERROR - heartbeat frame on channel {ch}",
                    )
            else:  # parse_frames rejects unknown types; keep the state machine total anyway
                raise AMQPConnectionError(
                    _spec.FRAME_ERROR, f"FRAME_ERROR - unknown frame type {ftype}"
                )
        return events, []

    def channel_closing(self, channel_id: int) -> None:
        """We sent channel.close: drop the channel's frames until close-ok."""
        cp = self.channels.get(channel_id)
        if cp is not None:
            cp.state = CH_CLOSING

    def channel_closed(self, channel_id: int) -> None:
        """The channel is gone (close-ok sent or received); its number may be reused."""
        self.channels.pop(channel_id, None)

    @staticmethod
    def method_frame(channel_id: int, method: _spec.Method) -> bytes:
        return encode_method_frame(channel_id, method)


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
