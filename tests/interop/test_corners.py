"""Two corners where syncmq differed from RabbitMQ (issue 23), each run against syncmq and the
private RabbitMQ node with a restricted user ``u`` on both:

- ``queue.unbind``/``exchange.unbind`` are idempotent (``rabbit_binding:remove``) but the
  permissions are checked first, even when nothing exists to unbind (403 texts compared with
  the permission word left out: syncmq names it, a documented difference);
- ``connection.update-secret``: the same secret is accepted on both (update-secret-ok, the
  connection goes on); a wrong one is refused by syncmq with RabbitMQ's 530 text, which
  RabbitMQ's internal backend never sends (it accepts any secret: a documented difference).

User ``u`` may configure ``c-``, write ``w-`` and read ``r-`` names; ``guest`` may do anything.
"""

from __future__ import annotations

import os
import pprint
import re
import signal
import subprocess

import pika
import pika.exceptions as pe
import pytest
import scenarios

from syncmq.broker.auth import Permission, User, UserStore, hash_password, save

U_PERM = Permission("^c-", "^w-", "^r-")


def _users(u_password: str) -> UserStore:
    return UserStore({
        "guest": User("guest", hash_password("guest"), ["administrator"], {"/": Permission()}),
        "u": User("u", hash_password(u_password), [], {"/": U_PERM}),
    }, ["/"], ["guest"])


