"""Malformed management requests: each answers 400 (or 415) in RabbitMQ's error shape,
never a 500 or a Python message, and changes nothing (issue 18); definitions imports are
all or nothing; users keep ``loopback_only``; the API's publish applies AMQP's user_id
check."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid

import pytest

TIMEOUT = 30.0


def call(b, method, path, body=None, auth=("guest", "guest"), ctype="application/json",
         raw: bytes | None = None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{b.management_port}{path}", data=data,
                                 method=method)
    req.add_header("Authorization",
                   "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            out = r.read()
            return r.status, json.loads(out) if out else None
    except urllib.error.HTTPError as e:
        out = e.read()
        return e.code, json.loads(out) if out else None


MALFORMED = [
    ("PUT", "/api/queues/%2F/{u}", {"arguments": "x"}),
    ("PUT", "/api/queues/%2F/{u}", {"arguments": [1, 2]}),
    ("PUT", "/api/queues/%2F/{u}", {"durable": "yes"}),
    ("PUT", "/api/queues/%2F/{u}", {"arguments": {"x-max-length": 1 << 70}}),
    ("PUT", "/api/queues/%2F/{u}", [1]),
    ("PUT", "/api/queues/%2F/{u}", "text"),
    ("PUT", "/api/queues/%2F/" + "q" * 300, {}),
    ("PUT", "/api/exchanges/%2F/{u}", {"type": "direct", "arguments": 5}),
    ("PUT", "/api/exchanges/%2F/{u}", {"type": ["direct"]}),
    ("PUT", "/api/exchanges/%2F/{u}", {"type": "direct", "internal": 1}),
    ("PUT", "/api/permissions/%2F/guest", {"configure": "(", "write": "", "read": ""}),
    ("PUT", "/api/permissions/%2F/guest", {"configure": 1, "write": "", "read": ""}),
    ("PUT", "/api/users/{u}", {"password": 5}),
    ("PUT", "/api/users/{u}", {"password": "x", "tags": {"a": 1}}),
    ("PUT", "/api/users//", {"password": "x", "tags": ""}),
    ("PUT", "/api/vhosts//", {}),
    ("POST", "/api/queues/%2F/{u}-q/get", {"count": "many", "ackmode": "ack_requeue_true"}),
    ("POST", "/api/queues/%2F/{u}-q/get", {"count": [1], "ackmode": "ack_requeue_true"}),
    ("POST", "/api/exchanges/%2F/amq.direct/publish",
     {"routing_key": "a", "payload": "x", "payload_encoding": "string", "properties": 5}),
    ("POST", "/api/exchanges/%2F/amq.direct/publish",
     {"routing_key": 1, "payload": "x", "payload_encoding": "string", "properties": {}}),
    ("POST", "/api/definitions", []),
    ("POST", "/api/definitions", {"queues": "x"}),
]


@pytest.mark.parametrize("method,path,body", MALFORMED)
def test_malformed_request_is_a_clean_400(broker, method, path, body):
    unique = "m" + uuid.uuid4().hex[:10]
    if "-q/get" in path:
        call(broker, "PUT", f"/api/queues/%2F/{unique}-q", {})
    status, out = call(broker, method, path.format(u=unique), body)
    assert status == 400, out
    assert set(out) == {"error", "reason"} and out["error"] == "bad_request"
    assert "Traceback" not in out["reason"] and "object has no attribute" not in out["reason"]
    assert call(broker, "GET", f"/api/queues/%2F/{unique}")[0] == 404  # nothing created
    assert call(broker, "GET", "/api/overview")[0] == 200


@pytest.mark.parametrize("raw", [b"[" * 100000 + b"]" * 100000, b'{"a": NaN}', b"\xff\xfe",
                                 b'{"a": 1e400}', b"{" + b'"a":' * 20])
def test_undecodable_json_is_not_json(broker, raw):
    unique = "j" + uuid.uuid4().hex[:10]
    status, out = call(broker, "PUT", f"/api/queues/%2F/{unique}", raw=raw)
    assert (status, out) == (400, {"error": "bad_request", "reason": "not_json"})


LONE_SURROGATE = [
    # JSON may escape a lone UTF-16 surrogate; no AMQP string (UTF-8) can hold one
    ("POST", "/api/exchanges/%2F/amq.fanout/publish",
     b'{"routing_key": "\\ud800", "payload": "x", "payload_encoding": "string", '
     b'"properties": {}}'),
    ("POST", "/api/exchanges/%2F/amq.fanout/publish",
     b'{"routing_key": "k", "payload": "\\udfff", "payload_encoding": "string", '
     b'"properties": {}}'),
    ("POST", "/api/definitions", b'{"queues": [{"name": "\\ud800", "vhost": "/"}]}'),
    ("POST", "/api/definitions", b'{"vhosts": [{"name": "\\uDBFF"}]}'),
    ("PUT", "/api/vhosts/{u}", b'{"description": "\\ud800"}'),
    ("PUT", "/api/queues/%2F/{u}", b'{"arguments": {"\\ud800": 1}}'),
]


@pytest.mark.parametrize("method,path,raw", LONE_SURROGATE)
def test_lone_surrogate_is_not_json(broker, ch, method, path, raw):
    """Refused as RabbitMQ's JSON decoder refuses it (400 not_json), before anything is
    created: routed, such a routing key was a poison message that closed every consumer's
    connection with 541 on delivery."""
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.fanout")
    unique = "s" + uuid.uuid4().hex[:10]
    status, out = call(broker, method, path.format(u=unique), raw=raw)
    assert (status, out) == (400, {"error": "bad_request", "reason": "not_json"})
    assert call(broker, "GET", f"/api/vhosts/{unique}")[0] == 404
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)  # nothing routed
    # paired surrogates are one character (U+1F600), and fine
    ok = b'{"routing_key": "\\ud83d\\ude00", "payload": "x", "payload_encoding": "string", ' \
         b'"properties": {}}'
    assert call(broker, "POST", "/api/exchanges/%2F/amq.fanout/publish", raw=ok)[0] == 200
    method_, _, body = ch.basic_get(q, auto_ack=True)
    assert (method_.routing_key, body) == ("\U0001F600", b"x")


def test_every_post_must_be_json_and_name_missing_keys(broker, unique):
    pub = "/api/exchanges/%2F/amq.direct/publish"
    # an empty text/plain POST (a cross-site form) is refused before anything runs
    assert call(broker, "POST", pub, raw=b"", ctype="text/plain")[0] == 415
    assert call(broker, "POST", pub, raw=b"", ctype=None)[0] == 415
    status, out = call(broker, "POST", pub, raw=b"")
    assert (status, out) == (400, {"error": "bad_request", "reason":
                                   "[{key_missing,routing_key},\n {key_missing,properties},\n"
                                   " {key_missing,payload},\n {key_missing,payload_encoding}]"})
    status, out = call(broker, "POST", pub, {"routing_key": "x"})
    assert out["reason"] == ("[{key_missing,properties},\n {key_missing,payload},\n"
                             " {key_missing,payload_encoding}]")
    call(broker, "PUT", f"/api/queues/%2F/{unique}", {})
    status, out = call(broker, "POST", f"/api/queues/%2F/{unique}/get", {})
    assert (status, out["reason"]) == (400, "[{key_missing,ackmode},{key_missing,count}]")


def test_publish_applies_the_user_id_check(broker, unique):
    call(broker, "PUT", f"/api/queues/%2F/{unique}", {})
    pub = "/api/exchanges/%2F/amq.default/publish"
    body = {"routing_key": unique, "payload": "x", "payload_encoding": "string",
            "properties": {"user_id": "bob"}}
    assert call(broker, "POST", pub, body) == (400, {
        "error": "bad_request", "reason": "406 PRECONDITION_FAILED - user_id property set to "
        "'bob' but authenticated user was 'guest'"})
    body["properties"]["user_id"] = "guest"
    assert call(broker, "POST", pub, body) == (200, {"routed": True})


def test_no_cors_unless_configured(broker_factory):
    b = broker_factory("--management-cors-origin", "http://ok.example")
    for origin, allowed in (("http://ok.example", True), ("http://evil.example", False)):
        req = urllib.request.Request(f"http://127.0.0.1:{b.management_port}/api/overview",
                                     headers={"Origin": origin, "Authorization": "Basic " +
                                              base64.b64encode(b"guest:guest").decode()})
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            assert (r.headers.get("Access-Control-Allow-Origin") == origin) is allowed


def test_cors_preflight_needs_no_credentials(broker_factory):
    """A browser sends a preflight OPTIONS before any cross-origin request carrying
    Authorization, and never with credentials: as RabbitMQ's ``is_authorized`` (which passes
    OPTIONS), an allowed origin's preflight is answered 2xx with the CORS headers; any other
    origin's still needs credentials."""
    b = broker_factory("--management-cors-origin", "http://ok.example")
    url = f"http://127.0.0.1:{b.management_port}/api/queues/%2F/q"
    pre = {"Access-Control-Request-Method": "PUT",
           "Access-Control-Request-Headers": "authorization,content-type"}
    req = urllib.request.Request(url, method="OPTIONS",
                                 headers={"Origin": "http://ok.example", **pre})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        assert r.status == 204
        assert r.headers.get("Access-Control-Allow-Origin") == "http://ok.example"
        assert "PUT" in r.headers.get("Access-Control-Allow-Methods")
    req = urllib.request.Request(url, method="OPTIONS",
                                 headers={"Origin": "http://evil.example", **pre})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=TIMEOUT)
    assert e.value.code == 401 and "Access-Control-Allow-Origin" not in e.value.headers
    assert call(b, "PUT", "/api/queues/%2F/q", {})[0] == 201  # the real request still works


