"""Dynamic shovels between syncmq brokers (in this process: ``syncmq.Server``), driven as the
parameter store drives them (``Shovels.validate`` then ``Shovels.apply``), observed with pika
and the management API: every ack mode, the forward headers, src-delete-after, and each
failure (remote down, credentials refused, local queue deleted, destination blocked)."""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import pika
import pytest

import syncmq


def wait_for(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def api(srv, method, path):
    req = urllib.request.Request(srv.management_url + "api/" + path, method=method, headers={
        "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    try:
        with urllib.request.urlopen(req) as r:
            body = r.read()
            return r.status, json.loads(body) if body else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture
def pair():
    """Two brokers: ``a`` runs the shovels (management API on), ``b`` is the remote."""
    a = syncmq.Server(management_port=0).start()
    b = syncmq.Server().start()
    yield a, b
    a.stop()
    b.stop()


def remote(b, user="guest", password="guest"):
    return f"amqp://{user}:{password}@127.0.0.1:{b.port}"


def channel(srv):
    c = pika.BlockingConnection(pika.URLParameters(srv.url))
    return c, c.channel()


def set_shovel(srv, name, value, vhost="/"):
    """As ``PUT /api/parameters/shovel/{vhost}/{name}`` does: the parameter store."""
    srv.node.broker.parameters.set("shovel", vhost, name, value)


def status(srv, name):
    rows = [r for r in srv.node.shovels.status() if r["name"] == name]
    return rows[0] if rows else None


def publish(ch, queue, n, start=0):
    ch.confirm_delivery()
    for i in range(start, start + n):
        ch.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2))


def drain(ch, queue, n, timeout=30.0, declare=True):
    """Take ``n`` messages off ``queue`` (declared as the shovel declares a missing one:
    durable, so either may come first)."""
    if declare:
        ch.queue_declare(queue, durable=True)
    got = []

    def more():
        while len(got) < n:
            m = ch.basic_get(queue, auto_ack=True)
            if m[0] is None:
                break
            got.append((int(m[2]), m[0].redelivered, m[1]))
        return len(got) >= n
    wait_for(more, timeout, f"{n} messages on {queue}")
    return got


@pytest.mark.parametrize("mode", ["on-confirm", "on-publish", "no-ack"])
def test_local_queue_to_remote_queue(pair, mode):
    a, b = pair
    ca, cha = channel(a)
    cb, chb = channel(b)
    cha.queue_declare("src", durable=True)
    publish(cha, "src", 500)
    set_shovel(a, "s", {"src-uri": "amqp://", "src-queue": "src", "dest-uri": remote(b),
                        "dest-queue": "dst", "ack-mode": mode})
    got = drain(chb, "dst", 500)
    assert [n for n, _, _ in got] == list(range(500))
    assert all(p.delivery_mode == 2 for _, _, p in got)
    wait_for(lambda: cha.queue_declare("src", passive=True).method.message_count == 0)
    st = status(a, "s")
    assert st["state"] == "running" and st["type"] == "dynamic"
    assert st["src_uri"] == "amqp://" and st["dest_uri"] == f"amqp://127.0.0.1:{b.port}"
    assert (st["src_queue"], st["dest_queue"]) == ("src", "dst")
    # the local end is the broker's own client: user none, named as RabbitMQ names it
    code, conns = api(a, "GET", "connections")
    assert any(c["user"] == "none" and c["client_properties"]["connection_name"] == "Shovel s"
               for c in conns)
    ca.close()
    cb.close()


def test_exchange_source_forward_headers_and_properties(pair):
    a, b = pair
    ca, cha = channel(a)
    cb, chb = channel(b)
    chb.queue_declare("dst")
    chb.queue_bind("dst", "amq.topic", "fixed.key")
    set_shovel(a, "hx", {"src-uri": "amqp://", "src-exchange": "amq.direct",
                         "src-exchange-key": "k", "dest-uri": [remote(b)],
                         "dest-exchange": "amq.topic", "dest-exchange-key": "fixed.key",
                         "add-forward-headers": True, "dest-add-timestamp-header": True,
                         "dest-publish-properties": {"app_id": "shovelled", "delivery_mode": 2}})
    wait_for(lambda: (status(a, "hx") or {}).get("state") == "running")
    cha.basic_publish("amq.direct", "k", b"7", pika.BasicProperties(headers={"h": 1}))
    cha.basic_publish("amq.direct", "other", b"not routed to the shovel's queue")
    (n, _, props), = [(0, r, p) for _, r, p in drain(chb, "dst", 1, declare=False)]
    assert props.app_id == "shovelled" and props.delivery_mode == 2 and props.headers["h"] == 1
    fwd = props.headers["x-shovelled"]
    assert fwd == [{"shovelled-by": a.node.settings.cluster_name, "shovel-type": "dynamic",
                    "shovel-name": "hx", "shovel-vhost": "/", "src-uri": "amqp://",
                    "dest-uri": f"amqp://127.0.0.1:{b.port}", "src-exchange": "amq.direct",
                    "src-exchange-key": "k", "dest-exchange": "amq.topic",
                    "dest-exchange-key": "fixed.key"}]
    assert abs(props.headers["x-shovelled-timestamp"] - time.time()) < 60
    st = status(a, "hx")
    assert (st["src_exchange"], st["src_exchange_key"], st["dest_exchange"]) == (
        "amq.direct", "k", "amq.topic")
    assert chb.queue_declare("dst", passive=True).method.message_count == 0
    ca.close()
    cb.close()


def test_delete_after_queue_length_deletes_the_shovel(pair):
    a, b = pair
    ca, cha = channel(a)
    cb, chb = channel(b)
    cha.queue_declare("backlog", durable=True)
    publish(cha, "backlog", 300)
    set_shovel(a, "once", {"src-uri": "amqp://", "src-queue": "backlog",
                           "dest-uri": remote(b), "dest-queue": "moved",
                           "src-delete-after": "queue-length", "src-prefetch-count": 50})
    wait_for(lambda: status(a, "once") is None, what="the shovel deleted itself")
    assert chb.queue_declare("moved", durable=True).method.message_count == 300
    assert cha.queue_declare("backlog", passive=True).method.message_count == 0
    # numeric: moves exactly N, the rest stays (requeued if it was prefetched)
    publish(cha, "backlog", 100)
    set_shovel(a, "n", {"src-uri": "amqp://", "src-queue": "backlog", "dest-uri": remote(b),
                        "dest-queue": "moved", "src-delete-after": 40})
    wait_for(lambda: status(a, "n") is None, what="the shovel deleted itself")
    wait_for(lambda: cha.queue_declare("backlog", passive=True).method.message_count == 60)
    assert chb.queue_declare("moved", passive=True).method.message_count == 340
    ca.close()
    cb.close()


def test_remote_down_then_up(tmp_path):
    """The destination is down: terminated with the reason, retried every reconnect-delay;
    once it is up everything arrives."""
    a = syncmq.Server(management_port=0).start()
    b = syncmq.Server(data_dir=str(tmp_path / "b")).start()
    port = b.port
    b.stop()
    try:
        ca, cha = channel(a)
        cha.queue_declare("q", durable=True)
        publish(cha, "q", 200)
        set_shovel(a, "down", {"src-uri": "amqp://", "src-queue": "q",
                               "dest-uri": f"amqp://guest:guest@127.0.0.1:{port}",
                               "dest-queue": "q", "reconnect-delay": 0.2})
        st = wait_for(lambda: (status(a, "down") or {}).get("state") == "terminated"
                      and status(a, "down"))
        assert st["reason"] == ("outbound_conn_died: could not connect (connection to "
                                "target host was refused (ECONNREFUSED))"), st
        assert "src_uri" not in st
        code, rows = api(a, "GET", "shovels/%2F")
        assert code == 200 and rows[0]["state"] in ("terminated", "starting")
        b = syncmq.Server(data_dir=str(tmp_path / "b"), port=port).start()
        cb, chb = channel(b)
        wait_for(lambda: (status(a, "down") or {}).get("state") == "running")
        assert [n for n, _, _ in drain(chb, "q", 200)] == list(range(200))
        cb.close()
        ca.close()
    finally:
        a.stop()
        b.stop()


def test_credentials_refused_and_reconnect_delay_zero(pair):
    a, b = pair
    set_shovel(a, "auth", {"src-uri": "amqp://", "src-queue": "q",
                           "dest-uri": remote(b, password="wrong"), "reconnect-delay": 0})
    st = wait_for(lambda: (status(a, "auth") or {}).get("state") == "terminated"
                  and status(a, "auth"))
    assert st["reason"].startswith("outbound_conn_died: could not connect (auth_failure: ")
    assert "ACCESS_REFUSED - Login was refused" in st["reason"], st
    # reconnect-delay 0: not restarted (RabbitMQ's temporary child); restart does it once
    assert not a.node.shovels.threads()
    assert a.node.shovels.restart("/", "auth")
    wait_for(lambda: (status(a, "auth") or {}).get("state") == "terminated")
    assert not a.node.shovels.restart("/", "nope")


def test_local_queue_deleted(pair):
    """The source queue is deleted under the shovel: basic.cancel ends the link
    (terminated), the next one declares the queue again (durable) and goes on."""
    a, b = pair
    ca, cha = channel(a)
    cb, chb = channel(b)
    cha.queue_declare("gone", durable=True)
    set_shovel(a, "del", {"src-uri": "amqp://", "src-queue": "gone", "dest-uri": remote(b),
                          "dest-queue": "d", "reconnect-delay": 0.3})
    wait_for(lambda: (status(a, "del") or {}).get("state") == "running")
    cha.queue_delete("gone")
    wait_for(lambda: (status(a, "del") or {}).get("state") == "terminated")
    assert "cancel" in status(a, "del")["reason"]
    wait_for(lambda: (status(a, "del") or {}).get("state") == "running")
    assert cha.queue_declare("gone", passive=True).method.message_count == 0
    publish(cha, "gone", 10)
    assert [n for n, _, _ in drain(chb, "d", 10)] == list(range(10))
    ca.close()
    cb.close()


def test_destination_blocked_holds_then_resumes(pair):
    """The destination raises an alarm (connection.blocked): nothing is lost, nothing more
    is acked at the source than the destination took; all of it arrives once unblocked."""
    a, _ = pair
    b = syncmq.Server(disk_free_limit=10**18).start()
    try:
        ca, cha = channel(a)
        cb, chb = channel(b)
        wait_for(lambda: b.node.broker.alarms, what="the disk alarm")
        cha.queue_declare("src", durable=True)
        chb.queue_declare("dst", durable=True)
        set_shovel(a, "blk", {"src-uri": "amqp://", "src-queue": "src", "dest-uri": remote(b),
                              "dest-queue": "dst", "src-prefetch-count": 20})
        publish(cha, "src", 100)
        wait_for(lambda: (status(a, "blk") or {}).get("state") == "running")
        # held: the source keeps what the destination has not confirmed
        wait_for(lambda: a.node.shovels.workers[("/", "blk")]._link.blocked, what="blocked")
        q = wait_for(lambda: (lambda q: q["messages_unacknowledged"] == 20 and q)(
            api(a, "GET", "queues/%2F/src")[1]), what="the prefetch taken")
        # (the publishes that met the alarm may have been taken: RabbitMQ blocks a
        # connection when it publishes; a blocked connection is not read any more)
        taken = chb.queue_declare("dst", passive=True).method.message_count
        assert q["messages"] + taken == 100 and taken < 20, (q, taken)
        b.node.monitor.disk_free_limit = 1  # the alarm clears at the next check
        assert [n for n, _, _ in drain(chb, "dst", 100)] == list(range(100))
        wait_for(lambda: cha.queue_declare("src", passive=True).method.message_count == 0)
        ca.close()
        cb.close()
    finally:
        b.stop()


def test_api_status_restart_and_redaction(pair):
    a, b = pair
    set_shovel(a, "api", {"src-uri": "amqp://", "src-queue": "q",
                          "dest-uri": remote(b, "guest", "guest"), "dest-queue": "q"})
    wait_for(lambda: (status(a, "api") or {}).get("state") == "running")
    code, rows = api(a, "GET", "shovels")
    assert code == 200
    row, = [r for r in rows if r["name"] == "api"]
    assert set(row) == {"node", "timestamp", "name", "vhost", "type", "state", "src_uri",
                        "src_protocol", "dest_protocol", "dest_uri", "src_queue", "dest_queue"}
    assert "guest" not in json.dumps(row)
    assert api(a, "GET", "shovels/nosuchvhost")[0] == 404
    assert api(a, "DELETE", "shovels/vhost/%2F/nope/restart")[0] == 404
    before = a.node.shovels.workers[("/", "api")]
    assert api(a, "DELETE", "shovels/vhost/%2F/api/restart")[0] == 204
    assert a.node.shovels.workers[("/", "api")] is not before
    before.thread.join(20)
    assert not before.thread.is_alive()
    wait_for(lambda: (status(a, "api") or {}).get("state") == "running")
    a.node.broker.parameters.clear("shovel", "/", "api")
    assert status(a, "api") is None
    wait_for(lambda: not a.node.shovels.threads(), what="its thread gone")


def test_on_confirm_acks_only_what_the_destination_confirmed(tmp_path):
    """The destination's fsync is held (the journal's test gate): it has the messages but
    confirms none, so the source acks none (the shovel's prefetch stays unacked); once the
    fsync goes through, every confirm reaches the source and it empties."""
    import os

    from brokerproc import BrokerProcess
    from test_fsync_gate import Gate

    gate = Gate(str(tmp_path / "gate"))
    b = BrokerProcess(str(tmp_path / "b"),
                      env=dict(os.environ, SYNCMQ_TEST_FSYNC_GATE=gate.path)).start()
    a = syncmq.Server(management_port=0).start()
    try:
        cb = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        cb.channel().queue_declare("dst", durable=True)
        ca, cha = channel(a)
        cha.queue_declare("src", durable=True)
        publish(cha, "src", 100)
        gate.hold()
        set_shovel(a, "gated", {"src-uri": "amqp://", "src-queue": "src",
                                "dest-uri": f"amqp://guest:guest@127.0.0.1:{b.port}",
                                "dest-queue": "dst", "src-prefetch-count": 20})

        def dest_ready():
            req = urllib.request.Request(
                f"http://127.0.0.1:{b.management_port}/api/queues/%2F/dst",
                headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
            with urllib.request.urlopen(req) as r:
                return json.loads(r.read())["messages"]
        wait_for(lambda: dest_ready() >= 20, what="the destination holding 20 unconfirmed")
        wait_for(lambda: gate.waiters() > 0, what="the destination's journal at the gate")
        q = api(a, "GET", "queues/%2F/src")[1]
        assert (q["messages"], q["messages_unacknowledged"]) == (100, 20), q
        gate.release()
        wait_for(lambda: api(a, "GET", "queues/%2F/src")[1]["messages"] == 0,
                 what="the source emptied once confirmed")
        assert dest_ready() == 100
        cb.close()
        ca.close()
    finally:
        gate.release()
        a.stop()
        b.stop()
        os.close(gate.fd)


def test_syncmqctl_shovel_status_and_restart(pair):
    import urllib.parse
    from types import SimpleNamespace

    from test_ctl_remote import fails, ok

    a, b = pair
    node = SimpleNamespace(management_port=urllib.parse.urlsplit(a.management_url).port)
    set_shovel(a, "ctl", {"src-uri": "amqp://", "src-queue": "q",
                          "dest-uri": remote(b, "guest", "guest"), "dest-queue": "q"})
    rows = wait_for(lambda: [r for r in json.loads(ok(node, "shovel_status", "--formatter",
                                                      "json")) if r["state"] == "running"])
    assert rows[0]["name"] == "ctl" and rows[0]["dest_uri"] == f"amqp://127.0.0.1:{b.port}"
    out = ok(node, "shovel_status").splitlines()
    assert out[1].split("\t")[:4] == ["name", "vhost", "type", "state"]
    assert out[2].split("\t")[:4] == ["ctl", "/", "dynamic", "running"]
    assert "guest" not in "".join(out)  # no credentials
    before = a.node.shovels.workers[("/", "ctl")]
    assert "Restarting dynamic Shovel ctl in virtual host /" in ok(node, "restart_shovel", "ctl")
    assert a.node.shovels.workers[("/", "ctl")] is not before
    fails(node, "restart_shovel", "nope", msg="Shovel with the given name was not found",
          code=69)
    fails(node, "restart_shovel", "-p", "novhost", "ctl",
          msg="Shovel with the given name was not found", code=69)


def test_internal_login_is_not_guessable(pair):
    """The shovels' local login (user none) needs the broker's random password; the name
    alone, or another broker's password, is refused like any bad login."""
    a, b = pair
    for password in ("none", "guest", b.node.broker.internal_login.password):
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", a.port, credentials=pika.PlainCredentials("none", password)))
    c = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", a.port, credentials=pika.PlainCredentials(
            "none", a.node.broker.internal_login.password)))
    c.channel().queue_declare("internal-ok")  # every permission
    c.close()


