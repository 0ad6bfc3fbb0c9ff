"""Policies on a running syncmq (issue #16): the scripts of tests/policy_scripts.py give
RabbitMQ 3.10.8's transcripts (recorded in tests/fixtures/policy_transcripts.json by
tests/interop/test_policies_differential.py, which also runs them against a live node), and
what only syncmq can show: a policy applied to many queues while another connection's
traffic flows, the management fields, the warning for keys syncmq does not act on, and
bad input refused while the broker keeps serving."""

from __future__ import annotations

import json
import os
import threading
import uuid

import pika
import policy_scripts as ps
import pytest
from amqp_helpers import connection

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "policy_transcripts.json")
with open(FIXTURE) as _f:
    RABBIT = json.load(_f)


@pytest.fixture(scope="module")
def target(broker) -> ps.Target:
    return ps.Target(broker.port, broker.management_port)


@pytest.mark.parametrize("name", list(ps.SCENARIOS))
def test_script_gives_rabbitmqs_transcript(target, name):
    got = ps.normalize(ps.run(target, name, f"d{uuid.uuid4().hex[:6]}-"))
    assert got == RABBIT[name]


def test_live_apply_to_many_queues_while_traffic_flows(broker, target, unique):
    """A policy over 300 queues with 5 messages each: every one trimmed to 2 at once (the
    PUT answers after); a publisher/consumer pair on another queue keeps going meanwhile."""
    n = 300
    with connection(broker.port) as conn:
        ch = conn.channel()
        for i in range(n):
            ch.queue_declare(f"{unique}-{i}")
            for _ in range(5):
                ch.basic_publish("", f"{unique}-{i}", b"x")
        ch.queue_declare(f"other-{unique}")
    stop = threading.Event()
    moved = [0]

    def traffic() -> None:
        with connection(broker.port) as c:
            tch = c.channel()
            tch.confirm_delivery()
            while not stop.is_set():
                tch.basic_publish("", f"other-{unique}", b"t")
                if tch.basic_get(f"other-{unique}", auto_ack=True)[0] is not None:
                    moved[0] += 1
    th = threading.Thread(target=traffic)
    th.start()
    try:
        while moved[0] < 20:  # the traffic runs before the policy
            stop.wait(0.01)
        before = moved[0]
        st, _ = target.http("PUT", f"/policies/%2F/{unique}",
                            {"pattern": f"^{unique}-", "definition": {"max-length": 2}})
        assert st == 201
        with connection(broker.port) as conn:
            ch = conn.channel()
            depths = {ch.queue_declare(f"{unique}-{i}", passive=True).method.message_count
                      for i in range(n)}
        assert depths == {2}
        while moved[0] < before + 20:  # and keeps running after it
            stop.wait(0.01)
    finally:
        stop.set()
        th.join(30)
    st, qs = target.http("GET", "/queues/%2F")
    mine = [q for q in qs if q["name"].startswith(f"{unique}-")]
    assert {q["policy"] for q in mine} == {unique}
    assert {json.dumps(q["effective_policy_definition"]) for q in mine} == {
        '{"max-length": 2}'}
    other = next(q for q in qs if q["name"] == f"other-{unique}")
    assert (other["policy"], other["operator_policy"], other["effective_policy_definition"]) \
        == (None, None, {})
    assert target.http("DELETE", f"/policies/%2F/{unique}")[0] == 204
    st, q = target.http("GET", f"/queues/%2F/{unique}-0")
    assert q["policy"] is None and q["effective_policy_definition"] == {}


def test_not_applicable_keys_are_accepted_with_a_warning(broker, target, unique):
    st, _ = target.http("PUT", f"/policies/%2F/{unique}", {
        "pattern": f"^{unique}$", "definition": {"queue-mode": "lazy", "ha-mode": "all",
                                                 "max-length": 3}})
    assert st == 201
    broker.wait_for_log("not applicable")
    line = json.loads(broker.wait_for_log(f'"policy": "{unique}"'))
    assert "not applicable" in line["message"] and line["level"] == "WARNING"
    assert line["keys"] == ["ha-mode", "queue-mode"]
    target.http("DELETE", f"/policies/%2F/{unique}")


def test_listing_sorted_by_priority_and_exchange_field(target, unique):
    for name, prio in (("b", 5), ("a", 5), ("c", -1)):
        assert target.http("PUT", f"/policies/%2F/{unique}{name}", {
            "pattern": f"^{unique}x", "definition": {"alternate-exchange": "ae"},
            "priority": prio, "apply-to": "exchanges"})[0] == 201
    st, ps_ = target.http("GET", "/policies/%2F")
    mine = [p["name"] for p in ps_ if p["name"].startswith(unique)]
    assert mine == [f"{unique}c", f"{unique}a", f"{unique}b"]
    assert target.http("PUT", f"/exchanges/%2F/{unique}x", {"type": "fanout"})[0] == 201
    st, ex = target.http("GET", f"/exchanges/%2F/{unique}x")
    assert ex["policy"] == f"{unique}a"  # priority tie: the first by name
    st, ex = target.http("GET", "/exchanges/%2F/amq.direct")
    assert "policy" not in ex
    for name in "abc":
        target.http("DELETE", f"/policies/%2F/{unique}{name}")
    st, ex = target.http("GET", f"/exchanges/%2F/{unique}x")
    assert "policy" not in ex


