"""Node, connection and queue fields RabbitMQ's tools read (issue 17), in RabbitMQ 3.10's
formats (read off a 3.10.8 node): a node's ``mem_limit``, ``disk_free_limit``,
``proc_total``, ``sockets_total``, ``fd_total``/``fd_used``; a connection's
``recv_oct_details``/``send_oct_details``; a queue's ``consumer_utilisation``."""

from __future__ import annotations

import resource
from urllib.parse import quote

import pytest
from amqp_helpers import connect
from test_management import get, poll


def test_node_limits_are_the_configured_ones(broker_factory):
    b = broker_factory("--memory-high-watermark", "2GB", "--disk-free-limit", "7MB")
    node = get(b, "/api/nodes")[0]
    assert node["mem_limit"] == 2 * 1024 ** 3
    assert node["disk_free_limit"] == 7 * 1024 ** 2
    assert node["mem_calculation_strategy"] == "rss"
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert node["fd_total"] == node["sockets_total"] == nofile
    assert 0 < node["fd_used"] < nofile
    assert node["proc_total"] >= node["proc_used"] > 1
    detail = get(b, "/api/nodes/rabbit@localhost")
    assert detail["mem_limit"] == node["mem_limit"] and detail["name"] == node["name"]


def test_disabled_limits_are_zero(broker_factory):
    node = get(broker_factory("--memory-high-watermark", "0", "--disk-free-limit", "0"),
               "/api/nodes")[0]
    assert node["mem_limit"] == 0 and node["disk_free_limit"] == 0


def test_connection_octet_rates(broker, unique):
    conn = connect(broker.port, client_properties={"connection_name": unique})
    try:
        ch = conn.channel()
        ch.queue_declare(unique, exclusive=True)
        ch.basic_publish("", unique, b"x" * 10000)
        listing = poll(broker, "/api/connections",
                       lambda cs: any(c["user_provided_name"] == unique
                                      and c["recv_oct"] > 10000 for c in cs),
                       conn, "the publish counted")
        c = next(c for c in listing if c["user_provided_name"] == unique)
        for k in ("recv_oct", "send_oct"):
            assert isinstance(c[k], int) and c[k] > 0
            assert set(c[k + "_details"]) == {"rate"}
            assert isinstance(c[k + "_details"]["rate"], float)
        # the rate rises once two samples a second apart see the bytes of a second publish
        ch.basic_publish("", unique, b"x" * 100000)
        poll(broker, f"/api/connections/{quote(c['name'], safe='')}",
             lambda d: d["recv_oct_details"]["rate"] > 0, conn, "a positive receive rate")
    finally:
        conn.close()


@pytest.fixture
def queue_with_consumer(broker, unique):
    conn = connect(broker.port)
    ch = conn.channel()
    ch.queue_declare(unique, exclusive=True)
    yield conn, ch, unique
    conn.close()


def test_consumer_utilisation(broker, queue_with_consumer):
    conn, ch, q = queue_with_consumer
    path = f"/api/queues/%2F/{q}"
    body = get(broker, path)
    assert body["consumer_utilisation"] == 0 and body["consumers"] == 0  # no consumers
    ch.basic_qos(prefetch_count=1)
    held = []
    ch.basic_consume(q, lambda c, m, p, b: held.append(m.delivery_tag))
    poll(broker, path, lambda b: b["consumers"] == 1 and b["consumer_utilisation"] == 1.0,
         conn, "an idle consumer: full capacity")
    for _ in range(3):
        ch.basic_publish("", q, b"m")
    # one delivery held unacked, two waiting: the only consumer cannot take more
    poll(broker, path, lambda b: b["messages_unacknowledged"] == 1
         and b["messages_ready"] == 2 and b["consumer_utilisation"] == 0.0,
         conn, "a consumer held back by its prefetch")
    listed = [x for x in get(broker, "/api/queues") if x["name"] == q][0]
    assert listed["consumer_utilisation"] == 0.0
