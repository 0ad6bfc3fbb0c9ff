"""The protocol state machines without sockets (the way h11 tests its ``_state.py``).

Every cell of the connection table (state x event) and of the channel table is exercised
through the protocol's public API (``receive``, ``send``, ``tuned``, ``peer_closed``,
``hang_up``) and compared with an expectation written out here, independently of
``syncmq/protocol/state.py``: legal cells give their next state, illegal received methods give
RabbitMQ's reply code and text, illegal broker-side events raise ``ProtocolStateError`` and
change nothing. Then the frame rules (which frame may come on which channel in which state),
and a whole handshake and close through a ``Session`` on the shared fake transport.
"""

from __future__ import annotations

import pytest
from fake_transport import FakeTransport, frames, method_frame, open_protocol

from syncmq.broker.broker import Broker
from syncmq.methods.registry import HANDLERS
from syncmq.methods.session import Session, Settings
from syncmq.protocol import state as st
from syncmq.protocol.connection import ChannelError, ConnectionProtocol
from syncmq.protocol.state import ChState, ConnState, Event, ProtocolStateError
from syncmq.wire import _spec
from syncmq.wire.errors import AMQPConnectionError
from syncmq.wire.frames import encode_frame

C = _spec.Connection
Ch = _spec.Channel
B = _spec.Basic
S = ConnState
E = Event

# ---------------------------------------------------------------------------- connection

# The expected table, written out independently of state.py: (state, event) -> next state.
LEGAL = {
    (S.AWAIT_START_OK, E.SEND_START): S.AWAIT_START_OK,
    (S.AWAIT_START_OK, E.RECV_START_OK): S.AWAIT_START_OK,
    (S.AWAIT_START_OK, E.SEND_TUNE): S.AWAIT_TUNE_OK,
    (S.AWAIT_TUNE_OK, E.RECV_TUNE_OK): S.AWAIT_TUNE_OK,
    (S.AWAIT_TUNE_OK, E.TUNED): S.AWAIT_OPEN,
    (S.AWAIT_OPEN, E.RECV_OPEN): S.AWAIT_OPEN,
    (S.AWAIT_OPEN, E.SEND_OPEN_OK): S.OPEN,
    (S.AWAIT_OPEN, E.RECV_CLOSE): S.AWAIT_OPEN,
    (S.AWAIT_OPEN, E.PEER_CLOSED): S.CLOSED,
    (S.OPEN, E.RECV_CLOSE): S.OPEN,
    (S.OPEN, E.PEER_CLOSED): S.CLOSED,
    (S.OPEN, E.SEND_BLOCKED): S.OPEN,
    (S.OPEN, E.SEND_UNBLOCKED): S.OPEN,
    (S.OPEN, E.RECV_UPDATE_SECRET): S.OPEN,
    (S.OPEN, E.SEND_UPDATE_SECRET_OK): S.OPEN,
    (S.CLOSING, E.RECV_CLOSE): S.CLOSING,
    (S.CLOSING, E.RECV_CLOSE_OK): S.CLOSING,
    (S.CLOSING, E.PEER_CLOSED): S.CLOSED,
    (S.CLOSED, E.SEND_CLOSE_OK): S.CLOSED,
    **{(s, E.SEND_CLOSE): S.CLOSING
       for s in (S.AWAIT_START_OK, S.AWAIT_TUNE_OK, S.AWAIT_OPEN, S.OPEN)},
    **{(s, E.HANG_UP): S.CLOSED for s in S},
}

CONNECTION_EVENTS = [e for e in E if not e.name.startswith("CH_")]

