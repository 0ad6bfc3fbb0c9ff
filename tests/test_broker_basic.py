"""basic.* against a real broker through pika: publish (mandatory, immediate), consume (exclusive,
no-ack, no-local, tags, cancel notification), get, ack/nack/reject, recover, qos, redelivery,
round-robin and requeue order."""

from __future__ import annotations

import pika
import pika.spec
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


def _queue(ch, unique, bodies=()):
    ch.queue_declare(unique)
    publish_all(ch, "", unique, bodies)
    return unique


def _bodies(n, prefix="m"):
    return [f"{prefix}{i}".encode() for i in range(n)]


# ---- basic.publish ----

def test_publish_properties_round_trip(ch, unique):
    _queue(ch, unique)
    props = pika.BasicProperties(
        content_type="text/plain", content_encoding="utf-8", headers={"a": 1, "b": "x"},
        delivery_mode=2, priority=3, correlation_id="c1", reply_to="r", expiration="60000",
        message_id="id1", timestamp=1700000000, type="t", user_id="guest", app_id="app",
    )
    body = bytes(range(256)) * 1000  # several frames
    ch.basic_publish("", unique, body, props)
    method, got, gbody = ch.basic_get(unique, auto_ack=True)
    assert gbody == body
    for f in ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
              "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
              "user_id", "app_id"):
        assert getattr(got, f) == getattr(props, f), f
    assert (method.exchange, method.routing_key, method.redelivered) == ("", unique, False)


def test_mandatory_unroutable_is_returned(conn, unique):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda _c, m, p, b: returned.append((m, p, b)))
    ch.basic_publish("amq.direct", unique, b"lost", pika.BasicProperties(message_id="r1"),
                     mandatory=True)
    ch.basic_publish("amq.direct", unique, b"dropped")  # not mandatory: silently dropped
    wait_until(conn, lambda: returned, what="basic.return")
    m, p, b = returned[0]
    assert (m.reply_code, m.reply_text, m.exchange, m.routing_key) == (
        312, "NO_ROUTE", "amq.direct", unique)
    assert (p.message_id, b) == ("r1", b"lost")
    _queue(ch, unique)
    ch.basic_publish("", unique, b"routed", mandatory=True)
    assert message_count(ch, unique) == 1
    assert len(returned) == 1


def test_immediate_closes_the_connection_540(broker, unique):
    c = connect(broker.port)
    ch = c.channel()
    ch.queue_declare(unique, auto_delete=True)
    ch._impl._send_method(  # pika's BlockingChannel does not expose immediate
        pika.spec.Basic.Publish(exchange="", routing_key=unique, immediate=True),
        (pika.BasicProperties(), b"x"),
    )
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        wait_until(c, lambda: False, what="connection.close")
    assert ei.value.reply_code == 540


def test_immediate_checked_before_the_exchange(broker, unique):
    c = connect(broker.port)
    ch = c.channel()
    ch._impl._send_method(
        pika.spec.Basic.Publish(exchange=unique, routing_key="k", immediate=True),
        (pika.BasicProperties(), b"x"),
    )
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        wait_until(c, lambda: False, what="connection.close")
    assert ei.value.reply_code == 540


# ---- basic.consume / cancel ----

def test_consume_delivery_tags_and_order(conn, ch, unique):
    _queue(ch, unique, _bodies(3))
    tag, got = collect(conn, ch, unique, 3, auto_ack=True)
    assert [b for _m, _p, b in got] == _bodies(3)
    assert [m.delivery_tag for m, _p, _b in got] == [1, 2, 3]
    assert all(m.consumer_tag == tag and not m.redelivered for m, _p, _b in got)
    assert message_count(ch, unique) == 0


def test_consume_server_generated_tag(conn, ch, unique):
    _queue(ch, unique)
    oks = []
    # pika always makes up a tag itself; send an empty one as other clients do
    ch._impl._rpc(pika.spec.Basic.Consume(queue=unique, consumer_tag=""),
                  lambda frame: oks.append(frame.method), [pika.spec.Basic.ConsumeOk])
    wait_until(conn, lambda: oks, what="consume-ok")
    assert oks[0].consumer_tag.startswith("amq.ctag-")
    assert len(oks[0].consumer_tag) > len("amq.ctag-") + 10


def test_consume_with_own_tag_and_reused_tag(conn, ch, unique):
    _queue(ch, unique)
    assert ch.basic_consume(unique, lambda *a: None, consumer_tag="mine") == "mine"
    # pika refuses a duplicate tag on its side already; the server's 530 is tested elsewhere


