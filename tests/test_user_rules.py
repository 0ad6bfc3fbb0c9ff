"""Topic permissions and user limits kept with the users (issue #16): the users file (read,
written, refused when malformed), syncmqctl's verbs offline and against a running broker, the
rules enforced by a real broker started from the file, surviving a restart, applied live on
SIGHUP, counts given back when connections and channels close, and no topic-permission work
per publish for a user who has none. RabbitMQ's codes and texts are checked against RabbitMQ
itself in tests/interop/test_user_rules_differential.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import amqp_raw as raw
import pika
import pika.exceptions
import pytest
from amqp_helpers import TIMEOUT

import syncmq
from syncmq.broker.auth import Permission, User, UsersFileError, UserStore, dumps, save
from syncmq.broker.erlterm import term as erlang_term
from syncmq.broker.user_rules import LimitError, TopicPermission, validate_limits
from syncmq.wire import _spec


def _ctl(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncmq.ctl", *args], input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()))


def _file(tmp_path) -> str:
    path = str(tmp_path / "users.toml")
    F = ["--users-file", path]
    for cmd in (["add_user", "admin", "admin-pw"], ["set_user_tags", "admin", "administrator"],
                ["set_permissions", "admin", ".*", ".*", ".*"],
                ["add_user", "app", "app-pw"], ["set_permissions", "app", ".*", ".*", ".*"],
                ["set_topic_permissions", "app", "amq.topic", "^{username}\\.", "^r\\.{vhost}"],
                ["set_user_limits", "app", '{"max-connections": 2, "max-channels": 3}']):
        r = _ctl(*F, *cmd)
        assert r.returncode == 0, r.stderr
    return path


# ---- the users file ----

def test_users_file_round_trip_with_rules(tmp_path):
    tp = {"/": {"amq.topic": TopicPermission("^{username}\\.", "", "a.b", "/"),
                "": TopicPermission("x", "y", "a.b", "/"),
                'odd "name"\\': TopicPermission(".*", "^$", "a.b", "/")}}
    user = User("a.b", "00" * 36, [], {"/": Permission()}, False, tp,
                {"max-connections": -1, "max-channels": 0})
    store = UserStore({"a.b": user}, ["/"], [])
    path = str(tmp_path / "u.toml")
    save(store, path)
    back = UserStore.load(path).users["a.b"]
    assert back.topic_permissions == tp and back.limits == user.limits
    assert dumps(UserStore.load(path)) == dumps(store)
    # variables are expanded with the entry's user and vhost, as plain text
    t = back.topic_permission("/", "amq.topic")
    assert t.allows("write", "a.b.x") and t.allows("write", "aXb.x")  # "." is a regex dot
    assert not t.allows("write", "c.x") and t.allows("read", "") and not t.allows("read", "r")
    # an expansion that makes the regex invalid grants nothing (RabbitMQ's re:run fails)
    odd = TopicPermission("^{username}$", "{vhost}", "a(b", "/")
    assert not odd.allows("write", "a(b") and odd.allows("read", "/")


@pytest.mark.parametrize("extra, error", [
    ('[users.u.topic_permissions."/"."x"]\nwrite = "("\nread = ""\n', "not a valid regex"),
    ('[users.u.topic_permissions."/"."x"]\nwrite = 5\nread = ""\n', "write is not a string"),
    ('[users.u.topic_permissions."/"."x"]\nwrite = ""\n', "with write and read"),
    ('[users.u.topic_permissions."nov"."x"]\nwrite = ""\nread = ""\n', "vhost 'nov'"),
    ('[users.u.topic_permissions."/"]\nx = 1\n', "must be a table with write and read"),
    ("[users.u.limits]\nmax-queues = 1\n", 'Unrecognised terms [{<<"max-queues">>,1}]'),
    ('[users.u.limits]\nmax-channels = "1"\n', 'should be a number, actually was <<"1">>'),
    ("[users.u.limits]\nmax-channels = 1.5\n", "should be a number, actually was 1.5"),
])
def test_users_file_refuses_bad_rules(tmp_path, extra, error):
    path = tmp_path / "u.toml"
    path.write_text('vhosts = ["/"]\n[users.u]\npassword_hash = "' + "00" * 36 + '"\n' + extra)
    with pytest.raises(UsersFileError) as e:
        UserStore.load(str(path))
    assert error in str(e.value)


def test_limit_texts_are_rabbitmqs():
    cases = {'{"max-connections": "3"}': 'max-connections should be a number, actually was '
                                          '<<"3">>',
             '{"max-channels": null}': "max-channels should be a number, actually was null",
             '{"max-channels": [104, 105]}': 'actually was "hi"',
             '{"max-channels": {"a": 1e20}}': 'actually was #{<<"a">> => 1.0e20}',
             '{"b": 1, "a": true}': 'Unrecognised terms [{<<"a">>,true},{<<"b">>,1}] in '
                                    "user-limits"}
    for text, expected in cases.items():
        with pytest.raises(LimitError) as e:
            validate_limits(json.loads(text))
        assert expected in str(e.value), text
    assert erlang_term("é") == '<<"é">>'
    assert validate_limits({"max-channels": -1}) == {"max-channels": -1}


# ---- syncmqctl offline ----

def test_ctl_offline_verbs(tmp_path):
    path = _file(tmp_path)
    F = ["--users-file", path]
    r = _ctl(*F, "list_topic_permissions")
    assert r.stdout.splitlines() == ['Listing topic permissions for vhost "/" ...',
                                     "user\texchange\twrite\tread",
                                     "app\tamq.topic\t^{username}\\.\t^r\\.{vhost}"]
    assert _ctl(*F, "-q", "list_user_topic_permissions", "app").stdout == \
        "/\tamq.topic\t^{username}\\.\t^r\\.{vhost}\n"
    assert _ctl(*F, "-q", "list_user_limits", "--user", "app").stdout == \
        '{"max-channels":3,"max-connections":2}\n'
    assert _ctl(*F, "-q", "list_user_limits", "--global").stdout.splitlines() == [
        "user\tlimits", 'app\t{"max-channels":3,"max-connections":2}']
    # each with rabbitmqctl's text and exit code (the remote mode's, syncmq.ctl_errors)
    refusals = {("set_topic_permissions", "nobody", "x", "a", "b"):
                    ("User nobody does not exist", 67),
                ("set_topic_permissions", "-p", "nov", "app", "x", "a", "b"):
                    ("Virtual host nov does not exist", 69),
                ("set_topic_permissions", "app", "x", "(", "b"): (':invalid_regexp, "("', 69),
                ("set_user_limits", "app", "{bad"): ("JSON decoding error", 69),
                ("set_user_limits", "app", '{"max-queues": 1}'): ("Unrecognised terms", 69),
                ("set_user_limits", "nobody", "{}"): ('{:no_such_user, "nobody"}', 69),
                ("clear_user_limits", "nobody", "all"): ('{:no_such_user, "nobody"}', 69),
                ("list_user_topic_permissions", "nobody"): ('{:no_such_user, "nobody"}', 69),
                ("list_topic_permissions", "-p", "nov"): ("Virtual host 'nov' does not", 65)}
    before = open(path).read()
    for args, (text, code) in refusals.items():
        r = _ctl(*F, *args)
        assert r.returncode == code and text in r.stderr, (args, r.returncode, r.stderr)
    assert open(path).read() == before  # a refused change writes nothing
    assert _ctl(*F, "set_topic_permissions", "app", "amq.topic", "a").returncode == 64  # usage
    r = _ctl(*F, "clear_user_limits", "app", "max-channels")
    assert r.stdout == 'Clearing "max-channels" limit for user "app" ...\n'
    _ctl(*F, "clear_topic_permissions", "app", "amq.topic")
    assert UserStore.load(path).users["app"].topic_permissions == {}
    assert UserStore.load(path).users["app"].limits == {"max-connections": 2}
    assert _ctl(*F, "clear_user_limits", "app", "all").returncode == 0
    assert UserStore.load(path).users["app"].limits == {}
    _ctl(*F, "set_topic_permissions", "app", "x", "a", "b")
    _ctl(*F, "delete_vhost", "/")  # drops the vhost's topic permissions too
    assert UserStore.load(path).users["app"].topic_permissions == {}


# ---- a broker started from the file ----

def _connect(port: int, user: str = "app", password: str = "app-pw"):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, "/", pika.PlainCredentials(user, password),
        connection_attempts=1, socket_timeout=TIMEOUT, stack_timeout=TIMEOUT, heartbeat=0))


def _publish(conn, key: str) -> str:
    ch = conn.channel()
    ch.confirm_delivery()
    try:
        ch.basic_publish("amq.topic", key, b"m")
    except pika.exceptions.ChannelClosedByBroker as e:
        return f"{e.reply_code} {e.reply_text}"
    with contextlib.suppress(Exception):
        ch.close()
    return "ok"


def test_rules_from_users_file_survive_restart_and_reload(brokers_on_dir, tmp_path):
    path = _file(tmp_path)
    start, restart = brokers_on_dir
    b = start("--users-file", path)
    refused = ("403 ACCESS_REFUSED - access to topic 'other.x' in exchange 'amq.topic' in "
               "vhost '/' refused for user 'app'")
    for _ in range(2):
        c = _connect(b.port)
        assert _publish(c, "app.x") == "ok"
        assert _publish(c, "other.x") == refused
        ch = c.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", "r./.x")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_bind(q, "amq.topic", "x")
        assert e.value.reply_code == 403
        c.close()
        assert b.stop() == 0
        b = restart(b, "--users-file", path)  # the rule is in the file
    # SIGHUP after an offline edit: the open connection's next check uses the new rule
    c = _connect(b.port)
    assert _publish(c, "other.x") == refused
    assert _ctl("--users-file", path, "set_topic_permissions", "app", "amq.topic", "^other",
                "").returncode == 0
    b.proc.send_signal(signal.SIGHUP)
    b.wait_for_log("users file reloaded")
    assert _publish(c, "other.x") == "ok"
    assert _publish(c, "app.x").startswith("403 ")
    c.close()


def _close(c) -> None:
    with contextlib.suppress(Exception):
        c.close()


def test_user_limits_from_users_file(brokers_on_dir, tmp_path):
    path = _file(tmp_path)  # app: max-connections 2, max-channels 3
    b = brokers_on_dir[0]("--users-file", path)
    for _ in range(3):  # counts are given back: the same again and again
        c1, c2 = raw.connect(b.port, user="app", password="app-pw"), \
            raw.connect(b.port, user="app", password="app-pw")
        c3 = raw.RawClient(b.port)
        c3.handshake(user="app", password="app-pw", open_=False)
        c3.send_method(0, _spec.Connection.Open(virtual_host="/"))
        assert c3.expect_close() == (530, 10, 40)
        assert c3.last_close.reply_text == ("NOT_ALLOWED - connection refused for user 'app': "
                                            "user connection limit (2) is reached")
        c3.close()
        c1.open_channel(1)
        c1.open_channel(2)
        c2.open_channel(1)  # the limit counts the user's channels on every connection
        c2.send_method(2, _spec.Channel.Open())
        assert c2.expect_close() == (530, 0, 0)
        assert c2.last_close.reply_text == (
            "NOT_ALLOWED - number of channels opened for user 'app' has reached the maximum "
            "allowed user limit of (3)")
        c2.close()
        c1.send_method(2, _spec.Channel.Close(reply_code=200, reply_text="", class_id=0,
                                              method_id=0))
        c1.expect_method(2, _spec.Channel.CloseOk)
        c1.open_channel(3)  # a closed channel is given back
        c1.close()
        # another user is not limited by app's counts
        admin = [raw.connect(b.port, user="admin", password="admin-pw") for _ in range(3)]
        for c in admin:
            c.close()
    assert not b.tracebacks()


def test_ctl_remote_verbs(broker):
    env = dict(os.environ, PYTHONPATH=os.getcwd(),
               SYNCMQ_MANAGEMENT_URL=f"http://127.0.0.1:{broker.management_port}")

    def ctl(*args):
        return subprocess.run([sys.executable, "-m", "syncmq.ctl", *args], capture_output=True,
                              text=True, timeout=60, env=env)

    assert ctl("add_user", "rctl", "pw").returncode == 0
    try:
        r = ctl("set_topic_permissions", "rctl", "amq.topic", "^a", "^b")
        assert r.returncode == 0 and r.stdout.startswith('Setting topic permissions on "amq.')
        assert ctl("set_topic_permissions", "-p", "/", "rctl", "x", "w", "r").returncode == 0
        assert ctl("-q", "list_user_topic_permissions", "rctl").stdout.splitlines() == [
            "/\tamq.topic\t^a\t^b", "/\tx\tw\tr"]
        rows = ctl("-q", "list_topic_permissions").stdout.splitlines()
        assert rows[0] == "user\texchange\twrite\tread" and "rctl\tx\tw\tr" in rows
        assert json.loads(ctl("list_topic_permissions", "--formatter", "json").stdout)
        assert ctl("clear_topic_permissions", "rctl", "x").returncode == 0
        assert ctl("-q", "list_user_topic_permissions", "rctl").stdout == "/\tamq.topic\t^a\t^b\n"
        assert ctl("clear_topic_permissions", "rctl").returncode == 0
        assert ctl("clear_topic_permissions", "rctl").returncode == 0  # none: still fine
        assert ctl("set_user_limits", "rctl", '{"max-channels": 4}').returncode == 0
        assert ctl("set_user_limits", "rctl", '{"max-connections": 1}').returncode == 0
        assert ctl("-q", "list_user_limits", "--user", "rctl").stdout == \
            '{"max-channels":4,"max-connections":1}\n'
        assert 'rctl\t{"max-channels":4,"max-connections":1}' in \
            ctl("-q", "list_user_limits", "--global").stdout
        assert ctl("-q", "list_user_limits").stdout == "{}\n"  # guest, as rabbitmqctl
        for args, (text, code) in {
                ("set_user_limits", "rctl", '{"max-channels": "x"}'):
                    ('max-channels should be a number, actually was <<"x">>', 69),
                ("set_user_limits", "nobody", "{}"): ('{:no_such_user, "nobody"}', 69),
                ("set_topic_permissions", "rctl", "x", "(", "a"): ("invalid_regexp", 69),
                ("set_topic_permissions", "nobody", "x", "a", "b"):
                    ("User nobody does not exist", 67),
                ("set_topic_permissions", "-p", "nov", "rctl", "x", "a", "b"):
                    ("Virtual host nov does not exist", 69),
                ("clear_topic_permissions", "-p", "nov", "rctl"):
                    ("Virtual host nov does not exist", 69),
                ("list_topic_permissions", "-p", "nov"): ("'nov' does not exist", 65),
                ("list_user_limits", "--user", "nobody"): ("no_such_user", 69)}.items():
            r = ctl(*args)
            assert r.returncode == code and text in r.stderr, (args, r.returncode, r.stderr)
        assert ctl("clear_user_limits", "rctl", "all").returncode == 0
        assert ctl("-q", "list_user_limits", "--user", "rctl").stdout == "{}\n"
    finally:
        ctl("delete_user", "rctl")


# ---- cost: no topic-permission work for a user without topic permissions ----

def test_no_topic_work_without_topic_permissions(monkeypatch):
    """basic.publish to a topic exchange calls ``access.topic`` once per users store (to
    learn that the user has no topic permissions), then never again; with one, it is
    checked on every publish. Counted in-process (syncmq.Server)."""
    import syncmq.methods.access as access
    calls = []
    real = access.topic
    monkeypatch.setattr(access, "topic", lambda *a: (calls.append(a), real(*a)))
    allows = []
    real_allows = TopicPermission.allows
    monkeypatch.setattr(TopicPermission, "allows",
                        lambda self, *a: (allows.append(a), real_allows(self, *a))[1])
    with syncmq.Server(management_port=0) as s:
        c = pika.BlockingConnection(pika.URLParameters(s.url))
        ch = c.channel()
        ch.confirm_delivery()
        for i in range(200):
            ch.basic_publish("amq.topic", f"k.{i}", b"m")
        assert len(calls) == 1 and allows == []
        # a topic permission for guest on another exchange: one re-read, still no regex
        user = s.node.broker.users.users["guest"]
        user.topic_permissions = {"/": {"other": TopicPermission("^$", "^$", "guest", "/")}}
        store = UserStore(dict(s.node.broker.users.users), ["/"], ["guest"])
        s.node.broker.users = store
        for i in range(200):
            ch.basic_publish("amq.topic", f"k.{i}", b"m")
        assert len(calls) == 201 and allows == []
        user.topic_permissions = {"/": {"amq.topic": TopicPermission("^k", "", "guest", "/")}}
        s.node.broker.users = UserStore(dict(store.users), ["/"], ["guest"])
        for i in range(200):
            ch.basic_publish("amq.topic", f"k.{i}", b"m")
        assert len(allows) == 200
        c.close()


# ---- changes through the API are written to the users file ----

def _http(port: int, method: str, path: str, body=None, auth=b"admin:admin-pw"):
    import base64
    import urllib.error
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", data=data, method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    return status, json.loads(text) if text else None


def test_api_changes_survive_kill_and_restart(brokers_on_dir, tmp_path):
    """With --users-file, topic permissions and limits set through the API are in the file
    (fsynced) before the answer: they survive kill -9 and a SIGTERM restart."""
    path = _file(tmp_path)
    start, restart = brokers_on_dir
    b = start("--users-file", path)
    m = b.management_port
    assert _http(m, "PUT", "/topic-permissions/%2F/app",
                 {"exchange": "amq.topic", "write": "^api\\.", "read": ""})[0] == 204
    assert _http(m, "PUT", "/user-limits/app/max-channels", {"value": 11})[0] == 204
    assert _http(m, "PUT", "/users/api-made", {"password": "x", "tags": ""})[0] == 201
    expected = {"topic": [{"user": "app", "vhost": "/", "exchange": "amq.topic",
                           "write": "^api\\.", "read": ""}],
                "limits": [{"user": "app", "value": {"max-channels": 11,
                                                     "max-connections": 2}}]}
    for stop in (lambda b: b.stop(signal.SIGKILL), lambda b: b.stop()):
        stop(b)
        b = restart(b, "--users-file", path)
        m = b.management_port
        assert _http(m, "GET", "/topic-permissions/%2F/app")[1] == expected["topic"]
        assert _http(m, "GET", "/user-limits/app")[1] == expected["limits"]
        assert _http(m, "GET", "/users/api-made")[0] == 200
        c = _connect(b.port)
        assert _publish(c, "api.x") == "ok" and _publish(c, "app.x").startswith("403 ")
        c.close()
    # a file the broker cannot write refuses the change, and nothing changes (its directory
    # moved away: the temp file cannot be created, even by root)
    moved = str(tmp_path) + "-moved"
    os.rename(tmp_path, moved)
    try:
        status, body = _http(m, "PUT", "/user-limits/app/max-channels", {"value": 1})
    finally:
        os.rename(moved, tmp_path)
    assert status == 500 and "could not be written, nothing was changed" in body["reason"]
    assert _http(m, "GET", "/user-limits/app")[1] == expected["limits"]
    assert UserStore.load(path).users["app"].limits["max-channels"] == 11


def test_wrong_types_are_400_where_rabbitmq_answers_500(broker):
    """RabbitMQ stores a number as an exchange name and answers 500 to a non-string regex, a
    bad limit in PUT /api/users and a limit cleared for an unknown user: syncmq refuses with
    400 (404) in RabbitMQ's error shape, changes nothing, and keeps serving."""
    m = broker.management_port
    auth = b"guest:guest"
    assert _http(m, "PUT", "/users/wt", {"password": "x", "tags": ""}, auth)[0] == 201
    try:
        for body in ({"exchange": 5, "write": "a", "read": "b"},
                     {"exchange": "x", "write": 5, "read": "b"},
                     {"exchange": "x", "write": None, "read": "b"},
                     {"exchange": "x", "write": True, "read": "b"},
                     {"exchange": "x", "write": ["a"], "read": "b"},
                     {"exchange": "x" * 256, "write": "a", "read": "b"}):
            status, answer = _http(m, "PUT", "/topic-permissions/%2F/wt", body, auth)
            assert status == 400 and answer["error"] == "bad_request", (body, answer)
        assert _http(m, "GET", "/users/wt/topic-permissions", None, auth) == (200, [])
        for limits, text in (({"max-channels": "x"}, 'actually was <<"x">>'),
                             ({"bogus": 1}, "Unrecognised terms"),
                             ([], "user-limits not a list")):
            status, answer = _http(m, "PUT", "/users/wt",
                                   {"password": "x", "tags": "", "limits": limits}, auth)
            assert status == 400 and text in answer["reason"], (limits, answer)
        assert _http(m, "GET", "/users/wt", None, auth)[1]["limits"] == {}
        assert _http(m, "PUT", "/user-limits/wt/max-channels", {"value": 1 << 70},
                     auth)[0] == 400  # RabbitMQ takes a bignum; the users file holds int64
        assert _http(m, "DELETE", "/user-limits/nobody/max-channels", None, auth)[0] == 404
        assert _http(m, "POST", "/definitions", {"users": [
            {"name": "wt", "password_hash": "", "tags": [], "limits": {"x": 1}}]},
            auth)[0] == 400
    finally:
        _http(m, "DELETE", "/users/wt", None, auth)
    assert _http(m, "GET", "/overview", None, auth)[0] == 200


