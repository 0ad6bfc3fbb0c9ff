"""Policy scripts run the same way against syncmq and against a RabbitMQ node (issue #16):
each returns a transcript (effective definitions, depths, acks/nacks, dead letters, reply
codes and texts) that tests/test_policies_live.py checks on syncmq and
tests/interop/test_policies_differential.py compares with RabbitMQ 3.10.8's.

A ``Target`` is one broker: its AMQP and management ports and how to read a queue's
policy, operator policy and effective definition (syncmq: ``/api/queues``; RabbitMQ:
``rabbitmqctl eval``, since its API shows them only after the next stats emission).

RabbitMQ applies a policy to its queues asynchronously (the PUT returns, then each queue
process gets ``policy_changed``), and dead letters reach their queue asynchronously, so a
count that depends on them is read with ``settled(fn, expected)``: read until it equals the
scenario's expectation or 15 s pass, then record what was read (a broker that never gets
there shows its own figure in the transcript).
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import quote

import pika
import pika.exceptions

SETTLE = 15.0


class Target:
    def __init__(self, port: int, mgmt_port: int,
                 inspect: Callable[[str], dict] | None = None) -> None:
        self.port, self.mgmt_port = port, mgmt_port
        self._inspect = inspect
        self.auth = ("guest", "guest")  # the management API's user

    def http(self, method: str, path: str, body=None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.mgmt_port}/api{path}",
                                     data=data, method=method)
        token = base64.b64encode(":".join(self.auth).encode()).decode()
        req.add_header("Authorization", "Basic " + token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode()
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.port, credentials=pika.PlainCredentials("guest", "guest"),
            blocked_connection_timeout=60))

    def inspect_all(self) -> dict:
        """{queue name: inspect(queue)} for every queue of vhost / (one read)."""
        if self._inspect is not None:
            return self._inspect(None)
        st, qs = self.http("GET", "/queues/%2F")
        assert st == 200, (st, qs)
        return {q["name"]: {"policy": q["policy"], "operator_policy": q["operator_policy"],
                            "effective": q["effective_policy_definition"]} for q in qs}

    def inspect(self, queue: str) -> dict:
        """{"policy", "operator_policy", "effective"} of a queue in vhost /."""
        if self._inspect is not None:
            return self._inspect(queue)
        st, q = self.http("GET", f"/queues/%2F/{quote(queue, safe='')}")
        assert st == 200, (st, q)
        return {"policy": q["policy"], "operator_policy": q["operator_policy"],
                "effective": q["effective_policy_definition"]}


def settled(read: Callable[[], object], expected: object) -> object:
    deadline = time.monotonic() + SETTLE
    while True:
        got = read()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)  # another broker's asynchronous step; nothing to wait on


class Script:
    """One scenario's helpers and transcript."""

    def __init__(self, t: Target, prefix: str) -> None:
        self.t, self.p = t, prefix
        self.conn = t.connect()
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.out: list = []
        self.policies: list[tuple[str, str]] = []

    def close(self) -> None:
        for kind, name in self.policies:
            self.t.http("DELETE", f"/{kind}/%2F/{quote(name, safe='')}")
        try:
            self.conn.close()
        except pika.exceptions.AMQPError:
            pass

    def note(self, *item) -> None:
        self.out.append(item if len(item) > 1 else item[0])

    def put(self, name: str, pattern: str, definition: dict, priority: int = 0,
            apply_to: str = "all", kind: str = "policies") -> int:
        st, _ = self.t.http("PUT", f"/{kind}/%2F/{quote(name, safe='')}",
                            {"pattern": pattern, "definition": definition,
                             "priority": priority, "apply-to": apply_to})
        self.policies.append((kind, name))
        return st

    def delete(self, name: str, kind: str = "policies") -> int:
        return self.t.http("DELETE", f"/{kind}/%2F/{quote(name, safe='')}")[0]

    def depth(self, queue: str) -> int:
        return self.ch.queue_declare(queue, passive=True).method.message_count

    def depth_is(self, queue: str, expected: int) -> int:
        return settled(lambda: self.depth(queue), expected)

    def publish(self, queue: str, n: int, body: bytes = b"m", exchange: str = "") -> tuple:
        """n confirmed publishes: (acked, nacked)."""
        acked = nacked = 0
        for _ in range(n):
            try:
                self.ch.basic_publish(exchange, queue, body)
                acked += 1
            except pika.exceptions.NackError:
                nacked += 1
        return acked, nacked

    def policy_of(self, queue: str, expected_policy: str | None) -> dict:
        """The queue's policy fields, once its policy is ``expected_policy``."""
        settled(lambda: self.t.inspect(queue)["policy"], expected_policy)
        return self.t.inspect(queue)

    def gone(self, queue: str) -> bool:
        """Wait for the queue to be deleted (expires); True if it went. Read through the
        management API: a passive declare renews the lease on syncmq (not on RabbitMQ)."""
        path = f"/queues/%2F/{quote(queue, safe='')}"
        return settled(lambda: self.t.http("GET", path)[0] == 404, True)


