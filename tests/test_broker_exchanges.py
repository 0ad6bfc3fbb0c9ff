"""Exchanges against a real broker through pika: the default and pre-declared exchanges,
exchange.declare/delete/bind/unbind and routing by every exchange type, with RabbitMQ's reply
codes."""

from __future__ import annotations

import pika
import pytest
from amqp_helpers import (
    connection,
    drain_get,
    expect_channel_close,
    expect_connection_close,
    message_count,
)

PREDECLARED = [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
               ("amq.headers", "headers"), ("amq.match", "headers")]


def _queues(ch, unique, n):
    names = [f"{unique}-q{i}" for i in range(n)]
    for q in names:
        ch.queue_declare(q, auto_delete=False)
    return names


# ---- default vhost and pre-declared exchanges ----

def test_default_vhost_and_predeclared_exchanges_exist(ch):
    for name, _type in PREDECLARED:
        ch.exchange_declare(name, passive=True)


@pytest.mark.parametrize("name,type_", PREDECLARED)
def test_predeclared_exchange_redeclared_equivalently(ch, name, type_):
    # RabbitMQ checks the reserved prefix only when creating: an equivalent redeclare is fine.
    ch.exchange_declare(name, type_, durable=True)


def test_predeclared_exchange_redeclared_differently_is_406(ch):
    expect_channel_close(406, ch.exchange_declare, "amq.direct", "fanout", durable=True)


def test_predeclared_exchanges_route(conn, unique):
    ch = conn.channel()
    q1, q2, q3 = _queues(ch, unique, 3)
    ch.queue_bind(q1, "amq.direct", routing_key=unique)
    ch.queue_bind(q3, "amq.fanout")
    ch.queue_bind(q2, "amq.topic", routing_key=f"{unique}.#")
    ch.queue_bind(q2, "amq.headers", arguments={"x-match": "all", "k": unique})
    ch.queue_bind(q2, "amq.match", arguments={"x-match": "any", "k2": unique})
    ch.basic_publish("amq.direct", unique, b"direct")
    ch.basic_publish("amq.direct", unique + "-other", b"lost")
    ch.basic_publish("amq.fanout", "any", b"fanout")
    ch.basic_publish("amq.topic", f"{unique}.a.b", b"topic")
    ch.basic_publish("amq.headers", "", b"headers",
                     pika.BasicProperties(headers={"k": unique}))
    ch.basic_publish("amq.match", "", b"match", pika.BasicProperties(headers={"k2": unique}))
    assert drain_get(ch, q1) == [b"direct"]
    assert drain_get(ch, q2) == [b"topic", b"headers", b"match"]
    assert b"fanout" in drain_get(ch, q3)
    ch.queue_delete(q3)


def test_default_exchange_routes_by_queue_name(ch, unique):
    (q,) = _queues(ch, unique, 1)
    ch.basic_publish("", q, b"hello")
    ch.basic_publish("", q + "-nope", b"nowhere")
    assert drain_get(ch, q) == [b"hello"]


def test_default_exchange_cannot_be_bound(ch, unique):
    (q,) = _queues(ch, unique, 1)
    expect_channel_close(403, ch.queue_bind, q, "", routing_key="x")


def test_default_exchange_cannot_be_unbound(ch, unique):
    (q,) = _queues(ch, unique, 1)
    expect_channel_close(403, ch.queue_unbind, q, "", routing_key=q)


def test_default_exchange_cannot_be_deleted(conn):
    expect_channel_close(403, conn.channel().exchange_delete, "")


def test_default_exchange_cannot_be_declared(conn):
    expect_channel_close(403, conn.channel().exchange_declare, "", "direct", durable=True)
    expect_channel_close(403, conn.channel().exchange_declare, "", passive=True)


def test_default_exchange_is_not_an_e2e_destination(ch):
    expect_channel_close(403, ch.exchange_bind, "", "amq.direct", routing_key="x")


@pytest.mark.parametrize("name", ["amq.direct", "amq.topic", "amq.match"])
def test_predeclared_exchanges_cannot_be_deleted(conn, name):
    expect_channel_close(403, conn.channel().exchange_delete, name)
    conn.channel().exchange_declare(name, passive=True)


def test_amq_prefix_is_reserved(ch, unique):
    expect_channel_close(403, ch.exchange_declare, "amq." + unique, "direct")


# ---- exchange.declare ----

