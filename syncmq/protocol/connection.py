"""Sans-IO protocol of one AMQP connection, both ways (the h11 model).

- In: :meth:`ConnectionProtocol.receive` turns a batch of frames into events
  ``(channel_id, method, properties, body)`` (``properties``/``body`` None for methods without
  content) and returns the first error with the events before it, never raising for the peer's
  input.
- Out: :meth:`ConnectionProtocol.send` encodes a method the broker sends (connection.start,
  tune, open-ok, close, close-ok, blocked, channel.open-ok, close, close-ok, every other reply)
  and :meth:`~ConnectionProtocol.send_content` a method with content; ``HEARTBEAT`` is the
  heartbeat frame.
- State: every transition is a cell of the tables in :mod:`syncmq.protocol.state`, applied
  here only, when a frame is received, a method is sent, or the handler layer reports what the
  wire cannot see (:meth:`~ConnectionProtocol.tuned`, :meth:`~ConnectionProtocol.peer_closed`,
  :meth:`~ConnectionProtocol.hang_up`). ``state`` is read-only outside this package.

``receive`` is a fast pre-pass over the common frames of an open connection (basic.publish
with its header and single body frame, basic.ack, on an open channel between contents) that
stops at the first frame it does not recognise; that frame goes through the general path
(every check, one frame at a time), then the pre-pass resumes. The pre-pass only ever does
what the general path would do (``tests/test_hot_path.py`` compares both on every case).

Reply codes follow RabbitMQ's ``rabbit_reader`` (``handle_frame``, ``handle_method0``,
``create_channel``), ``rabbit_command_assembler`` and ``rabbit_channel``; each check names its
source. Whether a hard error is answered with connection.close or with a silent hang-up depends
on the state (see ``syncmq.methods.session``); this module only reports it.

Owned by the connection's worker thread: ``receive`` and the handler events run there.
``send`` also runs on other threads for methods without a state change (a basic.cancel when
another connection deletes the queue), which read ``state`` only. Publisher confirms, also
written from the journal thread, are ``channel.encode_confirm``'s frames; the tracker reads
``state`` under the session's ``confirm_lock`` (the connection leaves OPEN under it).
"""

from __future__ import annotations

import struct
from operator import attrgetter
from typing import NamedTuple

from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from ..wire.frames import HEARTBEAT_FRAME, encode_delivery, encode_method_frame
from . import state as st
from .channel import ChannelProtocol
from .state import ChState, ConnState, Event, ProtocolStateError

__all__ = [
    "ConnectionProtocol", "ChannelError", "ConnState", "ChState", "ProtocolStateError",
    "HEARTBEAT", "AWAIT_START_OK", "AWAIT_TUNE_OK", "AWAIT_OPEN", "OPEN", "CLOSING", "CLOSED",
]

AWAIT_START_OK = ConnState.AWAIT_START_OK
AWAIT_TUNE_OK = ConnState.AWAIT_TUNE_OK
AWAIT_OPEN = ConnState.AWAIT_OPEN
OPEN = ConnState.OPEN
CLOSING = ConnState.CLOSING
CLOSED = ConnState.CLOSED
CH_OPEN = ChState.OPEN
CH_CLOSING = ChState.CLOSING
CH_PEER_CLOSED = ChState.PEER_CLOSED

HEARTBEAT = HEARTBEAT_FRAME  # the heartbeat frame, sent by the reactor when output is idle

_CONNECTION_CLASS = _spec.Connection.Start.CLASS_ID
_CHANNEL_OPEN = _spec.Channel.Open.INDEX
_CHANNEL_CLOSE = _spec.Channel.Close.INDEX
_CHANNEL_CLOSE_OK = _spec.Channel.CloseOk.INDEX

_PUBLISH_IDS = b"\x00\x3c\x00\x28"  # class 60 (basic), method 40 (publish)
_ACK_IDS = b"\x00\x3c\x00\x50"  # class 60 (basic), method 80 (ack)
_ACK_DECODE = _spec.Basic.Ack.decode
_ACK = _spec.Basic.Ack
_NEW = object.__new__
_QB_FROM = struct.Struct(">QB").unpack_from
_PUBLISH_DECODE = _spec.Basic.Publish.decode
_HHQ_FROM = struct.Struct(">HHQ").unpack_from  # content header: class-id, weight, body-size
_DECODE = _spec.decode_method
_SENDS_WITH_EVENT = st.SENDS_WITH_EVENT
_ACCEPTS = st.ACCEPTS