# ---- the scenarios ----

def issue_example(s: Script) -> None:
    """Issue #16's report: policy before the queue, the queue's own limit higher."""
    q = f"{s.p}orders.limited"
    s.note("put", s.put(f"{s.p}limit", f"^{s.p}orders\\.limited$",
                        {"message-ttl": 30000, "max-length": 500}))
    s.ch.queue_declare(q, durable=True, arguments={"x-max-length": 1000,
                                                   "x-overflow": "reject-publish"})
    s.note("policy", s.policy_of(q, f"{s.p}limit"))
    s.note("publish", s.publish(q, 600))
    s.note("depth", s.depth(q))


def after_queue_drop_head(s: Script) -> None:
    """A policy set on a queue that has messages: drop-head dead-letters the excess at once;
    clearing it lifts the limit."""
    q, dlx, dlq = f"{s.p}q", f"{s.p}dlx", f"{s.p}dlq"
    s.ch.exchange_declare(dlx, "fanout")
    s.ch.queue_declare(dlq)
    s.ch.queue_bind(dlq, dlx)
    s.ch.queue_declare(q)
    s.note("publish", s.publish(q, 10))
    s.note("put", s.put(f"{s.p}p", f"^{s.p}q$", {"max-length": 3, "dead-letter-exchange": dlx}))
    s.note("depth", s.depth_is(q, 3), s.depth_is(dlq, 7))
    s.note("policy", s.policy_of(q, f"{s.p}p"))
    s.note("delete", s.delete(f"{s.p}p"), s.delete(f"{s.p}p"))
    s.note("publish", s.publish(q, 5))
    s.note("depth", s.depth_is(q, 8), s.depth(dlq))
    s.note("policy", s.policy_of(q, None))


def priorities(s: Script) -> None:
    """Two overlapping policies: the higher priority applies; deleting it brings the other."""
    q = f"{s.p}prio"
    s.note("put", s.put(f"{s.p}low", f"^{s.p}prio", {"max-length": 5}, priority=1),
           s.put(f"{s.p}high", f"^{s.p}pr", {"max-length": 2}, priority=2))
    s.ch.queue_declare(q)
    s.note("policy", s.policy_of(q, f"{s.p}high"))
    s.note("publish", s.publish(q, 10))
    s.note("depth", s.depth(q))
    s.note("delete", s.delete(f"{s.p}high"))
    s.note("policy", s.policy_of(q, f"{s.p}low"))
    s.note("publish", s.publish(q, 10))
    s.note("depth", s.depth_is(q, 5))


def _limited(s: Script, name: str, args: dict, definition: dict, n: int = 10,
             body: bytes = b"m") -> None:
    q = f"{s.p}{name}"
    s.put(f"{s.p}{name}-p", f"^{s.p}{name}$", definition)
    s.ch.queue_declare(q, arguments=args)
    s.note(name, s.policy_of(q, f"{s.p}{name}-p")["effective"], s.publish(q, n, body),
           s.depth(q))


