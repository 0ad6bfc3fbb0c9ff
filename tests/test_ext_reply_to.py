"""Direct reply-to (https://www.rabbitmq.com/docs/direct-reply-to; rabbit_channel's texts):
consume from the amq.rabbitmq.reply-to pseudo-queue in no-ack mode; a publish from that channel
with reply_to=amq.rabbitmq.reply-to gets it rewritten to amq.rabbitmq.reply-to.<suffix>; a
publish to the default exchange with that key goes straight to the consuming channel."""

from __future__ import annotations

import time

import pika
import pika.exceptions
from amqp_helpers import TIMEOUT, connection, expect_channel_close, wait_until

REPLY_TO = "amq.rabbitmq.reply-to"


def pump(conns, cond):
    """Pump every connection (RPC server and client) until ``cond()``; bounded."""
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        for c in conns:
            c.process_data_events(time_limit=0.01)


def _server(conn, unique):
    """An RPC server on its own channel: answers each request on its reply_to."""
    ch = conn.channel()
    ch.queue_declare(unique)
    seen = []

    def on_request(c, method, props, body):
        seen.append(props.reply_to)
        c.basic_publish("", props.reply_to, b"re:" + body,
                        pika.BasicProperties(correlation_id=props.correlation_id))
        c.basic_ack(method.delivery_tag)

    ch.basic_consume(unique, on_request)
    return seen


def test_capability_advertised(conn):
    caps = conn._impl.server_capabilities
    assert caps["direct_reply_to"] is True
    assert caps["consumer_priorities"] is True


def test_rpc_round_trip(broker, conn, unique):
    seen = _server(conn, unique)
    with connection(broker.port) as client:
        ch = client.channel()
        replies = []
        tag = ch.basic_consume(REPLY_TO, lambda c, m, p, b: replies.append((m, p, b)),
                               auto_ack=True)
        for i in range(3):
            ch.basic_publish("", unique, b"%d" % i,
                             pika.BasicProperties(reply_to=REPLY_TO, correlation_id=str(i)))
        pump((conn, client), lambda: len(replies) == 3 and len(seen) == 3)
        pumped = [b for _, _, b in replies]
        assert pumped == [b"re:0", b"re:1", b"re:2"]
        assert [p.correlation_id for _, p, _ in replies] == ["0", "1", "2"]
        # the server saw the rewritten address, the same for every request of the channel
        assert len(set(seen)) == 1
        addr = seen[0]
        assert addr.startswith(REPLY_TO + ".") and len(addr) > len(REPLY_TO) + 1
        m = replies[0][0]
        assert (m.consumer_tag, m.exchange, m.routing_key, m.redelivered) == (tag, "", addr,
                                                                            False)
        # the reply address can be declared passively while the consumer exists
        ok = conn.channel().queue_declare(addr, passive=True)
        assert (ok.method.message_count, ok.method.consumer_count) == (0, 1)


def test_reply_to_needs_no_ack(conn):
    ch = conn.channel()
    e = expect_channel_close(406, ch.basic_consume, REPLY_TO, lambda *a: None, auto_ack=False)
    assert e.reply_text == "PRECONDITION_FAILED - reply consumer cannot acknowledge"


def test_second_reply_consumer_on_channel(conn):
    ch = conn.channel()
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    e = expect_channel_close(406, ch.basic_consume, REPLY_TO, lambda *a: None, auto_ack=True)
    assert e.reply_text == "PRECONDITION_FAILED - reply consumer already set"


def test_publish_with_reply_to_without_consumer(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"x", pika.BasicProperties(reply_to=REPLY_TO))
    e = expect_channel_close(406, ch.queue_declare, unique, passive=True)
    assert e.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


def test_reply_to_other_than_pseudo_queue_untouched(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"x", pika.BasicProperties(reply_to="my-queue"))
    _m, props, _b = ch.basic_get(unique, auto_ack=True)
    assert props.reply_to == "my-queue"