FRAME_METHOD = _spec.FRAME_METHOD
FRAME_HEADER = _spec.FRAME_HEADER
FRAME_BODY = _spec.FRAME_BODY
FRAME_HEARTBEAT = _spec.FRAME_HEARTBEAT

# Connection methods after which the handler must run before the rest of the batch is read,
# because they change what the following frames mean (state, frame_max, channel_max).
_STATE_CHANGERS = frozenset(st.RECV_EVENT)


class ChannelError(NamedTuple):
    """A soft error on channel ``channel_id``, as returned by :meth:`ConnectionProtocol.receive`:
    the handler handles the events before it, closes the channel with ``error``, then goes on
    with the frames after it."""

    channel_id: int
    error: AMQPChannelError


class _Stop(Exception):
    """Internal: the frame just read changed what later frames mean (``receive`` returns)."""


class _Closed(Exception):
    """Internal: the connection is closed; the batch is dropped."""


class ConnectionProtocol:
    """Frame demultiplexer, method encoder and the states of one connection and its channels."""

    __slots__ = ("_state", "channels", "channel_max", "frame_max", "max_body_size", "fast")

    def __init__(self, channel_max: int, frame_max: int, max_body_size: int,
                 fast: bool = True) -> None:
        self._state = AWAIT_START_OK
        self.channels: dict[int, ChannelProtocol] = {}
        self.channel_max = channel_max
        self.frame_max = frame_max
        self.max_body_size = max_body_size
        self.fast = fast  # the receive pre-pass (off only to compare it with the general path)

    # The connection's state (read-only: it changes by the table in ``state.py``). A getter
    # in C: the session reads it a few times per batch, and a Python getter is a frame each.
    state = property(attrgetter("_state"),
                     doc="The connection's state (read-only: it changes by the table in "
                         "``state.py``).")

    def _fire(self, event: Event) -> None:
        self._state = st.next_state(self._state, event)

    # ---- events the wire cannot see (the handler layer decided) ----

    def tuned(self, frame_max: int, channel_max: int) -> None:
        """The client's tune-ok values were accepted: they apply from the next frame on."""
        self._fire(Event.TUNED)
        self.frame_max = frame_max
        self.channel_max = channel_max

    def peer_closed(self) -> None:
        """The client's connection.close (or close-ok to ours) has been handled."""
        self._fire(Event.PEER_CLOSED)

    def hang_up(self) -> None:
        """The connection ends without (more of) a closing handshake: a silent close, a frame
        error, the peer gone. Legal in every state."""
        self._fire(Event.HANG_UP)

    # ---- out ----

    def send(self, channel_id: int, method: _spec.Method) -> bytes:
        """The frame of ``method`` on ``channel_id``, after the transition that sending it
        makes (connection.tune, open-ok, close, ...; channel.close, close-ok).
        :class:`ProtocolStateError` if the state does not allow sending it."""
        if method.INDEX in _SENDS_WITH_EVENT:
            self._sent(channel_id, method.INDEX)
        return encode_method_frame(channel_id, method)

    def send_content(self, channel_id: int, method: _spec.Method, props: bytes,
                     body: bytes) -> list:
        """The frames of a content-bearing ``method`` (basic.return, basic.get-ok), split at
        the negotiated frame_max."""
        return encode_delivery(channel_id, method.encode(), props, body, self.frame_max)

    def _sent(self, channel_id: int, index: int) -> None:
        if channel_id == 0:
            event = st.SEND_EVENT.get(index)
            if event is None:
                raise ProtocolStateError(f"channel.* method {index} sent on channel 0")
            self._fire(event)
            return
        event = st.CH_SEND_EVENT.get(index)
        if event is None:
            raise ProtocolStateError(f"connection.* method {index} sent on channel {channel_id}")
        cp = self.channels.get(channel_id)
        nxt = st.next_channel_state(None if cp is None else cp.state, event)
        if nxt is None:
            self.channels.pop(channel_id, None)
        else:
            cp.state = nxt

    def channel_is_closing(self, channel_id: int) -> bool:
        """True while we wait for the client's channel.close-ok."""
        cp = self.channels.get(channel_id)
        return cp is not None and cp.state is CH_CLOSING

    # ---- in ----

    def receive(self, frames: list) -> tuple[list, list, object]:
        """Turn a batch of frames into ``(events, rest, error)``, in order.

        ``rest`` is non-empty when a handshake or close method changed what later frames mean
        (the handler handles ``events``, then calls ``receive(rest)``), or after a soft error
        (the frames after the one that failed). ``error`` is None, a :class:`ChannelError`
        (soft: close that channel, then go on with ``rest``) or an
        :class:`AMQPConnectionError` (hard: the connection closes; ``rest`` is empty). The
        events before an error are returned either way.
        """
        events: list = []
        n = len(frames)
        i = 0  # index of the next frame
        try:
            while i < n:
                if self.fast and self._state is OPEN:
                    i = self._fast(frames, i, n, events)
                    if i >= n:
                        break
                i += 1
                self._general(frames, i - 1, events)
        except _Stop:
            return events, frames[i:], None
        except _Closed:
            return events, [], None
        except AMQPChannelError as err:
            return events, frames[i:], ChannelError(frames[i - 1][1], err)
        except AMQPConnectionError as err:
            return events, [], err
        return events, [], None

    def _fast(self, frames: list, i: int, n: int, events: list) -> int:
        """The pre-pass: from ``frames[i]``, take the publishes (method + header + one body)
        and acks on open channels between contents; return the index of the first frame left
        for the general path. Takes a frame only where the general path would give the same
        event.

        A publish is taken in the common case: the header frame next on the channel, class 60,
        14+ octets, weight 0, a body within ``max_body_size`` in exactly one body frame (or
        empty). Else the frames are left to the general path, which raises the errors it
        always did (the method is decoded only once the content qualifies). The decoded
        method of the channel's previous fast publish is reused for the same payload bytes
        (one exchange and routing key): handlers never mutate methods.

        Nothing here changes a channel's state: a channel is checked once per run of its
        frames (one call per batch, no call or tuple per publish).
        """
        channels = self.channels
        append = events.append
        ok = -1  # the channel last checked open and between contents (-1: none; 0 never is)
        # ``cp`` (channel ``ok``'s state), ``last_header`` (the last header frame taken on
        # channel ``ok``) and its ``size`` and ``props`` are set at the first frame: its
        # channel is never ``ok`` (-1), so no initial value is needed (none is loaded)
        while i < n:
            ftype, ch, payload = frames[i]
            if ftype != FRAME_METHOD:
                return i
            if ch != ok:
                if not ch:
                    return i
                cp = channels.get(ch)
                if cp is None or cp.state is not CH_OPEN or cp._expect:
                    return i
                ok = ch
                last_header = None
            ids = payload[:4]
            if ids == _PUBLISH_IDS:
                j = i + 1
                if j >= n:
                    return i
                htype, hch, header = frames[j]
                if htype != FRAME_HEADER or hch != ch:
                    return i
                if header != last_header:  # (else the same size and props as the last one)
                    if len(header) < 14:
                        return i
                    class_id, weight, size = _HHQ_FROM(header)
                    if class_id != 60 or weight or size > cp.max_body_size:
                        return i
                    last_header = header
                    props = header[12:]
                if size:
                    j += 1
                    if j >= n:
                        return i
                    btype, bch, body = frames[j]
                    if btype != FRAME_BODY or bch != ch or len(body) != size:
                        return i
                else:
                    body = b""
                if payload == cp._last_publish:
                    method = cp._last_method
                else:
                    method = _PUBLISH_DECODE(payload, 4)
                    cp._last_publish = payload
                    cp._last_method = method
                append((ch, method, props, body))
                i = j + 1
            elif ids == _ACK_IDS:
                if len(payload) == 13:  # (Basic.Ack.decode's work, without its checks' calls)
                    ack = _NEW(_ACK)
                    ack.delivery_tag, bits = _QB_FROM(payload, 4)
                    ack.multiple = (bits & 1) != 0
                else:  # the decoder's error
                    ack = _ACK_DECODE(payload, 4)
                append((ch, ack, None, None))
                i += 1
            else:
                return i
        return i

    def _general(self, frames: list, i: int, events: list) -> None:
        """The general path for ``frames[i]``: every check, in RabbitMQ's order. Appends the
        event it completes (if any); raises the frame's error, or :class:`_Stop` after a
        channel-0 method that changes what later frames mean."""
        ftype, ch, payload = frames[i]
        state = self._state
        if state is CLOSED:
            raise _Closed
        if state is CLOSING:
            # rabbit_reader handle_frame when ?IS_STOPPING: channel-0 methods are still
            # decoded (close gets close-ok, close-ok ends it), everything else is dropped.
            if ch == 0 and ftype == FRAME_METHOD:
                method = _DECODE(payload)
                if method.INDEX in _ACCEPTS[CLOSING]:
                    events.append((0, method, None, None))
                    raise _Stop
            return
        if ch == 0:
            self._channel0(ftype, payload, events)
            return
        if state is not OPEN:
            # rabbit_reader handle_frame catch-all before the connection runs:
            # unexpected_frame (505) for any frame on a non-zero channel.
            raise AMQPConnectionError(
                _spec.UNEXPECTED_FRAME,
                f"UNEXPECTED_FRAME - frame of type {ftype} on channel {ch} before "
                "connection.open-ok",
            )
        if ftype == FRAME_METHOD:
            self._method(ch, _DECODE(payload), events)
        elif ftype == FRAME_HEARTBEAT:
            # rabbit_reader handle_frame: heartbeat on a non-zero channel is unexpected_frame
            # (505), not a frame_error.
            raise AMQPConnectionError(
                _spec.UNEXPECTED_FRAME, f"UNEXPECTED_FRAME - heartbeat frame on channel {ch}")
        else:  # FRAME_HEADER or FRAME_BODY (parse_frames rejects any other type)
            self._content(ftype, ch, payload, events)

    def _channel0(self, ftype: int, payload: bytes, events: list) -> None:
        if ftype == FRAME_METHOD:
            method = _DECODE(payload)
            if method.INDEX not in _ACCEPTS[self._state]:
                # rabbit_reader handle_method0 catch-all: channel_error (504), also for a
                # non-connection method on channel 0.
                raise AMQPConnectionError(
                    _spec.CHANNEL_ERROR,
                    f"CHANNEL_ERROR - unexpected method {method.NAME} in connection state "
                    f"{st.RABBIT_NAME[self._state]}",
                    method.CLASS_ID, method.METHOD_ID,
                )
            events.append((0, method, None, None))
            if method.INDEX in _STATE_CHANGERS:
                raise _Stop  # the handler must act before the rest of the batch is read
            return
        if ftype == FRAME_HEARTBEAT:
            return
        # rabbit_reader handle_frame(Type, 0, ...): content on channel 0 is unexpected_frame
        raise AMQPConnectionError(
            _spec.UNEXPECTED_FRAME, f"UNEXPECTED_FRAME - content frame of type {ftype} on channel 0")

    def _method(self, ch: int, method: _spec.Method, events: list) -> None:
        """A method frame on channel ``ch`` of an open connection."""
        cp = self.channels.get(ch)
        if cp is None:
            self._open_channel(ch, method)
            events.append((ch, method, None, None))
            return
        state = cp.state
        if state is CH_CLOSING:
            # after we sent channel.close: only close/close-ok matter (rabbit_channel in
            # state closing ignores the rest)
            if method.INDEX == _CHANNEL_CLOSE_OK:
                # the number is free from here on, also for the rest of this batch
                if st.next_channel_state(state, Event.CH_RECV_CLOSE_OK) is None:
                    del self.channels[ch]
                events.append((ch, method, None, None))
            elif method.INDEX == _CHANNEL_CLOSE:
                cp.state = st.next_channel_state(state, Event.CH_RECV_CLOSE)
                events.append((ch, method, None, None))  # crossing closes: keep waiting
            elif method.INDEX == _CHANNEL_OPEN:
                _second_open(method)  # the number is not free before the close-ok
            return
        if state is CH_PEER_CLOSED:
            # the client closed it; frames until our close-ok is sent are dropped, as by a
            # rabbit_channel in state closing, but a channel.open pipelined behind the close
            # (the number is free only once the client has our close-ok): rabbit_channel
            # checks channel.open before its state, a 504 (it was dropped: no answer at all)
            if method.INDEX == _CHANNEL_OPEN:
                _second_open(method)
            return
        if method.INDEX == _CHANNEL_CLOSE and not cp._expect:
            # The handler decides: close-ok and forget, or, if an earlier event of this batch
            # made us send channel.close first (crossing closes), close-ok and keep waiting
            # for the client's close-ok.
            cp.state = st.next_channel_state(state, Event.CH_RECV_CLOSE)
            events.append((ch, method, None, None))
            return
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
            _second_open(method)
        if method.CLASS_ID == _CONNECTION_CLASS:
            # rabbit_channel handle_method catch-all: command_invalid (503)
            raise AMQPConnectionError(
                _spec.COMMAND_INVALID,
                f"COMMAND_INVALID - unimplemented method {method.NAME} on channel {ch}"
                " (connection methods belong on channel 0)",
                method.CLASS_ID, method.METHOD_ID,
            )
        if ev is not None:
            events.append((ch, method, None, None))

    def _open_channel(self, ch: int, method: _spec.Method) -> None:
        """A method on an unknown channel: it must be channel.open, within channel_max."""
        if method.INDEX != _CHANNEL_OPEN:
            # rabbit_channel handle_method in state starting: channel_error
            raise AMQPConnectionError(
                _spec.CHANNEL_ERROR,
                f"CHANNEL_ERROR - expected 'channel.open' on channel {ch}, got {method.NAME}",
                method.CLASS_ID, method.METHOD_ID,
            )
        channels = self.channels
        if self.channel_max and len(channels) >= self.channel_max:
            # rabbit_reader create_channel: RabbitMQ limits the number of open channels (not
            # the channel number) with not_allowed (530).
            raise AMQPConnectionError(
                _spec.NOT_ALLOWED,
                f"NOT_ALLOWED - number of channels opened ({len(channels)}) has reached the "
                f"negotiated channel_max ({self.channel_max})",
                method.CLASS_ID, method.METHOD_ID,
            )
        channels[ch] = ChannelProtocol(ch, self.max_body_size,
                                       st.next_channel_state(None, Event.CH_RECV_OPEN))

    def _content(self, ftype: int, ch: int, payload: bytes, events: list) -> None:
        """A content header or body frame on channel ``ch`` of an open connection."""
        cp = self.channels.get(ch)
        if cp is None:
            # RabbitMQ creates the channel process, whose command assembler (state 'method')
            # rejects content: unexpected_frame (505).
            raise AMQPConnectionError(
                _spec.UNEXPECTED_FRAME,
                f"UNEXPECTED_FRAME - expected method frame, got non method frame instead "
                f"(channel {ch} is not open)",
            )
        if cp.state is not CH_OPEN and not cp._expect:
            return
        if ftype == FRAME_HEADER:
            ev = cp.header_frame(payload)  # AMQPChannelError: a soft error (oversize)
        elif ftype == FRAME_BODY:
            ev = cp.body_frame(payload)
        else:  # keep the state machine total
            raise AMQPConnectionError(_spec.FRAME_ERROR, f"FRAME_ERROR - unknown frame type {ftype}")
        if ev is not None and cp.state is not CH_CLOSING:
            events.append((ch, ev[0], ev[1], ev[2]))


def _second_open(method: _spec.Method) -> None:
    """channel.open on a number that is not free (open, or closing either way until the
    close-ok): rabbit_channel's channel_error "second 'channel.open' seen" (504), checked in
    every state but starting, before the closing state's catch-all drops the method."""
    raise AMQPConnectionError(
        _spec.CHANNEL_ERROR, "CHANNEL_ERROR - second 'channel.open' seen",
        method.CLASS_ID, method.METHOD_ID,
    )
