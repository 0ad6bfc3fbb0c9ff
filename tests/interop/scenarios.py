"""Scripted pika sessions for the differential suite (tests/interop/test_differential.py).

Each scenario drives a broker through pika's BlockingConnection and records what a client can
observe — methods, reply codes and texts, message order, delivery flags, properties and
headers — into a transcript. The same scenario runs against syncmq and against a private
RabbitMQ node, and the two transcripts must be equal, except for the scenarios listed in
``KNOWN_DIFFERENCES`` (each explained in docs/compatibility.md), whose transcripts must still
differ (so a fix is noticed and the entry removed).

Names are prefixed per run and normalised in the transcript (``P``), as are server-generated
names (``amq.gen-*``, ``amq.ctag-*``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from decimal import Decimal

import pika
import pika.exceptions as pe
from pika import spec

# How long an expected delivery, return or notification may take: generous, as the suite
# runs on a loaded 2-core machine; a broker that never sends it shows that in the transcript.
WAIT = 30.0


def pump_until(conn: pika.BlockingConnection, cond: Callable[[], bool],
               timeout: float = WAIT) -> None:
    """Process ``conn``'s events until ``cond()`` holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)

SCENARIOS: dict[str, Callable[[Session], None]] = {}

# scenario -> why syncmq differs from RabbitMQ there (mirrored in docs/compatibility.md)
KNOWN_DIFFERENCES: dict[str, str] = {
    "ext_dlx_x_last_death_headers":
        "syncmq also sets RabbitMQ 3.13's x-last-death-reason/queue/exchange headers on "
        "dead-lettered messages; the reference RabbitMQ 3.10.8 does not (additive: clients "
        "of 3.10 ignore them, clients of 3.13+ read them)",
    "perm_refusal_text":
        "RabbitMQ 3.10.8's 403 text leaves the permission out (\"access to queue 'q' in "
        "vhost '/' refused\"); syncmq names it (\"configure access to ...\"), which "
        "says more and which tests/test_security_permissions.py pins",
}


def scenario(fn: Callable[[Session], None]) -> Callable[[Session], None]:
    SCENARIOS[fn.__name__] = fn
    return fn