def test_unreadable_certificate_file_is_a_reason_not_a_crash(pair, tmp_path):
    """amqps with a CA file that does not exist: terminated with the reason, retried, and
    no connection left behind by the attempts."""
    a, b = pair
    set_shovel(a, "tls", {"src-uri": "amqp://", "src-queue": "q",
                          "dest-uri": f"amqps://127.0.0.1:{b.port}?verify=verify_peer&"
                                      f"cacertfile={tmp_path}/missing.pem",
                          "reconnect-delay": 0.1})
    st = wait_for(lambda: (status(a, "tls") or {}).get("state") == "terminated"
                  and status(a, "tls"))
    assert st["reason"].startswith("outbound_conn_died: could not connect (FileNotFoundError")
    seen = set()  # several attempts: each one replaces the status object

    def attempts():
        seen.add(a.node.shovels.workers[("/", "tls")].status.timestamp)
        return len(seen) >= 6
    wait_for(attempts, what="several attempts")

    def shovel_conns():
        return {c["name"] for c in api(a, "GET", "connections")[1] if c["user"] == "none"}
    # An attempt in progress holds its source connection (at most one); a leak would
    # leave one per attempt, and none of them would ever go.
    now = shovel_conns()
    assert len(now) <= 1, now
    wait_for(lambda: not (now & shovel_conns()), what="the attempt's connection closed")


