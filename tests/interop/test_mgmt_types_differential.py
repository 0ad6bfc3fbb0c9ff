"""Type handling of the management API against RabbitMQ 3.10.8 (issue 17): booleans as JSON
booleans and as the strings rabbitmqadmin sends, fields left out (RabbitMQ's defaults:
durable false, type direct), numbers and strings in arguments typed as RabbitMQ types them
(a wrong type is the queue's argument-check 400), and values of the wrong type: RabbitMQ's
400 ``{"error", "reason"}``, never a 500.

Each body is sent to both brokers; the answers (status and body) are compared, then the
object as the API shows it (flags, type, arguments with their JSON types). Where RabbitMQ
itself answers 500 (or a 400 with an Erlang crash report as the reason), syncmq answers 400
in RabbitMQ's shape and the case is listed in RABBIT_CRASHES instead of compared.
"""

from __future__ import annotations

from urllib.parse import quote

import test_rabbitmqadmin as ra
from interop_helpers import api

rabbit_mgmt = ra.rabbit_mgmt

QUEUE_BODIES = [
    {}, {"durable": True}, {"durable": "true"}, {"durable": "false"}, {"durable": False},
    {"auto_delete": "true", "durable": "false"}, {"auto_delete": True},
    {"durable": "yes"}, {"durable": 1}, {"durable": 0}, {"durable": None},
    {"durable": "True"}, {"durable": ["true"]}, {"auto_delete": {"a": 1}},
    {"arguments": {"x-max-length": 10, "x-message-ttl": 1000, "x-expires": 60000}},
    {"arguments": {"x-max-length": "ten"}}, {"arguments": {"x-max-length": "10"}},
    {"arguments": {"x-max-length": 1.5}}, {"arguments": {"x-max-length": True}},
    {"arguments": {"x-max-length": -1}}, {"arguments": {"x-message-ttl": "1000"}},
    {"arguments": {"x-max-priority": 10, "x-overflow": "reject-publish"}},
    {"arguments": {"x-overflow": 1}}, {"arguments": {"x-queue-mode": "lazy"}},
    {"arguments": {"x-custom": [1, "a", True, 1.5, None, {"k": "v"}]}},
    {"arguments": {"x-dead-letter-exchange": 5}},
    {"arguments": {"x-single-active-consumer": "true"}},
    {"arguments": {"x-queue-type": "classic"}}, {"arguments": {"x-queue-type": 1}},
    {"node": "nope@nowhere"},
]
EXCHANGE_BODIES = [
    {}, {"type": "topic"}, {"type": "fanout", "durable": "true", "auto_delete": "false",
                            "internal": "false"},
    {"type": "direct", "internal": "true"}, {"type": "direct", "internal": True},
    {"type": "direct", "internal": "yes"}, {"type": "direct", "durable": 0},
    {"type": "direct", "auto_delete": None}, {"type": ""}, {"type": "no-such-type"},
    {"type": "headers", "arguments": {"alternate-exchange": "ae", "x-n": 1}},
    {"type": "direct", "arguments": {"alternate-exchange": 5}},
]
# RabbitMQ 3.10.8 crashes on these (500, or 400 with an Erlang crash report), or takes a list
# for a string: syncmq's answer
RABBIT_CRASHES = {
    ("queue", '{"arguments": "x"}'): (400, "arguments must be an object"),
    ("queue", '{"arguments": [1]}'): (400, "arguments must be an object"),
    ("queue", '{"node": 5}'): (400, "Node 5 could not be contacted"),
    ("exchange", '{"type": 5}'): (400, "'type' must be a string"),
    ("exchange", '{"type": ["direct"]}'): (400, "'type' must be a string"),
}


def _typed(value):
    """A JSON value with the type of each scalar, to compare how arguments were typed."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return [type(value).__name__, value]


def _shown(port: int, path: str) -> object:
    status, obj = api(port, "GET", path)
    if status != 200:
        return status
    keys = ("durable", "auto_delete", "internal", "type", "exclusive")
    return {k: obj.get(k) for k in keys if k in obj} | {"arguments": _typed(obj["arguments"])}


def _transcript(port: int, tag: str, kind: str, bodies: list) -> list:
    out = []
    for i, body in enumerate(bodies):
        name = f"types-{tag}-{kind[0]}{i}"
        path = f"/{kind}s/%2F/{quote(name, safe='')}"
        answer = api(port, "PUT", path, body)
        out.append((body, answer, _shown(port, path)))
        api(port, "DELETE", path)
    return out


def test_declare_bodies_are_typed_as_rabbitmq(rabbit_mgmt, broker, unique):
    tag = unique[-6:]
    for kind, bodies in (("queue", QUEUE_BODIES), ("exchange", EXCHANGE_BODIES)):
        rabbit = _transcript(rabbit_mgmt, tag, kind, bodies)
        ours = _transcript(broker.management_port, tag, kind, bodies)
        diffs = [(r, s) for r, s in zip(rabbit, ours, strict=True) if r != s]
        assert not diffs, "\n".join(f"{r[0]}:\n  rabbitmq {r[1:]}\n  syncmq   {s[1:]}"
                                    for r, s in diffs)
    # what is compared, as RabbitMQ answers it
    by_body = {repr(b): (a, o) for b, a, o in _transcript(rabbit_mgmt, tag, "queue",
                                                          QUEUE_BODIES[:9])}
    assert by_body[repr({})][1]["durable"] is False
    assert by_body[repr({"durable": "true"})][1]["durable"] is True
    assert by_body[repr({"durable": "yes"})][0] == (400, {"error": "bad_request",
                                                         "reason": ["not_boolean", "yes"]})


def test_where_rabbitmq_crashes_syncmq_answers_400(rabbit_mgmt, broker, unique):
    import json
    for (kind, body), (status, reason) in RABBIT_CRASHES.items():
        path = f"/{kind}s/%2F/types-crash-{unique[-6:]}"
        theirs = api(rabbit_mgmt, "PUT", path, json.loads(body))
        assert theirs[0] == 500 or "EXIT" in str(theirs[1]) or (
            body == '{"type": ["direct"]}' and theirs[0] == 201), (kind, body, theirs)
        api(rabbit_mgmt, "DELETE", path)
        assert api(broker.management_port, "PUT", path, json.loads(body)) == (
            status, {"error": "bad_request", "reason": reason}), (kind, body)
        assert api(broker.management_port, "GET", path)[0] == 404
    assert api(broker.management_port, "GET", "/overview")[0] == 200  # still serving
