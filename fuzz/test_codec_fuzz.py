"""Hypothesis fuzzing of the wire codec.

Properties: every generated method, field table and set of content properties round-trips
through encode/decode; arbitrary (and mutated valid) octets fed to any decoder either parse or
raise AMQPConnectionError, nothing else; a valid frame stream fed in arbitrary chunk sizes
yields the same frames as fed whole; content encoding splits and reassembles any body.

The strategies are derived from the generated classes' ``FIELD_TYPES``, so a new method in the
spec is fuzzed without touching this file. Failures found by Hypothesis stay as ``@example``s.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from syncmq.wire import _spec
from syncmq.wire._spec import METHODS, BasicProperties, decode_method
from syncmq.wire.errors import AMQPConnectionError
from syncmq.wire.fields import decode_array, decode_table, encode_array, encode_table
from syncmq.wire.frames import (
    encode_content,
    encode_delivery,
    encode_frame,
    parse_content_header,
    parse_frames,
)

# ---------------------------------------------------------------------------------------------
# strategies

# Text without surrogates (those cannot be UTF-8 encoded); bounded so that it fits a shortstr.
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def _shortstr(max_octets: int = 255) -> st.SearchStrategy[str]:
    return st.text(st.characters(blacklist_categories=("Cs",)), max_size=max_octets).filter(
        lambda s: len(s.encode("utf-8")) <= max_octets
    )


_keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_decimals = st.builds(
    lambda value, scale: Decimal(value).scaleb(-scale),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 30),
)
_datetimes = st.datetimes(
    min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(9999, 12, 31)
).map(lambda d: d.replace(microsecond=0))

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    _text,
    st.binary(max_size=40),
    _decimals,
    _datetimes,
)

field_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)
    ),
    max_leaves=20,
)
tables = st.dictionaries(_keys, field_values, max_size=8)

_by_type: dict[str, st.SearchStrategy[Any]] = {
    "octet": st.integers(0, 2**8 - 1),
    "short": st.integers(0, 2**16 - 1),
    "long": st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 2**64 - 1),
    "timestamp": st.integers(0, 2**64 - 1),
    "bit": st.booleans(),
    "shortstr": _shortstr(),
    "longstr": st.binary(max_size=300),
    "table": st.one_of(st.none(), tables),
}


def _instances(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(
        lambda values: cls(**values),
        st.fixed_dictionaries({n: _by_type[t] for n, t in zip(cls.FIELDS, cls.FIELD_TYPES, strict=True)}),
    )


methods = st.one_of([_instances(cls) for cls in METHODS.values()])
properties = st.builds(
    lambda values: BasicProperties(**values),
    st.fixed_dictionaries(
        {
            n: st.one_of(st.none(), _by_type[t])
            for n, t in zip(BasicProperties.FIELDS, BasicProperties.FIELD_TYPES, strict=True)
        }
    ),
)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with a few random edits: flip, insert, delete or truncate."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(data)))
        if action == "set" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete" and pos < len(data):
            del data[pos]
        elif action == "truncate":
            del data[pos:]
    return bytes(data)


def _decodes_or_protocol_error(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except AMQPConnectionError as exc:
        assert exc.reply_code in _spec.HARD_ERRORS, exc
        assert isinstance(exc.reply_text, str)
        return None


# ---------------------------------------------------------------------------------------------
# round trips


@given(methods)
def test_every_method_round_trips(method: _spec.Method) -> None:
    payload = method.encode()
    assert decode_method(payload) == method
    assert decode_method(memoryview(payload)) == method


@given(tables)
@example({"": None})
@example({"n": {"n": {"n": []}}})
def test_field_tables_round_trip(table: dict[str, Any]) -> None:
    raw = encode_table(table)
    assert decode_table(raw, 0) == (table, len(raw))
    assert decode_table(b"pad" + raw, 3) == (table, len(raw) + 3)


@given(st.lists(field_values, max_size=8))
def test_field_arrays_round_trip(items: list[Any]) -> None:
    raw = encode_array(items)
    assert decode_array(raw) == (items, len(raw))


@given(properties)
def test_basic_properties_round_trip(props: BasicProperties) -> None:
    raw = props.encode()
    assert BasicProperties.decode(raw) == props


# ---------------------------------------------------------------------------------------------
# arbitrary input raises only the protocol error

_frame_maxes = st.sampled_from([0, 9, 16, 4096, 131072])


@given(st.binary(max_size=600), _frame_maxes)
@example(b"\x01\x00\x00\x00\x00\x00\x00\xce", 0)
@example(b"\x08\x00\x00\x00\x00\x00\x01\x00\xce", 9)
def test_parse_frames_arbitrary_bytes(data: bytes, frame_max: int) -> None:
    result = _decodes_or_protocol_error(parse_frames, data, frame_max)
    if result is not None:
        frames, used = result
        assert 0 <= used <= len(data)
        assert all(type(p) is bytes for _, _, p in frames)
    _decodes_or_protocol_error(parse_frames, bytearray(data), frame_max)


@given(st.one_of(st.binary(max_size=300), mutated(methods.map(lambda m: m.encode()))))
@example(b"\x00\x0a\x00\x0a\x00\x09\xff\xff\xff\xff")
# regression: a timestamp past 2**63 decoded to an int that could not be re-encoded
@example(b"\x00\x32\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x0b\x01tT" + b"\xff" * 8)
def test_decode_method_arbitrary_bytes(data: bytes) -> None:
    method = _decodes_or_protocol_error(decode_method, data)
    if method is not None:
        assert isinstance(method, _spec.Method)
        decode_method(method.encode())  # anything decoded re-encodes and decodes again


@given(
    st.sampled_from(sorted(METHODS)).map(lambda index: index.to_bytes(4, "big")),
    st.binary(max_size=200),
)
def test_decode_method_known_ids_arbitrary_arguments(ids: bytes, arguments: bytes) -> None:
    _decodes_or_protocol_error(decode_method, ids + arguments)


@given(
    st.one_of(st.binary(max_size=400), mutated(tables.map(encode_table))),
    st.integers(0, 8),
)
@example(b"\x00\x00\x00\x06\x01kT" + b"\xff" * 8, 0)
@example(b"\x00\x00\x00\x04\x01kD\x01", 0)
def test_decode_table_arbitrary_bytes(data: bytes, offset: int) -> None:
    result = _decodes_or_protocol_error(decode_table, data, offset)
    if result is not None:
        table, end = result
        assert offset + 4 <= end <= len(data)
        assert isinstance(table, dict)
    _decodes_or_protocol_error(decode_array, data, offset)


@given(st.one_of(st.binary(max_size=300), mutated(properties.map(lambda p: p.encode()))))
def test_basic_properties_arbitrary_bytes(data: bytes) -> None:
    props = _decodes_or_protocol_error(BasicProperties.decode, data)
    if props is not None:
        assert BasicProperties.decode(props.encode()) == props


@given(st.binary(max_size=64))
def test_parse_content_header_arbitrary_bytes(data: bytes) -> None:
    result = _decodes_or_protocol_error(parse_content_header, data)
    if result is not None:
        class_id, body_size, raw = result
        assert 0 <= class_id < 2**16 and 0 <= body_size < 2**64 and raw == data[12:]


# ---------------------------------------------------------------------------------------------
# streams and content

_frames = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 2**16 - 1), st.binary(max_size=200)),
        st.just((8, 0, b"")),
    ),
    max_size=12,
)


@given(_frames, st.lists(st.integers(1, 64), min_size=1, max_size=50), st.booleans())
def test_chunked_stream_yields_the_same_frames(
    frames: list[tuple[int, int, bytes]], cuts: list[int], as_view: bool
) -> None:
    stream = b"".join(encode_frame(t, c, p) for t, c, p in frames)
    whole, used = parse_frames(stream, 4096)
    assert whole == frames and used == len(stream)

    received: list[tuple[int, int, bytes]] = []
    buffer = bytearray()
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        i += 1
        buffer += stream[pos : pos + step]
        pos += step
        got, used = parse_frames(memoryview(buffer) if as_view else buffer, 4096)
        received.extend(got)
        del buffer[:used]
    assert received == frames
    assert not buffer


@given(
    st.integers(0, 20_000).map(lambda n: bytes(i % 253 for i in range(n))),
    st.sampled_from([0, 9, 100, 4096, 131072]),
    properties,
    st.integers(0, 2**16 - 1),
)
def test_content_splits_and_reassembles(
    body: bytes, frame_max: int, props: BasicProperties, channel: int
) -> None:
    raw = props.encode()
    for chunks in (
        encode_content(channel, 60, raw, body, frame_max),
        encode_delivery(channel, _spec.Basic.Deliver(delivery_tag=1).encode(), raw, body, frame_max)[0:],
    ):
        stream = b"".join(bytes(c) for c in chunks)
        frames, used = parse_frames(stream, frame_max if frame_max >= 4096 else 0)
        assert used == len(stream)
        headers = [p for t, _, p in frames if t == 2]
        assert len(headers) == 1
        class_id, size, props_raw = parse_content_header(headers[0])
        assert (class_id, size) == (60, len(body))
        assert BasicProperties.decode(props_raw) == props
        bodies = [p for t, _, p in frames if t == 3]
        assert b"".join(bodies) == body
        if frame_max:
            assert all(len(p) <= frame_max - 8 for p in bodies)
        assert all(c == channel for _, c, _ in frames)
