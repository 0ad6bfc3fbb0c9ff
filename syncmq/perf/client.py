"""A small, fast, blocking AMQP 0-9-1 client for load generation, built on :mod:`syncmq.wire`.

One :class:`Client` is one TCP connection with one channel (channel 1), as PerfTest uses by
default. The synchronous parts (handshake, declares, qos, confirm.select, consume) encode and
decode with the generated codec; the per-message paths do not build ``Method`` objects:

* publishing: one message (method + content header + body frames, encoded once by
  :func:`~syncmq.wire.frames.encode_method_frame` / :func:`~syncmq.wire.frames.encode_content`)
  is a constant byte string; a batch of ``n`` is that string repeated and goes out in one
  ``sendall``. With ``latency`` each message's body begins with ``time.time_ns()`` (8 octets,
  big-endian), patched into the batch with ``pack_into``.
* receiving: :meth:`Client._scan` walks the frames of a receive chunk in place with
  ``struct.unpack_from``; only ``basic.deliver``, content headers/bodies and ``basic.ack``/
  ``basic.nack`` (publisher confirms) are handled inline, anything else is decoded with
  :func:`~syncmq.wire._spec.decode_method`.
* acks: one ``basic.ack`` frame per message (or one ``multiple=True`` ack every N), packed with
  one ``Struct`` and sent once per receive chunk.

Heartbeats are off (tune-ok heartbeat 0); authentication is PLAIN. Errors from the broker
(connection.close, channel.close, a server-sent basic.cancel) raise :class:`ClientError`.
"""

from __future__ import annotations

import select
import socket
import struct
import time
import urllib.parse
from typing import Any

from syncmq.wire._spec import (
    Basic,
    BasicProperties,
    Channel,
    Confirm,
    Connection,
    Exchange,
    Method,
    Queue,
    decode_method,
)
from syncmq.wire.frames import (
    PROTOCOL_HEADER,
    encode_content,
    encode_method_frame,
    parse_frames,
)

__all__ = ["ClientError", "Client", "parse_uri"]

_S_FRAME = struct.Struct(">BHI")
_S_Q = struct.Struct(">Q")
_S_I = struct.Struct(">I")
#: A complete basic.ack frame: frame header, class 60, method 80, delivery tag, bits, frame end.
_S_ACK_FRAME = struct.Struct(">BHIHHQBB")
_unpack_frame = _S_FRAME.unpack_from
_unpack_q = _S_Q.unpack_from
_unpack_i = _S_I.unpack_from

_DELIVER = Basic.Deliver.INDEX
_ACK = Basic.Ack.INDEX
_NACK = Basic.Nack.INDEX
_RECV = 1 << 18
_INF = float("inf")


class ClientError(Exception):
    """The broker closed the connection or channel, or the socket failed."""

    def __init__(self, text: str, reply_code: int = 0) -> None:
        super().__init__(text)
        self.reply_code = reply_code


def parse_uri(uri: str) -> dict[str, Any]:
    """``amqp://user:pass@host:port/vhost`` -> host, port, user, password, vhost.

    Defaults as the RabbitMQ URI spec: guest/guest, localhost, 5672, vhost "/" when the path is
    empty; "/%2f" (or "/%2F") is "/" too.
    """
    u = urllib.parse.urlsplit(uri)
    if u.scheme not in ("amqp", ""):
        raise ValueError(f"unsupported URI scheme {u.scheme!r} (only amqp://)")
    path = u.path[1:] if u.path.startswith("/") else u.path
    return {
        "host": u.hostname or "localhost",
        "port": u.port or 5672,
        "user": urllib.parse.unquote(u.username) if u.username is not None else "guest",
        "password": urllib.parse.unquote(u.password) if u.password is not None else "guest",
        "vhost": urllib.parse.unquote(path) if path else "/",
    }


def ack_frame(channel: int, tag: int, multiple: bool) -> bytes:
    """A complete basic.ack frame (the same octets as the codec's ``Basic.Ack`` encoding)."""
    return _S_ACK_FRAME.pack(1, channel, 13, 60, 80, tag, 1 if multiple else 0, 206)


