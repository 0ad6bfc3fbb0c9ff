"""Runtime parameters over the management API, syncmq against the private RabbitMQ node
(shovel and federation plugins on, so their components exist there): the same script of
requests, by an administrator, a policymaker and management/monitoring users, gives the same
statuses and bodies on both (issue 16). Then definitions: RabbitMQ's export of the script's
parameters imports into syncmq and exports back equal, and syncmq's imports into RabbitMQ.

The unknown component is named ``no-such-component``: RabbitMQ turns a component name into
an atom, and an atom that exists changes other texts of that node (an exchange type ``nope``
is "invalid", not "unknown", once the atom ``nope`` exists), so a common word would leak
into tests/interop/test_differential.py on the shared node.

Federation upstream values RabbitMQ's plugin refuses are compared in
tests/interop/test_federation_params_diff.py."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from urllib.parse import quote

from test_rabbitmqadmin import http, rabbit_mgmt  # noqa: F401 (fixture)

TIMEOUT = 30.0


def call(port: int, method: str, path: str, body=None, user: str = "guest",
         raw: bytes | None = None) -> tuple[int, object]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                        else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", data=data,
                                 method=method)
    pw = "guest" if user == "guest" else "pw"
    req.add_header("Authorization", "Basic " + base64.b64encode(
        f"{user}:{pw}".encode()).decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    return status, (json.loads(text) if text else None)


def setup(port: int, vh: str, other: str, users: dict[str, str]) -> None:
    for v in (vh, other):
        assert call(port, "PUT", f"/vhosts/{quote(v, safe='')}")[0] in (201, 204)
    for name, tags in users.items():
        assert call(port, "PUT", f"/users/{name}", {"password": "pw", "tags": tags})[0] in \
            (201, 204)
        assert call(port, "PUT", f"/permissions/{quote(vh, safe='')}/{name}",
                    {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)


def script(port: int, vh: str, other: str, g: str, u: dict[str, str]) -> list:
    v, o = quote(vh, safe=""), quote(other, safe="")
    fu = f"/parameters/federation-upstream/{v}"
    up = {"uri": "amqp://localhost", "expires": 60000}
    steps = [
        ("PUT", f"/parameters/no-such-component/{v}/x", {"value": up}, "guest"),
        ("PUT", "/parameters/federation-upstream/no-such-vhost-xyz/x", {"value": up}, "guest"),
        ("PUT", f"{fu}/x", {"valu": up}, "guest"),
        ("PUT", f"{fu}/x", [up], "guest"),
        ("PUT", f"{fu}/u1", {"value": up}, "guest"),
        ("PUT", f"{fu}/u1", {"value": up}, "guest"),
        ("PUT", f"{fu}/u1", {"value": {"uri": "amqp://h1"}, "component": "shovel",
                            "vhost": other, "name": "elsewhere"}, "guest"),
        ("PUT", f"{fu}/u2", {"value": {"uri": ["amqp://a", "amqp://b"]}}, "guest"),
        ("PUT", f"/parameters/vhost-limits/{v}/limits", {"value": {"max-queues": 30}},
         "guest"),
        ("PUT", f"/parameters/policy/{v}/p", {"value": {"pattern": "^a", "definition": {}}},
         "guest"),
        ("GET", f"{fu}/u1", None, "guest"),
        ("GET", f"{fu}/elsewhere", None, "guest"),
        ("GET", f"/parameters/shovel/{o}/elsewhere", None, "guest"),
        ("GET", fu, None, "guest"),
        ("GET", f"/parameters/vhost-limits/{v}", None, "guest"),
        ("GET", f"/parameters/no-such-component/{v}", None, "guest"),
        ("GET", "/parameters/federation-upstream/no-such-vhost-xyz", None, "guest"),
        ("GET", f"{fu}/nothere", None, "guest"),
        ("DELETE", f"{fu}/u2", None, "guest"),
        ("DELETE", f"{fu}/u2", None, "guest"),
        ("DELETE", f"/parameters/no-such-component/{v}/u1", None, "guest"),
        ("DELETE", "/parameters/federation-upstream/no-such-vhost-xyz/u1", None, "guest"),
        # a policymaker: in the vhosts it has permissions on; management/monitoring: never
        ("PUT", f"{fu}/by-pm", {"value": up}, u["pm"]),
        ("GET", f"{fu}/by-pm", None, u["pm"]),
        ("PUT", f"/parameters/federation-upstream/{o}/by-pm", {"value": up}, u["pm"]),
        ("GET", f"/parameters/federation-upstream/{o}", None, u["pm"]),
        ("DELETE", f"{fu}/by-pm", None, u["pm"]),
        # a vhost that does not exist: RabbitMQ's user_matches_vhost lets it through (404)
        ("PUT", "/parameters/federation-upstream/no-such-vhost-xyz/by-pm", {"value": up},
         u["pm"]),
        ("GET", "/parameters/federation-upstream/no-such-vhost-xyz", None, u["pm"]),
        ("DELETE", "/parameters/federation-upstream/no-such-vhost-xyz/by-pm", None, u["pm"]),
        ("GET", fu, None, u["mg"]),
        ("PUT", f"{fu}/by-mg", {"value": up}, u["mg"]),
        ("GET", "/parameters", None, u["mo"]),
        ("PUT", f"{fu}/by-mo", {"value": up}, u["mo"]),
        ("DELETE", f"{fu}/u1", None, u["mg"]),
        # global parameters
        ("PUT", f"/global-parameters/{g}", {"value": {"a": [1, "x", None]}}, "guest"),
        ("PUT", f"/global-parameters/{g}", {"value": {"a": [1, "x", None]}}, "guest"),
        ("PUT", f"/global-parameters/{g}", {"value": "changed"}, "guest"),
        ("PUT", f"/global-parameters/{g}", {"valu": 1}, "guest"),
        ("GET", f"/global-parameters/{g}", None, "guest"),
        ("PUT", f"/global-parameters/{g}-pm", {"value": 7}, u["pm"]),
        ("GET", f"/global-parameters/{g}-pm", None, u["pm"]),
        ("PUT", f"/global-parameters/{g}-mg", {"value": 7}, u["mg"]),
        ("GET", "/global-parameters", None, u["mo"]),
        ("DELETE", f"/global-parameters/{g}-pm", None, u["pm"]),
        ("DELETE", f"/global-parameters/{g}-pm", None, "guest"),
        ("GET", f"/global-parameters/{g}-pm", None, "guest"),
        ("DELETE", f"/global-parameters/{g}-mg", None, u["mg"]),
    ]
    out = []
    for method, path, body, user in steps:
        status, got = call(port, method, path, body, user)
        out.append((method, path, user, status, got))
    # the listings, narrowed to this script's objects (the brokers are shared)
    status, allp = call(port, "GET", "/parameters")
    out.append(("GET", "/parameters", status, [p for p in allp if p["vhost"] == vh]))
    status, allg = call(port, "GET", "/global-parameters")
    out.append(("GET", "/global-parameters", status,
                [p for p in allg if p["name"].startswith(g)]))
    status, pm = call(port, "GET", "/parameters", user=u["pm"])
    out.append(("GET", "/parameters", "pm", status, [p for p in pm if p["vhost"] in (vh, other)]))
    return out


def test_parameters_api_same_as_rabbitmq(rabbit_mgmt, broker):  # noqa: F811
    tag = os.urandom(3).hex()
    users = {f"pm{tag}": "policymaker", f"mg{tag}": "management", f"mo{tag}": "monitoring"}
    short = {"pm": f"pm{tag}", "mg": f"mg{tag}", "mo": f"mo{tag}"}
    vh, other, g = f"params-{tag}", f"params-other-{tag}", f"g{tag}"
    transcripts = []
    for port in (rabbit_mgmt, broker.management_port):
        setup(port, vh, other, users)
        # the policymaker has permissions on vh only
        assert call(port, "DELETE", f"/permissions/{quote(other, safe='')}/pm{tag}")[0] in \
            (204, 404)
        transcripts.append(script(port, vh, other, g, short))
    rabbit, syncmq = transcripts
    for r, s in zip(rabbit, syncmq, strict=True):
        assert s == r, f"\nsyncmq:   {s}\nrabbitmq: {r}"


def _ours(defs: dict, vh: str, g: str) -> dict:
    return {"parameters": sorted((p for p in defs["parameters"] if p["vhost"] == vh),
                                 key=lambda p: (p["component"], p["name"])),
            "global_parameters": sorted((p for p in defs["global_parameters"]
                                         if p["name"].startswith(g)),
                                        key=lambda p: p["name"])}


def test_definitions_round_trip_with_rabbitmq(rabbit_mgmt, broker):  # noqa: F811
    tag = os.urandom(3).hex()
    vh, g = f"defs-{tag}", f"gd{tag}"
    v = quote(vh, safe="")
    assert call(rabbit_mgmt, "PUT", f"/vhosts/{v}")[0] == 201
    for name, value in [("up1", {"uri": "amqp://u1", "max-hops": 2}),
                        ("up2", {"uri": ["amqp://a", "amqp://b"], "ack-mode": "on-publish"})]:
        assert call(rabbit_mgmt, "PUT", f"/parameters/federation-upstream/{v}/{name}",
                    {"value": value})[0] == 201
    assert call(rabbit_mgmt, "PUT", f"/parameters/federation-upstream-set/{v}/set1",
                {"value": [{"upstream": "up1"}, {"upstream": "up2"}]})[0] == 201
    assert call(rabbit_mgmt, "PUT", f"/global-parameters/{g}", {"value": {"k": [1]}})[0] == 201
    status, rdefs = call(rabbit_mgmt, "GET", "/definitions")
    assert status == 200
    ours = _ours(rdefs, vh, g)
    assert len(ours["parameters"]) == 3 and len(ours["global_parameters"]) == 1
    # RabbitMQ's file (our part of it) into syncmq, and back out equal
    file = {"vhosts": [{"name": vh}], **ours}
    status, body = call(broker.management_port, "POST", "/definitions", file)
    assert status == 204, body
    status, sdefs = call(broker.management_port, "GET", "/definitions")
    assert _ours(sdefs, vh, g) == ours
    # syncmq's export (our part) into RabbitMQ after clearing them there: back equal
    for p in ours["parameters"]:
        assert call(rabbit_mgmt, "DELETE", f"/parameters/{p['component']}/{v}/"
                    f"{p['name']}")[0] == 204
    assert call(rabbit_mgmt, "DELETE", f"/global-parameters/{g}")[0] == 204
    status, body = call(rabbit_mgmt, "POST", "/definitions",
                        {"vhosts": [{"name": vh}], **_ours(sdefs, vh, g)})
    assert status in (201, 204), body
    assert _ours(call(rabbit_mgmt, "GET", "/definitions")[1], vh, g) == ours
