"""The publish/deliver/ack hot path (issue #9): its fast paths must behave exactly as the
general ones.

- Sans-IO: ``ConnectionProtocol.receive`` decodes a publish (method + header + body) in one
  step when the three frames arrive in one batch; fed one frame at a time it takes the general
  path. Both must give the same events and the same errors for the same frames.
- ``encode_deliver`` builds a small delivery with one join: the same octets as
  ``encode_delivery``.
- Against a real broker, with several methods in one write (so that the broker sees them in
  one batch): a run of publishes is enqueued before a ``basic.get`` behind it, a run of acks
  is applied before the channel closes, and batched deliveries keep to the prefetch limits,
  the order and the redelivered flag.
"""

from __future__ import annotations

import pika
import pytest
from amqp_raw import FRAME_BODY, FRAME_HEADER, RawClient, connect
from fake_transport import content_frames, frames, method_frame, open_protocol

from syncmq.protocol.channel import (
    deliver_encoder,
    deliver_prefix,
    encode_confirm,
    encode_deliver,
)
from syncmq.protocol.connection import ChannelError, ConnectionProtocol
from syncmq.wire import _spec
from syncmq.wire.frames import encode_delivery, encode_frame, encode_method_frame, parse_frames

B = _spec.Basic
Q = _spec.Queue
Ch = _spec.Channel

# ---------------------------------------------------------------------------- sans-IO


_frames = frames
_method = method_frame
_content = content_frames


def _proto(max_body: int = 1 << 20, fast: bool = True) -> ConnectionProtocol:
    return open_protocol(max_body, fast=fast)


def _outcome(proto: ConnectionProtocol, batches: list[list]) -> tuple[list, object]:
    """Events (as comparable tuples) and the first error, if any, of feeding ``batches``: the
    events before the error are kept (``receive`` returns them with it), so the fast path must
    also agree on what precedes an error."""
    out: list = []

    def keep(events: list) -> None:
        for ch, m, props, body in events:
            fields = tuple(getattr(m, f) for f in m.FIELDS)
            out.append((ch, m.NAME, fields, props, None if body is None else bytes(body)))

    for batch in batches:
        rest = batch
        while rest:
            events, rest, error = proto.receive(rest)
            keep(events)
            if type(error) is ChannelError:
                e = error.error
                return out, ("channel", error.channel_id, e.reply_code, e.reply_text)
            if error is not None:
                return out, ("connection", error.reply_code, error.reply_text, error.class_id,
                             error.method_id)
    return out, None


