"""Live fuzzing: a Hypothesis state machine drives a real syncmq over raw sockets.

One broker serves the whole module. Each example opens a raw connection (``tests/amqp_raw.py``)
and runs a few steps drawn from: valid work (publish/get round trips, channels opened and
closed, content interleaved across channels), valid frames in the wrong order or on the wrong
channel, mutated frames (byte flips, truncation, wrong size, channel, type or frame-end octet),
frames over frame_max, huge field tables and tables/arrays nested far deeper than the codec
allows, in method arguments and in message headers that a headers exchange has to decode;
and what issue #19 found: PLAIN responses with an authorization identity or control characters
in the user name, idle sockets that never finish the handshake next to a real login (the broker
runs with ``--max-connections 16``), thousands of consumers registered and cancelled on one
queue with an exclusive consume refused beside them.

After every step the connection is probed (a channel.open on a fresh channel) and must, within
``STEP_TIMEOUT``, either answer it (it keeps working; a channel.close with a soft code is
allowed on the way), send connection.close with a hard code from the spec, or be closed by the
broker. A step that may leave the byte stream out of sync is followed by ``frame_max`` octets
of 0xCE, which completes any frame the broker is waiting for and then cannot be framed, so
there is always an answer. Never acceptable: no answer (a hang), a code outside the spec's
lists (541 internal-error included), a traceback in the broker's log, the broker's RSS above
``RSS_LIMIT``, or a well-behaved pika client on another connection failing its
declare/publish/get round trip (checked every ``PIKA_EVERY`` steps).

Size: ``SYNCMQ_FUZZ_EXAMPLES`` (fuzz/conftest.py profile) examples of at most
``STEPS`` steps. Failures found stay as regression tests at the bottom of this module.
"""

from __future__ import annotations

import collections
import os
import socket
import struct
import sys
import time
from pathlib import Path

import pika
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as _hevent
from hypothesis import note as _hnote
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from syncmq.wire import _spec
from syncmq.wire.errors import AMQPConnectionError
from syncmq.wire.fields import encode_table
from syncmq.wire.frames import encode_content, encode_frame, parse_frames

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from amqp_raw import EOF, RawClient  # noqa: E402
from brokerproc import BrokerProcess, start_broker  # noqa: E402

FRAME_MAX = 131072
STEP_TIMEOUT = 20.0  # seconds an answer may take (a loaded CI box stalls)
STEPS = int(os.environ.get("SYNCMQ_FUZZ_STEPS", "12"))
PIKA_EVERY = 4
CLEAN_FIRST, CLEAN_LAST = 2001, 2040  # channels of valid work (probes use 1000..2000)
RSS_LIMIT = 512 * 1024 * 1024
FILLER = b"\xce" * (FRAME_MAX + 64)
# The spec's reply codes (DESIGN.md "Errors"): soft errors close a channel, hard errors the
# connection. 541 internal-error is a spec code but means a broker bug, so it fails the test.
SOFT_CODES = {403, 404, 405, 406}
HARD_CODES = {320, 402, 501, 502, 503, 504, 505, 506, 530, 540}


def note(text: str) -> None:
    """hypothesis.note, also usable when a regression test replays steps outside Hypothesis."""
    try:
        _hnote(text)
    except InvalidArgument:
        pass


OUTCOMES: collections.Counter = collections.Counter()  # printed at the end (pytest -s)


def event(text: str) -> None:
    """Count an outcome (printed by the test) and tell Hypothesis (``event``) if it runs."""
    OUTCOMES[text] += 1
    try:
        _hevent(text)
    except InvalidArgument:
        pass


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    b = start_broker(tmp_path_factory, "--frame-max", str(FRAME_MAX), "--heartbeat", "0",
                     "--max-connections", "16")
    params = pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0,
                                       blocked_connection_timeout=STEP_TIMEOUT,
                                       socket_timeout=STEP_TIMEOUT)
    good = pika.BlockingConnection(params)
    ch = good.channel()
    q = "fz-good-" + os.urandom(3).hex()
    ch.queue_declare(q, exclusive=True)
    yield b, ch, q
    try:
        good.close()
    except Exception:
        pass
    rc = b.stop()
    assert rc == 0, b.log_tail()
    assert not b.tracebacks(), "\n".join(b.tracebacks())


