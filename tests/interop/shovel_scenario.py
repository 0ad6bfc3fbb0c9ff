"""Edge to core: shovels move persistent messages from syncmq queues to one RabbitMQ queue
with ``ack-mode: on-confirm`` while the RabbitMQ node is stopped and restarted and syncmq is
killed -9; then every message must be at RabbitMQ, in order per source queue apart from the
redeliveries after a failure.

Shared by tests/interop/test_shovel_rabbit.py (the issue's 100,000 messages in CI) and
bench/shovel_edge.py (the same run with other sizes and figures printed).

What "in order apart from flagged redeliveries" means here, per source queue (checked by
:func:`check_stream`):

- every message arrives (its ids 0..n-1 all present);
- the first arrivals are exactly 0, 1, ..., n-1 (no gap, nothing overtaken);
- a repeat (a message arriving again) only comes in a *replay*: after a backward jump, the
  ids go on one by one. A replay is what the source redelivers when a link ends: what the
  old link left unacked (a nack or a closed channel requeues it, and syncmq flags it
  ``redelivered``), or what a kill -9 left unacked in the journal (every recovered message
  is flagged ``redelivered`` after an unclean stop). A link delivers only once it is
  running, so there can be at most one backward jump per link after the first: the number
  of jumps of a queue is at most the number of links its shovel logged as running
  (``shovel running``, in every syncmq process of the run), minus one. A delivery published
  twice, or a message the source delivered again without a failure, is a jump too many.
  The flag itself does not reach RabbitMQ: RabbitMQ's shovel publishes the message's
  properties, not the delivery's ``redelivered``, and so does syncmq's.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from base64 import b64encode
from collections import deque
from collections.abc import Callable

import pika
from brokerproc import BrokerProcess
from interop_helpers import RabbitNode, free_port
from interop_helpers import wait_for as _wait_for
from pika.adapters.select_connection import SelectConnection

from syncmq.shovel.definition import parse, validate
from syncmq.shovel.worker import ShovelWorker

DEST = "core"
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def wait_for(cond: Callable[[], object], timeout: float = 60, what: str = "condition"):
    return _wait_for(cond, timeout, what, interval=0.05)


def publish_confirmed(port: int, streams: dict[str, int],
                      body: Callable[[str, int], bytes], window: int = 1000) -> None:
    """Publish ``streams[q]`` persistent messages to each durable queue ``q`` (declared),
    bodies ``body(q, 0..n-1)`` in order, each on its own confirm channel of one connection,
    at most ``window`` unconfirmed per channel; returns once all are confirmed (a nack, a
    closed channel or connection raises)."""
    error: list[str] = []
    left = {q: n for q, n in streams.items() if n}

    def finish(conn, why=None):
        if why:
            error.append(why)
        if conn.is_open:
            conn.close()

    def on_channel(conn, ch, q):
        sent, outstanding = [0], deque()

        def pump():
            while sent[0] < streams[q] and len(outstanding) < window:
                ch.basic_publish("", q, body(q, sent[0]), PERSISTENT)
                sent[0] += 1
                outstanding.append(sent[0])  # the channel's publish sequence number

        def confirmed(frame):
            m = frame.method
            if isinstance(m, pika.spec.Basic.Nack):
                return finish(conn, f"{q}: nack {m.delivery_tag}")
            if m.multiple:
                while outstanding and outstanding[0] <= m.delivery_tag:
                    outstanding.popleft()
            else:
                outstanding.remove(m.delivery_tag)
            if sent[0] == streams[q] and not outstanding:
                del left[q]
                if not left:
                    finish(conn)
            else:
                pump()

        ch.add_on_close_callback(lambda c, e: left and finish(conn, f"{q}: channel {e}"))
        ch.queue_declare(q, durable=True, callback=lambda f: ch.confirm_delivery(
            confirmed, callback=lambda f: pump()))

    def on_open(conn):
        for q in list(left):
            conn.channel(on_open_callback=lambda ch, q=q: on_channel(conn, ch, q))

    if not left:
        return
    conn = SelectConnection(
        pika.ConnectionParameters("127.0.0.1", port), on_open_callback=on_open,
        on_open_error_callback=lambda c, e: error.append(f"open: {e}"),
        on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.start()
    if error or left:
        raise AssertionError(f"publishing failed: {error or left}")


def publish(port: int, queue: str, n: int) -> None:
    """``n`` persistent messages, bodies ``0``..``n-1``, each confirmed."""
    publish_confirmed(port, {queue: n}, lambda _q, i: str(i).encode())


def depth(port: int, queue: str) -> int:
    """Ready messages of ``queue`` (-1 if the broker or the queue is not there)."""
    try:
        c = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", port, connection_attempts=1, socket_timeout=5))
    except pika.exceptions.AMQPError:
        return -1
    try:
        return c.channel().queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.AMQPError:
        return -1
    finally:
        if c.is_open:
            c.close()


def queue_total(mport: int, queue: str) -> int:
    """Ready + unacknowledged, from syncmq's management API."""
    return syncmq_api(mport, "GET", f"queues/%2F/{queue}")["messages"]


