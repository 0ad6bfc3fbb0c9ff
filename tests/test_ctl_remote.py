"""syncmqctl's remote mode (no --users-file): every verb as a subprocess against a live broker's
management API, through ``syncmq.ctl`` (so the hook into ``syncmq.ctl_remote`` is covered)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pika
import pytest
from amqp_helpers import connect


def ctl(broker, *args, stdin: str | None = None, url: str | None = None,
        creds=("guest", "guest")) -> subprocess.CompletedProcess:
    url = url or f"http://127.0.0.1:{broker.management_port}"
    cmd = [sys.executable, "-m", "syncmq.ctl", *args, "--management-url", url,
           "--username", creds[0], "--password", creds[1]]
    return subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=60)


def ok(broker, *args, **kw) -> str:
    r = ctl(broker, *args, **kw)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def fails(broker, *args, msg: str, code: int, **kw) -> subprocess.CompletedProcess:
    """A refused command: rabbitmqctl's exit ``code`` for the case (syncmq.ctl_errors)."""
    r = ctl(broker, *args, **kw)
    assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
    assert msg in r.stderr, r.stderr
    return r


def rows(out: str) -> list[list[str]]:
    """The table lines (tab-separated) of an output, banner dropped."""
    return [line.split("\t") for line in out.splitlines() if not line.endswith("...")]


@pytest.fixture
def traffic(broker, unique):
    """A queue with 2 messages bound to an exchange, and a consumer on another queue."""
    conn = connect(broker.port)
    ch = conn.channel()
    ch.confirm_delivery()
    q, q2, x = f"rq-{unique}", f"rq2-{unique}", f"rx-{unique}"
    ch.exchange_declare(x, "fanout")
    ch.queue_declare(q)
    ch.queue_declare(q2)
    ch.queue_bind(q, x)
    ch.basic_publish(x, "", b"1")
    ch.basic_publish(x, "", b"2")
    tag = ch.basic_consume(q2, lambda *a: None)
    yield {"queue": q, "queue2": q2, "exchange": x, "tag": tag}
    with contextlib.suppress(Exception):
        ch.queue_delete(q)
        ch.queue_delete(q2)
        ch.exchange_delete(x)
        conn.close()


def test_status(broker):
    """(tests/test_ctl_status.py checks every section)"""
    out = ok(broker, "status")
    assert "Node name: syncmq@" in out and "Queue count:" in out and "Listeners" in out
    data = json.loads(ok(broker, "status", "--json"))
    assert data["product_name"] == "syncmq" and data["listeners"][0]["node"].startswith("syncmq@")


def test_list_queues(broker, traffic):
    out = ok(broker, "list_queues")
    assert out.startswith("Listing queues for vhost / ...")
    assert [traffic["queue"], "2"] in rows(out)
    out = ok(broker, "-q", "list_queues", "name", "messages_ready", "consumers", "durable")
    assert out.splitlines()[0] == "name\tmessages_ready\tconsumers\tdurable"
    assert [traffic["queue2"], "0", "1", "false"] in rows(out)
    data = json.loads(ok(broker, "list_queues", "--json", "name", "messages"))
    assert {"name": traffic["queue"], "messages": 2} in data
    # a missing vhost has no queues: an empty listing, as rabbitmqctl (exit 0)
    assert rows(ok(broker, "-q", "list_queues", "-p", "nope")) == [["name", "messages"]]
    fails(broker, "list_queues", "badkey", msg="Info key(s) badkey are not supported", code=64)


def test_list_exchanges_bindings_connections_consumers(broker, traffic):
    assert ["amq.direct", "direct"] in rows(ok(broker, "list_exchanges"))
    assert [traffic["exchange"], "fanout"] in rows(ok(broker, "list_exchanges"))
    b = rows(ok(broker, "list_bindings"))
    # (pika binds with the queue's name as routing key when given none)
    assert [traffic["exchange"], "exchange", traffic["queue"], "queue", traffic["queue"],
            "{}"] in b
    assert ["", "exchange", traffic["queue"], "queue", traffic["queue"], "{}"] in b
    conns = rows(ok(broker, "list_connections"))
    assert conns[0] == ["user", "peer_host", "peer_port", "state"]
    assert any(r[0] == "guest" and r[3] == "running" for r in conns[1:])
    chans = rows(ok(broker, "list_channels"))
    assert chans[0][0] == "name" and len(chans) >= 2
    cons = rows(ok(broker, "list_consumers"))
    assert cons[0][:3] == ["queue_name", "channel_pid", "consumer_tag"]
    assert any(r[0] == traffic["queue2"] and r[2] == traffic["tag"] for r in cons[1:])
    data = json.loads(ok(broker, "list_consumers", "--json"))
    assert any(c["consumer_tag"] == traffic["tag"] for c in data)


def test_purge_and_delete_queue(broker, traffic):
    q = traffic["queue"]
    out = ok(broker, "purge_queue", q)
    assert f"Purging queue '{q}' in vhost '/'" in out
    assert [q, "0"] in rows(ok(broker, "list_queues"))
    fails(broker, "delete_queue", "--if-unused", traffic["queue2"], msg="Error:\nQueue is in use",
          code=64)
    out = ok(broker, "delete_queue", q)
    assert "successfully deleted with 0 ready messages" in out
    assert q not in {r[0] for r in rows(ok(broker, "list_queues"))}
    fails(broker, "delete_queue", q, msg="Error:\nQueue not found", code=64)
    fails(broker, "purge_queue", q, msg="does not exist", code=69)


