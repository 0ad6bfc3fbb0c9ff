"""A Flask app that publishes, tested end to end: the message is really in the queue."""

import json

import pika
from flask import Flask, current_app, request


def create_app(amqp_url):
    app = Flask(__name__)
    app.config["AMQP_URL"] = amqp_url

    @app.post("/orders")
    def create_order():
        conn = pika.BlockingConnection(pika.URLParameters(current_app.config["AMQP_URL"]))
        try:
            ch = conn.channel()
            ch.queue_declare("orders", durable=True)
            ch.confirm_delivery()
            ch.basic_publish("", "orders", json.dumps(request.get_json()).encode(),
                             pika.BasicProperties(delivery_mode=2,
                                                  content_type="application/json"))
        finally:
            conn.close()
        return {"queued": True}, 202

    return app


def test_post_order_publishes_it(syncmq_vhost):
    client = create_app(syncmq_vhost.url).test_client()
    assert client.post("/orders", json={"sku": "A-1", "qty": 2}).status_code == 202
    [message] = syncmq_vhost.peek("orders")
    assert json.loads(message.body) == {"sku": "A-1", "qty": 2}
    assert message.properties["delivery_mode"] == 2


def test_orders_survive_a_broker_crash(syncmq_factory):
    broker = syncmq_factory()  # a broker of this test's own, to crash
    client = create_app(broker.url).test_client()
    client.post("/orders", json={"sku": "B-2", "qty": 1})
    broker.restart(crash=True)  # same port and data dir; durable state is recovered
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    _, _, body = conn.channel().basic_get("orders", auto_ack=True)
    assert json.loads(body) == {"sku": "B-2", "qty": 1}
    conn.close()
