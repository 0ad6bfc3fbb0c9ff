"""Unit tests of the codec: field values and tables, method and property encoding, frames.

Every malformed case is checked for its exact reply code (see syncmq/wire/frames.py and the
_spec.py docstring for where each code comes from in RabbitMQ).
"""

from __future__ import annotations

import datetime
import struct
from decimal import Decimal
from typing import Any

import pytest

from syncmq.wire import _spec
from syncmq.wire._spec import (
    METHODS,
    Basic,
    BasicProperties,
    Connection,
    Exchange,
    Queue,
    decode_method,
)
from syncmq.wire.errors import AMQPConnectionError
from syncmq.wire.fields import (
    MAX_DEPTH,
    decode_array,
    decode_longstr,
    decode_shortstr,
    decode_table,
    encode_array,
    encode_longstr,
    encode_shortstr,
    encode_table,
    encode_value,
)
from syncmq.wire.frames import (
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    encode_content,
    encode_delivery,
    encode_frame,
    encode_method_frame,
    parse_content_header,
    parse_frames,
    split_frames,
)


def expect_error(code: int, fn: Any, *args: Any) -> AMQPConnectionError:
    with pytest.raises(AMQPConnectionError) as info:
        fn(*args)
    assert info.value.reply_code == code, info.value
    assert info.value.reply_text.startswith(_spec.REPLY_NAMES[code] + " - ")
    return info.value


def table_bytes(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack(">I", len(body)) + body


def entry(key: bytes, code: bytes, value: bytes) -> bytes:
    return bytes((len(key),)) + key + code + value


# ---------------------------------------------------------------------------------------------
# field values


@pytest.mark.parametrize(
    ("code", "raw", "expected"),
    [
        (b"t", b"\x01", True),
        (b"t", b"\x00", False),
        (b"t", b"\x07", True),
        (b"b", b"\xff", -1),
        (b"B", b"\xff", 255),
        (b"s", b"\xff\xfe", -2),
        (b"u", b"\xff\xfe", 65534),
        (b"I", b"\xff\xff\xff\xfd", -3),
        (b"i", b"\xff\xff\xff\xfd", 2**32 - 3),
        (b"l", struct.pack(">q", -(2**40)), -(2**40)),
        (b"L", struct.pack(">q", -5), -5),
        (b"f", struct.pack(">f", 1.5), 1.5),
        (b"d", struct.pack(">d", -2.25), -2.25),
        (b"D", b"\x02" + struct.pack(">i", -12345), Decimal("-123.45")),
        (b"S", b"\x00\x00\x00\x05h\xc3\xa9lo", "h\u00e9lo"),
        (b"S", b"\x00\x00\x00\x02\xff\xfe", b"\xff\xfe"),
        (b"x", b"\x00\x00\x00\x03\x00\x01\x02", b"\x00\x01\x02"),
        (b"V", b"", None),
        (b"T", struct.pack(">Q", 1_700_000_000), datetime.datetime(2023, 11, 14, 22, 13, 20)),
        (b"T", struct.pack(">Q", 2**64 - 1), 2**64 - 1),  # past year 9999: kept as a number
        (b"A", table_bytes(b"I\x00\x00\x00\x01", b"Sx\x00\x00\x00\x01a"[1:]), None),
        (b"F", table_bytes(entry(b"k", b"V", b"")), {"k": None}),
    ],
)
def test_decode_each_field_type(code: bytes, raw: bytes, expected: Any) -> None:
    if code == b"A":
        raw = table_bytes(b"I\x00\x00\x00\x01", b"S\x00\x00\x00\x01a", b"t\x01")
        expected = [1, "a", True]
    data = table_bytes(entry(b"key", code, raw))
    table, offset = decode_table(data, 0)
    assert offset == len(data)
    assert table == {"key": expected}
    assert type(table["key"]) is type(expected)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (True, b"t"),
        (False, b"t"),
        (0, b"I"),
        (2**31 - 1, b"I"),
        (-(2**31), b"I"),
        (2**31, b"l"),
        (-(2**63), b"l"),
        (2**64 - 1, b"T"),
        (1.5, b"d"),
        (Decimal("1.50"), b"D"),
        ("text", b"S"),
        (b"raw", b"x"),
        (bytearray(b"raw"), b"x"),
        ({"a": 1}, b"F"),
        ([1, 2], b"A"),
        ((1, 2), b"A"),
        (datetime.datetime(2020, 1, 1), b"T"),
        (None, b"V"),
    ],
)
def test_encode_picks_the_type_from_the_value(value: Any, code: bytes) -> None:
    encoded = encode_value(value)
    assert encoded[:1] == code
    table, _ = decode_table(encode_table({"v": value}))
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bytearray):
        value = bytes(value)
    assert table == {"v": value}


