"""The management HTTP API and /metrics against a real broker, with pika making the traffic.

Field names are checked against what RabbitMQ's management plugin (3.10) returns for the same
endpoint; fields syncmq cannot know (Erlang process stats) are deliberately absent. Waiting
is a bounded poll of the API while pumping pika, never a sleep.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from amqp_helpers import TIMEOUT, connect

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


# ---- helpers ----

def call(broker, method: str, path: str, body=None, auth=("guest", "guest"), headers=None):
    """(status, parsed JSON body or None, response headers)."""
    url = f"http://127.0.0.1:{broker.management_port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", "Basic " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            raw, status, hdrs = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, e.headers
    text = raw.decode()
    if hdrs.get("Content-Type", "").startswith("application/json") and text:
        return status, json.loads(text), hdrs
    return status, text or None, hdrs


def get(broker, path: str, **kw):
    status, body, _ = call(broker, "GET", path, **kw)
    assert status == 200, (path, status, body)
    return body


def poll(broker, path: str, cond, conn, what: str = "condition"):
    """GET ``path`` until ``cond(body)`` holds, pumping pika's ``conn`` between tries."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        body = get(broker, path)
        if cond(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never held; last {path}: {json.dumps(body)[:2000]}")
        conn.process_data_events(0.05)


def vq(vhost: str) -> str:
    return quote(vhost, safe="")


def stats_fields(stats: dict, names) -> None:
    for n in names:
        assert isinstance(stats[n], int), n
        assert isinstance(stats[n + "_details"]["rate"], (int, float)), n


@pytest.fixture
def topology(broker, unique):
    """A queue with 3 messages bound to a topic exchange, an e2e binding, and a consumer with
    prefetch 1 holding one unacked delivery, on a named connection."""
    conn = connect(broker.port, client_properties={"connection_name": f"conn-{unique}"})
    ch = conn.channel()
    ch.confirm_delivery()
    q, x, x2 = f"q-{unique}", f"x-{unique}", f"x2-{unique}"
    ch.exchange_declare(x, "topic", durable=True)
    ch.exchange_declare(x2, "fanout")
    ch.queue_declare(q, durable=True, arguments={"x-max-priority": 3})
    ch.queue_bind(q, x, "a.#")
    ch.exchange_bind(x2, x, "b.*")
    for _ in range(3):
        ch.basic_publish(x, "a.b", b"hello")
    ch.basic_qos(prefetch_count=1)
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append(m.delivery_tag))
    poll(broker, f"/api/queues/%2F/{q}", lambda b: b["messages_unacknowledged"] == 1
         and b["messages_ready"] == 2, conn, "one unacked delivery")
    yield {"conn": conn, "ch": ch, "queue": q, "exchange": x, "exchange2": x2, "tag": tag,
           "name": f"conn-{unique}"}
    with contextlib.suppress(Exception):
        if conn.is_open:
            ch.queue_delete(q)
            ch.exchange_delete(x)
            ch.exchange_delete(x2)
            conn.close()


# ---- endpoints ----

def test_overview(broker, topology):
    o = get(broker, "/api/overview")
    for k in ("management_version", "product_version", "product_name", "rabbitmq_version",
              "node", "cluster_name", "exchange_types", "listeners", "rates_mode",
              "message_stats", "queue_totals", "object_totals"):
        assert k in o, k
    ot = o["object_totals"]
    assert set(ot) == {"connections", "channels", "exchanges", "queues", "consumers"}
    assert ot["connections"] >= 1 and ot["channels"] >= 1 and ot["consumers"] >= 1
    assert ot["exchanges"] >= 8 and ot["queues"] >= 1
    qt = o["queue_totals"]
    assert qt["messages"] >= 3 and qt["messages_ready"] >= 2
    assert qt["messages_unacknowledged"] >= 1
    stats_fields(qt, ("messages", "messages_ready", "messages_unacknowledged"))
    ms = o["message_stats"]
    stats_fields(ms, ("publish", "deliver_get", "deliver", "get", "ack", "redeliver",
                      "confirm", "return_unroutable"))
    assert ms["publish"] >= 3 and ms["confirm"] >= 3 and ms["deliver_get"] >= 1
    assert {li["protocol"] for li in o["listeners"]} == {"amqp", "http"}
    assert {li["port"] for li in o["listeners"]} == {broker.port, broker.management_port}
    assert {t["name"] for t in o["exchange_types"]} == {"direct", "fanout", "topic", "headers",
                                                        "x-federation-upstream"}


