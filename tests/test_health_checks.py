"""RabbitMQ's health-check endpoints (issue 17), each healthy and failing, with RabbitMQ 3.10's
answers (read off a RabbitMQ 3.10.8 node with its management plugin): 200
``{"status": "ok"}``, 503 ``{"status": "failed", "reason": ...}`` plus RabbitMQ's fields,
400 for a malformed argument; and ``/api/nodes/{name}`` for every name of this node.

Alarms are switched on by a tiny ``--memory-high-watermark`` or a huge ``--disk-free-limit``
(waited for on the broker's alarm log line); a certificate about to expire comes from a
test PKI (tests/tls_helpers.py) whose certificates expire in 30 days.
"""

from __future__ import annotations

import datetime
import socket
import time

import pika
import pytest
from test_management import call
from tls_helpers import _cert, _name, _write

ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")


def check(broker, path: str) -> tuple[int, dict]:
    status, body, _ = call(broker, "GET", "/api" + path)
    return status, body


def listeners(broker) -> list[int]:
    return [li["port"] for li in check(broker, "/overview")[1]["listeners"]]


def test_healthy_broker_passes_every_check(broker):
    node = check(broker, "/overview")[1]["node"]
    for path in ("/health/checks/alarms", "/health/checks/local-alarms",
                 "/health/checks/virtual-hosts", "/healthchecks/node",
                 f"/healthchecks/node/{node}", "/health/checks/certificate-expiration/1/weeks"):
        assert check(broker, path) == (200, {"status": "ok"}), path
    for path in ("/health/checks/node-is-quorum-critical",
                 "/health/checks/node-is-mirror-sync-critical"):
        assert check(broker, path) == (200, {"status": "ok", "reason": "single node cluster"})
    assert check(broker, f"/health/checks/port-listener/{broker.port}") == \
        (200, {"status": "ok", "port": broker.port})
    for proto in ("amqp", "amqp091", "AMQP0-9-1"):
        assert check(broker, f"/health/checks/protocol-listener/{proto}") == \
            (200, {"status": "ok", "protocol": "amqp"})
    assert check(broker, "/health/checks/protocol-listener/http")[0] == 200


def test_missing_listeners_fail(broker):
    ports = listeners(broker)
    free = next(p for p in range(1, 1024) if p not in ports)
    assert check(broker, f"/health/checks/port-listener/{free}") == (503, {
        "status": "failed", "reason": "No active listener", "missing": free, "ports": ports})
    for proto in ("amqps", "mqtt", "nope"):
        status, body = check(broker, f"/health/checks/protocol-listener/{proto}")
        assert status == 503 and body["reason"] == "No active listener", body
        # the normalised name, as RabbitMQ (tests/interop/test_health_checks_diff.py)
        assert body["missing"] == {"amqps": "amqp/ssl"}.get(proto, proto)
        assert body["protocols"] == ["amqp", "http"]


@pytest.mark.parametrize("path, reason", [
    ("port-listener/abc", "Invalid port"),
    ("certificate-expiration/x/weeks", "Invalid expiration value."),
    ("certificate-expiration/1/fortnights",
     "Time unit not recognised. Supported units: days, weeks, months, years."),
])
def test_malformed_arguments_are_400(broker, path, reason):
    assert check(broker, "/health/checks/" + path) == \
        (400, {"error": "bad_request", "reason": reason})
    assert check(broker, "/health/checks/alarms")[0] == 200  # still serving


# past datetime's range (year 9999) and timedelta's: RabbitMQ's integers have no bound
HUGE = 10**20


def test_expiration_beyond_any_date_is_answered(broker):
    """A window past the last representable date is a window that every certificate ends
    in, not a 500: without a TLS listener the check passes."""
    for path in (f"{HUGE}/days", "10000/years", f"-{HUGE}/weeks"):
        assert check(broker, "/health/checks/certificate-expiration/" + path) == \
            (200, {"status": "ok"}), path


def test_unknown_node_is_404(broker):
    assert check(broker, "/healthchecks/node/rabbit@elsewhere")[0] == 404
    assert check(broker, "/nodes/rabbit@elsewhere")[0] == 404