RECV = {
    E.RECV_START_OK: C.StartOk(mechanism="PLAIN", response=b"\0guest\0guest", locale="en_US"),
    E.RECV_TUNE_OK: C.TuneOk(channel_max=10, frame_max=4096, heartbeat=0),
    E.RECV_OPEN: C.Open(virtual_host="/"),
    E.RECV_CLOSE: C.Close(reply_code=200, reply_text="bye"),
    E.RECV_CLOSE_OK: C.CloseOk(),
    E.RECV_UPDATE_SECRET: C.UpdateSecret(new_secret=b"guest", reason="refresh"),
}
SEND = {
    E.SEND_START: C.Start(mechanisms=b"PLAIN", locales=b"en_US"),
    E.SEND_TUNE: C.Tune(channel_max=10, frame_max=4096, heartbeat=0),
    E.SEND_OPEN_OK: C.OpenOk(),
    E.SEND_CLOSE: C.Close(reply_code=320, reply_text="CONNECTION_FORCED - bye"),
    E.SEND_CLOSE_OK: C.CloseOk(),
    E.SEND_BLOCKED: C.Blocked(reason="low on memory"),
    E.SEND_UNBLOCKED: C.Unblocked(),
    E.SEND_UPDATE_SECRET_OK: C.UpdateSecretOk(),
}
# the shortest way into each state, as (event, ...) applied through the API
PATH = {
    S.AWAIT_START_OK: [],
    S.AWAIT_TUNE_OK: [E.SEND_TUNE],
    S.AWAIT_OPEN: [E.SEND_TUNE, E.TUNED],
    S.OPEN: [E.SEND_TUNE, E.TUNED, E.SEND_OPEN_OK],
    S.CLOSING: [E.SEND_TUNE, E.TUNED, E.SEND_OPEN_OK, E.SEND_CLOSE],
    S.CLOSED: [E.HANG_UP],
}
RABBIT = {S.AWAIT_START_OK: "starting", S.AWAIT_TUNE_OK: "tuning", S.AWAIT_OPEN: "opening",
          S.OPEN: "running", S.CLOSING: "closing", S.CLOSED: "closed"}


def _fire(p: ConnectionProtocol, event: Event):
    """Apply ``event`` through the public API; returns receive's (events, rest, error)."""
    if event in RECV:
        return p.receive(frames(method_frame(0, RECV[event])))
    if event in SEND:
        p.send(0, SEND[event])
    elif event is E.TUNED:
        p.tuned(4096, 10)
    elif event is E.PEER_CLOSED:
        p.peer_closed()
    elif event is E.HANG_UP:
        p.hang_up()
    else:
        raise AssertionError(event)
    return None


def _protocol_in(state: ConnState) -> ConnectionProtocol:
    p = ConnectionProtocol(2047, 131072, 1 << 20)
    for event in PATH[state]:
        _fire(p, event)
    assert p.state is state
    return p


def test_the_table_is_the_expected_one():
    got = {(s, e): nxt for s, cells in st.CONNECTION.items() for e, nxt in cells.items()}
    assert got == LEGAL


@pytest.mark.parametrize("state", list(S), ids=str)
@pytest.mark.parametrize("event", CONNECTION_EVENTS, ids=str)
def test_every_connection_cell(state, event):
    p = _protocol_in(state)
    legal = (state, event) in LEGAL
    if event in RECV:
        events, rest, error = _fire(p, event)
        method = RECV[event]
        if legal:
            assert error is None and rest == []
            assert [(ch, type(m)) for ch, m, _, _ in events] == [(0, type(method))]
            assert p.state is LEGAL[state, event]
        elif state in (S.CLOSING, S.CLOSED):
            # rabbit_reader ?IS_STOPPING: anything but close/close-ok is dropped
            assert (events, rest, error) == ([], [], None)
            assert p.state is state
        else:
            # rabbit_reader handle_method0 catch-all
            assert events == [] and isinstance(error, AMQPConnectionError)
            assert error.reply_code == _spec.CHANNEL_ERROR == 504
            assert error.reply_text == (f"CHANNEL_ERROR - unexpected method {method.NAME} in "
                                        f"connection state {RABBIT[state]}")
            assert (error.class_id, error.method_id) == (method.CLASS_ID, method.METHOD_ID)
            assert p.state is state
    elif legal:
        _fire(p, event)
        assert p.state is LEGAL[state, event]
    else:
        with pytest.raises(ProtocolStateError):
            _fire(p, event)
        assert p.state is state  # nothing changed