class Session:
    """One scenario run against one broker: connections, names and the transcript."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port = port
        self.prefix = prefix
        self.transcript: list[tuple] = []
        self.connections: list[pika.BlockingConnection] = []
        # RabbitMQ 3.10.8 leaves the permission out of its 403 text ("access to queue ..."),
        # syncmq names it ("configure access to queue ..."): a known
        # difference (perm_refusal_text); other scenarios compare the rest of the text
        self.drop_permission_word = True

    def params(self, **kw) -> pika.ConnectionParameters:
        kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
        return pika.ConnectionParameters("127.0.0.1", self.port, connection_attempts=1,
                                         socket_timeout=10, blocked_connection_timeout=30,
                                         **kw)

    def connect(self, **kw) -> pika.BlockingConnection:
        c = pika.BlockingConnection(self.params(**kw))
        self.connections.append(c)
        return c

    def channel(self, conn: pika.BlockingConnection | None = None):
        return (conn or self.conn).channel()

    @property
    def conn(self) -> pika.BlockingConnection:
        if not self.connections or not self.connections[0].is_open:
            self.connections.insert(0, pika.BlockingConnection(self.params()))
        return self.connections[0]

    def n(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def rec(self, *item) -> None:
        self.transcript.append(tuple(self.norm(x) for x in item))

    def norm(self, x):
        if isinstance(x, bytes):
            x = x.decode("utf-8", "replace")
        if isinstance(x, str):
            x = x.replace(self.prefix, "P")
            if self.drop_permission_word:
                x = re.sub(r"^ACCESS_REFUSED - (configure|write|read) access",
                           "ACCESS_REFUSED - access", x)
            x = re.sub(r"amq\.gen-[A-Za-z0-9_\-]+", "amq.gen-*", x)
            return re.sub(r"amq\.ctag-[A-Za-z0-9_\-]+", "amq.ctag-*", x)
        if isinstance(x, (list, tuple)):
            return type(x)(self.norm(v) for v in x)
        if isinstance(x, dict):
            return {self.norm(k): self.norm(v) for k, v in sorted(x.items())}
        return x

    def expect_error(self, what: str, fn: Callable[[], object]) -> None:
        """Run ``fn``; record the channel or connection error it ends in (or 'ok')."""
        try:
            fn()
        except pe.ChannelClosedByBroker as e:
            self.rec(what, "channel.close", e.reply_code, e.reply_text)
        except pe.ConnectionClosedByBroker as e:
            self.rec(what, "connection.close", e.reply_code, e.reply_text)
        else:
            self.rec(what, "ok")

    def get(self, ch, queue: str, auto_ack: bool = False):
        m, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if m is None:
            self.rec("get-empty")
            return None
        self.rec("get-ok", body, m.redelivered, m.message_count, m.exchange, m.routing_key)
        return m

    def drain(self, ch, queue: str) -> list:
        bodies = []
        while True:
            m, _, body = ch.basic_get(queue, auto_ack=True)
            if m is None:
                return bodies
            bodies.append((body.decode(), m.redelivered))

    def close(self) -> None:
        for c in self.connections:
            try:
                if c.is_open:
                    c.close()
            except Exception:  # noqa: BLE001 - best effort cleanup of a broken connection
                pass


def run(port: int, prefix: str, name: str) -> list[tuple]:
    return run_fn(port, prefix, SCENARIOS[name])


def run_fn(port: int, prefix: str, fn: Callable[[Session], None]) -> list[tuple]:
    s = Session(port, prefix)
    try:
        fn(s)
    finally:
        s.close()
    return s.transcript


def _publish(ch, rk, body, exchange="", **props):
    ch.basic_publish(exchange, rk, body, pika.BasicProperties(**props) if props else None)


# ------------------------------------------------------------------ channel errors (4xx)

@scenario
def err_404_passive_queue(s):
    s.expect_error("passive queue", lambda: s.channel().queue_declare(s.n("q"), passive=True))


@scenario
def err_404_passive_exchange(s):
    s.expect_error("passive exchange",
                   lambda: s.channel().exchange_declare(s.n("x"), passive=True))


@scenario
def err_404_publish_missing_exchange(s):
    ch = s.channel()

    def go():
        _publish(ch, "rk", b"x", exchange=s.n("nox"))
        ch.queue_declare("", exclusive=True)  # a round trip surfaces the async close
    s.expect_error("publish", go)


@scenario
def err_404_bind_missing(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=True)
    s.expect_error("bind to missing exchange", lambda: ch.queue_bind(s.n("q"), s.n("nox")))
    ch = s.channel()
    s.expect_error("bind missing queue", lambda: ch.queue_bind(s.n("noq"), "amq.direct"))
    ch = s.channel()
    s.expect_error("consume missing queue",
                   lambda: ch.basic_consume(s.n("noq"), lambda *a: None))
    ch = s.channel()
    s.expect_error("get missing queue", lambda: ch.basic_get(s.n("noq")))
    ch = s.channel()
    s.expect_error("purge missing queue", lambda: ch.queue_purge(s.n("noq")))
    ch = s.channel()
    s.expect_error("delete missing queue", lambda: ch.queue_delete(s.n("noq")))
    s.expect_error("delete missing exchange", lambda: ch.exchange_delete(s.n("nox")))


@scenario
def err_406_inequivalent(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), durable=False, auto_delete=True)
    s.expect_error("queue durable", lambda: ch.queue_declare(s.n("q"), durable=True,
                                                             auto_delete=True))
    ch = s.channel()
    s.expect_error("queue auto_delete", lambda: ch.queue_declare(s.n("q"), auto_delete=False))
    ch = s.channel()
    ch.exchange_declare(s.n("x"), "direct", auto_delete=True)
    s.expect_error("exchange type", lambda: ch.exchange_declare(s.n("x"), "topic",
                                                                auto_delete=True))
    ch = s.channel()
    s.expect_error("exchange durable", lambda: ch.exchange_declare(
        s.n("x"), "direct", durable=True, auto_delete=True))
    ch = s.channel()
    ch.exchange_delete(s.n("x"))


@scenario
def err_406_inequivalent_x_args(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=True, arguments={"x-message-ttl": 1000})
    s.expect_error("x-message-ttl changed", lambda: ch.queue_declare(
        s.n("q"), auto_delete=True, arguments={"x-message-ttl": 2000}))
    ch = s.channel()
    s.expect_error("x-message-ttl dropped", lambda: ch.queue_declare(s.n("q"), auto_delete=True))


@scenario
def err_403_reserved_names(s):
    ch = s.channel()
    s.expect_error("amq. exchange", lambda: ch.exchange_declare("amq.P-x", "direct"))
    ch = s.channel()
    s.expect_error("amq. queue", lambda: ch.queue_declare("amq.P-q"))
    ch = s.channel()
    s.expect_error("redeclare amq.direct", lambda: ch.exchange_declare("amq.direct", "direct",
                                                                       durable=True))
    s.expect_error("delete amq.direct", lambda: ch.exchange_delete("amq.direct"))
    ch = s.channel()
    s.expect_error("bind to default exchange", lambda: ch.queue_bind("q", ""))
    ch = s.channel()
    s.expect_error("declare default exchange passive",
                   lambda: ch.exchange_declare("", passive=True))


@scenario
def err_403_internal_exchange(s):
    ch = s.channel()
    ch.exchange_declare(s.n("x"), "fanout", internal=True, auto_delete=False)

    def go():
        _publish(ch, "", b"x", exchange=s.n("x"))
        ch.queue_declare("", exclusive=True)
    s.expect_error("publish to internal", go)
    s.channel().exchange_delete(s.n("x"))


@scenario
def err_405_exclusive_queue(s):
    owner = s.channel()
    owner.queue_declare(s.n("q"), exclusive=True)
    other = s.connect()
    s.expect_error("passive from another connection",
                   lambda: other.channel().queue_declare(s.n("q"), passive=True))
    s.expect_error("consume from another connection",
                   lambda: other.channel().basic_consume(s.n("q"), lambda *a: None))
    s.expect_error("delete from another connection",
                   lambda: other.channel().queue_delete(s.n("q")))
    s.expect_error("redeclare non-exclusive from the owner",
                   lambda: s.channel().queue_declare(s.n("q")))


@scenario
def err_403_exclusive_consumer(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=True)
    ch.basic_consume(s.n("q"), lambda *a: None, exclusive=True)
    s.expect_error("second consumer", lambda: s.channel().basic_consume(s.n("q"),
                                                                        lambda *a: None))
    ch2 = s.channel()
    ch2.queue_declare(s.n("q2"), auto_delete=True)
    ch2.basic_consume(s.n("q2"), lambda *a: None)
    s.expect_error("exclusive on a queue with consumers", lambda: s.channel().basic_consume(
        s.n("q2"), lambda *a: None, exclusive=True))


@scenario
def err_406_unknown_delivery_tag(s):
    ch = s.channel()
    s.expect_error("ack 99", lambda: (ch.basic_ack(99), ch.queue_declare("", exclusive=True)))
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=False)
    _publish(ch, s.n("q"), b"m")
    m = s.get(ch, s.n("q"))

    def double():
        ch.basic_ack(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)
        ch.queue_declare("", exclusive=True)
    s.expect_error("double ack", double)
    ch = s.channel()
    s.expect_error("reject 5", lambda: (ch.basic_reject(5), ch.queue_declare("", exclusive=True)))
    s.channel().queue_delete(s.n("q"))


@scenario
def err_406_delete_if(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=False)
    _publish(ch, s.n("q"), b"m")
    s.expect_error("if_empty", lambda: ch.queue_delete(s.n("q"), if_empty=True))
    ch = s.channel()
    ch.basic_consume(s.n("q"), lambda *a: None)
    s.expect_error("if_unused", lambda: s.channel().queue_delete(s.n("q"), if_unused=True))
    ch.exchange_declare(s.n("x"), "direct", auto_delete=False)
    ch.queue_bind(s.n("q"), s.n("x"), "k")
    s.expect_error("exchange if_unused",
                   lambda: s.channel().exchange_delete(s.n("x"), if_unused=True))
    ch2 = s.channel()
    s.rec("delete", ch2.queue_delete(s.n("q")).method.message_count)
    ch2.exchange_delete(s.n("x"))


@scenario
def err_406_tx_and_confirm_modes(s):
    ch = s.channel()
    s.expect_error("commit without select", ch.tx_commit)
    ch = s.channel()
    s.expect_error("rollback without select", ch.tx_rollback)
    ch = s.channel()
    ch.tx_select()
    s.expect_error("confirm on tx channel", ch.confirm_delivery)
    ch = s.channel()
    ch.confirm_delivery()
    s.expect_error("tx on confirm channel", ch.tx_select)


@scenario
def err_406_user_id_mismatch(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=True)
    _publish(ch, s.n("q"), b"ok", user_id="guest")
    s.get(ch, s.n("q"), auto_ack=True)

    def go():
        _publish(ch, s.n("q"), b"x", user_id="mallory")
        ch.queue_declare("", exclusive=True)
    s.expect_error("user_id mallory", go)


# ------------------------------------------------------------------ connection errors (5xx)

@scenario
def err_503_unknown_exchange_type(s):
    s.expect_error("type nope", lambda: s.channel().exchange_declare(s.n("x"), "nope"))


@scenario
def err_530_consumer_tag_reuse(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=True)
    ch.basic_consume(s.n("q"), lambda *a: None, consumer_tag="tag")
    def reuse():  # pika refuses a duplicate tag itself: send the frame under it
        ch._impl._send_method(spec.Basic.Consume(queue=s.n("q"), consumer_tag="tag"))
        ch.queue_declare("", exclusive=True)
    s.expect_error("reuse", reuse)


@scenario
def err_530_vhost_not_found(s):
    try:
        s.connect(virtual_host="no-such-vhost")
        s.rec("opened")
    except pe.ConnectionClosedByBroker as e:
        s.rec("connection.close", e.reply_code, e.reply_text)
    except pe.AMQPConnectionError as e:  # pika wraps a close during open
        inner = e.args[0] if e.args else e
        s.rec("connection error", getattr(inner, "reply_code", None),
              getattr(inner, "reply_text", type(inner).__name__))


@scenario
def err_403_login_refused(s):
    try:
        s.connect(credentials=pika.PlainCredentials("guest", "wrong"))
        s.rec("opened")
    except pe.ProbableAuthenticationError as e:
        s.rec("probable auth error", str(e))
    except pe.AuthenticationError as e:
        s.rec("authentication error", str(e))


@scenario
def err_540_not_implemented(s):
    s.expect_error("qos prefetch_size", lambda: s.channel().basic_qos(prefetch_size=10))
    ch = s.channel()
    s.expect_error("recover requeue=false", lambda: ch.basic_recover(requeue=False))
    ch = s.channel()

    def immediate():
        ch._impl._send_method(spec.Basic.Publish(exchange="", routing_key="q", immediate=True))
        ch.queue_declare("", exclusive=True)
    s.expect_error("immediate publish", immediate)


@scenario
def err_504_second_channel_open(s):
    ch = s.channel()
    ch._impl._send_method(spec.Channel.Open())
    s.expect_error("second channel.open", lambda: ch.queue_declare("", exclusive=True))


@scenario
def err_505_header_without_method(s):
    from pika import frame
    ch = s.channel()
    s.conn._impl._send_frame(frame.Header(ch.channel_number, 1, pika.BasicProperties()))
    s.expect_error("content header first", lambda: ch.queue_declare("", exclusive=True))


@scenario
def err_406_frame_channel_close_then_reuse(s):
    # a soft error leaves the connection usable: a new channel works
    ch = s.channel()
    s.expect_error("404", lambda: ch.queue_declare(s.n("q"), passive=True))
    ch = s.channel()
    ok = ch.queue_declare(s.n("q"), auto_delete=True)
    s.rec("declare-ok", ok.method.queue, ok.method.message_count, ok.method.consumer_count)


# ------------------------------------------------------------------ routing

def _routing(s, etype, bindings, publishes, arguments_per_binding=None):
    ch = s.channel()
    ch.exchange_declare(s.n("x"), etype, auto_delete=True)
    queues = sorted({q for q, _ in bindings})
    for q in queues:
        ch.queue_declare(s.n(q), exclusive=True)
    for i, (q, key) in enumerate(bindings):
        args = arguments_per_binding[i] if arguments_per_binding else None
        ch.queue_bind(s.n(q), s.n("x"), key, arguments=args)
    for rk, headers in publishes:
        body = f"{rk}|{sorted(headers.items()) if headers else ''}".encode()
        ch.basic_publish(s.n("x"), rk, body, pika.BasicProperties(headers=headers))
    for q in queues:
        s.rec(q, s.drain(ch, s.n(q)))


@scenario
def route_direct(s):
    _routing(s, "direct", [("a", "k1"), ("b", "k1"), ("b", "k2"), ("c", "")],
             [("k1", None), ("k2", None), ("k3", None), ("", None)])


@scenario
def route_fanout(s):
    _routing(s, "fanout", [("a", "x"), ("b", "")], [("anything", None), ("", None)])


@scenario
def route_topic(s):
    _routing(s, "topic",
             [("a", "a.*.c"), ("b", "a.#"), ("c", "#"), ("d", "*.b.*"), ("e", "a.#.c"),
              ("f", "#.c"), ("g", "*"), ("h", "a..c"), ("i", "")],
             [("a.b.c", None), ("a", None), ("a.c", None), ("a.b.b.c", None), ("x.b.y", None),
              ("", None), ("a..c", None), ("c", None)])


@scenario
def route_headers(s):
    _routing(
        s, "headers", [("all", ""), ("any", ""), ("none", ""), ("allx", "")],
        [("", {"a": 1, "b": "two"}), ("", {"a": 1}), ("", {"b": "two", "c": 3}),
         ("", {"a": "1"}), ("", None), ("", {"x-extra": 1, "a": 1, "b": "two"})],
        [{"x-match": "all", "a": 1, "b": "two"}, {"x-match": "any", "a": 1, "b": "two"},
         {}, {"x-match": "all", "a": 1, "x-extra": 1}])


@scenario
def route_exchange_to_exchange(s):
    ch = s.channel()
    ch.exchange_declare(s.n("src"), "topic", auto_delete=True)
    ch.exchange_declare(s.n("mid"), "fanout", auto_delete=True)
    ch.exchange_declare(s.n("loop"), "fanout", auto_delete=True)
    ch.queue_declare(s.n("q"), exclusive=True)
    ch.exchange_bind(s.n("mid"), s.n("src"), "a.#")
    ch.exchange_bind(s.n("loop"), s.n("mid"))
    ch.exchange_bind(s.n("mid"), s.n("loop"))  # a cycle: each message still arrives once
    ch.queue_bind(s.n("q"), s.n("mid"))
    ch.queue_bind(s.n("q"), s.n("src"), "a.b")
    for rk in ("a.b", "a.c", "b"):
        ch.basic_publish(s.n("src"), rk, rk.encode())
    s.rec("q", s.drain(ch, s.n("q")))
    ch.exchange_unbind(s.n("mid"), s.n("src"), "a.#")
    ch.basic_publish(s.n("src"), "a.c", b"after unbind")
    s.rec("q", s.drain(ch, s.n("q")))


@scenario
def route_default_exchange_and_mandatory(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(
        (m.reply_code, m.reply_text, m.exchange, m.routing_key, b)))
    ch.basic_publish("", s.n("q"), b"direct", mandatory=True)
    ch.basic_publish("", s.n("nowhere"), b"lost", mandatory=True)
    ch.basic_publish("amq.fanout", "", b"fanout-unbound", mandatory=True)
    ch.basic_publish("amq.topic", "x", b"not mandatory")
    s.rec("q", s.drain(ch, s.n("q")))  # the round trips bring in the returns
    s.conn.process_data_events(time_limit=0)
    s.rec("returns", returned)


# ------------------------------------------------------------------ queues and deliveries

@scenario
def requeue_order_and_redelivered(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    for i in range(5):
        _publish(ch, s.n("q"), str(i).encode())
    tags = [s.get(ch, s.n("q")).delivery_tag for _ in range(4)]
    ch.basic_reject(tags[2], requeue=True)
    ch.basic_nack(tags[1], multiple=True, requeue=True)  # 0 and 1
    ch.basic_ack(tags[3])
    s.rec("after requeue", s.drain(ch, s.n("q")))


@scenario
def requeue_on_channel_close(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=False)
    for i in range(3):
        _publish(ch, s.n("q"), str(i).encode())
    c2 = s.channel()
    s.get(c2, s.n("q"))
    s.get(c2, s.n("q"))
    c2.close()
    s.rec("after close", s.drain(ch, s.n("q")))
    ch.queue_delete(s.n("q"))


@scenario
def get_message_count_and_empty(s):
    ch = s.channel()
    ok = ch.queue_declare(s.n("q"), exclusive=True)
    s.rec("declare-ok", ok.method.queue, ok.method.message_count, ok.method.consumer_count)
    # confirms: RabbitMQ's queue.declare-ok may not count publishes still on their way to
    # the queue process; once confirmed they are counted
    ch.confirm_delivery()
    for i in range(3):
        _publish(ch, s.n("q"), str(i).encode())
    ok = ch.queue_declare(s.n("q"), passive=True)
    s.rec("passive", ok.method.message_count, ok.method.consumer_count)
    s.get(ch, s.n("q"))
    s.get(ch, s.n("q"), auto_ack=True)
    ok = ch.queue_declare(s.n("q"), passive=True)
    s.rec("passive after gets", ok.method.message_count)  # unacked ones are not counted
    s.rec("purge", ch.queue_purge(s.n("q")).method.message_count)
    s.get(ch, s.n("q"))
    ch.basic_recover(requeue=True)
    s.get(ch, s.n("q"))


@scenario
def consume_prefetch_cancel_recover(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    for i in range(4):
        _publish(ch, s.n("q"), str(i).encode())
    ch.basic_qos(prefetch_count=2)
    got = []
    for m, _p, body in ch.consume(s.n("q"), inactivity_timeout=WAIT):
        got.append((body.decode(), m.redelivered, m.delivery_tag))
        if len(got) == 2:
            break
    s.rec("consumed", got)
    s.rec("cancel", ch.cancel())  # requeues nothing by itself: unacked stay unacked
    ok = ch.queue_declare(s.n("q"), passive=True)
    s.rec("passive", ok.method.message_count, ok.method.consumer_count)
    ch.basic_recover(requeue=True)
    s.rec("after recover", s.drain(ch, s.n("q")))


@scenario
def auto_delete_queue_and_exchange(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=True)
    s.rec("declared, no consumer yet", ch.queue_declare(s.n("q"), passive=True).method.queue)
    tag = ch.basic_consume(s.n("q"), lambda *a: None)
    ch.basic_cancel(tag)
    s.expect_error("after last consumer left", lambda: ch.queue_declare(s.n("q"), passive=True))
    ch = s.channel()
    ch.exchange_declare(s.n("x"), "direct", auto_delete=True)
    ch.queue_declare(s.n("q2"), exclusive=True)
    ch.queue_bind(s.n("q2"), s.n("x"), "k")
    ch.queue_unbind(s.n("q2"), s.n("x"), "k")
    s.expect_error("exchange after last unbind",
                   lambda: ch.exchange_declare(s.n("x"), passive=True))


@scenario
def exclusive_queue_gone_with_connection(s):
    c1 = s.connect()
    ch = c1.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    _publish(ch, s.n("q"), b"m")
    c1.close()
    s.expect_error("after owner closed", lambda: s.channel().queue_declare(s.n("q"),
                                                                           passive=True))


@scenario
def server_named_and_last_queue(s):
    ch = s.channel()
    ok = ch.queue_declare("", exclusive=True)
    s.rec("server named", ok.method.queue)
    _publish(ch, ok.method.queue, b"m")
    # an empty queue name means the channel's last declared queue
    s.rec("purge ''", ch.queue_purge("").method.message_count)
    ch2 = s.channel()
    s.expect_error("'' on a fresh channel", lambda: ch2.queue_purge(""))


@scenario
def cancel_notify_on_queue_delete(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=False)
    events = []
    ch.basic_consume(s.n("q"), lambda *a: None, consumer_tag="ctag")
    ch._impl.add_on_cancel_callback(lambda f: events.append(("basic.cancel",
                                                             f.method.consumer_tag)))
    s.rec("delete", s.channel().queue_delete(s.n("q")).method.message_count)
    pump_until(s.conn, lambda: events)  # RabbitMQ's queue tells the channel after delete-ok
    s.rec("events", events)


@scenario
def properties_and_header_types(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    headers = {"str": "s", "int": 7, "neg": -3, "big": 2 ** 40, "bool": True, "none": None,
               "list": [1, "a", {"n": 1}], "table": {"k": "v"}, "bytes": b"raw",
               "decimal": Decimal("3.14")}
    props = pika.BasicProperties(
        content_type="application/x", content_encoding="gzip", headers=headers,
        delivery_mode=2, priority=5, correlation_id="cid", reply_to="rt", expiration="60000",
        message_id="mid", timestamp=1700000000, type="tp", user_id="guest", app_id="app",
        cluster_id="cl")
    ch.basic_publish("", s.n("q"), b"payload", props)
    m, p, body = ch.basic_get(s.n("q"), auto_ack=True)
    s.rec("body", body)
    s.rec("props", {k: v for k, v in vars(p).items()})


@scenario
def confirms_sequence_and_returns(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", s.n("q"), str(i).encode())
    try:
        ch.basic_publish("", s.n("nowhere"), b"r", mandatory=True)
        s.rec("mandatory", "acked")
    except pe.UnroutableError as e:
        s.rec("mandatory", "returned", [(m.method.reply_code, m.method.reply_text, m.body)
                                        for m in e.messages])
    ch.basic_publish("", s.n("nowhere"), b"not mandatory")
    s.rec("q", s.drain(ch, s.n("q")))
    s.expect_error("publish to missing exchange in confirm mode",
                   lambda: ch.basic_publish(s.n("nox"), "k", b"x"))


@scenario
def tx_publish_ack_rollback_commit(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    ch.tx_select()
    _publish(ch, s.n("q"), b"a")
    ch.tx_rollback()
    _publish(ch, s.n("q"), b"b")
    _publish(ch, s.n("q"), b"c")
    s.rec("before commit", ch.queue_declare(s.n("q"), passive=True).method.message_count)
    ch.tx_commit()
    m = s.get(ch, s.n("q"))
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()  # the ack is undone: the delivery is still unacked
    ch.basic_reject(m.delivery_tag, requeue=True)
    ch.tx_commit()
    s.rec("after", s.drain(ch, s.n("q")))
    ch.tx_commit()  # an empty commit is fine


@scenario
def purge_keeps_unacked_and_delete_counts(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=False)
    for i in range(4):
        _publish(ch, s.n("q"), str(i).encode())
    s.get(ch, s.n("q"))
    s.rec("purge", ch.queue_purge(s.n("q")).method.message_count)
    ch.basic_recover(requeue=True)
    s.rec("delete", ch.queue_delete(s.n("q")).method.message_count)


@scenario
def unbind_missing_binding_and_redeclare(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    ch.queue_unbind(s.n("q"), "amq.direct", "never-bound")
    s.rec("unbind missing", "ok")
    ch.queue_bind(s.n("q"), "amq.direct", "k")
    ch.queue_bind(s.n("q"), "amq.direct", "k")  # idempotent
    ch.basic_publish("amq.direct", "k", b"once")
    s.rec("q", s.drain(ch, s.n("q")))
    ch.exchange_declare(s.n("x"), "topic", auto_delete=True)
    ch.exchange_declare(s.n("x"), "topic", auto_delete=True)  # equivalent: ok
    s.rec("redeclare", "ok")


@scenario
def tx_mandatory_return(s):
    ch = s.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m.reply_text, b)))
    ch.tx_select()
    ch.basic_publish("amq.direct", s.n("nowhere"), b"in tx", mandatory=True)
    ch.queue_declare("", exclusive=True)
    s.conn.process_data_events(time_limit=0)
    s.rec("returns before commit", list(returned))
    ch.tx_commit()
    pump_until(s.conn, lambda: returned)
    s.rec("returns after commit", list(returned))


@scenario
def headers_binding_invalid_x_match(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), auto_delete=False)
    s.expect_error("x-match bogus", lambda: ch.queue_bind(
        s.n("q"), "amq.headers", arguments={"x-match": "bogus", "a": 1}))
    ch = s.channel()
    s.expect_error("x-match integer", lambda: ch.queue_bind(
        s.n("q"), "amq.headers", arguments={"x-match": 1}))
    s.channel().queue_delete(s.n("q"))


@scenario
def round_robin_and_global_qos(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    for i in range(6):
        _publish(ch, s.n("q"), str(i).encode())
    got = []
    ch.basic_consume(s.n("q"), lambda c, m, p, b: got.append(("a", b.decode())),
                     consumer_tag="a")
    ch.basic_consume(s.n("q"), lambda c, m, p, b: got.append(("b", b.decode())),
                     consumer_tag="b")
    pump_until(s.conn, lambda: len(got) >= 3)
    s.rec("with global prefetch 3", len(got))
    ok = ch.queue_declare(s.n("q"), passive=True)
    s.rec("ready", ok.method.message_count, ok.method.consumer_count)


@scenario
def nack_multiple_drop_and_reject_single(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    for i in range(4):
        _publish(ch, s.n("q"), str(i).encode())
    tags = [s.get(ch, s.n("q")).delivery_tag for _ in range(4)]
    ch.basic_nack(tags[1], multiple=True, requeue=False)
    ch.basic_reject(tags[3], requeue=True)
    ch.basic_nack(0, multiple=True, requeue=True)  # tag 0 + multiple: every outstanding one
    s.rec("left", s.drain(ch, s.n("q")))


@scenario
def unbind_idempotent_missing_everything(s):
    """rabbit_binding:remove: a missing queue, exchange or binding is unbind-ok; the default
    exchange is 403; an existing binding to another connection's exclusive queue is 405 (a
    missing one is unbind-ok even there); the empty name still needs a declared queue."""
    ch = s.channel()
    s.expect_error("q.unbind missing queue", lambda: ch.queue_unbind(s.n("noq"), "amq.direct",
                                                                     "k"))
    s.expect_error("q.unbind missing both", lambda: ch.queue_unbind(s.n("noq"), s.n("nox"), "k"))
    ch.queue_declare(s.n("q"), auto_delete=False)
    s.expect_error("q.unbind missing exchange", lambda: ch.queue_unbind(s.n("q"), s.n("nox")))
    s.expect_error("q.unbind missing binding", lambda: ch.queue_unbind(s.n("q"), "amq.topic",
                                                                       "k"))
    s.expect_error("x.unbind missing both", lambda: ch.exchange_unbind(s.n("d"), s.n("s"), "k"))
    s.expect_error("x.unbind missing dst", lambda: ch.exchange_unbind(s.n("d"), "amq.direct"))
    s.expect_error("x.unbind missing src", lambda: ch.exchange_unbind("amq.topic", s.n("s")))
    s.expect_error("x.unbind missing binding",
                   lambda: ch.exchange_unbind("amq.topic", "amq.direct", "k"))
    s.expect_error("q.unbind default", lambda: ch.queue_unbind(s.n("noq"), "", "k"))
    ch = s.channel()
    s.expect_error("x.unbind default src", lambda: ch.exchange_unbind(s.n("d"), "", "k"))
    ch = s.channel()
    s.expect_error("x.unbind default dst", lambda: ch.exchange_unbind("", s.n("s"), "k"))
    ch = s.channel()
    s.expect_error("q.unbind no last queue", lambda: ch.queue_unbind("", "amq.direct", "k"))
    other = s.connect().channel()
    other.queue_declare(s.n("ex"), exclusive=True)
    ch = s.channel()
    s.expect_error("exclusive, no binding", lambda: ch.queue_unbind(s.n("ex"), "amq.direct"))
    s.expect_error("exclusive, no exchange", lambda: ch.queue_unbind(s.n("ex"), s.n("nox")))
    other.queue_bind(s.n("ex"), "amq.direct", "k")
    s.expect_error("exclusive, bound", lambda: ch.queue_unbind(s.n("ex"), "amq.direct", "k"))
    other.queue_unbind(s.n("ex"), "amq.direct", "k")
    s.rec("owner unbinds", "ok")
    s.channel().queue_delete(s.n("q"))


@scenario
def bind_check_order(s):
    """rabbit_binding:add: the source is looked up before the destination, and another
    connection's exclusive queue (405) only after the binding was validated (406)."""
    ch = s.channel()
    s.expect_error("q.bind both missing", lambda: ch.queue_bind(s.n("noq"), s.n("nox")))
    ch = s.channel()
    s.expect_error("x.bind both missing", lambda: ch.exchange_bind(s.n("nod"), s.n("nos")))
    other = s.connect().channel()
    other.queue_declare(s.n("ex"), exclusive=True)
    ch = s.channel()
    s.expect_error("exclusive, missing exchange", lambda: ch.queue_bind(s.n("ex"), s.n("nox")))
    ch = s.channel()
    s.expect_error("exclusive, bad x-match", lambda: ch.queue_bind(
        s.n("ex"), "amq.headers", arguments={"x-match": "bogus"}))
    ch = s.channel()
    s.expect_error("exclusive, valid", lambda: ch.queue_bind(s.n("ex"), "amq.direct", "k"))
