"""A tiny raw-socket AMQP 0-9-1 client for protocol tests, built on ``syncmq.wire``.

It does what a real client never would: send arbitrary octets and frames, stop answering
heartbeats, skip close-ok. Every read has a timeout, so a broker that hangs fails the test
instead of hanging it. Typical use::

    with RawClient(port) as c:
        c.handshake()
        c.send_method(1, Channel.Open())
        c.expect_method(1, Channel.OpenOk)
        c.send_frame(8, 1, b"")                   # heartbeat on channel 1
        assert c.expect_close() == (505, 0, 0)    # the broker's connection.close
        c.send_close_ok()
        c.expect_eof()
"""

from __future__ import annotations

import select
import socket
import struct
import time
from typing import Any

from syncmq.wire import _spec
from syncmq.wire.fields import encode_table
from syncmq.wire.frames import PROTOCOL_HEADER, encode_content, encode_frame, parse_frames

FRAME_METHOD = _spec.FRAME_METHOD
FRAME_HEADER = _spec.FRAME_HEADER
FRAME_BODY = _spec.FRAME_BODY
FRAME_HEARTBEAT = _spec.FRAME_HEARTBEAT

DEFAULT_TIMEOUT = 30.0  # an answer expected: generous, the suite runs on a loaded 2-core machine


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` has something to read (or EOF) within ``timeout`` s: poll, not
    select, which refuses descriptors over 1023 (a test holding 1,000 connections)."""
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(max(0.0, timeout) * 1000))


class EOF(Exception):
    """The broker closed the socket."""


class Frame:
    """One received frame; ``method`` is the decoded method for method frames."""

    __slots__ = ("type", "channel", "payload", "method")

    def __init__(self, ftype: int, channel: int, payload: bytes) -> None:
        self.type = ftype
        self.channel = channel
        self.payload = payload
        self.method = _spec.decode_method(payload) if ftype == FRAME_METHOD else None

    def __repr__(self) -> str:
        what = self.method if self.method is not None else f"{len(self.payload)} octets"
        return f"Frame(type={self.type}, channel={self.channel}, {what})"


class RawClient:
    """One TCP connection to the broker, driven octet by octet."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()
        self.frames: list[Frame] = []  # received, not yet taken
        self.eof = False
        self.frame_max = 4096  # what the broker checks before tune-ok
        self.tune: _spec.Connection.Tune | None = None
        self.start: _spec.Connection.Start | None = None

    # ---- context manager ----

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- sending ----

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_header(self, header: bytes = PROTOCOL_HEADER) -> None:
        self.send(header)

    def send_frame(self, ftype: int, channel: int, payload: bytes) -> None:
        self.send(encode_frame(ftype, channel, payload))

    def send_method(self, channel: int, method: _spec.Method) -> None:
        self.send_frame(FRAME_METHOD, channel, method.encode())

    def send_raw_method(self, channel: int, class_id: int, method_id: int, args: bytes) -> None:
        """A method frame with hand-made argument octets."""
        self.send_frame(FRAME_METHOD, channel, struct.pack(">HH", class_id, method_id) + args)

    def send_content(self, channel: int, body: bytes, properties: bytes = b"\x00\x00",
                     class_id: int = 60) -> None:
        """Content header + body frames (``properties`` raw, flags word first)."""
        for chunk in encode_content(channel, class_id, properties, body, self.frame_max):
            self.send(bytes(chunk))

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes) -> None:
        self.send_method(channel, _spec.Basic.Publish(exchange=exchange, routing_key=routing_key))
        self.send_content(channel, body)

    def send_close_ok(self) -> None:
        self.send_method(0, _spec.Connection.CloseOk())

    # ---- receiving ----

    def _fill(self, deadline: float) -> bool:
        """Read once into ``buf``; False on timeout. Raises EOF when the peer closed."""
        if self.eof:
            raise EOF()
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if not _readable(self.sock, left):
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise EOF()
        self.buf += data
        return True

    def read_octets(self, n: int, timeout: float | None = None) -> bytes:
        """Exactly ``n`` raw octets (for the protocol header answer)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise TimeoutError(f"wanted {n} octets, got {bytes(self.buf)!r}")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_frame(self, timeout: float | None = None) -> Frame:
        """The next frame (heartbeats included). TimeoutError / EOF otherwise."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self.frames:
            parsed, used = parse_frames(self.buf, 0)
            if used:
                del self.buf[:used]
                self.frames.extend(Frame(t, ch, bytes(p)) for t, ch, p in parsed)
                continue
            if not self._fill(deadline):
                raise TimeoutError("no frame within the timeout")
        return self.frames.pop(0)

    def read_method(self, timeout: float | None = None) -> Frame:
        """The next method frame, skipping heartbeats (content frames are returned too)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f.type != FRAME_HEARTBEAT:
                return f

    def expect_method(self, channel: int, cls: type, timeout: float | None = None):
        f = self.read_method(timeout)
        assert f.method is not None and isinstance(f.method, cls) and f.channel == channel, (
            f"expected {cls.__qualname__} on channel {channel}, got {f!r}"
        )
        return f.method

    def expect_close(self, timeout: float | None = None) -> tuple[int, int, int]:
        """Read until a connection.close or channel.close; returns (reply_code, class, method).

        The close method itself is kept in ``last_close``; other frames before it are skipped.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            m = f.method
            if isinstance(m, (_spec.Connection.Close, _spec.Channel.Close)):
                self.last_close = m
                self.last_close_channel = f.channel
                return m.reply_code, m.class_id, m.method_id

    def expect_eof(self, timeout: float | None = None) -> list[Frame]:
        """Wait until the broker closes the socket; returns the frames read meanwhile."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        seen = list(self.frames)
        self.frames.clear()
        try:
            while True:
                if not self._fill(deadline):
                    raise TimeoutError(f"socket still open; frames seen: {seen!r}")
                parsed, used = parse_frames(self.buf, 0)
                del self.buf[:used]
                seen.extend(Frame(t, ch, bytes(p)) for t, ch, p in parsed)
        except EOF:
            return seen

    def still_open(self, wait: float) -> bool:
        """True if the socket stays open (no EOF, nothing read) for ``wait`` seconds."""
        return not _readable(self.sock, wait)

    # ---- the handshake ----

    def handshake(
        self,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        mechanism: str = "PLAIN",
        frame_max: int | None = None,
        channel_max: int | None = None,
        heartbeat: int = 0,
        capabilities: dict | None = None,
        open_: bool = True,
    ) -> None:
        """Header, start-ok, tune-ok (server values unless given), open; waits for open-ok."""
        self.send_header()
        self.start = self.expect_method(0, _spec.Connection.Start)
        self.send_start_ok(user, password, mechanism, capabilities)
        self.tune = self.expect_method(0, _spec.Connection.Tune)
        fm = self.tune.frame_max if frame_max is None else frame_max
        cm = self.tune.channel_max if channel_max is None else channel_max
        self.send_method(0, _spec.Connection.TuneOk(channel_max=cm, frame_max=fm,
                                                    heartbeat=heartbeat))
        self.frame_max = fm or self.frame_max
        if open_:
            self.send_method(0, _spec.Connection.Open(virtual_host=vhost))
            self.expect_method(0, _spec.Connection.OpenOk)

    def send_start_ok(self, user: str, password: str, mechanism: str = "PLAIN",
                      capabilities: dict | None = None) -> None:
        if mechanism == "AMQPLAIN":
            table = encode_table({"LOGIN": user, "PASSWORD": password})
            response = table[4:]  # AMQPLAIN: a field table without its length
        else:
            response = b"\x00" + user.encode() + b"\x00" + password.encode()
        caps = {"authentication_failure_close": True} if capabilities is None else capabilities
        self.send_method(0, _spec.Connection.StartOk(
            client_properties={"product": "amqp_raw", "capabilities": caps},
            mechanism=mechanism, response=response, locale="en_US",
        ))

    def open_channel(self, channel: int = 1) -> None:
        self.send_method(channel, _spec.Channel.Open())
        self.expect_method(channel, _spec.Channel.OpenOk)


def connect(port: int, **handshake: Any) -> RawClient:
    """A RawClient that has completed the handshake."""
    c = RawClient(port)
    try:
        c.handshake(**handshake)
    except BaseException:
        c.close()
        raise
    return c


def register_consumers(c: RawClient, queue: str, first: int, n: int, channel: int = 1) -> int:
    """Pipeline ``n`` no-wait ``basic.consume``s (tags ``c<first>``...) on ``queue``, then a
    passive ``queue.declare`` that is answered after all of them; returns its consumer count.
    (Used by tests/test_consumer_scale.py and bench/consumers.py.)"""
    payload = b"".join(
        encode_frame(FRAME_METHOD, channel, _spec.Basic.Consume(
            queue=queue, consumer_tag=f"c{first + i}", no_wait=True).encode())
        for i in range(n))
    c.send(payload)
    c.send_method(channel, _spec.Queue.Declare(queue=queue, passive=True))
    ok = c.expect_method(channel, _spec.Queue.DeclareOk, timeout=max(c.timeout, 120.0))
    return ok.consumer_count