@pytest.mark.parametrize("state", list(S), ids=str)
def test_a_method_of_another_class_on_channel_0_is_504(state):
    p = _protocol_in(state)
    events, rest, error = p.receive(frames(method_frame(0, B.Qos(prefetch_count=1))))
    if state in (S.CLOSING, S.CLOSED):
        assert (events, rest, error) == ([], [], None)
    else:
        assert error.reply_code == 504 and "unexpected method basic.qos" in error.reply_text


def test_state_is_read_only_and_compares_as_the_old_strings():
    p = ConnectionProtocol(2047, 131072, 1 << 20)
    with pytest.raises(AttributeError):
        p.state = S.OPEN  # type: ignore[misc]
    assert p.state == "await-start-ok" and p.state.rabbit_name == "starting"
    assert open_protocol().state == "open" and f"{S.CLOSING}" == "closing"


def test_tuned_applies_the_negotiated_limits():
    p = _protocol_in(S.AWAIT_TUNE_OK)
    p.tuned(4096, 3)
    assert (p.frame_max, p.channel_max) == (4096, 3)


# ---------------------------------------------------------------------------- frames

HEARTBEAT0 = encode_frame(8, 0, b"")
HEADER0 = encode_frame(2, 0, b"\x00\x3c\x00\x00" + bytes(8) + b"\x00\x00")
BODY0 = encode_frame(3, 0, b"x")
CH_OPEN1 = method_frame(1, Ch.Open())
HEADER1 = encode_frame(2, 1, b"\x00\x3c\x00\x00" + bytes(8) + b"\x00\x00")
BODY1 = encode_frame(3, 1, b"x")
HEARTBEAT1 = encode_frame(8, 1, b"")
FRAMES = {"heartbeat on 0": HEARTBEAT0, "header on 0": HEADER0, "body on 0": BODY0,
          "channel.open on 1": CH_OPEN1, "header on 1": HEADER1, "body on 1": BODY1,
          "heartbeat on 1": HEARTBEAT1}


def _frame_expectation(state: ConnState, name: str):
    """None: accepted without an event; "event"; "drop"; else (code, text start)."""
    if state in (S.CLOSING, S.CLOSED):
        return "drop"
    if name == "heartbeat on 0":
        return None
    if name.endswith("on 0"):
        return (505, "UNEXPECTED_FRAME - content frame of type")
    if state is not S.OPEN:
        return (505, "UNEXPECTED_FRAME - frame of type")
    return {"channel.open on 1": "event",
            "header on 1": (505, "UNEXPECTED_FRAME - expected method frame"),
            "body on 1": (505, "UNEXPECTED_FRAME - expected method frame"),
            "heartbeat on 1": (505, "UNEXPECTED_FRAME - heartbeat frame on channel 1")}[name]


@pytest.mark.parametrize("state", list(S), ids=str)
@pytest.mark.parametrize("name", sorted(FRAMES))
def test_every_frame_kind_in_every_state(state, name):
    p = _protocol_in(state)
    events, rest, error = p.receive(frames(FRAMES[name]))
    want = _frame_expectation(state, name)
    assert rest == []
    if want in (None, "drop"):
        assert (events, error) == ([], None)
    elif want == "event":
        assert error is None and [(ch, m.NAME) for ch, m, _, _ in events] == [(1, "channel.open")]
        assert p.channels[1].state is ChState.OPEN
    else:
        assert events == [] and (error.reply_code, error.reply_text[:len(want[1])]) == want


# ---------------------------------------------------------------------------- channels