PUB = _method(1, B.Publish(exchange="ex", routing_key="rk"))
CASES = {
    "one publish": [PUB, _content(1, b"hello")],
    "a run of publishes and acks": [PUB, _content(1, b"a"), PUB, _content(1, b"bb"),
                                    _method(1, B.Ack(delivery_tag=3, multiple=True)),
                                    _method(1, B.Publish(routing_key="other", mandatory=True)),
                                    _content(1, b"c")],
    "empty body": [PUB, _content(1, b""), PUB, _content(1, b"x")],
    "body in several frames": [PUB, _content(1, b"y" * 100, frame_max=40)],
    "interleaved channels": [PUB, _method(2, B.Publish(routing_key="two")), _content(1, b"1"),
                             _content(2, b"2")],
    "header of another class": [PUB, _content(1, b"z", class_id=50)],
    "header with a weight": [PUB, encode_frame(2, 1, b"\x00\x3c\x00\x01" + bytes(8) + b"\0\0")],
    "header too short": [PUB, encode_frame(2, 1, b"\x00\x3c\x00\x00")],
    "body over the declared size": [PUB, encode_frame(2, 1, b"\x00\x3c\x00\x00" + (2).to_bytes(
        8, "big") + b"\0\0"), encode_frame(3, 1, b"abc")],
    "body over max size": [PUB, _content(1, b"q" * 300), PUB, _content(1, b"ok")],
    "same headers, then another": [PUB, _content(1, b"aa"), PUB, _content(1, b"bb"), PUB,
                                   _content(1, b"c" * 3), PUB, _content(1, b"dd"),
                                   _method(2, B.Publish()), _content(2, b"ee"), PUB,
                                   _content(1, b"q" * 300)],
    "same header, body of another size": [PUB, _content(1, b"aa"), PUB,
                                          encode_frame(2, 1, b"\x00\x3c\x00\x00" + (2).to_bytes(
                                              8, "big") + b"\0\0"), encode_frame(3, 1, b"abc")],
    "truncated publish": [encode_frame(1, 1, b"\x00\x3c\x00\x28\x00\x00\x05ab"),
                          _content(1, b"x")],
    "publish with trailing octets": [encode_frame(1, 1, B.Publish().encode() + b"!"),
                                     _content(1, b"x")],
    "publish on a closed channel": [_method(3, B.Publish()), _content(3, b"x")],
    # found by fuzz/test_live_fuzz.py: the fast path's "no channel checked yet" was channel 0
    "publish on channel 0": [_method(0, B.Publish()), _content(0, b"x")],
    "ack on channel 0": [_method(0, B.Ack(delivery_tag=1))],
    "ack with trailing octets": [encode_frame(1, 1, B.Ack(delivery_tag=1).encode() + b"?")],
    "method inside content": [PUB, encode_frame(2, 1, b"\x00\x3c\x00\x00" + (5).to_bytes(
        8, "big") + b"\0\0"), _method(1, B.Ack(delivery_tag=1)), encode_frame(3, 1, b"12345")],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_gives_the_general_paths_events_and_errors(case: str) -> None:
    raw = CASES[case]
    frames = _frames(*raw)
    together = _outcome(_proto(max_body=200), [frames])
    one_by_one = _outcome(_proto(max_body=200), [[f] for f in frames])
    general_only = _outcome(_proto(max_body=200, fast=False), [frames])
    assert together == one_by_one == general_only
    if case in ("one publish", "a run of publishes and acks", "empty body",
                "interleaved channels", "body in several frames"):
        assert together[1] is None and together[0]


def test_fast_path_event_content() -> None:
    events, rest, error = _proto().receive(_frames(PUB, _content(1, b"hello", props=b"\x00\x00")))
    assert rest == [] and error is None
    [(ch, m, props, body)] = events
    assert (ch, type(m), m.exchange, m.routing_key, props, body) == (
        1, B.Publish, "ex", "rk", b"\x00\x00", b"hello")


def test_same_publish_method_is_decoded_once_per_channel() -> None:
    p = _proto()
    events, _, _ = p.receive(_frames(PUB, _content(1, b"1"), PUB, _content(1, b"2"),
                                  _method(1, B.Publish(routing_key="x")), _content(1, b"3")))
    assert events[0][1] is events[1][1]
    assert events[2][1] is not events[1][1] and events[2][1].routing_key == "x"


def test_oversize_body_is_a_soft_error_on_the_fast_path_too() -> None:
    events, err = _outcome(_proto(max_body=10), [_frames(PUB, _content(1, b"x" * 11))])
    assert events == [] and err[:3] == ("channel", 1, _spec.PRECONDITION_FAILED)


@pytest.mark.parametrize("size", [0, 1, 16, 4096, 4097, 10000])
@pytest.mark.parametrize("frame_max", [0, 4096, 131072])
@pytest.mark.parametrize("redelivered", [False, True])
def test_encode_deliver_matches_encode_delivery(size: int, frame_max: int,
                                                redelivered: bool) -> None:
    prefix = deliver_prefix("ctag")
    erk = b"\x02ex\x03key"
    props = b"\x10\x00\x02"
    body = bytes(range(256)) * (size // 256) + b"b" * (size % 256)
    got = b"".join(bytes(c) for c in encode_deliver(7, prefix, 12345, redelivered, erk, props,
                                                    body, frame_max))
    payload = prefix + (12345).to_bytes(8, "big") + bytes([redelivered]) + erk
    want = b"".join(bytes(c) for c in encode_delivery(7, payload, props, body, frame_max))
    assert got == want
    frames, used = parse_frames(got, frame_max)
    assert used == len(got)
    assert b"".join(p for t, _, p in frames if t == FRAME_BODY) == body
    assert _spec.decode_method(frames[0][2]).delivery_tag == 12345


@pytest.mark.parametrize("frame_max", [0, 4096])
def test_one_encoder_for_a_run_of_different_deliveries(frame_max: int) -> None:
    # deliver_encoder keeps the parts that depend on the exchange_rk and the sizes from one
    # delivery to the next: any change of them (or of the body's path) must show
    prefix = deliver_prefix("ctag")
    rk1, rk2 = b"\x02ex\x03key", b"\x00\x01q"
    items = [(rk1, b"\x00\x00", b"a" * 16), (rk1, b"\x00\x00", b"b" * 16),
             (bytes(rk1), b"\x00\x00", b"c" * 16), (rk2, b"\x00\x00", b"d" * 16),
             (rk2, b"\x10\x00\x02", b"e" * 16), (rk2, b"\x10\x00\x01", b"f" * 17),
             (rk2, b"\x10\x00\x01", b""), (rk2, b"\x10\x00\x01", b"g" * 5000),
             (rk2, b"\x10\x00\x01", b"h" * 17), (rk1, b"\x00\x00", b"i" * 16)]
    out: list = []
    encode = deliver_encoder(9, prefix, frame_max, out)
    want = b""
    for tag, (rk, props, body) in enumerate(items, 1):
        encode(tag, tag % 2 == 0, rk, props, body)
        payload = prefix + tag.to_bytes(8, "big") + bytes([tag % 2 == 0]) + rk
        want += b"".join(bytes(c) for c in encode_delivery(9, payload, props, body, frame_max))
    assert b"".join(bytes(c) for c in out) == want


@pytest.mark.parametrize("channel", [1, 65535])
@pytest.mark.parametrize("tag", [1, 2, 1 << 40, (1 << 64) - 1])
@pytest.mark.parametrize("multiple", [False, True])
def test_encode_confirm_matches_encoding_the_method(channel: int, tag: int,
                                                    multiple: bool) -> None:
    assert encode_confirm(channel, tag, multiple, False) == encode_method_frame(
        channel, B.Ack(delivery_tag=tag, multiple=multiple))
    assert encode_confirm(channel, tag, multiple, True) == encode_method_frame(
        channel, B.Nack(delivery_tag=tag, multiple=multiple, requeue=False))


# ---------------------------------------------------------------------------- broker


def _publish_bytes(ch: int, rk: str, body: bytes) -> bytes:
    return _method(ch, B.Publish(routing_key=rk)) + _content(ch, body, props=b"\x00\x00",
                                                             frame_max=131072)


def _declare(c: RawClient, name: str) -> None:
    c.send_method(1, Q.Declare(queue=name))
    c.expect_method(1, Q.DeclareOk)


def _ready(c: RawClient, name: str) -> int:
    c.send_method(1, Q.Declare(queue=name, passive=True))
    return c.expect_method(1, Q.DeclareOk).message_count


def _deliveries(c: RawClient, n: int) -> list[tuple[int, bool, bytes]]:
    """Read ``n`` deliveries (tag, redelivered, body)."""
    out = []
    while len(out) < n:
        f = c.read_method()
        assert isinstance(f.method, B.Deliver), f
        h = c.read_frame()
        assert h.type == FRAME_HEADER
        size = int.from_bytes(h.payload[4:12], "big")
        body = b""
        while len(body) < size:
            body += c.read_frame().payload
        out.append((f.method.delivery_tag, f.method.redelivered, body))
    return out


def test_publish_run_is_enqueued_before_a_get_behind_it(broker, unique) -> None:
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        c.send(b"".join(_publish_bytes(1, unique, b"m%d" % i) for i in range(50))
               + _method(1, B.Get(queue=unique, no_ack=True)))
        ok = c.expect_method(1, B.GetOk)
        assert ok.message_count == 49
        assert c.read_frame().type == FRAME_HEADER and c.read_frame().payload == b"m0"
        assert _ready(c, unique) == 49


def test_publishes_after_a_delete_and_declare_in_the_same_write_route_again(
        broker, unique) -> None:
    # A run of publishes of one method reuses its first publish's route (methods.basic.
    # publish); any other method in between, here the queue's deletion and a new declare,
    # must make the next publish route afresh (to the new queue, not the deleted one).
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        c.send(b"".join(_publish_bytes(1, unique, b"a%d" % i) for i in range(3))
               + _method(1, Q.Delete(queue=unique)) + _method(1, Q.Declare(queue=unique))
               + b"".join(_publish_bytes(1, unique, b"b%d" % i) for i in range(2)))
        assert c.expect_method(1, Q.DeleteOk).message_count == 3
        c.expect_method(1, Q.DeclareOk)
        assert _ready(c, unique) == 2


def test_publishes_after_a_bind_in_the_same_write_reach_the_new_queue(broker, unique) -> None:
    with connect(broker.port) as c:
        c.open_channel(1)
        a, b = unique + "-a", unique + "-b"
        _declare(c, a)
        _declare(c, b)
        c.send_method(1, Q.Bind(queue=a, exchange="amq.direct", routing_key=unique))
        c.expect_method(1, Q.BindOk)
        pub = _method(1, B.Publish(exchange="amq.direct", routing_key=unique))
        content = _content(1, b"x", props=b"\x00\x00", frame_max=131072)
        c.send(pub + content + pub + content
               + _method(1, Q.Bind(queue=b, exchange="amq.direct", routing_key=unique))
               + pub + content + pub + content + pub + content)
        c.expect_method(1, Q.BindOk)
        assert (_ready(c, a), _ready(c, b)) == (5, 3)


def test_acks_in_one_write_with_close_are_applied_first(broker, unique) -> None:
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        c.send(b"".join(_publish_bytes(1, unique, b"%d" % i) for i in range(10)))
        c.open_channel(2)
        c.send_method(2, B.Consume(queue=unique, consumer_tag="a"))
        c.expect_method(2, B.ConsumeOk)
        assert [t for t, _, _ in _deliveries(c, 10)] == list(range(1, 11))
        c.send(b"".join(_method(2, B.Ack(delivery_tag=t)) for t in (1, 3, 5, 6, 7))
               + _method(2, Ch.Close()))
        c.expect_method(2, Ch.CloseOk)
        # the five acked are gone; the other five are ready again
        assert _ready(c, unique) == 5
        c.send_method(1, B.Consume(queue=unique, consumer_tag="b", no_ack=True))
        c.expect_method(1, B.ConsumeOk)
        again = _deliveries(c, 5)
        assert [b for _, _, b in again] == [b"1", b"3", b"7", b"8", b"9"]
        assert all(r for _, r, _ in again)


def test_batched_delivery_keeps_to_the_consumer_prefetch(broker, unique) -> None:
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        c.send(b"".join(_publish_bytes(1, unique, b"%d" % i) for i in range(20)))
        assert _ready(c, unique) == 20
        c.send_method(1, B.Qos(prefetch_count=3))
        c.expect_method(1, B.QosOk)
        c.send_method(1, B.Consume(queue=unique, consumer_tag="p"))
        c.expect_method(1, B.ConsumeOk)
        first = _deliveries(c, 3)
        assert [b for _, _, b in first] == [b"0", b"1", b"2"]
        # the passive declare is answered after whatever the consume delivered: nothing more
        assert _ready(c, unique) == 17
        c.send_method(1, B.Ack(delivery_tag=2, multiple=True))
        more = _deliveries(c, 2)
        assert [(t, b) for t, _, b in more] == [(4, b"3"), (5, b"4")]
        assert _ready(c, unique) == 15


def test_batched_delivery_keeps_to_the_channel_prefetch(broker, unique) -> None:
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        c.send(b"".join(_publish_bytes(1, unique, b"%d" % i) for i in range(10)))
        c.send_method(1, B.Qos(prefetch_count=4, global_=True))
        c.expect_method(1, B.QosOk)
        c.send_method(1, B.Consume(queue=unique, consumer_tag="g"))
        c.expect_method(1, B.ConsumeOk)
        assert [b for _, _, b in _deliveries(c, 4)] == [b"0", b"1", b"2", b"3"]
        assert _ready(c, unique) == 6


def test_a_run_of_publishes_reaches_a_pika_consumer_in_order(broker, unique) -> None:
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=broker.port, connection_attempts=1, socket_timeout=10))
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)
            c.send(b"".join(_publish_bytes(1, unique, b"%d" % i) for i in range(1000)))
            seen = []
            for method, _props, body in ch.consume(unique, inactivity_timeout=10):
                assert method is not None, f"stalled after {len(seen)}"
                seen.append(int(body))
                ch.basic_ack(method.delivery_tag)
                if len(seen) == 1000:
                    break
            ch.cancel()
            assert seen == list(range(1000))
        finally:
            conn.close()


