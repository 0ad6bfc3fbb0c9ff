"""Message TTL (x-message-ttl, the expiration property) and queue TTL (x-expires), as
RabbitMQ documents them (https://www.rabbitmq.com/docs/ttl) for classic queues:

- expired messages are never delivered; they are dropped when they reach the head of the
  queue, also with nobody consuming (a timer), or dead-lettered (test_ext_dlx.py);
- a TTL of 0 expires a message unless a consumer can take it at once;
- the lower of the queue's and the message's TTL applies; per-message expiry happens only at
  the head (a long-TTL head keeps a short-TTL message behind it);
- requeued messages keep their original expiry;
- x-expires deletes a queue unused (no consumers, no basic.get, no redeclare) for that long;
- invalid values are 406 PRECONDITION_FAILED with RabbitMQ's texts.
"""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pytest
from amqp_helpers import collect, drain_get, expect_channel_close, wait_until
from ext_helpers import poll_get, wait_count


def _ttl(ms):
    return pika.BasicProperties(expiration=str(ms))


# ---- x-message-ttl ----

def test_queue_ttl_drops_without_consumers(ch, unique):
    ch.queue_declare(unique, arguments={"x-message-ttl": 30})
    for i in range(5):
        ch.basic_publish("", unique, b"m%d" % i)
    # the timer drops them with nobody touching the queue: the count goes to 0
    wait_count(ch, unique, 0)
    assert drain_get(ch, unique) == []


def test_queue_ttl_fresh_messages_survive(ch, unique):
    ch.queue_declare(unique, arguments={"x-message-ttl": 60000})
    ch.basic_publish("", unique, b"keep")
    assert drain_get(ch, unique) == [b"keep"]