@pytest.mark.parametrize("type_", ["direct", "fanout", "topic", "headers"])
def test_declare_each_type_and_redeclare(ch, unique, type_):
    ch.exchange_declare(unique, type_, durable=True, arguments={"a": 1})
    ch.exchange_declare(unique, type_, durable=True, arguments={"a": 1})
    ch.exchange_declare(unique, passive=True)
    ch.exchange_delete(unique)
    expect_channel_close(404, ch.exchange_declare, unique, passive=True)


@pytest.mark.parametrize("change", [
    {"exchange_type": "fanout"},
    {"durable": True},
    {"auto_delete": True},
    {"internal": True},
    {"arguments": {"alternate-exchange": "ae"}},
])
def test_redeclare_with_different_properties_is_406(conn, unique, change):
    ch = conn.channel()
    ch.exchange_declare(unique, "direct")
    kw = {"exchange_type": "direct"} | change
    err = expect_channel_close(406, ch.exchange_declare, unique, **kw)
    assert "inequivalent" in err.reply_text
    conn.channel().exchange_delete(unique)


def test_redeclare_compares_alternate_exchange_only(ch, unique):
    """rabbit_exchange:assert_equivalence looks at alternate-exchange only (RabbitMQ 3.10)."""
    ch.exchange_declare(unique, "direct", arguments={"x-any": "thing"})
    ch.exchange_declare(unique, "direct", arguments={"x-any": "other"})
    ch.exchange_delete(unique)


def test_passive_declare_of_missing_exchange_is_404(ch, unique):
    err = expect_channel_close(404, ch.exchange_declare, unique, passive=True)
    assert unique in err.reply_text


def test_unknown_exchange_type_is_503_connection_error(broker, unique):
    with connection(broker.port) as c:
        expect_connection_close(503, c.channel().exchange_declare, unique, "x-no-such-type")
        assert c.is_closed


def test_channel_survives_other_channels_error(conn, unique):
    bad, good = conn.channel(), conn.channel()
    expect_channel_close(404, bad.exchange_declare, unique, passive=True)
    good.exchange_declare(unique, "fanout", auto_delete=False)
    good.exchange_delete(unique)


# ---- exchange.delete ----

def test_delete_if_unused(conn, unique):
    ch = conn.channel()
    ch.exchange_declare(unique, "fanout")
    (q,) = _queues(ch, unique, 1)
    ch.queue_bind(q, unique)
    err = expect_channel_close(406, ch.exchange_delete, unique, if_unused=True)
    assert "in use" in err.reply_text
    ch = conn.channel()
    ch.exchange_declare(unique, passive=True)
    ch.queue_unbind(q, unique)
    ch.exchange_delete(unique, if_unused=True)
    expect_channel_close(404, ch.exchange_declare, unique, passive=True)


def test_delete_if_unused_ignores_bindings_to_it(ch, unique):
    # only bindings with the exchange as their *source* make it "in use" (RabbitMQ)
    src, dst = unique + "-src", unique + "-dst"
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(dst, "fanout")
    ch.exchange_bind(dst, src)
    ch.exchange_delete(dst, if_unused=True)
    ch.exchange_delete(src, if_unused=True)  # its only binding went with dst


def test_delete_missing_exchange_is_ok(ch, unique):
    ch.exchange_delete(unique)


def test_delete_removes_its_bindings(ch, unique):
    ch.exchange_declare(unique, "fanout")
    (q,) = _queues(ch, unique, 1)
    ch.queue_bind(q, unique)
    ch.exchange_delete(unique)
    ch.exchange_declare(unique, "fanout")
    ch.basic_publish(unique, "", b"x")
    assert message_count(ch, q) == 0


def test_auto_delete_exchange_goes_with_its_last_binding(conn, unique):
    ch = conn.channel()
    ch.exchange_declare(unique, "direct", auto_delete=True)
    q1, q2 = _queues(ch, unique, 2)
    ch.queue_bind(q1, unique, "a")
    ch.queue_bind(q2, unique, "b")
    ch.queue_unbind(q1, unique, "a")
    ch.exchange_declare(unique, passive=True)
    ch.queue_delete(q2)  # the last binding goes with the queue
    expect_channel_close(404, ch.exchange_declare, unique, passive=True)


