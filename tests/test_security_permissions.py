"""configure/write/read permissions on each AMQP method, checked as RabbitMQ does (the table in
RabbitMQ's access-control guide; the order of rabbit_channel's checks; the texts of
rabbit_access_control). User ``u`` may configure names starting ``c-``, write ``w-`` and read
``r-``; user ``b`` may also configure and read ``b-`` (so that a method needing two permissions
can be refused only its second one); ``admin`` may do anything and sets the stage.

Every method that needs two permissions is refused each one alone and both at once: the error
names the one RabbitMQ checks first (tests/interop/test_differential.py checks the same against
RabbitMQ itself)."""

from __future__ import annotations

import contextlib

import pika
import pika.exceptions
import pytest
from amqp_helpers import TIMEOUT, expect_channel_close

from syncmq.broker.auth import Permission, User, UserStore, hash_password, save

U_PERM = Permission("^c-", "^w-", "^r-")
B_PERM = Permission("^[cb]-", "^w-", "^[rb]-")


@pytest.fixture(scope="module")
def sbroker(tmp_path_factory):
    from brokerproc import start_broker as _start
    path = tmp_path_factory.mktemp("users") / "users.toml"
    users = {
        "admin": User("admin", hash_password("admin-pw"), ["administrator"],
                      {"/": Permission()}),
        "u": User("u", hash_password("u-pw"), [], {"/": U_PERM}),
        "b": User("b", hash_password("b-pw"), [], {"/": B_PERM}),
        "gen": User("gen", hash_password("gen-pw"), [], {"/": Permission("^amq\\.gen-", "", "")}),
        "none": User("none", hash_password("none-pw"), [], {"/": Permission("", "", "")}),
    }
    save(UserStore(users, ["/", "other"], []), str(path))
    b = _start(tmp_path_factory, "--users-file", str(path))
    yield b
    assert b.stop() == 0, b.log_tail()
    assert not b.tracebacks()


def _connect(port, user):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, "/", pika.PlainCredentials(user, user + "-pw"),
        connection_attempts=1, socket_timeout=TIMEOUT, stack_timeout=TIMEOUT,
        blocked_connection_timeout=TIMEOUT, heartbeat=0))


@pytest.fixture(scope="module")
def admin_conn(sbroker):
    c = _connect(sbroker.port, "admin")
    yield c
    with contextlib.suppress(Exception):
        c.close()


@pytest.fixture
def admin(admin_conn):
    ch = admin_conn.channel()
    yield ch
    with contextlib.suppress(Exception):
        ch.close()


@pytest.fixture
def user_conn(sbroker):
    c = _connect(sbroker.port, "u")
    yield c
    with contextlib.suppress(Exception):
        c.close()


@pytest.fixture
def u(user_conn):
    return user_conn.channel()


@pytest.fixture
def n(unique):
    """Names per test: n("c", "q") -> "c-q-<unique>"."""
    return lambda prefix, what: f"{prefix}-{what}-{unique}"


def refused(what, kind, name, user="u", vhost="/"):
    return (f"ACCESS_REFUSED - {what} access to {kind} '{name}' in vhost '{vhost}' refused for "
            f"user '{user}'")


def deny(text, fn, *args, **kw):
    e = expect_channel_close(403, fn, *args, **kw)
    assert e.reply_text == text
    return e


# ---- exchange.declare / exchange.delete: configure on the exchange ----


def test_exchange_declare(u, user_conn, n):
    u.exchange_declare(n("c", "x"), "direct")
    deny(refused("configure", "exchange", n("w", "x")), u.exchange_declare, n("w", "x"), "direct")


def test_exchange_declare_passive_needs_no_permission(admin, user_conn, n):
    admin.exchange_declare(n("x", "x"), "fanout")
    ch = user_conn.channel()
    ch.exchange_declare(n("x", "x"), passive=True)
    ch.exchange_declare("amq.topic", passive=True)


def test_exchange_declare_with_alternate_exchange(user_conn, n):
    # creating with an AE needs read on the new exchange and write on the AE
    ch = user_conn.channel()
    deny(refused("read", "exchange", n("c", "ae")), ch.exchange_declare, n("c", "ae"), "direct",
         arguments={"alternate-exchange": "amq.fanout"})