def test_queue_ttl_zero_delivers_to_ready_consumer(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-message-ttl": 0})
    tag, got = collect(conn, ch, unique, 0, auto_ack=True)
    ch.basic_publish("", unique, b"now")
    wait_until(conn, lambda: len(got) == 1, what="the ttl-0 delivery")
    assert got[0][2] == b"now"
    ch.basic_cancel(tag)
    # nobody consuming: a ttl-0 message is gone at once
    ch.basic_publish("", unique, b"lost")
    assert ch.queue_declare(unique, passive=True).method.message_count == 0


def test_queue_ttl_zero_with_consumer_without_credit(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-message-ttl": 0})
    ch.basic_qos(prefetch_count=1)
    _tag, got = collect(conn, ch, unique, 0)
    ch.basic_publish("", unique, b"first")
    wait_until(conn, lambda: len(got) == 1)
    ch.basic_publish("", unique, b"second")  # no credit: expires instead of waiting
    assert ch.queue_declare(unique, passive=True).method.message_count == 0
    ch.basic_ack(got[0][0].delivery_tag)
    conn.process_data_events(time_limit=0.1)
    assert len(got) == 1


def test_expired_message_never_delivered_to_late_consumer(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-message-ttl": 20})
    ch.basic_publish("", unique, b"old")
    wait_count(ch, unique, 0)
    ch.basic_publish("", unique, b"new")
    _tag, got = collect(conn, ch, unique, 1, auto_ack=True)
    assert [b for _, _, b in got] == [b"new"]


def test_get_never_returns_expired(ch, unique):
    ch.queue_declare(unique, arguments={"x-message-ttl": 25})
    ch.basic_publish("", unique, b"x")
    deadline = time.monotonic() + 10
    while ch.queue_declare(unique, passive=True).method.message_count:
        assert time.monotonic() < deadline
        ch.connection.sleep(0.005)
    method, _p, _b = ch.basic_get(unique, auto_ack=True)
    assert method is None


def _dead_lettered_queue(ch, name, ttl):
    """``name`` with ``x-message-ttl`` ``ttl`` dead-lettering into ``name``-dl (returned)."""
    dlq = name + "-dl"
    ch.queue_declare(dlq, auto_delete=True)
    ch.queue_declare(name, arguments={"x-message-ttl": ttl, "x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": dlq})
    return dlq


def _deaths(conn, ch, dlq, n):
    """Consume ``n`` dead letters of ``dlq``: [(body, monotonic time seen)]."""
    seen = []
    tag = ch.basic_consume(dlq, lambda c, m, p, b: seen.append((b, time.monotonic())),
                           auto_ack=True)
    wait_until(conn, lambda: len(seen) >= n)
    ch.basic_cancel(tag)
    return seen


def test_queue_ttl_counts_from_enqueue_in_order(conn, ch, unique):
    # Each message's deadline counts from its own enqueue: b, published 200 ms after a,
    # dies after a and never sooner than 300 ms after its publish (a lower bound, which a
    # loaded machine cannot break; a broker counting b's TTL from a's enqueue would).
    dlq = _dead_lettered_queue(ch, unique, 300)
    t_a = time.monotonic()
    ch.basic_publish("", unique, b"a")
    conn.sleep(0.2)  # the gap between the two enqueues (not a wait for anything)
    t_b = time.monotonic()
    ch.basic_publish("", unique, b"b")
    (a, dead_a), (b, dead_b) = _deaths(conn, ch, dlq, 2)
    assert (a, b) == (b"a", b"b")
    assert dead_a - t_a >= 0.3
    assert dead_b - t_b >= 0.3


def test_requeued_message_keeps_its_expiry(conn, ch, unique):
    dlq = _dead_lettered_queue(ch, unique, 1000)
    ch.basic_publish("", unique, b"r")
    method, _p, _b = ch.basic_get(unique, auto_ack=False)
    assert method is not None
    ch.basic_publish("", unique, b"marker")  # enqueued after r: its deadline is later
    assert poll_get(ch, dlq)[2] == b"marker"  # so r's deadline has passed (an event)
    ch.basic_nack(method.delivery_tag, requeue=True)
    # back in the queue already expired: never delivered (a fresh 1 s TTL would deliver it)
    assert ch.basic_get(unique, auto_ack=True)[0] is None
    _m, props, body = poll_get(ch, dlq)
    assert body == b"r" and props.headers["x-death"][0]["reason"] == "expired"


def test_unacked_message_does_not_expire(conn, ch, unique):
    dlq = _dead_lettered_queue(ch, unique, 30)
    ch.basic_publish("", unique, b"held")
    method, _p, body = ch.basic_get(unique, auto_ack=False)
    assert body == b"held"
    ch.basic_publish("", unique, b"marker")
    assert poll_get(ch, dlq)[2] == b"marker"  # held's deadline has passed while unacked
    ch.basic_ack(method.delivery_tag)  # an unacked delivery is not taken back: ack works
    # a round trip on the same channel: an ack of an unknown tag would have closed it (406)
    assert ch.queue_declare(unique, passive=True).method.message_count == 0
    assert ch.queue_declare(dlq, passive=True).method.message_count == 0  # not dead-lettered


# ---- expiration property ----

def test_per_message_ttl(ch, unique):
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"short", _ttl(20))
    ch.basic_publish("", unique, b"none")
    wait_count(ch, unique, 1)
    assert drain_get(ch, unique) == [b"none"]


def test_per_message_ttl_expires_only_at_head(ch, unique):
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"long", _ttl(60000))
    ch.basic_publish("", unique, b"short", _ttl(10))
    # RabbitMQ classic queues: the expired message behind a live head still counts ...
    assert ch.queue_declare(unique, passive=True).method.message_count == 2
    # (its reply: both were enqueued before it; so "short" has surely expired 0.1 s later,
    # however late a loaded broker handled the publishes)
    ch.connection.sleep(0.1)
    assert ch.queue_declare(unique, passive=True).method.message_count == 2
    method, _p, body = ch.basic_get(unique, auto_ack=True)
    assert body == b"long"
    # ... and is dropped once it is at the head, never delivered
    method, _p, _b = ch.basic_get(unique, auto_ack=True)
    assert method is None


def test_lower_of_queue_and_message_ttl_applies(ch, unique):
    ch.queue_declare(unique, arguments={"x-message-ttl": 30})
    ch.basic_publish("", unique, b"msg-longer", _ttl(60000))
    wait_count(ch, unique, 0)
    q2 = unique + "-2"
    ch.queue_declare(q2, arguments={"x-message-ttl": 60000})
    ch.basic_publish("", q2, b"msg-shorter", _ttl(30))
    wait_count(ch, q2, 0)


def test_per_message_ttl_zero(conn, ch, unique):
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"gone", _ttl(0))
    assert ch.queue_declare(unique, passive=True).method.message_count == 0
    _tag, got = collect(conn, ch, unique, 0, auto_ack=True)
    ch.basic_publish("", unique, b"taken", _ttl(0))
    wait_until(conn, lambda: len(got) == 1)
    assert got[0][2] == b"taken"
    # the delivered message keeps its expiration property, as RabbitMQ delivers it
    assert got[0][1].expiration == "0"


def test_expiration_to_several_queues_expires_in_each(ch, unique):
    ch.exchange_declare(unique, "fanout")
    for q in ("a", "b"):
        ch.queue_declare(f"{unique}-{q}")
        ch.queue_bind(f"{unique}-{q}", unique)
    ch.queue_declare(f"{unique}-c", arguments={"x-message-ttl": 60000})
    ch.basic_publish(unique, "", b"x", _ttl(30))
    for q in ("a", "b"):
        wait_count(ch, f"{unique}-{q}", 0)