def test_frames_split_at_every_octet_are_reassembled(broker, unique) -> None:
    # the worker keeps a partial frame between inputs (Transport.rest)
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        data = _publish_bytes(1, unique, b"split" * 10) + _method(1, B.Get(queue=unique,
                                                                          no_ack=True))
        for i in range(len(data)):
            c.send(data[i:i + 1])
        ok = c.expect_method(1, B.GetOk)
        assert ok.message_count == 0
        assert c.read_frame().type == FRAME_HEADER
        assert c.read_frame().payload == b"split" * 10


def test_a_bad_frame_after_good_ones_in_one_read(broker, unique) -> None:
    # the publishes before a framing error are handled, then the connection is closed (501)
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        with connect(broker.port) as bad:
            bad.open_channel(1)
            bad.send(b"".join(_publish_bytes(1, unique, b"%d" % i) for i in range(5))
                     + encode_frame(1, 1, B.Get(queue=unique).encode())[:-1] + b"\x00")
            assert bad.expect_close()[0] == _spec.FRAME_ERROR
        assert _ready(c, unique) == 5


def test_a_frame_spanning_many_reads(broker_factory, unique) -> None:
    # a 3 MB body in one frame (frame_max 4 MiB) arrives in 64 KiB pieces: collected, joined
    # once, delivered intact
    b = broker_factory("--frame-max", str(4 * 1024 * 1024))
    body = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    with connect(b.port, frame_max=4 * 1024 * 1024) as c:
        c.open_channel(1)
        _declare(c, unique)
        data = _method(1, B.Publish(routing_key=unique)) + _content(
            1, body, props=b"\x00\x00", frame_max=4 * 1024 * 1024)
        assert data.count(b"\xce") >= 3
        for i in range(0, len(data), 65536):
            c.send(data[i:i + 65536])
        c.send_method(1, B.Get(queue=unique, no_ack=True))
        c.expect_method(1, B.GetOk)
        assert c.read_frame().type == FRAME_HEADER
        got = b""
        while len(got) < len(body):
            got += c.read_frame().payload
        assert got == body