# ---------------------------------------------------------------------------------------------
# frame building


def method_frame(channel: int, method: _spec.Method) -> bytes:
    return encode_frame(_spec.FRAME_METHOD, channel, method.encode())


def content_frames(channel: int, body: bytes, props: bytes = b"\x00\x00") -> list[bytes]:
    return [bytes(c) for c in encode_content(channel, 60, props, body, FRAME_MAX)]


def nested_value(depth: int, mix: bool) -> bytes:
    """A field value nested ``depth`` levels (tables, or tables and arrays alternating), built
    by hand: the codec's encoder refuses to nest that deep."""
    v = b"t\x01"
    for i in range(depth):
        if mix and i % 2:
            v = b"A" + struct.pack(">I", len(v)) + v
        else:
            inner = b"\x01k" + v
            v = b"F" + struct.pack(">I", len(inner)) + inner
    return v


def table_with(value: bytes, key: bytes = b"x-nested") -> bytes:
    content = bytes([len(key)]) + key + value
    return struct.pack(">I", len(content)) + content


def huge_table(n: int, kind: int) -> bytes:
    values = [lambda i: i, lambda i: f"v{i}" * 3, lambda i: bool(i & 1),
              lambda i: [i, str(i)], lambda i: {"a": i}, lambda i: b"\x00\xff" * 4]
    return encode_table({f"k{i}": values[(i + kind) % len(values)](i) for i in range(n)})


def raw_declare(channel: int, queue: str, args_table: bytes) -> bytes:
    """queue.declare with hand-made argument octets (the table as given)."""
    name = queue.encode()
    payload = struct.pack(">HHH", 50, 10, 0) + bytes([len(name)]) + name + b"\x00" + args_table
    return encode_frame(_spec.FRAME_METHOD, channel, payload)


def props_with_headers(headers_table: bytes) -> bytes:
    return struct.pack(">H", 0x2000) + headers_table


def frames_intact(data: bytes) -> bool:
    """Whether ``data`` is a whole number of well-formed frames (else the broker may be left
    waiting inside a frame, and the step must be followed by the filler)."""
    try:
        _, used = parse_frames(data, 0)
    except AMQPConnectionError:
        return False
    return used == len(data)


def templates(ch: int, q: str, ex: str) -> list[bytes]:
    """Valid frames (or frame sequences, joined) to mutate or replay out of order."""
    return [
        method_frame(ch, _spec.Queue.Declare(queue=q, exclusive=True,
                                             arguments={"x-max-length": 10})),
        method_frame(ch, _spec.Exchange.Declare(exchange=ex, type="topic", auto_delete=True)),
        method_frame(ch, _spec.Queue.Bind(queue=q, exchange=ex, routing_key="a.#")),
        method_frame(ch, _spec.Basic.Qos(prefetch_count=3)),
        method_frame(ch, _spec.Basic.Consume(queue=q, consumer_tag="fz")),
        method_frame(ch, _spec.Basic.Cancel(consumer_tag="fz")),
        method_frame(ch, _spec.Basic.Get(queue=q, no_ack=True)),
        method_frame(ch, _spec.Basic.Ack(delivery_tag=1)),
        method_frame(ch, _spec.Basic.Nack(delivery_tag=0, multiple=True)),
        method_frame(ch, _spec.Basic.Recover(requeue=True)),
        method_frame(ch, _spec.Tx.Select()),
        method_frame(ch, _spec.Confirm.Select()),
        method_frame(ch, _spec.Channel.Flow(active=True)),
        method_frame(ch, _spec.Queue.Purge(queue=q)),
        method_frame(ch, _spec.Channel.Open()),
        method_frame(ch, _spec.Channel.Close(reply_code=200, reply_text="bye")),
        method_frame(ch, _spec.Channel.CloseOk()),
        method_frame(0, _spec.Connection.Open(virtual_host="/")),
        method_frame(0, _spec.Connection.TuneOk(channel_max=10, frame_max=FRAME_MAX)),
        encode_frame(_spec.FRAME_HEARTBEAT, ch, b""),
        b"".join([method_frame(ch, _spec.Basic.Publish(exchange=ex, routing_key="a.b")),
                  *content_frames(ch, b"hello")]),
        b"".join(content_frames(ch, b"x" * 300)),
        encode_frame(_spec.FRAME_BODY, ch, b"orphan body"),
        raw_declare(ch, q + "-n", table_with(nested_value(8, True))),
    ]


