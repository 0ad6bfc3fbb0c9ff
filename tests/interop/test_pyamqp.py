"""py-amqp (the transport under kombu and Celery) against syncmq."""

from __future__ import annotations

import pytest

amqp = pytest.importorskip("amqp", reason="py-amqp is not installed (pip install -e '.[interop]')")
from amqp import spec  # noqa: E402


@pytest.fixture
def conn(broker):
    c = amqp.Connection(host=f"127.0.0.1:{broker.port}", userid="guest", password="guest",
                        connect_timeout=10, read_timeout=30)
    c.connect()
    yield c
    if c.connected:
        c.close()


def _drain(conn, until, timeout=30.0):
    """Drain events until ``until()`` is true (each drain is bounded by ``timeout``)."""
    while not until():
        conn.drain_events(timeout=timeout)


def test_server_properties_and_capabilities(conn):
    caps = conn.server_properties["capabilities"]
    for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                "exchange_exchange_bindings", "per_consumer_qos",
                "authentication_failure_close"):
        assert caps[cap] is True, cap


def test_declare_bind_publish_get(conn, unique):
    ch = conn.channel()
    ok = ch.queue_declare(unique, auto_delete=False)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (unique, 0, 0)
    ch.exchange_declare(unique + "-x", "topic", auto_delete=False)
    ch.queue_bind(unique, unique + "-x", "a.*.c")
    props = dict(content_type="text/plain", delivery_mode=2, priority=3,
                 correlation_id="c1", reply_to="r", message_id="m1", type="t", app_id="app",
                 application_headers={"k": "v", "n": 7, "nested": {"x": [1, "two"]}})
    ch.basic_publish(amqp.Message(b"hello", **props), exchange=unique + "-x",
                     routing_key="a.b.c")
    ch.basic_publish(amqp.Message(b"dropped"), exchange=unique + "-x", routing_key="a.b")
    ch.basic_publish(amqp.Message(b"second"), exchange=unique + "-x", routing_key="a.x.c")
    m = ch.basic_get(unique, no_ack=False)
    assert m.body == b"hello"
    assert m.delivery_info["routing_key"] == "a.b.c"
    assert m.delivery_info["exchange"] == unique + "-x"
    assert m.delivery_info["message_count"] == 1
    assert m.delivery_info["redelivered"] is False
    assert m.properties["application_headers"] == {"k": "v", "n": 7,
                                                   "nested": {"x": [1, "two"]}}
    for k in ("content_type", "delivery_mode", "priority", "correlation_id", "reply_to",
              "message_id", "type", "app_id"):
        assert m.properties[k] == props[k], k
    ch.basic_ack(m.delivery_tag)
    m2 = ch.basic_get(unique, no_ack=True)
    assert m2.body == b"second"
    assert ch.basic_get(unique) is None
    ch.queue_unbind(unique, unique + "-x", "a.*.c")
    ch.exchange_delete(unique + "-x")
    assert ch.queue_delete(unique) == 0


def test_consume_ack_qos(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True)
    for i in range(5):
        ch.basic_publish(amqp.Message(str(i).encode()), routing_key=unique)
    ch.basic_qos(0, 2, False)
    got = []
    ch.basic_consume(unique, callback=got.append)
    _drain(conn, lambda: len(got) == 2)
    # prefetch 2: nothing more until an ack; a short bounded drain proves it
    with pytest.raises(TimeoutError):
        conn.drain_events(timeout=0.3)
    assert [m.body for m in got] == [b"0", b"1"]
    ch.basic_ack(got[1].delivery_tag, multiple=True)
    _drain(conn, lambda: len(got) == 4)
    ch.basic_ack(got[3].delivery_tag, multiple=True)
    _drain(conn, lambda: len(got) == 5)
    ch.basic_ack(got[4].delivery_tag)
    assert [m.body for m in got] == [b"0", b"1", b"2", b"3", b"4"]


