"""Issue #16: a RabbitMQ definitions export carrying policies and operator policies imports into
syncmq and exports back equal, and syncmq's export imports into RabbitMQ (the private node)."""

from __future__ import annotations

import os
from urllib.parse import quote

from test_parameters_differential import call
from test_rabbitmqadmin import rabbit_mgmt  # noqa: F401 (fixture)


def _policies(defs: dict, vh: str) -> list:
    return sorted((p for p in defs.get("policies", []) if p["vhost"] == vh),
                  key=lambda p: p["name"])


def _operator_policies(defs: dict, vh: str) -> list:
    return sorted((p for p in defs.get("parameters", [])
                   if p["vhost"] == vh and p["component"] == "operator_policy"),
                  key=lambda p: p["name"])


def _ours(defs: dict, vh: str) -> tuple:
    return _policies(defs, vh), _operator_policies(defs, vh)


def test_policies_round_trip_with_rabbitmq(rabbit_mgmt, broker):  # noqa: F811
    vh = f"poldefs-{os.urandom(3).hex()}"
    v = quote(vh, safe="")
    assert call(rabbit_mgmt, "PUT", f"/vhosts/{v}")[0] == 201
    assert call(rabbit_mgmt, "PUT", f"/policies/{v}/limited", {
        "pattern": r"^orders\.limited$", "apply-to": "queues", "priority": 3,
        "definition": {"message-ttl": 30000, "max-length": 500}})[0] == 201
    assert call(rabbit_mgmt, "PUT", f"/policies/{v}/ae", {
        "pattern": "^ex", "apply-to": "exchanges", "priority": 0,
        "definition": {"alternate-exchange": "unrouted"}})[0] == 201
    assert call(rabbit_mgmt, "PUT", f"/operator-policies/{v}/cap", {
        "pattern": ".*", "apply-to": "queues", "priority": 1,
        "definition": {"max-length": 10000}})[0] == 201
    rdefs = call(rabbit_mgmt, "GET", "/definitions")[1]
    ours = _ours(rdefs, vh)
    assert len(ours[0]) == 2 and len(ours[1]) == 1
    file = {"vhosts": [{"name": vh}], "policies": ours[0], "parameters": ours[1]}
    status, body = call(broker.management_port, "POST", "/definitions", file)
    assert status == 204, body
    sdefs = call(broker.management_port, "GET", "/definitions")[1]
    assert _ours(sdefs, vh) == ours
    # and syncmq's export into RabbitMQ, the vhost deleted there first
    assert call(rabbit_mgmt, "DELETE", f"/vhosts/{v}")[0] == 204
    status, body = call(rabbit_mgmt, "POST", "/definitions", {
        "vhosts": [{"name": vh}], "policies": _policies(sdefs, vh),
        "parameters": _operator_policies(sdefs, vh)})
    assert status in (201, 204), body
    assert _ours(call(rabbit_mgmt, "GET", "/definitions")[1], vh) == ours
    assert call(rabbit_mgmt, "DELETE", f"/vhosts/{v}")[0] == 204