class Client:
    """One connection and channel 1. Not thread-safe; one client per process/loop."""

    def __init__(self, uri: str, *, frame_max: int = 131072, timeout: float = 30.0,
                 name: str = "syncmq-perf") -> None:
        p = parse_uri(uri)
        self.channel = 1
        self._pending = b""
        self._sync: list[Method] = []
        self.closed = False
        self.frame_max_in = 1 << 24
        self.sock = socket.create_connection((p["host"], p["port"]), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        # receive-side state (see _scan)
        self.delivered = 0  # counted deliveries
        self.deliver_limit = 1 << 62
        self.last_tag = 0  # delivery tag of the last counted delivery
        self.acked_tag = 0  # highest tag acked (multiple) so far
        self.manual_ack = False
        self.ack_every = 1  # 1 = ack each message; N > 1 = ack(multiple) every N
        self.latency: list[int] | None = None  # arrival - send time, ns, when measuring
        self._want_ts = False
        self.last_delivery_time = 0.0
        # publisher confirms
        self.confirming = False
        self.published = 0  # publish sequence number of the last message sent
        self.confirmed = 0
        self.nacked = 0
        self._resolved_upto = 0  # every tag <= this is confirmed or nacked
        self._resolved_above: set[int] = set()  # out-of-order single confirms
        self.returned = 0
        self._handshake(p, frame_max, name)
        self._rpc(Channel.Open(), Channel.OpenOk)

    # ---------------------------------------------------------------------------- plumbing

    def _send_method(self, channel: int, method: Method) -> None:
        self.sock.sendall(encode_method_frame(channel, method))

    def _next_frame(self, deadline: float) -> tuple[int, int, bytes]:
        """Slow path: exactly one complete frame, waiting until ``deadline``; the bytes after it
        stay in ``_pending`` (so deliveries that follow a consume-ok reach :meth:`_scan`)."""
        while True:
            buf = self._pending
            if len(buf) >= 8:
                ftype, channel, size = _unpack_frame(buf, 0)
                if size > self.frame_max_in:
                    raise ClientError(f"frame of {size} octets exceeds frame_max")
                if len(buf) >= size + 8:
                    if buf[size + 7] != 206:
                        raise ClientError("invalid frame end octet")
                    self._pending = buf[size + 8 :]
                    return ftype, channel, buf[7 : size + 7]
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError("timed out waiting for the broker")
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                data = self.sock.recv(_RECV)
                if not data:
                    raise ClientError("connection closed by the broker")
                self._pending += data

    def _handshake(self, p: dict[str, Any], frame_max: int, name: str) -> None:
        self.sock.sendall(PROTOCOL_HEADER)
        deadline = time.monotonic() + 30
        start = self._expect_method(deadline, Connection.Start)
        mechs = bytes(start.mechanisms).split()
        if b"PLAIN" not in mechs:
            raise ClientError(f"broker does not offer PLAIN (offers {mechs!r})")
        props = {
            "product": "syncmq-perf",
            "platform": "Python",
            "connection_name": name,
            "capabilities": {
                "publisher_confirms": True,
                "basic.nack": True,
                "consumer_cancel_notify": True,
                "exchange_exchange_bindings": True,
            },
        }
        response = b"\x00" + p["user"].encode() + b"\x00" + p["password"].encode()
        self._send_method(0, Connection.StartOk(props, "PLAIN", response, "en_US"))
        while True:
            m = self._expect_method(deadline, Connection.Tune, Connection.Secure)
            if isinstance(m, Connection.Tune):
                break
            raise ClientError("broker asked for a SASL challenge; only PLAIN is supported")
        fmax = min(frame_max, m.frame_max) if m.frame_max else frame_max
        self.frame_max = fmax
        self._send_method(0, Connection.TuneOk(m.channel_max or 2047, fmax, 0))
        self._send_method(0, Connection.Open(p["vhost"]))
        self._expect_method(deadline, Connection.OpenOk)

    def _expect_method(self, deadline: float, *classes: type) -> Any:
        while True:
            if self._sync:
                m = self._sync.pop(0)
                if isinstance(m, classes):
                    return m
                raise ClientError(f"unexpected {m.NAME} (wanted {classes[0].NAME})")
            ftype, channel, payload = self._next_frame(deadline)
            if ftype == 1:
                self._on_method(channel, decode_method(payload))

    def _on_method(self, channel: int, m: Method) -> None:
        """Slow-path handling of a method that is not per-message."""
        if isinstance(m, Connection.Close):
            try:
                self._send_method(0, Connection.CloseOk())
            except OSError:
                pass
            self.closed = True
            raise ClientError(f"connection closed by broker: {m.reply_code} {m.reply_text}",
                              m.reply_code)
        if isinstance(m, Channel.Close):
            try:
                self._send_method(channel, Channel.CloseOk())
            except OSError:
                pass
            raise ClientError(f"channel closed by broker: {m.reply_code} {m.reply_text} "
                              f"(class {m.class_id}, method {m.method_id})", m.reply_code)
        if isinstance(m, Basic.Cancel):
            raise ClientError(f"consumer {m.consumer_tag!r} cancelled by the broker")
        if isinstance(m, Basic.Return):
            self.returned += 1
            return
        self._sync.append(m)

    def _rpc(self, method: Method, *replies: type) -> Any:
        self._send_method(self.channel, method)
        return self._expect_method(time.monotonic() + 60, *replies)

    # ---------------------------------------------------------------------------- topology

    def exchange_declare(self, name: str, type: str, durable: bool = False) -> None:
        self._rpc(Exchange.Declare(name, type, durable=durable), Exchange.DeclareOk)

    def exchange_delete(self, name: str) -> None:
        self._rpc(Exchange.Delete(name), Exchange.DeleteOk)

    def queue_declare(self, name: str, durable: bool = False, passive: bool = False) -> int:
        ok = self._rpc(Queue.Declare(name, passive=passive, durable=durable), Queue.DeclareOk)
        return ok.message_count

    def queue_delete(self, name: str) -> int:
        return self._rpc(Queue.Delete(name), Queue.DeleteOk).message_count

    def queue_purge(self, name: str) -> int:
        return self._rpc(Queue.Purge(name), Queue.PurgeOk).message_count

    def queue_bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self._rpc(Queue.Bind(queue, exchange, routing_key), Queue.BindOk)

    def qos(self, prefetch_count: int) -> None:
        self._rpc(Basic.Qos(0, prefetch_count, False), Basic.QosOk)

    def confirm_select(self) -> None:
        self._rpc(Confirm.Select(), Confirm.SelectOk)
        self.confirming = True

    def consume(self, queue: str, *, no_ack: bool, ack_every: int = 1,
                latency: bool = False, limit: int = 0, tag: str = "") -> str:
        """basic.consume; deliveries are then counted by :meth:`pump`."""
        self.manual_ack = not no_ack
        self.ack_every = max(1, ack_every)
        self.latency = [] if latency else None
        if limit:
            self.deliver_limit = limit
        ok = self._rpc(Basic.Consume(queue, tag, no_ack=no_ack), Basic.ConsumeOk)
        if self._pending:  # deliveries that came in the same read as consume-ok
            data, self._pending = self._pending, b""
            self._scan(data)
        return ok.consumer_tag

    def close(self, timeout: float = 5.0) -> None:
        """connection.close and wait (bounded) for close-ok; skips any deliveries in flight."""
        if self.closed:
            return
        self.closed = True
        try:
            self._send_method(0, Connection.Close(200, "bye", 0, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
                if not r:
                    break
                data = self.sock.recv(_RECV)
                if not data:
                    break
                self._pending += data
                frames, used = parse_frames(self._pending, 0)
                self._pending = self._pending[used:]
                if any(f[0] == 1 and f[2][:4] == b"\x00\x0a\x00\x33" for f in frames):
                    break
        except (OSError, ClientError):
            pass
        finally:
            self.sock.close()

    def abort(self) -> None:
        self.closed = True
        self.sock.close()

    # ---------------------------------------------------------------------------- publishing

    def message_template(self, exchange: str, routing_key: str, size: int,
                         persistent: bool) -> tuple[bytes, int]:
        """One complete publish (all frames) and the offset of its body in it."""
        props = BasicProperties(delivery_mode=2 if persistent else 1).encode()
        body = bytes(size)
        method = encode_method_frame(self.channel, Basic.Publish(exchange, routing_key))
        content = b"".join(bytes(c) for c in encode_content(self.channel, 60, props, body,
                                                             self.frame_max))
        header_len = 7 + 12 + len(props) + 1
        return method + content, len(method) + header_len + 7

    def publish_raw(self, data: bytes | bytearray, count: int) -> None:
        """Send ``count`` pre-encoded publishes in one ``sendall``."""
        self.sock.sendall(data)
        if self.confirming:
            self.published += count

    @property
    def outstanding(self) -> int:
        """Published messages not yet confirmed or nacked."""
        return self.published - self._resolved_upto - len(self._resolved_above)

    # ---------------------------------------------------------------------------- receiving

    def poll(self, timeout: float | None = 0.0) -> int:
        """Read what the broker sent (waiting up to ``timeout``; 0 = do not wait, None =
        block) and process it. Returns the number of deliveries counted."""
        try:
            if timeout == 0:
                data = self.sock.recv(_RECV, socket.MSG_DONTWAIT)
            else:
                if timeout is not None:
                    r, _, _ = select.select([self.sock], [], [], timeout)
                    if not r:
                        return 0
                data = self.sock.recv(_RECV)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise ClientError(f"socket error: {exc}") from None
        if not data:
            raise ClientError("connection closed by the broker")
        return self._scan(data)

    def _scan(self, data: bytes) -> int:
        """Process every complete frame in ``self._pending + data``; keep the incomplete tail."""
        if self._pending:
            data = self._pending + data
        n = len(data)
        pos = 0
        before = self.delivered
        delivered = before
        limit = self.deliver_limit
        last_tag = self.last_tag
        want_ts = self._want_ts
        lat = self.latency
        acks: list[bytes] | None = [] if self.manual_ack else None
        ack_every = self.ack_every
        channel = self.channel
        pack_ack = _S_ACK_FRAME.pack
        while n - pos >= 8:
            ftype, ch, size = _unpack_frame(data, pos)
            end = pos + 7 + size
            if end >= n:
                break
            if ftype == 1:
                index = _unpack_i(data, pos + 7)[0]
                if index == _DELIVER:
                    if delivered < limit:
                        delivered += 1
                        last_tag = _unpack_q(data, pos + 12 + data[pos + 11])[0]
                        if acks is not None and ack_every == 1:
                            acks.append(pack_ack(1, channel, 13, 60, 80, last_tag, 0, 206))
                        want_ts = lat is not None
                    else:
                        want_ts = False
                elif index == _ACK or index == _NACK:
                    tag = _unpack_q(data, pos + 11)[0]
                    multiple = data[pos + 19] & 1
                    self._resolve(tag, multiple, index == _ACK)
                else:
                    self.delivered = delivered
                    self.last_tag = last_tag
                    self._on_method(ch, decode_method(data[pos + 7 : end]))
            elif ftype == 3:
                if want_ts:
                    want_ts = False
                    if size >= 8:
                        lat.append(time.time_ns() - _unpack_q(data, pos + 7)[0])  # type: ignore[union-attr]
            elif ftype == 8:
                pass
            elif ftype != 2:
                raise ClientError(f"unexpected frame type {ftype}")
            pos = end + 1
        self._pending = data[pos:] if pos < n else b""
        self._want_ts = want_ts
        self.last_tag = last_tag
        self.delivered = delivered
        if delivered != before:
            self.last_delivery_time = time.monotonic()
            if acks is not None:
                if ack_every == 1:
                    self.sock.sendall(b"".join(acks))
                    self.acked_tag = last_tag
                elif delivered // ack_every != before // ack_every:
                    self.sock.sendall(pack_ack(1, channel, 13, 60, 80, last_tag, 1, 206))
                    self.acked_tag = last_tag
        return delivered - before

    def ack_outstanding(self) -> None:
        """Ack (multiple) everything counted but not yet acked."""
        if self.manual_ack and self.last_tag > self.acked_tag:
            self.sock.sendall(ack_frame(self.channel, self.last_tag, True))
            self.acked_tag = self.last_tag

    def _resolve(self, tag: int, multiple: int, ok: bool) -> None:
        above = self._resolved_above
        if multiple:
            if tag <= self._resolved_upto:
                return
            count = tag - self._resolved_upto
            if above:
                done = {t for t in above if t <= tag}
                count -= len(done)
                above -= done
            self._resolved_upto = tag
        else:
            if tag <= self._resolved_upto or tag in above:
                return
            count = 1
            if tag == self._resolved_upto + 1:
                self._resolved_upto = tag
            else:
                above.add(tag)
        while above and self._resolved_upto + 1 in above:
            self._resolved_upto += 1
            above.discard(self._resolved_upto)
        if ok:
            self.confirmed += count
        else:
            self.nacked += count

    def wait_confirms(self, deadline: float) -> bool:
        """Block until every published message is confirmed/nacked or ``deadline``."""
        while self.outstanding > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(min(left, 0.5))
        return True
