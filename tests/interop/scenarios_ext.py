"""Differential scenarios for the RabbitMQ extensions syncmq implements, negotiation and server
properties, and multi-frame bodies (registered in ``scenarios.SCENARIOS``; run by
tests/interop/test_differential.py like the others).

Everything here is deterministic on both brokers: TTL is observed with a TTL of 0 (a message
expires at once unless a consumer takes it), dead letters with reject/nack, deliveries by
waiting for a known number of them (bounded).
"""

from __future__ import annotations

import hashlib
import time

import pika
import pika.exceptions as pe
from scenarios import WAIT, _publish, pump_until, scenario

# x-death and friends: the parts that are the same on every run (its 'time' is a timestamp)
_LAST_DEATH = ("x-last-death-reason", "x-last-death-queue", "x-last-death-exchange")


def _death_headers(props, keep_last_death: bool = False) -> dict:
    h = dict(props.headers or {})
    if not keep_last_death:
        for k in _LAST_DEATH:
            h.pop(k, None)
    if "x-death" in h:
        h["x-death"] = [{k: v for k, v in d.items() if k != "time"} for d in h["x-death"]]
    return h


def _wait_deliveries(s, got: list, n: int) -> None:
    """Process events until ``got`` holds ``n`` items (bounded: ``WAIT`` seconds; the
    transcript then shows what came)."""
    pump_until(s.conn, lambda: len(got) >= n)


# ------------------------------------------------------------------ TTL and dead-lettering

@scenario
def ext_ttl_zero_and_expiration(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True, arguments={"x-message-ttl": 0})
    _publish(ch, s.n("q"), b"expires at once")
    s.get(ch, s.n("q"))
    ch.queue_declare(s.n("q2"), exclusive=True)
    _publish(ch, s.n("q2"), b"per-message 0", expiration="0")
    _publish(ch, s.n("q2"), b"kept", expiration="60000")
    s.rec("q2", s.drain(ch, s.n("q2")))
    for bad in ("-1", "abc", "1.5"):
        ch2 = s.channel()

        def go(ch2=ch2, bad=bad):
            _publish(ch2, s.n("q2"), b"x", expiration=bad)
            ch2.queue_declare("", exclusive=True)
        s.expect_error(f"expiration {bad}", go)
    for args in ({"x-message-ttl": -1}, {"x-message-ttl": "1"}, {"x-expires": 0}):
        s.expect_error(f"declare {args}", lambda a=args: s.channel().queue_declare(
            s.n("bad"), arguments=a))


def _dlx_setup(s, ch, extra=None):
    ch.exchange_declare(s.n("dlx"), "direct", auto_delete=True)
    ch.queue_declare(s.n("dead"), exclusive=True)
    ch.queue_bind(s.n("dead"), s.n("dlx"), "dl-key")
    args = {"x-dead-letter-exchange": s.n("dlx"), "x-dead-letter-routing-key": "dl-key"}
    args.update(extra or {})
    ch.queue_declare(s.n("q"), exclusive=True, arguments=args)


def _poll_get(s, ch, queue):
    """basic.get until a message comes (bounded: ``WAIT`` seconds): dead-lettering is
    asynchronous on RabbitMQ (the queue process republishes)."""
    deadline = time.monotonic() + WAIT
    while True:
        m, props, body = ch.basic_get(queue, auto_ack=False)
        if m is not None:
            return m, props, body
        if time.monotonic() > deadline:
            return None, None, None
        s.conn.sleep(0.02)


def _dead_letters(s, ch, n, keep_last_death=False):
    """The ``n`` dead letters of P-dead, waited for (bounded), then whatever else is there."""
    out = []
    while True:
        if len(out) < n:
            m, props, body = _poll_get(s, ch, s.n("dead"))
        else:
            m, props, body = ch.basic_get(s.n("dead"))
        if m is None:
            return out
        ch.basic_ack(m.delivery_tag)
        out.append((body, m.exchange, m.routing_key, m.redelivered,
                    _death_headers(props, keep_last_death)))