def drain(port: int, queue: str, parse: Callable[[bytes], object] = int) -> list:
    """Consume until the queue is empty (nothing delivered for a second and none ready: call
    it once nothing more can come); the parsed bodies in arrival order."""
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = c.channel()
    out: list = []
    for method, _props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=1):
        if method is None:
            if ch.queue_declare(queue, passive=True).method.message_count == 0:
                break
            continue
        out.append(parse(body))
    c.close()
    return out


def check_stream(ids: list[int], n: int) -> tuple[int, int]:
    """One source queue's arrivals (see the module's docstring): all of 0..n-1 there, first
    arrivals in order, repeats only in replays. Returns (repeats, backward jumps)."""
    missing = set(range(n)) - set(ids)
    assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:20]}"
    seen: set[int] = set()
    top, jumps, prev = -1, 0, -2
    for i in ids:
        if i not in seen:
            assert i == top + 1, f"{i} arrived first after {top}: out of the source's order"
            seen.add(i)
        if i <= top and i != prev + 1:
            jumps += 1  # a replay starts
        top, prev = max(top, i), i
    return len(ids) - n, jumps


def check_order(bodies: list[int], n: int) -> int:
    """Every message there, first arrivals in order; returns the number of repeats."""
    return check_stream(bodies, n)[0]


def syncmq_api(mport: int, method: str, path: str, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{mport}/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + b64encode(b"guest:guest").decode(),
                 "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


class InBroker:
    """The shovels as the broker runs them: runtime parameters set through syncmq's API
    (source ``amqp://``); they survive a kill -9 in the journal. Running links are counted
    from the broker's log (every broker process of the run)."""

    def __init__(self, values: dict[str, dict]) -> None:
        self.values = {k: dict(v, **{"src-uri": "amqp://"}) for k, v in values.items()}
        self.brokers: list[BrokerProcess] = []

    def start(self, s: BrokerProcess) -> None:
        self.brokers.append(s)
        for name, value in self.values.items():
            syncmq_api(s.management_port, "PUT", f"parameters/shovel/%2F/{name}",
                       {"value": value})

    def restarted(self, s: BrokerProcess) -> None:
        self.brokers.append(s)  # the parameters were recovered: nothing to do

    def running(self) -> bool:
        rows = syncmq_api(self.brokers[-1].management_port, "GET", "shovels/%2F")
        up = {r["name"] for r in rows if r["state"] == "running"}
        return up >= set(self.values)

    def links(self, name: str) -> int:
        n = 0
        for b in self.brokers:
            for line in list(b.lines):
                if '"shovel running"' in line:
                    n += json.loads(line).get("shovel") == name
        return n

    def stop(self) -> None:
        for name in self.values:
            syncmq_api(self.brokers[-1].management_port, "DELETE",
                       f"parameters/shovel/%2F/{name}")


class InProcess:
    """The shovels' workers run in this process, with syncmq as a remote source; running
    links counted from their log records."""

    def __init__(self, values: dict[str, dict]) -> None:
        self.values = values
        for name, value in values.items():
            validate("/", name, value)
        self.counts: dict[str, int] = dict.fromkeys(values, 0)
        self.counter = _LinkCounter(self.counts)

    def start(self, s: BrokerProcess) -> None:
        logger = logging.getLogger("syncmq.shovel")
        self.level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self.counter)
        self.workers = [ShovelWorker(parse("/", name, v), None, "test").start()
                        for name, v in self.values.items()]

    def restarted(self, s: BrokerProcess) -> None:
        pass

    def running(self) -> bool:
        return all(w.status.state == "running" for w in self.workers)

    def links(self, name: str) -> int:
        return self.counts[name]

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        logger = logging.getLogger("syncmq.shovel")
        logger.removeHandler(self.counter)
        logger.setLevel(self.level)


class _LinkCounter(logging.Handler):
    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__(logging.INFO)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "shovel", None)
        if record.getMessage() == "shovel running" and name in self.counts:
            self.counts[name] += 1


def _events(rabbit_restarts: int, syncmq_kills: int) -> list[str]:
    """Interleaved: rabbit, syncmq, rabbit, ..."""
    events, r, k = [], rabbit_restarts, syncmq_kills
    while r or k:
        if r:
            events.append("rabbit")
            r -= 1
        if k:
            events.append("syncmq")
            k -= 1
    return events


def _body(q: str, i: int) -> bytes:
    return f"{q}:{i}".encode()


def _parse(b: bytes) -> tuple[str, int]:
    q, i = b.decode().rsplit(":", 1)
    return q, int(i)


