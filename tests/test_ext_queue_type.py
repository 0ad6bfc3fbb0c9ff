"""x-queue-type: ``classic`` is the queue syncmq has; ``quorum`` is served by a classic queue
after RabbitMQ's declare-time checks of quorum queues (durable, not exclusive, not
auto-delete), with a warning in the log, so clients that ask for one (Celery, MassTransit)
keep working; ``stream`` is refused (406): a classic queue would silently change its
semantics. Unknown types get RabbitMQ's 406 text. See README.md, "RabbitMQ extensions"."""

from __future__ import annotations

import pytest
from amqp_helpers import drain_get, expect_channel_close


def test_classic(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, arguments={"x-queue-type": "classic"})
    ch.basic_publish("", unique, b"x")
    assert drain_get(ch, unique) == [b"x"]


def test_quorum_served_as_classic(broker, conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_publish("", unique, b"x")
    assert drain_get(ch, unique) == [b"x"]
    broker.wait_for_log("quorum queue declared")
    # redeclaring must give the same type; classic is inequivalent
    e = expect_channel_close(406, ch.queue_declare, unique, durable=True,
                             arguments={"x-queue-type": "classic"})
    assert "inequivalent arg 'x-queue-type'" in e.reply_text


@pytest.mark.parametrize("kw, prop", [
    ({"durable": False}, "non-durable"),
    ({"durable": True, "exclusive": True}, "exclusive-owner"),
    ({"durable": True, "auto_delete": True}, "auto-delete"),
], ids=["non-durable", "exclusive", "auto-delete"])
def test_quorum_property_checks(conn, unique, kw, prop):
    ch = conn.channel()
    e = expect_channel_close(406, ch.queue_declare, unique, arguments={"x-queue-type": "quorum"},
                             **kw)
    assert e.reply_text == (f"PRECONDITION_FAILED - invalid property '{prop}' for queue "
                            f"'{unique}' in vhost '/'")


def test_stream_refused(conn, unique):
    ch = conn.channel()
    e = expect_channel_close(406, ch.queue_declare, unique, durable=True,
                             arguments={"x-queue-type": "stream"})
    assert e.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue "
                            f"'{unique}' in vhost '/': \"unsupported queue type 'stream'\"")


def test_unknown_type(conn, unique):
    ch = conn.channel()
    e = expect_channel_close(406, ch.queue_declare, unique, arguments={"x-queue-type": "lazy"})
    assert e.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue "
                            f"'{unique}' in vhost '/': \"unsupported queue type 'lazy'\"")
