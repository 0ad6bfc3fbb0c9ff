"""The read-only view of broker objects that the management API and ``/metrics`` use.

Every value the management layer shows about a connection, channel or queue is read here,
not off the broker's internals in each endpoint, so that a change of those internals (the
protocol's state, a queue's ready structure, a channel's unacked map) is one edit here.
The reads take no lock (monitoring snapshots: a few microseconds apart, never torn; see
:mod:`.state`); nothing here changes anything.
"""

from __future__ import annotations

from typing import Any


def connection_state(session: Any) -> str:
    """RabbitMQ's name for the connection's state (``running`` once open), from the
    protocol's public state. The one place the management layer reads it."""
    st = session.proto.state
    name = getattr(st, "rabbit_name", None) or str(st)
    credit = getattr(session, "credit", None)
    if credit is not None and credit.paused and name == "running":
        return "flow"  # not read until a queue it publishes to catches up (methods.credit)
    return name


def ready(queue: Any) -> int:
    """Messages ready for delivery in ``queue``."""
    return len(queue.ready)


def unacked(queue: Any) -> int:
    """Messages of ``queue`` delivered and not yet acknowledged."""
    return queue.unacked_count


def depth(queue: Any) -> tuple[int, int]:
    """``(ready, unacked)`` of ``queue``."""
    return len(queue.ready), queue.unacked_count


def consumers(queue: Any) -> int:
    return len(queue.consumers)


def channel_unacked(channel: Any) -> int:
    """Deliveries on ``channel`` not yet acknowledged."""
    return len(channel.unacked)


def consumer_utilisation(queue: Any) -> float:
    """RabbitMQ's ``consumer_utilisation`` as an instant reading: the share of the queue's
    consumers that could take a message now (not held back by their prefetch), 1.0 for a
    queue with consumers and nothing waiting, 0 without consumers. RabbitMQ averages the
    same thing over time; syncmq does not track that."""
    cs = list(queue.consumers)
    if not cs:
        return 0
    if not len(queue.ready):
        return 1.0
    free = sum(1 for c in cs if not c.prefetch or c.unacked < c.prefetch)
    return free / len(cs)