@scenario
def ext_dlx_reject_nack_expire_maxlen(s):
    ch = s.channel()
    _dlx_setup(s, ch, {"x-max-length": 3})
    for i in range(4):  # the 4th pushes the 1st out (maxlen)
        _publish(ch, s.n("q"), f"m{i}".encode(), headers={"h": i})
    m1 = ch.basic_get(s.n("q"))[0]
    ch.basic_reject(m1.delivery_tag, requeue=False)
    m2 = ch.basic_get(s.n("q"))[0]
    ch.basic_nack(m2.delivery_tag, requeue=False)
    ch.queue_declare(s.n("q0"), exclusive=True, arguments={
        "x-dead-letter-exchange": s.n("dlx"), "x-dead-letter-routing-key": "dl-key",
        "x-message-ttl": 0})
    _publish(ch, s.n("q0"), b"expired")
    # two queue processes dead-letter on RabbitMQ: compare as a set
    s.rec("dead", sorted(_dead_letters(s, ch, 4), key=lambda d: d[0]))
    s.rec("left", s.drain(ch, s.n("q")))


@scenario
def ext_dlx_cycle_and_x_death_count(s):
    ch = s.channel()
    # two queues dead-lettering into each other through the default exchange
    ch.queue_declare(s.n("a"), exclusive=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": s.n("b")})
    ch.queue_declare(s.n("b"), exclusive=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": s.n("a")})
    _publish(ch, s.n("a"), b"bounce")
    for q in ("a", "b", "a"):
        m, props, _b = _poll_get(s, ch, s.n(q))
        s.rec("got in", q, _death_headers(props))
        ch.basic_reject(m.delivery_tag, requeue=False)
    m, props, _b = _poll_get(s, ch, s.n("b"))
    s.rec("then in b", m.redelivered, _death_headers(props))


@scenario
def ext_dlx_x_last_death_headers(s):
    # RabbitMQ 3.13 added x-last-death-*; the reference 3.10.8 does not send them
    ch = s.channel()
    _dlx_setup(s, ch)
    _publish(ch, s.n("q"), b"m")
    m = ch.basic_get(s.n("q"))[0]
    ch.basic_reject(m.delivery_tag, requeue=False)
    s.rec("dead", _dead_letters(s, ch, 1, keep_last_death=True))


# ------------------------------------------------------------------ max-length

@scenario
def ext_max_length_overflow(s):
    ch = s.channel()
    ch.queue_declare(s.n("head"), exclusive=True, arguments={"x-max-length": 2})
    ch.queue_declare(s.n("bytes"), exclusive=True, arguments={"x-max-length-bytes": 10})
    ch.queue_declare(s.n("reject"), exclusive=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", s.n("head"), f"h{i}".encode())
        ch.basic_publish("", s.n("bytes"), f"bytes{i}".encode())
    for i in range(3):
        try:
            ch.basic_publish("", s.n("reject"), f"r{i}".encode())
            s.rec("reject-publish", i, "acked")
        except pe.NackError:
            s.rec("reject-publish", i, "nacked")
    for q in ("head", "bytes", "reject"):
        s.rec(q, s.drain(ch, s.n(q)))
    for args in ({"x-max-length": -1}, {"x-overflow": "nope"}, {"x-max-length-bytes": "x"}):
        s.expect_error(f"declare {args}", lambda a=args: s.channel().queue_declare(
            s.n("bad"), arguments=a))


# ------------------------------------------------------------------ priorities

@scenario
def ext_priority_queue(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True, arguments={"x-max-priority": 5})
    for i, p in enumerate([1, None, 5, 9, 3, 5, 0]):
        _publish(ch, s.n("q"), f"{i}:{p}".encode(), **({"priority": p} if p is not None else {}))
    tags = [s.get(ch, s.n("q")).delivery_tag for _ in range(2)]
    ch.basic_nack(tags[-1], multiple=True, requeue=True)  # back in priority order
    s.rec("order", s.drain(ch, s.n("q")))
    for bad in (256, -1, "x"):
        s.expect_error(f"x-max-priority {bad}", lambda b=bad: s.channel().queue_declare(
            s.n("bad"), arguments={"x-max-priority": b}))


# ------------------------------------------------------------------ consumers

@scenario
def ext_single_active_consumer(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True, arguments={"x-single-active-consumer": True})
    got = []
    for tag in ("first", "second"):
        ch.basic_consume(s.n("q"), lambda c, m, p, b, t=tag: got.append((t, b.decode())),
                         auto_ack=True, consumer_tag=tag)
    for i in range(3):
        _publish(ch, s.n("q"), f"a{i}".encode())
    _wait_deliveries(s, got, 3)
    ch.basic_cancel("first")
    for i in range(2):
        _publish(ch, s.n("q"), f"b{i}".encode())
    _wait_deliveries(s, got, 5)
    s.rec("deliveries", got)
    s.expect_error("exclusive consume on SAC queue", lambda: s.channel().basic_consume(
        s.n("q"), lambda *a: None, exclusive=True))
    s.expect_error("x-single-active-consumer not a bool", lambda: s.channel().queue_declare(
        s.n("bad"), arguments={"x-single-active-consumer": "yes"}))


@scenario
def ext_consumer_priorities(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    ch.basic_qos(prefetch_count=2)
    got = []
    for tag, prio in (("low", 1), ("high", 10), ("none", None)):
        ch.basic_consume(s.n("q"), lambda c, m, p, b, t=tag: got.append((t, b.decode())),
                         consumer_tag=tag,
                         arguments={"x-priority": prio} if prio is not None else None)
    for i in range(5):
        _publish(ch, s.n("q"), f"m{i}".encode())
    _wait_deliveries(s, got, 5)
    s.rec("deliveries", sorted(got))  # high takes 2 (prefetch), then low 2, then none 1
    s.expect_error("x-priority not an int", lambda: s.channel().basic_consume(
        s.n("q"), lambda *a: None, arguments={"x-priority": "high"}))


# ------------------------------------------------------------------ AE, CC/BCC, reply-to

@scenario
def ext_alternate_exchange(s):
    ch = s.channel()
    ch.exchange_declare(s.n("ae"), "fanout", auto_delete=True)
    ch.queue_declare(s.n("unrouted"), exclusive=True)
    ch.queue_bind(s.n("unrouted"), s.n("ae"))
    ch.exchange_declare(s.n("x"), "direct", auto_delete=True,
                        arguments={"alternate-exchange": s.n("ae")})
    ch.queue_declare(s.n("q"), exclusive=True)
    ch.queue_bind(s.n("q"), s.n("x"), "k")
    ch.exchange_declare(s.n("x2"), "direct", auto_delete=True,
                        arguments={"alternate-exchange": s.n("missing-ae")})
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m.reply_code, b)))
    ch.basic_publish(s.n("x"), "k", b"routed")
    ch.basic_publish(s.n("x"), "other", b"to the AE", mandatory=True)
    ch.basic_publish(s.n("x2"), "other", b"AE missing", mandatory=True)
    s.rec("q", s.drain(ch, s.n("q")))
    s.rec("unrouted", s.drain(ch, s.n("unrouted")))
    s.conn.process_data_events(time_limit=0)
    s.rec("returns", returned)


@scenario
def ext_cc_bcc(s):
    ch = s.channel()
    for q in ("main", "cc1", "cc2", "bcc"):
        ch.queue_declare(s.n(q), exclusive=True)
    ch.basic_publish("", s.n("main"), b"m", pika.BasicProperties(headers={
        "CC": [s.n("cc1"), s.n("cc2")], "BCC": [s.n("bcc")], "other": 1}))
    for q in ("main", "cc1", "cc2", "bcc"):
        while True:
            m, props, body = ch.basic_get(s.n(q), auto_ack=True)
            if m is None:
                break
            s.rec(q, body, m.routing_key, props.headers)
    ch2 = s.channel()

    def cc_string():  # RabbitMQ wants an array: a string is an invalid message (406)
        ch2.basic_publish("", s.n("main"), b"cc string", pika.BasicProperties(headers={
            "CC": s.n("cc1")}))
        ch2.queue_declare("", exclusive=True)
    s.expect_error("CC as a string", cc_string)
    s.rec("cc1 after", s.drain(ch, s.n("cc1")))


@scenario
def ext_direct_reply_to(s):
    ch = s.channel()
    ch.queue_declare(s.n("rpc"), exclusive=True)
    replies = []
    ch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append(
        (b, m.routing_key.startswith("amq.rabbitmq.reply-to."))), auto_ack=True)
    ch.basic_publish("", s.n("rpc"), b"request",
                     pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    m, props, body = ch.basic_get(s.n("rpc"), auto_ack=True)
    s.rec("reply_to looks like", props.reply_to.startswith("amq.rabbitmq.reply-to."),
          props.reply_to != "amq.rabbitmq.reply-to")
    ch.basic_publish("", props.reply_to, b"response")
    _wait_deliveries(s, replies, 1)
    s.rec("replies", replies)
    ch2 = s.channel()
    s.expect_error("reply-to without consuming", lambda: (
        ch2.basic_publish("", s.n("rpc"), b"x",
                          pika.BasicProperties(reply_to="amq.rabbitmq.reply-to")),
        ch2.queue_declare("", exclusive=True)))
    ch3 = s.channel()
    s.expect_error("consume reply-to with ack", lambda: ch3.basic_consume(
        "amq.rabbitmq.reply-to", lambda *a: None, auto_ack=False))


# ------------------------------------------------------------------ negotiation, big bodies

@scenario
def neg_server_properties_and_tune(s):
    c = s.connect(frame_max=8192, channel_max=17, heartbeat=0)
    props = c._impl.server_properties
    s.rec("server properties keys", sorted(props))
    s.rec("capabilities", props.get("capabilities"))
    # product, version, platform, copyright, information: each broker's own (by design)
    s.rec("identity", [type(props[k]).__name__ for k in ("product", "version", "platform")])
    p = c._impl.params
    s.rec("negotiated", p.frame_max, p.channel_max, p.heartbeat)
    c2 = s.connect()
    p2 = c2._impl.params
    s.rec("defaults", p2.frame_max, p2.channel_max)


@scenario
def multi_frame_bodies(s):
    c = s.connect(frame_max=4096)
    ch = c.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    sizes = [0, 1, 4088, 4089, 3 * 4088, 300_000]
    for n in sizes:
        ch.basic_publish("", s.n("q"), bytes(i % 251 for i in range(n)),
                         pika.BasicProperties(headers={"n": n}))
    got = []
    while True:
        m, props, body = ch.basic_get(s.n("q"), auto_ack=True)
        if m is None:
            break
        got.append((props.headers["n"], len(body), hashlib.sha256(body).hexdigest()[:16]))
    s.rec("bodies", got)


@scenario
def unbind_missing_queue_or_exchange(s):
    ch = s.channel()
    ch.queue_declare(s.n("q"), exclusive=True)
    s.expect_error("unbind a missing queue",
                   lambda: ch.queue_unbind(s.n("noq"), "amq.direct", "k"))
    ch = s.channel()
    s.expect_error("unbind from a missing exchange",
                   lambda: ch.queue_unbind(s.n("q"), s.n("nox"), "k"))


# ------------------------------------------------------------------ users, vhosts, permissions
# Run by test_differential.test_same_transcript_with_users against a syncmq with a users file
# and the RabbitMQ node with the same users (USERS), vhosts (VHOSTS) and permissions.

USER_SCENARIOS: dict = {}
VHOSTS = ("/", "diff-v2")
# user -> (password, {vhost: (configure, write, read)}); regexes are searched, not anchored,
# so "-c-" matches the per-run names P-c-q
USERS = {
    "guest": ("guest", {"/": (".*", ".*", ".*")}),
    "alice": ("alice-pw", {"/": ("(-c-|-b-)", "(-w-)", "(-r-|-b-)"),  # ( : not an option
                           "diff-v2": (".*", ".*", ".*")}),
    "nobody": ("nobody-pw", {}),
}


def user_scenario(fn):
    USER_SCENARIOS[fn.__name__] = fn
    return fn


def _as(s, user, vhost="/"):
    return s.connect(credentials=pika.PlainCredentials(user, USERS[user][0]),
                     virtual_host=vhost)


@user_scenario
def perm_each_method_refused(s):
    admin = s.channel()
    for q in ("r-q", "w-q", "c-q"):
        admin.queue_declare(s.n(q), auto_delete=False)
    for x in ("r-x", "w-x", "c-x"):
        admin.exchange_declare(s.n(x), "direct", auto_delete=False)
    a = _as(s, "alice")
    calls = [
        ("declare queue", lambda ch: ch.queue_declare(s.n("r-q2"))),
        ("declare exchange", lambda ch: ch.exchange_declare(s.n("w-x2"), "fanout")),
        ("delete queue", lambda ch: ch.queue_delete(s.n("w-q"))),
        ("delete exchange", lambda ch: ch.exchange_delete(s.n("r-x"))),
        ("purge", lambda ch: ch.queue_purge(s.n("w-q"))),
        ("get", lambda ch: ch.basic_get(s.n("c-q"))),
        ("consume", lambda ch: ch.basic_consume(s.n("w-q"), lambda *x: None)),
        ("bind: write on queue", lambda ch: ch.queue_bind(s.n("r-q"), s.n("r-x"), "k")),
        ("bind: read on exchange", lambda ch: ch.queue_bind(s.n("w-q"), s.n("w-x"), "k")),
        ("bind: both refused", lambda ch: ch.queue_bind(s.n("r-q"), s.n("w-x"), "k")),
        ("unbind: both refused", lambda ch: ch.queue_unbind(s.n("r-q"), s.n("w-x"), "k")),
        ("e2e bind: both refused", lambda ch: ch.exchange_bind(s.n("r-x"), s.n("w-x"), "k")),
        ("e2e unbind: read", lambda ch: ch.exchange_unbind(s.n("w-x"), s.n("w-x"), "k")),
        ("AE: write on the AE", lambda ch: ch.exchange_declare(
            s.n("b-x"), "direct", arguments={"alternate-exchange": s.n("r-x")})),
        ("AE: both refused", lambda ch: ch.exchange_declare(
            s.n("c-x2"), "direct", arguments={"alternate-exchange": s.n("r-x")})),
        ("DLX: write on the DLX", lambda ch: ch.queue_declare(
            s.n("b-q"), arguments={"x-dead-letter-exchange": s.n("r-x")})),
        ("DLX: both refused", lambda ch: ch.queue_declare(
            s.n("c-q2"), arguments={"x-dead-letter-exchange": s.n("r-x")})),
        ("server-named queue", lambda ch: ch.queue_declare("")),
        ("missing queue: 403 before 404", lambda ch: ch.basic_get(s.n("w-missing"))),
        ("allowed, then missing", lambda ch: ch.basic_get(s.n("r-missing"))),
    ]
    for what, fn in calls:
        ch = a.channel()
        s.expect_error(what, lambda ch=ch, fn=fn: fn(ch))
    ch = a.channel()
    ch.confirm_delivery()
    s.expect_error("publish to amq.default", lambda: ch.basic_publish("", s.n("r-q"), b"m"))
    ch = a.channel()
    ch.confirm_delivery()
    s.expect_error("publish to w-x", lambda: ch.basic_publish(s.n("w-x"), "k", b"m"))
    s.expect_error("user_id of another user", lambda: a.channel().basic_publish(
        s.n("w-x"), "k", b"m", pika.BasicProperties(user_id="guest")))
    admin = s.channel()
    for q in ("r-q", "w-q", "c-q"):
        admin.queue_delete(s.n(q))
    for x in ("r-x", "w-x", "c-x"):
        admin.exchange_delete(s.n(x))


@user_scenario
def perm_vhosts(s):
    guest = _as(s, "guest")
    a = _as(s, "alice", "diff-v2")
    ch = a.channel()
    ch.queue_declare(s.n("q"), auto_delete=True)
    ch.confirm_delivery()
    ch.basic_publish("", s.n("q"), b"in v2")
    s.rec("v2 count", ch.queue_declare(s.n("q"), passive=True).method.message_count)
    s.expect_error("not visible in /", lambda: guest.channel().queue_declare(s.n("q"),
                                                                            passive=True))
    for user, vhost in (("guest", "diff-v2"), ("nobody", "/"), ("alice", "no-such-vhost")):
        try:
            _as(s, user, vhost)
            s.rec(user, vhost, "opened")
        except pe.ConnectionClosedByBroker as e:
            s.rec(user, vhost, e.reply_code, e.reply_text)
        except pe.AMQPConnectionError as e:  # pika wraps a close during open: its text
            s.rec(user, vhost, type(e).__name__, str(e))
    ch.queue_delete(s.n("q"))


@user_scenario
def perm_refusal_text(s):
    s.drop_permission_word = False
    ch = _as(s, "alice").channel()
    s.expect_error("declare queue", lambda: ch.queue_declare(s.n("r-q")))


# ------------------------------------------------------------------ restart
# Run by test_differential.test_same_transcript_across_restart: ``restart()`` restarts the
# broker (RabbitMQ: stop_app/start_app; syncmq: SIGTERM and start again on its data dir) and
# returns its port.

RESTART_SCENARIOS: dict = {}


def restart_scenario(fn):
    RESTART_SCENARIOS[fn.__name__] = fn
    return fn


def _exists(s, kind, name):
    ch = s.channel()
    try:
        if kind == "queue":
            ok = ch.queue_declare(name, passive=True)
            return ("queue", ok.method.message_count, ok.method.consumer_count)
        ch.exchange_declare(name, passive=True)
        return ("exchange", "ok")
    except pe.ChannelClosedByBroker as e:
        return (kind, e.reply_code, e.reply_text)


@restart_scenario
def restart_what_survives(s, restart):
    ch = s.channel()
    ch.confirm_delivery()
    ch.queue_declare(s.n("durable"), durable=True, arguments={"x-max-priority": 3})
    ch.queue_declare(s.n("transient"), durable=False)
    ch.queue_declare(s.n("plain"), durable=True)
    ch.queue_declare(s.n("ttl"), durable=True, arguments={"x-message-ttl": 3_600_000})
    ch.exchange_declare(s.n("dx"), "topic", durable=True)
    ch.exchange_declare(s.n("tx"), "fanout", durable=False)
    ch.queue_bind(s.n("durable"), s.n("dx"), "a.#")
    persistent = pika.BasicProperties(delivery_mode=2, headers={"h": 1}, priority=2)
    for i in range(3):
        ch.basic_publish("", s.n("durable"), f"p{i}".encode(), persistent)
    ch.basic_publish("", s.n("durable"), b"transient msg", pika.BasicProperties(priority=3))
    ch.basic_publish("", s.n("ttl"), b"ttl persistent", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", s.n("transient"), b"lost", persistent)
    for i in range(3):
        ch.basic_publish("", s.n("plain"), f"plain{i}".encode(), persistent)
    m = ch.basic_get(s.n("plain"))[0]  # delivered, never acked: redelivered afterwards
    s.rec("before restart", m.redelivered, _exists(s, "queue", s.n("plain")))
    m = ch.basic_get(s.n("durable"))[0]  # the transient one (priority 3): lost
    s.rec("got", m.redelivered, _exists(s, "queue", s.n("durable")))
    s.close()
    s.connections = []
    s.port = restart()
    s.rec("durable", _exists(s, "queue", s.n("durable")))
    s.rec("transient", _exists(s, "queue", s.n("transient")))
    s.rec("dx", _exists(s, "exchange", s.n("dx")))
    s.rec("tx", _exists(s, "exchange", s.n("tx")))
    ch = s.channel()
    s.expect_error("args kept", lambda: ch.queue_declare(s.n("durable"), durable=True))
    ch = s.channel()
    ch.basic_publish(s.n("dx"), "a.b", b"via binding", pika.BasicProperties(delivery_mode=2))
    got = []
    while True:
        m, props, body = ch.basic_get(s.n("durable"), auto_ack=True)
        if m is None:
            break
        got.append((body, m.redelivered, props.delivery_mode, props.priority, props.headers))
    s.rec("durable messages", got)
    s.rec("ttl", s.drain(ch, s.n("ttl")))
    s.rec("plain", s.drain(ch, s.n("plain")))
    # the exchange came back with its own flags: equivalent to its declaration, and not
    # auto-delete (still there after its last binding goes)
    ch = s.channel()
    s.expect_error("redeclare dx", lambda: ch.exchange_declare(s.n("dx"), "topic",
                                                               durable=True))
    ch = s.channel()
    ch.queue_unbind(s.n("durable"), s.n("dx"), "a.#")
    s.rec("dx after its last unbind", _exists(s, "exchange", s.n("dx")))
    for q in ("durable", "ttl", "plain"):
        ch.queue_delete(s.n(q))
    ch.exchange_delete(s.n("dx"))
