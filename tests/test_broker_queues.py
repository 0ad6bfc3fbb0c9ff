"""Queues against a real broker through pika: queue.declare (server-named, passive, durable,
exclusive, auto-delete, arguments), bind/unbind, purge and delete, with RabbitMQ's reply codes."""

from __future__ import annotations

import re

import pika
import pytest
from amqp_helpers import (
    collect,
    connect,
    connection,
    drain_get,
    expect_channel_close,
    message_count,
    publish_all,
    wait_until,
)

# ---- queue.declare ----

def test_server_named_queue(ch):
    r1 = ch.queue_declare("", exclusive=True)
    r2 = ch.queue_declare("", exclusive=True)
    for r in (r1, r2):
        assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", r.method.queue), r.method.queue
        assert (r.method.message_count, r.method.consumer_count) == (0, 0)
    assert r1.method.queue != r2.method.queue
    ch.basic_publish("", r1.method.queue, b"x")
    assert message_count(ch, r1.method.queue) == 1


def test_declare_returns_counts(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    publish_all(ch, "", unique, [b"1", b"2", b"3"])
    ok = ch.queue_declare(unique)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (unique, 3, 0)
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(unique, lambda *a: None, auto_ack=False)
    ok = conn.channel().queue_declare(unique, passive=True)
    # one message went to the consumer (prefetch 1), two are ready
    assert (ok.method.message_count, ok.method.consumer_count) == (2, 1)


def test_declare_counts_ready_only(ch, unique):
    ch.queue_declare(unique)
    publish_all(ch, "", unique, [b"1", b"2", b"3"])
    ch.basic_get(unique, auto_ack=False)
    ok = ch.queue_declare(unique)
    assert (ok.method.message_count, ok.method.consumer_count) == (2, 0)


def test_passive_declare_missing_is_404(ch, unique):
    err = expect_channel_close(404, ch.queue_declare, unique, passive=True)
    assert unique in err.reply_text


def test_amq_prefix_is_reserved_for_queues(ch, unique):
    expect_channel_close(403, ch.queue_declare, "amq." + unique)


@pytest.mark.parametrize("first,second", [
    ({"durable": True}, {"durable": False}),
    ({"auto_delete": True}, {"auto_delete": False}),
    ({"arguments": {"x-message-ttl": 1000}}, {"arguments": {"x-message-ttl": 2000}}),
    ({"arguments": {"x-max-length": 10}}, {}),
])
def test_redeclare_with_different_properties_is_406(conn, unique, first, second):
    ch = conn.channel()
    ch.queue_declare(unique, **first)
    ch.queue_declare(unique, **first)  # equivalent: fine
    err = expect_channel_close(406, ch.queue_declare, unique, **second)
    assert "inequivalent" in err.reply_text
    conn.channel().queue_delete(unique)


def test_durable_queue_declare(ch, unique):
    ok = ch.queue_declare(unique, durable=True)
    assert ok.method.queue == unique
    ch.queue_delete(unique)


# ---- exclusive queues ----

def test_exclusive_queue_is_locked_to_its_connection(broker, conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, exclusive=True)
    ch.queue_bind(unique, "amq.direct", "k")
    ch.basic_publish("", unique, b"mine")
    message_count(ch, unique)  # its reply: "mine" is in before the other connection publishes
    with connection(broker.port) as other:
        for op in (
            lambda c: c.queue_declare(unique, exclusive=True),
            lambda c: c.queue_declare(unique),
            lambda c: c.queue_declare(unique, passive=True),
            lambda c: c.basic_consume(unique, lambda *a: None),
            lambda c: c.basic_get(unique),
            lambda c: c.queue_bind(unique, "amq.direct", "k"),
            lambda c: c.queue_unbind(unique, "amq.direct", "k"),
            lambda c: c.queue_purge(unique),
            lambda c: c.queue_delete(unique),
        ):
            expect_channel_close(405, op, other.channel())
        # unbinding what is not bound is unbind-ok, even here (rabbit_binding:remove)
        other.channel().queue_unbind(unique, "amq.direct", "not-bound")
        # other connections may still publish to it
        other.channel().basic_publish("", unique, b"theirs")
    wait_until(conn, lambda: message_count(ch, unique) == 2)
    assert drain_get(ch, unique) == [b"mine", b"theirs"]


def test_exclusive_queue_deleted_with_its_connection(broker, unique):
    conn1 = connect(broker.port)
    ch1 = conn1.channel()
    ch1.queue_declare(unique, exclusive=True)
    ch1.queue_declare(unique + "-2", exclusive=True, durable=True)
    ch1.basic_publish("", unique, b"x")
    conn1.close()
    with connection(broker.port) as c2:
        for name in (unique, unique + "-2"):
            # RabbitMQ deletes exclusive queues before it sends connection.close-ok
            expect_channel_close(404, c2.channel().queue_declare, name, passive=True)


def test_exclusive_queue_survives_channel_close(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, exclusive=True)
    ch.close()
    assert conn.channel().queue_declare(unique, passive=True).method.queue == unique


# ---- auto-delete ----

def test_auto_delete_queue_goes_with_its_last_consumer(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True)
    # never consumed from: stays
    ch.basic_publish("", unique, b"x")
    assert message_count(ch, unique) == 1
    t1 = ch.basic_consume(unique, lambda *a: None, auto_ack=True)
    t2 = ch.basic_consume(unique, lambda *a: None, auto_ack=True)
    ch.basic_cancel(t1)
    ch.queue_declare(unique, passive=True)
    ch.basic_cancel(t2)
    expect_channel_close(404, ch.queue_declare, unique, passive=True)


def test_auto_delete_queue_goes_when_consumer_channel_closes(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True)
    ch.basic_consume(unique, lambda *a: None)
    ch.close()
    expect_channel_close(404, conn.channel().queue_declare, unique, passive=True)


# ---- bind / unbind ----

def test_bind_and_unbind(ch, unique):
    ch.queue_declare(unique)
    ch.exchange_declare(unique, "direct")
    ch.queue_bind(unique, unique, "a")
    ch.queue_bind(unique, unique, "b")
    publish_all(ch, unique, "a", [b"a1"])
    publish_all(ch, unique, "b", [b"b1"])
    ch.queue_unbind(unique, unique, "a")
    publish_all(ch, unique, "a", [b"a2"])
    publish_all(ch, unique, "b", [b"b2"])
    assert drain_get(ch, unique) == [b"a1", b"b1", b"b2"]


def test_bind_missing_queue_is_404(ch, unique):
    expect_channel_close(404, ch.queue_bind, unique, "amq.direct", "k")


def test_deleted_queue_loses_bindings(ch, unique):
    ch.exchange_declare(unique, "fanout")
    ch.queue_declare(unique)
    ch.queue_bind(unique, unique)
    ch.queue_delete(unique)
    ch.queue_declare(unique)
    ch.basic_publish(unique, "", b"x")
    assert message_count(ch, unique) == 0


# ---- purge ----

def test_purge_drops_ready_keeps_unacked(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    publish_all(ch, "", unique, [b"1", b"2", b"3", b"4"])
    m, _, body = ch.basic_get(unique, auto_ack=False)
    assert body == b"1"
    assert ch.queue_purge(unique).method.message_count == 3
    assert message_count(ch, unique) == 0
    ch.close()  # the unacked one comes back
    ch = conn.channel()
    method, _, body = ch.basic_get(unique, auto_ack=True)
    assert (body, method.redelivered, method.message_count) == (b"1", True, 0)


def test_purge_missing_is_404(ch, unique):
    expect_channel_close(404, ch.queue_purge, unique)


# ---- delete ----

def test_delete_returns_message_count(ch, unique):
    ch.queue_declare(unique)
    publish_all(ch, "", unique, [b"1", b"2"])
    assert ch.queue_delete(unique).method.message_count == 2
    expect_channel_close(404, ch.queue_declare, unique, passive=True)


def test_delete_missing_queue_is_ok(ch, unique):
    assert ch.queue_delete(unique).method.message_count == 0


def test_delete_if_unused(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    tag = ch.basic_consume(unique, lambda *a: None)
    err = expect_channel_close(406, conn.channel().queue_delete, unique, if_unused=True)
    assert "in use" in err.reply_text
    ch.basic_cancel(tag)
    conn.channel().queue_delete(unique, if_unused=True)
    expect_channel_close(404, ch.queue_declare, unique, passive=True)


def test_delete_if_empty(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"x")
    err = expect_channel_close(406, ch.queue_delete, unique, if_empty=True)
    assert "not empty" in err.reply_text
    ch = conn.channel()
    drain_get(ch, unique)
    ch.queue_delete(unique, if_empty=True)


def test_delete_cancels_consumers_with_notification(broker, conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(unique, lambda *a: None)
    with connection(broker.port) as other:
        other.channel().queue_delete(unique)
    wait_until(conn, lambda: cancelled == [tag], what="basic.cancel from the broker")
    # the channel stays open and usable
    assert ch.queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")


def test_declare_nowait_then_use(ch, unique):
    ch.queue_declare(unique)
    ch.queue_bind(unique, "amq.direct", unique)
    ch.basic_publish("amq.direct", unique, b"x", pika.BasicProperties(delivery_mode=2))
    tag, got = collect(ch.connection, ch, unique, 1, auto_ack=True)
    assert got[0][2] == b"x"
    assert got[0][1].delivery_mode == 2
    assert got[0][0].routing_key == unique and got[0][0].exchange == "amq.direct"
