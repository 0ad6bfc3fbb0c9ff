"""Differential fuzzer: a Hypothesis state machine generates sequences of AMQP operations and
runs each one on the private RabbitMQ node (tests/interop/conftest.py) and on syncmq, and every
reply must be the same (the driver, ``diff_fuzz_driver.py``, says what is compared and how
names are normalised).

The operations: queue and exchange declare (every kind and flag, passive with mismatched
flags, x-arguments, server-named queues, ``amq.*`` names), delete (if-unused, if-empty),
purge, bind and unbind (queue and exchange-to-exchange, headers arguments), publish (every
property, mandatory) to every kind of exchange, get, consume and cancel (exclusive, no-ack,
priority), qos (per consumer and global), ack/nack/reject (multiple, requeue), recover, tx
select/commit/rollback, confirm select, channel flow, channel and connection close at any
point; two connections of two channels each, so exclusive and auto-delete lifecycles cross
connections.

Size: ``SYNCMQ_DIFF_FUZZ_EXAMPLES`` sequences (default 50, about 30 s in CI) of at most
``SYNCMQ_DIFF_FUZZ_STEPS`` steps (default 25); ``bench/diff_fuzz.py`` runs a long one and
prints its count. Shrunk failures stay below as explicit sequences (``REGRESSIONS``), replayed
every run; a difference syncmq keeps on purpose is matched by ``KNOWN_DIFFERENCES`` (and
listed in docs/compatibility.md).
"""

from __future__ import annotations

import collections
import os
import pprint

import pytest

pytest.importorskip("pika", reason="pika is not installed")
from diff_fuzz_driver import CHANS, CONNS, TAGS, Pair  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)

EXAMPLES = int(os.environ.get("SYNCMQ_DIFF_FUZZ_EXAMPLES", "50"))
STEPS = int(os.environ.get("SYNCMQ_DIFF_FUZZ_STEPS", "25"))
OUTCOMES: collections.Counter = collections.Counter()  # reply kinds seen (bench prints them)

# why syncmq differs there on purpose -> (op kind, predicate(op, rabbit, syncmq)); each is in
# docs/compatibility.md, "Known differences"
KNOWN_DIFFERENCES: dict[str, tuple] = {
    "RabbitMQ's internal backend accepts any new secret; syncmq checks it (530)": (
        "update_secret",
        lambda op, rabbit, syncmq: not op[2] and rabbit == (("ok",), []) and syncmq == (
            ("connection.close", 530,
             "NOT_ALLOWED - New secret was refused by one of the backends"), [])),
}

START = [
    ("declare_queue", 0, 0, "q0", False, False, False, False, ()),
    ("declare_queue", 0, 0, "q1", False, False, False, False, ()),
    ("declare_exchange", 0, 0, "x0", "direct", False, False, False, False, ()),
    ("declare_exchange", 0, 0, "x1", "fanout", False, False, False, False, ()),
    ("bind_queue", 0, 0, "q0", "x0", "k", ()),
    ("bind_queue", 0, 0, "q1", "x1", "", ()),
]
QUEUES = ["q0", "q1", "q2", "srv0", "srv1", "", "amq.q"]
EXCHANGES = ["x0", "x1", "", "amq.direct", "amq.fanout", "amq.topic", "amq.headers",
             "amq.custom"]
KEYS = ["", "k", "a.b", "a.*", "#", "q0", "q1", "srv0"]
TYPES = ["direct", "fanout", "topic", "headers"]

# most operations on the first channel, so that acks find deliveries to settle
conn = st.sampled_from([0, 0, 0] + list(range(1, CONNS)))
chan = st.sampled_from([0, 0] + list(range(1, CHANS)))
flag = st.booleans()
queue = st.sampled_from(QUEUES)
exchange = st.sampled_from(EXCHANGES)
key = st.sampled_from(KEYS)
rarely_false = st.sampled_from([True] * 5 + [False])  # False ends the connection (540)
rarely_true = st.sampled_from([False] * 3 + [True])
# where most publishes, gets and consumes go: the topology every sequence starts with
TARGETS = [("", "q0"), ("", "q1"), ("x0", "k"), ("x1", ""), ("amq.direct", "q0")]


def _pairs(options: list, max_size: int = 2):
    """A small tuple of (name, value) pairs with distinct names (hashable, printable)."""
    return st.lists(st.sampled_from(options), max_size=max_size,
                    unique_by=lambda kv: kv[0]).map(tuple)