@pytest.mark.parametrize("value, reason", [
    ("abc", "no_integer"),
    ("-1", "{value_negative,-1}"),
    ("10x", '{leftover_string,"x"}'),
    ("4294967296", "{value_too_large,4294967296}"),
], ids=["letters", "negative", "leftover", "too-large"])
def test_invalid_expiration_is_406(conn, unique, value, reason):
    ch = conn.channel()
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"x", pika.BasicProperties(expiration=value))
    e = expect_channel_close(406, ch.queue_declare, unique, passive=True)
    assert e.reply_text == f"PRECONDITION_FAILED - invalid expiration '{value}': {reason}"


# ---- argument validation ----

@pytest.mark.parametrize("key, value, text", [
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-message-ttl", "100", '"expected integer, got longstr"'),
    ("x-message-ttl", 4294967296, "{value_too_large,4294967296}"),
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", -5, "{value_negative,-5}"),
    ("x-expires", True, '"expected integer, got bool"'),
], ids=["ttl-negative", "ttl-string", "ttl-too-large", "expires-zero", "expires-negative",
        "expires-bool"])
def test_invalid_ttl_arguments(conn, unique, key, value, text):
    ch = conn.channel()
    e = expect_channel_close(406, ch.queue_declare, unique, arguments={key: value})
    assert e.reply_text == (f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{unique}' "
                            f"in vhost '/': {text}")
    # nothing was created
    ch = conn.channel()
    expect_channel_close(404, ch.queue_declare, unique, passive=True)


def test_ttl_argument_equivalence(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, arguments={"x-message-ttl": 1000})
    ch.queue_declare(unique, arguments={"x-message-ttl": 1000})
    e = expect_channel_close(406, ch.queue_declare, unique, arguments={"x-message-ttl": 2000})
    assert e.reply_text == (f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue "
                            f"'{unique}' in vhost '/': received '2000' but current is '1000'")


# ---- x-expires ----

def _exists(conn, name) -> bool:
    ch = conn.channel()
    try:
        ch.queue_declare(name, passive=True)  # note: renews the lease
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404
        return False
    ch.close()
    return True


def _wait_gone(conn, name, timeout=20.0, poll=0.05):
    """Poll with basic.get on another connection? No: get renews. Poll with a passive
    declare no more often than half the lease, so the lease can run out between polls."""
    deadline = time.monotonic() + timeout
    while _exists(conn, name):
        assert time.monotonic() < deadline, f"{name} was not deleted"
        conn.sleep(poll)


def test_expires_deletes_unused_queue(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-expires": 50})
    ch.basic_publish("", unique, b"lost with the queue")
    _wait_gone(conn, unique, poll=0.2)


def test_expires_not_while_consumed(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-expires": 50})
    tag = ch.basic_consume(unique, lambda *a: None, auto_ack=True)
    conn.sleep(0.3)
    assert _exists(conn, unique)
    ch.basic_cancel(tag)
    _wait_gone(conn, unique, poll=0.2)


def _routable(probe, name) -> bool:
    """A mandatory publish to ``name`` on a confirm channel: False once the queue is gone.
    A publish does not renew an ``x-expires`` lease (a passive declare would)."""
    try:
        probe.basic_publish("", name, b"probe", mandatory=True)
    except pika.exceptions.UnroutableError:
        return False
    return True


def _renew_until_control_expires(conn, unique, renew):
    """Declare ``renewed`` (holding one message) and, after it, ``control``, both with a 1 s
    lease; call ``renew(renewed)`` over and over until ``control`` (never used) expires. As
    ``control`` was declared last, ``renewed`` would have expired first without renewal: an
    event, not a timing guess."""
    ch = conn.channel()
    renewed, control = unique + "-renewed", unique + "-control"
    ch.queue_declare(renewed, arguments={"x-expires": 1000})
    ch.basic_publish("", renewed, b"kept")
    ch.queue_declare(control, arguments={"x-expires": 1000})
    probe = conn.channel()
    probe.confirm_delivery()
    deadline = time.monotonic() + 20
    while _routable(probe, control):
        assert time.monotonic() < deadline, "control queue never expired"
        renew(renewed)
        conn.sleep(0.01)
    ok = ch.queue_declare(renewed, passive=True)
    assert ok.method.message_count == 1  # the same queue, not a new one
    ch.queue_delete(renewed)


def test_expires_renewed_by_get(conn, ch, unique):
    def get(q):
        m = ch.basic_get(q, auto_ack=False)[0]
        assert m is not None, "the queue expired and was declared anew"
        ch.basic_nack(m.delivery_tag, requeue=True)
    _renew_until_control_expires(conn, unique, get)


def test_expires_renewed_by_redeclare(conn, ch, unique):
    def redeclare(q):
        ok = ch.queue_declare(q, arguments={"x-expires": 1000})
        assert ok.method.message_count == 1, "the queue expired and was declared anew"
    _renew_until_control_expires(conn, unique, redeclare)


def test_expires_exclusive_queue(conn, ch, unique):
    ch.queue_declare(unique, exclusive=True, arguments={"x-expires": 50})
    _wait_gone(conn, unique, poll=0.2)