def test_metrics_aggregated_without_credentials_per_object_with(broker, unique):
    call(broker, "PUT", f"/api/queues/%2F/{unique}", {})
    url = f"http://127.0.0.1:{broker.management_port}"
    with urllib.request.urlopen(url + "/metrics", timeout=TIMEOUT) as r:
        text = r.read().decode()
    assert "rabbitmq_queue_messages_ready " in text and unique not in text
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/metrics/per-object", timeout=TIMEOUT)
    assert e.value.code == 401


def test_definitions_import_is_all_or_nothing(broker, unique):
    defs = {
        "vhosts": [{"name": f"{unique}-vh"}],
        "users": [{"name": f"{unique}-u", "password": "pw", "tags": ""}],
        "permissions": [{"user": f"{unique}-u", "vhost": f"{unique}-vh", "configure": ".*",
                         "write": ".*", "read": ".*"}],
        "exchanges": [{"name": f"{unique}-x", "vhost": "/", "type": "topic"}],
        "queues": [{"name": f"{unique}-q", "vhost": "/", "arguments": {}},
                   {"name": f"{unique}-bad", "vhost": "/",
                    "arguments": {"x-max-length": "ten"}}],
    }
    status, out = call(broker, "POST", "/api/definitions", defs)
    assert status == 400 and f"queue '{unique}-bad'" in out["reason"]
    assert call(broker, "GET", f"/api/vhosts/{unique}-vh")[0] == 404
    assert call(broker, "GET", f"/api/users/{unique}-u")[0] == 404
    assert call(broker, "GET", f"/api/exchanges/%2F/{unique}-x")[0] == 404
    assert call(broker, "GET", f"/api/queues/%2F/{unique}-q")[0] == 404
    defs["queues"].pop()
    assert call(broker, "POST", "/api/definitions", defs)[0] == 204
    assert call(broker, "GET", f"/api/queues/%2F/{unique}-q")[0] == 200
    assert call(broker, "GET", f"/api/users/{unique}-u")[0] == 200


