"""Dead-letter exchanges (https://www.rabbitmq.com/docs/dlx; RabbitMQ 3.13's
rabbit_dead_letter / mc:record_death): x-dead-letter-exchange and x-dead-letter-routing-key;
dead-lettering on reject/nack without requeue, on expiry and on overflow; the x-death array and
the x-first-death-* / x-last-death-* headers; expiration removed (original-expiration kept);
cycles without a rejection dropped; persistence through a restart; validation texts.
"""

from __future__ import annotations

import datetime

import pika
import pika.exceptions
import pytest
from amqp_helpers import collect, connection, drain_get, expect_channel_close, wait_until
from ext_helpers import poll_get, wait_count


def _setup(ch, unique, dlrk=None, **args):
    """Work queue ``unique`` dead-lettering to direct exchange ``unique-dlx`` -> ``unique-dead``
    (bound with the work queue's name and with "dead")."""
    dlx, dead = f"{unique}-dlx", f"{unique}-dead"
    ch.exchange_declare(dlx, "direct")
    ch.queue_declare(dead)
    ch.queue_bind(dead, dlx, unique)
    ch.queue_bind(dead, dlx, "dead")
    a = {"x-dead-letter-exchange": dlx, **args}
    if dlrk is not None:
        a["x-dead-letter-routing-key"] = dlrk
    ch.queue_declare(unique, arguments=a)
    return dlx, dead


def _death(props) -> dict:
    return props.headers["x-death"][0]


# ---- reasons ----

def test_reject_without_requeue_dead_letters(ch, unique):
    dlx, dead = _setup(ch, unique)
    ch.basic_publish("", unique, b"bad", pika.BasicProperties(headers={"app": 1}))
    method, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    m, props, body = poll_get(ch, dead)
    assert body == b"bad"
    assert (m.exchange, m.routing_key) == (dlx, unique)  # original routing key kept
    h = props.headers
    assert h["app"] == 1
    d = h["x-death"]
    assert len(d) == 1
    assert d[0]["count"] == 1 and d[0]["reason"] == "rejected" and d[0]["queue"] == unique
    assert d[0]["exchange"] == "" and d[0]["routing-keys"] == [unique]
    assert isinstance(d[0]["time"], datetime.datetime)
    t = d[0]["time"]
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    assert abs((t - datetime.datetime.now(datetime.UTC)).total_seconds()) < 60
    assert "original-expiration" not in d[0]
    assert (h["x-first-death-reason"], h["x-first-death-queue"], h["x-first-death-exchange"]) \
        == ("rejected", unique, "")
    assert (h["x-last-death-reason"], h["x-last-death-queue"], h["x-last-death-exchange"]) \
        == ("rejected", unique, "")


def test_nack_multiple_without_requeue(conn, ch, unique):
    _dlx, dead = _setup(ch, unique)
    for i in range(3):
        ch.basic_publish("", unique, b"%d" % i)
    _tag, got = collect(conn, ch, unique, 3)
    ch.basic_nack(got[-1][0].delivery_tag, multiple=True, requeue=False)
    wait_count(ch, dead, 3)
    assert drain_get(ch, dead) == [b"0", b"1", b"2"]


def test_nack_with_requeue_does_not_dead_letter(ch, unique):
    _dlx, dead = _setup(ch, unique)
    ch.basic_publish("", unique, b"x")
    method, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_nack(method.delivery_tag, requeue=True)
    assert ch.queue_declare(dead, passive=True).method.message_count == 0
    assert drain_get(ch, unique) == [b"x"]


def test_ack_and_channel_close_do_not_dead_letter(conn, unique):
    ch = conn.channel()
    _dlx, dead = _setup(ch, unique)
    ch.basic_publish("", unique, b"a")
    ch.basic_publish("", unique, b"b")
    m1, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_ack(m1.delivery_tag)
    ch.basic_get(unique, auto_ack=False)
    ch.close()  # the unacked one is requeued, not dead-lettered
    ch = conn.channel()
    assert ch.queue_declare(dead, passive=True).method.message_count == 0
    assert drain_get(ch, unique) == [b"b"]


def test_reject_in_tx_dead_letters_on_commit(ch, unique):
    _dlx, dead = _setup(ch, unique)
    ch.basic_publish("", unique, b"t")
    ch.tx_select()
    method, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    assert ch.queue_declare(dead, passive=True).method.message_count == 0
    ch.tx_commit()
    _m, props, body = poll_get(ch, dead)
    assert body == b"t" and _death(props)["reason"] == "rejected"


def test_expired_dead_letters_with_original_expiration(ch, unique):
    dlx, dead = _setup(ch, unique)
    ch.basic_publish("", unique, b"late", pika.BasicProperties(expiration="20"))
    m, props, body = poll_get(ch, dead)
    assert body == b"late"
    d = _death(props)
    assert d["reason"] == "expired" and d["original-expiration"] == "20"
    assert props.expiration is None  # removed, so it does not expire again downstream
    assert props.headers["x-first-death-reason"] == "expired"