def argument_vs_policy(s: Script) -> None:
    """Each key with both an x-argument and a policy value, as RabbitMQ resolves it."""
    _limited(s, "ml-a", {"x-max-length": 5}, {"max-length": 3})
    _limited(s, "ml-b", {"x-max-length": 3}, {"max-length": 5})
    _limited(s, "mlb-a", {"x-max-length-bytes": 10}, {"max-length-bytes": 20}, body=b"1234")
    _limited(s, "mlb-b", {"x-max-length-bytes": 20}, {"max-length-bytes": 10}, body=b"1234")
    _limited(s, "ttl-a", {"x-message-ttl": 60000}, {"message-ttl": 0}, n=3)
    _limited(s, "ttl-b", {"x-message-ttl": 0}, {"message-ttl": 60000}, n=3)
    _limited(s, "ttl-c", {}, {"message-ttl": 60000}, n=3)
    _limited(s, "ovf-a", {"x-overflow": "reject-publish"},
             {"overflow": "drop-head", "max-length": 2})
    _limited(s, "ovf-b", {"x-overflow": "drop-head"},
             {"overflow": "reject-publish", "max-length": 2})
    _limited(s, "ovf-c", {}, {"overflow": "reject-publish", "max-length": 2})
    # dead-letter-exchange: the argument wins
    for x in ("dlxa", "dlxb"):
        s.ch.exchange_declare(f"{s.p}{x}", "fanout")
        s.ch.queue_declare(f"{s.p}{x}-q")
        s.ch.queue_bind(f"{s.p}{x}-q", f"{s.p}{x}")
    _limited(s, "dlx", {"x-dead-letter-exchange": f"{s.p}dlxa"},
             {"dead-letter-exchange": f"{s.p}dlxb", "max-length": 1}, n=3)
    s.note("dlx-letters", s.depth_is(f"{s.p}dlxa-q", 2), s.depth(f"{s.p}dlxb-q"))
    # dead-letter-routing-key: the argument wins
    rx = f"{s.p}rkx"
    s.ch.exchange_declare(rx, "direct")
    for rk in ("ra", "rb"):
        s.ch.queue_declare(f"{s.p}{rk}")
        s.ch.queue_bind(f"{s.p}{rk}", rx, rk)
    _limited(s, "dlrk", {"x-dead-letter-exchange": rx, "x-dead-letter-routing-key": "ra"},
             {"dead-letter-routing-key": "rb", "max-length": 1}, n=3)
    _limited(s, "dlrk-pol", {"x-dead-letter-exchange": rx},
             {"dead-letter-routing-key": "rb", "max-length": 1}, n=3)
    s.note("dlrk-letters", s.depth_is(f"{s.p}ra", 2), s.depth_is(f"{s.p}rb", 2))


def expires_lower_wins(s: Script) -> None:
    """``expires``: the lower of argument and policy, either way round."""
    for name, args, d in (("exp-a", {"x-expires": 200}, {"expires": 3600000}),
                          ("exp-b", {"x-expires": 3600000}, {"expires": 200})):
        s.put(f"{s.p}{name}-p", f"^{s.p}{name}$", d)
        s.ch.queue_declare(f"{s.p}{name}", arguments=args)
        s.note(name, s.gone(f"{s.p}{name}"))


def alternate_exchange(s: Script) -> None:
    """``alternate-exchange`` on exchanges: the argument wins, else the policy's."""
    for ae in ("aea", "aeb"):
        s.ch.exchange_declare(f"{s.p}{ae}", "fanout")
        s.ch.queue_declare(f"{s.p}{ae}-q")
        s.ch.queue_bind(f"{s.p}{ae}-q", f"{s.p}{ae}")
    s.note("put", s.put(f"{s.p}ae", f"^{s.p}x", {"alternate-exchange": f"{s.p}aeb"},
                        apply_to="exchanges"))
    s.ch.exchange_declare(f"{s.p}x1", "direct",
                          arguments={"alternate-exchange": f"{s.p}aea"})
    s.ch.exchange_declare(f"{s.p}x2", "direct")
    s.note("publish", s.publish("nowhere", 1, exchange=f"{s.p}x1"),
           s.publish("nowhere", 2, exchange=f"{s.p}x2"))
    s.note("routed", s.depth_is(f"{s.p}aea-q", 1), s.depth_is(f"{s.p}aeb-q", 2))
    st, ex = s.t.http("GET", f"/exchanges/%2F/{s.p}x2")
    s.note("exchange-policy", st, ex.get("policy"))
    s.note("delete", s.delete(f"{s.p}ae"))
    s.note("publish", s.publish("nowhere", 1, exchange=f"{s.p}x2"))
    s.note("routed", s.depth(f"{s.p}aeb-q"))


