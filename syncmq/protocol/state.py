"""The protocol's state machines as data: every state, every event and every transition of a
connection and of a channel, in one table each (the h11 ``_state.py`` model).

Nothing outside ``syncmq.protocol`` changes a state: :class:`~.connection.ConnectionProtocol`
applies the table when it receives a frame, when it encodes a method the broker sends
(``send``) and when the handler layer reports a decision the wire cannot see (``tuned``: the
tune-ok values were accepted; ``peer_closed``: the client's close or close-ok was handled;
``hang_up``: the connection ends without a handshake).

Connection (``CONNECTION``; a missing cell is illegal)::

    state           event                      next            who fires it
    --------------  -------------------------  --------------  ------------------------------
    AWAIT_START_OK  send connection.start      AWAIT_START_OK  Session.connection_made
                    recv connection.start-ok   AWAIT_START_OK  receive (the handler logs in)
                    send connection.tune       AWAIT_TUNE_OK   the start-ok handler (login ok)
    AWAIT_TUNE_OK   recv connection.tune-ok    AWAIT_TUNE_OK   receive
                    tuned                      AWAIT_OPEN      the tune-ok handler (values ok)
    AWAIT_OPEN      recv connection.open       AWAIT_OPEN      receive
                    send connection.open-ok    OPEN            the open handler (vhost ok)
    OPEN            send connection.blocked    OPEN            a publish during an alarm
                    send connection.unblocked  OPEN            the alarm cleared
                    recv connection.update-secret OPEN         receive (the handler checks it)
                    send connection.update-secret-ok OPEN      the update-secret handler
    AWAIT_OPEN,     recv connection.close      (same)          receive
    OPEN, CLOSING
    AWAIT_OPEN,     peer_closed                CLOSED          the close handler
    OPEN, CLOSING
    CLOSING         recv connection.close-ok   CLOSING         receive
                    peer_closed                CLOSED          the close-ok handler
    CLOSED          send connection.close-ok   CLOSED          the close handler
    any but CLOSED  send connection.close      CLOSING         a hard error, shutdown
    any             hang_up                    CLOSED          silent close, frame error, EOF

An illegal *received* method is the client's fault: RabbitMQ's ``handle_method0`` answers 504
CHANNEL_ERROR "unexpected method in connection state <its name>" (``RABBIT_NAME``). An illegal
*sent* or handler event is a bug in the broker: :class:`ProtocolStateError`.

Frames (checked by ``receive`` before the table, as ``rabbit_reader handle_frame``): a content
frame on channel 0 is 505 UNEXPECTED_FRAME; any frame on another channel before OPEN is 505;
a heartbeat on another channel is 505; in CLOSING everything but channel-0 close/close-ok is
dropped, in CLOSED everything is.

Channel (``CHANNEL``; ``None`` is "no channel with that number": ``receive`` creates one on
channel.open and forgets it when the cell's next state is ``None``)::

    state        event                 next         note
    -----------  --------------------  -----------  ---------------------------------------
    None         recv channel.open     OPEN         530 when channel_max channels are open
                 send channel.close(-ok) None       a forgotten number stays forgotten
    OPEN         recv channel.close    PEER_CLOSED  (between contents)
                 send channel.close    CLOSING      a soft error
    PEER_CLOSED  send channel.close    CLOSING      an earlier event of the batch failed
                 send channel.close-ok None         the number is free
    CLOSING      recv channel.close    CLOSING      crossing closes: close-ok, keep waiting
                 send channel.close    CLOSING
                 send channel.close-ok CLOSING      (answering a crossing close)
                 recv channel.close-ok None         the number is free

Illegal received cells: channel.open on a channel not forgotten (open, peer-closed or closing:
the number is free only after the close-ok) 504 "second 'channel.open' seen";
channel.close-ok on an open channel 503 COMMAND_INVALID; any other method on an unknown channel
504 "expected 'channel.open'". In PEER_CLOSED every received frame but channel.open (the 504
above) is dropped; in CLOSING every one but close/close-ok and channel.open.

Owned by the connection's worker thread, like the protocol object (see its docstring).
"""

