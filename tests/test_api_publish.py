"""The management API's publish (``POST /api/exchanges/{vhost}/{x}/publish``) is the broker's one
publish (``syncmq.broker.publish``): a persistent message for a durable queue is journaled
once (its body read back from the journal, never also spilled) and survives a restart, and a
publish refused by ``x-overflow: reject-publish`` gets RabbitMQ's 400."""

from __future__ import annotations

import base64
import json

import pika
from amqp_helpers import connect
from test_management import call

KiB = 1024


def _publish(b, exchange: str, rk: str, payload: bytes, persistent: bool = True):
    props = {"delivery_mode": 2} if persistent else {}
    return call(b, "POST", f"/api/exchanges/%2F/{exchange}/publish", {
        "routing_key": rk, "payload": base64.b64encode(payload).decode(),
        "payload_encoding": "base64", "properties": props})


def _store_stats_at_stop(b) -> dict:
    assert b.stop() == 0, b.log_tail()
    return json.loads(b.wait_for_log("body store closed"))["body_store"]


def test_api_publish_of_persistent_message_is_journaled_once_and_survives_restart(
        brokers_on_dir):
    # a budget far below the bodies: every body is evicted from memory; a body the API
    # journaled must be read back from the journal, not written to a spill file as well
    start, restart = brokers_on_dir
    b = start("--memory-budget", "64KiB")
    bodies = [bytes([i]) * (16 * KiB) for i in range(24)]
    with connect(b.port) as conn:
        conn.channel().queue_declare("api-durable", durable=True)
    for body in bodies:
        status, answer, _ = _publish(b, "amq.default", "api-durable", body)
        assert (status, answer) == (200, {"routed": True})
    st = _store_stats_at_stop(b)
    assert st["journal_messages"] >= len(bodies) - 4, st  # evicted to journal references
    assert st["spill_written_bytes"] == 0, st  # ... and never spilled too
    b2 = restart(b, "--memory-budget", "64KiB")
    with connect(b2.port) as conn:
        ch = conn.channel()
        got = []
        for _ in bodies:
            method, props, body = ch.basic_get("api-durable", auto_ack=True)
            assert method is not None and props.delivery_mode == 2
            got.append(body)
        assert got == bodies
        assert ch.basic_get("api-durable")[0] is None


def test_api_publish_refused_by_reject_publish_is_rabbitmqs_400(broker, unique):
    q = f"limited-{unique}"
    with connect(broker.port) as conn:
        ch = conn.channel()
        ch.queue_declare(q, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        assert _publish(broker, "amq.default", q, b"first", persistent=False)[:2] == (
            200, {"routed": True})
        status, answer, _ = _publish(broker, "amq.default", q, b"second", persistent=False)
        assert status == 400
        assert answer == {"error": "bad_request",
                          "reason": "rejected Unable to publish message. Check queue limits."}
        # the queue kept the first message only, and the broker serves everyone as before
        assert ch.queue_declare(q, passive=True).method.message_count == 1
        ch.basic_publish("", q, b"over", pika.BasicProperties())  # dropped by the limit
        method, _props, body = ch.basic_get(q, auto_ack=True)
        assert body == b"first"
        assert _publish(broker, "amq.default", q, b"third", persistent=False)[:2] == (
            200, {"routed": True})
        assert ch.basic_get(q, auto_ack=True)[2] == b"third"


def test_api_publish_unroutable_answers_routed_false(broker, unique):
    status, answer, _ = _publish(broker, "amq.direct", f"nowhere-{unique}", b"x")
    assert (status, answer) == (200, {"routed": False})
