"""Malformed and out-of-order input: one test per case, each checking the exact reply code and
that the broker still serves a second, well-behaved connection afterwards.

The reply codes are RabbitMQ's; where the spec and RabbitMQ differ, RabbitMQ wins (the source
is named next to each case, and in ``syncmq/protocol/connection.py``):

* heartbeat on a non-zero channel, content on channel 0 or on a channel that is not open, any
  frame on a non-zero channel before connection.open-ok: 505 UNEXPECTED_FRAME
  (``rabbit_reader:handle_frame`` -> ``unexpected_frame``).
* a non-connection method on channel 0, or a connection method in the wrong state: 504
  CHANNEL_ERROR (``rabbit_reader:handle_method0`` catch-all, "unexpected method in connection
  state").
* truncated method arguments: 501 FRAME_ERROR (``rabbit_misc:frame_error``, "cannot decode").
* too many channels: 530 NOT_ALLOWED (``rabbit_reader:create_channel`` counts open channels; the
  channel *number* is not checked).
* errors during the handshake: connection.close only for 403 (with the client's
  ``authentication_failure_close`` capability) in ``starting``, 530 in ``tuning``, and anything
  in ``opening``; otherwise a silent close (``rabbit_reader:handle_exception``).
"""

from __future__ import annotations

import struct

import pika
import pika.exceptions
import pytest
from amqp_raw import FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, RawClient, connect

from syncmq.broker.auth import hash_password
from syncmq.wire import _spec
from syncmq.wire.fields import encode_table
from syncmq.wire.frames import PROTOCOL_HEADER, encode_method_frame

Q = _spec.Queue
B = _spec.Basic
C = _spec.Connection
Ch = _spec.Channel

DECLARE = (Q.Declare.CLASS_ID, Q.Declare.METHOD_ID)  # (50, 10)
PUBLISH = (B.Publish.CLASS_ID, B.Publish.METHOD_ID)  # (60, 40)
CH_OPEN = (Ch.Open.CLASS_ID, Ch.Open.METHOD_ID)  # (20, 10)


def pika_params(port: int, **kw) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(host="127.0.0.1", port=port, connection_attempts=1,
                                     socket_timeout=10, blocked_connection_timeout=None, **kw)


def assert_healthy(broker, name: str) -> None:
    """A second, well-behaved connection can still declare, publish and get."""
    conn = pika.BlockingConnection(pika_params(broker.port))
    try:
        ch = conn.channel()
        ch.queue_declare(name, auto_delete=True)
        ch.basic_publish("", name, b"still-alive")
        method, _props, body = ch.basic_get(name, auto_ack=True)
        assert method is not None and body == b"still-alive"
    finally:
        conn.close()
    assert not broker.tracebacks(), "\n".join(broker.tracebacks())


def close_and_finish(c: RawClient, expected: tuple[int, int, int]) -> None:
    """Expect connection.close with ``expected``, answer close-ok, expect EOF."""
    got = c.expect_close()
    assert got == expected, (got, getattr(c, "last_close", None))
    assert c.last_close_channel == 0 and isinstance(c.last_close, C.Close)
    try:
        c.send_close_ok()
    except OSError:
        pass  # a frame error hangs up without waiting for close-ok
    c.expect_eof()


def declare_args(name: str = "q", arguments: bytes | None = None) -> bytes:
    """queue.declare arguments octets with a hand-made arguments table."""
    table = encode_table({}) if arguments is None else arguments
    return b"\x00\x00" + bytes([len(name)]) + name.encode() + b"\x00" + table


# ---- the byte stream ----


@pytest.mark.parametrize("header", [b"AMQP\x00\x00\x09\x02", b"AMQP\x01\x01\x00\x0a",
                                    b"GET / HTTP/1.1\r\n\r\n", b"AMQX"])
def test_bad_protocol_header(broker, unique, header):
    # spec 4.2.2 / rabbit_reader refuse_connection: answer with our header, then close
    with RawClient(broker.port) as c:
        c.send(header)
        assert c.read_octets(8) == PROTOCOL_HEADER
        assert c.expect_eof() == []
    assert_healthy(broker, unique)