def test_encode_exact_bytes() -> None:
    assert encode_table({"a": 1}) == table_bytes(entry(b"a", b"I", b"\x00\x00\x00\x01"))
    assert encode_table(None) == encode_table({}) == b"\x00\x00\x00\x00"
    assert encode_value(Decimal("-1.25")) == b"D\x02" + struct.pack(">i", -125)
    assert encode_value(Decimal("1E+3")) == b"D\x00" + struct.pack(">i", 1000)
    aware = datetime.datetime(2020, 1, 1, 1, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert encode_value(aware) == encode_value(datetime.datetime(2020, 1, 1))


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, Decimal("NaN"), Decimal("1e-300"), Decimal(2**40), object(), {1: 2},
     {"k" * 256: 1}, datetime.datetime(1969, 12, 31)],
)
def test_unencodable_values_raise_internal_error(value: Any) -> None:
    table = value if isinstance(value, dict) else {"v": value}
    expect_error(541, encode_table, table)


def test_nesting_is_bounded_on_encode() -> None:
    deep: dict[str, Any] = {}
    for _ in range(MAX_DEPTH + 2):
        deep = {"n": deep}
    expect_error(541, encode_table, deep)
    loop: list[Any] = []
    loop.append(loop)
    expect_error(541, encode_array, loop)


def test_array_and_string_helpers() -> None:
    raw = encode_array([1, "two", [3.0], {"four": None}])
    assert decode_array(raw) == ([1, "two", [3.0], {"four": None}], len(raw))
    assert decode_array(b"xx" + raw, 2) == ([1, "two", [3.0], {"four": None}], len(raw) + 2)
    assert encode_shortstr("h\u00e9") == b"\x03h\xc3\xa9"
    assert decode_shortstr(b"\x03h\xc3\xa9") == ("h\u00e9", 4)
    assert encode_longstr("ab") == b"\x00\x00\x00\x02ab"
    assert decode_longstr(memoryview(b"\x00\x00\x00\x02ab")) == (b"ab", 6)
    expect_error(541, encode_shortstr, "x" * 256)
    expect_error(502, decode_shortstr, b"\x05ab")
    expect_error(502, decode_shortstr, b"")
    expect_error(502, decode_longstr, b"\x00\x00\x00\x05ab")
    expect_error(502, decode_longstr, b"\x00\x00")


def test_keys_round_trip_any_octets() -> None:
    data = table_bytes(entry(b"\xff\xfe", b"V", b""), entry(b"", b"t", b"\x01"))
    table, _ = decode_table(data)
    assert table == {"\udcff\udcfe": None, "": True}
    assert encode_table(table) == data


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no length
        b"\x00\x00",  # truncated length
        b"\x00\x00\x00\x05abc",  # length past the end
        table_bytes(entry(b"k", b"Z", b"")),  # unknown type code
        table_bytes(entry(b"k", b"I", b"\x00\x00")),  # truncated int32
        table_bytes(entry(b"k", b"S", b"\x00\x00\x00\x09abc")),  # long string past the end
        table_bytes(entry(b"k", b"F", b"\x00\x00\x00\x09abc")),  # nested table past the end
        table_bytes(entry(b"k", b"A", b"\x00\x00\x00\x01Z")),  # bad type inside an array
        table_bytes(b"\x05ab"),  # key past the end
        table_bytes(b"\x02ab"),  # key but no type code
        table_bytes(entry(b"k", b"D", b"\x01\x00")),  # truncated decimal
        table_bytes(entry(b"k", b"T", b"\x00" * 7)),  # truncated timestamp
    ],
)
def test_malformed_tables_raise_syntax_error(data: bytes) -> None:
    expect_error(502, decode_table, data, 0)