@pytest.mark.parametrize("kind", ["exchanges", "queues", "bindings"])
def test_definitions_import_checks_argument_tables(broker, unique, kind):
    """Arguments are AMQP field tables, checked in the plan as PUT checks them: an integer
    beyond 64 bits used to pass the plan and fail in the journal after the object was in
    memory (an exchange or queue left there unjournaled, lost at restart, with a 204; a
    binding a 500 after the rest of the file was applied)."""
    big = {"x-custom": 1 << 70}
    defs = {"vhosts": [{"name": f"{unique}-vh"}],
            "exchanges": [{"name": f"{unique}-x", "vhost": "/", "type": "direct"}],
            "queues": [{"name": f"{unique}-q", "vhost": "/", "durable": True}],
            "bindings": [{"source": f"{unique}-x", "vhost": "/", "destination": f"{unique}-q",
                          "destination_type": "queue", "routing_key": "k"}]}
    defs[kind][0]["arguments"] = big
    status, out = call(broker, "POST", "/api/definitions", defs)
    assert status == 400 and "out of range" in out["reason"], out
    for path in (f"/api/vhosts/{unique}-vh", f"/api/exchanges/%2F/{unique}-x",
                 f"/api/queues/%2F/{unique}-q"):
        assert call(broker, "GET", path)[0] == 404, path  # nothing applied
    defs[kind][0]["arguments"] = {"x-custom": 1 << 62}
    assert call(broker, "POST", "/api/definitions", defs)[0] == 204
    status, out = call(broker, "GET", f"/api/queues/%2F/{unique}-q/bindings")
    assert status == 200 and any(b["source"] == f"{unique}-x" for b in out)


@pytest.mark.parametrize("kind", ["exchanges", "queues"])
def test_definitions_import_checks_booleans(broker, unique, kind):
    """durable/auto_delete/internal take JSON booleans and rabbitmqadmin's "true"/"false"
    strings (the rule PUT uses); anything else refuses the whole file."""
    def defs(durable):
        item = {"name": f"{unique}-{kind[0]}", "vhost": "/", "durable": durable}
        if kind == "exchanges":
            item["type"] = "direct"
        return {"vhosts": [{"name": f"{unique}-vh"}], kind: [item]}
    status, out = call(broker, "POST", "/api/definitions", defs("yes"))
    assert status == 400 and "durable" in out["reason"], out
    assert call(broker, "GET", f"/api/vhosts/{unique}-vh")[0] == 404  # nothing applied
    assert call(broker, "POST", "/api/definitions", defs("false"))[0] == 204
    status, out = call(broker, "GET", f"/api/{kind}/%2F/{unique}-{kind[0]}")
    assert status == 200 and out["durable"] is False, out