def test_exclusive_consume(broker, conn, unique):
    ch = conn.channel()
    _queue(ch, unique)
    ch.basic_consume(unique, lambda *a: None, exclusive=True)
    err = expect_channel_close(403, conn.channel().basic_consume, unique, lambda *a: None)
    assert "exclusive" in err.reply_text
    with connection(broker.port) as other:
        expect_channel_close(403, other.channel().basic_consume, unique, lambda *a: None)


def test_exclusive_consume_refused_when_others_consume(conn, unique):
    ch = conn.channel()
    _queue(ch, unique)
    ch.basic_consume(unique, lambda *a: None)
    expect_channel_close(403, conn.channel().basic_consume, unique, lambda *a: None,
                         exclusive=True)


def test_no_local_is_accepted(conn, unique, monkeypatch):
    class NoLocalConsume(pika.spec.Basic.Consume):
        def __init__(self, *a, **kw):
            kw["no_local"] = True
            super().__init__(*a, **kw)

    monkeypatch.setattr(pika.spec.Basic, "Consume", NoLocalConsume)
    ch = conn.channel()
    _queue(ch, unique, [b"a"])
    _tag, got = collect(conn, ch, unique, 1, auto_ack=True)
    assert got[0][2] == b"a"


def test_consume_missing_queue_is_404(ch, unique):
    expect_channel_close(404, ch.basic_consume, unique, lambda *a: None)


def test_cancel_stops_deliveries(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, [b"1"])
    tag, got = collect(conn, ch, unique, 1, auto_ack=True)
    ch.basic_cancel(tag)
    ch.basic_publish("", unique, b"2")
    assert message_count(ch, unique) == 1
    assert len(got) == 1
    ch.basic_cancel("no-such-tag")  # RabbitMQ answers cancel-ok for an unknown tag


def test_cancel_notification_when_queue_deleted(broker, conn, unique):
    ch = conn.channel()
    _queue(ch, unique)
    cancelled = []
    ch.add_on_cancel_callback(lambda f: cancelled.append(f.method.consumer_tag))
    tag = ch.basic_consume(unique, lambda *a: None)
    ch2 = conn.channel()
    ch2.queue_delete(unique)
    wait_until(conn, lambda: cancelled, what="basic.cancel")
    assert cancelled == [tag]


def test_round_robin_among_consumers(conn, unique):
    ch = conn.channel()
    _queue(ch, unique)
    got: dict[str, list] = {}
    tags = []
    for _ in range(3):
        tags.append(ch.basic_consume(
            unique, lambda _c, m, _p, b: got.setdefault(m.consumer_tag, []).append(b),
            auto_ack=True))
    publish_all(ch, "", unique, _bodies(12))
    wait_until(conn, lambda: sum(map(len, got.values())) == 12)
    assert sorted(map(len, got.values())) == [4, 4, 4]
    # strict rotation: each consumer gets every third message
    firsts = sorted(got.values(), key=lambda bs: bs[0])
    for k, bodies in enumerate(firsts):
        assert bodies == _bodies(12)[k::3]


# ---- basic.get ----

def test_get_ok_and_get_empty(ch, unique):
    _queue(ch, unique, _bodies(3))
    counts = []
    for i in range(3):
        method, _props, body = ch.basic_get(unique, auto_ack=True)
        assert body == f"m{i}".encode()
        assert method.delivery_tag == i + 1
        counts.append(method.message_count)
    assert counts == [2, 1, 0]
    assert ch.basic_get(unique) == (None, None, None)


def test_get_missing_queue_is_404(ch, unique):
    expect_channel_close(404, ch.basic_get, unique)


# ---- ack / nack / reject ----

def test_ack_single_and_multiple(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, _bodies(5))
    tags = [ch.basic_get(unique)[0].delivery_tag for _ in range(5)]
    assert tags == [1, 2, 3, 4, 5]
    ch.basic_ack(2)
    ch.basic_ack(4, multiple=True)  # 1, 3, 4
    ch.close()
    ch = conn.channel()
    assert drain_get(ch, unique) == [b"m4"]


def test_ack_all_with_tag_zero(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, _bodies(3))
    for _ in range(3):
        ch.basic_get(unique)
    ch.basic_ack(0, multiple=True)
    ch.close()
    assert message_count(conn.channel(), unique) == 0


