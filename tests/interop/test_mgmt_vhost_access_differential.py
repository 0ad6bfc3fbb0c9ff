"""Who may read and act on a vhost's objects through the management API, against RabbitMQ
3.10.8 and syncmq (issue 17; syncmq/management/access.py holds the rules).

Users of each tag (``management``, ``monitoring``, ``policymaker``, ``administrator``)
without permissions on the scenario's vhost, a ``management`` and a ``monitoring`` user with
narrow permissions on it (configure ``^c``, write ``^w``, read ``^r``), and an unknown vhost:
every vhost-scoped endpoint (reads, declares, deletes, binds, publish, get, purge, the
aliveness test, policies, limits, definitions, permissions) is called by each user on both
brokers and the answers compared: the status, the error body, and for a success the kind of
body (a listing's content depends on the broker's other tests and is not compared).

Where RabbitMQ 3.10.8 answers something syncmq deliberately does not, it is listed in
KNOWN (and asserted, so that a change on either side shows up):
- the bindings of a queue or exchange of a vhost that does not exist: RabbitMQ lists ``[]``
  (200), syncmq answers 404 as for the queue or exchange itself.
"""

from __future__ import annotations

import test_rabbitmqadmin as ra
from interop_helpers import api

rabbit_mgmt = ra.rabbit_mgmt  # the RabbitMQ node's management port, once it answers

PW = "pw-access"
PUBLISH = {"routing_key": "k", "payload": "x", "payload_encoding": "string", "properties": {}}
GET = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}

# (method, path with {v} for the vhost, body); objects: queue cq/wq/rq, exchange cx/wx/rx,
# binding rx -> wq with key k, policy pol, operator policy opol
ENDPOINTS = [
    ("GET", "/queues/{v}", None), ("GET", "/queues/{v}/rq", None),
    ("GET", "/queues/{v}/rq/bindings", None), ("GET", "/exchanges/{v}", None),
    ("GET", "/exchanges/{v}/rx", None), ("GET", "/exchanges/{v}/rx/bindings/source", None),
    ("GET", "/exchanges/{v}/rx/bindings/destination", None), ("GET", "/bindings/{v}", None),
    ("GET", "/bindings/{v}/e/rx/q/wq/k", None), ("GET", "/vhosts/{v}", None),
    ("GET", "/vhosts/{v}/permissions", None), ("GET", "/vhosts/{v}/connections", None),
    ("GET", "/vhosts/{v}/channels", None), ("GET", "/consumers/{v}", None),
    ("GET", "/policies/{v}", None), ("GET", "/policies/{v}/pol", None),
    ("GET", "/operator-policies/{v}", None), ("GET", "/vhost-limits/{v}", None),
    ("GET", "/definitions/{v}", None), ("GET", "/permissions/{v}/guest", None),
    ("GET", "/aliveness-test/{v}", None),
    ("PUT", "/queues/{v}/c-new", {"durable": False}), ("PUT", "/queues/{v}/x-new", {}),
    ("PUT", "/queues/{v}/c-bad", {"arguments": {"x-max-length": "ten"}}),
    ("PUT", "/queues/{v}/c-bool", {"durable": "yes"}),
    ("PUT", "/exchanges/{v}/c-newx", {"type": "direct"}),
    ("PUT", "/exchanges/{v}/x-newx", {"type": "direct"}),
    ("POST", "/bindings/{v}/e/rx/q/wq", {"routing_key": "k2"}),
    ("POST", "/bindings/{v}/e/wx/q/wq", {"routing_key": "k2"}),
    ("POST", "/bindings/{v}/e/rx/e/wx", {"routing_key": "k2"}),
    ("POST", "/exchanges/{v}/wx/publish", PUBLISH),
    ("POST", "/exchanges/{v}/rx/publish", PUBLISH),
    ("POST", "/exchanges/{v}/amq.default/publish", PUBLISH),
    ("POST", "/exchanges/{v}/w-none/publish", PUBLISH),
    ("POST", "/queues/{v}/rq/get", GET), ("POST", "/queues/{v}/wq/get", GET),
    ("POST", "/queues/{v}/r-none/get", GET),
    ("DELETE", "/queues/{v}/rq/contents", None), ("DELETE", "/queues/{v}/wq/contents", None),
    ("DELETE", "/queues/{v}/r-none/contents", None),
    ("DELETE", "/bindings/{v}/e/wx/q/wq/none", None),
    ("DELETE", "/queues/{v}/wq", None), ("DELETE", "/queues/{v}/c-none", None),
    ("DELETE", "/exchanges/{v}/wx", None), ("DELETE", "/exchanges/{v}/c-none", None),
    # last: these succeed for some users and change the objects
    ("DELETE", "/bindings/{v}/e/rx/q/wq/k", None),
    ("DELETE", "/queues/{v}/cq", None), ("DELETE", "/exchanges/{v}/cx", None),
]

