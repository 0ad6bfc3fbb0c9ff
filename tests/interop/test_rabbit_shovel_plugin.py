"""RabbitMQ's shovel plugin with syncmq at either end (issue #20): dynamic shovels defined on
the private RabbitMQ node (shovel plugin enabled at boot, see conftest.py), ack-mode
on-confirm, persistent messages; every message arrives once and in order, and the source is
left empty (a message leaves its source only after the destination confirmed it)."""

from __future__ import annotations

from urllib.parse import quote

import pika
import pytest
from amqp_helpers import connection
from interop_helpers import api, wait_for

N = 500


@pytest.fixture
def shovel(rabbitmq, unique):
    """Define dynamic shovels on the RabbitMQ node; deleted afterwards."""
    names = []

    def define(name: str, value: dict) -> None:
        status, body = api(rabbitmq.management_port, "PUT",
                           f"/parameters/shovel/%2F/{quote(name, safe='')}", {"value": value})
        assert status in (201, 204), body
        names.append(name)

    yield define
    for name in names:
        api(rabbitmq.management_port, "DELETE", f"/parameters/shovel/%2F/{quote(name, safe='')}")


def _publish(port: int, exchange: str, key: str, bodies: list[bytes], **props) -> None:
    with connection(port) as c:
        ch = c.channel()
        ch.confirm_delivery()
        for b in bodies:
            ch.basic_publish(exchange, key, b, pika.BasicProperties(delivery_mode=2, **props))


def _consume(port: int, queue: str, n: int) -> list[tuple]:
    got = []
    with connection(port) as c:
        ch = c.channel()
        ch.basic_qos(prefetch_count=200)
        ch.basic_consume(queue, lambda c_, m, p, b: (got.append((m, p, b)),
                                                     c_.basic_ack(m.delivery_tag)))
        wait_for(lambda: c.process_data_events(0.1) or len(got) >= n, 120,
                 f"{n} messages on {queue} (got {len(got)})", interval=0)
    return got


def _depth(port: int, queue: str) -> int:
    with connection(port) as c:
        return c.channel().queue_declare(queue, passive=True).method.message_count


def test_rabbitmq_shovel_from_syncmq(rabbitmq, broker, shovel, unique):
    """A RabbitMQ shovel pulls a syncmq queue's backlog into a RabbitMQ queue (the
    migration's step), deleting itself once the queue length it found is moved."""
    bodies = [f"s{i}".encode() for i in range(N)]
    with connection(broker.port) as c:
        c.channel().queue_declare(unique, durable=True)
    with connection(rabbitmq.port) as c:
        c.channel().queue_declare(unique, durable=True)
    _publish(broker.port, "", unique, bodies)
    shovel(unique, {"src-protocol": "amqp091", "dest-protocol": "amqp091",
                    "src-uri": f"amqp://guest:guest@127.0.0.1:{broker.port}",
                    "src-queue": unique, "dest-uri": "amqp://", "dest-queue": unique,
                    "ack-mode": "on-confirm", "src-delete-after": "queue-length"})
    got = _consume(rabbitmq.port, unique, N)
    assert [b for _, _, b in got] == bodies
    assert {p.delivery_mode for _, p, _ in got} == {2}
    wait_for(lambda: _depth(broker.port, unique) == 0, what="syncmq's queue emptied")
    # src-delete-after queue-length: the shovel removes itself once done
    wait_for(lambda: not [s for s in api(rabbitmq.management_port, "GET", "/shovels")[1]
                          if s["name"] == unique], what="the shovel gone")


def test_rabbitmq_shovel_into_syncmq(rabbitmq, broker, shovel, unique):
    """A RabbitMQ shovel pushes a RabbitMQ queue's backlog into a syncmq exchange with
    publisher confirms; its forward headers and the routing key it sets arrive."""
    bodies = [f"r{i}".encode() for i in range(N)]
    with connection(broker.port) as c:
        ch = c.channel()
        ch.exchange_declare(unique, "direct", durable=True)
        ch.queue_declare(unique, durable=True)
        ch.queue_bind(unique, unique, "to-syncmq")
    with connection(rabbitmq.port) as c:
        c.channel().queue_declare(unique, durable=True)
    _publish(rabbitmq.port, "", unique, bodies)
    shovel(unique, {"src-protocol": "amqp091", "dest-protocol": "amqp091",
                    "src-uri": "amqp://", "src-queue": unique,
                    "dest-uri": f"amqp://guest:guest@127.0.0.1:{broker.port}",
                    "dest-exchange": unique, "dest-exchange-key": "to-syncmq",
                    "ack-mode": "on-confirm", "dest-add-forward-headers": True})
    wait_for(lambda: [s for s in api(rabbitmq.management_port, "GET", "/shovels")[1]
                      if s["name"] == unique and s.get("state") == "running"],
             what="the shovel running")
    got = _consume(broker.port, unique, N)
    assert [b for _, _, b in got] == bodies
    assert {p.delivery_mode for _, p, _ in got} == {2}
    assert {m.routing_key for m, _, _ in got} == {"to-syncmq"}
    assert got[0][1].headers["x-shovelled"][0]["shovel-name"] == unique
    wait_for(lambda: _depth(rabbitmq.port, unique) == 0, what="RabbitMQ's queue emptied")
    with connection(rabbitmq.port) as c:
        c.channel().queue_delete(unique)