def operator_vs_user(s: Script) -> None:
    """An operator policy merged with the user policy by the lower value."""
    q = f"{s.p}op"
    s.note("put", s.put(f"{s.p}user", f"^{s.p}op$", {"max-length": 10, "message-ttl": 60000}),
           s.put(f"{s.p}oper", f"^{s.p}op", {"max-length": 4, "expires": 3600000},
                 kind="operator-policies"))
    s.ch.queue_declare(q)
    s.note("policy", s.policy_of(q, f"{s.p}user"))
    s.note("publish", s.publish(q, 10))
    s.note("depth", s.depth(q))
    s.note("put", s.put(f"{s.p}oper", f"^{s.p}op", {"max-length": 20},
                        kind="operator-policies"))
    s.note("policy", settled(lambda: s.t.inspect(q)["effective"],
                             {"max-length": 10, "message-ttl": 60000}))
    s.note("publish", s.publish(q, 10))
    s.note("depth", s.depth(q))
    s.note("delete", s.delete(f"{s.p}oper", kind="operator-policies"))
    s.note("policy", settled(lambda: s.t.inspect(q),
                             {"policy": f"{s.p}user", "operator_policy": None,
                              "effective": {"max-length": 10, "message-ttl": 60000}}))


def live_reject_publish_and_ttl(s: Script) -> None:
    """A limit lowered under reject-publish keeps what is there and refuses new messages;
    a TTL set live applies to messages published after it."""
    q, t = f"{s.p}rp", f"{s.p}ttl"
    s.ch.queue_declare(q, arguments={"x-overflow": "reject-publish"})
    s.ch.queue_declare(t)
    s.note("publish", s.publish(q, 10), s.publish(t, 5))
    s.note("put", s.put(f"{s.p}rp-p", f"^{s.p}rp$", {"max-length": 3}),
           s.put(f"{s.p}ttl-p", f"^{s.p}ttl$", {"message-ttl": 0}))
    s.policy_of(q, f"{s.p}rp-p")
    s.policy_of(t, f"{s.p}ttl-p")
    s.note("depth", s.depth(q), s.depth(t))
    s.note("publish", s.publish(q, 2), s.publish(t, 1))
    s.note("depth", s.depth(q), s.depth(t))


def dead_letter_strategy(s: Script) -> None:
    """``dead-letter-strategy`` (3.10: quorum queues only): a policy holding it does not
    match a classic queue at all, whichever value (``unsupported_policies``), so neither its
    ``max-length`` nor its dead-letter exchange applies: no policy, 3 messages kept, no
    letters. The waits expect that answer (RabbitMQ's, tests/fixtures/policy_transcripts.json),
    so a right broker costs no settling time (they waited 15 s each for the policy to show
    and for 4 letters, 45 s a broker); a broker that matched the policy shows it at once
    (policies are matched when the queue is declared, after the PUT's reply), keeps 1 of
    the 3 (the depth read follows the confirmed publishes) and its letters follow."""
    dlx, dlq = f"{s.p}dls-x", f"{s.p}dls-q"
    s.ch.exchange_declare(dlx, "fanout")
    s.ch.queue_declare(dlq)
    s.ch.queue_bind(dlq, dlx)
    for strategy in ("at-most-once", "at-least-once"):
        q = f"{s.p}dls-{strategy}"
        s.note("put", s.put(f"{s.p}{strategy}", f"^{q}$", {
            "dead-letter-strategy": strategy, "dead-letter-exchange": dlx, "max-length": 1}))
        s.ch.queue_declare(q)
        s.note(strategy, s.policy_of(q, None), s.publish(q, 3), s.depth(q))
    s.note("letters", s.depth_is(dlq, 0))


