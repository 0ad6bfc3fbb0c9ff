"""Topic permissions and user limits against RabbitMQ (issue #16): the same script run against
syncmq and the private RabbitMQ node (management plugin on), transcripts compared.

The script sets everything up through the management API (users, permissions, topic
permissions with ``{username}``/``{vhost}`` variables, user limits), then drives AMQP with a
raw client so that reply codes, class/method ids and texts are compared exactly: publishes to
topic exchanges allowed and refused, to direct and topic exchanges without topic permissions,
queue.bind/unbind and exchange.bind/unbind checked on the source's binding key, a change of
topic permission applying to an open connection, ``max-channels`` and ``max-connections``
(0, a positive limit, negative = none). Then every bad input of the endpoints, the listings,
and a definitions file with ``topic_permissions`` and users' ``limits`` imported into both.

Documented differences (docs/users-file.md) are normalised, each named where it is: an
invalid regex's reason (PCRE's message and offset vs Python's) and the 500s RabbitMQ answers
for values of the wrong type (syncmq: 400) are compared on status and the stable part only.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import amqp_raw as raw
import pytest

from syncmq.wire import _spec

USER, PW = "tpu", "tpu-pw"
TIMEOUT = 30.0


def http(port: int, method: str, path: str, body=None, raw_body: bytes | None = None):
    data = raw_body if raw_body is not None else (
        json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", data=data,
                                 method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


@pytest.fixture(scope="module")
def rabbit_mgmt(rabbitmq) -> int:
    deadline = time.monotonic() + 120
    while True:
        try:
            if http(rabbitmq.management_port, "GET", "/overview")[0] == 200:
                return rabbitmq.management_port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("RabbitMQ's management plugin never answered")
        time.sleep(0.2)  # polling a port another process opens; nothing to wait on


# ---- AMQP steps with a raw client (exact codes, ids and texts) ----

def _reply(c: raw.RawClient, ch: int) -> tuple:
    """The answer on channel ``ch``: the ok method's name, or the close's fields."""
    while True:
        f = c.read_method()
        m = f.method
        if isinstance(m, (_spec.Channel.Close, _spec.Connection.Close)):
            if isinstance(m, _spec.Channel.Close):
                c.send_method(f.channel, _spec.Channel.CloseOk())
            return (type(m).__qualname__, m.reply_code, m.class_id, m.method_id, m.reply_text)
        if f.channel == ch and m is not None:
            return (type(m).__qualname__,)


def _publish(c: raw.RawClient, ch: int, exchange: str, key: str) -> tuple:
    c.open_channel(ch)
    c.send_method(ch, _spec.Confirm.Select())
    c.expect_method(ch, _spec.Confirm.SelectOk)
    c.publish(ch, exchange, key, b"m")
    return ("publish", exchange, key, _reply(c, ch))


def _method(c: raw.RawClient, ch: int, method) -> tuple:
    c.open_channel(ch)
    c.send_method(ch, method)
    return (type(method).__qualname__, _reply(c, ch))


def _put(port: int, path: str, body) -> int:
    status = http(port, "PUT", path, body)[0]
    assert status in (201, 204), (path, status)
    return status


def amqp_script(port: int, mgmt: int) -> list:
    out: list = []
    _put(mgmt, f"/users/{USER}", {"password": PW, "tags": ""})
    _put(mgmt, f"/permissions/%2F/{USER}", {"configure": ".*", "write": ".*", "read": ".*"})
    for path in ("/exchanges/%2F/tp-x", "/exchanges/%2F/tp-x2"):
        _put(mgmt, path, {"type": "topic", "durable": False})
    _put(mgmt, "/exchanges/%2F/tp-fan", {"type": "fanout", "durable": False})
    tp = f"/topic-permissions/%2F/{USER}"
    out.append(("put", _put(mgmt, tp, {"exchange": "amq.topic", "write": "^{username}\\.",
                                       "read": "^r\\.{vhost}\\."})))
    out.append(("put again", _put(mgmt, tp, {"exchange": "amq.direct", "write": "^nope$",
                                             "read": "^nope$"})))
    _put(mgmt, tp, {"exchange": "tp-x2", "write": "", "read": ""})
    c = raw.connect(port, user=USER, password=PW)
    try:
        out.append(_publish(c, 1, "amq.topic", f"{USER}.a"))       # allowed ({username})
        out.append(_publish(c, 2, "amq.topic", "other.a"))         # refused: 403
        out.append(_publish(c, 3, "amq.direct", "other.a"))        # not a topic exchange
        out.append(_publish(c, 4, "tp-x", "any.key"))              # no topic permission
        out.append(_publish(c, 5, "tp-x2", ""))                    # "" is ^$
        out.append(_publish(c, 6, "tp-x2", "a"))
        out.append(_method(c, 7, _spec.Queue.Declare(queue="tp-q", exclusive=True)))
        B, U = _spec.Queue.Bind, _spec.Queue.Unbind
        out.append(_method(c, 8, B(queue="tp-q", exchange="amq.topic", routing_key="r./.x")))
        out.append(_method(c, 9, B(queue="tp-q", exchange="amq.topic", routing_key="x")))
        out.append(_method(c, 10, U(queue="tp-q", exchange="amq.topic", routing_key="x")))
        out.append(_method(c, 11, U(queue="tp-q", exchange="amq.topic",
                                    routing_key="r./.x")))
        # read on the source's key: a topic source is checked, a topic destination is not
        XB, XU = _spec.Exchange.Bind, _spec.Exchange.Unbind
        out.append(_method(c, 12, XB(destination="tp-fan", source="amq.topic",
                                     routing_key="x")))
        out.append(_method(c, 13, XB(destination="amq.topic", source="tp-fan",
                                     routing_key="x")))
        out.append(_method(c, 14, XU(destination="amq.topic", source="tp-fan",
                                     routing_key="x")))
        out.append(_method(c, 15, XU(destination="tp-fan", source="amq.topic",
                                     routing_key="x")))
        # a missing source is not checked (binding_action: only an existing exchange)
        out.append(_method(c, 16, B(queue="tp-q", exchange="tp-missing", routing_key="x")))
        # a change applies to the open connection's next check
        _put(mgmt, tp, {"exchange": "amq.topic", "write": ".*", "read": ".*"})
        out.append(_publish(c, 17, "amq.topic", "other.a"))
        assert http(mgmt, "DELETE", f"{tp}/amq.topic")[0] == 204
        out.append(_publish(c, 18, "amq.direct", "x"))
    finally:
        c.close()
    out.extend(_limits_script(port, mgmt))
    return out


def _open_channels(port: int, n: int) -> list:
    c = raw.connect(port, user=USER, password=PW)
    try:
        out = []
        for ch in range(1, n + 1):
            c.send_method(ch, _spec.Channel.Open())
            out.append(_reply(c, ch))
            if out[-1][0] != "Channel.OpenOk":
                break
        return out
    finally:
        c.close()


def _connect_outcome(port: int) -> tuple:
    c = raw.RawClient(port)
    try:
        c.handshake(user=USER, password=PW, open_=False)
        c.send_method(0, _spec.Connection.Open(virtual_host="/"))
        return _reply(c, 0)
    finally:
        c.close()


def _limits_script(port: int, mgmt: int) -> list:
    out: list = []
    lim = f"/user-limits/{USER}"
    out.append(("limit", http(mgmt, "PUT", f"{lim}/max-channels", {"value": 2})))
    out.append(("channels", _open_channels(port, 3)))
    out.append(("limit", http(mgmt, "PUT", f"{lim}/max-channels", {"value": -1})))
    out.append(("channels", _open_channels(port, 3)))
    out.append(("limit", http(mgmt, "PUT", f"{lim}/max-connections", {"value": 0})))
    out.append(("connect", _connect_outcome(port)))
    out.append(("limit", http(mgmt, "PUT", f"{lim}/max-connections", {"value": 1})))
    first = raw.connect(port, user=USER, password=PW)
    try:
        out.append(("second", _connect_outcome(port)))
    finally:
        first.close()
    out.append(("listed", http(mgmt, "GET", lim)))
    out.append(("user", http(mgmt, "GET", f"/users/{USER}")[1]["limits"]))
    out.append(("clear", http(mgmt, "DELETE", f"{lim}/max-connections")))
    out.append(("cleared", http(mgmt, "GET", lim)))
    out.append(("clear all", http(mgmt, "DELETE", f"{lim}/all")))
    out.append(("cleared all", http(mgmt, "GET", lim)))
    # PUT /api/users with "limits" merges them (a PUT without keeps them)
    for body in ({"password": PW, "tags": "", "limits": {"max-connections": 3}},
                 {"password": PW, "tags": ""},
                 {"password": PW, "tags": "", "limits": {"max-channels": 4}}):
        out.append(("put user", http(mgmt, "PUT", f"/users/{USER}", body),
                    http(mgmt, "GET", f"/users/{USER}")[1]["limits"]))
    return out


def _cleanup(mgmt: int) -> None:
    for path in (f"/users/{USER}", "/users/tpd", "/exchanges/%2F/tp-x", "/exchanges/%2F/tp-x2",
                 "/exchanges/%2F/tp-fan"):
        http(mgmt, "DELETE", path)


def test_topic_permissions_and_limits_like_rabbitmq(rabbitmq, rabbit_mgmt, broker):
    _cleanup(rabbit_mgmt)
    try:
        expected = amqp_script(rabbitmq.port, rabbit_mgmt)
    finally:
        _cleanup(rabbit_mgmt)
    got = amqp_script(broker.port, broker.management_port)
    _cleanup(broker.management_port)
    assert got == expected
    # what the comparison covers (so that both failing alike cannot pass)
    refused = ("Channel.Close", 403, 60, 40, "ACCESS_REFUSED - access to topic 'other.a' in "
               "exchange 'amq.topic' in vhost '/' refused for user 'tpu'")
    assert ("publish", "amq.topic", "other.a", refused) in got
    assert ("publish", "amq.topic", f"{USER}.a", ("Basic.Ack",)) in got
    assert any(step[0] == "channels" and step[1][-1][1] == 530 for step in got)


# ---- bad inputs, listings and definitions ----

BAD_INPUTS = [
    ("PUT", f"/topic-permissions/%2F/{USER}", {"write": "a", "read": "b"}),
    ("PUT", f"/topic-permissions/%2F/{USER}", {"exchange": "amq.topic", "write": "a"}),
    ("PUT", f"/topic-permissions/%2F/{USER}", {"exchange": "amq.topic"}),
    ("PUT", f"/topic-permissions/%2F/{USER}", []),
    ("PUT", f"/topic-permissions/%2F/{USER}", b"{bad"),
    ("PUT", "/topic-permissions/%2F/nobody", {"exchange": "x", "write": "a", "read": "b"}),
    ("PUT", f"/topic-permissions/novh/{USER}", {"exchange": "x", "write": "a", "read": "b"}),
    ("GET", "/topic-permissions/%2F/nobody", None),
    ("GET", f"/topic-permissions/novh/{USER}", None),
    ("GET", f"/topic-permissions/%2F/{USER}", None),  # none yet: 404
    ("DELETE", f"/topic-permissions/%2F/{USER}", None),  # none: 404
    ("DELETE", f"/topic-permissions/%2F/{USER}/amq.topic", None),
    ("DELETE", "/topic-permissions/%2F/nobody", None),
    ("GET", "/users/nobody/topic-permissions", None),
    ("GET", "/vhosts/novh/topic-permissions", None),
    ("PUT", f"/user-limits/{USER}/max-connections", {"value": 1.5}),
    ("PUT", f"/user-limits/{USER}/max-connections", {"value": 1e3}),  # ~p: 1.0e3
    ("PUT", f"/user-limits/{USER}/max-channels", {"value": 0.1}),
    ("PUT", f"/user-limits/{USER}/max-channels", {"value": "é"}),  # ~p: <<"é">>
    ("PUT", f"/user-limits/{USER}/max-channels", {"value": ["ā", 1e-5]}),  # <<196,129>>,1.0e-5
    ("PUT", f"/user-limits/{USER}/max-connections", {"value": "3"}),
    ("PUT", f"/user-limits/{USER}/max-connections", {"value": None}),
    ("PUT", f"/user-limits/{USER}/max-connections", {"value": True}),
    ("PUT", f"/user-limits/{USER}/max-connections", {"value": [1, 2]}),
    ("PUT", f"/user-limits/{USER}/max-connections", {}),
    ("PUT", f"/user-limits/{USER}/max-queues", {"value": 3}),
    ("PUT", f"/user-limits/{USER}/bogus", {"value": "x"}),
    ("PUT", f"/user-limits/{USER}/max-channels", []),
    ("PUT", "/user-limits/nobody/max-channels", {"value": 1}),
    ("GET", "/user-limits/nobody", None),
    ("GET", f"/user-limits/{USER}/max-channels", None),  # 405
    ("DELETE", f"/user-limits/{USER}/bogus", None),  # 204
]


def _bad_inputs(mgmt: int) -> list:
    _put(mgmt, f"/users/{USER}", {"password": PW, "tags": ""})
    out = []
    for method, path, body in BAD_INPUTS:
        if isinstance(body, bytes):
            status, answer = http(mgmt, method, path, raw_body=body)
        else:
            status, answer = http(mgmt, method, path, body)
        if status == 405:
            answer = None  # syncmq's 405 has RabbitMQ's JSON error body, RabbitMQ's none
        out.append((method, path, json.dumps(body) if not isinstance(body, bytes) else "raw",
                    status, answer or None))
    # an invalid regex: RabbitMQ's reason carries PCRE's message and offset, syncmq's
    # Python's; compared on the status, the error and the stable part of the reason
    status, answer = http(mgmt, "PUT", f"/topic-permissions/%2F/{USER}",
                          {"exchange": "amq.topic", "write": "(", "read": ".*"})
    out.append(("bad regex", status, answer["error"], answer["reason"][:2]))
    out.append(("unchanged", http(mgmt, "GET", f"/users/{USER}/topic-permissions")))
    return out


def test_bad_inputs_like_rabbitmq(rabbitmq, rabbit_mgmt, broker):
    _cleanup(rabbit_mgmt)
    try:
        expected = _bad_inputs(rabbit_mgmt)
    finally:
        _cleanup(rabbit_mgmt)
    got = _bad_inputs(broker.management_port)
    _cleanup(broker.management_port)
    for g, e in zip(got, expected, strict=True):
        assert g == e
    assert ("bad regex", 400, "bad_request", ["invalid_regexp", "("]) in got
    # and the broker still serves
    assert http(broker.management_port, "GET", "/overview")[0] == 200


def _listings(mgmt: int) -> list:
    _put(mgmt, f"/users/{USER}", {"password": PW, "tags": ""})
    _put(mgmt, "/vhosts/tp-vh", {})
    tp = f"/topic-permissions/%2F/{USER}"
    for x in ("amq.topic", "tp-b", "tp-a"):
        _put(mgmt, tp, {"exchange": x, "write": f"^w{x}", "read": "{vhost}"})
    _put(mgmt, f"/topic-permissions/tp-vh/{USER}", {"exchange": "", "write": "", "read": ""})
    _put(mgmt, f"/user-limits/{USER}/max-connections", {"value": 5})
    _put(mgmt, f"/user-limits/{USER}/max-channels", {"value": -1})

    def ours(rows):
        return sorted(json.dumps(r, sort_keys=True) for r in rows if r.get("user") == USER)

    out = [("all", ours(http(mgmt, "GET", "/topic-permissions")[1])),
           ("user", ours(http(mgmt, "GET", f"/users/{USER}/topic-permissions")[1])),
           ("vhost", ours(http(mgmt, "GET", "/vhosts/tp-vh/topic-permissions")[1])),
           ("one", ours(http(mgmt, "GET", tp)[1])),
           ("one with exchange", ours(http(mgmt, "GET", f"{tp}/tp-a")[1])),
           ("limits", ours(http(mgmt, "GET", "/user-limits")[1])),
           ("delete one", http(mgmt, "DELETE", f"{tp}/tp-a")),
           ("delete missing", http(mgmt, "DELETE", f"{tp}/tp-none")),
           ("after", ours(http(mgmt, "GET", tp)[1])),
           ("delete all", http(mgmt, "DELETE", tp)),
           ("gone", http(mgmt, "GET", tp))]
    defs = http(mgmt, "GET", "/definitions")[1]
    out.append(("exported", ours(defs["topic_permissions"]),
                [u["limits"] for u in defs["users"] if u["name"] == USER]))
    http(mgmt, "DELETE", "/vhosts/tp-vh")
    out.append(("vhost deleted", ours(http(mgmt, "GET", "/topic-permissions")[1])))
    return out


def test_listings_like_rabbitmq(rabbitmq, rabbit_mgmt, broker):
    _cleanup(rabbit_mgmt)
    try:
        expected = _listings(rabbit_mgmt)
    finally:
        _cleanup(rabbit_mgmt)
        http(rabbit_mgmt, "DELETE", "/vhosts/tp-vh")
    got = _listings(broker.management_port)
    _cleanup(broker.management_port)
    assert got == expected


def _http_user_checks(mgmt: int) -> list:
    """The management API's publish and bind are checked against the HTTP user's topic
    permissions (RabbitMQ runs them through a channel): publish refused 400 with the AMQP
    text, bind/unbind refused 401."""
    tp = "/topic-permissions/%2F/guest"
    _put(mgmt, tp, {"exchange": "amq.topic", "write": "^ok", "read": "^ok"})
    _put(mgmt, "/queues/%2F/tp-hq", {"durable": False})
    out = []
    try:
        for key in ("no", "ok"):
            out.append(("publish", key, http(mgmt, "POST", "/exchanges/%2F/amq.topic/publish",
                                             {"routing_key": key, "payload": "x",
                                              "payload_encoding": "string",
                                              "properties": {}})))
        for key in ("no", "ok"):
            out.append(("bind", key, http(mgmt, "POST", "/bindings/%2F/e/amq.topic/q/tp-hq",
                                          {"routing_key": key})[0]))
        out.append(("unbind ok", http(mgmt, "DELETE",
                                      "/bindings/%2F/e/amq.topic/q/tp-hq/ok")[0]))
        http(mgmt, "DELETE", tp)
        out.append(("bind", "no", http(mgmt, "POST", "/bindings/%2F/e/amq.topic/q/tp-hq",
                                       {"routing_key": "no"})[0]))
        _put(mgmt, tp, {"exchange": "amq.topic", "write": "^ok", "read": "^ok"})
        out.append(("unbind no", http(mgmt, "DELETE",
                                      "/bindings/%2F/e/amq.topic/q/tp-hq/no")[0]))
    finally:
        http(mgmt, "DELETE", tp)
        http(mgmt, "DELETE", "/queues/%2F/tp-hq")
    return out


def test_http_publish_and_bind_like_rabbitmq(rabbitmq, rabbit_mgmt, broker):
    expected = _http_user_checks(rabbit_mgmt)
    got = _http_user_checks(broker.management_port)
    assert got == expected
    assert got[0] == ("publish", "no", (400, {
        "error": "bad_request", "reason": "403 ACCESS_REFUSED - access to topic 'no' in "
        "exchange 'amq.topic' in vhost '/' refused for user 'guest'"}))


DEFS = {
    "users": [{"name": "tpd", "password_hash": "", "hashing_algorithm":
               "rabbit_password_hashing_sha256", "tags": [],
               "limits": {"max-connections": 7, "max-channels": 9}}],
    "vhosts": [{"name": "/"}],
    "permissions": [{"user": "tpd", "vhost": "/", "configure": "", "write": ".*",
                     "read": ".*"}],
    "topic_permissions": [{"user": "tpd", "vhost": "/", "exchange": "amq.topic",
                           "write": "^{username}\\.", "read": "^r"}],
}


def _definitions(mgmt: int) -> list:
    out = [("import", http(mgmt, "POST", "/definitions", DEFS))]
    defs = http(mgmt, "GET", "/definitions")[1]
    out.append(("users", [{k: v for k, v in u.items() if k != "password_hash"}
                          for u in defs["users"] if u["name"] == "tpd"]))
    out.append(("topic", [t for t in defs["topic_permissions"] if t["user"] == "tpd"]))
    # a second import merges limits, as RabbitMQ's
    again = {"users": [{**DEFS["users"][0], "limits": {"max-channels": 1}}]}
    out.append(("merge", http(mgmt, "POST", "/definitions", again),
                http(mgmt, "GET", "/user-limits/tpd")))
    for bad in ({"topic_permissions": [{**DEFS["topic_permissions"][0], "user": "nobody"}]},
                {"topic_permissions": [{**DEFS["topic_permissions"][0], "vhost": "novh"}]},
                {"topic_permissions": [{**DEFS["topic_permissions"][0], "write": "("}]}):
        out.append(("refused", http(mgmt, "POST", "/definitions", bad)[0]))
    return out


def test_definitions_with_topic_permissions_like_rabbitmq(rabbitmq, rabbit_mgmt, broker):
    _cleanup(rabbit_mgmt)
    try:
        expected = _definitions(rabbit_mgmt)
    finally:
        _cleanup(rabbit_mgmt)
    got = _definitions(broker.management_port)
    _cleanup(broker.management_port)
    assert got == expected
    assert got[2] == ("topic", DEFS["topic_permissions"])


def test_syncmq_export_imports_into_rabbitmq(rabbitmq, rabbit_mgmt, broker):
    """syncmq's export (topic permissions, users' limits) is accepted by RabbitMQ, which then
    holds the same topic permissions and limits."""
    mgmt = broker.management_port
    assert http(mgmt, "POST", "/definitions", DEFS)[0] == 204
    exported = http(mgmt, "GET", "/definitions")[1]
    _cleanup(mgmt)
    mine = {"users": [u for u in exported["users"] if u["name"] == "tpd"],
            "permissions": [p for p in exported["permissions"] if p["user"] == "tpd"],
            "topic_permissions": exported["topic_permissions"]}
    _cleanup(rabbit_mgmt)
    try:
        assert http(rabbit_mgmt, "POST", "/definitions", mine)[0] in (201, 204)
        assert http(rabbit_mgmt, "GET", "/topic-permissions/%2F/tpd")[1] == \
            DEFS["topic_permissions"]
        assert http(rabbit_mgmt, "GET", "/user-limits/tpd")[1] == [
            {"user": "tpd", "value": {"max-channels": 9, "max-connections": 7}}]
    finally:
        _cleanup(rabbit_mgmt)