def test_deep_nesting_is_a_syntax_error_not_recursion_error() -> None:
    inner = b""
    for _ in range(5000):
        inner = table_bytes(entry(b"n", b"F", inner or b"\x00\x00\x00\x00"))
    expect_error(502, decode_table, inner)
    ok = encode_table(_nest(MAX_DEPTH))
    assert decode_table(ok)[0] == _nest(MAX_DEPTH)


def _nest(levels: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for _ in range(levels):
        table = {"n": table}
    return table


def test_decode_table_accepts_offsets_and_views() -> None:
    data = b"junk" + encode_table({"a": "b"}) + b"tail"
    table, end = decode_table(memoryview(data), 4)
    assert table == {"a": "b"} and data[end:] == b"tail"
    table, end = decode_table(bytearray(data), 4)
    assert table == {"a": "b"}


# ---------------------------------------------------------------------------------------------
# methods


def test_queue_declare_bit_packing() -> None:
    m = Queue.Declare(queue="q", passive=True, exclusive=True, no_wait=True, arguments={"x": 1})
    payload = m.encode()
    # class 50, method 10, reserved short, shortstr "q", one octet of bits, table
    assert payload[:9] == b"\x00\x32\x00\x0a\x00\x00\x01q" + bytes((1 | 4 | 16,))
    assert decode_method(payload) == m
    every = Queue.Declare(passive=True, durable=True, exclusive=True, auto_delete=True, no_wait=True)
    assert every.encode()[7] == 0b11111  # ids, reserved short, empty queue name, bits
    back = decode_method(every.encode())
    assert (back.passive, back.durable, back.exclusive, back.auto_delete, back.no_wait) == (True,) * 5


def test_exchange_declare_and_deliver_bits() -> None:
    m = Exchange.Declare(exchange="e", type="topic", durable=True, internal=True)
    assert decode_method(m.encode()) == m
    assert m.encode()[-5] == 2 | 8
    d = Basic.Deliver(consumer_tag="c", delivery_tag=2**64 - 1, redelivered=True, routing_key="r")
    assert decode_method(d.encode()) == d


def test_encoding_matches_pika() -> None:
    pika_spec = pytest.importorskip("pika.spec")
    cases = [
        (Basic.Publish(exchange="ex", routing_key="rk", mandatory=True),
         pika_spec.Basic.Publish(exchange="ex", routing_key="rk", mandatory=True)),
        (Queue.Declare(queue="q", durable=True, arguments={"x-max-priority": 10}),
         pika_spec.Queue.Declare(queue="q", durable=True, arguments={"x-max-priority": 10})),
        (Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60),
         pika_spec.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60)),
        (Basic.Nack(delivery_tag=7, multiple=True, requeue=False),
         pika_spec.Basic.Nack(delivery_tag=7, multiple=True, requeue=False)),
        (Basic.Qos(prefetch_count=10, global_=True),
         pika_spec.Basic.Qos(prefetch_count=10, global_qos=True)),
        (Connection.Close(reply_code=320, reply_text="bye", class_id=10, method_id=50),
         pika_spec.Connection.Close(reply_code=320, reply_text="bye", class_id=10, method_id=50)),
    ]
    for ours, theirs in cases:
        expected = struct.pack(">I", theirs.INDEX) + b"".join(theirs.encode())
        assert ours.encode() == expected, ours
    props = BasicProperties(content_type="text/plain", headers={"a": "b"}, delivery_mode=2,
                            priority=3, timestamp=1234, app_id="app")
    theirs = pika_spec.BasicProperties(content_type="text/plain", headers={"a": "b"},
                                       delivery_mode=2, priority=3, timestamp=1234, app_id="app")
    assert props.encode() == b"".join(theirs.encode())


