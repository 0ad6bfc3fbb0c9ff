"""Runtime parameters on a real syncmq (issue 16): durable across SIGTERM and kill -9,
answered only after the fsync of their records, cleared with their vhost, imported through
the store's own checks; bad inputs refused with the broker still serving. The RabbitMQ
comparison of codes and texts is tests/interop/test_parameters_differential.py."""

from __future__ import annotations

import os
import threading

import pytest
from brokerproc import BrokerProcess
from test_fsync_gate import Gate
from test_management import call

UP = {"uri": "amqp://core", "max-hops": 1}


def put(b, path, value, **kw):
    return call(b, "PUT", "/api" + path, {"value": value}, **kw)[0]


def params(b, vhost=None):
    path = "/api/parameters" + (f"/federation-upstream/{vhost}" if vhost else "")
    status, body, _ = call(b, "GET", path)
    assert status == 200
    return body


# a valid shovel (the component validates since syncmq runs shovels) that never connects:
# its destination port is closed and reconnect-delay 0 leaves it terminated
SHOVEL = {"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://127.0.0.1:1",
          "reconnect-delay": 0}


def globals_(b):
    return call(b, "GET", "/api/global-parameters")[1]


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_parameters_survive_restart(brokers_on_dir, how):
    start, restart = brokers_on_dir
    b = start()
    assert call(b, "PUT", "/api/vhosts/edge")[0] == 201
    assert put(b, "/parameters/federation-upstream/edge/up", UP) == 201
    assert put(b, "/parameters/federation-upstream/edge/up", {**UP, "max-hops": 2}) == 204
    assert put(b, "/parameters/federation-upstream-set/%2F/set", [{"upstream": "up"}]) == 201
    assert put(b, "/parameters/shovel/%2F/gone", SHOVEL) == 201
    assert call(b, "DELETE", "/api/parameters/shovel/%2F/gone")[0] == 204
    assert put(b, "/global-parameters/cluster_name", "edge-1") == 201
    assert put(b, "/global-parameters/gone", 1) == 201
    assert call(b, "DELETE", "/api/global-parameters/gone")[0] == 204
    before, gbefore = params(b), globals_(b)
    assert [p["name"] for p in before] == ["set", "up"]
    if how == "kill9":
        b.kill()
    else:
        assert b.stop() == 0
    b2 = restart(b)
    assert params(b2) == before and globals_(b2) == gbefore
    assert params(b2)[1]["value"] == {**UP, "max-hops": 2}
    assert '"parameters": 3' in b2.wait_for_log('"recovered"')