def test_nodes_vhosts_whoami_health(broker):
    nodes = get(broker, "/api/nodes")
    assert len(nodes) == 1
    n = nodes[0]
    for k in ("name", "type", "running", "uptime", "mem_used", "fd_used", "fd_total",
              "sockets_used", "proc_used", "disk_free", "mem_alarm", "disk_free_alarm",
              "processors", "os_pid"):
        assert k in n, k
    assert n["running"] is True and n["mem_used"] > 0
    assert get(broker, "/api/nodes/" + quote(n["name"]))["name"] == n["name"]
    vhosts = get(broker, "/api/vhosts")
    assert [v["name"] for v in vhosts] == ["/"]
    for k in ("name", "tracing", "messages", "messages_ready", "messages_unacknowledged",
              "messages_details", "metadata"):
        assert k in vhosts[0], k
    assert get(broker, "/api/vhosts/%2F")["name"] == "/"
    assert get(broker, "/api/whoami") == {"name": "guest", "tags": ["administrator"]}
    assert get(broker, "/api/health/checks/alarms") == {"status": "ok"}
    assert get(broker, "/api/aliveness-test/%2F") == {"status": "ok"}
    assert call(broker, "GET", "/api/aliveness-test/nope")[0] == 404
    assert call(broker, "GET", "/api/no-such-thing")[0] == 404


