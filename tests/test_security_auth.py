"""Users file: logins (PLAIN with pika, AMQPLAIN with py-amqp), vhost access at connection.open,
loopback-only users, no secrets in the log, bad files, and SIGHUP reload."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys

import amqp
import amqp.exceptions
import pika
import pika.exceptions
import pytest
from amqp_helpers import TIMEOUT, expect_channel_close

from syncmq.broker.auth import Permission, User, UserStore, hash_password, save

PASSWORDS = {"alice": "alice-Pw-7d1f", "bob": "bob-Pw-93ac", "carol": "carol-Pw-55e0"}


def write_users(path, users: dict[str, dict[str, Permission]], vhosts=("/",), **kw) -> None:
    """``users``: name -> {vhost: Permission}; passwords come from PASSWORDS."""
    store = UserStore(
        {n: User(n, hash_password(PASSWORDS.get(n, n + "-pw")), ["management"], dict(p),
                 kw.pop(f"{n}_loopback_only", False))
         for n, p in users.items()},
        list(vhosts), kw.pop("loopback_users", ["guest"]),
    )
    save(store, str(path))


def params(port, user, password, vhost="/", host="127.0.0.1"):
    return pika.ConnectionParameters(
        host=host, port=port, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password), connection_attempts=1,
        socket_timeout=TIMEOUT, stack_timeout=TIMEOUT, blocked_connection_timeout=TIMEOUT,
        heartbeat=0)


def login(port, user, password=None, vhost="/", host="127.0.0.1") -> pika.BlockingConnection:
    pw = PASSWORDS.get(user, user + "-pw") if password is None else password
    return pika.BlockingConnection(params(port, user, pw, vhost, host))


def amqp_login(port, user, password, vhost="/") -> amqp.Connection:
    c = amqp.Connection(f"127.0.0.1:{port}", userid=user, password=password, virtual_host=vhost,
                        login_method="AMQPLAIN", connect_timeout=TIMEOUT)
    c.connect()
    return c


def refused_login(port, user, password, **kw) -> str:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as ei:
        login(port, user, password, **kw)
    text = str(ei.value)
    assert "(403)" in text and "ACCESS_REFUSED - Login was refused using authentication " \
        "mechanism PLAIN" in text, text
    return text


def refused_vhost(port, user, vhost) -> str:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
        login(port, user, vhost=vhost)
    text = str(ei.value)
    assert "(530)" in text, text
    return text


def nth_log(broker, text: str, n: int) -> None:
    """Wait for the n-th log line containing ``text``."""
    with broker._cond:
        ok = broker._cond.wait_for(
            lambda: sum(text in line for line in broker.lines) >= n, TIMEOUT)
    assert ok, f"no {n}th log line with {text!r}:\n" + broker.log_tail()


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users.toml"
    write_users(path, {
        "alice": {"/": Permission(), "dev": Permission()},
        "bob": {"/": Permission()},
        "carol": {"dev": Permission()},
    }, vhosts=("/", "dev", "locked"))
    return path


@pytest.fixture
def secure_broker(broker_factory, users_file):
    return broker_factory("--users-file", str(users_file), "--log-level", "debug")


# ---- logins ----


def test_plain_good_password(secure_broker):
    c = login(secure_broker.port, "alice")
    assert c.is_open
    c.close()


def test_plain_bad_password_and_unknown_user(secure_broker):
    refused_login(secure_broker.port, "alice", "not-" + PASSWORDS["alice"])
    refused_login(secure_broker.port, "mallory", "whatever-Pw-1")
    refused_login(secure_broker.port, "alice", "")  # blank passwords are refused outright
    secure_broker.wait_for_log("user 'mallory' - invalid credentials")


def test_no_implicit_guest_with_a_users_file(secure_broker):
    refused_login(secure_broker.port, "guest", "guest")


def test_amqplain_good_and_bad(secure_broker):
    c = amqp_login(secure_broker.port, "bob", PASSWORDS["bob"])
    ch = c.channel()
    q, _, _ = ch.queue_declare("", exclusive=True)
    assert q.startswith("amq.gen-")
    c.close()
    with pytest.raises(amqp.exceptions.AccessRefused) as ei:
        amqp_login(secure_broker.port, "bob", "wrong-Pw-0")
    assert ei.value.reply_code == 403
    assert "Login was refused using authentication mechanism AMQPLAIN" in str(ei.value)
    with pytest.raises(amqp.exceptions.AccessRefused):
        amqp_login(secure_broker.port, "nobody", "wrong-Pw-1")


def test_vhost_access(secure_broker):
    port = secure_broker.port
    c = login(port, "alice", vhost="dev")
    c.close()
    text = refused_vhost(port, "bob", "dev")
    assert "NOT_ALLOWED - access to vhost 'dev' refused for user 'bob'" in text
    # a vhost listed in the file exists even when nobody may use it
    text = refused_vhost(port, "alice", "locked")
    assert "NOT_ALLOWED - access to vhost 'locked' refused for user 'alice'" in text
    text = refused_vhost(port, "alice", "missing")
    assert "NOT_ALLOWED - vhost missing not found" in text
    # carol has permissions on dev only
    refused_vhost(port, "carol", "/")
    login(port, "carol", vhost="dev").close()


def test_no_secrets_in_the_log(broker_factory, users_file):
    b = broker_factory("--users-file", str(users_file), "--log-level", "debug")
    port = b.port
    secrets = list(PASSWORDS.values()) + ["guest-Pw-secret", "wrong-Pw-2a", "amqp-Pw-3b"]
    login(port, "alice").close()
    refused_login(port, "alice", "wrong-Pw-2a")
    refused_login(port, "guest", "guest-Pw-secret")
    with pytest.raises(amqp.exceptions.AccessRefused):
        amqp_login(port, "bob", "amqp-Pw-3b")
    refused_vhost(port, "bob", "dev")  # a failure after a good password
    hashes = [u["password_hash"] for u in _toml(users_file)["users"].values()]
    assert b.stop() == 0
    log = "\n".join(b.lines)
    assert "login refused" in log
    for s in secrets + hashes:
        assert s not in log, f"secret {s!r} in the broker log"


def _toml(path):
    import tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)


def _non_loopback_address() -> str | None:
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent; picks the outbound interface
        addr = s.getsockname()[0]
        if not addr.startswith("127.") and addr != "0.0.0.0":
            return addr
    return None


def test_loopback_only_users(broker_factory, tmp_path):
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("no non-loopback address on this machine")
    path = tmp_path / "users.toml"
    write_users(path, {"guest": {"/": Permission()}, "alice": {"/": Permission()},
                       "bob": {"/": Permission()}}, bob_loopback_only=True)
    b = broker_factory("--users-file", str(path), "--bind", "0.0.0.0")
    login(b.port, "guest").close()  # from 127.0.0.1: fine
    login(b.port, "alice", host=addr).close()
    for user in ("guest", "bob"):  # guest via loopback_users, bob via loopback_only
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            login(b.port, user, host=addr)
        b.wait_for_log(f"user '{user}' can only connect via localhost")


# ---- bad files ----


def _run_broker(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncmq.cli", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("content", [
    "this is = = not toml",
    'vhosts = ["/"]\n[users.x]\npassword = "plain"\n',
    'vhosts = ["/"]\n[users.x]\npassword_hash = "abc"\n',
    'vhosts = ["/"]\n[users.x]\npassword_hash = "' + "0" * 72 + '"\n'
    '[users.x.permissions."/"]\nconfigure = "("\nwrite = ""\nread = ""\n',
    'vhosts = ["/"]\n[users.x]\npassword_hash = "' + "0" * 72 + '"\n'
    '[users.x.permissions.nope]\nconfigure = ""\nwrite = ""\nread = ""\n',
])
def test_malformed_file_at_start_exits_2(tmp_path, content):
    path = tmp_path / "users.toml"
    path.write_text(content)
    r = _run_broker("--users-file", str(path), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2, r.stderr
    assert "--users-file" in r.stderr
    assert "plain" not in r.stderr or "plain-text" in r.stderr


def test_missing_file_at_start_exits_2(tmp_path):
    r = _run_broker("--users-file", str(tmp_path / "nope.toml"), "--data-dir",
                    str(tmp_path / "d"))
    assert r.returncode == 2 and "--users-file" in r.stderr and "nope.toml" in r.stderr


# ---- reload ----


def test_sighup_reload(broker_factory, tmp_path):
    path = tmp_path / "users.toml"
    write_users(path, {"alice": {"/": Permission()}, "bob": {"/": Permission()}})
    b = broker_factory("--users-file", str(path))
    keep = login(b.port, "bob")  # stays, but loses write on amq.direct
    keep_ch = keep.channel()
    keep_ch.confirm_delivery()
    keep_ch.basic_publish("amq.direct", "k", b"before")
    gone = login(b.port, "alice")  # alice is removed from the file
    gone_ch = gone.channel()
    refused_login(b.port, "carol", PASSWORDS["carol"])

    write_users(path, {"bob": {"/": Permission(".*", "^amq\\.default$", ".*")},
                       "carol": {"/": Permission(), "new-vhost": Permission()}},
                vhosts=("/", "new-vhost"))
    b.proc.send_signal(signal.SIGHUP)
    line = json.loads(b.wait_for_log("users file reloaded"))
    assert (line["users"], line["vhosts"]) == (2, 2)

    login(b.port, "carol").close()
    login(b.port, "carol", vhost="new-vhost").close()  # vhosts are created on reload
    refused_login(b.port, "alice", PASSWORDS["alice"])
    # the open connections keep working ...
    q = keep_ch.queue_declare("", exclusive=True).method.queue
    keep_ch.basic_publish("", q, b"still")
    assert keep_ch.basic_get(q, auto_ack=True)[2] == b"still"
    # ... with the new permissions: the cached write check was dropped on reload
    e = expect_channel_close(403, keep_ch.basic_publish, "amq.direct", "k", b"after")
    assert e.reply_text == ("ACCESS_REFUSED - write access to exchange 'amq.direct' in vhost "
                            "'/' refused for user 'bob'")
    assert keep.is_open
    ch2 = keep.channel()  # a channel opened after the reload: same answer
    ch2.confirm_delivery()
    expect_channel_close(403, ch2.basic_publish, "amq.direct", "k", b"after")
    # a removed user's connection stays open but may do nothing any more
    e = expect_channel_close(403, gone_ch.queue_declare, "alice-q")
    assert "configure access to queue 'alice-q' in vhost '/' refused for user 'alice'" in \
        e.reply_text
    assert gone.is_open
    keep.close()
    gone.close()


def test_malformed_reload_keeps_the_old_users(broker_factory, tmp_path):
    path = tmp_path / "users.toml"
    write_users(path, {"alice": {"/": Permission()}})
    b = broker_factory("--users-file", str(path))
    conn = login(b.port, "alice")
    path.write_text("[users.alice]\npassword_hash = 12\n")
    b.proc.send_signal(signal.SIGHUP)
    line = b.wait_for_log("users file not reloaded")
    assert "password_hash" in line and str(path) in line
    login(b.port, "alice").close()
    assert conn.is_open and conn.channel().is_open
    # a good file after a bad one is picked up again
    write_users(path, {"bob": {"/": Permission()}})
    b.proc.send_signal(signal.SIGHUP)
    nth_log(b, "users file reloaded", 1)
    login(b.port, "bob").close()
    refused_login(b.port, "alice", PASSWORDS["alice"])
    conn.close()


def test_sighup_without_users_file_still_serves(fresh_broker):
    fresh_broker.proc.send_signal(signal.SIGHUP)
    c = login(fresh_broker.port, "guest", "guest")  # default guest still there
    c.close()
    assert fresh_broker.proc.poll() is None
