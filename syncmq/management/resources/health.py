"""Health checks with RabbitMQ's paths and answers (``rabbit_mgmt_wm_health_check_*``):
200 ``{"status": "ok", ...}`` when healthy, 503 ``{"status": "failed", "reason": ...}`` with
RabbitMQ's extra fields when not, 400 for a malformed argument.

syncmq is one node: the cluster-wide and the local alarm checks read the same alarms, and
the quorum/mirror-sync checks always pass ("single node cluster"), as RabbitMQ answers on a
node without peers. Each endpoint is ``fn(api, req, **path_args) -> Response``."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from ..common import Request, Response
from ..errors import bad_request, not_found
from .overview import is_this_node

if TYPE_CHECKING:
    from ..api import API

# RabbitMQ's names for the resources of syncmq's alarms (syncmq.alarms: "memory", "disk")
ALARM_RESOURCES = {"memory": "memory", "disk": "disk space"}
# what RabbitMQ accepts for a protocol (rabbit_mgmt_wm_health_check_protocol_listener)
PROTOCOL_ALIASES = {"amqp091": "amqp", "amqp0.9.1": "amqp", "amqp0-9-1": "amqp",
                    "amqp0_9_1": "amqp", "amqp": "amqp", "amqps": "amqp/ssl",
                    "amqp091/ssl": "amqp/ssl", "http": "http", "https": "https"}
UNIT_SECONDS = {"days": 86400, "weeks": 7 * 86400, "months": 30 * 86400,
                "years": 365 * 86400}


def _ok(**extra: Any) -> Response:
    return Response(200, {"status": "ok", **extra})


def _failed(reason: str, **extra: Any) -> Response:
    return Response(503, {"status": "failed", "reason": reason, **extra})


def _alarms(api: API, reason: str) -> Response:
    alarms = sorted(api.ctx.broker.alarms)
    if not alarms:
        return _ok()
    return _failed(reason, alarms=[{"node": api.ctx.node, "resource": ALARM_RESOURCES.get(a, a)}
                                   for a in alarms])


def alarms(api: API, req: Request) -> Response:
    return _alarms(api, "There are alarms in effect in the cluster")


def local_alarms(api: API, req: Request) -> Response:
    return _alarms(api, "There are alarms in effect on the node")


def virtual_hosts(api: API, req: Request) -> Response:
    """Every vhost is served as long as the broker runs (syncmq has no per-vhost process to
    be down), so this passes whenever the API answers."""
    return _ok()


def port_listener(api: API, req: Request, port: str) -> Response:
    try:
        wanted = int(port)
    except ValueError:
        raise bad_request("Invalid port") from None
    ports = [li["port"] for li in api.ctx.listeners]
    if wanted in ports:
        return _ok(port=wanted)
    return _failed("No active listener", missing=wanted, ports=ports)


def protocol_listener(api: API, req: Request, protocol: str) -> Response:
    wanted = PROTOCOL_ALIASES.get(protocol.lower(), protocol.lower())
    protocols = list(dict.fromkeys(li["protocol"] for li in api.ctx.listeners))
    if wanted in protocols:
        return _ok(protocol=wanted)
    # the protocol as normalised (amqps: amqp/ssl), as RabbitMQ 3.10.8 names it
    return _failed("No active listener", missing=wanted, protocols=protocols)


def single_node(api: API, req: Request) -> Response:
    """``node-is-quorum-critical``/``node-is-mirror-sync-critical``: a node without peers
    cannot take a quorum or the last synchronised mirror down with it."""
    return _ok(reason="single node cluster")


def certificate_expiration(api: API, req: Request, within: str, unit: str) -> Response:
    """503 naming the TLS listener when a certificate in its certificate or CA file expires
    within ``within`` ``unit`` (days, weeks, months of 30 days, years of 365 days)."""
    try:
        n = int(within)
    except ValueError:
        raise bad_request("Invalid expiration value.") from None
    if unit not in UNIT_SECONDS:
        raise bad_request("Time unit not recognised. Supported units: days, weeks, months, "
                          "years.")
    limit = _horizon(n * UNIT_SECONDS[unit])
    expiring = []
    for li in api.ctx.listeners:
        if li["protocol"] != "amqp/ssl":
            continue
        for path in api.ctx.tls_files:
            first = _first_expiry(path)
            if first is not None and first <= limit:
                expiring.append({"node": api.ctx.node, "protocol": li["protocol"],
                                 "interface": li["ip_address"], "port": li["port"],
                                 "certfile": api.ctx.tls_files[0],
                                 "cacertfile": (api.ctx.tls_files[1:] or [""])[0],
                                 "expiry_date": first.strftime("%Y-%m-%dT%H:%M:%SZ")})
                break
    if expiring:
        return _failed("Certificates expiring", expired=expiring)
    return _ok()


def _horizon(seconds: int) -> datetime.datetime:
    """Now plus ``seconds``, clamped to datetime's range: a window past year 9999 (or before
    year 1) is one every certificate ends in (or none does), not an OverflowError (a 500)."""
    now = datetime.datetime.now(datetime.UTC)
    try:
        return now + datetime.timedelta(seconds=seconds)
    except OverflowError:
        edge = datetime.datetime.max if seconds > 0 else datetime.datetime.min
        return edge.replace(tzinfo=datetime.UTC)


def _first_expiry(path: str) -> datetime.datetime | None:
    """The earliest ``notAfter`` of the PEM certificates in ``path`` (None if unreadable);
    read with the ``cryptography`` library (the broker's TLS itself uses ``ssl``, which
    cannot parse a certificate file)."""
    from cryptography import x509
    try:
        with open(path, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError):
        return None
    return min((c.not_valid_after_utc for c in certs), default=None)


def node(api: API, req: Request, node: str | None = None) -> Response:
    """``/api/healthchecks/node[/{node}]``: RabbitMQ's older check, failing on an alarm."""
    if node is not None and not is_this_node(api.ctx, node):
        raise not_found()
    alarms = sorted(api.ctx.broker.alarms)
    if alarms:
        terms = ",".join(f"{{resource_limit,{a},'{api.ctx.node}'}}" for a in alarms)
        return _failed(f"resource alarm(s) in effect:[{terms}]")
    return _ok()