def apply_to(s: Script) -> None:
    """``apply-to``: a queues policy never governs an exchange of a matching name, nor an
    exchanges policy a queue, whatever their priorities; ``all`` governs both."""
    q, x = f"{s.p}at-q", f"{s.p}at-x"
    s.ch.exchange_declare(f"{s.p}at-ae", "fanout")
    s.note("put", s.put(f"{s.p}at-queues", f"^{s.p}at-", {"max-length": 1}, priority=1,
                        apply_to="queues"),
           s.put(f"{s.p}at-exchanges", f"^{s.p}at-", {"alternate-exchange": f"{s.p}at-ae"},
                 priority=2, apply_to="exchanges"))
    s.ch.queue_declare(q)
    s.ch.exchange_declare(x, "direct")
    s.note("queue", s.policy_of(q, f"{s.p}at-queues"))
    s.note("exchange", s.t.http("GET", f"/exchanges/%2F/{x}")[1].get("policy"))
    s.note("put", s.put(f"{s.p}at-all", f"^{s.p}at-", {"max-length": 2}, priority=3))
    s.note("queue", s.policy_of(q, f"{s.p}at-all"))
    s.note("exchange", s.t.http("GET", f"/exchanges/%2F/{x}")[1].get("policy"))
    s.note("publish", s.publish(q, 4), s.depth(q))


# one valid value for every policy key RabbitMQ 3.10.8 accepts
EVERY_KEY = {
    "alternate-exchange": "ae", "dead-letter-exchange": "dlx", "dead-letter-routing-key": "rk",
    "dead-letter-strategy": "at-most-once", "message-ttl": 60000, "expires": 3600000,
    "max-length": 100, "max-length-bytes": 100000, "max-in-memory-length": 10,
    "max-in-memory-bytes": 1000, "queue-mode": "lazy", "queue-version": 2,
    "overflow": "reject-publish", "delivery-limit": 5, "max-age": "1D",
    "queue-master-locator": "client-local", "queue-leader-locator": "random",
    "initial-cluster-size": 1, "stream-max-segment-size-bytes": 1000, "ha-mode": "all",
    "federation-upstream-set": "all",
}


def key_applicability(s: Script) -> None:
    """Which policy keys a queue type takes (RabbitMQ 3.10's queue type ``capabilities``):
    a policy with a key the type does not support is skipped for that queue, and the next
    matching policy (here a fallback of priority 0) applies instead."""
    s.put(f"{s.p}fallback", f"^{s.p}ap-", {"max-length": 7})
    names = []
    for i, (key, value) in enumerate(EVERY_KEY.items()):
        s.put(f"{s.p}k{i}", f"^{s.p}ap-{i}-", {key: value}, priority=5)
        s.ch.queue_declare(f"{s.p}ap-{i}-c")
        s.ch.queue_declare(f"{s.p}ap-{i}-q", durable=True,
                           arguments={"x-queue-type": "quorum"})
        names += [(key, "classic", f"{s.p}ap-{i}-c"), (key, "quorum", f"{s.p}ap-{i}-q")]
    got = s.t.inspect_all()
    s.note("applies", [(key, qtype, got[q]["policy"] != f"{s.p}fallback")
                       for key, qtype, q in names])
    for _, _, q in names:
        s.ch.queue_delete(q)