@pytest.mark.parametrize("op", ["ack", "nack", "reject", "ack-twice", "ack-multiple"])
def test_unknown_delivery_tag_is_406(conn, unique, op):
    ch = conn.channel()
    _queue(ch, unique, [b"x"])
    ch.basic_get(unique)
    if op == "ack":
        ch.basic_ack(7)
    elif op == "nack":
        ch.basic_nack(7)
    elif op == "reject":
        ch.basic_reject(7)
    elif op == "ack-twice":
        ch.basic_ack(1)
        ch.basic_ack(1)
    else:
        ch.basic_ack(1)
        ch.basic_ack(1, multiple=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(unique, passive=True)
    assert ei.value.reply_code == 406
    assert "unknown delivery tag" in ei.value.reply_text


def test_ack_of_autoack_delivery_is_406(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, [b"x"])
    ch.basic_get(unique, auto_ack=True)
    ch.basic_ack(1)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(unique, passive=True)
    assert ei.value.reply_code == 406


def test_reject_and_nack_without_requeue_drop(ch, unique):
    _queue(ch, unique, _bodies(4))
    tags = [ch.basic_get(unique)[0].delivery_tag for _ in range(4)]
    ch.basic_reject(tags[0], requeue=False)
    ch.basic_nack(tags[2], multiple=True, requeue=False)
    assert message_count(ch, unique) == 0
    ch.basic_nack(tags[3], requeue=False)
    assert drain_get(ch, unique) == []


def test_requeued_messages_keep_their_position(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, _bodies(5))
    got = [ch.basic_get(unique) for _ in range(3)]
    assert [b for _m, _p, b in got] == [b"m0", b"m1", b"m2"]
    ch.basic_reject(got[1][0].delivery_tag, requeue=True)
    m, _p, b = ch.basic_get(unique)
    assert (b, m.redelivered, m.message_count) == (b"m1", True, 2)
    ch.basic_nack(0, multiple=True, requeue=True)  # m0, m2 and m1 again
    out = []
    while True:
        m, _p, b = ch.basic_get(unique, auto_ack=True)
        if m is None:
            break
        out.append((b, m.redelivered))
    assert out == [(b"m0", True), (b"m1", True), (b"m2", True), (b"m3", False),
                   (b"m4", False)]


def test_nack_requeue_redelivers_to_consumer(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, [b"a", b"b"])
    got = []

    def on_msg(c, m, _p, b):
        got.append((b, m.redelivered))
        if not m.redelivered:
            c.basic_nack(m.delivery_tag, requeue=True)
        else:
            c.basic_ack(m.delivery_tag)

    ch.basic_consume(unique, on_msg)
    wait_until(conn, lambda: len(got) >= 4)
    assert sorted(got) == [(b"a", False), (b"a", True), (b"b", False), (b"b", True)]
    assert message_count(ch, unique) == 0


# ---- basic.recover ----

def test_recover_requeues_unacked(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, _bodies(3))
    tag, got = collect(conn, ch, unique, 3)
    ch.basic_ack(got[1][0].delivery_tag)
    ch.basic_recover(requeue=True)
    wait_until(conn, lambda: len(got) == 5)
    again = got[3:]
    assert [(b, m.redelivered) for m, _p, b in again] == [(b"m0", True), (b"m2", True)]
    assert [m.delivery_tag for m, _p, _b in again] == [4, 5]
    ch.basic_ack(5, multiple=True)
    assert message_count(ch, unique) == 0


# ---- basic.qos ----

def test_prefetch_per_consumer(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, _bodies(10))
    ch.basic_qos(prefetch_count=3)
    tag, got = collect(conn, ch, unique, 3)
    assert message_count(ch, unique) == 7  # exactly 3 left the queue
    assert len(got) == 3
    ch.basic_ack(got[0][0].delivery_tag)
    wait_until(conn, lambda: len(got) == 4)
    assert message_count(ch, unique) == 6
    ch.basic_ack(got[3][0].delivery_tag, multiple=True)
    wait_until(conn, lambda: len(got) == 7)
    assert message_count(ch, unique) == 3
    assert [b for _m, _p, b in got] == _bodies(7)


def test_prefetch_applies_to_consumers_created_after_qos(conn, unique):
    ch = conn.channel()
    q1 = _queue(ch, unique + "-1", _bodies(5))
    q2 = _queue(ch, unique + "-2", _bodies(5))
    ch.basic_qos(prefetch_count=2)
    _t1, g1 = collect(conn, ch, q1, 2)
    ch.basic_qos(prefetch_count=1)
    _t2, g2 = collect(conn, ch, q2, 1)
    assert (message_count(ch, q1), message_count(ch, q2)) == (3, 4)
    assert (len(g1), len(g2)) == (2, 1)


def test_prefetch_global_limits_the_channel(conn, unique):
    ch = conn.channel()
    q1 = _queue(ch, unique + "-1", _bodies(10))
    q2 = _queue(ch, unique + "-2", _bodies(10))
    ch.basic_qos(prefetch_count=4, global_qos=True)
    got = []
    ch.basic_consume(q1, lambda _c, m, _p, b: got.append(m))
    ch.basic_consume(q2, lambda _c, m, _p, b: got.append(m))
    wait_until(conn, lambda: len(got) >= 4)
    assert message_count(ch, q1) + message_count(ch, q2) == 16
    assert len(got) == 4
    ch.basic_ack(got[0].delivery_tag)
    ch.basic_ack(got[1].delivery_tag)
    wait_until(conn, lambda: len(got) >= 6)
    assert message_count(ch, q1) + message_count(ch, q2) == 14
    assert len(got) == 6


def test_prefetch_global_and_per_consumer_together(conn, unique):
    ch = conn.channel()
    q1 = _queue(ch, unique + "-1", _bodies(10))
    q2 = _queue(ch, unique + "-2", _bodies(10))
    ch.basic_qos(prefetch_count=5, global_qos=True)
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume(q1, lambda _c, m, _p, b: got.append(m))
    ch.basic_consume(q2, lambda _c, m, _p, b: got.append(m))
    wait_until(conn, lambda: len(got) >= 4)
    assert (message_count(ch, q1), message_count(ch, q2)) == (8, 8)
    assert len(got) == 4


def test_noack_consumer_ignores_prefetch(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, _bodies(10))
    ch.basic_qos(prefetch_count=1)
    _tag, got = collect(conn, ch, unique, 10, auto_ack=True)
    assert len(got) == 10


def test_prefetch_size_is_540(broker):
    with connection(broker.port) as c:
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
            c.channel().basic_qos(prefetch_size=1)
        assert ei.value.reply_code == 540


# ---- closing requeues ----

def test_channel_close_requeues_unacked_in_order(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, _bodies(6))
    _tag, got = collect(conn, ch, unique, 6)
    ch.basic_ack(got[2][0].delivery_tag)
    ch.close()
    ch = conn.channel()
    out = []
    while True:
        m, _p, b = ch.basic_get(unique, auto_ack=True)
        if m is None:
            break
        out.append((b, m.redelivered))
    assert out == [(b, True) for b in (b"m0", b"m1", b"m3", b"m4", b"m5")]


def test_connection_close_requeues_unacked_to_other_consumer(broker, conn, unique):
    ch = conn.channel()
    _queue(ch, unique, _bodies(4))
    other = connect(broker.port)
    och = other.channel()
    _tag, got1 = collect(other, och, unique, 4)
    och.basic_ack(got1[1][0].delivery_tag)
    ch.basic_publish("", unique, b"m4")
    assert message_count(ch, unique) == 0  # m4 went to the consumer too
    other.close()
    _tag, got = collect(conn, ch, unique, 4)
    assert [(b, m.redelivered) for m, _p, b in got] == [
        (b"m0", True), (b"m2", True), (b"m3", True), (b"m4", True)]


def test_channel_error_requeues_unacked(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, _bodies(2))
    _tag, _got = collect(conn, ch, unique, 2)
    ch.basic_ack(99)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.queue_declare(unique, passive=True)
    ch = conn.channel()
    assert [b for b in drain_get(ch, unique)] == [b"m0", b"m1"]


def test_consumer_sees_redelivered_after_requeue(conn, unique):
    ch = conn.channel()
    _queue(ch, unique, [b"x"])
    m, _p, _b = ch.basic_get(unique)
    assert not m.redelivered
    ch.basic_reject(m.delivery_tag, requeue=True)
    _tag, got = collect(conn, ch, unique, 1)
    assert got[0][0].redelivered and got[0][2] == b"x"
    assert got[0][0].delivery_tag == 2


def test_many_channels_one_connection(conn, unique):
    chans = [conn.channel() for _ in range(20)]
    _queue(chans[0], unique)
    for i, c in enumerate(chans):
        c.basic_publish("", unique, str(i).encode())
    assert message_count(chans[0], unique) == 20
    assert sorted(drain_get(chans[-1], unique), key=int) == [str(i).encode() for i in range(20)]
