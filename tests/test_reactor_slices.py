"""A large read of small frames is handed to the handler a slice at a time
(``reading._handle_slices``, issue #22 S5): the frames, their order, the error and the
partial frame left over must be what cutting the read whole gives.

``_handle_data`` is driven directly with a stand-in transport (as in
``test_reactor_partial_frame.py``); ``split_frames`` of the whole read is the reference.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

from syncmq.reactor import reading
from syncmq.reactor.reading import Reader
from syncmq.wire import _spec
from syncmq.wire.frames import encode_content, encode_frame, split_frames

FRAME_MAX = 131072


class _Handler:
    def __init__(self, t: SimpleNamespace, discard_after: int = 0) -> None:
        self.t = t
        self.calls: list[int] = []
        self.frames: list = []
        self.errors: list = []
        self.discard_after = discard_after

    def frames_received(self, frames: list) -> None:
        self.calls.append(len(frames))
        self.frames.extend(frames)
        if self.discard_after and len(self.calls) == self.discard_after:
            self.t.discard_input = True  # (as the reactor's _discard_input, or a close)

    def frame_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))


def _transport(discard_after: int = 0) -> SimpleNamespace:
    t = SimpleNamespace(discard_input=False, rest=[], rest_len=0, rest_need=0,
                        frame_max=FRAME_MAX)
    t.handler = _Handler(t, discard_after)
    return t


def _publishes(rng: random.Random, n: int, sizes: tuple[int, ...] = (16,)) -> bytes:
    method = encode_frame(_spec.FRAME_METHOD, 1, _spec.Basic.Publish(
        exchange="", routing_key="perf-q-1").encode())
    out = []
    for _ in range(n):
        body = bytes(rng.randrange(256) for _ in range(rng.choice(sizes)))
        out.append(method)
        out.extend(bytes(c) for c in encode_content(1, 60, b"\x10\x00\x01", body, FRAME_MAX))
        if rng.random() < 0.01:
            out.append(encode_frame(_spec.FRAME_HEARTBEAT, 0, b""))
    return b"".join(out)


def _feed(t: SimpleNamespace, data: bytes) -> None:
    Reader._handle_data(SimpleNamespace(), t, data)


def test_a_large_read_of_small_frames_is_handed_over_in_slices_with_the_same_frames() -> None:
    rng = random.Random(22)
    for trial in range(20):
        data = _publishes(rng, 4000, sizes=(16, 16, 16, 3, 40))
        cut = len(data) - rng.randrange(1, 60)  # a partial frame at the end, most times
        data = data[:cut]
        t = _transport()
        _feed(t, data)
        frames, consumed, error = split_frames(data, FRAME_MAX, slack=reading.FRAME_MAX_SLACK)
        assert error is None and t.handler.errors == []
        assert t.handler.frames == frames, trial
        assert len(t.handler.calls) > 2  # sliced: several batches
        assert all(n >= reading.SLICE_MIN_FRAMES for n in t.handler.calls[:-1])
        assert b"".join(t.rest) == data[consumed:]
        assert t.rest_len == len(data) - consumed


def test_a_bad_frame_in_a_sliced_read_is_reported_after_the_frames_before_it() -> None:
    rng = random.Random(5)
    data = bytearray(_publishes(rng, 4000))
    frames, _, _ = split_frames(bytes(data), FRAME_MAX)
    # break the end octet of a frame about 150 KiB in (in the fourth or fifth slice)
    pos = 0
    for _, _, payload in frames:
        pos += 8 + len(payload)
        if pos > 150_000:
            break
    data[pos - 1] = 0x00
    data = bytes(data)
    want, _, want_error = split_frames(data, FRAME_MAX, slack=reading.FRAME_MAX_SLACK)
    assert want_error is not None
    t = _transport()
    _feed(t, data)
    assert len(t.handler.calls) > 1  # slices before the bad one were handed over
    assert t.handler.frames == want
    assert t.handler.errors == [str(want_error)]
    assert t.discard_input
    _feed(t, _publishes(rng, 10))  # later input is dropped
    assert t.handler.frames == want


def test_large_messages_and_large_frames_are_cut_whole_as_before(monkeypatch) -> None:
    rng = random.Random(7)
    # 1 KiB bodies: a slice holds too few frames to be worth a batch of its own, and the
    # first frames' headers say so before any slice is cut: the read is cut once (S3's reads
    # were cut twice, a first slice and then the whole)
    data = _publishes(rng, 300, sizes=(1024,))
    cuts: list[int] = []
    real_split = reading.split_frames

    def counting_split(buf, *a, **kw):
        cuts.append(len(buf))
        return real_split(buf, *a, **kw)

    monkeypatch.setattr(reading, "split_frames", counting_split)
    t = _transport()
    _feed(t, data)
    assert cuts == [len(data)]
    assert len(t.handler.calls) == 1
    assert t.handler.frames == split_frames(data, FRAME_MAX)[0]
    # small frames around a body frame larger than a slice: the same frames, in order
    data = (_publishes(rng, 2000) + _publishes(rng, 1, sizes=(100_000,))
            + _publishes(rng, 2000))
    t = _transport()
    _feed(t, data)
    assert t.handler.frames == split_frames(data, FRAME_MAX)[0]
    assert t.rest == []


def test_input_discarded_during_a_slice_drops_the_rest_of_the_read() -> None:
    data = _publishes(random.Random(3), 4000)
    t = _transport(discard_after=1)
    _feed(t, data)
    assert len(t.handler.calls) == 1
    assert t.rest == [] and t.handler.errors == []


def test_a_flood_of_small_publishes_in_one_write_arrives_whole_and_in_order(broker, unique):
    """Against a real broker: 6,000 publishes in one write (reads of up to 256 KiB, cut in
    slices), then a bad frame in the same write: every publish before it is queued in
    order, the connection is closed with 501, and another connection is served."""
    import pika
    from amqp_raw import connect

    params = pika.ConnectionParameters("127.0.0.1", broker.port)
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        ch.queue_declare(unique)
        c = connect(broker.port)
        try:
            c.open_channel(1)
            n = 6000
            data = b"".join(
                encode_frame(_spec.FRAME_METHOD, 1, _spec.Basic.Publish(
                    exchange="", routing_key=unique).encode())
                + b"".join(bytes(f) for f in encode_content(
                    1, 60, b"\x00\x00", b"%016d" % i, FRAME_MAX))
                for i in range(n))
            c.send(data + b"\x01\x00\x01\x00\x00\x00\x00\x00")  # bad end octet
            assert c.expect_close()[0] == 501
        finally:
            c.close()
        assert ch.queue_declare(unique, passive=True).method.message_count == n
        got = []
        for _, _, body in ch.consume(unique, auto_ack=True, inactivity_timeout=10):
            assert body is not None
            got.append(int(body))
            if len(got) == n:
                break
        assert got == list(range(n))
