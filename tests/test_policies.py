"""Policies, pure part (syncmq.broker.policies): validation with RabbitMQ 3.10.8's texts
(read off a 3.10.8 node), matching, the operator merge and the per-key merge with a queue's
own arguments (RabbitMQ's process_args_policy). The live and differential parts are in
tests/test_policies_live.py and tests/interop/test_policies_differential.py."""

from __future__ import annotations

import pytest

from syncmq.broker.policies import (
    PolicyError,
    alternate_exchange,
    effective_definition,
    erl,
    match,
    not_applicable,
    queue_settings,
    validate,
)


def pol(name="p", pattern="^q", definition=None, priority=0, apply_to="all", op=False):
    return validate("/", name, {"pattern": pattern, "definition": definition or {"max-length": 1},
                                "priority": priority, "apply-to": apply_to}, op)


def refused(value, op=False) -> str:
    with pytest.raises(PolicyError) as e:
        validate("/", "p", value, op)
    return str(e.value)


def V(text: str) -> str:
    return f"Validation failed\n\n{text}\n"


@pytest.mark.parametrize("definition,text", [
    ({"max-priority": 1}, '[{<<"max-priority">>,1}] are not recognised policy settings'),
    ({"foo": 1, "bar": 2}, '[{<<"bar">>,2},{<<"foo">>,1}] are not recognised policy settings'),
    ({"max-length": 1, "foo": 2}, '[{<<"foo">>,2}] are not recognised policy settings'),
    ({"single-active-consumer": True},
     '[{<<"single-active-consumer">>,true}] are not recognised policy settings'),
    ({"foo": {"a": [1, "x", None, 1.5, True]}},
     '[{<<"foo">>,#{<<"a">> => [1,<<"x">>,null,1.5,true]}}] are not recognised policy '
     'settings'),
    ({"max-length": -1}, "-1 is not a valid maximum length"),
    ({"max-length": "x"}, '<<"x">> is not a valid maximum length'),
    ({"max-length": True}, "true is not a valid maximum length"),
    ({"max-length-bytes": 1.0}, "1.0 is not a valid maximum length in bytes"),
    ({"message-ttl": -1}, "-1 is not a valid message TTL"),
    ({"message-ttl": 1.5}, "1.5 is not a valid message TTL"),
    ({"expires": 0}, "0 is not a valid queue expiry"),
    ({"expires": "1"}, '<<"1">> is not a valid queue expiry'),
    ({"overflow": "x"}, '<<"x">> is not a valid overflow value'),
    ({"dead-letter-exchange": 1}, "1 is not a valid dead letter exchange name"),
    ({"dead-letter-routing-key": 1}, "1 is not a valid dead letter routing key"),
    ({"alternate-exchange": 1}, "1 is not a valid alternate exchange name"),
    ({"queue-version": 3}, "3 is not a valid queue-version value"),
    ({"queue-mode": "x"}, '<<"x">> is not a valid queue-mode value'),
    ({"dead-letter-strategy": "x"}, '<<"x">> is not a valid dead letter strategy'),
    ({"delivery-limit": -1}, "-1 is not a valid delivery limit"),
    ({"ha-sync-mode": "automatic"},
     "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown"),
    ({"ha-mode": "exactly"}, 'ha-mode="exactly" takes an integer, none given'),
    ({}, "no policy provided"),
    # several bad keys: the first in key order (expires < max-length < message-ttl)
    ({"max-length": -1, "message-ttl": -1, "expires": 0}, "0 is not a valid queue expiry"),
])
def test_definition_refused_with_rabbitmq_text(definition, text):
    assert refused({"pattern": "^a$", "definition": definition}) == V(text)


@pytest.mark.parametrize("value,text", [
    ({"pattern": "^a$", "definition": {"max-length": 1}, "apply-to": "foo"},
     V("apply-to 'foo' unrecognised; should be 'queues', 'classic_queues', 'quorum_queues', "
       "'exchanges' or 'all'")),
    ({"pattern": "(", "definition": {"max-length": 1}},
     V('pattern should be regular expression but is invalid: {"missing )",1}')),
    ({"pattern": 1, "definition": {"max-length": 1}}, V("pattern should be a binary but was 1")),
    ({"pattern": "x", "priority": "a", "definition": {"max-length": 1}},
     V('priority should be a number, actually was <<"a">>')),
    ({"pattern": "x", "priority": None, "definition": {"max-length": 1}},
     V("priority should be a number, actually was null")),
    ({"definition": {"max-length": 1}}, "[{key_missing,pattern}]"),
    ({"pattern": "x"}, "[{key_missing,definition}]"),
])
def test_policy_fields_refused(value, text):
    assert refused(value) == text


