"""Costs that stay flat (issue #22): the broker's CPU per operation with N things present.

Each :class:`Scenario` grows a background of N objects (consumers on a queue, queues,
topic bindings, open connections, open channels, queues bound to a fanout, bindings to a
direct, fanout or headers exchange) and runs a batch of
operations against it, pipelined over raw sockets (``amqp_raw``) and closed by one round trip,
so that the broker's work dominates. :func:`cost_per_op` reads the broker's CPU seconds
(utime + stime from /proc, all threads) around a batch: never wall-clock time, which a loaded
machine stretches. A cost that grows with N shows as a ratio cost(4N) / cost(N) near 4 (a
scan per operation); flat is near 1. Used by tests/test_flat_costs.py (N and 4N, a
generous bound) and bench/flat_costs.py (a table over several N).
"""

from __future__ import annotations

import os
import time

import amqp_raw as raw

from syncmq.wire import _spec
from syncmq.wire.frames import encode_content, encode_frame, parse_frames

B, Q, E, C = _spec.Basic, _spec.Queue, _spec.Exchange, _spec.Channel


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _m(channel: int, method: _spec.Method) -> bytes:
    return encode_frame(raw.FRAME_METHOD, channel, method.encode())


def sync(c: raw.RawClient, queue: str, channel: int = 1, timeout: float = 300.0) -> int:
    """A passive declare of ``queue``, answered after everything sent before it; every other
    frame on the way is skipped. Returns the declare-ok's message count."""
    c.send(_m(channel, Q.Declare(queue=queue, passive=True)))
    return _read_until(c, channel, Q.DeclareOk, 1, timeout)[-1].message_count


def _read_until(c: raw.RawClient, channel: int, cls: type, n: int, timeout: float) -> list:
    """Read until ``n`` methods of ``cls`` arrived on ``channel`` (others skipped)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        parsed, used = parse_frames(c.buf, 0)
        del c.buf[:used]
        for ftype, ch, payload in parsed:
            if ftype == raw.FRAME_METHOD and ch == channel:
                m = _spec.decode_method(bytes(payload))
                if isinstance(m, cls):
                    got.append(m)
                elif isinstance(m, (C.Close, _spec.Connection.Close)):
                    raise AssertionError(f"closed: {m}")
        if len(got) < n:
            assert c._fill(deadline), f"timed out waiting for {cls.__qualname__}"
    return got


class Scenario:
    """N objects in the background; ``ops(k)`` runs k operations and returns when the broker
    has done them. ``per`` is what one operation's cost is divided by (1, or copies)."""

    name = ""
    unit = "op"

    def __init__(self, port: int, tag: str) -> None:
        self.port = port
        self.tag = tag
        self.n = 0
        self.done = 0  # operations run so far (names stay unique)
        self.c = raw.connect(port)
        # a pipelined batch may keep the broker busy for long on a loaded machine
        self.c.sock.settimeout(300)
        self.c.open_channel()
        self.queue = f"{tag}-{self.name}"
        self.c.send_method(1, Q.Declare(queue=self.queue))
        self.c.expect_method(1, Q.DeclareOk)

    def grow(self, n: int) -> None:
        raise NotImplementedError

    def ops(self, k: int) -> int:
        """Run ``k`` operations; returns the divisor for the cost (operations or copies)."""
        raise NotImplementedError

    def before(self, k: int) -> None:
        """Set-up for a batch of ``k`` operations (not measured)."""

    def after(self) -> None:
        """Clean-up after a measured batch (not measured)."""

    def close(self) -> None:
        self.c.close()


class ConsumeCancel(Scenario):
    """basic.consume + basic.cancel of a new consumer, N consumers on the queue."""

    name = "consume-cancel"

    def grow(self, n: int) -> None:
        assert raw.register_consumers(self.c, self.queue, self.n, n - self.n) == n
        self.n = n

    def ops(self, k: int) -> int:
        tags = [f"x{self.done + i}" for i in range(k)]
        self.done += k
        self.c.send(b"".join(_m(1, B.Consume(queue=self.queue, consumer_tag=t, no_wait=True))
                             + _m(1, B.Cancel(consumer_tag=t, no_wait=True)) for t in tags))
        sync(self.c, self.queue)
        return k


