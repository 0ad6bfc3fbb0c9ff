"""``syncmqctl migration_plan SOURCE_URI``: what moving a running syncmq onto a RabbitMQ
cluster takes (docs/scaling.md, "Migration"), printed as one JSON object:

- ``definitions``: the node's definitions (``GET /api/definitions``: users with their
  password hashes, vhosts, permissions, exchanges, queues, bindings), to import into the
  cluster first (``rabbitmqadmin import`` or ``POST /api/definitions``);
- ``shovels``: a definitions document holding only ``parameters``: one dynamic shovel (RabbitMQ's
  shovel plugin, run by the cluster) per non-empty, non-exclusive queue, pulling it from
  ``SOURCE_URI`` + the queue's vhost into the same-named queue of the cluster's same vhost,
  ``ack-mode: on-confirm`` and ``src-delete-after: queue-length``; to import once the
  producers write to the cluster;
- ``steps``: the recipe in words.

``SOURCE_URI`` is how the cluster reaches syncmq (``amqp://user:pass@host:5672``, or
``amqps://...?cacertfile=...``); its path is replaced by each queue's vhost. The plan only
reads the node (two GETs); it changes nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

STEPS = [
    "Import 'definitions' into the RabbitMQ cluster (rabbitmqadmin import FILE, or POST "
    "/api/definitions).",
    "Switch the consumers to the cluster's URL (same user, password and vhost).",
    "Switch the producers to the cluster's URL.",
    "Import 'shovels' into the cluster (the shovel plugin must be enabled): each moves what "
    "its queue holds on syncmq, after the cluster confirmed it, then deletes itself.",
    "Start consumers for queues that had none.",
    "When GET /api/shovels on the cluster is empty and every syncmq queue is empty, stop "
    "syncmq.",
]


class PlanError(Exception):
    """A SOURCE_URI that cannot be used."""


def source_uri_for(uri: str, vhost: str) -> str:
    """``uri`` with its path set to ``vhost`` (percent-encoded, ``/`` as ``%2F``)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise PlanError(f"SOURCE_URI must be amqp://[user:pass@]host[:port] or amqps://..., "
                        f"not {uri!r}")
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query,
                       ""))


def shovels(queues: list[dict], uri: str) -> list[dict]:
    """One shovel parameter per queue with messages (ready or unacknowledged), in vhost then
    name order; exclusive queues are skipped (no other connection may consume them)."""
    out = []
    for q in sorted(queues, key=lambda q: (q.get("vhost", ""), q.get("name", ""))):
        if not q.get("messages") or q.get("exclusive"):
            continue
        vhost, name = q["vhost"], q["name"]
        out.append({
            "vhost": vhost, "component": "shovel", "name": f"migrate-{name}",
            "value": {
                "src-protocol": "amqp091", "src-uri": source_uri_for(uri, vhost),
                "src-queue": name,
                "dest-protocol": "amqp091", "dest-uri": "amqp:///" + quote(vhost, safe=""),
                "dest-queue": name,
                "ack-mode": "on-confirm", "src-delete-after": "queue-length",
            },
        })
    return out


def plan(definitions: dict, queues: list[dict], uri: str) -> dict[str, Any]:
    source_uri_for(uri, "/")  # refuse a bad URI even when no queue has messages
    return {"definitions": definitions, "shovels": {"parameters": shovels(queues, uri)},
            "steps": STEPS}