@pytest.fixture
def b_conn(sbroker):
    c = _connect(sbroker.port, "b")
    yield c
    with contextlib.suppress(Exception):
        c.close()


def test_alternate_exchange_needs_write_on_the_ae(b_conn, admin, n):
    # read and configure on the new exchange granted: only the write on the AE is missing
    ch = b_conn.channel()
    deny(refused("write", "exchange", n("r", "ae"), user="b"), ch.exchange_declare,
         n("b", "x"), "direct", arguments={"alternate-exchange": n("r", "ae")})
    ch = b_conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(n("b", "x"), passive=True)
    assert e.value.reply_code == 404  # the refused declare created nothing
    ch = b_conn.channel()
    ch.exchange_declare(n("b", "x"), "direct", auto_delete=True,
                        arguments={"alternate-exchange": n("w", "ae")})
    # both refused (read on the exchange, write on the AE): the read is checked first
    deny(refused("read", "exchange", n("c", "x"), user="b"), ch.exchange_declare,
         n("c", "x"), "direct", arguments={"alternate-exchange": n("r", "ae")})
    admin.exchange_delete(n("b", "x"))


def test_exchange_delete(admin, user_conn, n):
    admin.exchange_declare(n("c", "x"), "direct")
    admin.exchange_declare(n("r", "x"), "direct")
    ch = user_conn.channel()
    ch.exchange_delete(n("c", "x"))
    deny(refused("configure", "exchange", n("r", "x")), ch.exchange_delete, n("r", "x"))


def test_reserved_names_come_before_configure(user_conn):
    ch = user_conn.channel()
    e = expect_channel_close(403, ch.exchange_delete, "amq.direct")
    assert "deletion of system exchange 'amq.direct'" in e.reply_text
    ch = user_conn.channel()
    e = expect_channel_close(403, ch.queue_declare, "amq.q")
    assert "reserved prefix 'amq.*'" in e.reply_text


# ---- queue.declare / queue.delete: configure on the queue ----


def test_queue_declare(u, user_conn, n):
    u.queue_declare(n("c", "q"), auto_delete=True)
    deny(refused("configure", "queue", n("r", "q")), u.queue_declare, n("r", "q"))


def test_queue_declare_passive_needs_no_permission(admin, user_conn, n):
    admin.queue_declare(n("x", "q"), auto_delete=True)
    user_conn.channel().queue_declare(n("x", "q"), passive=True)


def test_server_named_queue_is_checked_by_its_generated_name(sbroker, user_conn):
    ch = user_conn.channel()
    e = expect_channel_close(403, ch.queue_declare, "")
    assert e.reply_text.startswith("ACCESS_REFUSED - configure access to queue 'amq.gen-")
    assert e.reply_text.endswith("' in vhost '/' refused for user 'u'")
    c = _connect(sbroker.port, "gen")  # configure "^amq\.gen-": server-named queues only
    try:
        q = c.channel().queue_declare("", exclusive=True).method.queue
        assert q.startswith("amq.gen-")
    finally:
        c.close()


def test_queue_declare_with_dead_letter_exchange(user_conn, n):
    ch = user_conn.channel()
    deny(refused("read", "queue", n("c", "dlq")), ch.queue_declare, n("c", "dlq"),
         arguments={"x-dead-letter-exchange": n("w", "x")})


def test_dead_letter_exchange_needs_write_on_the_dlx(b_conn, admin, n):
    # configure and read on the queue granted: only the write on the DLX is missing
    ch = b_conn.channel()
    deny(refused("write", "exchange", n("r", "dlx"), user="b"), ch.queue_declare, n("b", "q"),
         arguments={"x-dead-letter-exchange": n("r", "dlx")})
    ch = b_conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(n("b", "q"), passive=True)
    assert e.value.reply_code == 404  # the refused declare created nothing
    ch = b_conn.channel()
    ch.queue_declare(n("b", "q"), auto_delete=True,
                     arguments={"x-dead-letter-exchange": n("w", "dlx")})
    # both refused (read on the queue, write on the DLX): the read is checked first
    deny(refused("read", "queue", n("c", "q"), user="b"), ch.queue_declare, n("c", "q"),
         arguments={"x-dead-letter-exchange": n("r", "dlx")})
    # all three refused: configure comes first
    ch = b_conn.channel()
    deny(refused("configure", "queue", n("r", "q"), user="b"), ch.queue_declare, n("r", "q"),
         arguments={"x-dead-letter-exchange": n("r", "dlx")})
    admin.queue_delete(n("b", "q"))


