"""kombu (and so Celery's transport) against the plugin's broker."""

from kombu import Connection, Exchange, Queue


def test_kombu_producer_and_consumer(syncmq_vhost):
    exchange = Exchange("orders", type="direct")
    queue = Queue("orders.new", exchange, routing_key="new")
    with Connection(syncmq_vhost.url) as conn:
        producer = conn.Producer()
        producer.publish({"id": 42}, exchange=exchange, routing_key="new",
                         declare=[queue], serializer="json")
        # look at what was published without taking it
        [peeked] = syncmq_vhost.peek("orders.new")
        assert peeked.properties["content_type"] == "application/json"

        received = []
        with conn.Consumer(queue, callbacks=[lambda body, msg: (received.append(body),
                                                                 msg.ack())]):
            conn.drain_events(timeout=10)
    assert received == [{"id": 42}]
    assert syncmq_vhost.leftovers().queues == {"orders.new": 0}