CH_LEGAL = {
    (None, E.CH_RECV_OPEN): ChState.OPEN,
    (None, E.CH_SEND_CLOSE): None,
    (None, E.CH_SEND_CLOSE_OK): None,
    (ChState.OPEN, E.CH_RECV_CLOSE): ChState.PEER_CLOSED,
    (ChState.OPEN, E.CH_SEND_CLOSE): ChState.CLOSING,
    (ChState.PEER_CLOSED, E.CH_SEND_CLOSE): ChState.CLOSING,
    (ChState.PEER_CLOSED, E.CH_SEND_CLOSE_OK): None,
    (ChState.CLOSING, E.CH_RECV_CLOSE): ChState.CLOSING,
    (ChState.CLOSING, E.CH_SEND_CLOSE): ChState.CLOSING,
    (ChState.CLOSING, E.CH_SEND_CLOSE_OK): ChState.CLOSING,
    (ChState.CLOSING, E.CH_RECV_CLOSE_OK): None,
}
CH_STATES = [None, ChState.OPEN, ChState.PEER_CLOSED, ChState.CLOSING]
CH_RECV = {E.CH_RECV_OPEN: Ch.Open(), E.CH_RECV_CLOSE: Ch.Close(reply_code=200),
           E.CH_RECV_CLOSE_OK: Ch.CloseOk()}
CH_SEND = {E.CH_SEND_CLOSE: Ch.Close(reply_code=406, reply_text="PRECONDITION_FAILED - x"),
           E.CH_SEND_CLOSE_OK: Ch.CloseOk()}
# illegal received cells: RabbitMQ's answer
CH_ILLEGAL_RECV = {
    (None, E.CH_RECV_CLOSE): (504, "CHANNEL_ERROR - expected 'channel.open' on channel 1"),
    (None, E.CH_RECV_CLOSE_OK): (504, "CHANNEL_ERROR - expected 'channel.open' on channel 1"),
    (ChState.OPEN, E.CH_RECV_OPEN): (504, "CHANNEL_ERROR - second 'channel.open' seen"),
    (ChState.OPEN, E.CH_RECV_CLOSE_OK): (503, "COMMAND_INVALID - unexpected channel.close-ok"),
    # the number is free only once the client has our close-ok, either way (RabbitMQ 3.10.8:
    # tests/interop/test_channel_reuse_differential.py)
    (ChState.PEER_CLOSED, E.CH_RECV_OPEN): (504, "CHANNEL_ERROR - second 'channel.open' seen"),
    (ChState.CLOSING, E.CH_RECV_OPEN): (504, "CHANNEL_ERROR - second 'channel.open' seen"),
}


def _channel_in(state) -> ConnectionProtocol:
    p = open_protocol(channels=())
    if state is not None:
        p.receive(frames(CH_OPEN1))
    if state is ChState.PEER_CLOSED:
        p.receive(frames(method_frame(1, Ch.Close(reply_code=200))))
    elif state is ChState.CLOSING:
        p.send(1, CH_SEND[E.CH_SEND_CLOSE])
    assert _ch_state(p) is state
    return p


def _ch_state(p: ConnectionProtocol):
    cp = p.channels.get(1)
    return None if cp is None else cp.state


def test_the_channel_table_is_the_expected_one():
    got = {(s, e): nxt for s, cells in st.CHANNEL.items() for e, nxt in cells.items()}
    assert got == CH_LEGAL


@pytest.mark.parametrize("state", CH_STATES, ids=str)
@pytest.mark.parametrize("event", [e for e in E if e.name.startswith("CH_")], ids=str)
def test_every_channel_cell(state, event):
    p = _channel_in(state)
    legal = (state, event) in CH_LEGAL
    if event in CH_SEND:
        if legal:
            p.send(1, CH_SEND[event])
            assert _ch_state(p) is CH_LEGAL[state, event]
        else:
            with pytest.raises(ProtocolStateError):
                p.send(1, CH_SEND[event])
            assert _ch_state(p) is state
        return
    method = CH_RECV[event]
    events, rest, error = p.receive(frames(method_frame(1, method)))
    if legal:
        assert error is None and [(ch, m.NAME) for ch, m, _, _ in events] == [(1, method.NAME)]
        assert _ch_state(p) is CH_LEGAL[state, event]
    elif (state, event) in CH_ILLEGAL_RECV:
        code, text = CH_ILLEGAL_RECV[state, event]
        assert events == [] and error.reply_code == code and error.reply_text.startswith(text)
    else:
        # peer-closed drops everything, closing everything but close/close-ok
        assert state in (ChState.PEER_CLOSED, ChState.CLOSING)
        assert (events, error) == ([], None) and _ch_state(p) is state