def test_queue_delete(admin, user_conn, n):
    admin.queue_declare(n("c", "q"))
    admin.queue_declare(n("w", "q"))
    ch = user_conn.channel()
    ch.queue_delete(n("c", "q"))
    deny(refused("configure", "queue", n("w", "q")), ch.queue_delete, n("w", "q"))
    admin.queue_delete(n("w", "q"))


# ---- queue.purge, basic.get, basic.consume: read on the queue ----


def test_queue_purge(admin, user_conn, n):
    admin.queue_declare(n("r", "q"), auto_delete=True)
    admin.queue_declare(n("c", "q"), auto_delete=True)
    ch = user_conn.channel()
    ch.queue_purge(n("r", "q"))
    deny(refused("read", "queue", n("c", "q")), ch.queue_purge, n("c", "q"))


def test_basic_get(admin, user_conn, n):
    admin.queue_declare(n("r", "q"), auto_delete=True)
    admin.queue_declare(n("w", "q"), auto_delete=True)
    admin.basic_publish("", n("r", "q"), b"m")
    # a round trip on the publishing connection: the publish (no confirm) is routed before
    # the get on the other connection looks (publishes are asynchronous)
    admin.queue_declare(n("r", "q"), passive=True)
    ch = user_conn.channel()
    assert ch.basic_get(n("r", "q"), auto_ack=True)[2] == b"m"
    deny(refused("read", "queue", n("w", "q")), ch.basic_get, n("w", "q"))


def test_basic_consume(admin, user_conn, n):
    admin.queue_declare(n("r", "q"), auto_delete=True)
    admin.queue_declare(n("w", "q"), auto_delete=True)
    ch = user_conn.channel()
    tag = ch.basic_consume(n("r", "q"), lambda *a: None)
    ch.basic_cancel(tag)
    deny(refused("read", "queue", n("w", "q")), ch.basic_consume, n("w", "q"), lambda *a: None)


def test_permission_is_checked_before_existence(user_conn, n):
    # RabbitMQ checks permissions first: a forbidden missing queue is 403, not 404
    for fn, args in [
        ("basic_get", (n("w", "missing"),)),
        ("queue_purge", (n("w", "missing"),)),
        ("queue_bind", (n("r", "missing"), "amq.direct")),
        ("exchange_bind", (n("r", "missing"), "amq.direct")),
    ]:
        ch = user_conn.channel()
        expect_channel_close(403, getattr(ch, fn), *args)
    ch = user_conn.channel()
    ch.confirm_delivery()
    deny(refused("write", "exchange", n("r", "missing")), ch.basic_publish, n("r", "missing"),
         "k", b"m")
    ch = user_conn.channel()
    expect_channel_close(404, ch.basic_get, n("r", "missing"))  # allowed, then not found


# ---- queue.bind / queue.unbind: write on the queue, read on the exchange ----


@pytest.mark.parametrize("verb", ["queue_bind", "queue_unbind"])
def test_queue_bind_unbind(admin, user_conn, n, verb):
    admin.queue_declare(n("w", "q"), auto_delete=True)
    admin.queue_declare(n("r", "q"), auto_delete=True)
    admin.exchange_declare(n("r", "x"), "direct", auto_delete=True)
    admin.exchange_declare(n("w", "x"), "direct", auto_delete=True)
    admin.queue_bind(n("r", "q"), n("r", "x"), "k")  # keeps the exchanges alive
    if verb == "queue_unbind":
        admin.queue_bind(n("w", "q"), n("r", "x"), "k")
    ch = user_conn.channel()
    getattr(ch, verb)(n("w", "q"), n("r", "x"), "k")
    deny(refused("write", "queue", n("r", "q")), getattr(ch, verb), n("r", "q"), n("r", "x"),
         "k")
    ch = user_conn.channel()
    deny(refused("read", "exchange", n("w", "x")), getattr(ch, verb), n("w", "q"), n("w", "x"),
         "k")
    # both refused: write on the queue is checked before read on the exchange
    ch = user_conn.channel()
    deny(refused("write", "queue", n("r", "q")), getattr(ch, verb), n("r", "q"), n("w", "x"),
         "k")