def test_bad_input_refused_and_broker_serves(broker, target, unique):
    for body in ("x", [1], {"pattern": "a", "definition": "x"}, {"pattern": "a",
                 "definition": {"max-length": 1}, "apply-to": 3}):
        st, err = target.http("PUT", f"/policies/%2F/{unique}", body)
        assert st == 400, (body, st, err)
    st, err = target.http("PUT", f"/policies/%2F/{unique}", {
        "pattern": "a", "definition": {"max-length": 1}, "apply-to": "classic_queues"})
    assert st == 201  # RabbitMQ 3.11+'s apply-to values (3.10.8 refuses them)
    target.http("DELETE", f"/policies/%2F/{unique}")
    with connection(broker.port) as conn:
        ch = conn.channel()
        ch.queue_declare(unique)
        ch.basic_publish("", unique, b"still")
        assert ch.basic_get(unique, auto_ack=True)[2] == b"still"


def test_apply_to_queue_types(broker, target, unique):
    target.http("PUT", f"/policies/%2F/{unique}c", {"pattern": f"^{unique}",
                "definition": {"max-length": 1}, "apply-to": "classic_queues"})
    target.http("PUT", f"/policies/%2F/{unique}q", {"pattern": f"^{unique}",
                "definition": {"max-length": 2}, "apply-to": "quorum_queues"})
    with connection(broker.port) as conn:
        ch = conn.channel()
        ch.queue_declare(f"{unique}-c")
        ch.queue_declare(f"{unique}-q", durable=True, arguments={"x-queue-type": "quorum"})
    assert target.inspect(f"{unique}-c")["policy"] == f"{unique}c"
    assert target.inspect(f"{unique}-q")["policy"] == f"{unique}q"
    for n in "cq":
        target.http("DELETE", f"/policies/%2F/{unique}{n}")