def test_cancel_then_replies_dropped(broker, conn, unique):
    seen = _server(conn, unique)
    with connection(broker.port) as client:
        ch = client.channel()
        got = []
        tag = ch.basic_consume(REPLY_TO, lambda *a: got.append(a), auto_ack=True)
        ch.basic_publish("", unique, b"q", pika.BasicProperties(reply_to=REPLY_TO))
        pump((conn, client), lambda: len(got) == 1)
        addr = seen[0]
        ch.basic_cancel(tag)
        # gone: the address no longer exists, replies to it vanish, the server is not hurt
        expect_channel_close(404, client.channel().queue_declare, addr, passive=True)
        pub = conn.channel()
        pub.basic_publish("", addr, b"late")
        pub.queue_declare(unique, passive=True)
        assert pub.is_open
        client.process_data_events(time_limit=0.1)
        assert len(got) == 1


def test_reply_address_gone_with_connection(broker, conn, unique):
    seen = _server(conn, unique)
    client = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    ch = client.channel()
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    ch.basic_publish("", unique, b"q", pika.BasicProperties(reply_to=REPLY_TO))
    wait_until(conn, lambda: len(seen) == 1)
    client.close()
    probe = conn.channel()
    deadline_ok = False
    for _ in range(100):
        try:
            probe.queue_declare(seen[0], passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404
            deadline_ok = True
            break
        conn.sleep(0.02)
    assert deadline_ok


def test_mandatory_reply_to_missing_address_returned(conn):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.basic_publish("", REPLY_TO + ".nosuchchannel", b"x", mandatory=True)
    wait_until(conn, lambda: len(returned) == 1)
    assert returned[0][1].reply_code == 312


def test_declare_pseudo_queue(conn):
    ok = conn.channel().queue_declare(REPLY_TO, passive=True)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (
        REPLY_TO, 0, 1)
    expect_channel_close(404, conn.channel().queue_declare, REPLY_TO + ".bogus", passive=True)


def test_replies_on_two_channels_do_not_mix(broker, conn, unique):
    _server(conn, unique)
    with connection(broker.port) as client:
        got = {1: [], 2: []}
        chans = {}
        for k in (1, 2):
            c = client.channel()
            c.basic_consume(REPLY_TO, lambda _c, _m, _p, b, k=k: got[k].append(b), auto_ack=True)
            chans[k] = c
        for k in (1, 2):
            for i in range(3):
                chans[k].basic_publish("", unique, b"%d-%d" % (k, i),
                                       pika.BasicProperties(reply_to=REPLY_TO))
        pump((conn, client), lambda: len(got[1]) == 3 and len(got[2]) == 3)
        assert got[1] == [b"re:1-%d" % i for i in range(3)]
        assert got[2] == [b"re:2-%d" % i for i in range(3)]


def test_replies_to_a_client_that_does_not_read_are_bounded(broker_factory, unique):
    """Issue #19: a reply consumer whose connection is over the output bound
    (--max-pending-output) gets no more replies; they are dropped (returned when
    mandatory) instead of being buffered without limit. Everyone else is served."""
    import amqp_raw

    from syncmq.wire import _spec

    b = broker_factory("--max-pending-output", "1MiB")
    requester = amqp_raw.connect(b.port)
    requester.open_channel(1)
    requester.send_method(1, _spec.Basic.Consume(queue=REPLY_TO, no_ack=True))
    requester.expect_method(1, _spec.Basic.ConsumeOk)
    requester.send_method(1, _spec.Queue.Declare(queue=unique))
    requester.expect_method(1, _spec.Queue.DeclareOk)
    requester.send_method(1, _spec.Basic.Publish(exchange="", routing_key=unique))
    requester.send_content(1, b"request", _spec.BasicProperties(reply_to=REPLY_TO).encode())
    # the requester never reads from now on
    with connection(b.port) as conn:
        ch = conn.channel()
        wait_until(conn, lambda: ch.queue_declare(unique, passive=True).method.message_count)
        _m, props, _body = ch.basic_get(unique, auto_ack=True)
        returned = []
        ch.add_on_return_callback(lambda *a: returned.append(a[1].reply_code))
        body = b"r" * (64 * 1024)
        n = 400  # 25 MiB: far over the 1 MiB bound plus the kernel's socket buffers
        for _ in range(n):
            ch.basic_publish("", props.reply_to, body, mandatory=True)
        wait_until(conn, lambda: len(returned) > n // 2)
        assert set(returned) == {312}
        # the broker still answers everyone (this connection included)
        assert ch.queue_declare(unique, passive=True).method.message_count == 0
    requester.close()