def test_accepted_keys_and_not_applicable():
    p = validate("/", "p", {"pattern": "^a$", "definition": {
        "queue-mode": "lazy", "queue-version": 2, "ha-mode": "all", "delivery-limit": 3,
        "dead-letter-strategy": "at-most-once", "max-age": "1D", "message-ttl": 5,
        "queue-master-locator": "min-masters", "max-in-memory-length": 1}})
    assert not_applicable(p) == ["delivery-limit", "ha-mode", "max-age", "max-in-memory-length",
                                 "queue-master-locator", "queue-mode", "queue-version"]
    assert p.priority == 0 and p.apply_to == "all"
    assert validate("/", "f", {"pattern": "x", "priority": 1.5,
                               "definition": {"max-length": 1}}).priority == 1.5
    fed = validate("/", "f", {"pattern": "x", "definition": {"federation-upstream-set": "all"}})
    assert not_applicable(fed) == ["federation-upstream-set"]
    dls = validate("/", "d", {"pattern": "x", "definition": {"dead-letter-strategy":
                                                              "at-least-once"}})
    assert not_applicable(dls) == ["dead-letter-strategy"]


@pytest.mark.parametrize("key,value", [
    ("queue-mode", "lazy"), ("overflow", "drop-head"), ("dead-letter-exchange", "x"),
    ("alternate-exchange", "x"), ("ha-mode", "all")])
def test_operator_policy_keys(key, value):
    assert refused({"pattern": "^p", "definition": {key: value}}, op=True) == V(
        f"[{{{erl(key)},{erl(value)}}}] are not recognised policy settings")


def test_operator_policy_accepts_its_keys():
    for k in ("expires", "message-ttl", "max-length", "max-length-bytes",
              "max-in-memory-length", "max-in-memory-bytes", "delivery-limit"):
        validate("/", "o", {"pattern": "x", "definition": {k: 1}}, True)


def test_erl_formatting():
    assert erl("a\"b") == '<<"a\\"b">>'
    assert erl("é") == "<<\"é\">>"
    assert erl(1e20) == "1.0e20"
    assert erl({"b": 1, "a": [False]}) == '#{<<"a">> => [false],<<"b">> => 1}'


def test_match_priority_apply_to_and_tie():
    a = pol("a", "^q", priority=1)
    b = pol("b", "^q1", priority=5)
    c = pol("c", "^q1", priority=5)
    ex = pol("e", "^q", priority=9, apply_to="exchanges")
    quorum = pol("z", "q", priority=7, apply_to="quorum_queues")
    classic = pol("y", "q", priority=6, apply_to="classic_queues")
    ps = tuple(sorted((a, b, c, ex, quorum, classic), key=lambda p: p.name))
    assert match(ps, "q1", "queue", "quorum") is quorum
    assert match(ps, "q1", "queue", "classic") is classic
    assert match(ps, "x", "queue") is None
    assert match(ps, "q2", "exchange") is ex
    # pattern is searched, not anchored (re:run)
    assert match((pol("m", "b"),), "abc", "queue") is not None
    # a tie: the first by name
    ps = tuple(sorted((b, c), key=lambda p: p.name))
    assert match(ps, "q1", "queue") is b


def test_effective_definition_operator_merge():
    p = pol("p", definition={"message-ttl": 30000, "max-length": 500, "alternate-exchange": "ae"})
    o = pol("o", definition={"message-ttl": 1000, "max-length": 800, "expires": 100000}, op=True)
    assert effective_definition(p, o) == {"alternate-exchange": "ae", "expires": 100000,
                                          "max-length": 500, "message-ttl": 1000}
    assert list(effective_definition(p, o)) == ["alternate-exchange", "expires", "max-length",
                                                "message-ttl"]
    assert effective_definition(None, None) == {}
    assert effective_definition(None, o) == o.definition