def test_amqp_0_9_header_is_accepted(broker, unique):
    # rabbit_reader version_negotiation({1, 1, 0, 9}): treated as 0-9-1
    with RawClient(broker.port) as c:
        c.send(b"AMQP\x01\x01\x00\x09")
        c.expect_method(0, C.Start)


def test_bad_frame_end(broker, unique):
    # rabbit_reader: invalid_frame_end_marker -> fatal frame_error (501), then hang up
    with connect(broker.port) as c:
        payload = Ch.Open().encode()
        c.send(struct.pack(">BHI", FRAME_METHOD, 1, len(payload)) + payload + b"\x00")
        close_and_finish(c, (501, 0, 0))
    assert_healthy(broker, unique)


def test_frame_over_frame_max_rejected_from_header(broker, unique):
    # rabbit_reader handle_input(frame_header, ...): frame_too_large, checked on the 7-octet
    # header before the payload arrives; we send only the header.
    with connect(broker.port, frame_max=8192) as c:
        c.open_channel(1)
        c.send(struct.pack(">BHI", FRAME_BODY, 1, 8192 - 8 + 8 + 1))  # one past the slack
        close_and_finish(c, (501, 0, 0))
    assert_healthy(broker, unique)


def test_frame_within_rabbitmq_slack_is_accepted(broker, unique):
    # ?FRAME_SIZE_FUDGE: RabbitMQ accepts frames up to 8 octets over frame_max
    with connect(broker.port, frame_max=4096) as c:
        c.open_channel(1)
        c.send_method(1, Q.Declare(queue=unique, auto_delete=True))
        c.expect_method(1, Q.DeclareOk)
        body = b"x" * (4096 - 8 + 8)
        c.send_method(1, B.Publish(exchange="", routing_key=unique))
        c.send_frame(FRAME_HEADER, 1, struct.pack(">HHQ", 60, 0, len(body)) + b"\x00\x00")
        c.send_frame(FRAME_BODY, 1, body)
        c.send_method(1, B.Get(queue=unique, no_ack=True))
        c.expect_method(1, B.GetOk)
    assert_healthy(broker, unique)


def test_unknown_frame_type(broker, unique):
    # rabbit_command_assembler:analyze_frame -> error -> frame_error(unknown_frame) (501)
    with connect(broker.port) as c:
        c.send_frame(5, 1, b"abc")
        close_and_finish(c, (501, 0, 0))
    assert_healthy(broker, unique)


def test_heartbeat_with_payload(broker, unique):
    # analyze_frame(?FRAME_HEARTBEAT, <<>>) only matches an empty payload: frame_error (501)
    with connect(broker.port) as c:
        c.send_frame(FRAME_HEARTBEAT, 0, b"x")
        close_and_finish(c, (501, 0, 0))
    assert_healthy(broker, unique)


@pytest.mark.parametrize("class_id,method_id", [(99, 10), (60, 999)])
def test_unknown_class_or_method(broker, unique, class_id, method_id):
    # The codec's 540 NOT_IMPLEMENTED (syncmq/wire/_spec.py decode_method); RabbitMQ's
    # lookup_method_name crashes the reader and drops the socket without a reply code.
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_raw_method(1, class_id, method_id, b"")
        close_and_finish(c, (540, class_id, method_id))
    assert_healthy(broker, unique)


def test_truncated_method_fields(broker, unique):
    # rabbit_framing decode_method_fields -> rabbit_misc:frame_error "cannot decode" (501)
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_raw_method(1, *DECLARE, declare_args(unique)[:-3])
        close_and_finish(c, (501, *DECLARE))
    assert_healthy(broker, unique)


def test_bad_field_table_type_in_declare_arguments(broker, unique):
    # The codec's 502 SYNTAX_ERROR (spec: "illegal values for one or more fields"); RabbitMQ's
    # rabbit_binary_parser:parse_table has no clause for the code and drops the socket.
    with connect(broker.port) as c:
        c.open_channel(1)
        entry = b"\x05x-bad" + b"Z" + b"\x00\x00\x00\x01"
        table = struct.pack(">I", len(entry)) + entry
        c.send_raw_method(1, *DECLARE, declare_args(unique, table))
        close_and_finish(c, (502, *DECLARE))
    assert_healthy(broker, unique)