NO_PERMS = {"acc-mgmt": "management", "acc-mon": "monitoring", "acc-pm": "policymaker",
            "acc-admin": "administrator"}
NARROW = {"acc-narrow": "management", "acc-narrow-mon": "monitoring"}

# answers RabbitMQ 3.10.8 gives that syncmq deliberately does not: (user, method, path) ->
# (RabbitMQ's, syncmq's)
_NOT_FOUND = (404, {"error": "Object Not Found", "reason": "Not Found"})
KNOWN = {(u, "GET", p): ((200, "list"), _NOT_FOUND)
         for u in list(NO_PERMS) + list(NARROW) + ["guest"]
         for p in ("/queues/acc-none/rq/bindings", "/exchanges/acc-none/rx/bindings/source",
                   "/exchanges/acc-none/rx/bindings/destination")}


def _setup(port: int, vh: str) -> None:
    def ok(method, path, body=None):
        status, answer = api(port, method, path, body)
        assert status in (201, 204), (path, status, answer)
    ok("PUT", f"/vhosts/{vh}")
    ok("PUT", f"/permissions/{vh}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    for q in ("cq", "wq", "rq"):
        ok("PUT", f"/queues/{vh}/{q}", {"durable": False})
    for x in ("cx", "wx", "rx"):
        ok("PUT", f"/exchanges/{vh}/{x}", {"type": "direct", "durable": False})
    ok("POST", f"/bindings/{vh}/e/rx/q/wq", {"routing_key": "k"})
    ok("PUT", f"/policies/{vh}/pol", {"pattern": "^zz", "definition": {"max-length": 1}})
    ok("PUT", f"/operator-policies/{vh}/opol", {"pattern": "^zz",
                                                "definition": {"max-length": 1}})
    for user, tags in (NO_PERMS | NARROW).items():
        ok("PUT", f"/users/{user}", {"password": PW, "tags": tags})
    for user in NARROW:
        ok("PUT", f"/permissions/{vh}/{user}", {"configure": "^c", "write": "^w", "read": "^r"})


def _teardown(port: int, vh: str) -> None:
    for user in NO_PERMS | NARROW:
        api(port, "DELETE", f"/users/{user}")
    api(port, "DELETE", f"/vhosts/{vh}")


def _summary(status: int, body) -> tuple:
    return (status, type(body).__name__) if status < 300 else (status, body)


def transcript(port: int, vh: str) -> dict:
    """Every endpoint by every user, on the vhost and on an unknown one ("acc-none")."""
    _setup(port, vh)
    out = {}
    try:
        for user in list(NO_PERMS) + list(NARROW):
            for method, path, body in ENDPOINTS:
                for v in (vh, "acc-none"):
                    p = path.format(v=v)
                    out[user, method, p.replace(vh, "VH")] = _summary(
                        *api(port, method, p, body, user=user, password=PW))
        # guest (administrator with permissions) on the unknown vhost
        for method, path, body in ENDPOINTS:
            p = path.format(v="acc-none")
            out["guest", method, p] = _summary(*api(port, method, p, body))
    finally:
        _teardown(port, vh)
    return out


def test_vhost_scoped_endpoints_answer_as_rabbitmq(rabbit_mgmt, broker, unique):
    vh = "acc-" + unique[-6:]
    rabbit = transcript(rabbit_mgmt, vh)
    ours = transcript(broker.management_port, vh)
    assert rabbit.keys() == ours.keys()
    for key, pair in KNOWN.items():
        assert (rabbit.pop(key), ours.pop(key)) == pair, key
    diffs = {k: (rabbit[k], ours[k]) for k in rabbit if rabbit[k] != ours[k]}
    assert not diffs, "\n".join(f"{k}:\n  rabbitmq {r}\n  syncmq   {s}"
                                for k, (r, s) in diffs.items())
    # what the comparison is about, as RabbitMQ answers it
    assert rabbit["acc-mgmt", "GET", "/queues/VH"] == (401, {
        "error": "not_authorised", "reason": "User not authorised to access virtual host"})
    assert rabbit["acc-narrow", "PUT", "/queues/VH/c-new"] == (201, "NoneType")
    assert rabbit["acc-admin", "PUT", "/queues/VH/c-new"][0] == 401
