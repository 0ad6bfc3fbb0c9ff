"""Test doubles shared by the unit tests that run the protocol or a Session without sockets.

- :class:`FakeTransport` implements what ``syncmq.methods.session_api.Transport`` declares: it
  records every chunk written, the calls that would reach the reactor (close, abort, timers,
  reading paused) and never sends anything. ``frames()`` parses what was written.
- :func:`frames`, :func:`method_frame`, :func:`content_frames` build input for
  ``ConnectionProtocol.receive``; :func:`open_protocol` drives a protocol through the handshake
  the way the session does (every transition through the protocol's own events).
"""

from __future__ import annotations

from typing import Any

from syncmq.protocol.connection import ConnectionProtocol
from syncmq.wire import _spec
from syncmq.wire.frames import encode_content, encode_frame, parse_frames

C = _spec.Connection
Ch = _spec.Channel


class FakeTransport:
    """A transport that keeps what is written (``out``) and what was asked of the reactor
    (``calls``). Thread-safe enough for single-threaded tests; nothing is ever sent."""

    peer = ("test", 0)
    pending_out = 0
    out_high = 1 << 30
    peer_cert = None

    def __init__(self) -> None:
        self.out: list = []
        self.calls: list[tuple] = []
        self.worker = None

    # what the session writes
    def write(self, chunks: list) -> None:
        self.out.extend(chunks)

    def write1(self, data: bytes) -> None:
        self.out.append(data)

    def throttle(self) -> bool:
        return False

    # what would reach the reactor
    def close_after_flush(self) -> None:
        self.calls.append(("close_after_flush",))

    def abort(self) -> None:
        self.calls.append(("abort",))

    def stop_reading(self) -> None:
        self.calls.append(("stop_reading",))

    def pause_reading(self, reason: str = "alarm") -> None:
        self.calls.append(("pause_reading",))

    def resume_reading(self, reason: str = "alarm") -> None:
        self.calls.append(("resume_reading",))

    def set_frame_max(self, frame_max: int) -> None:
        self.calls.append(("set_frame_max", frame_max))

    def set_heartbeat(self, seconds: int) -> None:
        self.calls.append(("set_heartbeat", seconds))

    def mark_open(self) -> bool:
        self.calls.append(("mark_open",))
        return True

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        self.calls.append(("call_later", delay, fn, args))

    # reading it back
    def data(self) -> bytes:
        return b"".join(bytes(c) for c in self.out)

    def frames(self) -> list:
        """Every frame written so far, as ``(type, channel, payload)``."""
        return frames(self.data())

    def methods(self) -> list:
        """``(channel, method)`` of every method frame written so far."""
        return [(ch, _spec.decode_method(p)) for t, ch, p in self.frames() if t == 1]

    def delivered(self, bodies: list[bytes]) -> list[bytes]:
        """Which of ``bodies`` were written, in the order they were written."""
        data = self.data()
        found = sorted((data.find(b), b) for b in bodies if b in data)
        return [b for _, b in found]


def frames(*raw: bytes) -> list:
    """Parse complete frames (the input of ``ConnectionProtocol.receive``)."""
    out, used = parse_frames(b"".join(raw), 0)
    assert used == sum(len(r) for r in raw)
    return out


def method_frame(ch: int, m: _spec.Method) -> bytes:
    return encode_frame(1, ch, m.encode())


def content_frames(ch: int, body: bytes, props: bytes = b"\x10\x00\x01", frame_max: int = 0,
                   class_id: int = 60) -> bytes:
    return b"".join(bytes(c) for c in encode_content(ch, class_id, props, body, frame_max))


def open_protocol(max_body: int = 1 << 20, channels: tuple[int, ...] = (1, 2),
                  channel_max: int = 2047, fast: bool = True) -> ConnectionProtocol:
    """A protocol taken through the handshake as the session does, with ``channels`` open."""
    p = ConnectionProtocol(channel_max, 131072, max_body, fast=fast)
    p.send(0, C.Start(mechanisms=b"PLAIN", locales=b"en_US"))
    drive(p, method_frame(0, C.StartOk(mechanism="PLAIN", response=b"\0u\0p", locale="en_US")))
    p.send(0, C.Tune(channel_max=channel_max, frame_max=131072, heartbeat=0))
    drive(p, method_frame(0, C.TuneOk(channel_max=channel_max, frame_max=131072)))
    p.tuned(131072, channel_max)
    drive(p, method_frame(0, C.Open(virtual_host="/")))
    p.send(0, C.OpenOk())
    if channels:
        drive(p, *(method_frame(ch, Ch.Open()) for ch in channels))
    return p


def drive(p: ConnectionProtocol, *raw: bytes) -> list:
    """Feed ``raw`` frames to ``p`` until they are used up; return every event. Fails on any
    error (use ``p.receive`` directly to see errors)."""
    rest = frames(*raw)
    events: list = []
    while rest:
        got, rest, error = p.receive(rest)
        assert error is None, error
        events.extend(got)
    return events
