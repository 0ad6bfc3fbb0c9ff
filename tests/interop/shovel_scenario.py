"""Edge to core: a shovel moves persistent messages from a syncmq queue to RabbitMQ with
``ack-mode: on-confirm`` while the RabbitMQ node is stopped and restarted and syncmq is killed
-9; then every message must be at RabbitMQ, and the first arrivals in the source's order
(a repeat is a message sent again after a failure: allowed, as RabbitMQ's shovel allows).

Shared by tests/interop/test_shovel_rabbit.py (a CI-sized run) and bench/shovel_edge.py
(the issue's 100,000 messages).
"""

from __future__ import annotations

import json
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable

import pika
from brokerproc import BrokerProcess
from interop_helpers import RabbitNode, free_port

from syncmq.shovel.definition import parse, validate
from syncmq.shovel.worker import ShovelWorker

SRC, DEST = "edge", "core"


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def publish(port: int, queue: str, n: int, batch: int = 500) -> None:
    """``n`` persistent messages, bodies ``0``..``n-1``, each confirmed."""
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = c.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    for i in range(n):
        ch.basic_publish("", queue, str(i).encode(), props)
    c.close()


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
    req = urllib.request.Request(f"http://127.0.0.1:{mport}/api/queues/%2F/{queue}", headers={
        "Authorization": "Basic " + b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["messages"]


def drain(port: int, queue: str, n: int) -> list[int]:
    """Consume until ``n`` distinct bodies came and the queue is empty; the bodies in order."""
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = c.channel()
    ch.basic_qos(prefetch_count=1000)
    out: list[int] = []
    seen: set[int] = set()
    for method, _props, body in ch.consume(queue, inactivity_timeout=5):
        if method is None:
            if len(seen) >= n:
                break
            continue
        out.append(int(body))
        seen.add(int(body))
        ch.basic_ack(method.delivery_tag, multiple=True)
    c.close()
    return out


def check_order(bodies: list[int], n: int) -> int:
    """Every message there, first arrivals in order; returns the number of repeats."""
    assert set(bodies) == set(range(n)), f"missing: {sorted(set(range(n)) - set(bodies))[:20]}"
    firsts, seen = [], set()
    for b in bodies:
        if b not in seen:
            seen.add(b)
            firsts.append(b)
    assert firsts == list(range(n)), "first arrivals out of the source's order"
    return len(bodies) - n


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
    """The shovel as the broker runs it: the runtime parameter set through syncmq's API
    (source ``amqp://``); it survives a kill -9 in the journal."""

    def __init__(self, value: dict) -> None:
        self.value = dict(value, **{"src-uri": "amqp://"})
        self.s: BrokerProcess | None = None

    def start(self, s: BrokerProcess) -> None:
        self.s = s
        syncmq_api(s.management_port, "PUT", "parameters/shovel/%2F/edge2core",
                   {"value": self.value})

    def restarted(self, s: BrokerProcess) -> None:
        self.s = s  # the parameter was recovered: nothing to do

    def running(self) -> bool:
        rows = syncmq_api(self.s.management_port, "GET", "shovels/%2F")
        return any(r["name"] == "edge2core" and r["state"] == "running" for r in rows)

    def stop(self) -> None:
        syncmq_api(self.s.management_port, "DELETE", "parameters/shovel/%2F/edge2core")


class InProcess:
    """The shovel's worker run in this process, with syncmq as a remote source."""

    def __init__(self, value: dict) -> None:
        self.value = value
        validate("/", "edge2core", value)

    def start(self, s: BrokerProcess) -> None:
        self.w = ShovelWorker(parse("/", "edge2core", self.value), None, "test").start()

    def restarted(self, s: BrokerProcess) -> None:
        pass

    def running(self) -> bool:
        return self.w.status.state == "running"

    def stop(self) -> None:
        self.w.stop()


def edge_to_core(data_dir: str, rabbit: RabbitNode, n: int, rabbit_restarts: int = 1,
                 syncmq_kills: int = 1, prefetch: int = 1000,
                 log: Callable[[str], None] = print, in_broker: bool = False) -> dict:
    """Run the scenario; returns figures. ``in_broker``: the shovel is a runtime parameter
    of the syncmq broker (its source ``amqp://``); else its worker runs in this process with
    syncmq as a remote source. A small ``prefetch`` slows the shovel (about prefetch /
    confirm latency) so that the disruptions land mid-stream."""
    port = free_port()
    s = BrokerProcess(data_dir, "--port", str(port)).start()
    assert s.management_port, "the broker's management API is needed"
    t0 = time.monotonic()
    publish(port, SRC, n)
    log(f"published {n} in {time.monotonic() - t0:.1f}s")
    rc = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", rabbit.port))
    rc.channel().queue_delete(DEST)
    rc.close()
    value = {"src-uri": f"amqp://guest:guest@127.0.0.1:{port}", "src-queue": SRC,
             "dest-uri": f"amqp://guest:guest@127.0.0.1:{rabbit.port}", "dest-queue": DEST,
             "ack-mode": "on-confirm", "reconnect-delay": 0.5, "src-prefetch-count": prefetch}
    shovel = (InBroker if in_broker else InProcess)(value)
    shovel.start(s)
    events, r, k = [], rabbit_restarts, syncmq_kills  # interleaved: rabbit, syncmq, ...
    while r or k:
        if r:
            events.append("rabbit")
            r -= 1
        if k:
            events.append("syncmq")
            k -= 1
    t1 = time.monotonic()
    try:
        for i, ev in enumerate(events):
            mark = n * (i + 1) // (len(events) + 1)
            wait_for(lambda m=mark: depth(rabbit.port, DEST) >= m, 600,
                     f"{mark} messages at RabbitMQ")
            if ev == "rabbit":
                log(f"stopping RabbitMQ at {depth(rabbit.port, DEST)} moved")
                rabbit.stop()
                rabbit.start()
            else:
                log(f"kill -9 syncmq at {depth(rabbit.port, DEST)} moved")
                s.kill()
                s = BrokerProcess(data_dir, "--port", str(port)).start()
                shovel.restarted(s)
        wait_for(lambda: s.management_port and queue_total(s.management_port, SRC) == 0, 900,
                 "the source queue emptied")
        moved_in = time.monotonic() - t1
        wait_for(shovel.running, 60, "the shovel running")
    finally:
        shovel.stop()
    bodies = drain(rabbit.port, DEST, n)
    repeats = check_order(bodies, n)
    s.stop()
    assert not s.tracebacks(), "\n".join(s.tracebacks())
    log(f"all {n} at RabbitMQ, {repeats} repeats, first arrivals in order")
    return {"messages": n, "seconds": round(moved_in, 1), "repeats": repeats,
            "rabbit_restarts": rabbit_restarts, "syncmq_kills": syncmq_kills}
