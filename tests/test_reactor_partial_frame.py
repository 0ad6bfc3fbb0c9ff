"""The worker's partial frame between reads (``Transport.rest``/``rest_len``) and what the
memory accounting reads of it (``memory.connection_memory``).

``_handle_data`` is driven directly with a stand-in transport: what matters is the state it
leaves behind after each read, which no client can observe but the memory alarm reads.
"""

from __future__ import annotations

from types import SimpleNamespace

from syncmq import memory
from syncmq.reactor.reading import Reader
from syncmq.wire import _spec
from syncmq.wire.frames import encode_content, encode_frame


class _Handler:
    def __init__(self) -> None:
        self.frames: list = []

    def frames_received(self, frames: list) -> None:
        self.frames.extend(frames)

    def frame_error(self, exc: Exception) -> None:  # pragma: no cover - not expected
        raise AssertionError(exc)


def _transport(frame_max: int) -> SimpleNamespace:
    return SimpleNamespace(
        discard_input=False, rest=[], rest_len=0, rest_need=0, frame_max=frame_max,
        handler=_Handler(), inflight=0, pending_out=0)


def _feed(t: SimpleNamespace, data: bytes) -> None:
    Reader._handle_data(SimpleNamespace(), t, data)  # (the lane's accounting is _input_turn's)


def test_a_completed_partial_frame_is_no_longer_accounted() -> None:
    """A frame that spans reads is accounted while partial; once it is complete and handed
    over, the connection holds nothing of it. ``rest_len`` used to keep the whole frame's
    size until a later read ended in a partial frame, so a connection that once received a
    large frame kept it in the memory alarm's figure (``mem_used``) for good."""
    frame_max = 4 * 1024 * 1024
    body = b"z" * (3 * 1024 * 1024)
    data = encode_frame(_spec.FRAME_METHOD, 1, _spec.Basic.Publish(
        exchange="", routing_key="q").encode()) + b"".join(
        bytes(c) for c in encode_content(1, 60, b"\x00\x00", body, frame_max))
    t = _transport(frame_max)
    session = SimpleNamespace(transport=t, channels={})
    idle = memory.connection_memory([session])
    for i in range(0, len(data), 65536):
        _feed(t, data[i:i + 65536])
        if i + 65536 < len(data):
            assert t.rest_len > 0  # partial: accounted
    assert [f[0] for f in t.handler.frames] == [
        _spec.FRAME_METHOD, _spec.FRAME_HEADER, _spec.FRAME_BODY]
    assert t.rest == [] and t.rest_len == 0
    assert memory.connection_memory([session]) == idle