def test_a_file_user_named_none_does_not_bind_the_internal_login(pair):
    """A user of the store called ``none`` with limits and topic permissions: the shovels'
    internal login (also named none) is not that user and is not held by its rules."""
    from syncmq.broker.auth import Permission, User, UserStore
    from syncmq.broker.user_rules import TopicPermission

    a, b = pair
    store = a.node.broker.users
    users = dict(store.users)
    users["none"] = User("none", "", [], {"/": Permission("", "", "")},
                         topic_permissions={"/": {"amq.topic": TopicPermission("^$", "^$", "none", "/")}},
                         limits={"max-connections": 0, "max-channels": 0})
    a.node.set_users(UserStore(users, store.vhosts, store.loopback_users))
    ca, cha = channel(a)
    cha.queue_declare("n-src", durable=True)
    set_shovel(a, "n", {"src-uri": "amqp://", "src-queue": "n-src", "dest-uri": "amqp://",
                        "dest-exchange": "amq.topic", "dest-exchange-key": "any.key"})
    cb, chb = channel(a)
    chb.queue_declare("n-dst", durable=True)
    chb.queue_bind("n-dst", "amq.topic", "any.key")
    publish(cha, "n-src", 5)
    assert [n for n, _, _ in drain(chb, "n-dst", 5)] == list(range(5))
    ca.close()
    cb.close()