class DeclareDelete(Scenario):
    """queue.declare + queue.delete of a new queue, N queues in the vhost."""

    name = "declare-delete"

    def grow(self, n: int) -> None:
        self.c.send(b"".join(_m(1, Q.Declare(queue=f"{self.tag}-bg{i}", no_wait=True))
                             for i in range(self.n, n)))
        sync(self.c, self.queue)
        self.n = n

    def ops(self, k: int) -> int:
        names = [f"{self.tag}-t{self.done + i}" for i in range(k)]
        self.done += k
        self.c.send(b"".join(_m(1, Q.Declare(queue=q, no_wait=True))
                             + _m(1, Q.Delete(queue=q, no_wait=True)) for q in names))
        sync(self.c, self.queue)
        return k


class TopicBind(Scenario):
    """queue.bind of a new binding key to a topic exchange with N bindings."""

    name = "topic-bind"

    def __init__(self, port: int, tag: str) -> None:
        super().__init__(port, tag)
        self.exchange = f"{tag}-topic"
        self.c.send_method(1, E.Declare(exchange=self.exchange, type="topic"))
        self.c.expect_method(1, E.DeclareOk)

    def _binds(self, keys: list[str]) -> bytes:
        return b"".join(_m(1, Q.Bind(queue=self.queue, exchange=self.exchange, routing_key=k,
                                     no_wait=True)) for k in keys)

    def grow(self, n: int) -> None:
        for lo in range(self.n, n, 10_000):
            self.c.send(self._binds([f"bg.{i}.*" for i in range(lo, min(n, lo + 10_000))]))
            sync(self.c, self.queue)
        self.n = n

    def ops(self, k: int) -> int:
        keys = [f"op.{self.done + i}.#" for i in range(k)]
        self.done += k
        self.c.send(self._binds(keys))
        sync(self.c, self.queue)
        return k


class TopicRoute(TopicBind):
    """basic.publish to a topic exchange with N bindings (each message matches one)."""

    name = "topic-route"

    def ops(self, k: int) -> int:
        frames = []
        for i in range(k):
            key = f"bg.{(self.done + i) * 7919 % self.n}.x"
            frames.append(_m(1, B.Publish(exchange=self.exchange, routing_key=key)))
            frames.extend(bytes(x) for x in encode_content(1, 60, b"\x00\x00", b"m",
                                                           self.c.frame_max))
        self.done += k
        self.c.send(b"".join(frames))
        assert sync(self.c, self.queue) == k, "each publish is routed once"
        return k

    def after(self) -> None:
        self.c.send_method(1, Q.Purge(queue=self.queue))
        self.c.expect_method(1, Q.PurgeOk)


class ConnectionOpenClose(Scenario):
    """A connection's whole life (handshake, connection.close), N other connections open."""

    name = "connection-open-close"

    def __init__(self, port: int, tag: str) -> None:
        super().__init__(port, tag)
        self.others: list[raw.RawClient] = []

    def grow(self, n: int) -> None:
        while len(self.others) < n:
            self.others.append(raw.connect(self.port))
        self.n = n

    def ops(self, k: int) -> int:
        for _ in range(k):
            c = raw.connect(self.port)
            c.send_method(0, _spec.Connection.Close(reply_code=200, reply_text="bye"))
            c.expect_method(0, _spec.Connection.CloseOk)
            c.close()
        self.done += k
        return k

    def close(self) -> None:
        for c in self.others:
            c.close()
        super().close()