# ---- exchange.bind / exchange.unbind: write on the destination, read on the source ----


@pytest.mark.parametrize("verb", ["exchange_bind", "exchange_unbind"])
def test_exchange_bind_unbind(admin, user_conn, n, verb):
    for name in (n("w", "x"), n("r", "x")):
        admin.exchange_declare(name, "direct")
    if verb == "exchange_unbind":
        admin.exchange_bind(n("w", "x"), n("r", "x"), "k")
    ch = user_conn.channel()
    getattr(ch, verb)(n("w", "x"), n("r", "x"), "k")
    deny(refused("write", "exchange", n("r", "x")), getattr(ch, verb), n("r", "x"), n("r", "x"),
         "k")
    ch = user_conn.channel()
    deny(refused("read", "exchange", n("w", "x")), getattr(ch, verb), n("w", "x"), n("w", "x"),
         "k")
    # both refused: write on the destination is checked before read on the source
    ch = user_conn.channel()
    deny(refused("write", "exchange", n("r", "x")), getattr(ch, verb), n("r", "x"), n("w", "x"),
         "k")
    admin.exchange_delete(n("w", "x"))
    admin.exchange_delete(n("r", "x"))


# ---- basic.publish: write on the exchange ----


def test_basic_publish(admin, user_conn, n):
    admin.exchange_declare(n("w", "x"), "fanout", auto_delete=True)
    admin.queue_declare(n("r", "q"), auto_delete=True)
    admin.queue_bind(n("r", "q"), n("w", "x"))
    ch = user_conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(n("w", "x"), "", b"ok")
    assert ch.basic_get(n("r", "q"), auto_ack=True)[2] == b"ok"
    deny(refused("write", "exchange", "amq.fanout"), ch.basic_publish, "amq.fanout", "", b"no")


def test_default_exchange_is_checked_as_amq_default(user_conn, n):
    ch = user_conn.channel()
    ch.confirm_delivery()
    deny(refused("write", "exchange", "amq.default"), ch.basic_publish, "", n("r", "q"), b"m")


def test_empty_permission_grants_nothing(sbroker):
    c = _connect(sbroker.port, "none")
    try:
        ch = c.channel()
        deny(refused("configure", "queue", "q1", user="none"), ch.queue_declare, "q1")
        ch = c.channel()
        ch.confirm_delivery()
        deny(refused("write", "exchange", "amq.default", user="none"), ch.basic_publish, "",
             "q", b"m")
    finally:
        c.close()


def test_a_denial_closes_only_the_channel(user_conn, n):
    ch = user_conn.channel()
    deny(refused("configure", "queue", n("r", "q")), ch.queue_declare, n("r", "q"))
    assert user_conn.is_open
    user_conn.channel().queue_declare(n("c", "q"), auto_delete=True)


def test_vhost_without_permissions_is_refused_at_open(sbroker):
    # "other" exists, but u has no permissions entry there: connection.open is 530
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", sbroker.port, "other", pika.PlainCredentials("u", "u-pw"),
            connection_attempts=1, socket_timeout=TIMEOUT))
    assert "NOT_ALLOWED - access to vhost 'other' refused for user 'u'" in str(e.value)
    c = _connect(sbroker.port, "u")  # and "/" still opens
    c.close()


# ---- the regex semantics (no broker) ----


@pytest.mark.parametrize("pattern,name,ok", [
    (".*", "anything", True),
    ("c", "abc", True),  # unanchored, as RabbitMQ's re:run
    ("^c", "abc", False),
    ("^(amq\\.gen.*|amq\\.default)$", "amq.default", True),
    ("^(amq\\.gen.*|amq\\.default)$", "amq.defaultx", False),
    ("", "q", False),  # "" is "^$": nothing but the empty name
    ("", "", True),
])
def test_permission_regex(pattern, name, ok):
    p = Permission(pattern, pattern, pattern)
    assert p.can_configure(name) is ok
    assert p.can_write(name) is ok
    assert p.can_read(name) is ok