def test_delete_after_with_nacks_moves_exactly_n(tmp_path):
    """on-confirm, ``src-delete-after`` 5, a destination that refuses (nacks) at first: the
    shovel holds the deliveries past the 5th unpublished while the refused ones come back
    (with higher tags) and are published again; once the destination takes them (its limit
    gone) their confirm may be ``multiple``, and the source ack must still cover only what
    was published: exactly 5 move, the other 15 stay in the source."""
    a = syncmq.Server(management_port=0).start()
    b = syncmq.Server(management_port=0).start()
    try:
        ca, cha = channel(a)
        cb, chb = channel(b)
        body = json.dumps({"pattern": "^dst$", "apply-to": "queues", "definition": {
            "max-length": 2, "overflow": "reject-publish"}}).encode()
        req = urllib.request.Request(b.management_url + "api/policies/%2F/cap", data=body,
                                     method="PUT", headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        urllib.request.urlopen(req).close()
        chb.queue_declare("dst", durable=True)
        cha.queue_declare("src", durable=True)
        publish(cha, "src", 20)
        set_shovel(a, "capped", {"src-uri": "amqp://", "src-queue": "src",
                                 "dest-uri": remote(b), "dest-queue": "dst",
                                 "ack-mode": "on-confirm", "src-delete-after": 5})
        # 2 taken, the others refused and republished until the limit goes
        wait_for(lambda: chb.queue_declare("dst", passive=True).method.message_count == 2,
                 what="the destination full")
        assert api(b, "DELETE", "policies/%2F/cap")[0] == 204
        wait_for(lambda: status(a, "capped") is None, what="the shovel deleted itself")
        wait_for(lambda: chb.queue_declare("dst", passive=True).method.message_count == 5,
                 what="5 moved")
        wait_for(lambda: api(a, "GET", "queues/%2F/src")[1]["messages"] == 15,
                 what="15 left in the source")
        ca.close()
        cb.close()
    finally:
        a.stop()
        b.stop()


def test_internal_connections_do_not_count_for_a_file_user_named_none(pair):
    """The shovels' internal connections and channels (user none) are not counted for a
    file user of the same name: with its max-connections 1 and max-channels 1 and a shovel
    running on amqp://, that user still opens its one connection and channel."""
    from syncmq.broker.auth import Permission, User, UserStore, hash_password

    a, _ = pair
    store = a.node.broker.users
    users = dict(store.users)
    users["none"] = User("none", hash_password("pw"), [], {"/": Permission()},
                         limits={"max-connections": 1, "max-channels": 1})
    a.node.set_users(UserStore(users, store.vhosts, store.loopback_users))
    ca, cha = channel(a)
    cha.queue_declare("c-src", durable=True)
    cha.queue_declare("c-dst", durable=True)
    set_shovel(a, "c", {"src-uri": "amqp://", "src-queue": "c-src", "dest-uri": "amqp://",
                        "dest-queue": "c-dst"})
    wait_for(lambda: (status(a, "c") or {}).get("state") == "running", what="running")
    c = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", a.port, credentials=pika.PlainCredentials("none", "pw")))
    c.channel().queue_declare("c-dst", passive=True)
    c.close()
    ca.close()


def test_api_delete_and_who_may(pair):
    """``DELETE /api/shovels/vhost/{vhost}/{name}`` (RabbitMQ 3.10's, what its UI's Delete
    calls) clears the parameter; every /api/shovels endpoint needs monitoring or
    administrator, restart and delete too (RabbitMQ's ``is_authorized_monitor``; the
    differential check is tests/interop/test_shovel_api_differential.py)."""
    a, b = pair

    def as_user(user, method, path, body=None):
        req = urllib.request.Request(
            a.management_url + "api/" + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": "Basic " + base64.b64encode(
                f"{user}:pw".encode()).decode(), "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    for user, tags in (("mon", "monitoring"), ("pm", "policymaker"), ("mg", "management")):
        assert api_put(a, f"users/{user}", {"password": "pw", "tags": tags}) in (201, 204)
        assert api_put(a, f"permissions/%2F/{user}",
                       {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)
    set_shovel(a, "del", {"src-uri": "amqp://", "src-queue": "q",
                          "dest-uri": remote(b), "dest-queue": "q"})
    not_monitor = (401, {"error": "not_authorised", "reason": "Not monitor user"})
    for user in ("pm", "mg"):
        assert as_user(user, "GET", "shovels") == not_monitor
        assert as_user(user, "GET", "shovels/%2F") == not_monitor
        assert as_user(user, "DELETE", "shovels/vhost/%2F/del/restart") == not_monitor
        assert as_user(user, "DELETE", "shovels/vhost/%2F/del") == not_monitor
    assert [r["name"] for r in as_user("mon", "GET", "shovels")[1]] == ["del"]
    before = a.node.shovels.workers[("/", "del")]
    assert as_user("mon", "DELETE", "shovels/vhost/%2F/del/restart") == (204, None)
    assert a.node.shovels.workers[("/", "del")] is not before
    not_found = (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert as_user("mon", "DELETE", "shovels/vhost/%2F/nope") == not_found
    assert as_user("mon", "DELETE", "shovels/vhost/novhost/del") == not_found
    assert as_user("mon", "DELETE", "shovels/vhost/%2F/del") == (204, None)
    assert a.node.broker.parameters.get("shovel", "/", "del") is None
    assert status(a, "del") is None
    assert as_user("mon", "DELETE", "shovels/vhost/%2F/del") == not_found
    wait_for(lambda: not a.node.shovels.threads(), what="its thread gone")
    # the broker still serves the others
    assert api(a, "GET", "shovels")[0] == 200


def api_put(srv, path, body):
    req = urllib.request.Request(srv.management_url + "api/" + path, method="PUT",
                                 data=json.dumps(body).encode(), headers={
                                     "Authorization": "Basic " + base64.b64encode(
                                         b"guest:guest").decode(),
                                     "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.status


def test_restarts_while_declaring_log_no_error(pair, caplog):
    """Restarts (the dashboard's Restart, ``restart_shovel``) in quick succession: a set-up
    step of a link told to stop arrives on a closing channel and must do nothing (pika
    raised inside its callback: a traceback in the log), and a stop that comes before the
    thread's new link is visible must still end it (the thread ran on, its link never told:
    the shovel's connections stayed open after its deletion)."""
    import logging
    a, b = pair
    set_shovel(a, "rs", {"src-uri": "amqp://", "src-queue": "rs",
                         "dest-uri": remote(b), "dest-queue": "rs"})
    with caplog.at_level(logging.ERROR):
        for _ in range(40):
            assert a.node.shovels.restart("/", "rs")
            wait_for(lambda: a.node.shovels.workers[("/", "rs")]._link is not None)
        wait_for(lambda: (status(a, "rs") or {}).get("state") == "running")
        a.node.broker.parameters.clear("shovel", "/", "rs")
        wait_for(lambda: not a.node.shovels.threads(), what="the threads gone")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_a_reset_destination_is_one_warning_not_a_pika_traceback(pair, caplog):
    """A destination that resets the connection: the link ends with the reason, logged once
    by the shovel; pika's own ERROR record with a stack (which reads as a crash
    of the broker) does not reach the log."""
    a, _b = pair
    srv = socket.create_server(("127.0.0.1", 0))
    resets = []

    def reset_each():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(8)  # the protocol header: pika's transport is up and reading
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST
            resets.append(1)

    threading.Thread(target=reset_each, daemon=True).start()
    caplog.set_level(logging.DEBUG, logger="syncmq.shovel")
    try:
        set_shovel(a, "rst", {"src-uri": "amqp://", "src-queue": "q",
                              "dest-uri": f"amqp://guest:guest@127.0.0.1:{srv.getsockname()[1]}",
                              "dest-queue": "q", "reconnect-delay": 0.2})
        st = wait_for(lambda: len(resets) >= 2 and (status(a, "rst") or {}).get("reason")
                      and status(a, "rst"))
        assert st["reason"].startswith("outbound_conn_died: could not connect ("), st
        assert "Connection reset by peer" in st["reason"], st
        assert any(r.name == "syncmq.shovel" and r.getMessage().startswith("shovel terminated")
                   for r in caplog.records)
        assert [r.getMessage() for r in caplog.records if r.name.startswith("pika")] == []
    finally:
        srv.close()


def test_pika_records_of_other_threads_are_left_alone(caplog):
    """Importing syncmq (as an application embedding it does) changes nothing in pika's
    logging for the application's own pika connections: only the shovels' threads' pika
    records below CRITICAL are dropped (the test above)."""
    import syncmq.shovel.worker  # noqa: F401  (what importing syncmq.Server imports)
    assert logging.getLogger("pika").level == logging.NOTSET
    caplog.set_level(logging.DEBUG)
    logging.getLogger("pika.connection").error("the application's own connection failed")
    assert [r.getMessage() for r in caplog.records] == [
        "the application's own connection failed"]
    out = []
    t = threading.Thread(target=lambda: (
        logging.getLogger("pika.connection").error("a shovel's link reset"),
        logging.getLogger("pika.connection").critical("a shovel's pika crashed"),
        out.append(1)), name="syncmq-shovel-/x")
    t.start()
    t.join()
    assert out and [r.getMessage() for r in caplog.records][1:] == ["a shovel's pika crashed"]
