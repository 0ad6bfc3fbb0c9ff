"""Priority queues (https://www.rabbitmq.com/docs/priority): x-max-priority 0..255 (RabbitMQ
validates), the priority property, higher first and FIFO within a priority, priorities above
the maximum count as the maximum, no priority as 0; with consumers and prefetch, requeue to the
original position within its priority, interplay with TTL and max-length."""

from __future__ import annotations

import pika
import pytest
from amqp_helpers import collect, connection, drain_get, expect_channel_close, wait_until
from ext_helpers import wait_count


def _pub(ch, q, body, priority=None, **kw):
    ch.basic_publish("", q, body, pika.BasicProperties(priority=priority, **kw))


def test_higher_priority_first_fifo_within(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-priority": 10})
    for body, p in [(b"a0", None), (b"b5", 5), (b"c1", 1), (b"d5", 5), (b"e9", 9), (b"f0", 0)]:
        _pub(ch, unique, body, p)
    assert drain_get(ch, unique) == [b"e9", b"b5", b"d5", b"c1", b"a0", b"f0"]


def test_priority_above_max_counts_as_max(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-priority": 3})
    _pub(ch, unique, b"three", 3)
    _pub(ch, unique, b"two-hundred", 200)  # capped at 3: FIFO after "three"
    _pub(ch, unique, b"two", 2)
    assert drain_get(ch, unique) == [b"three", b"two-hundred", b"two"]


def test_priority_ignored_without_max_priority(ch, unique):
    ch.queue_declare(unique)
    _pub(ch, unique, b"low", 0)
    _pub(ch, unique, b"high", 9)
    assert drain_get(ch, unique) == [b"low", b"high"]


def test_delivered_priority_property_kept(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-priority": 5})
    _pub(ch, unique, b"x", 200)
    _m, props, _b = ch.basic_get(unique, auto_ack=True)
    assert props.priority == 200


def test_consumer_with_prefetch_sees_priority_order(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-max-priority": 10})
    for i in range(5):
        _pub(ch, unique, b"low%d" % i, 1)
    for i in range(5):
        _pub(ch, unique, b"high%d" % i, 8)
    ch.basic_qos(prefetch_count=1)
    seen = []

    def on_msg(c, method, _props, body):
        seen.append(body)
        c.basic_ack(method.delivery_tag)

    ch.basic_consume(unique, on_msg)
    wait_until(conn, lambda: len(seen) == 10)
    assert seen == [b"high%d" % i for i in range(5)] + [b"low%d" % i for i in range(5)]


def test_high_priority_overtakes_backlog_while_consuming(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-max-priority": 10})
    for i in range(20):
        _pub(ch, unique, b"low%d" % i)
    ch.basic_qos(prefetch_count=1)
    _tag, got = collect(conn, ch, unique, 1)
    _pub(ch, unique, b"urgent", 10)
    ch.basic_ack(got[0][0].delivery_tag)
    wait_until(conn, lambda: len(got) == 2)
    assert got[1][2] == b"urgent"


def test_requeue_returns_to_position_within_priority(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-priority": 5})
    for body, p in [(b"h1", 5), (b"h2", 5), (b"l1", 1)]:
        _pub(ch, unique, body, p)
    m1, _p, b1 = ch.basic_get(unique, auto_ack=False)
    assert b1 == b"h1"
    _pub(ch, unique, b"h3", 5)
    ch.basic_nack(m1.delivery_tag, requeue=True)
    assert drain_get(ch, unique) == [b"h1", b"h2", b"h3", b"l1"]


def test_priority_with_ttl_and_max_length(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-priority": 5, "x-max-length": 2})
    _pub(ch, unique, b"p5", 5)
    _pub(ch, unique, b"p1", 1)
    _pub(ch, unique, b"p3", 3)  # 3 > 2: the head (p5) is dropped
    assert drain_get(ch, unique) == [b"p3", b"p1"]
    q2 = unique + "-ttl"
    ch.queue_declare(q2, arguments={"x-max-priority": 5, "x-message-ttl": 20})
    _pub(ch, q2, b"a", 5)
    _pub(ch, q2, b"b", 1)
    wait_count(ch, q2, 0)


def test_max_priority_zero_is_fifo(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-priority": 0})
    _pub(ch, unique, b"1", 0)
    _pub(ch, unique, b"2", 7)
    assert drain_get(ch, unique) == [b"1", b"2"]


@pytest.mark.parametrize("value, text", [
    (256, "{max_value_exceeded,256}"),
    (-1, "{value_negative,-1}"),
    ("10", '"expected integer, got longstr"'),
], ids=["too-large", "negative", "string"])
def test_invalid_max_priority(conn, unique, value, text):
    ch = conn.channel()
    e = expect_channel_close(406, ch.queue_declare, unique, arguments={"x-max-priority": value})
    assert e.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue "
                            f"'{unique}' in vhost '/': {text}")


def test_max_priority_255_accepted(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-priority": 255})
    _pub(ch, unique, b"a", 1)
    _pub(ch, unique, b"b", 255)
    assert drain_get(ch, unique) == [b"b", b"a"]


def test_max_priority_equivalence(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, arguments={"x-max-priority": 10})
    e = expect_channel_close(406, ch.queue_declare, unique)
    assert e.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue "
                            f"'{unique}' in vhost '/': received none but current is the value '10' of "
                            f"type 'signedint'")


def test_persistent_priority_messages_recovered_in_order(fresh_broker):
    with connection(fresh_broker.port) as c:
        ch = c.channel()
        ch.queue_declare("pq", durable=True, arguments={"x-max-priority": 9})
        for body, p in [(b"l", 1), (b"h", 9), (b"m", 5)]:
            _pub(ch, "pq", body, p, delivery_mode=2)
        ch.queue_declare("pq", passive=True)
    assert fresh_broker.stop() == 0
    fresh_broker.start()
    with connection(fresh_broker.port) as c:
        assert drain_get(c.channel(), "pq") == [b"h", b"m", b"l"]