queue_args = _pairs([
    ("x-message-ttl", 0), ("x-message-ttl", 60000), ("x-max-length", 1), ("x-max-length", 2),
    ("x-overflow", "reject-publish"), ("x-overflow", "drop-head"), ("x-max-priority", 3),
    ("x-dead-letter-exchange", "x0"), ("x-dead-letter-exchange", "amq.fanout"),
    ("x-dead-letter-routing-key", "q1"), ("x-single-active-consumer", True),
    ("x-queue-type", "classic"), ("x-expires", 600000), ("x-bogus", 1),
])
exchange_args = _pairs([("alternate-exchange", "x1"), ("alternate-exchange", "amq.fanout")], 1)
binding_args = _pairs([("x-match", "all"), ("x-match", "any"), ("a", 1), ("b", "v")], 3)
headers = _pairs([("a", 1), ("b", "v"), ("c", True), ("CC", "q1")], 3)
properties = st.fixed_dictionaries({}, optional={
    "content_type": st.sampled_from(["text/plain", "application/json"]),
    "content_encoding": st.just("utf-8"),
    "headers": headers,
    "delivery_mode": st.sampled_from([1, 2]),
    "priority": st.integers(0, 5),
    "correlation_id": st.just("c1"),
    "reply_to": st.sampled_from(["q1", "amq.rabbitmq.reply-to"]),
    "expiration": st.sampled_from(["0", "60000", "bad"]),
    "message_id": st.just("m1"),
    "timestamp": st.just(1700000000),
    "type": st.just("t"),
    "user_id": st.sampled_from(["guest", "someone"]),
    "app_id": st.just("fuzz"),
}).map(lambda d: tuple(sorted(d.items())))


def known(op: tuple, rabbit: tuple, syncmq: tuple) -> str | None:
    for reason, (kind, pred) in KNOWN_DIFFERENCES.items():
        if op[0] == kind and pred(op, rabbit, syncmq):
            OUTCOMES[("known difference", reason)] += 1
            return reason
    return None


def check_step(pair: Pair, op: tuple) -> None:
    rabbit, syncmq = pair.step(op)
    OUTCOMES["steps"] += 1
    OUTCOMES[(op[0], rabbit[0][0], *(rabbit[0][1:2] if rabbit[0][0] != "ok" else ()))] += 1
    if rabbit != syncmq and known(op, rabbit, syncmq) is None:
        raise AssertionError(
            f"step {pair.n}: {op!r}\n--- RabbitMQ\n{pprint.pformat(rabbit)}\n"
            f"--- syncmq\n{pprint.pformat(syncmq)}")