def test_queue_settings_merge_per_key():
    args = {"x-max-length": 1000, "x-overflow": "reject-publish", "x-message-ttl": 10,
            "x-dead-letter-exchange": "argdlx", "x-expires": 50000, "x-max-length-bytes": 10}
    d = {"message-ttl": 30000, "max-length": 500, "overflow": "drop-head",
         "dead-letter-exchange": "poldlx", "dead-letter-routing-key": "rk", "expires": 60000,
         "max-length-bytes": 5}
    o = queue_settings(args, d)
    assert o.max_length == 500          # lower wins
    assert o.message_ttl == 10          # lower wins
    assert o.expires == 50000           # lower wins
    assert o.max_bytes == 5             # lower wins
    assert o.overflow == "reject-publish"   # argument wins
    assert o.dlx == "argdlx"            # argument wins
    assert o.dlrk == "rk"               # policy fills what the arguments lack
    o = queue_settings({}, d)
    assert (o.max_length, o.overflow, o.dlx, o.expires) == (500, "drop-head", "poldlx", 60000)
    assert queue_settings({"x-max-priority": 5}, {"max-length": 1}).max_priority == 5


def test_alternate_exchange_argument_wins():
    assert alternate_exchange({"alternate-exchange": "arg"}, {"alternate-exchange": "pol"}) \
        == "arg"
    assert alternate_exchange({}, {"alternate-exchange": "pol"}) == "pol"
    assert alternate_exchange(None, {}) is None


# ---- a queue's settings changed live (in-process, no broker) ----

def _queue(args=None):
    from syncmq.broker.queue import Queue
    return Queue("/", "q", False, None, False, args)


def _msg(body=b"x"):
    from syncmq.broker.message import Message
    return Message("", "q", b"\x00\x00", body)


def test_set_policy_drop_head_at_once_and_clear_lifts():
    q = _queue()
    for _ in range(5):
        q.publish(_msg())
    q.set_policy(pol("p", definition={"max-length": 2}), None)
    assert len(q.ready) == 2 and q.options.max_length == 2 and not q.batchable
    q._check()
    q.set_policy(None, None)
    assert q.options.max_length is None and q.batchable
    for _ in range(3):
        q.publish(_msg())
    assert len(q.ready) == 5


def test_set_policy_reject_publish_keeps_what_is_there():
    from syncmq.broker.queue import REFUSED
    q = _queue({"x-overflow": "reject-publish"})
    for _ in range(5):
        q.publish(_msg())
    q.set_policy(pol("p", definition={"max-length": 2}), None)
    assert len(q.ready) == 5
    assert q.publish(_msg()) == REFUSED


def test_max_length_bytes_newly_in_force_counts_ready_bytes():
    q = _queue()
    for body in (b"aaaa", b"bbbb", b"cccc"):
        q.publish(_msg(body))
    assert q.ready_bytes == 12  # always counted (/api/queues message_bytes_ready)
    q.set_policy(pol("p", definition={"max-length-bytes": 10}), None)
    assert len(q.ready) == 2 and q.ready_bytes == 8
    q._check()
    q.set_policy(None, None)
    assert q.ready_bytes == 8  # the limit is gone, the count stays right
    q._check()


def test_run_of_held_back_publishes_meets_a_new_limit():
    """publish_many on a queue a policy made non-batchable applies the new limit."""
    q = _queue()
    assert q.batchable
    q.set_policy(pol("p", definition={"max-length": 2, "message-ttl": 60000}), None)
    q.publish_many([_msg() for _ in range(5)])
    assert len(q.ready) == 2 and len(q.expiry) == 2
    q._check()


def test_ttl_policy_applies_to_later_messages_only():
    q = _queue()
    q.publish(_msg())
    q.set_policy(pol("p", definition={"message-ttl": 0}), None)
    assert len(q.ready) == 1 and not q.expiry  # the old message has no deadline
    q.publish(_msg())  # TTL 0, no consumer, no DLX: discarded at once (behind the old one)
    assert len(q.ready) == 1 and q.stats_expired == 1
    q._check()


