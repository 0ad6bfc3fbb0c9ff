"""Consumer priorities (https://www.rabbitmq.com/docs/consumer-priority: ``x-priority`` on
basic.consume; higher-priority consumers get messages while they have credit, equal ones
round-robin, lower ones only when the higher are blocked) and single active consumer
(https://www.rabbitmq.com/docs/consumers#single-active-consumer: ``x-single-active-consumer``;
one consumer receives, the next registered takes over when it cancels or its channel or
connection goes, unacked messages of the old one are requeued to the new one)."""

from __future__ import annotations

import socket

import pika
from amqp_helpers import expect_channel_close, wait_until


def _consumer(ch, q, got, name, auto_ack=True, **kw):
    return ch.basic_consume(q, lambda _c, m, _p, b: got.append((name, m, b)),
                            auto_ack=auto_ack, **kw)


# ---- consumer priorities ----

def test_high_priority_consumer_gets_everything(conn, ch, unique):
    ch.queue_declare(unique)
    got = []
    _consumer(ch, unique, got, "low", arguments={"x-priority": 1})
    _consumer(ch, unique, got, "high", arguments={"x-priority": 10})
    _consumer(ch, unique, got, "default")
    for i in range(10):
        ch.basic_publish("", unique, b"%d" % i)
    wait_until(conn, lambda: len(got) == 10)
    assert {n for n, _, _ in got} == {"high"}


def test_lower_priority_served_when_higher_blocked(conn, unique):
    hi_ch, lo_ch = conn.channel(), conn.channel()
    hi_ch.queue_declare(unique)
    hi_ch.basic_qos(prefetch_count=2)
    got = []
    _consumer(hi_ch, unique, got, "high", auto_ack=False, arguments={"x-priority": 5})
    _consumer(lo_ch, unique, got, "low", arguments={"x-priority": -5})
    for i in range(6):
        hi_ch.basic_publish("", unique, b"%d" % i)
    wait_until(conn, lambda: len(got) == 6)
    names = [n for n, _, _ in got]
    assert names.count("high") == 2 and names.count("low") == 4
    assert [b for n, _, b in got if n == "high"] == [b"0", b"1"]
    # credit back: the high-priority consumer is served first again
    for _n, m, _b in [g for g in got if g[0] == "high"]:
        hi_ch.basic_ack(m.delivery_tag)
    hi_ch.basic_publish("", unique, b"after")
    wait_until(conn, lambda: len(got) == 7)
    assert got[-1][0] == "high"


def test_equal_priority_round_robin(conn, ch, unique):
    ch.queue_declare(unique)
    got = []
    for name in ("a", "b", "c"):
        _consumer(ch, unique, got, name, arguments={"x-priority": 3})
    _consumer(ch, unique, got, "low", arguments={"x-priority": 1})
    for i in range(9):
        ch.basic_publish("", unique, b"%d" % i)
    wait_until(conn, lambda: len(got) == 9)
    names = [n for n, _, _ in got]
    assert sorted(names) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3


def test_cancelled_high_priority_consumer_lets_lower_in(conn, ch, unique):
    ch.queue_declare(unique)
    got = []
    tag = _consumer(ch, unique, got, "high", arguments={"x-priority": 9})
    _consumer(ch, unique, got, "low")
    ch.basic_publish("", unique, b"1")
    wait_until(conn, lambda: len(got) == 1)
    ch.basic_cancel(tag)
    ch.basic_publish("", unique, b"2")
    wait_until(conn, lambda: len(got) == 2)
    assert [n for n, _, _ in got] == ["high", "low"]


def test_invalid_consumer_priority(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    e = expect_channel_close(406, ch.basic_consume, unique, lambda *a: None,
                             arguments={"x-priority": "high"})
    assert e.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue "
                            f"'{unique}' in vhost '/': \"expected integer, got longstr\"")


# ---- single active consumer ----

def test_only_one_consumer_receives(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-single-active-consumer": True})
    got = []
    for name in ("first", "second", "third"):
        _consumer(ch, unique, got, name)
    for i in range(10):
        ch.basic_publish("", unique, b"%d" % i)
    wait_until(conn, lambda: len(got) == 10)
    assert {n for n, _, _ in got} == {"first"}
    assert [b for _, _, b in got] == [b"%d" % i for i in range(10)]


def test_next_consumer_takes_over_on_cancel(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-single-active-consumer": True})
    got = []
    tag1 = _consumer(ch, unique, got, "first")
    _consumer(ch, unique, got, "second")
    ch.basic_publish("", unique, b"a")
    wait_until(conn, lambda: len(got) == 1)
    ch.basic_cancel(tag1)
    ch.basic_publish("", unique, b"b")
    wait_until(conn, lambda: len(got) == 2)
    assert [(n, b) for n, _, b in got] == [("first", b"a"), ("second", b"b")]


def test_takeover_on_connection_loss_with_requeue(broker, conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, arguments={"x-single-active-consumer": True})
    first = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    fch = first.channel()
    fgot = []
    fch.basic_qos(prefetch_count=1)
    _consumer(fch, unique, fgot, "first", auto_ack=False)
    got = []
    _consumer(ch, unique, got, "second", auto_ack=False)
    for i in range(3):
        ch.basic_publish("", unique, b"%d" % i)
    wait_until(first, lambda: len(fgot) == 1)
    conn.process_data_events(time_limit=0.1)
    assert got == []  # not active: nothing, although the active one has no credit
    # the connection dies (no basic.cancel first, which pika's close would send): its
    # unacked message is requeued and the new active consumer gets it first
    sock = first._impl._transport._sock
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    wait_until(conn, lambda: len(got) == 3)
    assert [b for _, _, b in got] == [b"0", b"1", b"2"]
    assert got[0][1].redelivered is True


def test_sac_queue_still_allows_get(ch, unique):
    ch.queue_declare(unique, arguments={"x-single-active-consumer": True})
    ch.basic_publish("", unique, b"x")
    _m, _p, body = ch.basic_get(unique, auto_ack=True)
    assert body == b"x"


def test_invalid_sac_argument(conn, unique):
    ch = conn.channel()
    e = expect_channel_close(406, ch.queue_declare, unique,
                             arguments={"x-single-active-consumer": "yes"})
    assert e.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for "
                            f"queue '{unique}' in vhost '/': {{unacceptable_type,longstr}}")


def test_sac_false_is_normal_round_robin(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-single-active-consumer": False})
    got = []
    _consumer(ch, unique, got, "a")
    _consumer(ch, unique, got, "b")
    for i in range(4):
        ch.basic_publish("", unique, b"%d" % i)
    wait_until(conn, lambda: len(got) == 4)
    assert sorted(n for n, _, _ in got) == ["a", "a", "b", "b"]
