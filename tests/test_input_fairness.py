"""A flooding publisher's read-ahead never delays another connection's handshake (issue #22).

Each connection holds at most one place in its worker's queue (``Reader._input_turn``): the
worker serves its connections round robin, one input batch each. Before, every batch read
went into the worker's FIFO, so a new connection's handshake frames waited behind FLOW_HIGH
batches of every flooding publisher on that worker at each round trip (S5's flood kept a new
connection past the 10 s handshake timeout).

Measured without a clock: the number of flooder batches the worker handles while a new pika
connection opens, opens a channel and declares passively must stay within one batch per
flooder per round trip, whatever the flooders' backlog (FLOW_HIGH batches each).
"""

from __future__ import annotations

import socket
import threading

import pika
from test_reactor_wakeups import _expect

import syncmq
from syncmq.reactor import reading
from syncmq.reactor.reading import FLOW_HIGH
from syncmq.wire import _spec
from syncmq.wire.frames import PROTOCOL_HEADER, encode_method_frame

FLOODERS = 4
ROUND_TRIPS = 5  # header, start-ok, tune-ok+open, channel.open, queue.declare




def _open_raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    buf = bytearray()
    s.sendall(PROTOCOL_HEADER)
    _expect(s, buf, _spec.Connection.Start.INDEX)
    s.sendall(encode_method_frame(0, _spec.Connection.StartOk(
        client_properties={}, mechanism="PLAIN", response=b"\0guest\0guest", locale="en_US")))
    _expect(s, buf, _spec.Connection.Tune.INDEX)
    s.sendall(encode_method_frame(0, _spec.Connection.TuneOk(
        channel_max=10, frame_max=131072, heartbeat=0))
        + encode_method_frame(0, _spec.Connection.Open(virtual_host="/")))
    _expect(s, buf, _spec.Connection.OpenOk.INDEX)
    s.sendall(encode_method_frame(1, _spec.Channel.Open()))
    _expect(s, buf, _spec.Channel.OpenOk.INDEX)
    return s


def _publishes(n: int) -> bytes:
    """``n`` pre-encoded 16 B publishes to amq.fanout (no binding: dropped, no memory)."""
    method = encode_method_frame(1, _spec.Basic.Publish(exchange="amq.fanout", routing_key=""))
    body = b"x" * 16
    header = (bytes([2]) + (1).to_bytes(2, "big") + (14).to_bytes(4, "big")
              + (60).to_bytes(2, "big") + (0).to_bytes(2, "big") + len(body).to_bytes(8, "big")
              + (0).to_bytes(2, "big") + b"\xce")
    frame = bytes([3]) + (1).to_bytes(2, "big") + len(body).to_bytes(4, "big") + body + b"\xce"
    return (method + header + frame) * n


def test_flood_does_not_delay_a_new_handshake(monkeypatch):
    counts: dict = {}
    cond = threading.Condition()
    original = reading.Reader._handle_data

    def counting(self, t, data):
        try:
            original(self, t, data)
        finally:
            with cond:
                counts[t.peer[1]] = counts.get(t.peer[1], 0) + 1
                cond.notify_all()

    monkeypatch.setattr(reading.Reader, "_handle_data", counting)
    chunk = _publishes(3000)
    stop = threading.Event()
    with syncmq.Server(workers=1) as server:
        socks = [_open_raw(server.port) for _ in range(FLOODERS)]
        ports = [s.getsockname()[1] for s in socks]

        def flood(s: socket.socket) -> None:
            try:
                while not stop.is_set():
                    s.sendall(chunk)
            except OSError:
                pass

        threads = [threading.Thread(target=flood, args=(s,), daemon=True) for s in socks]
        for th in threads:
            th.start()
        try:
            # every flooder is being read ahead (its backlog reached FLOW_HIGH at least once)
            with cond:
                assert cond.wait_for(
                    lambda: all(counts.get(p, 0) >= 3 * FLOW_HIGH for p in ports), 120)
                before = sum(counts.get(p, 0) for p in ports)
            params = pika.ConnectionParameters(
                "127.0.0.1", server.port, credentials=pika.PlainCredentials("guest", "guest"),
                socket_timeout=60, blocked_connection_timeout=60, stack_timeout=120)
            conn = pika.BlockingConnection(params)
            ch = conn.channel()
            ch.exchange_declare("amq.fanout", passive=True)
            with cond:
                during = sum(counts.get(p, 0) for p in ports) - before
            conn.close()
        finally:
            stop.set()
            for s in socks:
                s.close()
            for th in threads:
                th.join(10)
    # at most one batch per flooder per input batch of the new connection (a round trip may
    # arrive in two reads: tune-ok, then open), and one each in progress; without the lane
    # it was FLOW_HIGH - 2 or more per flooder per round trip (measured: 119 here, 20-24 with)
    assert FLOW_HIGH >= 8
    assert during <= FLOODERS * (2 * ROUND_TRIPS + 1), during