def test_registry_preload_then_restore_matches_nothing_again():
    """Recovery: the journaled policies are in the tables before the objects are restored
    (each object gets its policy at creation); the store's restore applying the same values
    afterwards re-matches nothing (one vhost sweep per policy otherwise)."""
    import json

    from syncmq.broker.policy_registry import PolicyRegistry
    from syncmq.broker.vhost import VirtualHost

    vhosts: dict = {}
    reg = PolicyRegistry(lambda: vhosts)
    value = {"pattern": "^q", "definition": {"message-ttl": 5, "max-length": 2},
             "priority": 0, "apply-to": "all"}
    assert reg.preload([("/", "policy", "p", json.dumps(value).encode()),
                        ("/", "operator_policy", "bad", b"{}"),
                        ("/", "shovel", "s", b"{}")]) == 1
    vh = vhosts["/"] = VirtualHost("/", policies=reg)
    q = vh.restore_queue("q1", False, {})
    assert q.policy.name == "p" and q.message_ttl == 5 and q.max_length == 2
    restored = json.loads(json.dumps(value))
    assert reg.apply("policy", "/", "p", restored) == 0
    assert reg.apply("policy", "/", "p", {**restored, "priority": 1}) == 1
    assert q.policy.priority == 1


def test_registry_same_value_text_only_counts_as_unchanged():
    """1 and 1.0 are equal in Python but not the same value (the listing shows it as set)."""
    from syncmq.broker.policy_registry import PolicyRegistry

    reg = PolicyRegistry(lambda: {})
    value = {"pattern": "^q", "definition": {"max-length": 2}, "priority": 1, "apply-to": "all"}
    reg.apply("policy", "/", "p", value)
    reg.apply("policy", "/", "p", {**value, "priority": 1.0})
    assert reg.get("policy", "/", "p").listing()["priority"] == 1.0
    assert str(reg.get("policy", "/", "p").listing()["priority"]) == "1.0"


def test_policy_trim_catches_up_a_queue_behind_its_consumers():
    """Credit flow: a queue behind its (stuck) consumers whose backlog a policy's lower
    ``max-length`` drops below ``flow_low`` tells its waiting publishers at once (no
    delivery will come to do it); so does a backlog that expires."""
    from syncmq.broker.flow import FlowLimits

    told = []

    class Waiter:
        def queue_caught_up(self, queue):
            told.append(queue)

    for args in (None, {"x-message-ttl": 60000}):
        q = _queue(args)
        q._set_flow_limits(FlowLimits(4))  # behind above 4, caught up at 2
        for _ in range(10):
            q.publish(_msg())
        q.behind = True  # as a publish leaves it with consumers that take nothing
        told.clear()
        assert q.wait_for_credit(Waiter())
        if args is None:
            q.set_policy(pol("p", definition={"max-length": 2}), None)
        else:
            for seq in q.expiry:
                q.expiry[seq] = 0.0  # every deadline passed
            q._ttl_timer()
        assert not q.behind and told == [q], args
        q._check()


def test_dead_letters_go_where_the_policy_in_force_under_the_lock_sends_them():
    """A policy change landing right after the queue lock is released (before the dead
    letters made under it are published) changes neither their exchange nor their key: both
    come from one snapshot taken under the lock (they used to be read from the queue after it,
    one at a time, so a change in between could split them across two policies)."""
    from syncmq.broker.queue import Queue

    class Host:  # the queue's owner, as far as dead-lettering goes
        body_store = flow_limits = None

        def __init__(self):
            self.published = []

        def dead_letter(self, source, letters, dlx, dlrk):
            self.published.append((dlx, dlrk, len(letters)))

    new = pol("p", definition={"max-length": 2, "dead-letter-exchange": "dlx-b",
                               "dead-letter-routing-key": "rk-b"})

    class RacedQueue(Queue):
        __slots__ = ("raced",)

        def _publish_letters(self, letters, target):
            if not getattr(self, "raced", False):  # the change lands now, once
                self.raced = True
                self.set_policy(new, None)
            super()._publish_letters(letters, target)

    host = Host()
    q = RacedQueue("/", "q", False, None, False, None, None, host)
    q.set_policy(pol("p", definition={"max-length": 2, "dead-letter-exchange": "dlx-a",
                                      "dead-letter-routing-key": "rk-a"}), None)
    for _ in range(3):
        q.publish(_msg())  # the third drops the head: a dead letter made under "a"
    assert host.published == [("dlx-a", "rk-a", 1)]
    assert (q.options.dlx, q.options.dlrk) == ("dlx-b", "rk-b")
    q.publish(_msg())  # made under "b" now
    assert host.published[-1] == ("dlx-b", "rk-b", 1)
