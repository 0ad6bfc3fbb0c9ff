"""pika against the plugin's broker: each test gets a vhost of its own."""

import pika


def test_publish_and_consume(syncmq_vhost):
    conn = pika.BlockingConnection(pika.URLParameters(syncmq_vhost.url))
    ch = conn.channel()
    ch.queue_declare("greetings")
    ch.basic_publish("", "greetings", b"hello")

    assert syncmq_vhost.wait_for_messages("greetings", 1) == 1
    method, properties, body = ch.basic_get("greetings", auto_ack=True)
    assert body == b"hello"
    conn.close()


def test_unroutable_mandatory_publish_is_returned(syncmq_vhost):
    # a real broker answers what a mock would accept silently
    conn = pika.BlockingConnection(pika.URLParameters(syncmq_vhost.url))
    ch = conn.channel()
    ch.confirm_delivery()
    try:
        ch.basic_publish("", "no-such-queue", b"lost", mandatory=True)
    except pika.exceptions.UnroutableError:
        pass
    else:
        raise AssertionError("expected the message to come back unroutable")
    conn.close()
