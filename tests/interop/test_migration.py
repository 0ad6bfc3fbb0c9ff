"""The migration recipe of docs/scaling.md, end to end (issue #20): a syncmq with a realistic
topology (topic, fanout and direct exchanges, a dead-letter exchange, five queues) and a
backlog on several queues, a pika producer and consumer running, moves onto RabbitMQ (the
private node of the interop suite) with nothing but a URL change for the clients:

1. export syncmq's definitions (``GET /api/definitions``) and import them into RabbitMQ
   (``POST /api/definitions``): vhost, user (its password hash), permissions, exchanges,
   queues, bindings, the DLX arguments;
2. switch the consumers to RabbitMQ's URL (same credentials, same vhost);
3. switch the producers to RabbitMQ's URL;
4. a dynamic shovel on RabbitMQ per non-empty syncmq queue (``src-delete-after:
   queue-length``, ``ack-mode: on-confirm``) pulls the backlog into the same-named queue;
5. consumers of the queues that had none start on RabbitMQ.

Every message is received exactly once (a copy flagged ``redelivered`` would be allowed),
dead-lettered messages keep their ``x-death``, and syncmq is left empty.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from urllib.parse import quote

import pika
from interop_helpers import api, wait_for

from syncmq import ctl_remote

LIVE_ON_SYNCMQ, STRANDED, LIVE_ON_RABBIT = 150, 100, 150
US, EV, DEAD = 200, 40, 20  # backlog: orders to orders.us, plain events, dead letters


def _q(s: str) -> str:
    return quote(s, safe="")


class Producer(threading.Thread):
    """Publishes ``live-N`` to ``orders``/``eu.live`` with confirms, as far as ``allow``
    lets it; ``switch(url)`` moves it to another broker between two publishes."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.sent, self.allowed = url, 0, 0
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.done = False

    def allow(self, n: int) -> None:
        with self.cond:
            self.allowed += n
            self.cond.notify_all()

    def switch(self, url: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.sent == self.allowed, 60)
            self.url = url
            self.cond.notify_all()

    def run(self) -> None:
        try:
            url, conn = None, None
            while not self.done:
                with self.cond:
                    self.cond.wait_for(lambda: self.sent < self.allowed or self.done, 1)
                    if self.done or self.sent >= self.allowed:
                        continue
                    if url != self.url:
                        if conn is not None:
                            conn.close()
                        url = self.url
                        conn = pika.BlockingConnection(pika.URLParameters(url))
                        ch = conn.channel()
                        ch.confirm_delivery()
                    ch.basic_publish("orders", "eu.live", f"live-{self.sent}".encode(),
                                     pika.BasicProperties(delivery_mode=2))
                    self.sent += 1
                    self.cond.notify_all()
            if conn is not None:
                conn.close()
        except BaseException as e:  # reported by the test
            self.error = e


class Consumer(threading.Thread):
    """Consumes ``queue`` (manual acks) and records ``(body, redelivered)``; ``switch(url)``
    cancels, closes (its acks are sent first) and consumes the same queue at ``url``."""

    def __init__(self, url: str, queue: str) -> None:
        super().__init__(daemon=True)
        self.url, self.queue = url, queue
        self.got: list[tuple[str, bool, dict | None]] = []
        self.lock = threading.Lock()
        self.switched = threading.Event()
        self.error: BaseException | None = None
        self.done = False

    def count(self) -> int:
        with self.lock:
            return len(self.got)

    def switch(self, url: str) -> None:
        self.switched.clear()
        self.url = url
        wait_for(lambda: self.switched.is_set() or self.error, 60, "the consumer's switch")
        assert self.error is None, f"consumer at {url}: {self.error!r}"

    def _on(self, ch, m, p, b) -> None:
        with self.lock:
            self.got.append((b.decode(), m.redelivered, p.headers))
        ch.basic_ack(m.delivery_tag)

    def run(self) -> None:
        try:
            while not self.done:
                url = self.url
                conn = pika.BlockingConnection(pika.URLParameters(url))
                ch = conn.channel()
                ch.basic_qos(prefetch_count=20)
                tag = ch.basic_consume(self.queue, self._on)
                self.switched.set()
                while not self.done and self.url == url:
                    conn.process_data_events(0.05)
                ch.basic_cancel(tag)
                conn.close()
        except BaseException as e:  # reported by the test
            self.error = e