# ---------------------------------------------------------------------------------------------
# the state machine


class LiveFuzz(RuleBasedStateMachine):
    broker: BrokerProcess
    good_channel: pika.adapters.blocking_connection.BlockingChannel
    good_queue: str
    steps_done = 0  # across examples (class attribute, incremented per step)

    def __init__(self) -> None:
        super().__init__()
        self.c: RawClient | None = None
        self.channels: set[int] = set()  # fuzz channels we opened (the fuzz may close them)
        self.next_probe = 1000
        self.next_clean = CLEAN_FIRST
        self.closed_by_broker: set[int] = set()
        self.tag = os.urandom(3).hex()
        self.q = f"fz-q-{self.tag}"  # what mutated frames work on
        self.rq = f"fz-rq-{self.tag}"  # what valid round trips use: nothing else touches it
        self.ex = f"fz-x-{self.tag}"

    # ---- connection management ----

    def conn(self) -> RawClient:
        if self.c is None:
            c = RawClient(self.broker.port, timeout=STEP_TIMEOUT)
            c.handshake(frame_max=FRAME_MAX, heartbeat=0)
            self.c = c
            self.channels = set()
            self.next_probe = 1000
            self.next_clean = CLEAN_FIRST
            self.open_channel(1)
            (ch,) = self.clean_channels(1)
            for q in (self.q, self.rq):
                c.send_method(ch, _spec.Queue.Declare(queue=q, exclusive=True))
                self.expect(ch, _spec.Queue.DeclareOk)
            # so that a publish to amq.headers has its headers decoded to be matched
            c.send_method(ch, _spec.Queue.Bind(queue=self.q, exchange="amq.headers",
                                               arguments={"x-match": "any", "k": 1}))
            self.expect(ch, _spec.Queue.BindOk)
            self.close_clean([ch])
        return self.c

    # Valid work runs on "clean" channels, opened for one rule and closed at its end, in a
    # range that the probe and the fuzz never aim at; replies are read skipping frames of
    # other channels (deliveries to consumers a fuzzed basic.consume left behind).

    def clean_channels(self, n: int) -> list[int]:
        chans = []
        for _ in range(n):
            ch = self.next_clean
            self.next_clean = ch + 1 if ch < CLEAN_LAST else CLEAN_FIRST
            self.c.send_method(ch, _spec.Channel.Open())
            chans.append(ch)
        for ch in chans:
            self.expect(ch, _spec.Channel.OpenOk)
        return chans

    def close_clean(self, chans: list[int]) -> None:
        for ch in chans:
            self.c.send_method(ch, _spec.Channel.Close(reply_code=200, reply_text=""))
        for ch in chans:
            self.expect(ch, _spec.Channel.CloseOk)

    def next_on(self, ch: int):
        """The next frame on channel ``ch``; a connection.close fails (valid work must not
        cause one), frames of other channels are skipped."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            f = self.c.read_frame(max(0.001, deadline - time.monotonic()))
            if f.channel == 0 and f.type != _spec.FRAME_HEARTBEAT:
                raise AssertionError(f"valid work got {f!r}")
            if f.channel == ch:
                return f

    def expect(self, ch: int, cls: type):
        f = self.next_on(ch)
        assert isinstance(f.method, cls), f"expected {cls.__qualname__} on {ch}, got {f!r}"
        return f.method

    def content_on(self, ch: int) -> bytes:
        f = self.next_on(ch)
        assert f.type == _spec.FRAME_HEADER, f
        size = struct.unpack_from(">Q", f.payload, 4)[0]
        body = b""
        while len(body) < size:
            f = self.next_on(ch)
            assert f.type == _spec.FRAME_BODY, f
            body += f.payload
        return body

    def drop(self) -> None:
        if self.c is not None:
            self.c.close()
            self.c = None

    def teardown(self) -> None:
        self.drop()
        self.cleanup()

    def cleanup(self) -> None:
        """Delete what this example may have declared that outlives its connection (queues
        that are not exclusive, exchanges never bound), so that the broker's memory only
        grows if it leaks. Each delete on its own channel; errors are fine."""
        queues = [f"fz-huge-{self.tag}", f"fz-nest-{self.tag}", self.q + "-n"]
        exchanges = [self.ex, f"fz-nx-{self.tag}"]
        frames = []
        for i, q in enumerate(queues, start=1):
            frames += [method_frame(i, _spec.Channel.Open()),
                       method_frame(i, _spec.Queue.Delete(queue=q))]
        for i, x in enumerate(exchanges, start=len(queues) + 1):
            frames += [method_frame(i, _spec.Channel.Open()),
                       method_frame(i, _spec.Exchange.Delete(exchange=x))]
        n = len(queues) + len(exchanges)
        with RawClient(self.broker.port, timeout=STEP_TIMEOUT) as c:
            c.handshake(frame_max=FRAME_MAX, heartbeat=0)
            c.send(b"".join(frames))
            done = 0
            while done < n:
                f = c.read_method()
                if isinstance(f.method, (_spec.Queue.DeleteOk, _spec.Exchange.DeleteOk,
                                         _spec.Channel.Close)):
                    done += 1

    def open_channel(self, ch: int) -> None:
        self.c.send_method(ch, _spec.Channel.Open())
        self.c.expect_method(ch, _spec.Channel.OpenOk)
        self.channels.add(ch)

    def send(self, data: bytes) -> bool:
        """Send; False if the broker already closed the socket."""
        try:
            self.c.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    # ---- the check after every step ----

    def settle(self, desync: bool = False) -> str:
        """Probe the connection; returns "open" or "closed". Fails on a hang or a bad code."""
        c = self.c
        if desync and not self.send(FILLER):
            self.drop()
            return "closed"
        self.closed_by_broker = set()
        probe = self.next_probe
        self.next_probe += 1
        if self.next_probe > 2000:
            self.next_probe = 1000
        if not self.send(method_frame(probe, _spec.Channel.Open())):
            self.drop()
            return "closed"
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                f = c.read_frame(max(left, 0.001))
            except EOF:
                note("broker closed the socket")
                event("closed by the broker")
                self.drop()
                return "closed"
            except (ConnectionResetError, BrokenPipeError):
                self.drop()
                return "closed"
            except TimeoutError:
                raise AssertionError(
                    f"no answer within {STEP_TIMEOUT}s: the connection hangs\n"
                    + self.broker.log_tail(20)) from None
            m = f.method
            if isinstance(m, _spec.Connection.Close):
                note(f"connection.close {m.reply_code} {m.reply_text}")
                event(f"connection.close {m.reply_code}")
                assert m.reply_code in HARD_CODES, (m, self.broker.log_tail(20))
                self.send(method_frame(0, _spec.Connection.CloseOk()))
                self.drop()
                return "closed"
            if isinstance(m, _spec.Channel.Close):
                note(f"channel.close {f.channel} {m.reply_code} {m.reply_text}")
                event(f"channel.close {m.reply_code}")
                assert m.reply_code in SOFT_CODES, (m, self.broker.log_tail(20))
                self.send(method_frame(f.channel, _spec.Channel.CloseOk()))
                self.channels.discard(f.channel)
                self.closed_by_broker.add(f.channel)
                if f.channel == probe:
                    return "open"
                continue
            if isinstance(m, _spec.Channel.OpenOk) and f.channel == probe:
                event("kept working")
                self.send(method_frame(probe, _spec.Channel.Close(reply_code=200,
                                                                  reply_text="")))
                self._await_close_ok(probe)
                return "open"
            # anything else (deliveries, acks, answers to the step) is skipped

    def _await_close_ok(self, ch: int) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            try:
                f = self.c.read_frame(max(deadline - time.monotonic(), 0.001))
            except (EOF, ConnectionResetError):
                self.drop()
                return
            except TimeoutError:
                raise AssertionError("no channel.close-ok: the connection hangs") from None
            if isinstance(f.method, _spec.Channel.CloseOk) and f.channel == ch:
                return
            if isinstance(f.method, _spec.Connection.Close):
                assert f.method.reply_code in HARD_CODES, f.method
                self.drop()
                return

    def some_channel(self, data: st.DataObject) -> int:
        choices = sorted(self.channels) or [1]
        return data.draw(st.one_of(st.sampled_from(choices), st.sampled_from(choices),
                                   st.integers(0, 65535)), label="channel")

    # ---- invariants ----

    @invariant()
    def broker_is_healthy(self) -> None:
        b = self.broker
        assert b.proc.poll() is None, "broker died:\n" + b.log_tail()
        assert not b.tracebacks(), "\n".join(b.tracebacks())
        rss = _rss(b.proc.pid)
        assert rss < RSS_LIMIT, f"broker RSS {rss >> 20} MiB"
        LiveFuzz.steps_done += 1
        if LiveFuzz.steps_done % PIKA_EVERY == 0:
            ch, q = self.good_channel, self.good_queue
            body = os.urandom(16)
            ch.basic_publish("", q, body)
            _method, _props, got = ch.basic_get(q, auto_ack=True)
            assert got == body, "the well-behaved client lost its message"

    # ---- valid work ----

    @rule(body=st.binary(max_size=3 * FRAME_MAX), split=st.integers(1, 64))
    def publish_and_get(self, body: bytes, split: int) -> None:
        """A valid round trip, written in ``split``-octet pieces; must work exactly."""
        c = self.conn()
        (ch,) = self.clean_channels(1)
        c.send_method(ch, _spec.Queue.Purge(queue=self.rq))
        self.expect(ch, _spec.Queue.PurgeOk)
        data = method_frame(ch, _spec.Basic.Publish(exchange="", routing_key=self.rq)) + \
            b"".join(content_frames(ch, body))
        data += method_frame(ch, _spec.Basic.Get(queue=self.rq, no_ack=True))
        step = max(1, len(data) // split)
        for i in range(0, len(data), step):
            c.send(data[i:i + step])
        self.expect(ch, _spec.Basic.GetOk)
        assert self.content_on(ch) == body
        self.close_clean([ch])
        assert self.settle() == "open"

    @rule(data=st.data())
    def open_or_close_channel(self, data: st.DataObject) -> None:
        """Fuzz channels (what mutated frames aim at), opened and closed validly."""
        c = self.conn()
        ch = data.draw(st.integers(1, 30), label="channel id")
        if ch in self.channels:
            c.send_method(ch, _spec.Channel.Close(reply_code=200, reply_text="done"))
            self.channels.discard(ch)
        else:
            c.send_method(ch, _spec.Channel.Open())
            self.channels.add(ch)
        # the fuzz may have closed or opened it behind our back: the answer may be an error
        self.settle()

    @rule(bodies=st.lists(st.binary(max_size=2 * FRAME_MAX), min_size=2, max_size=4),
          order=st.randoms(use_true_random=False))
    def interleaved_content(self, bodies: list[bytes], order) -> None:
        """Content of several channels interleaved frame by frame (each channel's frames in
        order): allowed by the spec, so every message must arrive intact."""
        c = self.conn()
        chans = self.clean_channels(len(bodies) + 1)
        getter, chans = chans[0], chans[1:]
        c.send_method(getter, _spec.Queue.Purge(queue=self.rq))
        self.expect(getter, _spec.Queue.PurgeOk)
        streams = [[method_frame(ch, _spec.Basic.Publish(routing_key=self.rq)),
                    *content_frames(ch, body)] for ch, body in zip(chans, bodies, strict=True)]
        out = []
        while any(streams):
            st_ = order.choice([x for x in streams if x])
            out.append(st_.pop(0))
        c.send(b"".join(out))
        # publishes on different channels are not ordered with each other, but each channel's
        # publish is handled before that channel's close-ok: close them, then get
        self.close_clean(chans)
        got = []
        for _ in bodies:
            c.send_method(getter, _spec.Basic.Get(queue=self.rq, no_ack=True))
            self.expect(getter, _spec.Basic.GetOk)
            got.append(self.content_on(getter))
        assert sorted(got) == sorted(bodies)
        self.close_clean([getter])
        assert self.settle() == "open"

    # ---- invalid input ----

    @rule(data=st.data())
    def mutated_frame(self, data: st.DataObject) -> None:
        self.conn()
        ch = self.some_channel(data)
        frame = bytearray(data.draw(st.sampled_from(templates(ch, self.q, self.ex)),
                                    label="template"))
        kind = data.draw(st.sampled_from(
            ["flip", "truncate", "size", "channel", "type", "end", "payload", "garbage"]),
            label="mutation")
        if kind == "flip":
            for _ in range(data.draw(st.integers(1, 4))):
                i = data.draw(st.integers(0, len(frame) - 1))
                frame[i] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            frame = frame[:data.draw(st.integers(1, len(frame) - 1))]
        elif kind == "size":
            frame[3:7] = struct.pack(">I", data.draw(st.one_of(
                st.integers(0, len(frame) + 64), st.integers(0, FRAME_MAX + 64),
                st.integers(0, 2**32 - 1))))
        elif kind == "channel":
            frame[1:3] = struct.pack(">H", data.draw(st.integers(0, 65535)))
        elif kind == "type":
            frame[0] = data.draw(st.integers(0, 255))
        elif kind == "end":
            frame[-1] = data.draw(st.integers(0, 255))
        elif kind == "payload":
            # the method's arguments cut or extended, with a correct frame size
            size = struct.unpack_from(">I", frame, 3)[0]
            payload = frame[7:7 + size]
            new = payload[:data.draw(st.integers(0, len(payload)))] + data.draw(
                st.binary(max_size=32))
            frame = bytearray(encode_frame(frame[0], ch, bytes(new)))
        else:
            frame = bytearray(data.draw(st.binary(min_size=1, max_size=64)))
        frame = bytes(frame)
        note(f"{kind}: {frame[:64].hex()}")
        if not self.send(frame):
            self.drop()
            return
        self.settle(desync=not frames_intact(frame))

    @rule(data=st.data())
    def frames_out_of_order(self, data: st.DataObject) -> None:
        """Well-formed frames in an arbitrary order, on open or unopened channels."""
        c = self.conn()
        seq = []
        for _ in range(data.draw(st.integers(1, 4), label="frames")):
            ch = self.some_channel(data)
            seq.append(data.draw(st.sampled_from(templates(ch, self.q, self.ex))))
        note(f"out of order: {[s[:12].hex() for s in seq]}")
        if self.send(b"".join(seq)):
            self.settle()
        else:
            self.drop()
        del c

    @rule(extra=st.integers(9, 64 * 1024), data=st.data())
    def frame_over_frame_max(self, extra: int, data: st.DataObject) -> None:
        self.conn()
        ch = self.some_channel(data)
        ftype = data.draw(st.sampled_from([1, 2, 3]))
        size = FRAME_MAX - 8 + extra
        if self.send(struct.pack(">BHI", ftype, ch, size) + b"\x00" * min(size, 4096)):
            self.settle(desync=True)
        else:
            self.drop()

    @rule(n=st.integers(1, 12000), kind=st.integers(0, 5), where=st.sampled_from(
        ["declare", "headers", "consume"]))
    def huge_table(self, n: int, kind: int, where: str) -> None:
        """A field table of ``n`` entries (too large for a frame beyond a few thousand)."""
        self.conn()
        (ch,) = self.clean_channels(1)
        table = huge_table(n, kind)
        note(f"table of {n} entries, {len(table)} octets, in {where}")
        if where == "declare":
            data = raw_declare(ch, f"fz-huge-{self.tag}", table)
        elif where == "consume":
            args = struct.pack(">HHH", 60, 20, 0) + bytes([len(self.q)]) + self.q.encode() + \
                b"\x00\x00" + table
            data = encode_frame(_spec.FRAME_METHOD, ch, args)
        else:
            data = method_frame(ch, _spec.Basic.Publish(exchange="amq.headers")) + \
                b"".join(content_frames(ch, b"h", props_with_headers(table)))
        self.send_on_clean(ch, data)

    @rule(depth=st.integers(1, 3000), mix=st.booleans(), where=st.sampled_from(
        ["declare", "headers", "bind", "exchange"]))
    def deeply_nested(self, depth: int, mix: bool, where: str) -> None:
        """Tables (and arrays) nested ``depth`` levels, where the codec allows 64."""
        self.conn()
        (ch,) = self.clean_channels(1)
        table = table_with(nested_value(depth, mix), b"k" if where == "headers" else b"x-n")
        note(f"nested {depth} ({'mixed' if mix else 'tables'}) in {where}")
        if where == "declare":
            data = raw_declare(ch, f"fz-nest-{self.tag}", table)
        elif where == "bind":
            args = struct.pack(">HHH", 50, 20, 0) + bytes([len(self.q)]) + self.q.encode() + \
                b"\x0bamq.headers" + b"\x00" + b"\x00" + table
            data = encode_frame(_spec.FRAME_METHOD, ch, args)
        elif where == "exchange":
            name = f"fz-nx-{self.tag}".encode()
            args = struct.pack(">HHH", 40, 10, 0) + bytes([len(name)]) + name + \
                b"\x07headers" + b"\x04" + table  # auto-delete
            data = encode_frame(_spec.FRAME_METHOD, ch, args)
        else:
            data = method_frame(ch, _spec.Basic.Publish(exchange="amq.headers")) + \
                b"".join(content_frames(ch, b"n", props_with_headers(table)))
        self.send_on_clean(ch, data)

    def send_on_clean(self, ch: int, data: bytes) -> None:
        """Send ``data`` (aimed at clean channel ``ch``), settle, and close ``ch`` if the
        broker did not."""
        if not self.send(data):
            self.drop()
            return
        if self.settle(desync=not frames_intact(data)) == "open" and \
                ch not in self.closed_by_broker:
            self.close_clean([ch])

    # ---- issue #19: logins an attacker tries, idle sockets, consumer churn ----

    @rule(authzid=st.sampled_from([b"", b"guest", b"admin", b"guest\n", b"\x00"]),
          user=st.sampled_from([b"guest", b"admin", b"gu\nest", b"guest\r\n2026 INFO x",
                                b"\x1b[2Kguest", b""]),
          password=st.sampled_from([b"guest", b"wrong", b""]),
          extra=st.sampled_from([b"", b"\x00", b"\x00x"]))
    def plain_login(self, authzid: bytes, user: bytes, password: bytes, extra: bytes) -> None:
        """A PLAIN response on a new connection: tune only for guest/guest with no authzid
        or authzid "guest"; anything else is refused (403) or dropped, never a login as
        someone else. Control characters in the name never break a log line."""
        response = authzid + b"\x00" + user + b"\x00" + password + extra
        ok = (authzid in (b"", b"guest") and user == b"guest" and password == b"guest"
              and not extra)
        lines_before = len(self.broker.lines)
        with RawClient(self.broker.port, timeout=STEP_TIMEOUT) as c:
            c.send_header()
            c.expect_method(0, _spec.Connection.Start)
            c.send_method(0, _spec.Connection.StartOk(
                client_properties={"capabilities": {"authentication_failure_close": True}},
                mechanism="PLAIN", response=response, locale="en_US"))
            try:
                f = c.read_method()
            except EOF:
                f = None
            if ok:
                assert f is not None and isinstance(f.method, _spec.Connection.Tune), f
                event("login: tune")
            else:
                assert f is None or (isinstance(f.method, _spec.Connection.Close)
                                     and f.method.reply_code == 403), f
                event("login: refused" if f is not None else "login: dropped")
        for line in self.broker.lines[lines_before:]:
            assert line.startswith("{") and line.endswith("}"), line  # one JSON object a line

    @rule(n=st.integers(1, 80), partial=st.booleans())
    def idle_sockets_then_login(self, n: int, partial: bool) -> None:
        """Sockets that never finish the handshake (some sent only the header) do not keep
        a real client out (the broker runs with --max-connections 16)."""
        idle = []
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", self.broker.port),
                                             timeout=STEP_TIMEOUT)
                if partial:
                    s.sendall(b"AMQP\x00\x00\x09\x01")
                idle.append(s)
            with RawClient(self.broker.port, timeout=STEP_TIMEOUT) as c:
                c.handshake(frame_max=FRAME_MAX, heartbeat=0)
                c.open_channel(1)
            event("login beside idle sockets")
        finally:
            for s in idle:
                s.close()

    @rule(n=st.integers(1, 3000), cancel=st.integers(0, 50), data=st.data())
    def consumers_churn(self, n: int, cancel: int, data: st.DataObject) -> None:
        """Many consumers on one queue, some cancelled, an exclusive consume refused on
        another channel: the count stays exact and the connection keeps working."""
        c = self.conn()
        a, b = self.clean_channels(2)
        c.send(b"".join(method_frame(a, _spec.Basic.Consume(
            queue=self.rq, consumer_tag=f"fz{i}", no_wait=True)) for i in range(n)))
        gone = set(data.draw(st.lists(st.integers(0, n - 1), max_size=cancel), label="cancel"))
        c.send(b"".join(method_frame(a, _spec.Basic.Cancel(consumer_tag=f"fz{i}",
                                                           no_wait=True)) for i in gone))
        c.send_method(a, _spec.Queue.Declare(queue=self.rq, passive=True))
        assert self.expect(a, _spec.Queue.DeclareOk).consumer_count == n - len(gone)
        c.send_method(b, _spec.Basic.Consume(queue=self.rq, exclusive=True))
        if n - len(gone):
            m = self.expect(b, _spec.Channel.Close)
            assert m.reply_code == 403, m
            c.send_method(b, _spec.Channel.CloseOk())
        else:
            self.expect(b, _spec.Basic.ConsumeOk)
            self.close_clean([b])
        self.close_clean([a])  # cancels the rest
        event("consumers churned")
        assert self.settle() == "open"


    @rule(data=st.binary(min_size=1, max_size=512))
    def random_octets(self, data: bytes) -> None:
        self.conn()
        if self.send(data):
            self.settle(desync=True)
        else:
            self.drop()


@pytest.mark.timeout(300 + 2 * settings.default.max_examples)
def test_live_state_machine(live):
    b, ch, q = live
    LiveFuzz.broker = b
    LiveFuzz.good_channel = ch
    LiveFuzz.good_queue = q
    run_state_machine_as_test(LiveFuzz, settings=settings(
        settings.default, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much]))
    print("live fuzz outcomes:", dict(OUTCOMES.most_common()))
    assert not b.tracebacks(), "\n".join(b.tracebacks())


# ---------------------------------------------------------------------------------------------
# regressions: what the state machine found, replayed step by step


def _machine(live) -> LiveFuzz:
    b, ch, q = live
    LiveFuzz.broker, LiveFuzz.good_channel, LiveFuzz.good_queue = b, ch, q
    return LiveFuzz()


def test_nested_headers_to_headers_exchange(live):
    m = _machine(live)
    try:
        for depth in (64, 65, 2000):
            m.deeply_nested(depth, True, "headers")
            m.broker_is_healthy()
    finally:
        m.teardown()


def test_a_frame_of_filler_after_a_frame_error_is_harmless(live):
    m = _machine(live)
    try:
        m.random_octets(b"\x01\x00\x01")
        m.broker_is_healthy()
    finally:
        m.teardown()


def test_reused_socket_after_broker_close(live):
    """A socket the broker closed during the handshake is not mistaken for a hang."""
    b, _, _ = live
    s = socket.create_connection(("127.0.0.1", b.port), timeout=STEP_TIMEOUT)
    try:
        s.sendall(b"AMQP\x00\x00\x09\x02")
        assert s.recv(8) == b"AMQP\x00\x00\x09\x01"
    finally:
        s.close()


def test_plain_login_variants(live):
    """The issue #19 login cases, each once (the state machine draws them at random)."""
    m = _machine(live)
    try:
        for args in ((b"", b"guest", b"guest", b""), (b"guest", b"guest", b"guest", b""),
                     (b"admin", b"guest", b"guest", b""), (b"", b"gu\nest", b"wrong", b""),
                     (b"", b"guest", b"guest", b"\x00x")):
            m.plain_login(*args)
            m.broker_is_healthy()
        m.idle_sockets_then_login(40, True)
        m.consumers_churn(2500, 3, _Fixed([1, 2, 3]))
        m.broker_is_healthy()
    finally:
        m.teardown()


class _Fixed:
    """Stands in for Hypothesis's ``data`` in a replayed step: draws return a fixed value."""

    def __init__(self, value) -> None:
        self.value = value

    def draw(self, _strategy, label=None):
        return self.value