class ChannelOpen(Scenario):
    """channel.open + channel.close on a connection with N channels open."""

    name = "channel-open"

    def __init__(self, port: int, tag: str) -> None:
        super().__init__(port, tag)
        self.free = self.c.tune.channel_max  # the highest id: reused by every operation

    def grow(self, n: int) -> None:
        self.c.send(b"".join(_m(ch, C.Open()) for ch in range(self.n + 2, n + 2)))
        _read_until_each(self.c, range(self.n + 2, n + 2), C.OpenOk)
        self.n = n

    def ops(self, k: int) -> int:
        # one round trip per open + close: a channel.open pipelined right behind the
        # channel.close of the same id is dropped (see docs/architecture.md, flat costs)
        ch = self.free
        pair = _m(ch, C.Open()) + _m(ch, C.Close(reply_code=200, reply_text=""))
        for _ in range(k):
            self.c.send(pair)
            _read_until(self.c, ch, C.CloseOk, 1, 60)
        self.done += k
        return k


def _read_until_each(c: raw.RawClient, channels: range, cls: type) -> None:
    want = set(channels)
    deadline = time.monotonic() + 300
    while want:
        parsed, used = parse_frames(c.buf, 0)
        del c.buf[:used]
        for ftype, ch, payload in parsed:
            if ftype == raw.FRAME_METHOD and isinstance(_spec.decode_method(bytes(payload)),
                                                        cls):
                want.discard(ch)
        if want:
            assert c._fill(deadline), f"{len(want)} {cls.__qualname__} missing"