def test_queue_ttl_expiry_dead_letters_without_consumers(ch, unique):
    _dlx, dead = _setup(ch, unique, **{"x-message-ttl": 20})
    for i in range(3):
        ch.basic_publish("", unique, b"%d" % i)
    wait_count(ch, dead, 3)
    got = []
    for _ in range(3):
        _m, props, body = ch.basic_get(dead, auto_ack=True)
        got.append(body)
        assert _death(props)["reason"] == "expired"
        assert "original-expiration" not in _death(props)
    assert got == [b"0", b"1", b"2"]  # in order
    assert ch.queue_declare(unique, passive=True).method.message_count == 0


def test_dead_letter_routing_key(ch, unique):
    dlx, dead = _setup(ch, unique, dlrk="dead")
    ch.basic_publish("", unique, b"x")
    method, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_nack(method.delivery_tag, requeue=False)
    m, props, _b = poll_get(ch, dead)
    assert (m.exchange, m.routing_key) == (dlx, "dead")
    assert _death(props)["routing-keys"] == [unique]  # the keys it was published with


def test_default_exchange_as_dlx(ch, unique):
    target = unique + "-target"
    ch.queue_declare(target)
    ch.queue_declare(unique, arguments={"x-dead-letter-exchange": "",
                                        "x-dead-letter-routing-key": target})
    ch.basic_publish("", unique, b"x")
    method, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    m, props, body = poll_get(ch, target)
    assert (m.exchange, m.routing_key, body) == ("", target, b"x")


def test_missing_dlx_drops_silently(ch, unique):
    ch.queue_declare(unique, arguments={"x-dead-letter-exchange": unique + "-nowhere"})
    ch.basic_publish("", unique, b"x")
    method, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    assert ch.queue_declare(unique, passive=True).method.message_count == 0
    assert ch.is_open