def test_save_makes_the_rename_durable(tmp_path, monkeypatch):
    """auth.save fsyncs the file, renames it, then fsyncs the directory: the API answers a
    change once it is written, and without the directory's fsync a power loss after the
    answer could bring the old file back."""
    import stat
    path = str(tmp_path / "u.toml")
    events: list = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode), os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace",))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save(UserStore({}, ["/"], []), path)
    assert [e[:2] for e in events] == [("fsync", False), ("replace",), ("fsync", True)]
    assert events[2][2] == os.stat(tmp_path).st_ino


def test_vhost_change_the_users_file_refuses_changes_nothing(brokers_on_dir, tmp_path):
    """With --users-file, PUT and DELETE /api/vhosts and a definitions import write the
    file's vhost list (and drop the vhost's permissions) before the vhost is created or
    deleted: a file that cannot be written refuses them (500) and the broker still has
    exactly what the file says."""
    path = _file(tmp_path)
    start, _restart = brokers_on_dir
    b = start("--users-file", path)
    m = b.management_port
    assert _http(m, "PUT", "/vhosts/kept", {})[0] == 201
    assert _http(m, "PUT", "/permissions/kept/app", {"configure": "", "write": "",
                                                    "read": ""})[0] == 201
    moved = str(tmp_path) + "-moved"
    os.rename(tmp_path, moved)  # the temp file cannot be created, even by root
    try:
        put = _http(m, "PUT", "/vhosts/refused", {})
        delete = _http(m, "DELETE", "/vhosts/kept")
        imported = _http(m, "POST", "/definitions", {
            "vhosts": [{"name": "refused"}],
            "queues": [{"name": "q", "vhost": "refused", "durable": True,
                        "auto_delete": False, "arguments": {}}]})
    finally:
        os.rename(moved, tmp_path)
    for status, body in (put, delete, imported):
        assert status == 500 and "could not be written, nothing was changed" in body["reason"]
    assert _http(m, "GET", "/vhosts/refused")[0] == 404
    assert _http(m, "GET", "/vhosts/kept")[0] == 200
    assert _http(m, "GET", "/permissions/kept/app")[0] == 200
    store = UserStore.load(path)
    assert "kept" in store.vhosts and "refused" not in store.vhosts
    assert "kept" in store.users["app"].permissions
    assert _http(m, "DELETE", "/vhosts/kept")[0] == 204
    assert "kept" not in UserStore.load(path).vhosts
    assert _http(m, "GET", "/vhosts/kept")[0] == 404


def test_sighup_reload_never_installs_a_store_older_than_an_api_change(tmp_path, monkeypatch):
    """The reload reads the users file and swaps the store in under the API's users lock: an
    API change made while the reload reads the file (here: started from inside the read)
    is applied after the reload, so the broker and the file both have it. Unlocked, the
    reload installed the store it read before the change was written, over the change the
    API had answered 204 for."""
    import threading
    path = _file(tmp_path)  # app: max-channels 3
    real_load = UserStore.load
    done: list = []

    with syncmq.Server(management_port=0, users_file=path) as s:
        port = s.node.management.address[1]

        def load(p):
            store = real_load(p)
            if not done:
                t = threading.Thread(target=lambda: done.append(_http(
                    port, "PUT", "/user-limits/app/max-channels", {"value": 7})))
                done.append(t)
                t.start()
                t.join(timeout=5)  # fixed: the change waits for the reload's lock
            return store

        monkeypatch.setattr(UserStore, "load", staticmethod(load))
        assert s.reload_users()
        done[0].join(timeout=TIMEOUT)
        assert done[1][0] == 204
        monkeypatch.undo()
        assert real_load(path).users["app"].limits["max-channels"] == 7
        assert s.node.broker.users.users["app"].limits["max-channels"] == 7