def test_routing_key_that_is_not_utf8_is_delivered_as_sent(broker, unique) -> None:
    # the encoded exchange/routing key of a delivery carries the publish's octets
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        c.send_method(1, _spec.Exchange.Declare(exchange=unique, type="fanout"))
        c.expect_method(1, _spec.Exchange.DeclareOk)
        c.send_method(1, Q.Bind(queue=unique, exchange=unique))
        c.expect_method(1, Q.BindOk)
        raw_key = b"\xff\xfe-key"
        args = b"\x00\x00" + bytes([len(unique)]) + unique.encode() + bytes([len(raw_key)]) \
            + raw_key + b"\x00"
        for _ in range(2):  # the second one reuses the first one's decoded method
            c.send_raw_method(1, 60, 40, args)
            c.send_content(1, b"body")
        c.send_raw_method(1, 60, 40, b"\x00\x00\x00" + bytes([len(raw_key)]) + raw_key + b"\x00")
        c.send_content(1, b"to the default exchange: no such queue, dropped")
        c.send_method(1, B.Consume(queue=unique, consumer_tag="u", no_ack=True))
        c.expect_method(1, B.ConsumeOk)
        for _ in range(2):
            f = c.read_method()
            assert isinstance(f.method, B.Deliver), f
            assert f.payload.endswith(bytes([len(raw_key)]) + raw_key)
            assert c.read_frame().type == FRAME_HEADER
            assert c.read_frame().payload == b"body"
        assert _ready(c, unique) == 0