def test_vhosts_users_permissions(broker, unique):
    vh, user = f"rv-{unique}", f"ru-{unique}"
    ok(broker, "add_vhost", vh)
    assert [vh] in rows(ok(broker, "list_vhosts"))
    ok(broker, "add_user", user, "pw1")
    fails(broker, "add_user", user, "pw1", msg=f'User "{user}" already exists', code=70)
    ok(broker, "set_user_tags", user, "monitoring")
    assert [user, "[monitoring]"] in rows(ok(broker, "list_users"))
    ok(broker, "set_permissions", "-p", vh, user, "^c", ".*", ".*")
    assert [user, "^c", ".*", ".*"] in rows(ok(broker, "list_permissions", "-p", vh))
    params = pika.ConnectionParameters("127.0.0.1", broker.port, vh,
                                       pika.PlainCredentials(user, "pw1"))
    with contextlib.closing(pika.BlockingConnection(params)) as conn:
        conn.channel().queue_declare("c1")
    # the new user can use the management API with its tag; wrong password is refused
    assert "Node name:" in ok(broker, "status", creds=(user, "pw1"))
    ok(broker, "change_password", user, stdin="pw2\n")  # password from stdin
    fails(broker, "status", creds=(user, "pw1"), msg="refused the credentials", code=69)
    ok(broker, "status", creds=(user, "pw2"))
    fails(broker, "add_vhost", "x", creds=(user, "pw2"), msg="administrator", code=69)
    ok(broker, "clear_permissions", "-p", vh, user)
    assert [user, "^c", ".*", ".*"] not in rows(ok(broker, "list_permissions", "-p", vh))
    ok(broker, "delete_user", user)
    fails(broker, "delete_user", user, msg=f'User "{user}" does not exist', code=67)
    fails(broker, "change_password", user, "x", msg=f'User "{user}" does not exist', code=67)
    fails(broker, "set_permissions", user, ".*", ".*", ".*", msg=f"User {user} does not exist",
          code=67)
    ok(broker, "delete_vhost", vh)
    r = fails(broker, "delete_vhost", vh, msg=f"Virtual host '{vh}' does not exist", code=65)
    assert not r.stderr.startswith("Error:")  # as rabbitmqctl prints it


def test_export_and_import_definitions(broker_factory, tmp_path):
    a = broker_factory()
    with contextlib.closing(connect(a.port)) as conn:
        ch = conn.channel()
        ch.exchange_declare("ex", "topic", durable=True)
        ch.queue_declare("dq", durable=True)
        ch.queue_bind("dq", "ex", "k.*")
    path = str(tmp_path / "defs.json")
    out = ok(a, "export_definitions", path)
    assert f'Exporting definitions in JSON to a file at "{path}"' in out
    defs = json.loads(open(path).read())
    assert {q["name"] for q in defs["queues"]} == {"dq"}
    assert json.loads(ok(a, "export_definitions", "-"))["queues"] == defs["queues"]

    b = broker_factory()
    ok(b, "import_definitions", path)
    assert ["dq", "0"] in rows(ok(b, "list_queues"))
    assert ["ex", "queue", "dq", "k.*"] in [r[:4] for r in rows(ok(b, "list_bindings",
                                                                     "source_name",
                                                                     "destination_kind",
                                                                     "destination_name",
                                                                     "routing_key"))]
    ok(b, "import_definitions", "-", stdin=json.dumps({"vhosts": [{"name": "from-stdin"}]}))
    assert ["from-stdin"] in rows(ok(b, "list_vhosts"))
    fails(b, "import_definitions", str(tmp_path / "missing.json"), msg="cannot read", code=65)
    (tmp_path / "bad.json").write_text("{not json")
    fails(b, "import_definitions", str(tmp_path / "bad.json"), msg="not valid JSON", code=65)
    fails(b, "export_definitions", str(tmp_path / "no-dir" / "x.json"), msg="cannot write",
          code=65)


def test_errors(broker):
    """rabbitmqctl's codes: 69 for a node it cannot reach (or whose cookie is wrong: here the
    credentials), with nothing on standard output; 64 for a bad command line."""
    for kw in ({"url": "http://127.0.0.1:9"}, {"creds": ("guest", "wrong")}):
        r = fails(broker, "list_queues", msg="Error: unable to perform an operation on node",
                  code=69, **kw)
        assert r.stdout == "" and r.stderr.startswith("Error: unable"), r
    fails(broker, "status", url="http://127.0.0.1:9",
          msg="cannot reach the management API", code=69)
    fails(broker, "list_queues", creds=("guest", "wrong"),
          msg="refused the credentials of user 'guest'", code=69)
    r = subprocess.run([sys.executable, "-m", "syncmq.ctl"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 64
    r = ctl(broker, "no_such_verb")
    assert r.returncode == 64


def test_url_from_environment(broker):
    import os
    env = dict(os.environ, SYNCMQ_MANAGEMENT_URL=f"http://127.0.0.1:{broker.management_port}")
    r = subprocess.run([sys.executable, "-m", "syncmq.ctl", "-q", "list_vhosts"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["name", "/"] or "/" in r.stdout.splitlines()


def test_an_answer_that_is_not_the_apis_json_is_unreachable(broker):
    """A URL where something else answers 200 with a web page: rabbitmqctl's code for a node
    it cannot talk to (69), one error, no traceback, nothing on standard output."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's hook)
            page = b"<html><body>not an API</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = ctl(broker, "list_queues", url=f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 69, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "not the management API's JSON" in r.stderr
    assert r.stdout == ""