# ---- channels ----


def test_method_on_channel_not_open(broker, unique):
    # rabbit_channel handle_method in state starting: channel_error "expected 'channel.open'"
    with connect(broker.port) as c:
        c.send_method(3, Q.Declare(queue=unique))
        close_and_finish(c, (504, *DECLARE))
    assert_healthy(broker, unique)


def test_content_header_on_channel_not_open(broker, unique):
    # RabbitMQ starts the channel and its command assembler (state 'method') rejects the
    # header: unexpected_frame 505 (not 504)
    with connect(broker.port) as c:
        c.send_frame(FRAME_HEADER, 3, struct.pack(">HHQ", 60, 0, 3) + b"\x00\x00")
        close_and_finish(c, (505, 0, 0))
    assert_healthy(broker, unique)


def test_body_without_header(broker, unique):
    # rabbit_command_assembler: "expected method frame, got non method frame instead"
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_frame(FRAME_BODY, 1, b"orphan")
        close_and_finish(c, (505, 0, 0))
    assert_healthy(broker, unique)


def test_header_without_publish(broker, unique):
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_frame(FRAME_HEADER, 1, struct.pack(">HHQ", 60, 0, 3) + b"\x00\x00")
        close_and_finish(c, (505, 0, 0))
    assert_healthy(broker, unique)


def test_body_where_header_expected(broker, unique):
    # "expected content header for class 60, got non content header frame instead"
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(1, B.Publish(exchange="", routing_key=unique))
        c.send_frame(FRAME_BODY, 1, b"abc")
        close_and_finish(c, (505, *PUBLISH))
    assert_healthy(broker, unique)


def test_method_in_the_middle_of_content(broker, unique):
    # "expected content body, got non content body frame instead" (505, the publish's ids)
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(1, B.Publish(exchange="", routing_key=unique))
        c.send_frame(FRAME_HEADER, 1, struct.pack(">HHQ", 60, 0, 10) + b"\x00\x00")
        c.send_frame(FRAME_BODY, 1, b"abc")
        c.send_method(1, Q.Declare(queue=unique))
        close_and_finish(c, (505, *PUBLISH))
    assert_healthy(broker, unique)


def test_content_of_other_channels_may_interleave(broker, unique):
    """Content assembly is per channel: frames of another channel in between are fine."""
    with connect(broker.port) as c:
        c.open_channel(1)
        c.open_channel(2)
        c.send_method(1, Q.Declare(queue=unique, auto_delete=True))
        c.expect_method(1, Q.DeclareOk)
        c.send_method(1, B.Publish(exchange="", routing_key=unique))
        c.send_frame(FRAME_HEADER, 1, struct.pack(">HHQ", 60, 0, 6) + b"\x00\x00")
        c.send_frame(FRAME_BODY, 1, b"abc")
        c.send_method(2, B.Qos(prefetch_count=1))
        c.expect_method(2, B.QosOk)
        c.send_frame(FRAME_BODY, 1, b"def")
        c.send_method(2, B.Get(queue=unique, no_ack=True))
        c.expect_method(2, B.GetOk)
        hdr = c.read_frame()
        body = c.read_frame()
        assert hdr.type == FRAME_HEADER and body.payload == b"abcdef"


def test_second_channel_open(broker, unique):
    # rabbit_channel: channel_error "second 'channel.open' seen" (504; RabbitMQ < 3.7 said 503)
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(1, Ch.Open())
        close_and_finish(c, (504, *CH_OPEN))
    assert_healthy(broker, unique)


def test_more_channels_than_channel_max(broker, unique):
    # rabbit_reader create_channel: not_allowed (530) once channel_max channels are open. The
    # channel *number* is not checked (RabbitMQ neither): channel 7 is fine with channel_max 2.
    with connect(broker.port, channel_max=2) as c:
        c.open_channel(7)
        c.open_channel(1)
        c.send_method(2, Ch.Open())
        close_and_finish(c, (530, *CH_OPEN))
    assert_healthy(broker, unique)