def _syncmq_topology(broker, vhost: str, user: str, password: str) -> str:
    mport = broker.management_port
    assert api(mport, "PUT", f"/vhosts/{_q(vhost)}")[0] in (201, 204)
    assert api(mport, "PUT", f"/users/{_q(user)}", {"password": password, "tags": ""})[0] \
        in (201, 204)
    assert api(mport, "PUT", f"/permissions/{_q(vhost)}/{_q(user)}",
               {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    url = f"amqp://{user}:{password}@127.0.0.1:{broker.port}/{_q(vhost)}"
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.exchange_declare("orders", "topic", durable=True)
    ch.exchange_declare("events", "fanout", durable=True)
    ch.exchange_declare("dlx", "direct", durable=True)
    dl = {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"}
    for q, args in (("orders.eu", dl), ("orders.us", dl), ("events.log", {}),
                    ("events.audit", {"x-max-length": 10000}), ("dead", {})):
        ch.queue_declare(q, durable=True, arguments=args)
    ch.queue_bind("orders.eu", "orders", "eu.#")
    ch.queue_bind("orders.us", "orders", "us.#")
    ch.queue_bind("events.log", "events")
    ch.queue_bind("events.audit", "events")
    ch.queue_bind("dead", "dlx", "dead")
    ch.exchange_bind("events", "orders", "#")  # every order is an event too
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    for i in range(DEAD):  # dead-lettered by a consumer's reject
        ch.basic_publish("orders", f"us.dead.{i}", f"dead-{i}".encode(), persistent)
    for i in range(DEAD):
        m, _, body = ch.basic_get("orders.us")
        assert body == f"dead-{i}".encode()
        ch.basic_reject(m.delivery_tag, requeue=False)
    for i in range(US):
        ch.basic_publish("orders", f"us.{i}", f"us-{i}".encode(), persistent)
    for i in range(EV):
        ch.basic_publish("events", "", f"ev-{i}".encode(), persistent)
    conn.close()
    return url


def migration_plan(broker, source_uri: str) -> dict:
    """``syncmqctl migration_plan SOURCE_URI`` against ``broker``, parsed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = ctl_remote.main(["--management-url", f"http://127.0.0.1:{broker.management_port}",
                              "migration_plan", source_uri])
    assert rc == 0
    return json.loads(out.getvalue())


def test_migration_plan_bad_uri(broker, capsys):
    rc = ctl_remote.main(["--management-url", f"http://127.0.0.1:{broker.management_port}",
                          "migration_plan", "http://host"])
    # an unusable argument: EX_USAGE, as rabbitmqctl's argument validation exits
    assert rc == 64 and "SOURCE_URI must be amqp://" in capsys.readouterr().err


def test_migration_recipe(rabbitmq, broker):
    tag = os.urandom(3).hex()
    vhost, user, password = f"mig-{tag}", f"mig-user-{tag}", f"pw-{tag}"
    s_url = _syncmq_topology(broker, vhost, user, password)
    r_url = f"amqp://{user}:{password}@127.0.0.1:{rabbitmq.port}/{_q(vhost)}"
    rport = rabbitmq.management_port

    producer, eu = Producer(s_url), Consumer(s_url, "orders.eu")
    others: dict[str, Consumer] = {}
    producer.start()
    eu.start()
    try:
        producer.allow(LIVE_ON_SYNCMQ)
        wait_for(lambda: eu.count() >= LIVE_ON_SYNCMQ // 2, what="live traffic on syncmq")

        # 1. definitions: syncmq's export (from syncmqctl migration_plan), restricted to this
        # vhost (the shared RabbitMQ node keeps its own users), imported as is into RabbitMQ
        src = f"amqp://{user}:{password}@127.0.0.1:{broker.port}"
        defs = migration_plan(broker, src)["definitions"]
        mine = {k: [o for o in defs[k] if o.get("vhost") == vhost]
                for k in ("queues", "exchanges", "bindings", "permissions")}
        mine["vhosts"] = [v for v in defs["vhosts"] if v["name"] == vhost]
        mine["users"] = [u for u in defs["users"] if u["name"] == user]
        status, body = api(rport, "POST", "/definitions", mine)
        assert status in (200, 201, 204), body

        # 2. consumers to RabbitMQ's URL (the producer still publishes to syncmq: these
        # messages wait in syncmq's orders.eu for the shovel)
        eu.switch(r_url)
        producer.allow(STRANDED)
        # 3. producers to RabbitMQ's URL
        producer.switch(r_url)
        producer.allow(LIVE_ON_RABBIT)

        # 4. a shovel per non-empty queue, pulling from syncmq: the plan's, imported
        shovels = [p for p in migration_plan(broker, src)["shovels"]["parameters"]
                   if p["vhost"] == vhost]
        assert {p["value"]["src-queue"] for p in shovels} == {
            "orders.eu", "orders.us", "events.log", "events.audit", "dead"}, shovels
        status, body = api(rport, "POST", "/definitions", {"parameters": shovels})
        assert status in (200, 201, 204), body

        # 5. consumers of the queues that had none, on RabbitMQ
        for q in ("orders.us", "events.log", "events.audit", "dead"):
            others[q] = Consumer(r_url, q)
            others[q].start()

        live = {f"live-{i}" for i in range(LIVE_ON_SYNCMQ + STRANDED + LIVE_ON_RABBIT)}
        us = {f"us-{i}" for i in range(US)}
        dead = {f"dead-{i}" for i in range(DEAD)}
        events = us | dead | live | {f"ev-{i}" for i in range(EV)}
        expected = {"orders.eu": live, "orders.us": us, "events.log": events,
                    "events.audit": events, "dead": dead}
        consumers = {"orders.eu": eu, **others}
        for q, c in consumers.items():
            wait_for(lambda c=c, q=q: c.error or c.count() >= len(expected[q]), 120,
                     f"{len(expected[q])} on {q} (got {c.count()})")
        wait_for(lambda: not [s for s in api(rport, "GET", f"/shovels/{_q(vhost)}")[1]],
                 what="the shovels done (src-delete-after)")
    finally:
        producer.done = True
        for c in [eu, *others.values()]:
            c.done = True
    for t in [producer, eu, *others.values()]:
        t.join(30)
        assert t.error is None, repr(t.error)

    for q, c in consumers.items():
        # exactly once, apart from copies flagged redelivered
        assert {b for b, _, _ in c.got} == expected[q], q
        unflagged = [b for b, redelivered, _ in c.got if not redelivered]
        assert len(unflagged) == len(set(unflagged)), (q, len(unflagged))
    deaths = [h["x-death"][0] for b, _, h in consumers["dead"].got]
    assert {(d["queue"], d["reason"]) for d in deaths} == {("orders.us", "rejected")}
    # syncmq is left empty
    _, queues = api(broker.management_port, "GET", f"/queues/{_q(vhost)}")
    assert {q["name"]: q["messages"] for q in queues} == dict.fromkeys(expected, 0)
    api(rport, "DELETE", f"/vhosts/{_q(vhost)}")
    api(rport, "DELETE", f"/users/{_q(user)}")