class DiffMachine(RuleBasedStateMachine):
    """One rule per operation; each builds an op tuple and runs it on both brokers."""

    ports: tuple[int, int] = (0, 0)

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(*self.ports)
        OUTCOMES["sequences"] += 1

    def teardown(self) -> None:
        self.pair.cleanup()

    def do(self, *op) -> None:
        check_step(self.pair, op)

    @initialize()
    def topology(self):
        """q0 and q1, direct x0 -> q0 (key k), fanout x1 -> q1: a world where most
        generated operations act on something."""
        for op in START:
            self.do(*op)

    @rule(c=conn, n=chan, dest=st.sampled_from(TARGETS), props=properties,
          mandatory=rarely_true)
    def publish_to_queue(self, c, n, dest, props, mandatory):
        self.do("publish", c, n, *dest, str(self.pair.n).encode(), props, mandatory)

    @rule(c=conn, n=chan, q=st.sampled_from(["q0", "q1"]), auto_ack=flag)
    def get_from_queue(self, c, n, q, auto_ack):
        self.do("get", c, n, q, auto_ack)

    @rule(c=conn, n=chan, q=st.sampled_from(["q0", "q1"]), tag=st.integers(0, TAGS - 1),
          auto_ack=flag, cancel=flag)
    def consume_queue(self, c, n, q, tag, auto_ack, cancel):
        if cancel:
            self.do("cancel", c, n, f"ct{tag}")
        else:
            self.do("consume", c, n, q, f"ct{tag}", auto_ack, False, ())

    @rule(c=conn, n=chan, q=queue, passive=rarely_true, durable=rarely_true,
          exclusive=rarely_true, auto_delete=rarely_true, args=queue_args)
    def declare_queue(self, c, n, q, passive, durable, exclusive, auto_delete, args):
        self.do("declare_queue", c, n, q, passive, durable, exclusive, auto_delete, args)

    @rule(c=conn, n=chan, q=queue, if_unused=flag, if_empty=flag)
    def delete_queue(self, c, n, q, if_unused, if_empty):
        self.do("delete_queue", c, n, q, if_unused, if_empty)

    @rule(c=conn, n=chan, q=queue)
    def purge(self, c, n, q):
        self.do("purge", c, n, q)

    @rule(c=conn, n=chan, q=queue, x=exchange, rk=key, args=binding_args, unbind=flag)
    def bind_queue(self, c, n, q, x, rk, args, unbind):
        self.do("unbind_queue" if unbind else "bind_queue", c, n, q, x, rk, args)

    @rule(c=conn, n=chan, x=exchange, type_=st.sampled_from(TYPES * 3 + ["x-bogus"]),
          passive=rarely_true, durable=rarely_true, auto_delete=rarely_true,
          internal=rarely_true, args=exchange_args)
    def declare_exchange(self, c, n, x, type_, passive, durable, auto_delete, internal, args):
        self.do("declare_exchange", c, n, x, type_, passive, durable, auto_delete, internal,
                args)

    @rule(c=conn, n=chan, x=exchange, if_unused=flag)
    def delete_exchange(self, c, n, x, if_unused):
        self.do("delete_exchange", c, n, x, if_unused)

    @rule(c=conn, n=chan, dest=exchange, src=exchange, rk=key, unbind=flag)
    def bind_exchange(self, c, n, dest, src, rk, unbind):
        self.do("unbind_exchange" if unbind else "bind_exchange", c, n, dest, src, rk)

    @rule(c=conn, n=chan, x=exchange, rk=key, body=st.sampled_from([b"", b"a", b"b" * 300]),
          props=properties, mandatory=flag)
    def publish(self, c, n, x, rk, body, props, mandatory):
        self.do("publish", c, n, x, rk, body + str(self.pair.n).encode(), props, mandatory)

    @rule(c=conn, n=chan, q=queue, auto_ack=flag)
    def get(self, c, n, q, auto_ack):
        self.do("get", c, n, q, auto_ack)

    @rule(c=conn, n=chan, q=queue, tag=st.integers(0, TAGS - 1), auto_ack=flag,
          exclusive=flag, args=_pairs([("x-priority", 1), ("x-priority", "high")], 1))
    def consume(self, c, n, q, tag, auto_ack, exclusive, args):
        self.do("consume", c, n, q, f"ct{tag}", auto_ack, exclusive, args)

    @rule(c=conn, n=chan, count=st.integers(0, 3), global_qos=flag)
    def qos(self, c, n, count, global_qos):
        self.do("qos", c, n, count, global_qos)

    @rule(c=conn, n=chan, idx=st.integers(0, 3), multiple=flag,
          how=st.sampled_from(["ack", "nack", "nack-drop", "reject", "reject-drop"]))
    def settle(self, c, n, idx, multiple, how):
        if how == "ack":
            self.do("ack", c, n, idx, multiple)
        elif how.startswith("nack"):
            self.do("nack", c, n, idx, multiple, how == "nack")
        else:
            self.do("reject", c, n, idx, how == "reject")

    @rule(c=conn, n=chan, q=st.sampled_from(["q0", "q1"]), idx=st.integers(0, 2),
          multiple=flag, how=st.sampled_from(["ack", "nack", "nack-drop", "reject", "reject-drop"]))
    def get_and_settle(self, c, n, q, idx, multiple, how):
        """Publish two, get two, then settle one of the channel's outstanding deliveries."""
        for _ in range(2):
            self.do("publish", c, n, "", q, str(self.pair.n).encode(), (), False)
        self.do("get", c, n, q, False)
        self.do("get", c, n, q, False)
        self.settle(c, n, idx, multiple, how)

    @rule(c=conn, right=rarely_false)
    def update_secret(self, c, right):
        self.do("update_secret", c, right)

    @rule(c=conn, n=chan, requeue=rarely_false)
    def recover(self, c, n, requeue):
        self.do("recover", c, n, requeue)

    @rule(c=conn, n=chan, what=st.sampled_from(["tx_select", "tx_commit", "tx_rollback",
                                                 "confirm_select", "close_channel", "flow",
                                                 "flow-off", "close_connection"]))
    def channel_mode(self, c, n, what):
        if what == "close_connection":
            self.do(what, c)
        elif what.startswith("flow"):
            self.do("flow", c, n, what == "flow")
        else:
            self.do(what, c, n)


def test_differential_fuzz(rabbitmq, broker):
    DiffMachine.ports = (rabbitmq.port, broker.port)
    try:
        run_state_machine_as_test(DiffMachine, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
            suppress_health_check=list(HealthCheck)))
    finally:
        print(f"\ndifferential fuzz: {OUTCOMES['sequences']} sequences (shrinking included), "
              f"{OUTCOMES['steps']} steps")
        if os.environ.get("SYNCMQ_DIFF_FUZZ_VERBOSE"):
            pprint.pprint(OUTCOMES.most_common())
    assert not broker.tracebacks(), broker.log_tail()