def test_every_method_round_trips_with_defaults() -> None:
    for cls in METHODS.values():
        m = cls()
        payload = m.encode()
        assert struct.unpack(">I", payload[:4])[0] == cls.INDEX
        assert decode_method(payload) == m
        assert decode_method(memoryview(payload)) == m
        assert decode_method(bytearray(payload)) == m


def test_method_values_and_types() -> None:
    start = Connection.Start(version_major=0, version_minor=9, server_properties={"product": "x"},
                             mechanisms="PLAIN AMQPLAIN", locales=b"en_US")
    back = decode_method(start.encode())
    assert back.mechanisms == b"PLAIN AMQPLAIN" and back.locales == b"en_US"
    assert back.server_properties == {"product": "x"}
    ok = decode_method(Connection.StartOk(mechanism="PLAIN", response=b"\x00guest\x00guest").encode())
    assert ok.response == b"\x00guest\x00guest" and ok.client_properties == {}
    assert Queue.Bind(arguments=None) == Queue.Bind(arguments={})
    assert Queue.Bind(queue="a") != Queue.Bind(queue="b")
    assert Queue.Bind() != Queue.Unbind()
    assert repr(Basic.Ack(delivery_tag=1)) == "Basic.Ack(delivery_tag=1, multiple=False)"
    assert Basic.Ack(2, True) == Basic.Ack(delivery_tag=2, multiple=True)
    with pytest.raises(AttributeError):
        Basic.Ack().unknown = 1  # type: ignore[attr-defined]


def test_reply_text_is_truncated_not_rejected() -> None:
    close = decode_method(Connection.Close(reply_code=404, reply_text="\u00e9" * 200).encode())
    assert close.reply_text == "\u00e9" * 127  # 254 octets: cut at a character boundary
    close = decode_method(_spec.Channel.Close(reply_code=404, reply_text="x" * 300).encode())
    assert close.reply_text == "x" * 255


def test_encode_errors_are_internal_errors_with_ids() -> None:
    err = expect_error(541, Queue.Declare(queue="q" * 256).encode)
    assert (err.class_id, err.method_id) == (50, 10)
    err = expect_error(541, Basic.Ack(delivery_tag=-1).encode)
    assert (err.class_id, err.method_id) == (60, 80)
    expect_error(541, Basic.Publish(exchange=3).encode)  # type: ignore[arg-type]
    expect_error(541, Queue.Declare(arguments={"k": object()}).encode)


def test_unknown_class_or_method() -> None:
    err = expect_error(540, decode_method, b"\x03\xe7\x00\x01")
    assert (err.class_id, err.method_id) == (999, 1)
    err = expect_error(540, decode_method, b"\x00\x3c\x00\x63")
    assert (err.class_id, err.method_id) == (60, 99)
    assert "basic" in err.reply_text


def test_short_method_payload() -> None:
    for payload in (b"", b"\x00", b"\x00\x3c\x00"):
        expect_error(501, decode_method, payload)


def test_truncated_and_trailing_arguments() -> None:
    payload = Basic.Publish(exchange="ex", routing_key="rk").encode()
    for cut in range(4, len(payload)):
        err = expect_error(501, decode_method, payload[:cut])
        assert (err.class_id, err.method_id) == (60, 40)
    err = expect_error(501, decode_method, payload + b"\x00")
    assert "trailing" in err.reply_text
    expect_error(501, decode_method, Basic.Ack().encode() + b"x")
    expect_error(501, decode_method, Connection.CloseOk().encode() + b"x")
    expect_error(501, decode_method, Queue.Declare().encode()[:-1])


def test_malformed_utf8_in_shortstr() -> None:
    bad = b"\x00\x32\x00\x0a\x00\x00\x02\xff\xfe\x00\x00\x00\x00\x00"
    err = expect_error(501, decode_method, bad)  # queue.declare: RabbitMQ asserts UTF-8
    assert (err.class_id, err.method_id) == (50, 10)
    publish = b"\x00\x3c\x00\x28\x00\x00\x00\x02\xff\xfe\x00"  # content method: not checked
    m = decode_method(publish)
    assert m.routing_key == "\udcff\udcfe"
    assert m.encode() == publish