@pytest.fixture(scope="module")
def rabbit_u(rabbitmq):
    """User ``u`` on the RabbitMQ node, with the permissions of syncmq's users file."""
    def ctl(*args):
        r = subprocess.run([rabbitmq.ctl, "-n", rabbitmq.node, *args], env=rabbitmq.env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    ctl("add_user", "u", "u-pw")
    ctl("set_permissions", "-p", "/", "u", "^c-", "^w-", "^r-")
    yield rabbitmq
    ctl("delete_user", "u")


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corners") / "users.toml"
    save(_users("u-pw"), str(path))
    return path


@pytest.fixture(scope="module")
def ubroker(tmp_path_factory, users_file):
    from brokerproc import start_broker
    b = start_broker(tmp_path_factory, "--users-file", str(users_file))
    yield b
    assert b.stop() == 0, b.log_tail()
    assert not b.tracebacks()


def _as_u(s: scenarios.Session) -> pika.BlockingConnection:
    return s.connect(credentials=pika.PlainCredentials("u", "u-pw"))


def _unbind_permissions(s: scenarios.Session) -> None:
    """Nothing below exists (but amq.direct): each unbind is refused for the permission it
    lacks, in RabbitMQ's order, before the broker looks for the queue, exchange or binding."""
    u = _as_u(s)
    w, r = f"w-{s.prefix}", f"r-{s.prefix}"
    cases = [
        ("q.unbind no write on queue", lambda ch: ch.queue_unbind(r + "-q", "amq.direct")),
        ("q.unbind no read on exchange", lambda ch: ch.queue_unbind(w + "-q", w + "-x")),
        ("q.unbind allowed", lambda ch: ch.queue_unbind(w + "-q", r + "-x")),
        ("q.unbind default exchange", lambda ch: ch.queue_unbind(w + "-q", "")),
        ("q.unbind default exchange, no write", lambda ch: ch.queue_unbind(r + "-q", "")),
        ("x.unbind no write on destination", lambda ch: ch.exchange_unbind(r + "-d", r + "-s")),
        ("x.unbind no read on source", lambda ch: ch.exchange_unbind(w + "-d", w + "-s")),
        ("x.unbind allowed", lambda ch: ch.exchange_unbind(w + "-d", r + "-s")),
        ("q.bind allowed, missing", lambda ch: ch.queue_bind(w + "-q", r + "-x")),
    ]
    for what, fn in cases:
        ch = u.channel()
        s.expect_error(what, lambda fn=fn, ch=ch: fn(ch))


def _update_secret(s: scenarios.Session) -> None:
    u = _as_u(s)
    ch = u.channel()
    u.update_secret("u-pw", "token refresh")
    s.rec("update-secret same secret", "ok")
    s.expect_error("still serving", lambda: ch.queue_declare(f"c-{s.prefix}-q", exclusive=True))
    s.expect_error("permissions unchanged", lambda: ch.queue_declare(s.n("q"), exclusive=True))


def _update_secret_wrong(s: scenarios.Session) -> None:
    u = _as_u(s)
    u.channel()

    def go():
        u.update_secret("not-the-password", "bad token")
        u.channel()  # a round trip: a refused secret has closed the connection by now
    s.expect_error("update-secret wrong secret", go)


def _transcripts(rabbit, broker, fn) -> tuple[list, list]:
    prefix = f"p{os.urandom(4).hex()}"
    out = []
    for port in (rabbit.port, broker.port):
        s = scenarios.Session(port, prefix)
        try:
            fn(s)
        finally:
            s.close()
        out.append([tuple(re.sub(r"- (configure|write|read) access to", "- access to", x)
                          if isinstance(x, str) else x for x in item)
                    for item in s.transcript])
    return out[0], out[1]


@pytest.mark.parametrize("fn", [_unbind_permissions, _update_secret], ids=lambda f: f.__name__)
def test_same_as_rabbitmq(rabbit_u, ubroker, fn):
    expected, got = _transcripts(rabbit_u, ubroker, fn)
    assert got == expected, (f"--- RabbitMQ\n{pprint.pformat(expected)}\n"
                             f"--- syncmq\n{pprint.pformat(got)}")


def test_wrong_secret_refused_rabbitmq_internal_backend_accepts(rabbit_u, ubroker):
    """The one documented difference: syncmq checks the secret, RabbitMQ 3.10's internal
    backend (``state_can_expire() -> false``) does not."""
    rabbit, got = _transcripts(rabbit_u, ubroker, _update_secret_wrong)
    assert rabbit == [("update-secret wrong secret", "ok")]
    assert got == [("update-secret wrong secret", "connection.close", 530,
                    "NOT_ALLOWED - New secret was refused by one of the backends")]
    # the broker still serves everyone else
    s = scenarios.Session(ubroker.port, "x")
    try:
        _as_u(s).channel().queue_declare("c-still", exclusive=True)
    finally:
        s.close()


def _reload(b, path, store: UserStore) -> None:
    """Write the users file and SIGHUP the broker; wait for its reload line."""
    def count():
        return sum("users file reloaded" in line for line in b.lines)
    before = count()
    save(store, str(path))
    b.proc.send_signal(signal.SIGHUP)
    with b._cond:
        assert b._cond.wait_for(lambda: count() > before, 15), b.log_tail()


def test_update_secret_after_users_file_change(broker_factory, tmp_path):
    """A changed password: the old secret is refused (530, connection closed, the broker
    serving the others), the new one accepted, and the permissions of the reloaded file
    apply on the open connection's channels (a cached publish check included)."""
    path = tmp_path / "users.toml"
    save(_users("u-pw"), str(path))
    b = broker_factory("--users-file", str(path))

    def connect():
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", b.port, credentials=pika.PlainCredentials("u", "u-pw")))
    keep, stale = connect(), connect()
    admin = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    admin.channel().exchange_declare("w-x", "fanout")
    ch = keep.channel()
    ch.basic_publish("w-x", "", b"allowed: the check is cached on the channel")
    ch.queue_declare("c-q", exclusive=True)
    store = _users("new-pw")
    store.users["u"] = User("u", hash_password("new-pw"), [], {"/": Permission("^c-", "", "")})
    _reload(b, path, store)
    with pytest.raises(pe.ConnectionClosedByBroker) as e:
        stale.update_secret("u-pw", "stale token")
        stale.channel()
    assert (e.value.reply_code, e.value.reply_text) == (
        530, "NOT_ALLOWED - New secret was refused by one of the backends")
    keep.update_secret("new-pw", "fresh token")
    ch.queue_declare("c-q2", exclusive=True)  # configure still granted
    with pytest.raises(pe.ChannelClosedByBroker) as e:
        ch.basic_publish("w-x", "", b"write revoked")
        ch.queue_declare("c-q3", exclusive=True)
    assert e.value.reply_code == 403
    assert keep.is_open
    admin.channel().exchange_delete("w-x")
    keep.close()
    admin.close()


def _server_properties(port: int) -> dict:
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        return c._impl.server_properties
    finally:
        c.close()


def test_server_properties_default_and_override(rabbitmq, broker_factory):
    """syncmq presents itself (product ``syncmq``, its own version) with RabbitMQ's
    capabilities table (update-secret is not in it, on either); ``--server-properties``
    overrides the strings for client code that checks ``product``/``version``."""
    rabbit = _server_properties(rabbitmq.port)
    b = broker_factory("--server-properties", "product=RabbitMQ, version=3.10.8,x-extra=1")
    got = _server_properties(b.port)
    assert got["capabilities"] == rabbit["capabilities"]
    assert (got["product"], got["version"], got["x-extra"]) == ("RabbitMQ", "3.10.8", "1")
    from syncmq import __version__
    default = _server_properties(broker_factory().port)
    assert (default["product"], default["version"]) == ("syncmq", __version__)
    assert default["capabilities"] == rabbit["capabilities"]


@pytest.mark.parametrize("bad", ["product", "=x", "capabilities=x"])
def test_server_properties_bad_value(bad):
    from syncmq.config import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--server-properties", bad])