@pytest.mark.parametrize("state", CH_STATES, ids=str)
def test_other_methods_and_content_by_channel_state(state):
    p = _channel_in(state)
    events, _, error = p.receive(frames(method_frame(1, B.Qos(prefetch_count=5))))
    if state is None:
        assert error.reply_code == 504 and "expected 'channel.open'" in error.reply_text
    elif state is ChState.OPEN:
        assert error is None and events[0][1].NAME == "basic.qos"
    else:
        assert (events, error) == ([], None)
    p = _channel_in(state)
    events, _, error = p.receive(frames(HEADER1))
    if state in (None, ChState.OPEN):
        assert error.reply_code == 505
    else:
        assert (events, error) == ([], None)


def test_channel_max_counts_open_channels():
    p = open_protocol(channels=(1, 2), channel_max=2)
    _, _, error = p.receive(frames(method_frame(3, Ch.Open())))
    assert error.reply_code == _spec.NOT_ALLOWED == 530
    assert "number of channels opened (2) has reached the negotiated channel_max (2)" in \
        error.reply_text


def test_a_soft_error_returns_the_events_before_it_and_the_frames_after_it():
    p = open_protocol(max_body=4)
    big = encode_frame(2, 1, b"\x00\x3c\x00\x00" + (9).to_bytes(8, "big") + b"\x00\x00")
    raw = frames(method_frame(2, B.Qos(prefetch_count=1)), method_frame(1, B.Publish()), big,
                 method_frame(2, B.Qos(prefetch_count=2)))
    events, rest, error = p.receive(raw)
    assert [m.NAME for _, m, _, _ in events] == ["basic.qos"]
    assert type(error) is ChannelError and error.channel_id == 1
    assert error.error.reply_code == _spec.PRECONDITION_FAILED
    assert rest == raw[3:]


def test_a_hard_error_returns_the_events_before_it():
    p = open_protocol()
    raw = frames(method_frame(1, B.Qos(prefetch_count=1)), HEARTBEAT1,
                 method_frame(1, B.Qos(prefetch_count=2)))
    events, rest, error = p.receive(raw)
    assert [m.NAME for _, m, _, _ in events] == ["basic.qos"]
    assert error.reply_code == 505 and rest == []


# ---------------------------------------------------------------------------- a session


def _session() -> tuple[Session, FakeTransport]:
    t = FakeTransport()
    t.peer = ("127.0.0.1", 5000)
    return Session(t, Broker(), Settings(), HANDLERS), t


def test_open_after_the_handshake_timeout_is_not_a_connection_limit(caplog):
    """connection.open handled after the handshake timeout closed the socket (its frames
    waited on a busy worker): nothing is answered and nothing claims the node's connection
    limit refused it (mark_open says None: lost, not False: the limit)."""
    s, t = _session()
    t.mark_open = lambda: None  # the reactor counted the transport out already
    s.connection_made()
    s.frames_received(frames(method_frame(0, RECV[E.RECV_START_OK])))
    s.frames_received(frames(method_frame(0, C.TuneOk(channel_max=10, frame_max=4096))))
    s.frames_received(frames(method_frame(0, C.Open(virtual_host="/"))))
    assert [type(m) for _, m in t.methods()] == [C.Start, C.Tune]
    assert "connection limit" not in caplog.text
    s.connection_lost()


