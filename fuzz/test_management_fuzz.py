"""Fuzzing the management API over HTTP: every endpoint, arbitrary JSON bodies, paths,
query strings, methods and content types, against one real syncmq.

Never acceptable: a 5xx answer, an answer that is not RabbitMQ's error shape when it is an
error, a Python traceback or exception text in an answer or in the broker's log, or the
broker no longer serving (a pika round trip and an authenticated GET are checked every
``CHECK_EVERY`` examples and at the end). Size: ``SYNCMQ_FUZZ_EXAMPLES`` (fuzz/conftest.py
profile) examples.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

import pika
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from brokerproc import start_broker  # noqa: E402

ADMIN = "fuzz-admin"
AUTH = "Basic " + base64.b64encode(f"{ADMIN}:pw".encode()).decode()
CHECK_EVERY = 25
TIMEOUT = 30.0

ROUTES = [  # every endpoint with its methods, as in management/api.py
    ("GET", "overview"), ("GET", "cluster-name"), ("GET", "whoami"), ("GET", "extensions"),
    ("GET", "nodes"), ("GET", "nodes/{n}"), ("GET", "vhosts"), ("GET", "vhosts/{v}"),
    ("PUT", "vhosts/{n}"), ("DELETE", "vhosts/{n}"), ("GET", "vhosts/{v}/permissions"),
    ("GET", "vhosts/{v}/connections"), ("GET", "vhosts/{v}/channels"), ("GET", "users"),
    ("GET", "users/{n}"), ("PUT", "users/{n}"), ("DELETE", "users/{n}"),
    ("GET", "users/{n}/permissions"), ("GET", "permissions"), ("GET", "permissions/{v}/{n}"),
    ("PUT", "permissions/{v}/{n}"), ("DELETE", "permissions/{v}/{n}"), ("GET", "exchanges"),
    ("GET", "exchanges/{v}"), ("GET", "exchanges/{v}/{n}"), ("PUT", "exchanges/{v}/{n}"),
    ("DELETE", "exchanges/{v}/{n}"), ("GET", "exchanges/{v}/{n}/bindings/source"),
    ("GET", "exchanges/{v}/{n}/bindings/destination"), ("POST", "exchanges/{v}/{n}/publish"),
    ("GET", "queues"), ("GET", "queues/{v}"), ("GET", "queues/{v}/{n}"),
    ("PUT", "queues/{v}/{n}"), ("DELETE", "queues/{v}/{n}"), ("DELETE", "queues/{v}/{n}/contents"),
    ("GET", "queues/{v}/{n}/bindings"), ("POST", "queues/{v}/{n}/get"), ("GET", "bindings"),
    ("GET", "bindings/{v}"), ("GET", "connections"), ("GET", "connections/{n}"),
    ("DELETE", "connections/{n}"), ("GET", "connections/{n}/channels"), ("GET", "channels"),
    ("GET", "channels/{n}"), ("GET", "consumers"), ("GET", "consumers/{v}"),
    ("GET", "definitions"), ("POST", "definitions"), ("GET", "health/checks/alarms"),
    ("GET", "health/checks/local-alarms"), ("GET", "aliveness-test/{v}"),
]
KEYS = ["durable", "auto_delete", "internal", "arguments", "type", "routing_key", "payload",
        "payload_encoding", "properties", "count", "ackmode", "encoding", "truncate",
        "password", "password_hash", "hashing_algorithm", "tags", "configure", "write",
        "read", "vhosts", "users", "queues", "exchanges", "bindings", "permissions", "name",
        "vhost", "source", "destination", "destination_type", "user_id", "headers",
        "delivery_mode", "priority", "x-max-length", "x-message-ttl", "x-queue-type",
        "x-dead-letter-exchange", "x-max-priority", "x-overflow", "alternate-exchange",
        "x-expires", "x-match"]
VHOSTS = st.sampled_from(["%2F"] * 8 + ["fuzz-vh", "nope"])
NAMES = st.sampled_from(["fq", "fq", "fx", "fx", "amq.direct", "amq.default", "fq", "fx", "guest", "", "x" * 300,
                         "%00", "..", "fuzz-vh", "amq.gen-1", "%25", "a%2Fb", "q~1"])

scalars = (st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=20) | st.sampled_from(["ack_requeue_true", "base64", "string",
                                                    "direct", "topic", "headers", "quorum",
                                                    "stream", "reject-publish", "all",
                                                    "auto", "(", ".*", "guest", "true"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6),
    max_leaves=25)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8).map(json.dumps),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8).map(json.dumps),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8).map(json.dumps),
    json_values.map(json.dumps),
    st.just("[" * 5000 + "]" * 5000),
    st.text(max_size=50),
    st.just(""))
queries = st.dictionaries(
    st.sampled_from(["page", "page_size", "name", "use_regex", "sort", "sort_reverse",
                     "if-unused", "if-empty", "lengths_age", "lengths_incr", "msg_rates_age",
                     "msg_rates_incr", "columns"]) | st.text(max_size=5),
    st.text(max_size=10) | st.integers(-5, 1000).map(str), max_size=4)
methods = st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"])
ctypes = st.sampled_from(["application/json"] * 8 + ["application/json; charset=utf-8",
                          "text/plain", "", "application/x-www-form-urlencoded",
                          "multipart/form-data; boundary=x"])


WRITES = [r for r in ROUTES if r[0] in ("PUT", "POST")]
RELEVANT = {  # the keys each writing endpoint reads
    "publish": ["routing_key", "payload", "payload_encoding", "properties"],
    "get": ["count", "ackmode", "encoding", "truncate"],
    "queues": ["durable", "auto_delete", "arguments"],
    "exchanges": ["type", "durable", "auto_delete", "internal", "arguments"],
    "users": ["password", "password_hash", "hashing_algorithm", "tags"],
    "permissions": ["configure", "write", "read"],
    "definitions": ["vhosts", "users", "queues", "exchanges", "bindings", "permissions"],
}
ARGS = st.dictionaries(st.sampled_from(KEYS[-10:]), scalars, max_size=4)


def mostly(good, bad=json_values):
    """``good`` 4 times in 5, else ``bad`` (one_of would let Hypothesis favour either)."""
    return st.integers(0, 4).flatmap(lambda i: good if i else bad)


_BOOL = mostly(st.booleans())
VALUES = {  # mostly valid values, so that a request gets past its first check
    "durable": _BOOL, "auto_delete": _BOOL, "internal": _BOOL,
    "arguments": mostly(ARGS, scalars | st.lists(scalars, max_size=3)),
    "properties": ARGS | st.fixed_dictionaries({}, optional={
        "user_id": st.sampled_from(["guest", "fuzz-admin", "x"]), "delivery_mode": scalars,
        "headers": json_values, "priority": scalars, "expiration": scalars}) | scalars,
    "type": mostly(st.sampled_from(["direct", "topic", "fanout", "headers"])),
    "ackmode": mostly(st.sampled_from(["ack_requeue_true", "reject_requeue_false"])),
    "payload_encoding": mostly(st.sampled_from(["string", "base64"])),
    "encoding": mostly(st.sampled_from(["auto", "base64"])),
    "count": mostly(st.integers(-2, 5)), "truncate": mostly(st.integers(-2, 50)),
    "routing_key": mostly(st.text(max_size=10)), "payload": st.text(max_size=20),
    "tags": mostly(st.sampled_from(["", "management", "administrator,x"])),
    "password": mostly(st.text(max_size=5)),
    "configure": mostly(st.sampled_from([".*", "(", "^a", ""])),
}


@st.composite
def body_for(draw, path: str) -> str:
    """Mostly an object of the keys the endpoint reads (all of them, more often than not)."""
    kind = next((k for k in ("publish", "get") if path.endswith("/" + k)),
                path.split("/")[2] if path.count("/") > 1 else "")
    keys = RELEVANT.get(kind)
    if keys is None or draw(st.integers(0, 4)) == 0:
        return draw(bodies)
    out = {}
    for k in keys:
        if draw(st.integers(0, 4)):
            out[k] = draw(VALUES.get(k, json_values))
    return json.dumps(out)


@st.composite
def requests(draw) -> tuple[str, str]:
    """(method, path): mostly a real endpoint with its own method, else anything."""
    method, route = draw(st.sampled_from(ROUTES + WRITES * 8))
    if draw(st.integers(0, 9)) == 0:
        method = draw(methods)
    if draw(st.integers(0, 19)) == 0:
        route = quote(draw(st.text(max_size=20)))
    path = "/api/" + route
    path = path.replace("{v}", draw(mostly(VHOSTS, st.text(max_size=5).map(
        lambda t: quote(t, safe="")))))
    while "{n}" in path:
        new = st.text("abcdefgh", min_size=1, max_size=6)  # mostly a fresh object
        path = path.replace("{n}", draw(mostly(mostly(new, NAMES), st.text(max_size=10).map(
            lambda t: quote(t, safe="")))), 1)
    if ADMIN in path:
        path = path.replace(ADMIN, "other")  # the fuzzer's own account stays usable
    if method == "DELETE" and path == "/api/vhosts/%2F":
        method = "GET"  # and its vhost, where the liveness check runs
    return method, path


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = start_broker(tmp_path_factory)
    hdr = "Basic " + base64.b64encode(b"guest:guest").decode()
    status, _ = send(b.management_port, "PUT", f"/api/users/{ADMIN}",
                     json.dumps({"password": "pw", "tags": "administrator"}), hdr)
    assert status == 201
    assert send(b.management_port, "PUT", f"/api/permissions/%2F/{ADMIN}",
                json.dumps({"configure": ".*", "write": ".*", "read": ".*"}), hdr)[0] == 201
    for what, body in (("queues/%2F/fq", {}), ("exchanges/%2F/fx", {"type": "topic"})):
        assert send(b.management_port, "PUT", f"/api/{what}", json.dumps(body))[0] == 201
    yield b
    serving(b)
    assert b.stop() == 0
    assert not b.tracebacks(), "\n".join(b.tracebacks())


def send(port: int, method: str, path: str, body: str, auth: str = AUTH,
         ctype: str = "application/json") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        headers = {"Authorization": auth}
        if ctype:
            headers["Content-Type"] = ctype
        conn.request(method, path, body=body.encode("utf-8", "surrogatepass"),
                     headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def serving(b) -> None:
    assert send(b.management_port, "GET", "/api/overview", "")[0] == 200
    params = pika.ConnectionParameters("127.0.0.1", b.port,
                                       credentials=pika.PlainCredentials(ADMIN, "pw"))
    with contextlib.closing(pika.BlockingConnection(params)) as conn:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"ping")
        assert ch.basic_get(q, auto_ack=True)[2] == b"ping"


COUNT = [0]


@given(data=st.data(), req=requests(), query=queries, ctype=ctypes)
def test_management_api_fuzz(broker, data, req, query, ctype):
    method, path = req
    body = data.draw(body_for(path))
    url = path + ("?" + urlencode(query) if query else "")
    status, out = send(broker.management_port, method, url, body, ctype=ctype)
    event(f"{method} {status}")
    assert status < 500, (status, out)
    assert b"Traceback" not in out and b"object has no attribute" not in out
    if status >= 400 and method != "HEAD":
        err = json.loads(out)
        assert set(err) == {"error", "reason"}, err
    COUNT[0] += 1
    if COUNT[0] % CHECK_EVERY == 0:
        serving(broker)
    assert not broker.tracebacks(), "\n".join(broker.tracebacks())