class FanoutCopies(Scenario):
    """basic.publish to a fanout exchange with N queues bound: the cost per copy."""

    name = "fanout-copy"
    unit = "copy"
    COPIES = 200_000  # per batch, whatever N (publishes = COPIES // N)

    def __init__(self, port: int, tag: str) -> None:
        super().__init__(port, tag)
        self.exchange = f"{tag}-fanout"
        self.c.send_method(1, E.Declare(exchange=self.exchange, type="fanout"))
        self.c.expect_method(1, E.DeclareOk)
        self.one = _m(1, B.Publish(exchange=self.exchange, routing_key="")) + b"".join(
            bytes(x) for x in encode_content(1, 60, b"\x00\x00", b"m", self.c.frame_max))

    def grow(self, n: int) -> None:
        self.c.send(b"".join(
            _m(1, Q.Declare(queue=f"{self.tag}-f{i}", no_wait=True))
            + _m(1, Q.Bind(queue=f"{self.tag}-f{i}", exchange=self.exchange, no_wait=True))
            for i in range(self.n, n)))
        sync(self.c, self.queue)
        self.n = n

    def ops(self, k: int) -> int:
        publishes = max(1, self.COPIES // self.n)
        self.c.send(self.one * publishes)
        assert sync(self.c, f"{self.tag}-f0") == publishes
        self.done += publishes
        return publishes * self.n

    def after(self) -> None:
        self.c.send(b"".join(_m(1, Q.Purge(queue=f"{self.tag}-f{i}", no_wait=True))
                             for i in range(self.n)))
        sync(self.c, self.queue)


class Bind(Scenario):
    """queue.bind of a new binding to an exchange of ``TYPE`` with N bindings, of the shape
    a subclass says: N keys on one queue (``keys``) or N queues (``queues``), each measured
    bind a new key on that queue or a new queue (declared before the batch, not measured).
    ``after`` takes the new bindings away (not measured), so N stays N."""

    TYPE = "direct"
    SHAPE = "keys"

    def __init__(self, port: int, tag: str) -> None:
        super().__init__(port, tag)
        self.exchange = f"{tag}-{self.name}-x"
        self.c.send_method(1, E.Declare(exchange=self.exchange, type=self.TYPE))
        self.c.expect_method(1, E.DeclareOk)
        self.new: list[tuple[str, str, dict]] = []  # the batch's bindings

    def binding(self, i: int, new: bool) -> tuple[str, str, dict]:
        """``(queue, routing key, arguments)`` of background (or new) binding ``i``."""
        word = "op" if new else "bg"
        if self.SHAPE == "keys":
            return self.queue, f"{word}.{i}", {}
        args = {"x-match": "all", "n": i} if self.TYPE == "headers" else {}
        return f"{self.tag}-{word}{i}", "k", args

    def _bind(self, b, unbind: bool = False) -> bytes:
        cls = Q.Unbind if unbind else Q.Bind
        extra = {} if unbind else {"no_wait": True}
        return _m(1, cls(queue=b[0], exchange=self.exchange, routing_key=b[1], arguments=b[2],
                         **extra))

    def _declares(self, bs) -> bytes:
        if self.SHAPE == "keys":
            return b""
        return b"".join(_m(1, Q.Declare(queue=b[0], no_wait=True)) for b in bs)

    def grow(self, n: int) -> None:
        for lo in range(self.n, n, 10_000):
            bs = [self.binding(i, False) for i in range(lo, min(n, lo + 10_000))]
            self.c.send(self._declares(bs) + b"".join(self._bind(b) for b in bs))
            sync(self.c, self.queue)
        self.n = n

    def before(self, k: int) -> None:
        self.new = [self.binding(self.done + i, True) for i in range(k)]
        self.done += k
        if self.SHAPE == "queues":
            self.c.send(self._declares(self.new))
            sync(self.c, self.queue)

    def ops(self, k: int) -> int:
        self.c.send(b"".join(self._bind(b) for b in self.new))
        sync(self.c, self.queue)
        return k

    def after(self) -> None:
        if self.SHAPE == "queues":
            self.c.send(b"".join(_m(1, Q.Delete(queue=b[0], no_wait=True)) for b in self.new))
            sync(self.c, self.queue)
        else:
            self.c.send(b"".join(self._bind(b, unbind=True) for b in self.new))
            _read_until(self.c, 1, Q.UnbindOk, len(self.new), 300)


class DirectBind(Bind):
    """queue.bind of a new key, N distinct keys bound (one queue) to a direct exchange."""

    name = "direct-bind"


class DirectBindQueues(Bind):
    """queue.bind of a new queue with key ``k``, N queues bound with ``k`` to a direct
    exchange (one key, N destinations)."""

    name = "direct-bind-queues"
    SHAPE = "queues"


class FanoutBind(Bind):
    """queue.bind of a new queue, N queues bound to a fanout exchange."""

    name = "fanout-bind"
    TYPE = "fanout"
    SHAPE = "queues"


class HeadersBind(Bind):
    """queue.bind of a new queue, N queues bound to a headers exchange, each with its own
    arguments (``x-match: all``, ``n: i``)."""

    name = "headers-bind"
    TYPE = "headers"
    SHAPE = "queues"


class DirectUnbind(Bind):
    """queue.unbind of a key, N other distinct keys bound (one queue) to a direct exchange:
    the batch's keys are bound before it (not measured) and unbound in it."""

    name = "direct-unbind"

    def before(self, k: int) -> None:
        super().before(k)
        self.c.send(b"".join(self._bind(b) for b in self.new))
        sync(self.c, self.queue)

    def ops(self, k: int) -> int:
        self.c.send(b"".join(self._bind(b, unbind=True) for b in self.new))
        _read_until(self.c, 1, Q.UnbindOk, k, 300)
        return k

    def after(self) -> None:
        pass


SCENARIOS = {s.name: s for s in (ConsumeCancel, DeclareDelete, TopicBind, TopicRoute,
                                 ConnectionOpenClose, ChannelOpen, FanoutCopies, DirectBind,
                                 DirectBindQueues, FanoutBind, HeadersBind, DirectUnbind)}


def cost_per_op(pid: int, scenario: Scenario, k: int, repeat: int = 3) -> float:
    """The lowest of ``repeat`` batches of broker CPU seconds per operation (or copy): the
    lowest, as other processes only ever add to it."""
    best = float("inf")
    for _ in range(repeat):
        scenario.before(k)
        t0 = cpu_seconds(pid)
        per = scenario.ops(k)
        best = min(best, (cpu_seconds(pid) - t0) / per)
        scenario.after()
    return best
