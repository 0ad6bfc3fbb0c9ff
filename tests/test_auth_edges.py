"""Login edge cases an attacker tries (issue #19), each with RabbitMQ's reply, and the broker
still serving everyone else afterwards:

- PLAIN with an authorization identity other than the user: dropped (RabbitMQ drops any
  non-empty one; ``tests/interop/test_auth_differential.py`` checks that against RabbitMQ);
- EXTERNAL with several CNs: the name is all of them joined with ',' (never the last one);
  ``--ssl-cert-login-from distinguished_name`` logs in with the RFC 4514 subject;
- IPv4-mapped IPv6 loopback (``--bind ::``) is loopback for guest;
- sockets that never finish the handshake do not count against --max-connections; they
  have their own bound (--max-handshakes) and the handshake timeout.
"""

from __future__ import annotations

import json
import socket

import amqp_raw as raw
import pika
import pytest

from syncmq.broker.auth import (
    InternalLogin,
    Permission,
    User,
    UserStore,
    hash_password,
    is_loopback,
    save,
)
from syncmq.broker.certname import distinguished_name, escape_rdn_value, login_name
from syncmq.wire import _spec


def _users(path, names, vhosts=("/",)) -> str:
    store = UserStore({n: User(n, hash_password(n + "-pw"), [], {"/": Permission()})
                       for n in names}, list(vhosts), ["guest"])
    save(store, str(path))
    return str(path)


def _plain(port: int, response: bytes) -> raw.RawClient:
    c = raw.RawClient(port)
    c.send_header()
    c.expect_method(0, _spec.Connection.Start)
    c.send_method(0, _spec.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism="PLAIN", response=response, locale="en_US"))
    return c


def _still_serves(port: int) -> None:
    with raw.connect(port) as c:
        c.open_channel()


# ---- PLAIN authzid ----


def test_plain_authzid_other_than_the_user_is_dropped(broker):
    with _plain(broker.port, b"someone\x00guest\x00guest") as c:
        frames = c.expect_eof()  # no tune: the connection is dropped, as RabbitMQ does
        assert not [f for f in frames if f.type == raw.FRAME_METHOD], frames
    broker.wait_for_log("PLAIN authorization identity differs")
    # the same identity as the user is no impersonation: accepted
    with _plain(broker.port, b"guest\x00guest\x00guest") as c:
        c.expect_method(0, _spec.Connection.Tune)
    _still_serves(broker.port)


def test_plain_authzid_cannot_log_in_as_another_user(broker_factory, tmp_path):
    b = broker_factory("--users-file", _users(tmp_path / "u.toml", ["app", "admin"]))
    with _plain(b.port, b"admin\x00app\x00app-pw") as c:
        c.expect_eof()
    with _plain(b.port, b"app\x00admin\x00admin-pw") as c:
        c.expect_eof()
    assert not any('"user": "admin"' in line and "connection opened" in line
                   for line in b.lines)
    with raw.connect(b.port, user="app", password="app-pw") as c:  # plain PLAIN still works
        c.open_channel()


# ---- IPv4-mapped loopback ----


@pytest.mark.parametrize("peer,expected", [
    ("::ffff:127.0.0.1", True), (("::ffff:127.0.0.9", 5672, 0, 0), True), ("::1", True),
    ("127.0.0.1", True), ("::ffff:10.0.0.1", False), ("10.0.0.1", False), ("nonsense", False),
])
def test_is_loopback(peer, expected):
    assert is_loopback(peer) is expected