def test_every_answered_put_survives_kill_9(brokers_on_dir):
    """A writer PUTs parameters as fast as answers come; kill -9 mid-way: every parameter
    whose PUT was answered is there after the restart."""
    start, restart = brokers_on_dir
    b = start()
    answered: list[int] = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            try:
                if put(b, f"/parameters/federation-upstream/%2F/u{i}", UP) != 201:
                    return
            except OSError:
                return
            answered.append(i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    while len(answered) < 50:
        t.join(0.01)
        assert t.is_alive()
    b.kill()
    stop.set()
    t.join()
    b2 = restart(b)
    names = {p["name"] for p in params(b2)}
    assert {f"u{i}" for i in answered} <= names


def test_put_answered_only_after_fsync(tmp_path):
    gate = Gate(str(tmp_path / "fsync-gate"))
    env = dict(os.environ, SYNCMQ_TEST_FSYNC_GATE=gate.path)
    b = BrokerProcess(str(tmp_path / "data"), env=env).start()
    try:
        for path, method in [("/parameters/federation-upstream/%2F/gated", "PUT"),
                             ("/global-parameters/gated", "PUT"),
                             ("/parameters/federation-upstream/%2F/gated", "DELETE")]:
            gate.hold()
            out: list = []
            body = {"value": UP} if method == "PUT" else None
            t = threading.Thread(target=lambda m=method, p=path, body=body, out=out: out.append(
                call(b, m, "/api" + p, body)[0]))
            t.start()
            while gate.waiters() == 0:  # the journal thread is blocked on the fsync
                t.join(0.005)
                assert t.is_alive() or out, "request ended without reaching the journal"
                assert not out, f"{method} {path} answered {out} before the fsync"
            assert not out
            gate.release()
            t.join(30)
            assert out and out[0] in (201, 204), out
    finally:
        gate.release()
        os.close(gate.fd)
        assert b.stop() == 0
    assert not b.tracebacks()


def test_deleting_a_vhost_clears_its_parameters(brokers_on_dir):
    start, restart = brokers_on_dir
    b = start()
    assert call(b, "PUT", "/api/vhosts/doomed")[0] == 201
    assert put(b, "/parameters/federation-upstream/doomed/up", UP) == 201
    assert put(b, "/parameters/federation-upstream/%2F/stays", UP) == 201
    assert call(b, "DELETE", "/api/vhosts/doomed")[0] == 204
    assert [p["name"] for p in params(b)] == ["stays"]
    assert b.stop() == 0
    b2 = restart(b)
    assert [p["name"] for p in params(b2)] == ["stays"]
    assert call(b2, "GET", "/api/vhosts/doomed")[0] == 404
    # a vhost of the same name starts without them
    assert call(b2, "PUT", "/api/vhosts/doomed")[0] == 201
    assert params(b2, "doomed") == []


def test_bad_inputs_refused_broker_still_serves(broker):
    cases = [
        ("/parameters/federation-upstream/%2F/x", {"value": 5}, 400,
         "Validation failed\n\nvalue of x must be a JSON object or list\n"),
        ("/parameters/federation-upstream/%2F/x", {"value": None}, 400,
         "Validation failed\n\nvalue of x must not be null\n"),
        ("/parameters/nope/%2F/x", {"value": {}}, 400,
         "Validation failed\n\ncomponent nope not found\n"),
        ("/parameters/policy/%2F/x", {"value": {}}, 400,
         "policies may not be set using this method"),
        ("/parameters/shovel/no-vhost/x", {"value": {}}, 404, "vhost_not_found"),
        ("/parameters/shovel/%2F/x", {}, 400, "[{key_missing,value}]"),
        ("/global-parameters/x", {"val": 1}, 400, "[{key_missing,value}]"),
    ]
    for path, body, status, reason in cases:
        got, out, _ = call(broker, "PUT", "/api" + path, body)
        assert (got, out["reason"]) == (status, reason), path
    assert call(broker, "DELETE", "/api/parameters/policy/%2F/x")[0] == 400
    assert call(broker, "PUT", "/api/parameters/shovel/%2F/", {"value": {}})[0] == 405
    assert params(broker) == [] and globals_(broker) == []
    assert put(broker, "/parameters/shovel/%2F/ok", SHOVEL) == 201


def _defs(b):
    return call(b, "GET", "/api/definitions")[1]


def test_definitions_import_checks_parameters_through_the_store(fresh_broker):
    b = fresh_broker
    good = {"vhosts": [{"name": "newvh"}],
            "parameters": [{"vhost": "newvh", "component": "federation-upstream",
                            "name": "up", "value": UP}],
            "global_parameters": [{"name": "internal_cluster_id", "value": "rabbitmq-x"}]}
    bad_files = [
        ({"parameters": [{"vhost": "/", "component": "nope", "name": "n", "value": {}}]},
         "component nope not found"),
        ({"parameters": [{"vhost": "nov", "component": "shovel", "name": "n", "value": {}}]},
         "no vhost 'nov'"),
        ({"parameters": [{"vhost": "/", "component": "policy", "name": "n", "value": {}}]},
         "policies may not be set"),
        ({"parameters": [{"vhost": "/", "component": "shovel", "name": "n"}]},
         "'value' is missing"),
        ({"global_parameters": [{"name": "g"}]}, "'value' is missing"),
        ({"parameters": [{"vhost": "/", "component": "federation-upstream-set", "name": "n",
                          "value": 3}]}, "must be a JSON object or list"),
        ({"parameters": [{"vhost": "/", "component": "shovel", "name": "n", "value": {}}]},
         "Must specify 'src-exchange' or 'src-queue'"),
    ]
    for extra, text in bad_files:
        status, out, _ = call(b, "POST", "/api/definitions", {**good, **extra})
        assert status == 400 and text in out["reason"], (extra, out)
        assert call(b, "GET", "/api/vhosts/newvh")[0] == 404  # nothing applied
    assert call(b, "POST", "/api/definitions", good)[0] == 204
    d = _defs(b)
    assert d["parameters"] == good["parameters"]
    assert d["global_parameters"] == good["global_parameters"]
    # importing the export again changes nothing
    assert call(b, "POST", "/api/definitions", d)[0] == 204
    assert _defs(b)["parameters"] == d["parameters"]


def test_policymaker_gets_404_for_a_vhost_that_does_not_exist(broker, unique):
    """RabbitMQ's ``user_matches_vhost`` lets a request about a missing vhost through
    (``not_found -> true``): a policymaker gets the administrator's 404, not 401; a vhost
    that exists without its permissions stays a 401. Fails with the vhost checked first."""
    pm, other, missing = f"pm-{unique}", f"other-{unique}", f"missing-{unique}"
    assert call(broker, "PUT", f"/api/users/{pm}",
                {"password": "pw", "tags": "policymaker"})[0] == 201
    assert call(broker, "PUT", f"/api/permissions/%2F/{pm}",
                {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    assert call(broker, "PUT", f"/api/vhosts/{other}")[0] == 201
    auth = (pm, "pw")
    for method, path, body in (
            ("PUT", f"/api/parameters/shovel/{missing}/x", {"value": {}}),
            ("GET", f"/api/parameters/shovel/{missing}", None),
            ("GET", f"/api/parameters/shovel/{missing}/x", None),
            ("DELETE", f"/api/parameters/shovel/{missing}/x", None)):
        theirs = call(broker, method, path, body)[:2]
        assert theirs[0] == 404, (method, path, theirs)
        assert call(broker, method, path, body, auth=auth)[:2] == theirs, (method, path)
    status, out, _ = call(broker, "PUT", f"/api/parameters/shovel/{other}/x", {"value": {}},
                          auth=auth)
    assert (status, out["reason"]) == (401, "User not authorised to access object")
    assert call(broker, "PUT", f"/api/parameters/shovel/%2F/{pm}", {"value": SHOVEL},
                auth=auth)[0] == 201
