"""The output buffer of a connection (``syncmq.reactor.outbuf.OutBuffer``) under a Hypothesis
state machine: writes of every shape, the worker's direct send, the reactor's flush and its
queued calls, the peer reading a little at a time (a small socket buffer, so sends are partial
and hit EAGAIN), and the throttle. After every step: ``Transport._check()`` (pending bytes = the
queued chunks), every byte written is either sent or pending, and the peer has received a
prefix of what was written, in write order, whichever path sent it.
"""

from __future__ import annotations

import socket

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from syncmq.reactor import Reactor, Transport

HIGH = 16_000


class _Worker:
    def __init__(self) -> None:
        self.tasks: list = []

    def submit(self, fn, *args) -> None:
        self.tasks.append((fn, args))


class _Pool:
    def set_on_deferred(self, fn) -> None:
        self.on_deferred = fn

    def release(self, worker) -> None:
        pass


class _Handler:
    def __init__(self) -> None:
        self.drained = 0

    def output_drained(self) -> None:
        self.drained += 1

    def connection_lost(self) -> None:
        pass


chunk = st.one_of(
    st.binary(min_size=0, max_size=3000),
    st.binary(min_size=1, max_size=9000).map(memoryview),
)


class OutBufferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reactor = Reactor(_Pool(), lambda t: None, max_pending_output=HIGH)
        # TCP over loopback with small buffers: sends are partial and hit EAGAIN
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            b = socket.socket()
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            b.connect(listener.getsockname())
            a, _ = listener.accept()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.setblocking(False)
        b.setblocking(False)
        self.peer = b
        self.worker = _Worker()
        self.t = Transport(self.reactor, a, ("test", 0), self.worker)
        self.t.handler = _Handler()
        self.reactor.transports[self.t.fd] = self.t
        self.reactor.selector.register(a, 1, self.t)  # EVENT_READ, as after accept
        self.written = bytearray()
        self.received = bytearray()
        self.clears = 0  # throttled -> not throttled transitions seen

    def teardown(self) -> None:
        # everything written arrives, in order
        for _ in range(10_000):
            if len(self.received) == len(self.written):
                break
            before = self.t.throttled
            self.reactor._flush(self.t)
            self._note_throttle(before)
            self._read(1 << 16)
        assert bytes(self.received) == bytes(self.written)
        assert self.t.pending_out == 0 and not self.t.throttled
        self.accounting()
        self.t._check()
        self.reactor._lost(self.t)
        self.peer.close()
        self.reactor.selector.close()

    def _read(self, n: int) -> None:
        try:
            data = self.peer.recv(n)
        except BlockingIOError:
            return
        self.received += data

    def _note_throttle(self, before: bool) -> None:
        if before and not self.t.throttled:
            self.clears += 1

    @rule(chunks=st.lists(chunk, max_size=6))
    def write(self, chunks):
        self.t.write(chunks)
        for c in chunks:
            self.written += bytes(c)

    @rule(size=st.integers(min_value=1, max_value=40_000), n=st.integers(1, 3))
    def write_big(self, size, n):
        chunks = [memoryview(bytes([i % 251]) * size) for i in range(n)]
        self.t.write(chunks)
        for c in chunks:
            self.written += c

    @rule(data=st.binary(min_size=1, max_size=500))
    def write1(self, data):
        self.t.write1(data)
        self.written += data

    @rule()
    def send_direct(self):
        before = self.t.throttled
        self.reactor._send_direct(self.t)
        self._note_throttle(before)

    @rule()
    def flush(self):
        before = self.t.throttled
        self.reactor._flush(self.t)
        self._note_throttle(before)

    @rule()
    def run_reactor_calls(self):
        before = self.t.throttled
        self.reactor._run_calls()  # the flushes that writes queued (no worker: call_soon)
        self._note_throttle(before)

    @rule(n=st.integers(min_value=1, max_value=20_000))
    def peer_reads(self, n):
        self._read(n)

    @precondition(lambda self: self.t.pending_out > self.t.out_high)
    @rule()
    def throttle(self):
        assert self.t.throttle() is True
        assert self.t.throttled

    @invariant()
    def accounting(self):
        t = self.t
        t._check()
        assert t.bytes_out + t.pending_out == len(self.written)
        assert bytes(self.written[: len(self.received)]) == bytes(self.received)
        assert len(self.received) <= t.bytes_out
        drained = sum(1 for fn, _ in self.worker.tasks if fn == t.handler.output_drained)
        assert drained == self.clears
        if t.throttled:
            assert t.pending_out > t.out_low


OutBufferMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                              deadline=None)
test_out_buffer = OutBufferMachine.TestCase
