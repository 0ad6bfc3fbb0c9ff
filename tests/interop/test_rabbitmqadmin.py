"""The real ``rabbitmqadmin`` (shipped with rabbitmq-server) against syncmq's management API,
each scenario run against syncmq and against the private RabbitMQ node (management plugin
on) with the same names, and the two transcripts compared (issue 17).

Bindings: ``declare binding`` (``POST /api/bindings/{vhost}/e/{source}/q|e/{destination}``),
``list bindings``, ``delete binding`` by properties key, and the HTTP answers a tool sees
(201 + ``Location``, ``GET``/``DELETE`` by properties key, refusals). The hash part of a
properties key (``~`` + hash of the arguments) is RabbitMQ's shape but not its value
(RabbitMQ hashes the Erlang term), so transcripts replace it by ``~HASH`` after checking
its shape.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.skipif(shutil.which("rabbitmqadmin") is None,
                                reason="rabbitmqadmin is not installed (ships with "
                                       "rabbitmq-server; CI installs it)")
TIMEOUT = 30.0
HASH = re.compile(r"~[A-Za-z0-9_-]{6}$")


def admin(port: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["rabbitmqadmin", "-H", "127.0.0.1", "-P", str(port), "-u", "guest",
                        "-p", "guest", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"rabbitmqadmin {args}: {r.stdout}{r.stderr}"
    return r


def http(port: int, method: str, path: str, body=None) -> tuple[int, dict, object]:
    """(status, headers, parsed JSON body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", data=data,
                                 method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, hdrs, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    text = raw.decode()
    parsed = json.loads(text) if text and "json" in (hdrs.get("Content-Type") or "") else None
    return status, {k.lower(): v for k, v in hdrs.items()}, parsed


def unhash(key: str) -> str:
    """A properties key with its arguments' hash replaced by ``~HASH`` (shape checked)."""
    if "~" in key and key != "~":
        assert HASH.search(key), key
        return HASH.sub("~HASH", key)
    return key


@pytest.fixture(scope="module")
def rabbit_mgmt(rabbitmq) -> int:
    """The management port of the private RabbitMQ node, once it answers."""
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


def ours(bindings: list[dict], names: set[str]) -> list[tuple]:
    return sorted((b["source"], b["destination"], b["destination_type"], b["routing_key"],
                   json.dumps(b["arguments"], sort_keys=True), unhash(b["properties_key"]))
                  for b in bindings if b["source"] in names or b["destination"] in names)


def publish(port: int, exchange: str, key: str) -> str:
    """rabbitmqadmin's verdict on a publish ("Message published" or "... but NOT routed")."""
    return admin(port, "publish", f"exchange={exchange}", f"routing_key={key}",
                 "payload=hi").stdout.strip()


def bindings_scenario(port: int, prefix: str) -> list:
    """Bind and unbind with rabbitmqadmin and raw HTTP; the transcript of what was seen."""
    x, x2, q = f"{prefix}-x", f"{prefix}-x2", f"{prefix}-q"
    names = {x, x2, q}
    out: list = []
    admin(port, "declare", "exchange", f"name={x}", "type=direct")
    admin(port, "declare", "exchange", f"name={x2}", "type=fanout")
    admin(port, "declare", "queue", f"name={q}", "durable=false")
    admin(port, "declare", "binding", f"source={x}", f"destination={q}",
          "routing_key=a b~c/d")
    admin(port, "declare", "binding", f"source={x}", f"destination={q}", "routing_key=k",
          'arguments={"x-n": 1, "s": "v"}')
    admin(port, "declare", "binding", f"source={x}", f"destination={x2}",
          "destination_type=exchange")
    listed = json.loads(admin(port, "-f", "raw_json", "list", "bindings").stdout)
    out.append(("listed", ours(listed, names)))
    out.append(("routed", publish(port, x, "a b~c/d")))
    # a raw POST: 201 and the Location of the new binding, relative to the request's path
    status, hdrs, body = http(port, "POST", f"/bindings/%2F/e/{x}/q/{q}",
                              {"routing_key": "r", "arguments": {"h": "w"}})
    out.append(("post", status, unhash(hdrs.get("location", "")), body))
    status, hdrs, body = http(port, "POST", f"/bindings/%2F/e/{x}/q/{q}",
                              {"routing_key": "r 2"})
    out.append(("post", status, hdrs.get("location"), body))
    # GET and DELETE by properties key; the keys come from a listing, as tools take them
    between = http(port, "GET", f"/bindings/%2F/e/{x}/q/{q}")[2]
    out.append(("between", ours(between, names)))
    for b in sorted(between, key=lambda b: b["routing_key"]):
        path = f"/bindings/%2F/e/{x}/q/{q}/{quote(b['properties_key'], safe='')}"
        status, _, one = http(port, "GET", path)
        out.append(("get", b["routing_key"], status, ours([one], names)))
    by_key = {b["routing_key"]: b["properties_key"] for b in between}
    admin(port, "delete", "binding", f"source={x}", "destination_type=queue",
          f"destination={q}", f"properties_key={by_key['a b~c/d']}")
    admin(port, "delete", "binding", f"source={x}", "destination_type=queue",
          f"destination={q}", f"properties_key={by_key['k']}")
    admin(port, "delete", "binding", f"source={x}", "destination_type=exchange",
          f"destination={x2}")  # the default properties key: "~"
    listed = json.loads(admin(port, "-f", "raw_json", "list", "bindings").stdout)
    out.append(("after delete", ours(listed, names)))
    out.append(("unrouted", publish(port, x, "a b~c/d")))
    out.append(("delete again", admin(port, "delete", "binding", f"source={x}",
                                      "destination_type=queue", f"destination={q}",
                                      f"properties_key={by_key['k']}", check=False)
                .returncode))
    out.extend(_refusals(port, x, q))
    for kind, name in (("queue", q), ("exchange", x), ("exchange", x2)):
        admin(port, "delete", kind, f"name={name}")
    return out


def _refusals(port: int, x: str, q: str) -> list:
    """Bad bindings: each answer's status and error (and the reason where it is stable)."""
    out = []
    for what, path, body in [
        ("no queue", f"/bindings/%2F/e/{x}/q/{x}-none", {"routing_key": "k"}),
        ("no exchange", f"/bindings/%2F/e/{x}-none/q/{q}", {"routing_key": "k"}),
        ("no vhost", f"/bindings/nope/e/{x}/q/{q}", {"routing_key": "k"}),
        ("default exchange", f"/bindings/%2F/e/amq.default/q/{q}", {"routing_key": "k"}),
    ]:
        status, _, answer = http(port, "POST", path, body)
        out.append((what, status, answer))
    for what, props in (("missing key", "nope"), ("missing hash", "r~AAAAAA")):
        status, _, _ = http(port, "GET", f"/bindings/%2F/e/{x}/q/{q}/{props}")
        out.append((what, "GET", status))
        status, _, _ = http(port, "DELETE", f"/bindings/%2F/e/{x}/q/{q}/{props}")
        out.append((what, "DELETE", status))
    status, _, one = http(port, "GET", f"/bindings/%2F/e/amq.default/q/{q}/{quote(q)}")
    out.append(("default binding", status, one and one["routing_key"]))
    return out


def test_bindings_as_rabbitmq(rabbit_mgmt, broker, unique):
    expected = bindings_scenario(rabbit_mgmt, unique)
    got = bindings_scenario(broker.management_port, unique)
    assert got == expected


def test_every_rabbitmqadmin_command_as_rabbitmq(rabbitmq, rabbit_mgmt, broker, unique):
    """Every rabbitmqadmin command and output format, the same transcript on both brokers
    (what is normalised, and why, is listed in admin_scenario's docstring)."""
    from admin_scenario import scenario

    tag = unique[-6:]
    expected = scenario(rabbit_mgmt, rabbitmq.port, tag)
    got = scenario(broker.management_port, broker.port, tag)
    assert len(got) == len(expected)
    for r, s in zip(expected, got, strict=True):
        assert s == r, f"\nsyncmq:   {s}\nrabbitmq: {r}"


# Fields RabbitMQ shows that only mean something in Erlang/OTP or in features syncmq does not
# have; every other field RabbitMQ shows on these endpoints syncmq must show too.
NOT_SERVED = {
    "garbage_collection", "reductions", "reductions_details",  # Erlang process figures
    "backing_queue_status", "recoverable_slaves", "pending_raft_commands",  # queue internals
    "user_who_performed_action",  # RabbitMQ's audit of internal actions
    "recv_cnt", "send_cnt",  # socket packet counts (syncmq counts bytes: recv_oct/send_oct)
    "peer_cert_issuer", "peer_cert_subject", "peer_cert_validity",  # TLS, null in RabbitMQ
    "ssl_cipher", "ssl_hash", "ssl_key_exchange", "ssl_protocol",  # without TLS too
    "idle_since",  # of a channel (a queue's is served)
    "deliveries", "publishes", "incoming",  # per-queue/exchange stats of a detail page
    "head_message_timestamp", "single_active_consumer_tag", "owner_pid_details",
}


def _top_keys(obj) -> set[str]:
    if isinstance(obj, list):
        obj = obj[0] if obj else {}
    return set(obj)


def _poll_listed(port: int, name: str) -> tuple[str, str]:
    """(connection name, channel name) once the broker lists them (RabbitMQ's stats collector
    needs a few seconds: a bounded poll of another process's state)."""
    deadline = time.monotonic() + 30
    while True:
        conns = [c for c in http(port, "GET", "/connections")[2]
                 if c.get("user_provided_name") == name and c.get("channels") == 1]
        chans = [c for c in http(port, "GET", "/channels")[2]
                 if conns and c.get("connection_details", {}).get("name") == conns[0]["name"]
                 and c.get("consumer_count") == 1]
        if conns and chans:
            return conns[0]["name"], chans[0]["name"]
        assert time.monotonic() < deadline, "never listed"
        time.sleep(0.2)


def test_detail_endpoints_have_rabbitmqs_fields(rabbitmq, rabbit_mgmt, broker, unique):
    """``/api/channels/{name}``, ``/api/connections/{name}[/channels]``,
    ``/api/vhosts/{vhost}/channels|connections`` and a queue: each answers 200 on syncmq
    with every field RabbitMQ's has (less NOT_SERVED), queue bytes included."""
    import pika

    found = {}
    for mport, amqp in ((rabbit_mgmt, rabbitmq.port), (broker.management_port, broker.port)):
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", amqp, client_properties={"connection_name": unique}, heartbeat=0))
        try:
            ch = conn.channel()
            ch.queue_declare(unique, exclusive=True)
            ch.basic_publish("", unique, b"x" * 10)
            ch.basic_consume(unique, lambda *a: None)
            cname, chname = _poll_listed(mport, unique)
            c, h = quote(cname, safe=""), quote(chname, safe="")
            found[mport] = {}
            for label, path in (("channel", f"/channels/{h}"), ("connection", f"/connections/{c}"),
                                ("its channels", f"/connections/{c}/channels"),
                                ("vhost channels", "/vhosts/%2F/channels"),
                                ("vhost connections", "/vhosts/%2F/connections"),
                                ("queue", f"/queues/%2F/{unique}")):
                status, _, body = http(mport, "GET", path)
                assert status == 200, (mport, path, status)
                found[mport][label] = _top_keys(body)
        finally:
            conn.close()
    theirs, ours = found[rabbit_mgmt], found[broker.management_port]
    for path, keys in theirs.items():
        missing = keys - ours[path] - NOT_SERVED
        assert not missing, (path, sorted(missing))