BAD = [
    {"pattern": "^a$", "definition": {"max-priority": 1}},
    {"pattern": "^a$", "definition": {"foo": 1, "bar": "x"}},
    {"pattern": "^a$", "definition": {"max-length": -1}},
    {"pattern": "^a$", "definition": {"message-ttl": "x"}},
    {"pattern": "^a$", "definition": {"expires": 0}},
    {"pattern": "^a$", "definition": {"overflow": "x"}},
    {"pattern": "^a$", "definition": {"single-active-consumer": True}},
    {"pattern": "^a$", "definition": {}},
    {"pattern": "(", "definition": {"max-length": 1}},
    {"pattern": "x", "priority": "a", "definition": {"max-length": 1}},
    {"definition": {"max-length": 1}},
    {"pattern": "^a$", "definition": {"queue-mode": "lazy", "ha-mode": "all",
                                      "delivery-limit": 2, "queue-version": 2}},
    {"pattern": "^a$", "definition": {"delivery-limit": 2}},
    {"pattern": "^a$", "definition": {"queue-version": 3}},
    {"pattern": "^a$", "definition": {"queue-mode": "x"}},
    {"pattern": "^a$", "definition": {"ha-mode": "exactly"}},
    {"pattern": "^a$", "definition": {"ha-params": 2}},
    {"pattern": "^a$", "definition": {"dead-letter-strategy": "at-most-once"}},
    {"pattern": "^a$", "definition": {"dead-letter-strategy": "at-least-once"}},
    {"pattern": "^a$", "definition": {"dead-letter-strategy": "x"}},
    # Erlang's ~p of non-ASCII binaries and floats (syncmq.broker.erlterm)
    {"pattern": "^a$", "definition": {"max-length": "é"}},
    {"pattern": "^a$", "definition": {"max-length": "ā"}},
    {"pattern": "^a$", "definition": {"max-length": 1e3}},
    {"pattern": "^a$", "definition": {"max-length": 0.1}},
    {"pattern": "^a$", "definition": {"max-length": {"é": 1e-5}}},
    {"pattern": "^a$", "definition": {"zz": 100.0, "é": ["中"]}},
]
BAD_OPERATOR = [
    {"pattern": "^a$", "definition": {"overflow": "drop-head"}},
    {"pattern": "^a$", "definition": {"dead-letter-exchange": "x"}},
    {"pattern": "^a$", "definition": {"max-length": 1, "delivery-limit": 1}},
    {"pattern": "^a$", "definition": {"message-ttl": 5, "max-in-memory-length": 1}},
    {"pattern": "^a$", "definition": {"max-priority": 1}},
    {"pattern": "^a$", "definition": {"alternate-exchange": "x"}},
]


def replies(s: Script) -> None:
    """Reply codes and texts of good and bad PUTs, GETs and DELETEs."""
    for i, body in enumerate(BAD):
        s.note("put", s.t.http("PUT", f"/policies/%2F/{s.p}bad{i}", body))
        s.policies.append(("policies", f"{s.p}bad{i}"))
    for i, body in enumerate(BAD_OPERATOR):
        s.note("put-op", s.t.http("PUT", f"/operator-policies/%2F/{s.p}bad{i}", body))
        s.policies.append(("operator-policies", f"{s.p}bad{i}"))
    s.note("put", s.t.http("PUT", f"/policies/{s.p}novhost/x",
                           {"pattern": "a", "definition": {"max-length": 1}}))
    s.note("get", s.t.http("GET", f"/policies/%2F/{s.p}nosuch"))
    s.note("delete", s.t.http("DELETE", f"/policies/%2F/{s.p}nosuch"))
    s.note("put", s.put(f"{s.p}good", "^zz", {"max-length": 1}, priority=7,
                        apply_to="queues"), s.put(f"{s.p}good", "^zz", {"max-length": 2}))
    s.note("get", s.t.http("GET", f"/policies/%2F/{s.p}good"))


SCENARIOS = {f.__name__: f for f in (
    issue_example, after_queue_drop_head, priorities, argument_vs_policy, expires_lower_wins,
    alternate_exchange, operator_vs_user, live_reject_publish_and_ttl, dead_letter_strategy,
    apply_to, key_applicability, replies)}


def normalize(transcript: list) -> list:
    """The transcript with the run's name prefix replaced by ``P-`` (JSON round trip)."""
    return json.loads(re.sub(r'"d[0-9a-f]{6}-', '"P-', json.dumps(transcript)))


def run(t: Target, name: str, prefix: str) -> list:
    s = Script(t, prefix)
    try:
        SCENARIOS[name](s)
    finally:
        s.close()
    return s.out
