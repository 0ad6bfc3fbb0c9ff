"""Publisher confirms and transactions against a real broker through pika."""

from __future__ import annotations

import pika
import pika.exceptions
import pika.spec
import pytest
from amqp_helpers import (
    connection,
    drain_get,
    expect_channel_close,
    message_count,
    publish_all,
    wait_until,
)


def _bodies(n, prefix="m"):
    return [f"{prefix}{i}".encode() for i in range(n)]


# ---- publisher confirms ----

def test_confirmed_publish(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    ch.confirm_delivery()
    for b in _bodies(5):
        ch.basic_publish("", unique, b)  # raises unless acked
    assert drain_get(ch, unique) == _bodies(5)


def test_confirm_unroutable_mandatory_raises(conn, unique):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as ei:
        ch.basic_publish("amq.direct", unique, b"lost", mandatory=True)
    (returned,) = ei.value.messages
    assert returned.method.reply_code == 312
    assert returned.body == b"lost"
    # unroutable but not mandatory: still confirmed (acked)
    ch.basic_publish("amq.direct", unique, b"dropped")
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"ok", mandatory=True)
    assert drain_get(ch, unique) == [b"ok"]


def test_confirms_cover_every_publish_once_with_multiple(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    impl = ch._impl  # publish without waiting for each ack, as pipelining clients do
    acks: list = []
    selected = []
    impl.confirm_delivery(ack_nack_callback=lambda f: acks.append(f.method),
                          callback=lambda _f: selected.append(True))
    wait_until(conn, lambda: selected, what="confirm.select-ok")
    n = 500
    for b in _bodies(n):
        impl.basic_publish("", unique, b)
    wait_until(conn, lambda: acks and acks[-1].delivery_tag == n, what="all confirms")
    assert all(isinstance(a, pika.spec.Basic.Ack) for a in acks)
    covered = []
    last = 0
    for a in acks:
        assert a.delivery_tag > last
        if a.multiple:
            covered.extend(range(last + 1, a.delivery_tag + 1))
        else:
            assert a.delivery_tag == last + 1
            covered.append(a.delivery_tag)
        last = a.delivery_tag
    assert covered == list(range(1, n + 1))
    assert any(a.multiple for a in acks)
    assert message_count(ch, unique) == n


def test_confirm_select_is_idempotent(conn, unique):
    ch = conn.channel()
    ch.confirm_delivery()
    ch._impl._rpc(pika.spec.Confirm.Select(), None, [pika.spec.Confirm.SelectOk])
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"x")
    assert message_count(ch, unique) == 1


def test_confirm_then_tx_is_406(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    expect_channel_close(406, ch.tx_select)


def test_tx_then_confirm_is_406(conn):
    ch = conn.channel()
    ch.tx_select()
    expect_channel_close(406, ch.confirm_delivery)


# ---- transactions ----

def test_tx_commit_publishes_atomically(broker, conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    ch.tx_select()
    publish_all(ch, "", unique, _bodies(3))
    with connection(broker.port) as other:
        och = other.channel()
        assert message_count(och, unique) == 0
        ch.tx_commit()
        assert message_count(och, unique) == 3
    assert drain_get(ch, unique) == _bodies(3)


def test_tx_rollback_discards_publishes(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    ch.tx_select()
    publish_all(ch, "", unique, _bodies(3))
    ch.tx_rollback()
    ch.tx_commit()  # nothing left to commit
    assert message_count(ch, unique) == 0
    publish_all(ch, "", unique, [b"after"])
    ch.tx_commit()
    assert drain_get(ch, unique) == [b"after"]


def test_tx_acks_applied_on_commit(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    publish_all(ch, "", unique, _bodies(4))
    ch.tx_select()
    tags = [ch.basic_get(unique)[0].delivery_tag for _ in range(4)]
    ch.basic_ack(tags[1], multiple=True)  # m0, m1
    ch.basic_reject(tags[2], requeue=True)  # m2 back
    ch.basic_nack(tags[3], requeue=False)  # m3 dropped
    assert message_count(ch, unique) == 0  # nothing applied yet
    ch.tx_commit()
    m, _p, b = ch.basic_get(unique, auto_ack=True)
    assert (b, m.redelivered, m.message_count) == (b"m2", True, 0)
    ch.tx_commit()
    ch.close()
    assert message_count(conn.channel(), unique) == 0


def test_tx_rollback_keeps_acked_messages_unacked(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    publish_all(ch, "", unique, _bodies(2))
    ch.tx_select()
    t1 = ch.basic_get(unique)[0].delivery_tag
    t2 = ch.basic_get(unique)[0].delivery_tag
    ch.basic_ack(t1)
    ch.tx_rollback()
    # the ack was discarded: both are still unacked and may be acked again
    ch.basic_ack(t2)
    ch.tx_commit()
    ch.close()  # t1 comes back
    ch = conn.channel()
    m, _p, b = ch.basic_get(unique, auto_ack=True)
    assert (b, m.redelivered, m.message_count) == (b"m0", True, 0)


def test_tx_double_ack_is_406(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    publish_all(ch, "", unique, _bodies(2))
    ch.tx_select()
    t1 = ch.basic_get(unique)[0].delivery_tag
    ch.basic_ack(t1)
    ch.basic_ack(t1)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.tx_commit()
    assert ei.value.reply_code == 406
    assert "unknown delivery tag" in ei.value.reply_text
    # the channel closed: nothing of the tx was applied and m0 is back in the queue
    assert drain_get(conn.channel(), unique) == [b"m0", b"m1"]


def test_tx_unknown_tag_is_406(conn, unique):
    ch = conn.channel()
    ch.tx_select()
    ch.basic_ack(3)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.tx_commit()
    assert ei.value.reply_code == 406


def test_tx_mandatory_return_on_commit(conn, unique):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda _c, m, _p, b: returned.append((m.reply_code, b)))
    ch.tx_select()
    ch.basic_publish("amq.direct", unique, b"lost", mandatory=True)
    ch.tx_commit()
    wait_until(conn, lambda: returned, what="basic.return")
    assert returned == [(312, b"lost")]


def test_commit_and_rollback_without_select_are_406(conn):
    expect_channel_close(406, conn.channel().tx_commit)
    expect_channel_close(406, conn.channel().tx_rollback)


def test_tx_publish_then_close_discards(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    ch.tx_select()
    publish_all(ch, "", unique, _bodies(2))
    ch.close()
    assert message_count(conn.channel(), unique) == 0