def test_internal_exchange_refuses_publishes_but_routes_e2e(conn, unique):
    ch = conn.channel()
    internal = unique + "-int"
    ch.exchange_declare(internal, "fanout", internal=True)
    ch.exchange_declare(unique, "fanout")
    ch.exchange_bind(internal, unique)
    (q,) = _queues(ch, unique, 1)
    ch.queue_bind(q, internal)
    ch.basic_publish(unique, "", b"via-public")
    assert drain_get(ch, q) == [b"via-public"]
    ch.basic_publish(internal, "", b"direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        message_count(ch, q)
    assert ei.value.reply_code == 403


def test_publish_to_missing_exchange_is_404(ch, unique):
    ch.basic_publish(unique, "rk", b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare("", exclusive=True)
    assert ei.value.reply_code == 404


# ---- bindings ----

def test_bind_to_missing_exchange_or_queue_is_404(conn, unique):
    ch = conn.channel()
    (q,) = _queues(ch, unique, 1)
    expect_channel_close(404, ch.queue_bind, q, unique + "-nope")
    expect_channel_close(404, conn.channel().queue_bind, unique + "-noq", "amq.direct")
    expect_channel_close(404, conn.channel().exchange_bind, unique + "-no", "amq.direct")
    expect_channel_close(404, conn.channel().exchange_bind, "amq.direct", unique + "-no")


def test_bind_unbind_and_duplicate_bind(ch, unique):
    ch.exchange_declare(unique, "direct")
    (q,) = _queues(ch, unique, 1)
    ch.queue_bind(q, unique, "k")
    ch.queue_bind(q, unique, "k")  # idempotent
    ch.basic_publish(unique, "k", b"1")
    assert drain_get(ch, q) == [b"1"]
    ch.queue_unbind(q, unique, "k")
    ch.basic_publish(unique, "k", b"2")
    assert message_count(ch, q) == 0
    ch.queue_unbind(q, unique, "k")  # a missing binding is not an error


def test_exchange_to_exchange_bind_and_unbind(ch, unique):
    src, dst = unique + "-src", unique + "-dst"
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(dst, "direct")
    q1, q2 = _queues(ch, unique, 2)
    ch.exchange_bind(dst, src, routing_key="a.*")
    ch.queue_bind(q1, dst, "a.b")
    ch.queue_bind(q2, src, "#")
    ch.basic_publish(src, "a.b", b"ab")
    ch.basic_publish(src, "a.c", b"ac")
    ch.basic_publish(src, "x", b"x")
    assert drain_get(ch, q1) == [b"ab"]
    assert drain_get(ch, q2) == [b"ab", b"ac", b"x"]
    ch.exchange_unbind(dst, src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"ab2")
    assert drain_get(ch, q1) == []
    assert drain_get(ch, q2) == [b"ab2"]


def test_e2e_cycle_and_diamond_deliver_once(ch, unique):
    a, b, c = (f"{unique}-{n}" for n in "abc")
    for x in (a, b, c):
        ch.exchange_declare(x, "fanout")
    ch.exchange_bind(b, a)
    ch.exchange_bind(c, a)
    ch.exchange_bind(c, b)
    ch.exchange_bind(a, c)  # a cycle
    (q,) = _queues(ch, unique, 1)
    ch.queue_bind(q, b)
    ch.queue_bind(q, c)
    ch.basic_publish(a, "", b"once")
    assert drain_get(ch, q) == [b"once"]


def test_deleting_destination_exchange_removes_e2e_binding(ch, unique):
    src, dst = unique + "-src", unique + "-dst"
    ch.exchange_declare(src, "fanout", auto_delete=True)
    ch.exchange_declare(dst, "fanout")
    ch.exchange_bind(dst, src)
    ch.exchange_delete(dst)
    # src was auto-delete and lost its only binding
    expect_channel_close(404, ch.exchange_declare, src, passive=True)


# ---- routing ----

def test_direct_routing(ch, unique):
    ch.exchange_declare(unique, "direct")
    q1, q2 = _queues(ch, unique, 2)
    ch.queue_bind(q1, unique, "a")
    ch.queue_bind(q2, unique, "a")
    ch.queue_bind(q2, unique, "b")
    for k in ("a", "b", "c", ""):
        ch.basic_publish(unique, k, k.encode() or b"empty")
    assert drain_get(ch, q1) == [b"a"]
    assert drain_get(ch, q2) == [b"a", b"b"]


def test_fanout_routing_ignores_key(ch, unique):
    ch.exchange_declare(unique, "fanout")
    q1, q2 = _queues(ch, unique, 2)
    ch.queue_bind(q1, unique, "ignored")
    ch.queue_bind(q2, unique)
    ch.basic_publish(unique, "x", b"1")
    ch.basic_publish(unique, "y.z", b"2")
    assert drain_get(ch, q1) == [b"1", b"2"]
    assert drain_get(ch, q2) == [b"1", b"2"]


TOPIC_CASES = {
    "a.b.c": ["a.b.c", "a.*.c", "a.#", "#", "#.c", "a.#.c", "*.*.*", "a.b.#"],
    "a.c": ["a.#", "#", "#.c", "a.#.c", "a.*"],
    "a": ["a.#", "#", "a", "*"],
    "": ["#"],
    "x.a.b.c": ["#", "#.c"],
    "a.b.b.c": ["a.#", "#", "#.c", "a.#.c", "a.b.#"],
    "a.b": ["a.#", "#", "a.*", "a.b.#"],
}


def test_topic_routing(ch, unique):
    ch.exchange_declare(unique, "topic")
    patterns = sorted({p for ps in TOPIC_CASES.values() for p in ps} | {"*", "b.#", "*.b.*.d"})
    queues = {}
    for i, p in enumerate(patterns):
        q = f"{unique}-t{i}"
        ch.queue_declare(q)
        ch.queue_bind(q, unique, p)
        queues[p] = q
    for key in TOPIC_CASES:
        ch.basic_publish(unique, key, key.encode())
    for p, q in queues.items():
        expected = [k.encode() for k, ps in TOPIC_CASES.items() if p in ps]
        assert drain_get(ch, q) == expected, p


@pytest.mark.parametrize("x_match,headers,expected", [
    ("all", {"a": 1, "b": "two"}, True),
    ("all", {"a": 1, "b": "two", "c": 3}, True),
    ("all", {"a": 1}, False),
    ("all", {"a": 2, "b": "two"}, False),
    ("any", {"a": 1}, True),
    ("any", {"b": "two"}, True),
    ("any", {"a": 2, "b": "three"}, False),
    ("any", {}, False),
    ("all-with-x", {"a": 1, "b": "two", "x-c": "xc"}, True),
    ("all-with-x", {"a": 1, "b": "two"}, False),
    ("any-with-x", {"x-c": "xc"}, True),
    ("any-with-x", {"x-c": "other"}, False),
    ("all", {"a": 1, "b": "two", "x-c": "other"}, True),  # x- keys are ignored by all
    ("any", {"x-c": "xc"}, False),  # and by any
])
def test_headers_routing(ch, unique, x_match, headers, expected):
    ch.exchange_declare(unique, "headers")
    (q,) = _queues(ch, unique, 1)
    ch.queue_bind(q, unique, arguments={"x-match": x_match, "a": 1, "b": "two", "x-c": "xc"})
    ch.basic_publish(unique, "", b"m", pika.BasicProperties(headers=headers))
    ch.basic_publish(unique, "", b"none")  # no headers at all
    assert drain_get(ch, q) == ([b"m"] if expected else [])


def test_headers_binding_without_x_match_means_all(ch, unique):
    ch.exchange_declare(unique, "headers")
    (q,) = _queues(ch, unique, 1)
    ch.queue_bind(q, unique, arguments={"k": "v"})
    ch.basic_publish(unique, "", b"yes", pika.BasicProperties(headers={"k": "v", "o": 1}))
    ch.basic_publish(unique, "", b"no", pika.BasicProperties(headers={"o": 1}))
    assert drain_get(ch, q) == [b"yes"]


def test_headers_binding_with_bad_x_match_is_406(ch, unique):
    ch.exchange_declare(unique, "headers")
    (q,) = _queues(ch, unique, 1)
    expect_channel_close(406, ch.queue_bind, q, unique, arguments={"x-match": "some"})


def test_message_routed_to_a_queue_once(ch, unique):
    ch.exchange_declare(unique, "topic")
    (q,) = _queues(ch, unique, 1)
    ch.queue_bind(q, unique, "a.*")
    ch.queue_bind(q, unique, "#")
    ch.queue_bind(q, unique, "a.b")
    ch.basic_publish(unique, "a.b", b"once")
    assert drain_get(ch, q) == [b"once"]
