"""Policies against RabbitMQ 3.10.8 (issue #16): every script of ``tests/policy_scripts.py``
(policy set before and after queues exist, two overlapping policies with priorities, argument
vs policy for each key, clearing, operator vs user policy, live limits and TTL, the issue's
own example, reply codes and texts) runs against syncmq and against the private RabbitMQ
node; the transcripts (effective definitions, depths, acks/nacks, dead letters, replies)
must be equal. The node's transcripts are also what ``tests/fixtures/policy_transcripts.json``
holds (``test_fixture_is_rabbitmqs`` keeps it true), which tests/test_policies_live.py
checks syncmq against without a RabbitMQ node.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

pytest.importorskip("pika", reason="pika is not installed")
import policy_scripts as ps  # noqa: E402  (tests/ is on sys.path)

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "policy_transcripts.json")
EVAL = ('io:format("~s~n", [rabbit_json:encode([#{name => element(4, amqqueue:get_name(Q)), '
        'policy => rabbit_policy:name(Q), operator_policy => rabbit_policy:name_op(Q), '
        'effective => case rabbit_policy:effective_definition(Q) of undefined -> #{}; '
        'D -> maps:from_list(D) end} || Q <- rabbit_amqqueue:list(<<"/">>)])]), ok.')


def rabbit_inspect(node):
    """A queue's policy fields read from the queue records (``rabbitmqctl eval``): the
    management API shows them only after the next stats emission."""
    def inspect(queue: str | None) -> dict:
        """One queue's fields, or (``queue`` None) {name: fields} of every queue."""
        r = subprocess.run([node.ctl, "-n", node.node, "eval", EVAL], env=node.env,
                           capture_output=True, text=True, timeout=120)
        rows = {row["name"]: {k: None if row[k] == "none" else row[k]
                              for k in ("policy", "operator_policy")}
                | {"effective": row["effective"]} for row in json.loads(r.stdout.splitlines()[0])}
        return rows if queue is None else rows[queue]
    return inspect


@pytest.fixture(scope="module")
def rabbit_target(rabbitmq):
    from test_rabbitmqadmin import rabbit_mgmt  # noqa: F401  (waits for the plugin)
    ps.Target(rabbitmq.port, rabbitmq.management_port)  # ports known once started
    import time
    deadline = time.monotonic() + 120
    t = ps.Target(rabbitmq.port, rabbitmq.management_port, rabbit_inspect(rabbitmq))
    while True:
        try:
            if t.http("GET", "/overview")[0] == 200:
                return t
        except OSError:
            pass
        assert time.monotonic() < deadline, "RabbitMQ's management plugin never answered"
        time.sleep(0.2)  # polling a port another process opens; nothing to wait on


def _run(t: ps.Target, name: str) -> list:
    return ps.normalize(ps.run(t, name, f"d{uuid.uuid4().hex[:6]}-"))


@pytest.mark.parametrize("name", list(ps.SCENARIOS))
def test_same_as_rabbitmq(broker, rabbit_target, name):
    ours = _run(ps.Target(broker.port, broker.management_port), name)
    theirs = _run(rabbit_target, name)
    assert ours == theirs
    with open(FIXTURE) as f:
        assert json.load(f)[name] == theirs, "RabbitMQ's transcript changed: update the fixture"
