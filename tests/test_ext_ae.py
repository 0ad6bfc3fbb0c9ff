"""Alternate exchanges (https://www.rabbitmq.com/docs/ae; rabbit_exchange:route): a message
that an exchange's own bindings route nowhere goes to its ``alternate-exchange``; mandatory
messages are returned only if the AE routes them nowhere either; AEs chain, loops terminate,
a missing AE is ignored; with exchange-to-exchange bindings each exchange's AE applies to what
that exchange itself fails to route."""

from __future__ import annotations

from amqp_helpers import connection, drain_get, expect_channel_close, wait_until


def _count(ch, q):
    return ch.queue_declare(q, passive=True).method.message_count


def _ae_setup(ch, unique):
    ae, main = unique + "-ae", unique + "-main"
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": ae})
    ch.queue_declare(unique + "-unrouted")
    ch.queue_bind(unique + "-unrouted", ae)
    ch.queue_declare(unique + "-routed")
    ch.queue_bind(unique + "-routed", main, "good")
    return ae, main


def test_unroutable_goes_to_ae(ch, unique):
    _ae, main = _ae_setup(ch, unique)
    ch.basic_publish(main, "good", b"routed")
    ch.basic_publish(main, "bad", b"unrouted")
    assert drain_get(ch, unique + "-routed") == [b"routed"]
    m, _p, body = ch.basic_get(unique + "-unrouted", auto_ack=True)
    # delivered with the exchange and routing key it was published with
    assert (m.exchange, m.routing_key, body) == (main, "bad", b"unrouted")


def test_mandatory_not_returned_when_ae_routes(conn, ch, unique):
    _ae, main = _ae_setup(ch, unique)
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.basic_publish(main, "bad", b"x", mandatory=True)
    assert _count(ch, unique + "-unrouted") == 1
    conn.process_data_events(time_limit=0.1)
    assert returned == []


def test_mandatory_returned_when_ae_fails_too(conn, ch, unique):
    ae, main = unique + "-ae", unique + "-main"
    ch.exchange_declare(ae, "direct")  # no bindings
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": ae})
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.basic_publish(main, "k", b"x", mandatory=True)
    wait_until(conn, lambda: len(returned) == 1)
    _ch, method, _props, body = returned[0]
    assert (method.reply_code, method.exchange, method.routing_key, body) == (
        312, main, "k", b"x")


def test_missing_ae_ignored(conn, ch, unique):
    main = unique + "-main"
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": unique + "-nope"})
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.basic_publish(main, "k", b"x", mandatory=True)
    wait_until(conn, lambda: len(returned) == 1)


def test_ae_chain_and_loop(ch, unique):
    a, b, c = (f"{unique}-{x}" for x in "abc")
    ch.exchange_declare(c, "fanout")
    ch.exchange_declare(b, "direct", arguments={"alternate-exchange": c})
    ch.exchange_declare(a, "direct", arguments={"alternate-exchange": b})
    q = unique + "-end"
    ch.queue_declare(q)
    ch.queue_bind(q, c)
    ch.basic_publish(a, "k", b"chained")
    assert drain_get(ch, q) == [b"chained"]
    # a loop of AEs: x -> y -> x; nothing bound: terminates, unroutable
    x, y = unique + "-x", unique + "-y"
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": y})
    ch.exchange_declare(y, "direct", arguments={"alternate-exchange": x})
    ch.basic_publish(x, "k", b"loop")
    assert ch.is_open and _count(ch, q) == 0


def test_ae_to_topic_keeps_routing_key(ch, unique):
    ae, main = unique + "-ae", unique + "-main"
    ch.exchange_declare(ae, "topic")
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": ae})
    q = unique + "-orders"
    ch.queue_declare(q)
    ch.queue_bind(q, ae, "orders.#")
    ch.basic_publish(main, "orders.eu.new", b"o")
    ch.basic_publish(main, "users.new", b"u")
    assert drain_get(ch, q) == [b"o"]


def test_e2e_destination_ae_applies(ch, unique):
    """src -> dst (e2e, matching); dst routes nothing, so dst's AE takes the message; src's AE
    is not consulted since src itself routed it (to dst)."""
    src, dst = unique + "-src", unique + "-dst"
    src_ae, dst_ae = unique + "-src-ae", unique + "-dst-ae"
    for ae in (src_ae, dst_ae):
        ch.exchange_declare(ae, "fanout")
        ch.queue_declare(ae + "-q")
        ch.queue_bind(ae + "-q", ae)
    ch.exchange_declare(src, "direct", arguments={"alternate-exchange": src_ae})
    ch.exchange_declare(dst, "direct", arguments={"alternate-exchange": dst_ae})
    ch.exchange_bind(dst, src, "k")
    ch.basic_publish(src, "k", b"via-dst")
    ch.basic_publish(src, "other", b"via-src")
    assert drain_get(ch, dst_ae + "-q") == [b"via-dst"]
    assert drain_get(ch, src_ae + "-q") == [b"via-src"]


def test_default_exchange_publish_unaffected(ch, unique):
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"x")
    assert drain_get(ch, unique) == [b"x"]


def test_invalid_ae_argument(conn, unique):
    ch = conn.channel()
    e = expect_channel_close(406, ch.exchange_declare, unique, "direct",
                             arguments={"alternate-exchange": 5})
    # RabbitMQ 3.10.8's text (read off it: tests/interop/test_mgmt_types_differential.py
    # compares the management API's, which is the same with type 'long')
    assert e.reply_text == (f"PRECONDITION_FAILED - invalid type 'signedint' for arg "
                            f"'alternate-exchange' in exchange '{unique}' in vhost '/'")


def test_ae_durable_survives_restart(fresh_broker):
    with connection(fresh_broker.port) as c:
        ch = c.channel()
        ch.exchange_declare("ae", "fanout", durable=True)
        ch.exchange_declare("main", "direct", durable=True,
                            arguments={"alternate-exchange": "ae"})
        ch.queue_declare("unrouted", durable=True)
        ch.queue_bind("unrouted", "ae")
    assert fresh_broker.stop() == 0
    fresh_broker.start()
    with connection(fresh_broker.port) as c:
        ch = c.channel()
        ch.basic_publish("main", "anything", b"x")
        assert drain_get(ch, "unrouted") == [b"x"]
