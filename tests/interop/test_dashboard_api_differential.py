"""What the dashboard's new pages read and send, against syncmq and the private RabbitMQ node
(management plugin on) with the same requests (issue 17):

- "Add a queue" as RabbitMQ's UI sends it (durability and auto-delete as the strings
  ``"true"``/``"false"``, ``x-queue-type`` and typed arguments in ``arguments``): the same
  queue, the same arguments with the same JSON types; a stream type refused by syncmq only.
- A queue's ``?lengths_age=&lengths_incr=&msg_rates_age=&msg_rates_incr=`` answer: the same
  fields in its ``*_details`` (``samples``, ``avg``, ``avg_rate``, ``rate``).
- ``/api/channels?page=`` (the Channels page): the same page object; a channel's
  ``consumer_details`` with RabbitMQ's consumer fields.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import pika
import test_rabbitmqadmin as ra
from test_rabbitmqadmin import http

rabbit_mgmt = ra.rabbit_mgmt  # the RabbitMQ node's management port, once it answers
TIMEOUT = 30.0
HIST = "?lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5"


def poll(port: int, path: str, cond, what: str):
    """GET ``path`` until ``cond(body)``: RabbitMQ's management statistics are emitted on a
    timer (every 5 s), so there is no event to wait on; syncmq answers the first time."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, _, body = http(port, "GET", path)
        if status == 200 and cond(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: never; last {status} {body}")
        time.sleep(0.2)


def ui_declare(port: int, name: str, qtype: str) -> tuple[int, object]:
    body = {"durable": "false", "auto_delete": "true", "arguments": {
        "x-queue-type": qtype, "x-message-ttl": 60000, "x-max-length": 10,
        "x-single-active-consumer": True, "x-dead-letter-exchange": "dlx",
        "x-overflow": "reject-publish", "x-custom-list": ["a", "b"]}}
    status, _, reply = http(port, "PUT", f"/queues/%2F/{quote(name, safe='')}", body)
    return status, reply


def test_add_queue_as_rabbitmq_ui_sends_it(rabbit_mgmt, broker, unique):
    for port in (rabbit_mgmt, broker.management_port):
        assert ui_declare(port, unique, "classic")[0] == 201, port
    got = [http(p, "GET", f"/queues/%2F/{unique}")[2] for p in (rabbit_mgmt,
                                                                 broker.management_port)]
    for q in got:
        assert (q["durable"], q["auto_delete"]) == (False, True)
    assert got[0]["arguments"] == got[1]["arguments"]
    assert ({k: type(v) for k, v in got[0]["arguments"].items()}
            == {k: type(v) for k, v in got[1]["arguments"].items()})
    # a stream: RabbitMQ declares one (not with these arguments, nor auto-delete); syncmq
    # refuses every stream, with a reason naming the type
    status, reply = ui_declare(broker.management_port, unique + "-s", "stream")
    assert status == 400 and "unsupported queue type 'stream'" in reply["reason"]
    for port in (rabbit_mgmt, broker.management_port):
        assert http(port, "DELETE", f"/queues/%2F/{unique}")[0] == 204


def test_queue_samples_fields_as_rabbitmq(rabbit_mgmt, broker, unique):
    answers = []
    for port in (rabbit_mgmt, broker.management_port):
        assert http(port, "PUT", f"/queues/%2F/{unique}", {"durable": False})[0] == 201
        for _ in range(2):
            assert http(port, "POST", "/exchanges/%2F/amq.default/publish", {
                "routing_key": unique, "payload": "x", "payload_encoding": "string",
                "properties": {}})[0] == 200
        answers.append(poll(port, f"/queues/%2F/{unique}{HIST}",
                            lambda q: q.get("messages_ready") == 2
                            and "samples" in q.get("messages_ready_details", {}),
                            "the queue's samples"))
        http(port, "DELETE", f"/queues/%2F/{unique}")
    rabbit, ours = answers
    for k in ("messages", "messages_ready", "messages_unacknowledged"):
        assert set(ours[k + "_details"]) == set(rabbit[k + "_details"]), k
        assert set(ours[k + "_details"]["samples"][0]) == {"sample", "timestamp"}
    # a queue published to through the API has no message_stats in RabbitMQ 3.10 (only
    # channels' publishes are counted per queue); where syncmq has them they have its fields
    pub = ours["message_stats"]["publish_details"]
    assert set(pub) == {"rate", "samples", "avg_rate"} | ({"avg"} & set(pub))


def test_channels_page_and_channel_consumers_as_rabbitmq(rabbit_mgmt, rabbitmq, broker,
                                                         unique):
    pages, consumers = [], []
    for amqp, port in ((rabbitmq.port, rabbit_mgmt), (broker.port, broker.management_port)):
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", amqp, credentials=pika.PlainCredentials("guest", "guest"),
            client_properties={"connection_name": unique}))
        try:
            ch1, ch2 = conn.channel(), conn.channel()
            ch1.queue_declare(unique, auto_delete=True)
            ch2.basic_qos(prefetch_count=3)
            ch2.basic_consume(unique, lambda *a: None, consumer_tag=unique)
            cname = poll(port, "/connections", lambda cs: any(
                c.get("user_provided_name") == unique for c in cs), "the connection")
            cname = next(c["name"] for c in cname if c.get("user_provided_name") == unique)
            q = "/channels?page=1&page_size=1&name=" + quote(cname, safe="")
            pages.append(poll(port, q, lambda p: p.get("filtered_count") == 2, "2 channels"))
            detail = poll(port, "/channels/" + quote(f"{cname} (2)", safe=""),
                          lambda c: c.get("consumer_details"), "the consumer")
            consumers.append(detail["consumer_details"][0])
        finally:
            conn.close()
    rabbit, ours = pages
    assert set(ours) == set(rabbit)
    for k in ("page", "page_size", "page_count", "item_count", "filtered_count"):
        assert ours[k] == rabbit[k], k
    assert ours["items"][0]["number"] == rabbit["items"][0]["number"] == 1
    rc, oc = consumers
    assert set(oc) <= set(rc), set(oc) - set(rc)
    for k in ("consumer_tag", "queue", "ack_required", "exclusive", "prefetch_count"):
        assert oc[k] == rc[k], k
    assert set(oc["channel_details"]) <= set(rc["channel_details"])