def test_guest_from_127_0_0_1_on_a_dual_stack_listener(broker_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6")
    b = broker_factory("--bind", "::")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    conn.channel().queue_declare("", exclusive=True)
    conn.close()
    b.wait_for_log("::ffff:127.0.0.1")


# ---- connections before the handshake ----


def test_idle_sockets_do_not_count_against_max_connections(broker_factory):
    b = broker_factory("--max-connections", "2")
    idle = [socket.create_connection(("127.0.0.1", b.port)) for _ in range(5)]
    try:
        kept = [raw.connect(b.port) for _ in range(2)]
        with pytest.raises((raw.EOF, ConnectionError, TimeoutError)):
            raw.connect(b.port)  # the third open connection is refused at accept
        b.wait_for_log("limit of 2 connections is reached")
        kept[0].close()
        b.wait_for_log("client unexpectedly closed")  # ... and its slot is free again
        with raw.connect(b.port) as again:
            again.open_channel()
        kept[1].close()
    finally:
        for s in idle:
            s.close()


def test_open_beyond_max_connections_is_refused_at_connection_open(broker_factory):
    """Two clients in the handshake at once, limit 1: the second to open gets 530."""
    b = broker_factory("--max-connections", "1")
    with raw.RawClient(b.port) as late:
        late.handshake(open_=False)
        with raw.connect(b.port) as first:
            late.send_method(0, _spec.Connection.Open(virtual_host="/"))
            code, _, _ = late.expect_close()
            assert code == 530
            first.open_channel()


def test_handshake_bound_and_timeout(broker_factory):
    b = broker_factory("--max-handshakes", "3", "--handshake-timeout", "2")
    with raw.connect(b.port) as opened:  # an open connection is not in the handshake count
        idle = [socket.create_connection(("127.0.0.1", b.port)) for _ in range(3)]
        try:
            extra = socket.create_connection(("127.0.0.1", b.port), timeout=10)
            assert extra.recv(10) == b""  # closed at once
            extra.close()
            b.wait_for_log("limit of 3 connections in the handshake is reached")
            for s in idle:  # the handshake timeout closes them
                s.settimeout(30)
                assert s.recv(10) == b""
        finally:
            for s in idle:
                s.close()
        opened.open_channel()
        with raw.connect(b.port) as c:
            c.open_channel()


# ---- EXTERNAL ----


def test_cert_name_derivation():
    cert = {"subject": ((("organizationName", "x"),), (("commonName", "app"),),
                        (("commonName", "admin"),))}
    assert login_name(cert) == "app,admin"
    assert login_name(cert, "distinguished_name") == "CN=admin,CN=app,O=x"
    assert login_name({"subject": ((("organizationName", "x"),),)}) is None
    multi = {"subject": ((("countryName", "DE"),), (("commonName", "a"), ("userId", "b")))}
    assert distinguished_name(multi) == "CN=a+UID=b,C=DE"
    assert escape_rdn_value(' #a,b+c;"<>\\ ') == '\\ #a\\,b\\+c\\;\\"\\<\\>\\\\\\ '
    assert escape_rdn_value("é\n~") == "\\C3\\A9\\0A\\7E"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tls = pytest.importorskip("tls_helpers")
    return tls.make_pki(tmp_path_factory.mktemp("pki"))


def _several_cns(pki, tag="several"):
    import tls_helpers as tls
    x509 = tls.x509
    name = x509.Name([x509.NameAttribute(tls.NameOID.ORGANIZATION_NAME, "x"),
                      x509.NameAttribute(tls.NameOID.COMMON_NAME, "app"),
                      x509.NameAttribute(tls.NameOID.COMMON_NAME, "admin")])
    pki[tag] = tls.client_cert(pki, tag, name)
    return tag


def _external(port, pki, client):
    import tls_helpers as tls
    return pika.BlockingConnection(tls.tls_params(
        port, pki, client, credentials=pika.credentials.ExternalCredentials(),
        connection_attempts=1))


def test_external_with_several_cns_joins_them(broker_factory, pki, tmp_path):
    import tls_helpers as tls
    users = _users(tmp_path / "u.toml", ["admin", "guest"])
    b = tls.tls_broker(broker_factory, pki, "--tls-fail-if-no-peer-cert", "--users-file", users)
    client = _several_cns(pki)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        _external(b.tls_port, pki, client)
    b.wait_for_log("user 'app,admin' (from the client certificate) does not exist")
    _external(b.tls_port, pki, "guest").close()  # a one-CN certificate still logs in


def test_external_distinguished_name_mode(broker_factory, pki, tmp_path):
    import tls_helpers as tls
    users = _users(tmp_path / "u.toml", ["CN=admin,CN=app,O=x"])
    b = tls.tls_broker(broker_factory, pki, "--tls-fail-if-no-peer-cert", "--users-file", users,
                       "--ssl-cert-login-from", "distinguished_name")
    conn = _external(b.tls_port, pki, _several_cns(pki, "several-dn"))
    conn.channel()
    conn.close()
    line = b.wait_for_log("connection opened")
    assert json.loads(line)["user"] == "CN=admin,CN=app,O=x"
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        _external(b.tls_port, pki, "guest")  # "CN=guest" is no user here


def test_the_internal_login_is_none_or_a_named_user_of_the_store():
    """The internal password logs in as ``none`` or, trusted, as a user of the store (a
    shovel's local URI naming a user without a password); with any other password, or for a
    name the store does not have, it grants nothing."""
    login = InternalLogin()
    alice = User("alice", hash_password("pw"), [], {"/": Permission()})
    users = {"alice": alice}
    assert login.check("none", login.password, users) is login.user
    assert login.user.internal and not alice.internal
    assert login.check("alice", login.password, users) is alice
    assert login.check("bob", login.password, users) is None
    assert login.check("alice", "pw", users) is None
    assert login.check("none", "guest", users) is None