def test_unroutable_dead_letter_dropped(ch, unique):
    dlx = unique + "-dlx"
    ch.exchange_declare(dlx, "direct")
    ch.queue_declare(unique, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", unique, b"x", pika.BasicProperties(expiration="0"))
    assert ch.queue_declare(unique, passive=True).method.message_count == 0


def test_fanout_dlx_to_several_queues(ch, unique):
    dlx = unique + "-dlx"
    ch.exchange_declare(dlx, "fanout")
    for s in ("a", "b"):
        ch.queue_declare(f"{unique}-{s}")
        ch.queue_bind(f"{unique}-{s}", dlx)
    ch.queue_declare(unique, arguments={"x-dead-letter-exchange": dlx, "x-message-ttl": 0})
    ch.basic_publish("", unique, b"x")
    for s in ("a", "b"):
        assert poll_get(ch, f"{unique}-{s}")[2] == b"x"


# ---- x-death history ----

def test_death_count_increments_and_moves_to_front(ch, unique):
    """q1 rejects to q2, q2 expires back to q1, q1 rejects again: q1/rejected counts 2 and
    is first; no cycle (a rejection is in it)."""
    q1, q2 = unique + "-1", unique + "-2"
    ch.queue_declare(q1, arguments={"x-dead-letter-exchange": "",
                                    "x-dead-letter-routing-key": q2})
    ch.queue_declare(q2, arguments={"x-dead-letter-exchange": "",
                                    "x-dead-letter-routing-key": q1, "x-message-ttl": 10})
    ch.basic_publish("", q1, b"ping")
    for _ in range(2):
        m, _p, _b = poll_get(ch, q1, auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
    m, props, _b = poll_get(ch, q1, auto_ack=False)
    d = props.headers["x-death"]
    assert [(e["queue"], e["reason"], e["count"]) for e in d] == [
        (q2, "expired", 2), (q1, "rejected", 2)]
    h = props.headers
    assert (h["x-first-death-queue"], h["x-first-death-reason"]) == (q1, "rejected")
    assert (h["x-last-death-queue"], h["x-last-death-reason"]) == (q2, "expired")
    ch.basic_ack(m.delivery_tag)


def test_cycle_without_rejection_is_dropped(broker, ch, unique):
    """A queue expiring into itself: the message comes back once? No: the first re-entry
    closes a cycle with no rejection, and RabbitMQ drops it (and logs a warning)."""
    ch.queue_declare(unique, arguments={"x-dead-letter-exchange": "", "x-message-ttl": 10})
    ch.basic_publish("", unique, b"loop")
    wait_count(ch, unique, 0)
    broker.wait_for_log("dead-letter cycle")
    conn2 = ch.connection
    conn2.sleep(0.1)
    assert ch.queue_declare(unique, passive=True).method.message_count == 0


def test_two_queue_cycle_dropped_only_for_the_cycling_queue(ch, unique):
    q1, q2, side = unique + "-1", unique + "-2", unique + "-side"
    fan = unique + "-fan"
    ch.exchange_declare(fan, "fanout")
    ch.queue_declare(side)
    ch.queue_bind(side, fan)
    ch.queue_declare(q1, arguments={"x-dead-letter-exchange": "",
                                    "x-dead-letter-routing-key": q2, "x-message-ttl": 5})
    ch.queue_declare(q2, arguments={"x-dead-letter-exchange": fan, "x-message-ttl": 5})
    ch.queue_bind(q1, fan)
    ch.basic_publish("", q1, b"c")
    # q1 -> q2 -> fan -> {q1 (cycle: dropped), side (kept)}
    _m, props, body = poll_get(ch, side)
    assert [(e["queue"], e["reason"]) for e in props.headers["x-death"]] == [
        (q2, "expired"), (q1, "expired")]
    wait_count(ch, q1, 0)
    wait_count(ch, q2, 0)


def test_client_supplied_x_death_is_continued(ch, unique):
    dlx, dead = _setup(ch, unique)
    old = [{"count": 3, "reason": "rejected", "queue": "elsewhere", "exchange": "x",
            "routing-keys": ["k"]}]
    ch.basic_publish("", unique, b"x", pika.BasicProperties(headers={
        "x-death": old, "x-first-death-reason": "rejected", "x-first-death-queue": "elsewhere",
        "x-first-death-exchange": "x"}))
    m, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    _m, props, _b = poll_get(ch, dead)
    d = props.headers["x-death"]
    assert [(e["queue"], e["count"]) for e in d] == [(unique, 1), ("elsewhere", 3)]
    assert props.headers["x-first-death-queue"] == "elsewhere"  # never modified
    assert props.headers["x-last-death-queue"] == unique


def test_properties_and_body_kept(ch, unique):
    _dlx, dead = _setup(ch, unique)
    props = pika.BasicProperties(content_type="application/json", correlation_id="c1",
                                 message_id="m1", delivery_mode=2, priority=3,
                                 reply_to="r", app_id="a", type="t")
    body = bytes(range(256)) * 100
    ch.basic_publish("", unique, body, props)
    m, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    _m, p, b = poll_get(ch, dead)
    assert b == body
    for f in ("content_type", "correlation_id", "message_id", "delivery_mode", "priority",
              "reply_to", "app_id", "type"):
        assert getattr(p, f) == getattr(props, f), f


# ---- persistence ----

def test_persistent_dead_letter_survives_restart(fresh_broker, unique):
    with connection(fresh_broker.port) as c:
        ch = c.channel()
        ch.exchange_declare("dlx", "fanout", durable=True)
        ch.queue_declare("dead", durable=True)
        ch.queue_bind("dead", "dlx")
        ch.queue_declare("work", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
        ch.confirm_delivery()
        ch.basic_publish("", "work", b"p", pika.BasicProperties(delivery_mode=2))
        m, _p, _b = ch.basic_get("work", auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
        wait_count(ch, "dead", 1)
    assert fresh_broker.stop() == 0
    fresh_broker.start()
    with connection(fresh_broker.port) as c:
        ch = c.channel()
        assert ch.queue_declare("work", passive=True).method.message_count == 0
        m, props, body = ch.basic_get("dead", auto_ack=True)
        assert body == b"p"
        assert props.headers["x-death"][0]["reason"] == "rejected"


# ---- validation ----

@pytest.mark.parametrize("args, text", [
    ({"x-dead-letter-exchange": 5},
     "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"),
    ({"x-dead-letter-routing-key": "k"},
     "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': "
     "routing_key_but_no_dlx_defined"),
    ({"x-dead-letter-exchange": "x", "x-dead-letter-routing-key": 1},
     "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': "
     "{unacceptable_type,signedint}"),
], ids=["dlx-type", "rk-without-dlx", "rk-type"])
def test_invalid_dlx_arguments(conn, unique, args, text):
    ch = conn.channel()
    e = expect_channel_close(406, ch.queue_declare, unique, arguments=args)
    assert e.reply_text == "PRECONDITION_FAILED - " + text.replace("{q}", unique)


def test_consumer_reject_dead_letters(conn, ch, unique):
    _dlx, dead = _setup(ch, unique)
    seen = []

    def on_msg(c, method, _props, body):
        seen.append(body)
        c.basic_reject(method.delivery_tag, requeue=False)

    ch.basic_consume(unique, on_msg)
    for i in range(10):
        ch.basic_publish("", unique, b"%d" % i)
    wait_until(conn, lambda: len(seen) == 10)
    wait_count(ch, dead, 10)