def test_bad_table_inside_a_method() -> None:
    payload = Queue.Declare(queue="q", arguments={"k": 1}).encode()
    bad = payload[:-5] + b"Z" + payload[-4:]  # unknown field type code
    err = expect_error(502, decode_method, bad)
    assert (err.class_id, err.method_id) == (50, 10)
    # a table length past the end is a truncated method, as RabbitMQ's "cannot decode"
    expect_error(501, decode_method, payload[:-9] + b"\x00\x00\x00\xff" + payload[-5:])


# ---------------------------------------------------------------------------------------------
# content properties


def test_properties_flags_and_round_trip() -> None:
    assert BasicProperties().encode() == b"\x00\x00"
    assert BasicProperties.decode(b"\x00\x00") == BasicProperties()
    assert BasicProperties(content_type="a").encode()[:2] == b"\x80\x00"
    assert BasicProperties(cluster_id="c").encode()[:2] == b"\x00\x04"
    full = BasicProperties(
        content_type="application/json", content_encoding="gzip",
        headers={"h": [1, {"x": b"y"}]}, delivery_mode=2, priority=9, correlation_id="c",
        reply_to="amq.rabbitmq.reply-to", expiration="60000", message_id="m",
        timestamp=1_700_000_000, type="t", user_id="guest", app_id="a", cluster_id="",
    )
    raw = full.encode()
    assert raw[:2] == b"\xff\xfc"
    assert BasicProperties.decode(raw) == full
    assert BasicProperties.decode(memoryview(raw)) == full
    assert BasicProperties(headers={}).encode() == b"\x20\x00\x00\x00\x00\x00"
    assert "priority=9" in repr(full) and repr(BasicProperties()) == "BasicProperties()"


def test_properties_ignore_the_continuation_bits() -> None:
    assert BasicProperties.decode(b"\x00\x01") == BasicProperties()
    assert BasicProperties.decode(b"\x00\x03") == BasicProperties()


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x80", b"\x80\x00", b"\x80\x00\x05ab", b"\x00\x00x", b"\x20\x00\x00\x00\x00\x05V",
     b"\x20\x00" + table_bytes(entry(b"k", b"Z", b"")), b"\x10\x00", b"\x00\x40\x00\x00\x00"],
)
def test_malformed_properties_raise_syntax_error(raw: bytes) -> None:
    expect_error(502, BasicProperties.decode, raw)


def test_property_encode_errors() -> None:
    expect_error(541, BasicProperties(priority=256).encode)
    expect_error(541, BasicProperties(message_id="m" * 256).encode)


# ---------------------------------------------------------------------------------------------
# frames


def test_constants() -> None:
    assert PROTOCOL_HEADER == b"AMQP\x00\x00\x09\x01"
    assert parse_frames(HEARTBEAT_FRAME, 0) == ([(8, 0, b"")], 8)
    assert encode_frame(8, 0, b"") == HEARTBEAT_FRAME


def test_parse_frames_leaves_incomplete_data() -> None:
    frame = encode_method_frame(3, Basic.Ack(delivery_tag=1))
    stream = frame + frame
    for cut in range(len(stream) + 1):
        frames, used = parse_frames(stream[:cut], 4096)
        complete = cut // len(frame)
        assert used == complete * len(frame)
        assert frames == [(1, 3, frame[7:-1])] * complete


def test_parse_frames_payloads_are_bytes_and_buffer_stays_resizable() -> None:
    frame = encode_frame(3, 1, b"body")
    for buf in (bytearray(frame * 2 + b"\x03"), memoryview(bytearray(frame * 2))):
        frames, used = parse_frames(buf, 0)
        assert [type(p) for _, _, p in frames] == [bytes, bytes]
        assert used == 2 * len(frame)
        if isinstance(buf, bytearray):
            del buf[:used]  # would raise BufferError if a view were still exported
            assert buf == b"\x03"


