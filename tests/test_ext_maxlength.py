"""Queue length limits (https://www.rabbitmq.com/docs/maxlength): x-max-length,
x-max-length-bytes (body bytes of ready messages), x-overflow = drop-head (default; the
dropped heads are dead-lettered with reason maxlen), reject-publish (basic.nack in confirm
mode, silently dropped otherwise, never a basic.return) and reject-publish-dlx (also
dead-lettered). Only ready messages count. Validation texts are RabbitMQ's."""

from __future__ import annotations

import decimal

import pika
import pika.exceptions
import pytest
from amqp_helpers import collect, connection, drain_get, expect_channel_close, wait_until
from ext_helpers import poll_get, wait_count


def _count(ch, q):
    return ch.queue_declare(q, passive=True).method.message_count


def test_drop_head_keeps_newest(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length": 3})
    for i in range(10):
        ch.basic_publish("", unique, b"%d" % i)
    assert drain_get(ch, unique) == [b"7", b"8", b"9"]


def test_max_length_zero_drops_everything(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length": 0})
    ch.basic_publish("", unique, b"x")
    assert _count(ch, unique) == 0


def test_max_length_zero_still_delivers_to_consumer(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length": 0})
    _tag, got = collect(conn, ch, unique, 0, auto_ack=True)
    ch.basic_publish("", unique, b"direct")
    wait_until(conn, lambda: len(got) == 1)


def test_only_ready_messages_count(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length": 2})
    ch.basic_qos(prefetch_count=2)
    _tag, got = collect(conn, ch, unique, 0)
    for i in range(4):
        ch.basic_publish("", unique, b"%d" % i)
    wait_until(conn, lambda: len(got) == 2)
    assert _count(ch, unique) == 2  # 2 unacked + 2 ready: nothing dropped
    for m, _p, _b in got:
        ch.basic_ack(m.delivery_tag)
    wait_until(conn, lambda: len(got) == 4)
    assert [b for _, _, b in got] == [b"0", b"1", b"2", b"3"]


def test_max_length_bytes(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):  # 12 bytes > 10: the head goes
        ch.basic_publish("", unique, body)
    assert drain_get(ch, unique) == [b"bbbb", b"cccc"]
    ch.basic_publish("", unique, b"x" * 11)  # larger than the limit on its own
    assert _count(ch, unique) == 0


def test_both_limits_whichever_first(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length": 5, "x-max-length-bytes": 6})
    for _ in range(4):
        ch.basic_publish("", unique, b"xx")
    assert _count(ch, unique) == 3


def test_requeue_over_limit_drops_head(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length": 2})
    ch.basic_publish("", unique, b"a")
    m, _p, _b = ch.basic_get(unique, auto_ack=False)
    ch.basic_publish("", unique, b"b")
    ch.basic_publish("", unique, b"c")
    ch.basic_nack(m.delivery_tag, requeue=True)  # back at the head: 3 > 2, the head goes
    assert drain_get(ch, unique) == [b"b", b"c"]


def test_drop_head_dead_letters_maxlen(ch, unique):
    dead = unique + "-dead"
    ch.queue_declare(dead)
    ch.queue_declare(unique, arguments={"x-max-length": 1, "x-dead-letter-exchange": "",
                                        "x-dead-letter-routing-key": dead})
    ch.basic_publish("", unique, b"old")
    ch.basic_publish("", unique, b"new")
    m, props, body = poll_get(ch, dead)
    assert body == b"old"
    assert props.headers["x-death"][0]["reason"] == "maxlen"
    assert drain_get(ch, unique) == [b"new"]


# ---- reject-publish ----

def test_reject_publish_nacks_in_confirm_mode(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", unique, b"1")
    ch.basic_publish("", unique, b"2")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", unique, b"3")
    assert drain_get(ch, unique) == [b"1", b"2"]  # the oldest are kept
    ch.basic_publish("", unique, b"4")  # room again: acked
    assert drain_get(ch, unique) == [b"4"]


def test_reject_publish_mixed_confirms_in_order(conn, unique):
    """A batch with a refused publish in the middle: acks before and after, a nack for it."""
    ch = conn.channel()
    ch.queue_declare(unique, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    other = unique + "-other"
    ch.queue_declare(other)
    acks, nacks = [], []

    impl = ch._impl
    impl.confirm_delivery(lambda frame: (acks if isinstance(
        frame.method, pika.spec.Basic.Ack) else nacks).append(frame.method))
    conn.process_data_events(time_limit=0.2)
    impl.basic_publish("", unique, b"1")   # 1 accepted
    impl.basic_publish("", unique, b"2")   # 2 refused
    impl.basic_publish("", other, b"3")    # 3 accepted
    impl.basic_publish("", unique, b"4")   # 4 refused

    def settled():
        tags = set()
        for a in acks + nacks:
            tags.add(a.delivery_tag)
        return max(tags, default=0) >= 4 and len(nacks) == 2
    wait_until(conn, settled, what="confirms")
    assert [n.delivery_tag for n in nacks] == [2, 4]
    assert all(not n.multiple for n in nacks)
    confirmed = set()
    for a in acks:
        confirmed.add(a.delivery_tag)
    assert 1 in confirmed and 3 in confirmed


def test_reject_publish_without_confirms_silently_dropped(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", unique, b"1")
    ch.basic_publish("", unique, b"2", mandatory=True)  # routed, refused: no basic.return
    assert drain_get(ch, unique) == [b"1"]
    assert ch.is_open


def test_reject_publish_bytes(ch, unique):
    ch.queue_declare(unique, arguments={"x-max-length-bytes": 5, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", unique, b"12345")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", unique, b"6")


def test_reject_publish_other_queues_still_get_it(ch, unique):
    ch.exchange_declare(unique, "fanout")
    full, free = unique + "-full", unique + "-free"
    ch.queue_declare(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    ch.queue_declare(free)
    ch.queue_bind(full, unique)
    ch.queue_bind(free, unique)
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish(unique, "", b"x")
    assert _count(ch, free) == 1 and _count(ch, full) == 0


def test_reject_publish_dlx(ch, unique):
    dead = unique + "-dead"
    ch.queue_declare(dead)
    ch.queue_declare(unique, arguments={"x-max-length": 1, "x-overflow": "reject-publish-dlx",
                                        "x-dead-letter-exchange": "",
                                        "x-dead-letter-routing-key": dead})
    ch.confirm_delivery()
    ch.basic_publish("", unique, b"kept")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", unique, b"refused")
    _m, props, body = poll_get(ch, dead)
    assert body == b"refused"
    d = props.headers["x-death"][0]
    assert (d["reason"], d["queue"]) == ("maxlen", unique)
    assert drain_get(ch, unique) == [b"kept"]


def test_reject_publish_persistent_not_recovered(fresh_broker, unique):
    with connection(fresh_broker.port) as c:
        ch = c.channel()
        ch.queue_declare("full", durable=True,
                         arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        ch.confirm_delivery()
        ch.basic_publish("", "full", b"1", pika.BasicProperties(delivery_mode=2))
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", "full", b"2", pika.BasicProperties(delivery_mode=2))
        # drop-head of a journaled message is not recovered either
        ch.queue_declare("dh", durable=True, arguments={"x-max-length": 1})
        ch.basic_publish("", "dh", b"a", pika.BasicProperties(delivery_mode=2))
        ch.basic_publish("", "dh", b"b", pika.BasicProperties(delivery_mode=2))
    assert fresh_broker.stop() == 0
    fresh_broker.start()
    with connection(fresh_broker.port) as c:
        ch = c.channel()
        assert drain_get(ch, "full") == [b"1"]
        assert drain_get(ch, "dh") == [b"b"]


# ---- validation ----

@pytest.mark.parametrize("key, value, text", [
    ("x-max-length", -1, "{value_negative,-1}"),
    ("x-max-length", "10", '"expected integer, got longstr"'),
    ("x-max-length-bytes", -2, "{value_negative,-2}"),
    ("x-max-length-bytes", decimal.Decimal("1.5"), '"expected integer, got decimal"'),
    ("x-overflow", "drop-tail", "invalid_overflow"),
    ("x-overflow", 1, "{unacceptable_type,signedint}"),
], ids=["len-negative", "len-string", "bytes-negative", "bytes-decimal", "overflow-unknown",
        "overflow-int"])
def test_invalid_length_arguments(conn, unique, key, value, text):
    ch = conn.channel()
    e = expect_channel_close(406, ch.queue_declare, unique, arguments={key: value})
    assert e.reply_text == (f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{unique}' "
                            f"in vhost '/': {text}")


def test_overflow_equivalence(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    e = expect_channel_close(406, ch.queue_declare, unique, arguments={"x-max-length": 1})
    assert "inequivalent arg 'x-overflow'" in e.reply_text


def test_celery_style_queue_with_limits(conn, ch, unique):
    """kombu declares task queues with arguments (x-max-length, x-message-ttl, a DLX) and
    consumes with prefetch and acks: a worker sees only what fits and nothing expired."""
    dead = unique + "-dead"
    ch.queue_declare(dead, durable=True)
    ch.queue_declare(unique, durable=True, arguments={
        "x-max-length": 5, "x-message-ttl": 60000, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead})
    for i in range(8):
        ch.basic_publish("", unique, b"task%d" % i, pika.BasicProperties(delivery_mode=2))
    wait_count(ch, dead, 3)
    ch.basic_qos(prefetch_count=5)
    _tag, got = collect(conn, ch, unique, 5)
    assert [b for _, _, b in got] == [b"task%d" % i for i in range(3, 8)]
    for m, _p, _b in got:
        ch.basic_ack(m.delivery_tag)
