"""Issue #16: a RabbitMQ definitions export carrying policies and operator policies imports into
syncmq and exports back equal, and syncmq's export imports into RabbitMQ (the private node)."""

from __future__ import annotations

import json
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


def _mine(defs: dict, vh: str, user: str, gname: str) -> dict:
    """The sections of an export that belong to this run, sorted."""
    def by(key, rows):
        return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
    return {
        "users": by("name", [{k: u[k] for k in ("name", "password_hash", "hashing_algorithm",
                                                "tags", "limits")}
                             for u in defs["users"] if u["name"] == user]),
        "vhosts": [v["name"] for v in defs["vhosts"] if v["name"] == vh],
        "permissions": by("p", [p for p in defs["permissions"] if p["vhost"] == vh]),
        "topic_permissions": by("t", [t for t in defs["topic_permissions"]
                                      if t["vhost"] == vh]),
        "parameters": by("p", [p for p in defs["parameters"] if p["vhost"] == vh]),
        "global_parameters": [g for g in defs["global_parameters"] if g["name"] == gname],
        "policies": by("p", [p for p in defs["policies"] if p["vhost"] == vh]),
        # syncmq's export writes each queue's "type" (as RabbitMQ 3.11+ does; 3.10.8 reads
        # it on import): a documented difference, left out
        "queues": by("q", [{k: x for k, x in q.items() if k != "type"}
                           for q in defs["queues"] if q["vhost"] == vh]),
        "exchanges": by("x", [x for x in defs["exchanges"] if x["vhost"] == vh]),
    }


def _as_file(mine: dict, vh: str) -> dict:
    return {**mine, "vhosts": [{"name": vh}]}


def test_everything_of_issue_16_round_trips_with_rabbitmq(rabbit_mgmt, broker):  # noqa: F811
    """One RabbitMQ export holding policies, operator policies, vhost limits, topic
    permissions, user limits, a runtime and a global parameter (and a queue and an exchange
    they govern) imports into syncmq, which exports it back equal; syncmq's export imports
    into RabbitMQ, which then exports the same again."""
    tag = os.urandom(3).hex()
    vh, user, gname = f"defs16-{tag}", f"defs16u-{tag}", f"defs16g-{tag}"
    v = quote(vh, safe="")

    def rabbit(method, path, body=None):
        status, answer = call(rabbit_mgmt, method, path, body)
        assert status in (200, 201, 204), (method, path, status, answer)

    rabbit("PUT", f"/vhosts/{v}")
    rabbit("PUT", f"/users/{user}", {"password": "pw", "tags": "management"})
    rabbit("PUT", f"/permissions/{v}/{user}", {"configure": ".*", "write": ".*", "read": ""})
    rabbit("PUT", f"/topic-permissions/{v}/{user}", {"exchange": "amq.topic",
                                                      "write": "^{username}\\.", "read": "^r"})
    rabbit("PUT", f"/user-limits/{user}/max-channels", {"value": 4})
    rabbit("PUT", f"/vhost-limits/{v}/max-queues", {"value": 50})
    rabbit("PUT", f"/vhost-limits/{v}/max-connections", {"value": 5})
    rabbit("PUT", f"/policies/{v}/limited", {"pattern": r"^orders\.", "apply-to": "queues",
                                             "priority": 3, "definition": {
                                                 "message-ttl": 30000, "max-length": 500,
                                                 "overflow": "reject-publish"}})
    rabbit("PUT", f"/policies/{v}/ae", {"pattern": "^ex", "apply-to": "exchanges",
                                        "definition": {"alternate-exchange": "unrouted"}})
    rabbit("PUT", f"/operator-policies/{v}/cap", {"pattern": ".*", "apply-to": "queues",
                                                  "priority": 1,
                                                  "definition": {"max-length": 10000}})
    rabbit("PUT", f"/parameters/federation-upstream/{v}/up",
           {"value": {"uri": "amqp://localhost:1", "max-hops": 2}})
    rabbit("PUT", f"/global-parameters/{gname}", {"value": {"a": [1, "b"]}})
    rabbit("PUT", f"/queues/{v}/orders.new", {"durable": True, "arguments": {
        "x-max-length": 1000}})
    rabbit("PUT", f"/exchanges/{v}/ex1", {"type": "topic", "durable": True})
    try:
        theirs = _mine(call(rabbit_mgmt, "GET", "/definitions")[1], vh, user, gname)
        assert all(theirs.values()), theirs  # every section has this run's rows
        status, body = call(broker.management_port, "POST", "/definitions",
                            _as_file(theirs, vh))
        assert status == 204, body
        ours = _mine(call(broker.management_port, "GET", "/definitions")[1], vh, user, gname)
        assert ours == theirs
    finally:
        for path in (f"/vhosts/{v}", f"/users/{user}", f"/global-parameters/{gname}"):
            call(rabbit_mgmt, "DELETE", path)
    try:
        status, body = call(rabbit_mgmt, "POST", "/definitions", _as_file(ours, vh))
        assert status in (201, 204), body
        assert _mine(call(rabbit_mgmt, "GET", "/definitions")[1], vh, user, gname) == theirs
    finally:
        for path in (f"/vhosts/{v}", f"/users/{user}", f"/global-parameters/{gname}"):
            call(rabbit_mgmt, "DELETE", path)
            call(broker.management_port, "DELETE", path)
