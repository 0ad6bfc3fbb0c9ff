"""Sender-selected distribution (https://www.rabbitmq.com/docs/sender-selected): the CC and
BCC headers (arrays of strings) add routing keys for direct and topic exchanges (and the
default exchange); the BCC header is removed from the delivered message, CC is kept; the
delivered routing key is the publish one; a queue matched by several keys gets one copy; a
CC/BCC header that is not an array is a 406 (rabbit_basic:header_routes)."""

from __future__ import annotations

import pika
import pytest
from amqp_helpers import drain_get, expect_channel_close


def _queues(ch, unique, ex, etype, bindings):
    ch.exchange_declare(ex, etype)
    for q, key in bindings:
        ch.queue_declare(f"{unique}-{q}")
        ch.queue_bind(f"{unique}-{q}", ex, key)


def test_cc_routes_direct_and_is_kept(ch, unique):
    ex = unique + "-x"
    _queues(ch, unique, ex, "direct", [("a", "a"), ("b", "b"), ("c", "c")])
    ch.basic_publish(ex, "a", b"m", pika.BasicProperties(headers={"CC": ["b"], "k": 1}))
    for q in ("a", "b"):
        m, props, body = ch.basic_get(f"{unique}-{q}", auto_ack=True)
        assert (m.routing_key, body) == ("a", b"m")
        assert props.headers == {"CC": ["b"], "k": 1}
    assert drain_get(ch, f"{unique}-c") == []


def test_bcc_routes_and_is_removed(ch, unique):
    ex = unique + "-x"
    _queues(ch, unique, ex, "direct", [("a", "a"), ("b", "b")])
    ch.basic_publish(ex, "a", b"m", pika.BasicProperties(headers={"BCC": ["b"], "k": 1}))
    for q in ("a", "b"):
        _m, props, _b = ch.basic_get(f"{unique}-{q}", auto_ack=True)
        assert props.headers == {"k": 1}


def test_cc_and_bcc_with_topic(ch, unique):
    ex = unique + "-x"
    _queues(ch, unique, ex, "topic", [("eu", "orders.eu.*"), ("us", "orders.us.*"),
                                      ("all", "orders.#")])
    ch.basic_publish(ex, "orders.eu.new", b"o", pika.BasicProperties(
        headers={"CC": ["orders.us.new"], "BCC": ["nothing.matches"]}))
    for q in ("eu", "us", "all"):
        assert drain_get(ch, f"{unique}-{q}") == [b"o"], q  # "all" once, not twice


def test_cc_with_default_exchange(ch, unique):
    a, b = unique + "-a", unique + "-b"
    ch.queue_declare(a)
    ch.queue_declare(b)
    ch.basic_publish("", a, b"m", pika.BasicProperties(headers={"BCC": [b]}))
    assert drain_get(ch, a) == [b"m"] and drain_get(ch, b) == [b"m"]


def test_cc_ignored_by_fanout_and_headers(ch, unique):
    ex = unique + "-f"
    _queues(ch, unique, ex, "fanout", [("f", "")])
    ch.basic_publish(ex, "x", b"m", pika.BasicProperties(headers={"CC": ["y", "z"]}))
    assert drain_get(ch, f"{unique}-f") == [b"m"]


def test_cc_makes_mandatory_routable(conn, ch, unique):
    ex = unique + "-x"
    _queues(ch, unique, ex, "direct", [("b", "b")])
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.basic_publish(ex, "unbound", b"m", pika.BasicProperties(headers={"CC": ["b"]}),
                     mandatory=True)
    assert drain_get(ch, f"{unique}-b") == [b"m"]
    conn.process_data_events(time_limit=0.1)
    assert returned == []


def test_non_string_entries_ignored(ch, unique):
    ex = unique + "-x"
    _queues(ch, unique, ex, "direct", [("a", "a"), ("b", "b")])
    ch.basic_publish(ex, "a", b"m", pika.BasicProperties(headers={"CC": [1, "b", True]}))
    assert drain_get(ch, f"{unique}-b") == [b"m"]


@pytest.mark.parametrize("key", ["CC", "BCC"])
def test_cc_not_an_array_is_406(conn, unique, key):
    ch = conn.channel()
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"m", pika.BasicProperties(headers={key: "b"}))
    e = expect_channel_close(406, ch.queue_declare, unique, passive=True)
    assert e.reply_text == (f'PRECONDITION_FAILED - invalid message: '
                            f'{{unacceptable_type_in_header,"{key}",longstr}}')


def test_dead_letter_x_death_routing_keys_exclude_bcc(ch, unique):
    """x-death routing-keys: the publish key and CC keys, never BCC; without a dead-letter
    routing key the message is dead-lettered with all its keys, BCC included."""
    dlx = unique + "-dlx"
    ch.exchange_declare(dlx, "direct")
    for k in ("cc", "bcc"):
        ch.queue_declare(f"{unique}-dead-{k}")
        ch.queue_bind(f"{unique}-dead-{k}", dlx, k)
    src = unique + "-src"
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx, "x-message-ttl": 0})
    ch.basic_publish("", src, b"m", pika.BasicProperties(headers={"CC": ["cc"],
                                                                    "BCC": ["bcc"]}))
    for k in ("cc", "bcc"):
        _m, props, _b = ch.basic_get(f"{unique}-dead-{k}", auto_ack=True)
        assert props is not None, k
        assert props.headers["x-death"][0]["routing-keys"] == [src, "cc"]
        assert "BCC" not in props.headers
