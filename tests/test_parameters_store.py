"""The runtime-parameter store (``broker/parameters.py``) in-process, over a real journal:
components, validation, apply order, unchanged values, vhost deletion, recovery."""

from __future__ import annotations

import threading
import time

import pytest
from journal_helpers import barrier

from syncmq.broker.broker import Broker
from syncmq.broker.durability import Durability
from syncmq.broker.parameters import KNOWN_COMPONENTS, NotFound, ParameterError
from syncmq.journal import Journal


def bare(b: Broker) -> Broker:
    """``b`` with the components syncmq registers itself (the PolicyRegistry's ``policy``
    and ``operator_policy``) taken off its store, so that these tests can register a
    recorder as the ``policy`` component."""
    for component in ("policy", "operator_policy"):
        b.parameters._components.pop(component, None)
    return b


def open_broker(path):
    j = Journal(path)
    j.open()
    d = Durability(j)
    b = bare(Broker(durability=d))
    return b, d, j


def start(b, d, j):
    counts = d.recover_into(b)
    j.start()
    d.journal_started()
    return counts


class Recorder:
    def __init__(self):
        self.calls = []

    def validate(self, vhost, name, value):
        if not isinstance(value, dict):
            raise ParameterError("Validation failed\n\nnot a JSON object\n")

    def apply(self, vhost, name, value):
        self.calls.append((vhost, name, value))


def test_set_validate_apply_clear(tmp_path):
    b, d, j = open_broker(tmp_path)
    start(b, d, j)
    rec = Recorder()
    b.parameters.register("policy", validate=rec.validate, apply=rec.apply)
    p = b.parameters
    with pytest.raises(ParameterError, match="^Validation failed\n\ncomponent nope not found\n$"):
        p.set("nope", "/", "x", {})
    with pytest.raises(NotFound):
        p.set("policy", "no-such-vhost", "x", {})
    with pytest.raises(ParameterError, match="not a JSON object"):
        p.set("policy", "/", "x", [1])
    with pytest.raises(ParameterError, match="not JSON"):
        p.set("policy", "/", "x", {"n": float("nan")})
    assert not d.take_changed()  # nothing refused was journaled
    p.set("policy", "/", "x", {"a": 1})
    assert d.take_changed()
    assert rec.calls == [("/", "x", {"a": 1})]
    p.set("policy", "/", "x", {"a": 1})  # unchanged: no apply, but still waits for the disk
    assert rec.calls == [("/", "x", {"a": 1})] and d.take_changed()
    p.set("policy", "/", "x", {"a": 2})
    with pytest.raises(ParameterError, match="must not be null"):
        p.set("policy", "/", "x", None)
    with pytest.raises(ParameterError, match="must be a JSON object or list"):
        p.set("federation-upstream", "/", "u", 5)  # RabbitMQ answers 500 there
    # known, nobody registered: any object, stored as is
    assert p.set("shovel", "/", "s", {"any": ["thing"]})
    assert not p.set("shovel", "/", "s", {"any": ["thing"]})
    assert p.get("policy", "/", "x") == {"a": 2}
    assert p.list() == [
        {"vhost": "/", "component": "shovel", "name": "s", "value": {"any": ["thing"]}},
        {"vhost": "/", "component": "policy", "name": "x", "value": {"a": 2}}]
    assert p.list("shovel") == p.list(vhost="/")[:1]
    snap = p.values("policy", "/")
    assert p.clear("policy", "/", "x") and not p.clear("policy", "/", "x")
    assert dict(snap) == {"x": {"a": 2}}  # a reader's snapshot does not change under it
    assert rec.calls[-1] == ("/", "x", None) and p.get("policy", "/", "x") is None
    p._check()
    assert set(p.components()) == KNOWN_COMPONENTS
    j.close()


def test_value_is_copied_in(tmp_path):
    b = Broker()
    v = {"k": [1, 2]}
    b.parameters.set("shovel", "/", "s", v)
    v["k"].append(3)
    assert b.parameters.get("shovel", "/", "s") == {"k": [1, 2]}


def test_apply_sees_changes_in_store_order(tmp_path):
    """Concurrent setters: the component's apply calls come in the order the values were
    stored, so the last apply always carries the stored value."""
    b = Broker()
    seen = []
    stale = []

    def apply(vh, n, v):
        time.sleep(0.0002)  # give the other setters the GIL: none may store meanwhile
        if b.parameters.get("syncmq-test", vh, n) != v:
            stale.append(v)
        seen.append(v)

    b.parameters.register("syncmq-test", apply=apply)

    def setter(k):
        for i in range(200):
            b.parameters.set("syncmq-test", "/", "limits", {"t": k, "i": i})

    threads = [threading.Thread(target=setter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen[-1] == b.parameters.get("syncmq-test", "/", "limits")
    assert stale == [] and len(seen) == 800
    b.parameters._check()


def test_globals_and_clear_vhost(tmp_path):
    b = bare(Broker())
    rec = Recorder()
    b.parameters.register("policy", apply=rec.apply)
    b.add_vhost("v")
    b.parameters.set("policy", "v", "a", {})
    b.parameters.set("shovel", "v", "s", {})
    b.parameters.set("policy", "/", "a", {})
    assert b.parameters.clear_vhost("v") == 2
    assert b.parameters.list() == [{"vhost": "/", "component": "policy", "name": "a",
                                    "value": {}}]
    assert ("v", "a", None) in rec.calls
    b.parameters.set_global("cluster_name", "edge-1")
    b.parameters.set_global("n", {"x": None})
    assert b.parameters.list_global() == [{"name": "cluster_name", "value": "edge-1"},
                                          {"name": "n", "value": {"x": None}}]
    assert b.parameters.clear_global("n") and not b.parameters.clear_global("n")
    b.parameters._check()


def test_recovery_restores_and_applies_after_entities(tmp_path):
    b, d, j = open_broker(tmp_path)
    start(b, d, j)
    b.add_vhost("v")
    b.parameters.set("policy", "v", "p", {"pattern": "^q"})
    b.parameters.set("policy", "/", "gone", {})
    b.parameters.clear("policy", "/", "gone")
    b.parameters.set("vhost-limits", "/", "limits", {"max-queues": 3})
    b.parameters.register("syncmq-test")  # a component nobody registers at start
    b.parameters.set("syncmq-test", "/", "late", {"x": 1})
    b.parameters.set_global("cluster_name", "edge")
    barrier(j)
    j.close()

    b2, d2, j2 = open_broker(tmp_path)
    early = Recorder()
    queues_at_apply = []
    b2.parameters.register("policy", apply=lambda vh, n, v: (
        early.apply(vh, n, v), queues_at_apply.append(sorted(b2.vhosts))))
    counts = start(b2, d2, j2)
    assert counts["parameters"] == 4
    assert early.calls == [("v", "p", {"pattern": "^q"})]
    assert "v" in queues_at_apply[0]  # the vhost exists when apply runs
    assert b2.vhosts["/"].limits.max_queues == 3  # the broker's own component, applied
    late = Recorder()
    b2.parameters.register("syncmq-test", apply=late.apply)  # registered after recovery
    assert late.calls == [("/", "late", {"x": 1})]
    assert b2.parameters.list_global() == [{"name": "cluster_name", "value": "edge"}]
    with pytest.raises(ValueError):
        b2.parameters.register("policy")
    b2.parameters._check()
    j2.close()
