"""What the dashboard needs from the management API, in RabbitMQ's shapes, and its static files.

- paging of list endpoints (``?page=&page_size=&name=&use_regex=&sort=&sort_reverse=``
  answering ``{items, page, page_count, page_size, filtered_count, item_count, total_count}``);
- ``POST /api/queues/{vh}/{q}/get`` (messages read without being removed, by ``ackmode``);
- ``POST /api/exchanges/{vh}/{x}/publish`` and ``.../bindings/source|destination``;
- ``/`` and ``/static/...`` served by syncmq itself (no outside URL), with a CSP.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pika
from amqp_helpers import TIMEOUT, connection
from test_management import call, get

# ---- paging ----


def _declare(broker, names: list[str], vhost: str = "%2F") -> None:
    for n in names:
        assert call(broker, "PUT", f"/api/queues/{vhost}/{n}",
                    {"durable": False})[0] in (201, 204)


def test_queues_paged_filtered_sorted(broker, unique):
    names = [f"{unique}-{i:02d}" for i in range(12)]
    _declare(broker, names)
    total = len(get(broker, "/api/queues"))
    page = get(broker, f"/api/queues?page=2&page_size=5&name={unique}")
    assert set(page) == {"items", "page", "page_count", "page_size", "filtered_count",
                         "item_count", "total_count"}
    assert (page["page"], page["page_size"], page["page_count"]) == (2, 5, 3)
    assert (page["filtered_count"], page["item_count"]) == (12, 5)
    assert page["total_count"] == total
    assert [q["name"] for q in page["items"]] == names[5:10]
    assert "messages_ready" in page["items"][0]  # the full queue objects
    last = get(broker, f"/api/queues?page=3&page_size=5&name={unique}")
    assert [q["name"] for q in last["items"]] == names[10:]
    # the name filter is a case-insensitive substring; use_regex=true makes it a regex
    up = get(broker, f"/api/queues?page=1&name={unique.upper()}")
    assert up["filtered_count"] == 12
    rx = get(broker, f"/api/queues?page=1&use_regex=true&name=^{re.escape(unique)}-0[13]$")
    assert [q["name"] for q in rx["items"]] == [names[1], names[3]]
    # sorted by name, reversed; by a rendered field (dotted path) too
    rev = get(broker, f"/api/queues?page=1&page_size=3&name={unique}&sort=name"
                      "&sort_reverse=true")
    assert [q["name"] for q in rev["items"]] == names[:-4:-1]
    by_rate = get(broker, f"/api/queues?page=1&name={unique}"
                          "&sort=message_stats.publish_details.rate")
    assert by_rate["filtered_count"] == 12
    # without ?page= the answer stays the plain list, filtered and sorted if asked
    plain = get(broker, f"/api/queues?name={unique}&sort=name&sort_reverse=true")
    assert [q["name"] for q in plain] == names[::-1]


def test_queues_sorted_by_depth(broker, unique):
    names = [f"{unique}-{i}" for i in range(3)]
    _declare(broker, names)
    with connection(broker.port) as conn:
        ch = conn.channel()
        for i, n in enumerate(names):
            for _ in range(i * 2):
                ch.basic_publish("", n, b"x")
        conn.process_data_events(0)
        ch.queue_declare(names[-1], passive=True)  # a round trip: the publishes are in
    page = get(broker, f"/api/queues?page=1&name={unique}&sort=messages_ready"
                       "&sort_reverse=true")
    assert [q["name"] for q in page["items"]] == names[::-1]
    assert [q["messages_ready"] for q in page["items"]] == [4, 2, 0]


def test_paging_errors_and_empty(broker, unique):
    for query, text in (("page=0", "page must be"), ("page=x", "integers"),
                        ("page=1&page_size=501", "page_size must be between 1 and 500"),
                        (f"page=2&name={unique}-none", "page_out_of_range"),
                        ("page=1&use_regex=true&name=(", "invalid regular expression")):
        status, body, _ = call(broker, "GET", "/api/queues?" + query)
        assert status == 400, query
        assert text in body["reason"], (query, body)
    empty = get(broker, f"/api/queues?page=1&name={unique}-none")
    assert (empty["items"], empty["filtered_count"], empty["page_count"]) == ([], 0, 0)


def test_exchanges_and_connections_paged(broker, unique):
    for i in range(3):
        assert call(broker, "PUT", f"/api/exchanges/%2F/{unique}-{i}",
                    {"type": "fanout"})[0] == 201
    page = get(broker, f"/api/exchanges?page=1&page_size=2&name={unique}&sort=name")
    assert (page["filtered_count"], page["page_count"]) == (3, 2)
    assert [x["name"] for x in page["items"]] == [f"{unique}-0", f"{unique}-1"]
    with connection(broker.port):
        conns = get(broker, "/api/connections?page=1&page_size=500")
        assert conns["item_count"] >= 1 and conns["total_count"] >= 1


# ---- get, publish, exchange bindings ----


def test_get_messages_without_removing_them(broker, unique):
    q = unique
    _declare(broker, [q])
    with connection(broker.port) as conn:
        ch = conn.channel()
        ch.basic_publish("", q, b"first", pika.BasicProperties(
            content_type="text/plain", headers={"k": "v"}, delivery_mode=2))
        ch.basic_publish("", q, b"\xff\x00binary")
        ch.basic_publish("", q, b"third")
        ch.queue_declare(q, passive=True)
    path = f"/api/queues/%2F/{q}/get"
    status, msgs, _ = call(broker, "POST", path, {"count": 2, "ackmode": "ack_requeue_true",
                                                   "encoding": "auto"})
    assert status == 200
    assert [m["payload_encoding"] for m in msgs] == ["string", "base64"]
    assert msgs[0]["payload"] == "first"
    assert base64.b64decode(msgs[1]["payload"]) == b"\xff\x00binary"
    assert msgs[0]["properties"]["headers"] == {"k": "v"}
    assert msgs[0]["properties"]["delivery_mode"] == 2
    assert (msgs[0]["exchange"], msgs[0]["routing_key"], msgs[0]["redelivered"]) == ("", q,
                                                                                   False)
    assert msgs[0]["payload_bytes"] == 5 and msgs[1]["message_count"] == 1
    # requeued in place: the same order, now redelivered, nothing lost
    q_json = get(broker, f"/api/queues/%2F/{q}")
    assert (q_json["messages_ready"], q_json["messages_unacknowledged"]) == (3, 0)
    again = call(broker, "POST", path, {"count": 5, "ackmode": "ack_requeue_true",
                                        "encoding": "base64", "truncate": 3})[1]
    assert [m["redelivered"] for m in again] == [True, True, False]
    assert base64.b64decode(again[0]["payload"]) == b"fir" and again[0]["payload_bytes"] == 5
    # ack_requeue_false removes what it took
    taken = call(broker, "POST", path, {"count": 1, "ackmode": "ack_requeue_false"})[1]
    assert taken[0]["payload"] == "first"
    assert get(broker, f"/api/queues/%2F/{q}")["messages_ready"] == 2
    status, body, _ = call(broker, "POST", path, {"count": 1, "ackmode": "nope"})
    assert status == 400 and "ackmode" in body["reason"]


def test_publish_through_the_api(broker, unique):
    x, q = f"{unique}-x", f"{unique}-q"
    assert call(broker, "PUT", f"/api/exchanges/%2F/{x}", {"type": "direct"})[0] == 201
    _declare(broker, [q])
    with connection(broker.port) as conn:
        ch = conn.channel()
        ch.queue_bind(q, x, "rk")
        path = f"/api/exchanges/%2F/{x}/publish"
        body = {"routing_key": "rk", "payload": "hello", "payload_encoding": "string",
                "properties": {"delivery_mode": 2, "headers": {"h": 1},
                               "content_type": "text/plain"}}
        status, out, _ = call(broker, "POST", path, body)
        assert (status, out) == (200, {"routed": True})
        status, out, _ = call(broker, "POST", path, dict(body, routing_key="nowhere"))
        assert (status, out) == (200, {"routed": False})
        b64 = {"routing_key": q, "payload": base64.b64encode(b"\x00\x01").decode(),
               "payload_encoding": "base64", "properties": {}}
        assert call(broker, "POST", "/api/exchanges/%2F/amq.default/publish", b64)[1] == {
            "routed": True}
        method, props, got = ch.basic_get(q, auto_ack=True)
        assert got == b"hello" and method.routing_key == "rk" and method.exchange == x
        assert props.delivery_mode == 2 and props.headers == {"h": 1}
        assert props.content_type == "text/plain"
        assert ch.basic_get(q, auto_ack=True)[2] == b"\x00\x01"
    for bad in ({"routing_key": "rk", "payload": "x", "payload_encoding": "hex"},
                {"routing_key": "rk", "payload": "!!", "payload_encoding": "base64"},
                {"routing_key": "rk", "payload": "x", "properties": {"nope": 1}},
                {"routing_key": "rk", "payload": "x", "properties": {"priority": "high"}}):
        assert call(broker, "POST", path, bad)[0] == 400, bad
    assert call(broker, "POST", f"/api/exchanges/%2F/{unique}-none/publish", body)[:2] == (
        400, {"error": "bad_request",
              "reason": f"404 NOT_FOUND - no exchange '{unique}-none' in vhost '/'"})
    # the exchange's bindings, both directions
    src = get(broker, f"/api/exchanges/%2F/{x}/bindings/source")
    assert [(b["source"], b["destination"], b["routing_key"]) for b in src] == [(x, q, "rk")]
    assert get(broker, f"/api/exchanges/%2F/{x}/bindings/destination") == []


def test_monitoring_user_gets_and_publishes_with_its_permissions(broker_factory):
    """As RabbitMQ's API, a get or publish is done as the user: alice (monitoring; on "/"
    read ".*", write "") may get, not publish, with RabbitMQ's answers."""
    import pathlib
    b = broker_factory()
    defs = json.loads((pathlib.Path(__file__).parent / "fixtures" /
                       "rabbitmq-definitions.json").read_text())
    assert call(b, "POST", "/api/definitions", defs)[0] == 204
    alice = ("alice", "s3cret")  # tag "monitoring" in the fixture
    status, body, _ = call(b, "POST", "/api/queues/%2F/orders.all/get",
                           {"count": 1, "ackmode": "ack_requeue_true"}, auth=alice)
    assert (status, body) == (200, [])
    status, body, _ = call(b, "POST", "/api/exchanges/%2F/amq.default/publish",
                           {"routing_key": "orders.all", "payload": "x", "properties": {},
                            "payload_encoding": "string"}, auth=alice)
    assert (status, body) == (400, {"error": "bad_request", "reason":
                                    "403 ACCESS_REFUSED - access to exchange 'amq.default' "
                                    "in vhost '/' refused for user 'alice'"})
    assert get(b, "/api/queues/%2F/orders.all")["messages"] == 0