def edge_to_core(data_dir: str, rabbit: RabbitNode, n: int, rabbit_restarts: int = 1,
                 syncmq_kills: int = 1, prefetch: int = 250, queues: int = 3,
                 log: Callable[[str], None] = print, in_broker: bool = True) -> dict:
    """Run the scenario: ``n`` messages split over ``queues`` source queues (``edge-0``...),
    each with its own shovel to RabbitMQ's ``core``, published with confirms before the
    shovels start (the backlog an edge stores while its link is down); RabbitMQ stopped and
    restarted and syncmq killed -9 at even steps of the messages moved. ``in_broker``: the
    shovels are runtime parameters of the syncmq broker (source ``amqp://``); else their
    workers run in this process with syncmq as a remote source. Returns figures; every check of the module's
    docstring is asserted, and the source queues end empty."""
    port = free_port()
    s = BrokerProcess(data_dir, "--port", str(port)).start()
    assert s.management_port, "the broker's management API is needed"
    streams = {f"edge-{k}": n // queues + (k < n % queues) for k in range(queues)}
    rc = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", rabbit.port))
    rc.channel().queue_delete(DEST)
    rc.close()
    values = {f"to-core-{q}": {
        "src-uri": f"amqp://guest:guest@127.0.0.1:{port}", "src-queue": q,
        "dest-uri": f"amqp://guest:guest@127.0.0.1:{rabbit.port}", "dest-queue": DEST,
        "ack-mode": "on-confirm", "reconnect-delay": 0.5, "src-prefetch-count": prefetch}
        for q in streams}
    t0 = time.monotonic()
    publish_confirmed(port, streams, _body)
    published = time.monotonic() - t0
    log(f"published {n} in {published:.1f}s")
    shovels = (InBroker if in_broker else InProcess)(values)
    shovels.start(s)
    t0 = time.monotonic()
    events = _events(rabbit_restarts, syncmq_kills)
    brokers, at = [s], []
    try:
        for i, ev in enumerate(events):
            mark = n * (i + 1) // (len(events) + 1)
            _wait_moved(rabbit, mark, s, streams)
            at.append(depth(rabbit.port, DEST))
            if ev == "rabbit":
                log(f"{time.monotonic() - t0:.1f}s: stopping RabbitMQ at {at[-1]} moved")
                rabbit.stop()
                rabbit.start()
            else:
                log(f"{time.monotonic() - t0:.1f}s: kill -9 syncmq at {at[-1]} moved")
                s.kill()
                s = BrokerProcess(data_dir, "--port", str(port)).start()
                brokers.append(s)
                shovels.restarted(s)
        wait_for(lambda: all(queue_total(s.management_port, q) == 0 for q in streams), 900,
                 "the source queues emptied")
        moved_in = time.monotonic() - t0
        wait_for(shovels.running, 60, "the shovels running")
    finally:
        shovels.stop()
    log(f"moved in {moved_in:.1f}s; draining RabbitMQ")
    t1 = time.monotonic()
    arrivals = drain(rabbit.port, DEST, _parse)
    log(f"drained {len(arrivals)} in {time.monotonic() - t1:.1f}s")
    repeats, replays = _check(arrivals, streams, shovels)
    figures = {"messages": n, "queues": queues, "seconds": round(moved_in, 1),
               "publish_seconds": round(published, 1), "repeats": repeats, "replays": replays,
               "rabbit_restarts": rabbit_restarts, "syncmq_kills": syncmq_kills,
               "events": list(zip(events, at, strict=True))}
    assert all(queue_total(s.management_port, q) == 0 for q in streams)
    s.stop()
    for b in brokers:
        assert not b.tracebacks(), "\n".join(b.tracebacks())
    log(f"all {n} at RabbitMQ, {figures['repeats']} repeats in {figures['replays']} replays, "
        "first arrivals in order")
    return figures


def _check(arrivals: list[tuple[str, int]], streams: dict[str, int],
           shovels) -> tuple[int, int]:
    """Each source queue's arrivals by :func:`check_stream`, its replays at most its
    shovel's running links after the first; returns (repeats, replays) over all queues."""
    per_queue: dict[str, list[int]] = {q: [] for q in streams}
    for q, i in arrivals:
        per_queue[q].append(i)
    total_repeats = total_jumps = 0
    for q, ids in per_queue.items():
        repeats, jumps = check_stream(ids, streams[q])
        links = shovels.links(f"to-core-{q}")
        assert jumps <= links - 1, f"{q}: {jumps} replays in {links} links"
        total_repeats += repeats
        total_jumps += jumps
    return total_repeats, total_jumps


def _wait_moved(rabbit: RabbitNode, mark: int, s: BrokerProcess, streams) -> None:
    """Until ``mark`` messages are at RabbitMQ; fails at once when the source queues are
    empty short of it (messages lost)."""
    def moved() -> bool:
        if depth(rabbit.port, DEST) >= mark:
            return True
        if all(queue_total(s.management_port, q) == 0 for q in streams):
            got = depth(rabbit.port, DEST)
            assert got >= mark, f"the source queues are empty with {got} at RabbitMQ: lost"
            return True
        return False
    _wait_for(moved, 600, f"{mark} messages at RabbitMQ", interval=0.25)