def test_channel_number_reused_after_close(broker, unique):
    with connect(broker.port, channel_max=1) as c:
        for _ in range(3):
            c.open_channel(1)
            c.send_method(1, Ch.Close(reply_code=200, reply_text="bye"))
            c.expect_method(1, Ch.CloseOk)


def test_heartbeat_on_nonzero_channel(broker, unique):
    # rabbit_reader handle_frame: heartbeat on a channel -> unexpected_frame (505, not 501)
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_frame(FRAME_HEARTBEAT, 1, b"")
        close_and_finish(c, (505, 0, 0))
    assert_healthy(broker, unique)


def test_non_connection_method_on_channel_0(broker, unique):
    # rabbit_reader handle_method0 catch-all: channel_error (504, not 503)
    with connect(broker.port) as c:
        c.send_method(0, Q.Declare(queue=unique))
        close_and_finish(c, (504, *DECLARE))
    assert_healthy(broker, unique)


def test_content_on_channel_0(broker, unique):
    with connect(broker.port) as c:
        c.send_frame(FRAME_HEADER, 0, struct.pack(">HHQ", 60, 0, 3) + b"\x00\x00")
        close_and_finish(c, (505, 0, 0))
    assert_healthy(broker, unique)


def test_connection_method_on_channel_1(broker, unique):
    # rabbit_channel handle_method catch-all: command_invalid "unimplemented method" (503)
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(1, C.Open(virtual_host="/"))
        close_and_finish(c, (503, C.Open.CLASS_ID, C.Open.METHOD_ID))
    assert_healthy(broker, unique)


def test_a_servers_method_from_the_client(broker, unique):
    # rabbit_channel handle_method catch-all: command_invalid (503) for a method only the
    # server sends (Session._handle: no handler for it)
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(1, B.QosOk())
        close_and_finish(c, (503, B.QosOk.CLASS_ID, B.QosOk.METHOD_ID))
        assert "not accepted from a client" in c.last_close.reply_text
    assert_healthy(broker, unique)


def test_connection_method_out_of_state(broker, unique):
    # a second tune-ok once running: handle_method0 catch-all (504)
    with connect(broker.port) as c:
        c.send_method(0, C.TuneOk(channel_max=10, frame_max=8192, heartbeat=0))
        close_and_finish(c, (504, C.TuneOk.CLASS_ID, C.TuneOk.METHOD_ID))
    assert_healthy(broker, unique)


@pytest.mark.parametrize("one_write", [False, True])
def test_crossing_channel_close(broker, unique, one_write):
    """The client's channel.close crosses the broker's: both get close-ok, connection lives
    (rabbit_channel answers a close in state closing and keeps waiting for close-ok). With
    ``one_write`` the error and the close arrive in one batch."""
    with connect(broker.port) as c:
        c.open_channel(1)
        declare = Q.Declare(queue=unique + "-missing", passive=True)  # 404 soft error
        close = Ch.Close(reply_code=200, reply_text="crossing")
        if one_write:
            c.send(encode_method_frame(1, declare) + encode_method_frame(1, close))
        else:
            c.send_method(1, declare)
            c.send_method(1, close)
        assert c.expect_close() == (404, *DECLARE)
        assert c.last_close_channel == 1
        c.expect_method(1, Ch.CloseOk)  # answer to the client's close
        c.send_method(1, Ch.CloseOk())  # answer to the broker's close
        c.open_channel(1)
        c.send_method(1, Q.Declare(queue=unique, auto_delete=True))
        c.expect_method(1, Q.DeclareOk)
    assert_healthy(broker, unique)


def test_close_ok_and_reopen_in_one_write(broker, unique):
    """close-ok, channel.open and a method on the reopened channel in one batch."""
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(1, Q.Declare(queue=unique + "-missing", passive=True))
        assert c.expect_close() == (404, *DECLARE)
        c.send(encode_method_frame(1, Ch.CloseOk()) + encode_method_frame(1, Ch.Open())
               + encode_method_frame(1, Q.Declare(queue=unique, auto_delete=True)))
        c.expect_method(1, Ch.OpenOk)
        c.expect_method(1, Q.DeclareOk)
        c.send_method(1, Ch.Close(reply_code=200, reply_text=""))
        c.expect_method(1, Ch.CloseOk)
        c.open_channel(1)  # the number is free once the close-ok is out
        # pipelined behind the close, before its close-ok: RabbitMQ's 504 (it was dropped,
        # and the client waited for an open-ok; tests/interop/
        # test_channel_reuse_differential.py)
        c.send(encode_method_frame(1, Ch.Close(reply_code=200, reply_text=""))
               + encode_method_frame(1, Ch.Open()))
        close_and_finish(c, (504, Ch.Open.CLASS_ID, Ch.Open.METHOD_ID))
        assert "second 'channel.open' seen" in c.last_close.reply_text
    assert_healthy(broker, unique)