def _segment_bytes(data_dir: str) -> int:
    return sum(p.stat().st_size for p in pathlib.Path(data_dir).glob("*.seg"))


def test_node_reports_alarms_and_journal_size(broker, unique):
    node = get(broker, "/api/nodes")[0]
    assert node["mem_alarm"] is False and node["disk_free_alarm"] is False
    # journal_bytes is the size of the segment files, and grows with what is journaled
    before = node["journal_bytes"]
    assert isinstance(before, int) and before == _segment_bytes(broker.data_dir) > 0
    with connection(broker.port) as c:
        ch = c.channel()
        ch.queue_declare(unique, durable=True)
        ch.confirm_delivery()
        ch.basic_publish("", unique, b"j" * 100_000, pika.BasicProperties(delivery_mode=2))
        after = get(broker, "/api/nodes")[0]["journal_bytes"]
        assert after >= before + 100_000
        assert after == _segment_bytes(broker.data_dir)
        ch.queue_delete(unique)


def test_node_reports_raised_alarms(broker_factory):
    # both alarms raised at start-up: a watermark below any RSS, a limit above any disk
    b = broker_factory("--memory-high-watermark", "1MiB", "--disk-free-limit", "1000000G")
    # logged once both are set (the first sample sets both): read at once, no polling
    b.wait_for_log("disk resource limit alarm")
    node = get(b, "/api/nodes")[0]
    assert node["mem_alarm"] is True and node["disk_free_alarm"] is True
    assert get(b, "/api/nodes/" + node["name"].replace("@", "%40"))["mem_alarm"] is True