def test_empty_user_names_are_refused(broker):
    status, out = call(broker, "POST", "/api/definitions",
                       {"users": [{"name": "", "password": "pw", "tags": ""}]})
    assert status == 400 and "name" in out["reason"]
    assert call(broker, "PUT", "/api/users//", {"password": "pw", "tags": ""})[0] == 400
    assert all(u["name"] for u in call(broker, "GET", "/api/users")[1])


def test_loopback_only_survives_tag_and_password_changes():
    """The API's user changes (make_user with the old user) and a definitions import of an
    existing user keep ``loopback_only``; it is not observable over HTTP from 127.0.0.1, so
    this checks the store the broker authenticates against."""
    from syncmq.broker.auth import User, hash_password
    from syncmq.broker.broker import Broker
    from syncmq.management import definitions_import, users
    from syncmq.management.state import Context

    old = User("local", hash_password("pw"), ["administrator"], {}, loopback_only=True)
    assert users.make_user("local", tags=["monitoring"], old=old).loopback_only
    assert users.make_user("local", password="pw2", tags=[], old=old).loopback_only
    broker = Broker()
    users.update(broker, lambda u, v: u.__setitem__("local", old))
    ctx = Context(broker=broker, sessions=list)
    plan = definitions_import.plan(ctx, {"users": [{"name": "local", "password": "pw3",
                                                   "tags": "management"}]})
    definitions_import.apply(ctx, plan)
    assert broker.users.users["local"].loopback_only
    assert broker.users.users["local"].tags == ["management"]


def test_declare_bodies_typed_as_rabbitmq(broker, unique):
    """rabbit_mgmt_util's typing (tests/interop/test_mgmt_types_differential.py compares it
    with RabbitMQ): a field left out is false and an exchange's type direct, a non-boolean
    is 400 ``["not_boolean", value]``, integers in arguments are ``long``, a null is
    ``null_not_allowed``; a bad body changes nothing and the broker serves on."""
    q, x = f"/api/queues/%2F/{unique}", f"/api/exchanges/%2F/{unique}-x"
    assert call(broker, "PUT", q, {})[0] == 201
    assert call(broker, "PUT", x, {})[0] == 201
    got_q, got_x = call(broker, "GET", q)[1], call(broker, "GET", x)[1]
    assert (got_q["durable"], got_q["auto_delete"]) == (False, False)
    assert (got_x["type"], got_x["durable"], got_x["internal"]) == ("direct", False, False)
    for body, reason in (
            ({"durable": "yes"}, ["not_boolean", "yes"]),
            ({"auto_delete": None}, ["not_boolean", None]),
            ({"arguments": {"x-custom": [1, None]}}, "null_not_allowed"),
            ({"arguments": {"x-overflow": 1}},
             f"invalid arg 'x-overflow' for queue '{unique}-2' in vhost '/': "
             "{unacceptable_type,long}")):
        assert call(broker, "PUT", q + "-2", body) == (
            400, {"error": "bad_request", "reason": reason}), body
        assert call(broker, "GET", q + "-2")[0] == 404
    assert call(broker, "PUT", q, {"durable": "false", "auto_delete": "false"})[0] == 204


def test_vhost_definitions_export_and_import(broker, unique):
    """``/api/definitions/{vhost}`` (rabbitmqadmin ``-V``): RabbitMQ 3.10's shape, objects
    imported into the path's vhost whatever they name, users ignored."""
    vh = f"{unique}-vh"
    assert call(broker, "PUT", f"/api/vhosts/{vh}")[0] == 201
    assert call(broker, "PUT", f"/api/queues/{vh}/q", {"durable": True})[0] == 201
    status, defs = call(broker, "GET", f"/api/definitions/{vh}")
    assert status == 200 and sorted(defs) == ["bindings", "exchanges", "parameters",
                                              "policies", "queues", "rabbit_version"]
    assert defs["queues"] == [{"name": "q", "durable": True, "auto_delete": False,
                               "arguments": {}}]
    imported = {"queues": [{"name": "q2", "vhost": "elsewhere", "durable": True,
                            "auto_delete": False, "arguments": {}}],
                "users": [{"name": f"{unique}-u", "password_hash": "", "tags": ""}]}
    assert call(broker, "POST", f"/api/definitions/{vh}", imported)[0] == 204
    assert call(broker, "GET", f"/api/queues/{vh}/q2")[0] == 200
    assert call(broker, "GET", f"/api/users/{unique}-u")[0] == 404
    assert call(broker, "GET", "/api/definitions/nope-vh") == (
        400, {"error": "bad_request", "reason": "vhost_not_found"})
    assert call(broker, "POST", "/api/definitions/nope-vh", imported) == (
        404, {"error": "not_found", "reason": "vhost_not_found"})
