"""kombu (Celery's messaging layer, over py-amqp) against syncmq."""

from __future__ import annotations

import pytest

kombu = pytest.importorskip("kombu", reason="kombu is not installed (pip install -e '.[interop]')")
from interop_helpers import free_port  # noqa: E402
from kombu import Connection, Consumer, Exchange, Producer, Queue  # noqa: E402
from kombu.exceptions import OperationalError  # noqa: E402


def _url(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}//"


@pytest.fixture
def conn(broker):
    with Connection(_url(broker.port), connect_timeout=10) as c:
        c.connect()
        yield c


def _drain(conn, until, timeout=30.0):
    while not until():
        conn.drain_events(timeout=timeout)


def test_simple_queue(conn, unique):
    q = conn.SimpleQueue(unique)
    q.put({"hello": "world"}, serializer="json")
    q.put("two", serializer="json")
    m = q.get(block=True, timeout=30)
    assert m.payload == {"hello": "world"}
    assert m.content_type == "application/json"
    m.ack()
    m = q.get(block=True, timeout=30)
    assert m.payload == "two"
    m.ack()
    with pytest.raises(q.Empty):
        q.get(block=False)
    assert q.qsize() == 0
    # close (basic.cancel) before deleting: a queue.delete under the open consumer gets a
    # server basic.cancel that kombu raises as ConsumerCancelled, on RabbitMQ as here
    q.close()
    q.queue(conn.default_channel).delete()


def test_topic_exchange_producer_consumer(conn, unique):
    ex = Exchange(unique + "-x", type="topic", durable=False)
    qa = Queue(unique + "-a", ex, routing_key="log.*", durable=False, auto_delete=True)
    qb = Queue(unique + "-b", ex, routing_key="#.error", durable=False, auto_delete=True)
    got: list[tuple[str, object, dict]] = []

    def on_message(body, message):
        got.append((message.delivery_info["routing_key"], body, message.headers))
        message.ack()

    with Consumer(conn, [qa, qb], callbacks=[on_message], accept=["json"]):
        producer = Producer(conn, exchange=ex, serializer="json")
        producer.publish({"n": 1}, routing_key="log.info", headers={"h": "1"})
        producer.publish({"n": 2}, routing_key="log.error")
        producer.publish({"n": 3}, routing_key="db.error")
        producer.publish({"n": 4}, routing_key="nothing")
        _drain(conn, lambda: len(got) == 4)
    assert sorted((rk, b["n"]) for rk, b, _ in got) == [
        ("db.error", 3), ("log.error", 2), ("log.error", 2), ("log.info", 1)]
    assert next(h for rk, _, h in got if rk == "log.info") == {"h": "1"}


def test_requeue_reject_and_qos(conn, unique):
    q = Queue(unique, routing_key=unique, durable=False, auto_delete=False)
    producer = Producer(conn, serializer="json")
    for i in range(3):
        producer.publish(i, routing_key=unique, declare=[q])
    got = []

    def on_message(body, message):
        got.append((body, message.delivery_info["redelivered"], message))

    # prefetch_count is applied (basic.qos) before basic.consume
    with Consumer(conn, [q], callbacks=[on_message], accept=["json"], prefetch_count=1):
        _drain(conn, lambda: len(got) == 1)
        with pytest.raises(TimeoutError):  # prefetch 1: nothing more until settled
            conn.drain_events(timeout=0.3)
        got[0][2].requeue()
        _drain(conn, lambda: len(got) == 2)
        assert got[1][:2] == (0, True)
        got[1][2].reject()  # dropped
        _drain(conn, lambda: len(got) == 3)
        assert got[2][:2] == (1, False)
        got[2][2].ack()
        _drain(conn, lambda: len(got) == 4)
        got[3][2].ack()
    assert [g[0] for g in got] == [0, 0, 1, 2]
    assert q(conn.default_channel).queue_declare(passive=True).message_count == 0
    q(conn.default_channel).delete()


def test_get_and_purge(conn, unique):
    q = Queue(unique, routing_key=unique, durable=False, auto_delete=False)
    bound = q(conn.default_channel)
    bound.declare()
    producer = Producer(conn, serializer="json")
    for i in range(4):
        producer.publish(i, routing_key=unique)
    m = bound.get(no_ack=False)
    assert m.payload == 0 and m.delivery_info["message_count"] == 3
    m.ack()
    assert bound.purge() == 3
    assert bound.get() is None
    bound.delete()


def test_confirm_publish(broker, unique):
    with Connection(_url(broker.port), transport_options={"confirm_publish": True}) as c:
        q = Queue(unique, routing_key=unique, durable=True, auto_delete=False)
        producer = Producer(c, serializer="json")
        for i in range(10):
            producer.publish(i, routing_key=unique, declare=[q], delivery_mode=2)
        bound = q(c.default_channel)
        assert bound.queue_declare(passive=True).message_count == 10
        bound.delete()


def test_channel_error_is_reported(conn, unique):
    q = Queue(unique + "-missing", no_declare=True)
    with pytest.raises(conn.channel_errors) as e:
        q(conn.channel()).queue_declare(passive=True)
    assert e.value.code == 404


def test_ensure_reconnects_after_broker_restart(broker_factory, unique):
    """kombu's connection recovery: ``Connection.ensure`` re-establishes the connection (and
    re-declares) when the broker restarts, and the publish goes through."""
    port = free_port()
    b = broker_factory("--port", str(port))
    q = Queue(unique, routing_key=unique, durable=True, auto_delete=False)
    with Connection(_url(port), connect_timeout=5) as c:
        producer = Producer(c, serializer="json")
        publish = c.ensure(producer, producer.publish, max_retries=20, interval_start=0.2,
                           interval_step=0.2, interval_max=1)
        publish("before", routing_key=unique, declare=[q], delivery_mode=2)
        assert b.stop() == 0  # clients get 320 CONNECTION_FORCED
        b.start()
        publish("after", routing_key=unique, declare=[q], delivery_mode=2)
        bound = q(c.default_channel)
        bodies = []
        while (m := bound.get(no_ack=True)) is not None:
            bodies.append(m.payload)
        assert bodies == ["before", "after"]  # the persistent one survived the restart
        bound.delete()


def test_unreachable_broker_raises_operational_error():
    with Connection(_url(free_port()), connect_timeout=2) as c:
        with pytest.raises(OperationalError):
            c.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