def test_close_ok_without_close(broker, unique):
    # rabbit_channel handle_method catch-all in state running: command_invalid (503)
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(1, Ch.CloseOk())
        close_and_finish(c, (503, Ch.CloseOk.CLASS_ID, Ch.CloseOk.METHOD_ID))
    assert_healthy(broker, unique)


# ---- the handshake ----


def test_channel_frame_before_start_ok_is_a_silent_close(broker, unique):
    # 'starting': unexpected_frame -> handle_exception catch-all: no connection.close
    with RawClient(broker.port) as c:
        c.send_header()
        c.expect_method(0, C.Start)
        c.send_method(1, Ch.Open())
        frames = c.expect_eof()
        assert not any(f.method is not None for f in frames), frames
    assert_healthy(broker, unique)


def test_wrong_method_while_tuning_is_a_silent_close(broker, unique):
    # 'tuning': a channel method on channel 0 is channel_error, not not_allowed: silent close
    with RawClient(broker.port) as c:
        c.send_header()
        c.expect_method(0, C.Start)
        c.send_start_ok("guest", "guest")
        c.expect_method(0, C.Tune)
        c.send_method(0, C.Open(virtual_host="/"))  # open before tune-ok
        frames = c.expect_eof()
        assert not any(f.method is not None for f in frames), frames
    assert_healthy(broker, unique)


def test_frame_error_before_start_ok_is_a_silent_close(broker, unique):
    with RawClient(broker.port) as c:
        c.send_header()
        c.expect_method(0, C.Start)
        c.send(b"\x01\x00\x00\x00\x00\x00\x01x\x00")  # bad frame end
        frames = c.expect_eof()
        assert not any(f.method is not None for f in frames), frames
    assert_healthy(broker, unique)


def test_channel_frame_while_opening_gets_505(broker, unique):
    # 'opening' (after tune-ok): every error is answered with connection.close
    with connect(broker.port, open_=False) as c:
        c.send_method(1, Ch.Open())
        close_and_finish(c, (505, 0, 0))
    assert_healthy(broker, unique)


def test_unknown_mechanism_is_a_silent_close(broker, unique):
    # rabbit_reader auth_mechanism_to_module: command_invalid in 'starting' -> silent close
    with RawClient(broker.port) as c:
        c.send_header()
        c.expect_method(0, C.Start)
        c.send_method(0, C.StartOk(client_properties={}, mechanism="EXTERNAL",
                                   response=b"", locale="en_US"))
        assert not any(f.method is not None for f in c.expect_eof())
    assert_healthy(broker, unique)


def test_bad_password_pika(broker, unique):
    params = pika_params(broker.port, credentials=pika.PlainCredentials("guest", "wrong"))
    with pytest.raises((pika.exceptions.ProbableAuthenticationError,
                        pika.exceptions.AuthenticationError)) as info:
        pika.BlockingConnection(params)
    assert "403" in str(info.value) or "ACCESS_REFUSED" in str(info.value)
    broker.wait_for_log("login refused")
    assert_healthy(broker, unique)


def test_unknown_user_pika(broker, unique):
    params = pika_params(broker.port, credentials=pika.PlainCredentials("nobody", "guest"))
    with pytest.raises((pika.exceptions.ProbableAuthenticationError,
                        pika.exceptions.AuthenticationError)):
        pika.BlockingConnection(params)
    assert_healthy(broker, unique)


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_bad_password_raw(broker, unique, mechanism):
    # auth_fail with the authentication_failure_close capability: connection.close 403,
    # reported against connection.start-ok (handle_method0 fills in the method)
    with RawClient(broker.port) as c:
        c.send_header()
        c.expect_method(0, C.Start)
        c.send_start_ok("guest", "nope", mechanism)
        close_and_finish(c, (403, C.StartOk.CLASS_ID, C.StartOk.METHOD_ID))
    assert_healthy(broker, unique)