def test_mandatory_or_ttl_publish_after_a_run_keeps_the_channel_order(broker, unique) -> None:
    """A mandatory publish, or one with an expiration, goes to the queue at once; the run of
    plain publishes before it in the same read must be enqueued first (it was overtaken)."""
    ttl = _spec.BasicProperties(expiration="60000").encode()
    with connect(broker.port) as c:
        c.open_channel(1)
        _declare(c, unique)
        c.send(_publish_bytes(1, unique, b"a")
               + _method(1, B.Publish(routing_key=unique, mandatory=True)) + _content(1, b"b")
               + _publish_bytes(1, unique, b"c")
               + _method(1, B.Publish(routing_key=unique)) + _content(1, b"d", ttl)
               + _publish_bytes(1, unique, b"e"))
        got = []
        for _ in range(5):
            c.send_method(1, B.Get(queue=unique, no_ack=True))
            c.expect_method(1, B.GetOk)
            assert c.read_frame().type == FRAME_HEADER
            got.append(c.read_frame().payload)
        assert got == [b"a", b"b", b"c", b"d", b"e"]


def test_a_publish_the_route_cache_skipped_does_not_reuse_an_older_route(
        broker, unique) -> None:
    """The route cache is the last *cached* publish's, but ``last_publish`` is the last
    publish's: a publish that is not cached (mandatory, a rare property, a headers exchange)
    must not leave the older route valid for the next publish of its own method (review1)."""
    a, b, c_, d = (unique + s for s in ("-a", "-b", "-c", "-d"))
    ttl = _spec.BasicProperties(expiration="60000").encode()
    hdr = _spec.BasicProperties(headers={"k": "v"}).encode()
    with connect(broker.port) as c:
        c.open_channel(1)
        for q in (a, b, c_, d):
            _declare(c, q)
        c.send_method(1, Q.Bind(queue=d, exchange="amq.headers",
                                arguments={"x-match": "all", "k": "v"}))
        c.expect_method(1, Q.BindOk)
        mand = _method(1, B.Publish(routing_key=b, mandatory=True))
        plain_c = _method(1, B.Publish(routing_key=c_))
        to_headers = _method(1, B.Publish(exchange="amq.headers"))
        c.send(_publish_bytes(1, a, b"a1")
               + mand + _content(1, b"b1") + mand + _content(1, b"b2")
               + _publish_bytes(1, a, b"a2")
               + plain_c + _content(1, b"c1", ttl) + plain_c + _content(1, b"c2")
               + _publish_bytes(1, a, b"a3")
               + to_headers + _content(1, b"d1", hdr) + to_headers + _content(1, b"d2", hdr))
        assert (_ready(c, a), _ready(c, b), _ready(c, c_), _ready(c, d)) == (3, 2, 2, 2)
