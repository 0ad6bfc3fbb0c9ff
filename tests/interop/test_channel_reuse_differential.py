"""Reusing a channel number after channel.close, against RabbitMQ 3.10.8 and syncmq, raw frames.

The number is free once the client has the close-ok (client-initiated close) or has sent its
close-ok (server-initiated close): a channel.open right then is answered with open-ok on both.
A channel.open sent before that (pipelined behind the client's own close, or before the
close-ok to the broker's close) is rabbit_channel's 504 "second 'channel.open' seen" on
RabbitMQ; syncmq dropped it, leaving the client waiting for an open-ok that never came.

Each scenario ends on an event (a reply that must come, or the socket closed after a
connection.close), and every frame read until then is compared, so a reply one broker sends
and the other does not shows.
"""

from __future__ import annotations

import amqp_raw as raw
import pytest

from syncmq.wire import _spec
from syncmq.wire.frames import encode_frame

Ch = _spec.Channel
Q = _spec.Queue
METHOD = _spec.FRAME_METHOD
CLOSE = Ch.Close(reply_code=200, reply_text="bye")
MISSING = Q.Declare(queue="no-such-queue-chreuse", passive=True)  # the broker's channel.close


def _batch(*methods) -> bytes:
    """Several methods on channel 1 in one write."""
    return b"".join(encode_frame(METHOD, 1, m.encode()) for m in methods)


def _seen(f: raw.Frame) -> tuple:
    m = f.method
    return (f.channel, m.NAME, getattr(m, "reply_code", None), getattr(m, "reply_text", None),
            getattr(m, "class_id", None), getattr(m, "method_id", None))


def _until(c: raw.RawClient, name: str) -> list:
    """Every method frame up to and including the first ``name`` one."""
    out = []
    while True:
        f = c.read_method()
        out.append(_seen(f))
        if f.method.NAME == name:
            return out


def _until_closed(c: raw.RawClient) -> list:
    """Every method frame up to the broker's connection.close; then close-ok and EOF."""
    out = _until(c, "connection.close")
    c.send_close_ok()
    c.expect_eof()
    return out


def _after_own_close(c: raw.RawClient) -> list:
    c.send_method(1, CLOSE)
    got = _until(c, "channel.close-ok")
    c.send_method(1, Ch.Open())  # at once, the number is free
    got += _until(c, "channel.open-ok")
    c.send_method(1, Q.Declare(queue="", exclusive=True))  # the new channel works
    return got + [_until(c, "queue.declare-ok")[-1][:2]]


def _after_broker_close(c: raw.RawClient) -> list:
    c.send_method(1, MISSING)
    got = _until(c, "channel.close")
    c.send(_batch(Ch.CloseOk(), Ch.Open()))  # close-ok and open in one write
    got += _until(c, "channel.open-ok")
    c.send_method(1, Q.Declare(queue="", exclusive=True))
    return got + [_until(c, "queue.declare-ok")[-1][:2]]


def _open_pipelined_behind_own_close(c: raw.RawClient) -> list:
    c.send(_batch(CLOSE, Ch.Open()))
    return _until_closed(c)


def _open_before_close_ok(c: raw.RawClient) -> list:
    c.send_method(1, MISSING)
    got = _until(c, "channel.close")
    c.send_method(1, Ch.Open())  # no close-ok first
    return got + _until_closed(c)


def _other_method_pipelined_behind_own_close(c: raw.RawClient) -> list:
    c.send(_batch(CLOSE, _spec.Basic.Qos(prefetch_count=5)))  # dropped, not answered
    got = _until(c, "channel.close-ok")
    c.send_method(1, Ch.Open())
    return got + _until(c, "channel.open-ok")


SCENARIOS = {
    "open right after close-ok": _after_own_close,
    "close-ok and open in one write": _after_broker_close,
    "open pipelined behind close": _open_pipelined_behind_own_close,
    "open before close-ok": _open_before_close_ok,
    "qos pipelined behind close": _other_method_pipelined_behind_own_close,
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_channel_number_reuse_like_rabbitmq(rabbitmq, broker, scenario):
    run = SCENARIOS[scenario]
    results = []
    for port in (rabbitmq.port, broker.port):
        with raw.connect(port) as c:
            c.open_channel(1)
            results.append(run(c))
        if run in (_open_pipelined_behind_own_close, _open_before_close_ok):
            assert results[-1][-1] == (
                0, "connection.close", 504, "CHANNEL_ERROR - second 'channel.open' seen",
                20, 10)
    assert results[1] == results[0]
    # syncmq still serves others
    with raw.connect(broker.port) as c:
        c.open_channel(1)