# Shrunk sequences the fuzzer found; each ran differently on syncmq before its fix.
REGRESSIONS: dict[str, list[tuple]] = {
    # 406 text: RabbitMQ compares only alternate-exchange, and names it
    "exchange_redeclare_other_alternate_exchange": [
        ("declare_exchange", 0, 0, "amq.direct", "direct", False, True, False, False,
         (("alternate-exchange", "x1"),)),
    ],
    # a classic queue is compared on RabbitMQ's own x-arguments only, in its order
    "queue_redeclare_compares_known_arguments": [
        ("declare_queue", 0, 0, "q0", False, False, False, True, ()),
        ("declare_queue", 0, 0, "q0", False, False, False, True, (("x-bogus", 1),)),
        ("declare_queue", 0, 0, "q0", False, False, False, True, (("x-queue-type", "classic"),)),
        ("declare_queue", 0, 0, "q0", False, False, False, True,
         (("x-max-length", 1), ("x-message-ttl", 0))),
    ],
    # a passive declare of "" is 404 "no queue ''", not the channel's last queue
    "passive_declare_of_empty_name": [
        ("declare_queue", 0, 0, "q0", False, False, True, False, ()),
        ("declare_queue", 0, 0, "", True, False, False, False, ()),
    ],
    # the known difference is recognised, and both go on from the same state (the
    # unacked message requeued on both)
    "update_secret_wrong_is_a_known_difference": [
        ("declare_queue", 0, 0, "q0", False, False, False, False, ()),
        ("publish", 0, 0, "", "q0", b"m", (), False),
        ("get", 0, 0, "q0", False),
        ("update_secret", 0, True),
        ("update_secret", 0, False),
        ("get", 0, 0, "q0", False),
    ],
    # get-ok's message_count leaves out a message expired behind the one fetched
    "get_count_after_expired_behind_head": [
        ("declare_queue", 0, 0, "q0", False, False, False, False, ()),
        ("publish", 0, 0, "", "q0", b"kept", (), False),
        ("publish", 0, 0, "", "q0", b"expires", (("expiration", "0"),), False),
        ("get", 0, 0, "q0", False),
    ],
    # a global basic.qos starts its count from every unacked delivery, gets included
    "global_prefetch_counts_unacked_get": [
        *START,
        ("publish", 0, 0, "", "q0", b"got", (), False),
        ("get", 0, 0, "q0", False),
        ("consume", 0, 0, "q0", "ct0", False, False, ()),
        ("qos", 0, 0, 1, True),
        ("publish", 0, 0, "", "q0", b"held back", (), False),
        ("ack", 0, 0, 0, False),
        ("publish", 0, 0, "", "q0", b"behind", (), False),
    ],
    # a per-consumer basic.qos lifts the channel's global limit
    "per_consumer_qos_unlimits_global": [
        *START,
        ("publish", 0, 0, "", "q0", b"got", (), False),
        ("get", 0, 0, "q0", False),
        ("consume", 0, 0, "q0", "ct0", False, False, ()),
        ("qos", 0, 0, 1, True),
        ("publish", 0, 0, "", "q0", b"held", (), False),
        ("qos", 0, 0, 0, False),
    ],
    # queue.delete if-empty and if-unused: "not empty" is checked first
    "queue_delete_not_empty_before_in_use": [
        *START,
        ("publish", 0, 0, "", "q0", b"m", (), False),
        ("consume", 0, 1, "q1", "ct0", False, False, ()),
        ("consume", 0, 1, "q0", "ct1", False, False, ()),
        ("publish", 0, 0, "", "q0", b"n", (), False),
        ("qos", 0, 1, 1, True),
        ("publish", 0, 0, "", "q0", b"o", (), False),
        ("delete_queue", 0, 0, "q0", True, True),
    ],
    # ... and basic.recover frees only what consumers held
    "global_prefetch_recover_keeps_get_counted": [
        *START,
        ("publish", 0, 0, "", "q0", b"got", (), False),
        ("get", 0, 0, "q0", False),
        ("qos", 0, 0, 1, True),
        ("consume", 0, 0, "q0", "ct0", False, False, ()),
        ("recover", 0, 0, True),
    ],
    # basic.publish checks direct reply-to before user-id
    "publish_fast_reply_checked_before_user_id": [
        ("publish", 0, 0, "amq.direct", "", b"2",
         (("reply_to", "amq.rabbitmq.reply-to"), ("user_id", "someone")), False),
    ],
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression(rabbitmq, broker, name):
    pair = Pair(rabbitmq.port, broker.port)
    try:
        for op in REGRESSIONS[name]:
            check_step(pair, op)
    finally:
        pair.cleanup()
