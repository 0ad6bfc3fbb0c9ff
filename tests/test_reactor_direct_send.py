"""Workers send a transport's output themselves at the end of a task (``Reactor._send_direct``)
and leave the rest to the reactor: the bytes must still reach the peer in write order, the
output accounting must come back to zero and a throttled transport must get ``output_drained``.
"""

from __future__ import annotations

import socket
import struct
import threading

from syncmq.reactor import Reactor
from syncmq.wire.frames import PROTOCOL_HEADER
from syncmq.workers import WorkerPool

_REC = struct.Struct(">IBI")  # payload length, writer, sequence number
TIMEOUT = 30


class _Handler:
    def __init__(self, transport, made, drained) -> None:
        self.t = transport
        self.made = made
        self.drained = drained

    def connection_made(self) -> None:
        self.made.append(self.t)
        self.made_event.set()

    def frames_received(self, frames) -> None:
        pass

    def frame_error(self, exc) -> None:
        pass

    def connection_lost(self) -> None:
        pass

    def output_drained(self) -> None:
        self.drained.set()


def _record(writer: int, seq: int, size: int) -> list:
    body = bytes([seq % 251]) * size
    # header and body as separate chunks, the body a memoryview (as deliveries are)
    return [_REC.pack(size, writer, seq), memoryview(body)]


class _CountingReactor(Reactor):
    flushes = 0

    def _flush(self, t) -> None:
        self.flushes += 1
        super()._flush(t)


def _start(max_pending_output: int):
    pool = WorkerPool(2)
    made: list = []
    drained = threading.Event()
    made_event = threading.Event()

    def factory(t):
        h = _Handler(t, made, drained)
        h.made_event = made_event
        return h

    reactor = _CountingReactor(pool, factory, max_pending_output=max_pending_output)
    host, port = reactor.listen("127.0.0.1", 0)
    pool.start()
    reactor.start()
    client = socket.create_connection((host, port), timeout=TIMEOUT)
    client.sendall(PROTOCOL_HEADER)
    assert made_event.wait(TIMEOUT)
    return pool, reactor, client, made[0], drained


def _stop(pool, reactor, client) -> None:
    client.close()
    reactor.stop()
    pool.stop()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(min(n - len(buf), 1 << 20))
        assert data, "connection closed early"
        buf += data
    return bytes(buf)


def test_small_write_is_sent_by_the_worker():
    pool, reactor, client, t, _ = _start(8 << 20)
    try:
        done = threading.Event()

        def task():
            t.write(_record(0, 0, 16))
            done.set()

        t.worker.submit(task)
        assert done.wait(TIMEOUT)
        data = _recv_exactly(client, _REC.size + 16)
        assert _REC.unpack_from(data) == (16, 0, 0)
        with t.out_lock:  # the worker sends and counts under it: counted once we get it
            assert t.pending_out == 0 and not t.sending
        assert reactor.flushes == 0  # the reactor never had to flush it
    finally:
        _stop(pool, reactor, client)


def test_order_kept_across_partial_direct_sends_and_reactor_flushes():
    """Two workers write many small records and some large ones (each far bigger than the
    socket buffers, so a direct send leaves a partial chunk for the reactor) while the client
    reads: each writer's records arrive whole and in order (a direct send must not overtake
    the reactor's pending chunks), ``pending_out`` ends at 0 and a throttled transport is told
    it drained."""
    pool, reactor, client, t, drained = _start(256 * 1024)
    try:
        per_writer = 400
        expected_bytes = 0
        plan: list[list[int]] = [[], []]
        for w in range(2):
            for seq in range(per_writer):
                size = (1 << 20) + seq if seq % 25 == 7 else (seq % 40)
                plan[w].append(size)
                expected_bytes += _REC.size + size
        throttled: list[bool] = []

        def writes(w: int, lo: int, hi: int) -> None:
            for seq in range(lo, hi):
                t.write(_record(w, seq, plan[w][seq]))
            if t.pending_out > t.out_high:
                throttled.append(t.throttle())

        # many short tasks per worker: many end with chunks pending on the reactor
        for w, worker in enumerate(pool.workers):
            for lo in range(0, per_writer, 5):
                worker.submit(writes, w, lo, lo + 5)

        data = _recv_exactly(client, expected_bytes)
        next_seq = [0, 0]
        pos = 0
        while pos < len(data):
            size, w, seq = _REC.unpack_from(data, pos)
            pos += _REC.size
            assert seq == next_seq[w], (w, seq, next_seq[w])
            assert plan[w][seq] == size
            assert data[pos:pos + size] == bytes([seq % 251]) * size
            pos += size
            next_seq[w] += 1
        assert next_seq == [per_writer, per_writer]

        # everything was sent: the accounting is back to zero once the last send is counted
        done = threading.Event()
        t.reactor.call_soon(done.set)  # after a flush in progress
        assert done.wait(TIMEOUT)
        with t.out_lock:  # after a direct send in progress
            assert not t.out and not t.sending and t.pending_out == 0
        if any(throttled):
            assert drained.wait(TIMEOUT)
    finally:
        _stop(pool, reactor, client)


def test_a_stand_ins_first_write_the_kernel_takes_part_of_is_flushed_by_the_reactor():
    """The reactor standing in sends a task's first write at once (``Transport._wake``);
    what the kernel does not take (32 MiB on loopback: a partial send) is the reactor's to
    flush, at once, not at the connection's next write or heartbeat (review: it was left
    in ``sending`` with no one to send it; this reactor has no heartbeat)."""
    pool, reactor, client, t, _ = _start(64 << 20)
    try:
        size = 32 << 20
        reactor.call_soon(lambda: t.worker.stand_in(t.write, _record(0, 0, size)))
        data = _recv_exactly(client, _REC.size + size)
        assert _REC.unpack_from(data) == (size, 0, 0)
        assert data[_REC.size:] == bytes([0]) * size
    finally:
        _stop(pool, reactor, client)
