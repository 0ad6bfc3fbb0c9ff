"""Regression: the reactor must never miss a worker's wake-up.

A lost wake-up left about one handshake in a hundred waiting for connection.tune until some
other socket event woke the reactor. Many short connections, each step with a deadline, make
such a stall show up as a timeout.
"""

from __future__ import annotations

import socket

from syncmq.wire import _spec
from syncmq.wire.frames import PROTOCOL_HEADER, encode_method_frame, parse_frames


def _expect(sock: socket.socket, buf: bytearray, index: int) -> None:
    """Read until a method frame with ``index`` arrives (5 s per read)."""
    while True:
        frames, used = parse_frames(bytes(buf), 131072)
        del buf[:used]
        for ftype, _ch, payload in frames:
            if ftype == _spec.FRAME_METHOD and _spec.decode_method(payload).INDEX == index:
                return
        data = sock.recv(65536)  # raises TimeoutError on a stall
        assert data, "broker closed the connection"
        buf += data


def test_many_short_connections_never_stall(broker):
    for i in range(400):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
            buf = bytearray()
            s.sendall(PROTOCOL_HEADER)
            _expect(s, buf, _spec.Connection.Start.INDEX)
            s.sendall(encode_method_frame(0, _spec.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response=b"\0guest\0guest",
                locale="en_US")))
            _expect(s, buf, _spec.Connection.Tune.INDEX)
            s.sendall(
                encode_method_frame(0, _spec.Connection.TuneOk(
                    channel_max=10, frame_max=131072, heartbeat=0))
                + encode_method_frame(0, _spec.Connection.Open(virtual_host="/")))
            _expect(s, buf, _spec.Connection.OpenOk.INDEX)
            s.sendall(encode_method_frame(1, _spec.Channel.Open()))
            _expect(s, buf, _spec.Channel.OpenOk.INDEX)
            s.sendall(encode_method_frame(1, _spec.Queue.Declare(
                queue=f"wakeups-{i % 3}", exclusive=True)))
            _expect(s, buf, _spec.Queue.DeclareOk.INDEX)
            s.sendall(encode_method_frame(0, _spec.Connection.Close(
                reply_code=200, reply_text="bye")))
            _expect(s, buf, _spec.Connection.CloseOk.INDEX)
