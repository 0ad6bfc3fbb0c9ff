"""Helpers of the Prometheus tests (tests/test_prometheus.py and the differential one in
tests/interop): a scrape, its samples, and a workload run the same way on both brokers."""

from __future__ import annotations

import base64
import contextlib
import urllib.request

import pika
import pika.exceptions
import pytest
from amqp_helpers import connect
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 20
AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


def scrape(port: int, path: str = "/metrics", auth: bool = False) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=AUTH if auth else {})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


PROTO = (("protocol", "amqp091"),)
PROTO_QT = (("protocol", "amqp091"), ("queue_type", "rabbit_classic_queue"))


def workload(port: int) -> contextlib.ExitStack:
    """A publisher (confirm mode, 6 messages, one unroutable mandatory and one unroutable
    plain publish), basic.gets (one manual-ack acked, one auto-ack, one empty), a consumer
    (manual ack, prefetch 2: 2 delivered, 1 acked, so the third follows), an auto-ack
    consumer on another queue.
    Returns the stack that holds the connections open."""
    stack = contextlib.ExitStack()
    conn = stack.enter_context(contextlib.closing(connect(port)))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("pw-q")
    ch.queue_declare("pw-auto")
    ch.queue_declare("pw-empty")
    for i in range(6):
        ch.basic_publish("", "pw-q" if i < 5 else "pw-auto", b"m%d" % i)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.direct", "nowhere", b"x", mandatory=True)
    ch.basic_publish("amq.direct", "nowhere", b"x")  # dropped (not mandatory)
    method, _, _ = ch.basic_get("pw-q")
    ch.basic_ack(method.delivery_tag)
    assert ch.basic_get("pw-q", auto_ack=True)[0] is not None
    assert ch.basic_get("pw-empty")[0] is None
    c2 = stack.enter_context(contextlib.closing(connect(port)))
    cc = c2.channel()
    cc.basic_qos(prefetch_count=2)
    got = []
    cc.basic_consume("pw-q", lambda c, m, p, b: got.append(m.delivery_tag))
    auto = []
    cc.basic_consume("pw-auto", lambda c, m, p, b: auto.append(m), auto_ack=True)
    while len(got) < 2 or not auto:
        c2.process_data_events(0.1)
    cc.basic_ack(got[0])
    while len(got) < 3:  # the ack freed credit for the last one
        c2.process_data_events(0.1)
    return stack