from __future__ import annotations

import enum

from ..wire import _spec

C = _spec.Connection
Ch = _spec.Channel


class ConnState(enum.StrEnum):
    """A connection's state. A ``str`` (its value), so it compares and serialises as the
    plain strings it replaced; ``rabbit_name`` is RabbitMQ's name for it."""

    AWAIT_START_OK = "await-start-ok"
    AWAIT_TUNE_OK = "await-tune-ok"
    AWAIT_OPEN = "await-open"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"

    @property
    def rabbit_name(self) -> str:
        return RABBIT_NAME[self]


class ChState(enum.StrEnum):
    """A channel's state as the wire sees it."""

    OPEN = "open"
    CLOSING = "closing"  # we sent channel.close and wait for close-ok
    PEER_CLOSED = "peer-closed"  # the client sent channel.close; our close-ok is pending


class Event(enum.StrEnum):
    """What may change a state: a method received or sent, or a handler's decision."""

    RECV_START_OK = "recv connection.start-ok"
    RECV_TUNE_OK = "recv connection.tune-ok"
    RECV_OPEN = "recv connection.open"
    RECV_CLOSE = "recv connection.close"
    RECV_CLOSE_OK = "recv connection.close-ok"
    RECV_UPDATE_SECRET = "recv connection.update-secret"
    SEND_START = "send connection.start"
    SEND_TUNE = "send connection.tune"
    SEND_OPEN_OK = "send connection.open-ok"
    SEND_CLOSE = "send connection.close"
    SEND_CLOSE_OK = "send connection.close-ok"
    SEND_BLOCKED = "send connection.blocked"
    SEND_UNBLOCKED = "send connection.unblocked"
    SEND_UPDATE_SECRET_OK = "send connection.update-secret-ok"
    TUNED = "tuned"
    PEER_CLOSED = "peer_closed"
    HANG_UP = "hang_up"
    # channel events
    CH_RECV_OPEN = "recv channel.open"
    CH_RECV_CLOSE = "recv channel.close"
    CH_RECV_CLOSE_OK = "recv channel.close-ok"
    CH_SEND_CLOSE = "send channel.close"
    CH_SEND_CLOSE_OK = "send channel.close-ok"


class ProtocolStateError(RuntimeError):
    """The broker tried an event its protocol state does not allow (a bug, never the peer's
    fault: the peer's illegal methods are protocol errors with RabbitMQ's reply codes)."""


S = ConnState
E = Event

CONNECTION: dict[ConnState, dict[Event, ConnState]] = {
    S.AWAIT_START_OK: {
        E.SEND_START: S.AWAIT_START_OK, E.RECV_START_OK: S.AWAIT_START_OK,
        E.SEND_TUNE: S.AWAIT_TUNE_OK, E.SEND_CLOSE: S.CLOSING, E.HANG_UP: S.CLOSED,
    },
    S.AWAIT_TUNE_OK: {
        E.RECV_TUNE_OK: S.AWAIT_TUNE_OK, E.TUNED: S.AWAIT_OPEN, E.SEND_CLOSE: S.CLOSING,
        E.HANG_UP: S.CLOSED,
    },
    # AWAIT_OPEN also takes a close (RabbitMQ answers one with 504 "unexpected method in
    # connection state opening"; a close-ok is friendlier and ends the connection all the same)
    S.AWAIT_OPEN: {
        E.RECV_OPEN: S.AWAIT_OPEN, E.SEND_OPEN_OK: S.OPEN, E.RECV_CLOSE: S.AWAIT_OPEN,
        E.PEER_CLOSED: S.CLOSED, E.SEND_CLOSE: S.CLOSING, E.HANG_UP: S.CLOSED,
    },
    S.OPEN: {
        E.RECV_CLOSE: S.OPEN, E.PEER_CLOSED: S.CLOSED, E.SEND_CLOSE: S.CLOSING,
        E.SEND_BLOCKED: S.OPEN, E.SEND_UNBLOCKED: S.OPEN, E.HANG_UP: S.CLOSED,
        E.RECV_UPDATE_SECRET: S.OPEN, E.SEND_UPDATE_SECRET_OK: S.OPEN,
    },
    S.CLOSING: {
        E.RECV_CLOSE: S.CLOSING, E.RECV_CLOSE_OK: S.CLOSING, E.PEER_CLOSED: S.CLOSED,
        E.HANG_UP: S.CLOSED,
    },
    S.CLOSED: {E.SEND_CLOSE_OK: S.CLOSED, E.HANG_UP: S.CLOSED},
}