def test_reject_and_nack_requeue(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=False)
    for b in (b"a", b"b"):
        ch.basic_publish(amqp.Message(b), routing_key=unique)
    m = ch.basic_get(unique)
    ch.basic_reject(m.delivery_tag, requeue=True)
    m = ch.basic_get(unique)
    assert (m.body, m.delivery_info["redelivered"]) == (b"a", True)
    # py-amqp has no basic_nack method; send the frame itself (kombu does the same)
    ch.send_method(spec.Basic.Nack, "Lbb", (m.delivery_tag, False, True))
    m = ch.basic_get(unique)
    assert (m.body, m.delivery_info["redelivered"]) == (b"a", True)
    ch.send_method(spec.Basic.Nack, "Lbb", (m.delivery_tag, False, False))  # drop it
    m = ch.basic_get(unique)
    assert (m.body, m.delivery_info["redelivered"]) == (b"b", False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert ch.basic_get(unique) is None
    ch.queue_delete(unique)


def test_recover_redelivers(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True)
    ch.basic_publish(amqp.Message(b"x"), routing_key=unique)
    got = []
    ch.basic_consume(unique, callback=got.append)
    _drain(conn, lambda: len(got) == 1)
    ch.basic_recover(requeue=True)
    _drain(conn, lambda: len(got) == 2)
    assert got[1].delivery_info["redelivered"] is True
    ch.basic_ack(got[1].delivery_tag)


def test_publisher_confirms(broker, unique):
    c = amqp.Connection(host=f"127.0.0.1:{broker.port}", confirm_publish=True,
                        connect_timeout=10, read_timeout=30)
    c.connect()
    try:
        ch = c.channel()
        ch.queue_declare(unique, auto_delete=False)
        for i in range(20):  # each publish waits for its basic.ack
            ch.basic_publish(amqp.Message(str(i).encode(), delivery_mode=2), routing_key=unique)
        assert ch.queue_declare(unique, passive=True).message_count == 20
        # an unroutable mandatory publish: basic.return, then basic.ack
        returned = []
        ch.events["basic_return"].add(lambda *a: returned.append(a))
        ch.basic_publish(amqp.Message(b"r"), exchange="amq.direct", routing_key="nowhere",
                         mandatory=True)
        assert returned and returned[0][0].reply_code == 312  # NO_ROUTE
        assert returned[0][1:3] == ("amq.direct", "nowhere")
        ch.queue_delete(unique)
    finally:
        c.close()


def test_tx_commit_rollback(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=False)
    ch.tx_select()
    ch.basic_publish(amqp.Message(b"rolled-back"), routing_key=unique)
    ch.tx_rollback()
    ch.basic_publish(amqp.Message(b"committed"), routing_key=unique)
    assert ch.queue_declare(unique, passive=True).message_count == 0
    ch.tx_commit()
    m = ch.basic_get(unique)
    assert m.body == b"committed"
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()  # the ack is forgotten: the message is still unacked
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    assert ch.queue_declare(unique, passive=True).message_count == 0
    ch.queue_delete(unique)


def test_channel_errors(conn, unique):
    ch = conn.channel()
    with pytest.raises(amqp.NotFound) as e:
        ch.queue_declare(unique + "-missing", passive=True)
    assert e.value.reply_code == 404
    assert f"no queue '{unique}-missing' in vhost '/'" in e.value.reply_text
    ch = conn.channel()
    ch.queue_declare(unique, durable=False, auto_delete=False)
    with pytest.raises(amqp.PreconditionFailed) as e:
        ch.queue_declare(unique, durable=True, auto_delete=False)
    assert "inequivalent arg 'durable'" in e.value.reply_text
    ch = conn.channel()
    with pytest.raises(amqp.AccessRefused):
        ch.exchange_declare("amq.mine", "direct")
    ch = conn.channel()
    with pytest.raises(amqp.NotFound):
        ch.basic_publish(amqp.Message(b"x"), exchange=unique + "-nox", routing_key="")
        ch.basic_qos(0, 1, False)  # a synchronous round trip surfaces the async close
    # the connection survived every channel error
    ch = conn.channel()
    ch.queue_delete(unique)


def test_exclusive_queue_locked(broker, conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, exclusive=True)
    other = amqp.Connection(host=f"127.0.0.1:{broker.port}", connect_timeout=10,
                            read_timeout=30)
    other.connect()
    try:
        with pytest.raises(amqp.ResourceLocked):
            other.channel().queue_declare(unique, passive=True)
    finally:
        other.close()


def test_consumer_cancel_notify(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=False)
    cancelled = []
    tag = ch.basic_consume(unique, callback=lambda m: None, on_cancel=cancelled.append)
    conn.channel().queue_delete(unique)
    _drain(conn, lambda: cancelled)
    assert cancelled == [tag]


def test_connection_close_hard_error(conn):
    ch = conn.channel()
    with pytest.raises(amqp.exceptions.InvalidCommand) as e:
        ch.exchange_declare("x-bad-type", "no-such-type")
    assert e.value.reply_code == 503
    assert not conn.connected  # a hard error closes the connection