# ---- the dashboard's files ----


def _fetch(broker, path: str, headers: dict | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{broker.management_port}{path}",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_dashboard_files_are_served_by_syncmq(broker):
    status, headers, page = _fetch(broker, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assets = re.findall(rb'(?:src|href)="(/static/[^"]+)"', page)
    assert {b"/static/app.js", b"/static/style.css"} <= set(assets)
    for path in [p.decode() for p in assets]:
        status, headers, data = _fetch(broker, path)
        assert status == 200 and data, path
        # nothing is fetched from elsewhere: no absolute URL in any file the page loads
        assert not re.search(rb"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", data), path
        text = data.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")  # a name, not a fetch
        assert b"https://" not in text and b"http://" not in text, path
        status, _, again = _fetch(broker, path, {"If-None-Match": headers["ETag"]})
        assert (status, again) == (304, b"")
    assert _fetch(broker, "/static/app.js")[1]["Content-Type"].startswith("text/javascript")
    assert _fetch(broker, "/static/nope.js")[0] == 404
    assert _fetch(broker, "/static/../api/overview")[0] in (400, 404)
    # the page itself needs no login; the API it calls does
    assert _fetch(broker, "/api/overview")[0] == 401


def test_api_401_challenges_only_non_dashboard_callers(broker):
    status, headers, _ = _fetch(broker, "/api/overview")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    status, headers, _ = _fetch(broker, "/api/overview", {"X-Requested-With": "XMLHttpRequest"})
    assert status == 401 and "WWW-Authenticate" not in headers


def test_assets_are_package_data():
    """The files are found through the package (what a non-editable install has)."""
    import syncmq.management.ui as ui
    assets = ui.load_assets()
    assert {"/", "/static/app.js", "/static/style.css", "/static/favicon.svg"} <= set(assets)
    cfg = (__import__("pathlib").Path(__file__).parent.parent / "setup.cfg").read_text()
    assert "syncmq.management.ui = static/*" in cfg


# ---- the overview's history (RabbitMQ's ?msg_rates_age=&lengths_age= samples) ----


def test_history_samples_newest_first_spaced_and_aged():
    from syncmq.management.history import History, details
    n = {"v": 0}

    def sample() -> dict[str, int]:
        n["v"] += 10
        return {"publish": n["v"]}

    h = History(sample, interval=5.0, keep=60.0)
    for i in range(20):  # one sample every 5 s, 95 s in all: only the last 60 s are kept
        h.record(now_ms=1_000_000 + i * 5000 + (i % 2) * 40)  # a little timer jitter
    got = h.samples("publish", 60, 5)
    assert got[0] == {"sample": 200, "timestamp": 1_095_040}
    assert [s["timestamp"] for s in got] == sorted((s["timestamp"] for s in got), reverse=True)
    assert len(got) == 13  # 60 s back from the newest, one every 5 s
    assert len(h.samples("publish", 60, 10)) == 7  # every other one
    assert len(h.samples("publish", 20, 5)) == 5
    assert h.samples("nope", 60, 5) == []
    d = details(got, counter=True)
    assert d["avg_rate"] == 2.0 and "avg" not in d  # 10 per 5 s
    assert details(got[:1], counter=False)["avg"] == 200


def test_overview_with_samples(broker):
    ov = get(broker, "/api/overview?msg_rates_age=600&msg_rates_incr=5"
                     "&lengths_age=600&lengths_incr=5")
    pub = ov["message_stats"]["publish_details"]
    assert {"rate", "samples", "avg_rate"} <= set(pub)
    assert pub["samples"], "the sampler records one sample when it starts"
    assert set(pub["samples"][0]) == {"sample", "timestamp"}
    ready = ov["queue_totals"]["messages_ready_details"]
    assert {"samples", "avg", "avg_rate"} <= set(ready)
    # without the parameters the answer stays as it was
    assert "samples" not in get(broker, "/api/overview")["message_stats"]["publish_details"]
    status, body, _ = call(broker, "GET", "/api/overview?msg_rates_age=x")
    assert status == 400


def test_client_reset_mid_request_is_not_an_error(broker_factory):
    """A browser leaving the page resets connections whose request is half sent: the server
    keeps serving and its log gets no traceback (which would break one-JSON-object-a-line)."""
    import socket
    import struct
    b = broker_factory()
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", b.management_port), timeout=TIMEOUT)
        s.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n")  # no blank line: unfinished
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST
    assert get(b, "/api/overview")["product_name"] == "syncmq"
    assert b.stop() == 0
    assert not b.tracebacks(), b.log_tail()
    assert not [line for line in b.lines if not line.startswith("{")], b.log_tail()


def test_post_body_must_be_json(broker, unique):
    """A cross-site form (text/plain, urlencoded) cannot import definitions with a browser's
    cached credentials: a POST body must be declared application/json (415 otherwise)."""
    body = json.dumps({"queues": [{"name": unique, "vhost": "/", "durable": False,
                                   "auto_delete": False, "arguments": {}}]}).encode()
    token = base64.b64encode(b"guest:guest").decode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        req = urllib.request.Request(f"http://127.0.0.1:{broker.management_port}"
                                     "/api/definitions", data=body, method="POST",
                                     headers={"Authorization": "Basic " + token,
                                              "Content-Type": ctype})
        status, _, raw = _send(req)
        assert status == 415, (ctype, status, raw)
    assert call(broker, "GET", f"/api/queues/%2F/{unique}")[0] == 404
    status = call(broker, "POST", "/api/definitions", json.loads(body),
                  headers={"Content-Type": "application/json; charset=utf-8"})[0]
    assert status == 204
    assert call(broker, "GET", f"/api/queues/%2F/{unique}")[0] == 200


def _send(req):
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# ---- a queue's history (the queue page's charts) and the channel list/detail ----


def test_watched_history_bounded_expiring_and_forgetting_gone_objects(monkeypatch):
    """Only watched objects are sampled: at most ``limit`` (least recently watched dropped),
    none watched longer ago than ``keep``, and an object whose sample is None (deleted)."""
    from syncmq.management import history
    gone: set[str] = set()
    calls: list[str] = []

    def sample(key):
        calls.append(key)
        return None if key in gone else {"messages": len(key)}

    w = history.Watched(sample, interval=5.0, keep=60.0, limit=2)
    w.record()
    assert calls == []  # nothing watched: nothing sampled (10,000 queues cost nothing)
    w.watch("a")
    assert calls == ["a"] and w.samples("a", "messages", 60, 5)[0]["sample"] == 1
    w.watch("bb")
    w.watch("a")  # "a" is now the most recently watched
    w.watch("ccc")  # over the limit: "bb" goes
    assert w.watched() == ["a", "ccc"] and w.samples("bb", "messages", 60, 5) == []
    w.record(now_ms=int(time.time() * 1000) + 5000)
    assert len(w.samples("a", "messages", 60, 5)) == 2
    gone.add("ccc")
    w.record()
    assert w.watched() == ["a"]  # a deleted queue's history ends
    clock = time.monotonic() + 61
    monkeypatch.setattr(history.time, "monotonic", lambda: clock)
    w.record()
    assert w.watched() == []  # nobody asked for a minute: no more sampling


def test_queue_samples_as_rabbitmq(broker, unique):
    """``GET /api/queues/{vh}/{q}?lengths_age=&lengths_incr=&msg_rates_age=&msg_rates_incr=``:
    RabbitMQ's ``samples``/``avg``/``avg_rate`` in the depth and message_stats details."""
    _declare(broker, [unique])
    with connection(broker.port) as c:
        ch = c.channel()
        for _ in range(3):
            ch.basic_publish("", unique, b"x")
        ch.queue_declare(unique, passive=True)  # a round trip: the publishes are in
    path = f"/api/queues/%2F/{unique}"
    q = get(broker, path + "?lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5")
    for k in ("messages", "messages_ready", "messages_unacknowledged"):
        d = q[k + "_details"]
        assert {"rate", "samples", "avg", "avg_rate"} <= set(d), (k, d)
        assert set(d["samples"][0]) == {"sample", "timestamp"}
    assert q["messages_ready_details"]["samples"][0]["sample"] == 3
    pub = q["message_stats"]["publish_details"]
    assert {"rate", "samples", "avg_rate"} <= set(pub) and "avg" not in pub
    assert pub["samples"][0]["sample"] == 3
    plain = get(broker, path)
    assert "samples" not in plain["messages_details"]
    assert "samples" not in plain["message_stats"]["publish_details"]
    assert call(broker, "GET", path + "?lengths_age=-1")[0] == 400
    assert call(broker, "GET", path + "?msg_rates_age=x")[0] == 400
    assert get(broker, "/api/overview")["product_name"] == "syncmq"  # still serving


def test_channels_paged_and_channel_consumers(broker, unique):
    """``/api/channels`` pages like the other lists (the Channels page); a channel's detail
    lists its consumers (``consumer_details``), as RabbitMQ's."""
    _declare(broker, [unique])
    with connection(broker.port) as c:
        chans = [c.channel() for _ in range(3)]
        chans[1].basic_qos(prefetch_count=7)
        chans[1].basic_consume(unique, lambda *a: None, consumer_tag=f"{unique}-tag")
        chans[2].confirm_delivery()
        chans[2].queue_declare(unique, passive=True)
        cname = next(x["connection_details"]["name"] for x in get(broker, "/api/channels")
                     if x["consumer_count"] == 1 and x["prefetch_count"] == 7)
        page = get(broker, "/api/channels?page=1&page_size=2&name=" + quote(cname))
        assert set(page) == {"items", "page", "page_count", "page_size", "filtered_count",
                             "item_count", "total_count"}
        assert (page["filtered_count"], page["item_count"], page["page_count"]) == (3, 2, 2)
        assert [x["number"] for x in page["items"]] == [1, 2]
        rev = get(broker, "/api/channels?page=1&page_size=5&sort=number&sort_reverse=true"
                          "&name=" + quote(cname))
        assert [x["number"] for x in rev["items"]] == [3, 2, 1]
        assert rev["items"][0]["confirm"] is True
        detail = get(broker, "/api/channels/" + quote(f"{cname} (2)", safe=""))
        assert [d["consumer_tag"] for d in detail["consumer_details"]] == [f"{unique}-tag"]
        assert detail["consumer_details"][0]["queue"] == {"name": unique, "vhost": "/"}
        assert get(broker, "/api/channels/" + quote(f"{cname} (1)", safe=""))[
            "consumer_details"] == []
        assert call(broker, "GET", "/api/channels/" + quote(f"{cname} (9)", safe=""))[0] == 404
        vh = get(broker, "/api/vhosts/%2F/channels?page=1&page_size=100&name=" + quote(cname))
        assert vh["filtered_count"] == 3