def test_users_and_permissions(broker):
    users = get(broker, "/api/users")
    guest = next(u for u in users if u["name"] == "guest")
    assert set(guest) == {"name", "password_hash", "hashing_algorithm", "tags", "limits"}
    assert guest["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert len(base64.b64decode(guest["password_hash"])) == 36  # salt(4) + sha256
    assert guest["tags"] == ["administrator"]
    perms = get(broker, "/api/permissions")
    assert {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*",
            "read": ".*"} in perms
    assert get(broker, "/api/permissions/%2F/guest")["configure"] == ".*"
    assert get(broker, "/api/users/guest/permissions") == [p for p in perms
                                                          if p["user"] == "guest"]


def test_exchanges(broker, topology):
    x = topology["exchange"]
    names = {e["name"] for e in get(broker, "/api/exchanges")}
    assert {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match", x} <= names
    e = get(broker, f"/api/exchanges/%2F/{x}")
    for k in ("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"):
        assert k in e, k
    assert (e["type"], e["durable"], e["auto_delete"], e["internal"]) == ("topic", True,
                                                                          False, False)
    assert get(broker, "/api/exchanges/%2F/amq.default")["name"] == ""
    assert {e["vhost"] for e in get(broker, "/api/exchanges/%2F")} == {"/"}
    assert call(broker, "GET", "/api/exchanges/%2F/nope")[0] == 404
    assert call(broker, "GET", "/api/exchanges/nope")[0] == 404


def test_queues(broker, topology):
    q = get(broker, f"/api/queues/%2F/{topology['queue']}")
    for k in ("name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages",
              "messages_ready", "messages_unacknowledged", "consumers", "memory", "state",
              "node", "type", "message_stats", "messages_details", "consumer_details"):
        assert k in q, k
    assert (q["durable"], q["auto_delete"], q["exclusive"]) == (True, False, False)
    assert q["arguments"] == {"x-max-priority": 3}
    assert (q["messages"], q["messages_ready"], q["messages_unacknowledged"]) == (3, 2, 1)
    assert q["consumers"] == 1
    stats_fields(q["message_stats"], ("publish", "deliver_get", "ack"))
    assert q["message_stats"]["publish"] == 3 and q["message_stats"]["deliver_get"] == 1
    assert q["consumer_details"][0]["consumer_tag"] == topology["tag"]
    listed = get(broker, "/api/queues")
    assert topology["queue"] in {x["name"] for x in listed}
    assert all(x["vhost"] == "/" for x in get(broker, "/api/queues/%2F"))
    assert call(broker, "GET", "/api/queues/%2F/nope")[0] == 404


def test_bindings(broker, topology):
    q, x, x2 = topology["queue"], topology["exchange"], topology["exchange2"]
    bs = get(broker, "/api/bindings")
    for b in bs:
        assert set(b) == {"source", "vhost", "destination", "destination_type", "routing_key",
                          "arguments", "properties_key"}
    mine = [b for b in bs if b["destination"] in (q, x2)]
    by = {(b["source"], b["destination"], b["destination_type"], b["routing_key"])
          for b in mine}
    assert by == {("", q, "queue", q), (x, q, "queue", "a.#"), (x, x2, "exchange", "b.*")}
    assert {b["vhost"] for b in get(broker, "/api/bindings/%2F")} == {"/"}
    qb = get(broker, f"/api/queues/%2F/{q}/bindings")
    assert {b["source"] for b in qb} == {"", x}


def test_connections_channels_consumers(broker, topology):
    conns = [c for c in get(broker, "/api/connections")
             if c["user_provided_name"] == topology["name"]]
    assert len(conns) == 1
    c = conns[0]
    for k in ("name", "node", "vhost", "user", "state", "channels", "protocol", "host", "port",
              "peer_host", "peer_port", "ssl", "type", "client_properties", "connected_at",
              "frame_max", "channel_max", "timeout", "recv_oct", "send_oct"):
        assert k in c, k
    assert (c["vhost"], c["user"], c["state"], c["protocol"]) == ("/", "guest", "running",
                                                                  "AMQP 0-9-1")
    assert c["port"] == broker.port and c["channels"] == 1
    assert c["name"] == f"{c['peer_host']}:{c['peer_port']} -> {c['host']}:{c['port']}"
    assert c["client_properties"]["product"] == "Pika Python Client Library"
    assert get(broker, "/api/connections/" + quote(c["name"], safe=""))["name"] == c["name"]

    chans = get(broker, "/api/connections/" + quote(c["name"], safe="") + "/channels")
    assert len(chans) == 1
    ch = chans[0]
    for k in ("name", "node", "number", "vhost", "user", "connection_details", "state",
              "consumer_count", "messages_unacknowledged", "prefetch_count", "confirm",
              "transactional", "message_stats", "global_prefetch_count"):
        assert k in ch, k
    assert ch["name"] == f"{c['name']} (1)" and ch["number"] == 1
    assert (ch["consumer_count"], ch["messages_unacknowledged"], ch["prefetch_count"],
            ch["confirm"], ch["transactional"]) == (1, 1, 1, True, False)
    assert ch["connection_details"]["name"] == c["name"]
    assert ch["message_stats"]["publish"] == 3 and ch["message_stats"]["confirm"] == 3
    assert ch["name"] in {x["name"] for x in get(broker, "/api/channels")}
    assert get(broker, "/api/channels/" + quote(ch["name"], safe=""))["number"] == 1

    cons = [x for x in get(broker, "/api/consumers") if x["consumer_tag"] == topology["tag"]]
    assert len(cons) == 1
    k = cons[0]
    assert set(k) >= {"consumer_tag", "queue", "channel_details", "ack_required", "exclusive",
                      "prefetch_count", "arguments", "active", "activity_status"}
    assert k["queue"] == {"name": topology["queue"], "vhost": "/"}
    assert k["channel_details"]["connection_name"] == c["name"]
    assert (k["ack_required"], k["exclusive"], k["prefetch_count"]) == (True, False, 1)
    assert get(broker, "/api/consumers/%2F")


def test_delete_connection_closes_it_with_320(broker, topology):
    c = next(c for c in get(broker, "/api/connections")
             if c["user_provided_name"] == topology["name"])
    status, _, _ = call(broker, "DELETE", "/api/connections/" + quote(c["name"], safe=""),
                        headers={"X-Reason": "maintenance"})
    assert status == 204
    conn = topology["conn"]
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            conn.process_data_events(0.1)
    assert ei.value.reply_code == 320
    assert "maintenance" in ei.value.reply_text
    with contextlib.closing(connect(broker.port)) as other:
        poll(broker, f"/api/queues/%2F/{topology['queue']}",
             lambda b: b["consumers"] == 0 and b["messages_ready"] == 3, other, "requeued")
    assert call(broker, "DELETE", "/api/connections/nope")[0] == 404


def test_declare_purge_delete_queue(broker, unique):
    q = f"mq-{unique}"
    path = f"/api/queues/%2F/{q}"
    assert call(broker, "PUT", path, {"durable": False, "auto_delete": False,
                                      "arguments": {"x-message-ttl": 60000}})[0] == 201
    assert call(broker, "PUT", path, {"durable": False,
                                      "arguments": {"x-message-ttl": 60000}})[0] == 204
    status, body, _ = call(broker, "PUT", path, {"durable": True})
    assert status == 400 and body["error"] == "bad_request"
    assert "inequivalent arg 'durable'" in body["reason"]
    got = get(broker, path)
    assert (got["durable"], got["arguments"]) == (False, {"x-message-ttl": 60000})
    with contextlib.closing(connect(broker.port)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for _ in range(4):
            ch.basic_publish("", q, b"m")
        assert call(broker, "DELETE", path + "/contents")[0] == 204
        assert ch.queue_declare(q, passive=True).method.message_count == 0
        cancelled = []
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame))
        ch.basic_consume(q, lambda *a: None)
        assert call(broker, "DELETE", path)[0] == 204
        deadline = time.monotonic() + TIMEOUT
        while not cancelled and time.monotonic() < deadline:
            conn.process_data_events(0.05)
        assert cancelled, "the consumer got no basic.cancel when its queue was deleted"
    assert call(broker, "GET", path)[0] == 404
    assert call(broker, "DELETE", path)[0] == 404
    # RabbitMQ: 401 not_authorised "Access refused." (its channel's 403 for the amq. prefix)
    assert call(broker, "PUT", "/api/queues/%2F/amq.nope", {})[:2] == (
        401, {"error": "not_authorised", "reason": "Access refused."})
    assert call(broker, "PUT", "/api/queues/nope/q", {})[0] == 404


def test_declare_delete_exchange(broker, unique):
    path = f"/api/exchanges/%2F/mx-{unique}"
    assert call(broker, "PUT", path, {"type": "headers", "durable": True})[0] == 201
    assert call(broker, "PUT", path, {"type": "headers", "durable": True})[0] == 204
    assert call(broker, "PUT", path, {"type": "topic", "durable": True})[0] == 400
    assert get(broker, path)["type"] == "headers"
    assert call(broker, "PUT", f"/api/exchanges/%2F/t-{unique}", {"type": "nope"})[0] == 400
    assert call(broker, "DELETE", path)[0] == 204
    assert call(broker, "DELETE", path)[0] == 404
    assert call(broker, "DELETE", "/api/exchanges/%2F/amq.direct")[0] == 400


def test_vhost_user_permission_lifecycle(broker, unique):
    vh, user = f"vh-{unique}", f"u-{unique}"
    assert call(broker, "PUT", f"/api/vhosts/{vh}")[0] == 201
    assert call(broker, "PUT", f"/api/vhosts/{vh}")[0] == 204
    # as RabbitMQ: the creator gets full permissions on the new vhost
    assert get(broker, f"/api/vhosts/{vh}/permissions") == [
        {"vhost": vh, "user": "guest", "configure": ".*", "write": ".*", "read": ".*"}]
    assert call(broker, "PUT", f"/api/users/{user}",
                {"password": "pw1", "tags": "monitoring"})[0] == 201
    assert get(broker, f"/api/users/{user}")["tags"] == ["monitoring"]
    assert call(broker, "PUT", f"/api/permissions/{vh}/{user}",
                {"configure": "^c", "write": ".*", "read": ".*"})[0] == 201
    # the new user logs in over AMQP into the new vhost, and over HTTP
    params = pika.ConnectionParameters("127.0.0.1", broker.port, vh,
                                       pika.PlainCredentials(user, "pw1"))
    with contextlib.closing(pika.BlockingConnection(params)) as conn:
        conn.channel().queue_declare("c-queue")
    assert get(broker, "/api/whoami", auth=(user, "pw1"))["name"] == user
    assert call(broker, "PUT", f"/api/users/{user}", {"password": "pw2"})[0] == 204
    assert call(broker, "GET", "/api/whoami", auth=(user, "pw1"))[0] == 401
    assert get(broker, "/api/whoami", auth=(user, "pw2"))["tags"] == ["monitoring"]
    assert call(broker, "DELETE", f"/api/permissions/{vh}/{user}")[0] == 204
    assert call(broker, "GET", f"/api/permissions/{vh}/{user}")[0] == 404
    assert call(broker, "DELETE", f"/api/vhosts/{vh}")[0] == 204
    assert vh not in {v["name"] for v in get(broker, "/api/vhosts")}
    assert call(broker, "DELETE", f"/api/users/{user}")[0] == 204
    assert call(broker, "GET", f"/api/users/{user}")[0] == 404


# ---- auth ----

def test_auth_required(broker):
    status, body, hdrs = call(broker, "GET", "/api/overview", auth=None)
    assert status == 401 and body == {"error": "not_authorized", "reason": "Login failed"}
    assert hdrs["WWW-Authenticate"].startswith("Basic")
    assert call(broker, "GET", "/api/overview", auth=("guest", "wrong"))[0] == 401
    assert call(broker, "GET", "/api/overview", auth=("nobody", "x"))[0] == 401
    assert call(broker, "DELETE", "/api/queues/%2F/x", auth=None)[0] == 401


def test_monitoring_and_non_management_users(broker_factory):
    b = broker_factory()
    defs = json.loads((FIXTURES / "rabbitmq-definitions.json").read_text())
    assert call(b, "POST", "/api/definitions", defs)[0] == 204
    alice = ("alice", "s3cret")  # tag "monitoring" in the fixture
    assert get(b, "/api/overview", auth=alice)["object_totals"]["queues"] >= 4
    assert {q["name"] for q in get(b, "/api/queues", auth=alice)} >= {"orders.all",
                                                                     "events.log"}
    # the user database, vhosts and definitions need administrator (RabbitMQ's 401 "Not
    # administrator user"); acting on objects is done as the user, with its permissions
    # (configure "" on "/": no delete, 401 "Access refused."; read ".*": purge), as RabbitMQ
    # (tests/interop/test_mgmt_vhost_access_differential.py compares every case)
    for method, path, reason in (
            ("DELETE", "/api/queues/%2F/orders.all", "Access refused."),
            ("PUT", "/api/vhosts/x", "Not administrator user"),
            ("GET", "/api/users", "Not administrator user"),
            ("GET", "/api/definitions", "Not administrator user"),
            ("POST", "/api/definitions", "Not administrator user")):
        status, body, _ = call(b, method, path, {} if method in ("PUT", "POST") else None,
                               auth=alice)
        assert (status, body) == (401, {"error": "not_authorised", "reason": reason}), path
    assert get(b, "/api/queues/%2F/orders.all")["name"] == "orders.all"  # still there
    assert call(b, "DELETE", "/api/queues/%2F/orders.all/contents", auth=alice)[0] == 204
    # a user without a management tag may not use the API at all
    assert call(b, "PUT", "/api/users/plain", {"password": "pw", "tags": ""})[0] == 201
    status, body, _ = call(b, "GET", "/api/overview", auth=("plain", "pw"))
    assert (status, body["reason"]) == (401, "Not management user")
    # a "management" user sees only the vhosts it has permissions on
    assert call(b, "PUT", "/api/users/mgr", {"password": "pw", "tags": "management"})[0] == 201
    assert call(b, "PUT", "/api/permissions/staging/mgr",
                {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    assert {q["vhost"] for q in get(b, "/api/queues", auth=("mgr", "pw"))} == {"staging"}
    assert call(b, "GET", "/api/queues/%2F/orders.all", auth=("mgr", "pw"))[:2] == (401, {
        "error": "not_authorised", "reason": "User not authorised to access virtual host"})
    # it lists the policies of its vhosts (changing them needs policymaker), as RabbitMQ
    assert call(b, "GET", "/api/policies/staging", auth=("mgr", "pw"))[:2] == (200, [])
    assert call(b, "GET", "/api/policies", auth=("mgr", "pw"))[:2] == (200, [])


# ---- definitions ----

def _norm(defs: dict) -> dict:
    keys = ("vhosts", "queues", "exchanges", "bindings", "permissions")
    out = {k: sorted(json.dumps(x, sort_keys=True) for x in defs[k]) for k in keys}
    out["users"] = sorted((u["name"], tuple(u["tags"])) for u in defs["users"])
    return out


def test_definitions_round_trip(broker_factory):
    a = broker_factory()
    with contextlib.closing(connect(a.port)) as conn:
        ch = conn.channel()
        ch.exchange_declare("orders", "topic", durable=True)
        ch.exchange_declare("audit", "headers", durable=True,
                            arguments={"alternate-exchange": "orders"})
        ch.exchange_declare("inner", "fanout", internal=True)
        ch.queue_declare("created", durable=True, arguments={"x-max-priority": 5})
        ch.queue_declare("all", auto_delete=True)
        ch.queue_declare("", exclusive=True)  # not exported, as RabbitMQ
        ch.queue_bind("created", "orders", "order.created.*")
        ch.queue_bind("all", "audit", "", arguments={"x-match": "any", "kind": "order"})
        ch.queue_bind("all", "amq.topic", "#")
        ch.exchange_bind("inner", "orders", "order.#")
        assert call(a, "PUT", "/api/vhosts/staging")[0] == 201
        assert call(a, "PUT", "/api/users/app", {"password": "apppw",
                                                 "tags": ["monitoring"]})[0] == 201
        assert call(a, "PUT", "/api/permissions/staging/app",
                    {"configure": "^app\\.", "write": ".*", "read": ".*"})[0] == 201
        exported = get(a, "/api/definitions")
    assert {q["name"] for q in exported["queues"]} == {"created", "all"}
    assert "amq.topic" not in {e["name"] for e in exported["exchanges"]}
    assert ("amq.topic", "all") in {(b["source"], b["destination"])
                                    for b in exported["bindings"]}
    for k in ("rabbit_version", "users", "vhosts", "permissions", "topic_permissions",
              "parameters", "global_parameters", "policies", "queues", "exchanges",
              "bindings"):
        assert k in exported, k

    b = broker_factory()
    assert call(b, "POST", "/api/definitions", exported)[0] == 204
    again = get(b, "/api/definitions")
    assert _norm(again) == _norm(exported)
    # importing twice changes nothing (merge)
    assert call(b, "POST", "/api/definitions", exported)[0] == 204
    assert _norm(get(b, "/api/definitions")) == _norm(exported)
    # the imported user logs in with its password (the hash moved, not the password)
    assert get(b, "/api/whoami", auth=("app", "apppw"))["name"] == "app"
    # and the imported topology routes
    with contextlib.closing(connect(b.port)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("orders", "order.created.eu", b"x")
        assert ch.basic_get("created", auto_ack=True)[2] == b"x"


@pytest.mark.parametrize("fixture", ["rabbitmq-definitions.json",
                                     "rabbitmq-management-definitions.json"])
def test_import_rabbitmq_definitions(broker_factory, fixture):
    """Definitions exported by a real RabbitMQ 3.10.8 (rabbitmqctl export_definitions and
    GET /api/definitions) import into syncmq and the topology works."""
    defs = json.loads((FIXTURES / fixture).read_text())
    b = broker_factory()
    status, body, _ = call(b, "POST", "/api/definitions", defs)
    assert status == 204, body
    assert {v["name"] for v in get(b, "/api/vhosts")} == {"/", "staging"}
    qs = {(q["vhost"], q["name"]): q for q in get(b, "/api/queues")}
    for q in defs["queues"]:
        got = qs[(q["vhost"], q["name"])]
        assert (got["durable"], got["auto_delete"], got["arguments"]) == (
            q["durable"], q["auto_delete"], q["arguments"])
    xs = {(x["vhost"], x["name"]): x for x in get(b, "/api/exchanges")}
    for x in defs["exchanges"]:
        got = xs[(x["vhost"], x["name"])]
        assert (got["type"], got["durable"], got["arguments"]) == (
            x["type"], x["durable"], x["arguments"])
    bs = {(x["vhost"], x["source"], x["destination"], x["destination_type"], x["routing_key"])
          for x in get(b, "/api/bindings")}
    exchanges = {(x["vhost"], x["name"]) for x in defs["exchanges"]}
    for x in defs["bindings"]:
        if x["destination_type"] == "exchange" and (x["vhost"], x["destination"]) \
                not in exchanges:
            continue  # rabbitmqctl's export leaves out internal exchanges, not their bindings
        assert (x["vhost"], x["source"], x["destination"], x["destination_type"],
                x["routing_key"]) in bs
    perms = {(p["user"], p["vhost"]): p for p in get(b, "/api/permissions")}
    for p in defs["permissions"]:
        assert perms[(p["user"], p["vhost"])]["configure"] == p["configure"]
    # RabbitMQ's base64 hashes work: alice's password is s3cret, guest's is guest
    assert get(b, "/api/whoami", auth=("alice", "s3cret"))["tags"] == ["monitoring"]
    assert get(b, "/api/whoami")["name"] == "guest"
    # and the exported hash is RabbitMQ's again
    alice = next(u for u in get(b, "/api/users") if u["name"] == "alice")
    src = next(u for u in defs["users"] if u["name"] == "alice")
    assert alice["password_hash"] == src["password_hash"]
    with contextlib.closing(connect(b.port)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("orders", "order.created.eu", b"x")
        assert ch.basic_get("orders.created", auto_ack=True)[2] == b"x"
        assert ch.basic_get("orders.all", auto_ack=True)[2] == b"x"


def test_import_rejects_bad_definitions(broker_factory):
    b = broker_factory()
    cases = [
        ["not", "an", "object"],
        {"users": [{"name": "u", "password_hash": "x", "hashing_algorithm":
                    "rabbit_password_hashing_md5"}]},
        {"queues": [{"name": "q", "vhost": "no-such-vhost"}]},
        {"permissions": [{"user": "ghost", "vhost": "/", "configure": "", "write": "",
                          "read": ""}]},
    ]
    for defs in cases:
        status, body, _ = call(b, "POST", "/api/definitions", defs)
        assert status == 400 and body["error"] == "bad_request", (defs, body)
    status, body, _ = call(b, "POST", "/api/definitions", None,
                           headers={"Content-Type": "application/json"})
    assert status == 400


# ---- metrics ----

def test_metrics_counters_and_gauges(broker_factory):
    from prometheus_client.parser import text_string_to_metric_families

    b = broker_factory()
    with contextlib.closing(connect(b.port)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("m1")
        for _ in range(4):
            ch.basic_publish("", "m1", b"x")
        with pytest.raises(pika.exceptions.UnroutableError):
            ch.basic_publish("amq.direct", "nowhere", b"x", mandatory=True)
        ch2 = conn.channel()
        ch2.basic_get("m1")  # not acked: requeued when ch2 closes
        ch2.close()
        tags = []
        for _ in range(4):
            method, _, _ = ch.basic_get("m1")
            tags.append((method.delivery_tag, method.redelivered))
        assert [r for _, r in tags] == [True, False, False, False]
        for t, _ in tags[:3]:
            ch.basic_ack(t)
        ch.queue_declare("m1", passive=True)  # a round trip: the acks were handled
        text = get_metrics(b)
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        gauge = {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for f in fams.values() for s in f.samples}
        assert gauge[("rabbitmq_queue_messages_unacked", (("queue", "m1"), ("vhost", "/")))] == 1
        assert gauge[("rabbitmq_queue_messages_ready", (("queue", "m1"), ("vhost", "/")))] == 0
        assert gauge[("rabbitmq_connections", ())] == 1
        assert gauge[("rabbitmq_channels", ())] == 1
    # after the connection closed its channels' counts are kept in the global totals
    fams = {f.name: f for f in text_string_to_metric_families(get_metrics(b))}
    value = {s.name: s.value for f in fams.values() for s in f.samples
             if not set(s.labels) - {"protocol", "queue_type"}}
    assert fams["rabbitmq_global_messages_received"].type == "counter"
    assert value["rabbitmq_global_messages_received_total"] == 5
    assert value["rabbitmq_global_messages_delivered_total"] == 5
    assert value["rabbitmq_global_messages_acknowledged_total"] == 3
    assert value["rabbitmq_global_messages_redelivered_total"] == 1
    assert value["rabbitmq_global_messages_unroutable_returned_total"] == 1
    assert value["rabbitmq_global_messages_confirmed_total"] == 5
    assert value["rabbitmq_connections"] == 0 and value["rabbitmq_consumers"] == 0
    assert value["rabbitmq_queues"] == 1
    assert value["rabbitmq_process_resident_memory_bytes"] > 1_000_000
    assert fams["rabbitmq_queue_messages_ready"].type == "gauge"
    ready = [s for s in fams["rabbitmq_queue_messages_ready"].samples
             if s.labels == {"vhost": "/", "queue": "m1"}]
    assert ready[0].value == 1  # the unacked one went back when the connection closed
    assert "rabbitmq_build_info" in fams and "rabbitmq_identity_info" in fams


def get_metrics(b, path: str = "/metrics/per-object") -> str:
    """A scrape; the per-object endpoint (per-queue samples) needs credentials."""
    req = urllib.request.Request(f"http://127.0.0.1:{b.management_port}{path}", headers={
        "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def test_metrics_label_escaping(broker, unique):
    from prometheus_client.parser import text_string_to_metric_families

    name = f'we"ird\\q\n-{unique}'
    assert call(broker, "PUT", f"/api/queues/%2F/{quote(name, safe='')}", {})[0] == 201
    fams = text_string_to_metric_families(get_metrics(broker))
    names = {s.labels.get("queue") for f in fams for s in f.samples}
    assert name in names
    assert call(broker, "DELETE", f"/api/queues/%2F/{quote(name, safe='')}")[0] == 204


# ---- options ----

def test_management_can_be_disabled(broker_factory):
    for flags in (("--no-management",), ("--management-port", "-1")):
        b = broker_factory(*flags)
        assert b.management_port is None
        line = json.loads(b.wait_for_log("started"))
        assert "management_port" not in line
        assert [li["protocol"] for li in line["listeners"]] == ["amqp"]


def test_durable_objects_declared_through_the_api_survive_a_restart(broker_factory):
    b = broker_factory()
    assert call(b, "PUT", "/api/exchanges/%2F/dx", {"type": "topic", "durable": True})[0] == 201
    assert call(b, "PUT", "/api/queues/%2F/dq", {"durable": True})[0] == 201
    assert call(b, "POST", "/api/definitions", {"bindings": [
        {"source": "dx", "vhost": "/", "destination": "dq", "destination_type": "queue",
         "routing_key": "k.#", "arguments": {}}]})[0] == 204
    assert call(b, "PUT", "/api/queues/%2F/gone", {"durable": True})[0] == 201
    assert call(b, "DELETE", "/api/queues/%2F/gone")[0] == 204
    assert b.stop() == 0
    b.start()
    assert get(b, "/api/queues/%2F/dq")["durable"] is True
    assert get(b, "/api/exchanges/%2F/dx")["type"] == "topic"
    assert call(b, "GET", "/api/queues/%2F/gone")[0] == 404
    assert ("dx", "dq", "k.#") in {(x["source"], x["destination"], x["routing_key"])
                                   for x in get(b, "/api/bindings/%2F")}


def test_metrics_fsync_histogram(broker_factory):
    """Persistent publishes with confirms go through fsync; the histogram counts them."""
    from prometheus_client.parser import text_string_to_metric_families

    b = broker_factory()
    with contextlib.closing(connect(b.port)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("fsync-hist", durable=True)
        for _ in range(3):
            ch.basic_publish("", "fsync-hist", b"p", pika.BasicProperties(delivery_mode=2))
    fams = {f.name: f for f in text_string_to_metric_families(get_metrics(b))}
    hist = fams["syncmq_journal_fsync_seconds"]
    assert hist.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in hist.samples}
    count = samples[("syncmq_journal_fsync_seconds_count", None)]
    assert count >= 3  # one group commit per confirmed publish here (each waited for its ack)
    assert samples[("syncmq_journal_fsync_seconds_bucket", "+Inf")] == count
    assert samples[("syncmq_journal_fsync_seconds_sum", None)] > 0