def test_handshake_and_close_through_a_session():
    s, t = _session()
    s.connection_made()
    assert [type(m) for _, m in t.methods()] == [C.Start] and s.proto.state is S.AWAIT_START_OK
    s.frames_received(frames(method_frame(0, RECV[E.RECV_START_OK])))
    assert type(t.methods()[-1][1]) is C.Tune and s.proto.state is S.AWAIT_TUNE_OK
    s.frames_received(frames(method_frame(0, C.TuneOk(channel_max=10, frame_max=4096))))
    assert s.proto.state is S.AWAIT_OPEN and (s.proto.frame_max, s.proto.channel_max) == (4096, 10)
    s.frames_received(frames(method_frame(0, C.Open(virtual_host="/")), CH_OPEN1))
    assert s.proto.state is S.OPEN
    assert [type(m) for _, m in t.methods()[-2:]] == [C.OpenOk, Ch.OpenOk]
    s.frames_received(frames(method_frame(1, Ch.Close(reply_code=200))))
    assert [type(m) for _, m in t.methods()[-1:]] == [Ch.CloseOk] and 1 not in s.proto.channels
    s.frames_received(frames(CH_OPEN1))  # the number is free once the close-ok is out
    assert type(t.methods()[-1][1]) is Ch.OpenOk and s.proto.channels[1].state is ChState.OPEN
    s.frames_received(frames(method_frame(0, C.Close(reply_code=200))))
    assert type(t.methods()[-1][1]) is C.CloseOk and s.proto.state is S.CLOSED
    assert ("close_after_flush",) in t.calls


def test_an_open_pipelined_behind_a_close_is_a_504_through_a_session():
    """channel.open before the client has our close-ok (in the same batch as its close): the
    number is not free yet, RabbitMQ's 504 and nothing else (the close's close-ok is not sent:
    a hard error drops the events before it)."""
    s, t = _session()
    s.connection_made()
    s.frames_received(frames(method_frame(0, RECV[E.RECV_START_OK])))
    s.frames_received(frames(method_frame(0, C.TuneOk(channel_max=10, frame_max=4096))))
    s.frames_received(frames(method_frame(0, C.Open(virtual_host="/")), CH_OPEN1))
    n = len(t.methods())
    s.frames_received(frames(method_frame(1, Ch.Close(reply_code=200)), CH_OPEN1))
    sent = t.methods()[n:]
    assert [type(m) for _, m in sent] == [C.Close] and s.proto.state is S.CLOSING
    assert (sent[0][1].reply_code, sent[0][1].class_id, sent[0][1].method_id) == (504, 20, 10)


def test_the_methods_after_a_channel_error_in_the_same_batch_are_dropped():
    """A handler's channel error (a publish to a missing exchange) closes the channel; the
    events of the same batch after it on that channel are not handled (the channel is
    closing: ``Session._handle``), those on other channels are."""
    from fake_transport import content_frames

    s, t = _session()
    s.connection_made()
    s.frames_received(frames(method_frame(0, RECV[E.RECV_START_OK])))
    s.frames_received(frames(method_frame(0, C.TuneOk(channel_max=10, frame_max=4096))))
    s.frames_received(frames(method_frame(0, C.Open(virtual_host="/")), CH_OPEN1,
                             method_frame(2, Ch.Open())))
    n = len(t.methods())
    s.frames_received(frames(method_frame(1, B.Publish(exchange="missing", routing_key="q")),
                             content_frames(1, b"m"), method_frame(1, B.Qos(prefetch_count=7)),
                             method_frame(2, B.Qos(prefetch_count=7))))
    sent = t.methods()[n:]
    assert [(ch, type(m)) for ch, m in sent] == [(1, Ch.Close), (2, B.QosOk)]
    assert sent[0][1].reply_code == 404


def test_a_login_failure_without_the_capability_is_a_silent_hang_up():
    s, t = _session()
    s.connection_made()
    s.frames_received(frames(method_frame(0, C.StartOk(
        mechanism="PLAIN", response=b"\0guest\0wrong", locale="en_US"))))
    assert s.proto.state is S.CLOSED
    assert [type(m) for _, m in t.methods()] == [C.Start]  # no connection.close
    assert ("stop_reading",) in t.calls


def test_a_failed_tune_ok_is_answered_with_close_and_closing():
    s, t = _session()
    s.connection_made()
    s.frames_received(frames(method_frame(0, RECV[E.RECV_START_OK])))
    s.frames_received(frames(method_frame(0, C.TuneOk(channel_max=0, frame_max=4096))))
    close = t.methods()[-1][1]
    assert type(close) is C.Close and close.reply_code == 530
    assert s.proto.state is S.CLOSING
    s.frames_received(frames(method_frame(0, C.CloseOk())))
    assert s.proto.state is S.CLOSED
