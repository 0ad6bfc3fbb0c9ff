"""Differential: RabbitMQ's health-check endpoints on syncmq and on the private RabbitMQ
node (3.10.8, management plugin on), healthy and failing answers and malformed arguments
(issue 17). A failing listener check lists each node's own listeners (``ports``,
``protocols``): those lists are compared by shape (RabbitMQ has its clustering listener
too); everything else must be equal. The alarm and certificate failures need a broker
started with a tiny watermark or a certificate about to expire: tests/test_health_checks.py
(RabbitMQ's answers read off a node)."""

from __future__ import annotations

import test_rabbitmqadmin as ra
from interop_helpers import api

rabbit_mgmt = ra.rabbit_mgmt

CHECKS = ["/health/checks/alarms", "/health/checks/local-alarms",
          "/health/checks/virtual-hosts", "/health/checks/node-is-quorum-critical",
          "/health/checks/node-is-mirror-sync-critical",
          "/health/checks/certificate-expiration/1/weeks", "/healthchecks/node",
          "/health/checks/protocol-listener/amqp", "/health/checks/protocol-listener/amqp091",
          "/health/checks/protocol-listener/AMQP0-9-1", "/health/checks/protocol-listener/mqtt",
          "/health/checks/protocol-listener/amqps", "/health/checks/port-listener/1",
          "/health/checks/port-listener/-5", "/health/checks/port-listener/abc",
          "/health/checks/certificate-expiration/x/weeks",
          "/health/checks/certificate-expiration/1/fortnights",
          "/health/checks/certificate-expiration/-1/days", "/healthchecks/node/nobody@nowhere"]


def _answers(port: int, amqp: int) -> dict:
    out = {}
    for path in CHECKS + [f"/health/checks/port-listener/{amqp}"]:
        status, body = api(port, "GET", path)
        if isinstance(body, dict):
            for key in ("ports", "protocols"):
                if key in body:
                    assert isinstance(body[key], list) and body[key], body
                    body[key] = "LIST"
            if body.get("port") == amqp:
                body["port"] = "AMQP"
        out[path.replace(str(amqp), "AMQP")] = (status, body)
    return out


def test_health_checks_answer_as_rabbitmq(rabbitmq, rabbit_mgmt, broker):
    theirs = _answers(rabbit_mgmt, rabbitmq.port)
    ours = _answers(broker.management_port, broker.port)
    for path in theirs:
        assert ours[path] == theirs[path], f"{path}\nsyncmq:   {ours[path]}\n" \
                                           f"rabbitmq: {theirs[path]}"
    assert theirs["/health/checks/port-listener/AMQP"] == (200, {"status": "ok",
                                                                  "port": "AMQP"})
    assert theirs["/health/checks/protocol-listener/mqtt"][0] == 503