def test_good_password_amqplain(broker, unique):
    with connect(broker.port, mechanism="AMQPLAIN") as c:
        c.open_channel(1)


def test_bad_password_without_capability_is_a_silent_close(broker, unique):
    # without authentication_failure_close RabbitMQ just closes
    with RawClient(broker.port) as c:
        c.send_header()
        c.expect_method(0, C.Start)
        c.send_start_ok("guest", "nope", "AMQPLAIN", capabilities={})
        assert not any(f.method is not None for f in c.expect_eof())
    assert_healthy(broker, unique)


def test_malformed_plain_response_is_a_silent_close(broker, unique):
    # rabbit_auth_mechanism_plain: {protocol_error, "response ~tp invalid"} -> syntax_error in
    # 'starting' -> silent close
    with RawClient(broker.port) as c:
        c.send_header()
        c.expect_method(0, C.Start)
        c.send_method(0, C.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN", response=b"no-nul-here", locale="en_US"))
        assert not any(f.method is not None for f in c.expect_eof())
    assert_healthy(broker, unique)


def test_missing_vhost(broker, unique):
    # rabbit_reader connection.open: not_allowed "vhost ~ts not found" (530) in 'opening'
    with connect(broker.port, open_=False) as c:
        c.send_method(0, C.Open(virtual_host="no-such-vhost"))
        close_and_finish(c, (530, C.Open.CLASS_ID, C.Open.METHOD_ID))
        assert "no-such-vhost" in c.last_close.reply_text
    assert_healthy(broker, unique)


def test_forbidden_vhost(broker_factory, tmp_path, unique):
    # rabbit_access_control:check_vhost_access -> not_allowed "access to vhost '~ts' refused
    # for user '~ts'" (530), answered with connection.close in 'opening'
    users = tmp_path / "users.toml"
    users.write_text(
        'vhosts = ["/", "private"]\n\n'
        f'[users.guest]\npassword_hash = "{hash_password("guest")}"\n\n'
        '[users.guest.permissions."/"]\nconfigure = ".*"\nwrite = ".*"\nread = ".*"\n'
    )
    b = broker_factory("--users-file", str(users))
    with connect(b.port, open_=False) as c:
        c.send_method(0, C.Open(virtual_host="private"))
        close_and_finish(c, (530, C.Open.CLASS_ID, C.Open.METHOD_ID))
        assert "refused for user 'guest'" in c.last_close.reply_text
    params = pika_params(b.port, virtual_host="private")
    with pytest.raises((pika.exceptions.ConnectionClosedByBroker,
                        pika.exceptions.ProbableAccessDeniedError)) as info:
        pika.BlockingConnection(params)
    assert "530" in str(info.value) or "NOT_ALLOWED" in str(info.value)
    assert_healthy(b, unique)


def test_missing_vhost_pika(broker, unique):
    params = pika_params(broker.port, virtual_host="no-such-vhost")
    with pytest.raises((pika.exceptions.ConnectionClosedByBroker,
                        pika.exceptions.ProbableAccessDeniedError)) as info:
        pika.BlockingConnection(params)
    assert "530" in str(info.value) or "NOT_ALLOWED" in str(info.value)
    assert_healthy(broker, unique)


TUNE = (C.Tune.CLASS_ID, C.Tune.METHOD_ID)  # validate_negotiated_integer_value: 'connection.tune'


@pytest.mark.parametrize("frame_max,channel_max", [
    (4095, None),  # below FRAME_MIN_SIZE
    (131072 * 2, None),  # above the server's frame_max
    (0, None),  # "no limit" while the server has one
    (None, 2048),  # above the server's channel_max
    (None, 0),
])
def test_tune_ok_out_of_bounds(broker, unique, frame_max, channel_max):
    # rabbit_reader validate_negotiated_integer_value -> not_allowed (530) in 'tuning', which
    # is answered with connection.close
    with connect(broker.port, frame_max=frame_max, channel_max=channel_max, open_=False) as c:
        close_and_finish(c, (530, *TUNE))
    assert_healthy(broker, unique)


def test_frames_after_close_are_ignored(broker, unique):
    """After the broker's connection.close only close/close-ok count; the rest is dropped."""
    with connect(broker.port) as c:
        c.send_method(0, Q.Declare(queue=unique))
        assert c.expect_close() == (504, *DECLARE)
        c.send_method(1, Ch.Open())  # dropped, no second error
        c.send_frame(FRAME_BODY, 5, b"junk")
        c.send_close_ok()
        frames = c.expect_eof()
        assert not any(f.method is not None for f in frames), frames
    assert_healthy(broker, unique)


# ---- soft errors ----


def test_oversize_message_raw(broker, unique):
    """A content header over --max-message-size: 406 on the channel (rabbit_channel
    check_msg_size), the rest of the message is skipped, the connection stays usable."""
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(1, B.Publish(exchange="", routing_key=unique))
        c.send_frame(FRAME_HEADER, 1, struct.pack(">HHQ", 60, 0, 200 * 1024 * 1024) + b"\x00\x00")
        c.send_frame(FRAME_BODY, 1, b"x" * 1000)
        assert c.expect_close() == (406, *PUBLISH)
        assert c.last_close_channel == 1
        c.send_method(1, Ch.CloseOk())
        c.open_channel(1)
        c.send_method(1, Q.Declare(queue=unique, auto_delete=True))
        c.expect_method(1, Q.DeclareOk)
    assert_healthy(broker, unique)


def test_oversize_message_pika(broker_factory, unique):
    b = broker_factory("--max-message-size", "64KiB")
    conn = pika.BlockingConnection(pika_params(b.port))
    try:
        ch = conn.channel()
        ch.queue_declare(unique, auto_delete=True)
        ch.basic_publish("", unique, b"x" * (100 * 1024))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.basic_get(unique)
        assert info.value.reply_code == 406
        ch2 = conn.channel()
        ch2.basic_publish("", unique, b"x" * (64 * 1024))
        method, _props, body = ch2.basic_get(unique, auto_ack=True)
        assert method is not None and len(body) == 64 * 1024
    finally:
        conn.close()
    assert_healthy(b, unique)


def test_eof_mid_frame_is_harmless(broker, unique):
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send(b"\x01\x00\x01\x00\x00\x00\x40abc")
    with RawClient(broker.port) as c:
        c.send(b"AMQ")
    assert_healthy(broker, unique)


def test_eof_during_handshake_raises_nothing(broker, unique):
    with RawClient(broker.port) as c:
        c.send_header()
        c.expect_method(0, C.Start)
    assert_healthy(broker, unique)


@pytest.mark.parametrize("cuts", [(3,), (1, 4), (2, 3, 5, 7)])
def test_protocol_header_in_pieces_is_accepted(broker, unique, cuts):
    """A header that arrives over several reads is assembled once (it was doubled once, which
    broke the connection with a frame error): the handshake completes and a queue works."""
    import time

    with RawClient(broker.port) as c:
        bounds = (0, *cuts, len(PROTOCOL_HEADER))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            c.send(PROTOCOL_HEADER[a:b])
            # not a wait for a condition: a pause so that the pieces reach the broker in
            # separate reads (the test passes either way on a correct broker)
            time.sleep(0.05)
        c.start = c.expect_method(0, _spec.Connection.Start)
        c.send_start_ok("guest", "guest")
        tune = c.expect_method(0, _spec.Connection.Tune)
        c.send_method(0, _spec.Connection.TuneOk(channel_max=tune.channel_max,
                                                 frame_max=tune.frame_max, heartbeat=0))
        c.send_method(0, _spec.Connection.Open(virtual_host="/"))
        c.expect_method(0, _spec.Connection.OpenOk)
        c.open_channel(1)
        c.send_method(1, _spec.Queue.Declare(queue=unique, auto_delete=True))
        c.expect_method(1, _spec.Queue.DeclareOk)
    assert_healthy(broker, unique)