def test_every_name_of_this_node(broker):
    node = check(broker, "/overview")[1]["node"]
    host = socket.gethostname()
    for name in (node, f"rabbit@{host}", f"rabbit@{host.split('.')[0]}", "rabbit@localhost",
                 "syncmq@localhost"):
        status, body = check(broker, f"/nodes/{name}")
        assert status == 200 and body["name"] == node, name
        assert check(broker, f"/healthchecks/node/{name}")[0] == 200


@pytest.mark.parametrize("option, value, resource", [
    ("--memory-high-watermark", "1MB", "memory"),
    ("--disk-free-limit", "1000000GB", "disk space"),
])
def test_alarm_fails_the_alarm_checks(broker_factory, option, value, resource):
    b = broker_factory(option, value)
    b.wait_for_log("alarm: ")  # the monitor's "... resource limit alarm: ..." line
    # the monitor logs the line before it sets broker.alarms (syncmq/alarms.py: after every
    # resource is sampled): a bounded poll of the other process's state
    deadline = time.monotonic() + 30
    while check(b, "/health/checks/alarms")[0] != 503:
        assert time.monotonic() < deadline, "the alarm never showed"
        time.sleep(0.05)
    node = check(b, "/overview")[1]["node"]
    alarms = [{"node": node, "resource": resource}]
    assert check(b, "/health/checks/alarms") == (503, {
        "status": "failed", "reason": "There are alarms in effect in the cluster",
        "alarms": alarms})
    assert check(b, "/health/checks/local-alarms") == (503, {
        "status": "failed", "reason": "There are alarms in effect on the node",
        "alarms": alarms})
    status, body = check(b, "/healthchecks/node")
    term = "memory" if resource == "memory" else "disk"
    assert (status, body) == (503, {
        "status": "failed",
        "reason": f"resource alarm(s) in effect:[{{resource_limit,{term},'{node}'}}]"})
    # the other checks are not alarms' business
    assert check(b, "/health/checks/virtual-hosts")[0] == 200
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port)) as c:
        assert c.channel().queue_declare("", exclusive=True).method.queue


@pytest.fixture(scope="module")
def expiring_pki(tmp_path_factory):
    """A CA and a server certificate, both valid for 30 more days."""
    d = tmp_path_factory.mktemp("pki-expiring")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("health CA", ca_key, _name("health CA"), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("localhost", ca_key, ca.subject, key)
    return {"ca": _write(d / "ca.pem", ca), "cert": _write(d / "server.pem", srv),
            "key": _write(d / "server.key", key=key), "not_after": srv.not_valid_after_utc}


def test_certificate_about_to_expire_fails(broker_factory, expiring_pki):
    p = expiring_pki
    b = broker_factory("--tls-port", "0", "--tls-cert", p["cert"], "--tls-key", p["key"],
                       "--tls-ca", p["ca"])
    tls = [li for li in check(b, "/overview")[1]["listeners"] if li["protocol"] == "amqp/ssl"]
    assert tls, "no TLS listener"
    for ok in ("1/weeks", "29/days", "-1/days", f"-{HUGE}/days"):
        assert check(b, f"/health/checks/certificate-expiration/{ok}") == \
            (200, {"status": "ok"}), ok
    for failing in ("5/weeks", "31/days", "2/months", "1/years", "10000/years",
                    f"{HUGE}/days"):
        status, body = check(b, f"/health/checks/certificate-expiration/{failing}")
        assert status == 503 and body["reason"] == "Certificates expiring", failing
        (expired,) = body["expired"]
        assert expired["port"] == tls[0]["port"] and expired["protocol"] == "amqp/ssl"
        assert expired["certfile"] == p["cert"] and expired["cacertfile"] == p["ca"]
        assert datetime.datetime.strptime(expired["expiry_date"], "%Y-%m-%dT%H:%M:%SZ") \
            .replace(tzinfo=datetime.UTC) == p["not_after"].replace(microsecond=0)
    assert check(b, "/health/checks/protocol-listener/amqps") == \
        (200, {"status": "ok", "protocol": "amqp/ssl"})