# The channel-0 methods each state accepts from the client (derived from the table)
RECV_EVENT = {
    C.StartOk.INDEX: E.RECV_START_OK, C.TuneOk.INDEX: E.RECV_TUNE_OK, C.Open.INDEX: E.RECV_OPEN,
    C.Close.INDEX: E.RECV_CLOSE, C.CloseOk.INDEX: E.RECV_CLOSE_OK,
    C.UpdateSecret.INDEX: E.RECV_UPDATE_SECRET,
}
ACCEPTS: dict[ConnState, frozenset[int]] = {
    state: frozenset(i for i, ev in RECV_EVENT.items() if ev in cells)
    for state, cells in CONNECTION.items()
}

# RabbitMQ's names of the states, for reply texts and the management API
RABBIT_NAME = {
    S.AWAIT_START_OK: "starting", S.AWAIT_TUNE_OK: "tuning", S.AWAIT_OPEN: "opening",
    S.OPEN: "running", S.CLOSING: "closing", S.CLOSED: "closed",
}

CH = ChState
CHANNEL: dict[ChState | None, dict[Event, ChState | None]] = {
    # sends on a number the protocol has forgotten (a cancel notification racing the close)
    # change nothing
    None: {E.CH_RECV_OPEN: CH.OPEN, E.CH_SEND_CLOSE: None, E.CH_SEND_CLOSE_OK: None},
    CH.OPEN: {E.CH_RECV_CLOSE: CH.PEER_CLOSED, E.CH_SEND_CLOSE: CH.CLOSING},
    CH.PEER_CLOSED: {E.CH_SEND_CLOSE: CH.CLOSING, E.CH_SEND_CLOSE_OK: None},
    CH.CLOSING: {
        E.CH_RECV_CLOSE: CH.CLOSING, E.CH_SEND_CLOSE: CH.CLOSING,
        E.CH_SEND_CLOSE_OK: CH.CLOSING, E.CH_RECV_CLOSE_OK: None,
    },
}

# Methods the broker sends whose sending is an event: channel 0 -> connection table, other
# channels -> channel table
SEND_EVENT = {
    C.Start.INDEX: E.SEND_START, C.Tune.INDEX: E.SEND_TUNE, C.OpenOk.INDEX: E.SEND_OPEN_OK,
    C.Close.INDEX: E.SEND_CLOSE, C.CloseOk.INDEX: E.SEND_CLOSE_OK,
    C.Blocked.INDEX: E.SEND_BLOCKED, C.Unblocked.INDEX: E.SEND_UNBLOCKED,
    C.UpdateSecretOk.INDEX: E.SEND_UPDATE_SECRET_OK,
}
CH_SEND_EVENT = {Ch.Close.INDEX: E.CH_SEND_CLOSE, Ch.CloseOk.INDEX: E.CH_SEND_CLOSE_OK}
SENDS_WITH_EVENT = frozenset(SEND_EVENT) | frozenset(CH_SEND_EVENT)


def next_state(state: ConnState, event: Event) -> ConnState:
    """The connection's state after ``event``; :class:`ProtocolStateError` if illegal."""
    try:
        return CONNECTION[state][event]
    except KeyError:
        raise ProtocolStateError(f"{event} is not allowed in connection state {state}") from None


def next_channel_state(state: ChState | None, event: Event) -> ChState | None:
    """A channel's state after ``event`` (None: forgotten); :class:`ProtocolStateError` if
    illegal."""
    try:
        return CHANNEL[state][event]
    except KeyError:
        raise ProtocolStateError(f"{event} is not allowed in channel state {state}") from None