def test_policymaker_may_set_policies_not_operator_policies(broker, target, unique):
    assert target.http("PUT", f"/users/{unique}", {"password": "pw",
                                                   "tags": "policymaker"})[0] == 201
    assert target.http("PUT", f"/permissions/%2F/{unique}", {
        "configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    as_pm = ps.Target(broker.port, broker.management_port)
    as_pm.auth = (unique, "pw")
    body = {"pattern": "^nothing$", "definition": {"max-length": 1}}
    assert as_pm.http("PUT", f"/policies/%2F/{unique}", body)[0] == 201
    assert as_pm.http("PUT", f"/operator-policies/%2F/{unique}", body)[0] == 401
    assert as_pm.http("DELETE", f"/policies/%2F/{unique}")[0] == 204
    assert as_pm.http("GET", f"/policies/{unique}-novhost")[0] == 404
    assert as_pm.http("PUT", f"/policies/{unique}-novhost/x", body)[0] == 404
    assert target.http("PUT", f"/vhosts/{unique}-other", {})[0] == 201
    assert as_pm.http("PUT", f"/policies/{unique}-other/x", body)[0] == 401
    assert as_pm.http("GET", f"/policies/{unique}-other")[0] == 401
    target.http("DELETE", f"/vhosts/{unique}-other")


def test_consumers_get_messages_after_policy_changes(broker, target, unique):
    """A consumer attached through set/clear keeps receiving (no stall on a queue whose
    settings changed under it)."""
    with connection(broker.port) as conn:
        ch = conn.channel()
        ch.queue_declare(unique)
        got = []
        ch.basic_consume(unique, lambda c, m, p, b: got.append(b), auto_ack=True)
        for i, d in enumerate(({"message-ttl": 60000}, {"max-length": 5}, None)):
            if d is None:
                target.http("DELETE", f"/policies/%2F/{unique}")
            else:
                target.http("PUT", f"/policies/%2F/{unique}",
                            {"pattern": f"^{unique}$", "definition": d})
            ch.basic_publish("", unique, b"%d" % i)
            conn.process_data_events(time_limit=0)
            while len(got) < i + 1:
                conn.process_data_events(time_limit=1)
        assert got == [b"0", b"1", b"2"]



def test_definitions_export_import_policies(broker_factory, unique):
    """``policies`` round-trip through definitions (RabbitMQ's shape); the issue's export
    (a policy over a queue with its own limit) imports with the policy in force; operator
    policies travel as ``parameters`` (component ``operator_policy``), as RabbitMQ 3.10
    exports them."""
    b = broker_factory()
    t = ps.Target(b.port, b.management_port)
    defs = {
        "vhosts": [{"name": "/"}],
        "policies": [{"vhost": "/", "name": "limit", "pattern": "^orders\\.limited$",
                      "apply-to": "all", "definition": {"message-ttl": 30000,
                                                        "max-length": 500},
                      "priority": 0}],
        "queues": [{"name": "orders.limited", "vhost": "/", "durable": True,
                    "auto_delete": False, "arguments": {"x-max-length": 1000,
                                                        "x-overflow": "reject-publish"}}],
    }
    assert t.http("POST", "/definitions", defs)[0] == 204
    assert t.inspect("orders.limited") == {
        "policy": "limit", "operator_policy": None,
        "effective": {"max-length": 500, "message-ttl": 30000}}
    s = ps.Script(t, "")
    try:
        assert s.publish("orders.limited", 600) == (500, 100)
    finally:
        s.close()
    assert t.http("PUT", "/operator-policies/%2F/cap", {"pattern": "^orders",
                  "definition": {"max-length": 400}})[0] == 201
    st, out = t.http("GET", "/definitions")
    assert out["policies"] == defs["policies"]
    assert [p for p in out["parameters"] if p["component"] == "operator_policy"] == [
        {"vhost": "/", "component": "operator_policy", "name": "cap",
         "value": {"pattern": "^orders", "definition": {"max-length": 400}, "priority": 0,
                   "apply-to": "all"}}]
    b2 = broker_factory()
    t2 = ps.Target(b2.port, b2.management_port)
    assert t2.http("POST", "/definitions", out)[0] == 204
    assert t2.inspect("orders.limited") == {
        "policy": "limit", "operator_policy": "cap",
        "effective": {"max-length": 400, "message-ttl": 30000}}
    bad = {"policies": [{"vhost": "/", "name": "x", "pattern": "a",
                         "definition": {"max-priority": 3}}]}
    st, err = t.http("POST", "/definitions", bad)
    assert st == 400 and err["reason"] == (
        "policy 'x' in vhost '/': Validation failed\n\n[{<<\"max-priority\">>,3}] are not "
        "recognised policy settings")
    assert t.http("GET", "/policies/%2F/x")[0] == 404


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_policies_survive_restart(brokers_on_dir, how):
    """Policies and operator policies are runtime parameters (journaled; a PUT is answered
    after the fsync): after a SIGTERM restart or a kill -9 they are listed and in force on
    the recovered queue (its messages trimmed, new publishes limited) and exchange."""
    start, restart = brokers_on_dir
    b = start()
    t = ps.Target(b.port, b.management_port)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("kept", durable=True)
        ch.exchange_declare("ex", "direct", durable=True)
        ch.exchange_declare("ae", "fanout", durable=True)
        ch.queue_declare("ae-q", durable=True)
        ch.queue_bind("ae-q", "ae")
        for _ in range(6):
            ch.basic_publish("", "kept", b"m", pika.BasicProperties(delivery_mode=2))
    assert t.http("PUT", "/policies/%2F/lim", {"pattern": "^kept$", "priority": 3,
                  "definition": {"max-length": 4}})[0] == 201
    assert t.http("PUT", "/policies/%2F/alt", {"pattern": "^ex$", "apply-to": "exchanges",
                  "definition": {"alternate-exchange": "ae"}})[0] == 201
    assert t.http("PUT", "/operator-policies/%2F/cap", {"pattern": "^kept",
                  "definition": {"max-length": 3}})[0] == 201
    before = (t.http("GET", "/policies")[1], t.http("GET", "/operator-policies")[1])
    if how == "kill9":
        b.kill()
    else:
        assert b.stop() == 0
    b = restart(b)
    t = ps.Target(b.port, b.management_port)
    assert (t.http("GET", "/policies")[1], t.http("GET", "/operator-policies")[1]) == before
    assert t.inspect("kept") == {"policy": "lim", "operator_policy": "cap",
                                 "effective": {"max-length": 3}}
    s = ps.Script(t, "")
    try:
        assert s.depth("kept") == 3
        s.publish("kept", 5)
        assert s.depth("kept") == 3
        s.publish("nowhere", 1, exchange="ex")
        assert s.depth("ae-q") == 1
    finally:
        s.close()


def test_expires_set_live_deletes_unused_queue(target, broker, unique):
    """A policy's ``expires`` on an existing unused queue starts a lease that ends it;
    clearing it before then keeps the queue."""
    with connection(broker.port) as conn:
        ch = conn.channel()
        ch.queue_declare(unique, arguments={"x-expires": 3600000})
        ch.queue_declare(f"{unique}-kept")
    target.http("PUT", f"/policies/%2F/{unique}", {"pattern": f"^{unique}$",
                                                   "definition": {"expires": 300}})
    s = ps.Script(target, "")
    try:
        assert s.gone(unique)
    finally:
        s.close()
    target.http("PUT", f"/policies/%2F/{unique}k", {"pattern": f"^{unique}-kept$",
                                                    "definition": {"expires": 3600000}})
    target.http("DELETE", f"/policies/%2F/{unique}k")
    assert target.http("GET", f"/queues/%2F/{unique}-kept")[0] == 200
    target.http("DELETE", f"/policies/%2F/{unique}")