def test_oversize_frame_is_rejected_from_its_header() -> None:
    header_only = struct.pack(">BHI", 3, 1, 4096 - 7)
    err = expect_error(501, parse_frames, header_only, 4096)
    assert "frame_max" in err.reply_text
    assert parse_frames(struct.pack(">BHI", 3, 1, 4096 - 8), 4096) == ([], 0)
    frame = encode_frame(3, 1, b"x" * (4096 - 8))
    assert len(parse_frames(frame, 4096)[0]) == 1
    assert len(parse_frames(frame + b"", 0)[0]) == 1
    assert len(parse_frames(encode_frame(3, 1, b"x" * 4096), 4096, slack=8)[0]) == 1


def test_bad_frame_end_unknown_type_and_heartbeat_payload() -> None:
    good = encode_frame(1, 0, Connection.CloseOk().encode())
    err = expect_error(501, parse_frames, good + good[:-1] + b"\x00", 0)
    assert "frame end" in err.reply_text
    # split_frames returns the frames before the bad one, their length and the error
    frames, consumed, error = split_frames(good + good[:-1] + b"\x00", 0)
    assert frames == [(1, 0, good[7:-1])] and consumed == len(good)
    assert (error.reply_code, error.reply_text) == (err.reply_code, err.reply_text)
    assert split_frames(good + good, 0) == ([(1, 0, good[7:-1])] * 2, 2 * len(good), None)
    expect_error(501, parse_frames, encode_frame(4, 0, b""), 0)
    expect_error(501, parse_frames, encode_frame(0, 0, b"x"), 0)
    expect_error(501, parse_frames, encode_frame(8, 0, b"x"), 0)


def _split_one_by_one(buf: bytes, frame_max: int) -> tuple:
    """split_frames' contract, one frame at a time (the reference for its trio path)."""
    limit = frame_max - 8 if frame_max > 0 else 0xFFFFFFFF
    frames, pos = [], 0
    while pos + 7 <= len(buf):
        ftype, channel, size = struct.unpack_from(">BHI", buf, pos)
        if size > limit:
            return frames, pos, "large"
        end = pos + 7 + size
        if end >= len(buf):
            break
        if buf[end] != 206:
            return frames, pos, "end"
        if ftype in (1, 2, 3):
            frames.append((ftype, channel, buf[pos + 7:end]))
        elif ftype == 8 and not size:
            frames.append((8, channel, b""))
        else:
            return frames, pos, "type"
        pos = end + 1
    return frames, pos, None


def _trio(channel: int, sizes: tuple[int, int, int]) -> bytes:
    return b"".join(encode_frame(t, channel, bytes([t]) * n) for t, n in zip((1, 2, 3), sizes, strict=True))


def test_split_frames_takes_runs_of_same_sized_trios_as_frame_by_frame() -> None:
    # split_frames takes a run of (method, header, body) frames of the sizes of the last
    # three in one unpack: the same frames, octets consumed and error as frame by frame,
    # whatever breaks the run (another size, type or channel, a bad end octet, an oversize
    # frame, a heartbeat, a cut anywhere)
    import random
    rnd = random.Random(22)
    shapes = [(9, 14, 16), (9, 14, 17), (12, 14, 16), (9, 15, 16), (20, 14, 1)]
    for case in range(1500):
        parts = []
        for _ in range(rnd.randint(1, 12)):
            r = rnd.random()
            if r < 0.8:
                parts.append(_trio(rnd.choice((1, 1, 2)), rnd.choice(shapes[:2] if
                                                                    case % 2 else shapes)))
            elif r < 0.9:
                parts.append(HEARTBEAT_FRAME)
            else:
                parts.append(encode_frame(1, 1, b"m" * rnd.randint(0, 30)))
        buf = bytearray(b"".join(parts))
        if case % 3 == 0:  # a mutation anywhere: an end octet, a type, a size, a payload
            buf[rnd.randrange(len(buf))] = rnd.choice((0, 1, 2, 3, 8, 206, 255))
        if case % 4 == 0:
            del buf[rnd.randrange(len(buf)):]
        buf = bytes(buf)
        frame_max = rnd.choice((0, 0, 30, 4096))
        frames, consumed, error = split_frames(buf, frame_max)
        want = _split_one_by_one(buf, frame_max)
        assert (frames, consumed) == want[:2], case
        assert (error is None) == (want[2] is None), case
        if error is not None:
            assert {"large": "larger", "end": "frame end", "type": "frame"}[want[2]] in (
                error.reply_text), case
    # every octet of a run's later trios changed, one at a time
    run = _trio(1, shapes[0]) * 4
    for i in range(len(run) // 4, len(run)):
        for value in (0, 2, 206, 255):
            buf = run[:i] + bytes([value]) + run[i + 1:]
            frames, consumed, error = split_frames(buf, 0)
            want = _split_one_by_one(buf, 0)
            assert ((frames, consumed), error is None) == (want[:2], want[2] is None), (i, value)


def test_parse_content_header() -> None:
    payload = struct.pack(">HHQ", 60, 0, 12345) + b"\x80\x00\x01a"
    assert parse_content_header(payload) == (60, 12345, b"\x80\x00\x01a")
    assert parse_content_header(memoryview(payload)) == (60, 12345, b"\x80\x00\x01a")
    for cut in range(14):
        expect_error(501, parse_content_header, payload[:cut])
    err = expect_error(505, parse_content_header, struct.pack(">HHQ", 60, 1, 0) + b"\x00\x00")
    assert err.class_id == 60


def _reparse(chunks: list[Any]) -> list[tuple[int, int, bytes]]:
    stream = b"".join(bytes(c) for c in chunks)
    frames, used = parse_frames(stream, 0)
    assert used == len(stream)
    return frames


@pytest.mark.parametrize("size", [0, 1, 100, 4088, 4089, 8176, 8177, 100_000])
def test_encode_content_splits_at_frame_max(size: int) -> None:
    body = bytes(i % 251 for i in range(size))
    props = BasicProperties(delivery_mode=2).encode()
    frames = _reparse(encode_content(5, 60, props, body, 4096))
    assert frames[0] == (2, 5, struct.pack(">HHQ", 60, 0, size) + props)
    bodies = [p for t, _, p in frames[1:]]
    assert all(t == 3 for t, _, _ in frames[1:])
    assert all(len(p) <= 4088 for p in bodies)
    assert all(len(p) == 4088 for p in bodies[:-1])
    assert len(bodies) == -(-size // 4088)
    assert b"".join(bodies) == body


def test_large_bodies_are_not_copied() -> None:
    body = bytes(50_000)
    chunks = encode_content(1, 60, b"\x00\x00", body, 4096)
    views = [c for c in chunks if isinstance(c, memoryview)]
    assert views and all(v.obj is body for v in views)
    single = encode_content(1, 60, b"\x00\x00", body, 0)
    assert any(c is body for c in single)
    assert len(_reparse(single)) == 2
    expect_error(541, encode_content, 1, 60, b"\x00\x00", b"x", 8)


def test_encode_delivery_equals_method_plus_content() -> None:
    method = Basic.Deliver(consumer_tag="ctag", delivery_tag=9, exchange="ex", routing_key="rk")
    props = BasicProperties(content_type="text/plain").encode()
    for body in (b"", b"hi", bytes(5000), bytes(20000)):
        chunks = encode_delivery(7, method.encode(), props, body, 8192)
        expected = encode_method_frame(7, method) + b"".join(
            bytes(c) for c in encode_content(7, 60, props, body, 8192)
        )
        assert b"".join(bytes(c) for c in chunks) == expected
    assert len(encode_delivery(7, method.encode(), props, b"hi", 8192)) == 1


def test_method_frame_round_trip() -> None:
    frame = encode_method_frame(2, Basic.Publish(exchange="e", routing_key="r"))
    (ftype, channel, payload), = parse_frames(frame, 4096)[0]
    assert (ftype, channel) == (1, 2)
    assert decode_method(payload) == Basic.Publish(exchange="e", routing_key="r")
