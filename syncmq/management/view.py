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


def queue_bytes(queue: Any) -> dict[str, int]:
    """RabbitMQ's byte and persistence figures of a queue, from the counters the queue keeps
    (no scan): bodies of ready and unacked messages ("ram": in memory or the memory
    budget's store; "paged_out": in a paged queue's page files, ``queues.paged``), and the
    journaled (persistent) ones among them. Read without the queue's lock (an estimate)."""
    ready, unacked = queue.ready_bytes, queue.unacked_bytes
    paged, paged_bytes = queue.ready.paged_count, queue.ready.paged_bytes
    ram = ready + unacked - paged_bytes
    resident = len(queue.ready) - paged
    return {"message_bytes": ready + unacked, "message_bytes_ready": ready,
            "message_bytes_unacknowledged": unacked, "message_bytes_ram": ram,
            "message_bytes_persistent": queue.persistent_bytes,
            "message_bytes_paged_out": paged_bytes,
            "messages_persistent": queue.persistent_count,
            "messages_ram": resident + queue.unacked_count,
            "messages_ready_ram": resident,
            "messages_unacknowledged_ram": queue.unacked_count, "messages_paged_out": paged}


def queue_activity(queue: Any) -> tuple:
    """What changes while a queue is busy (for ``idle_since``): its own counters."""
    return (queue.stats_published, queue.stats_delivered, queue.stats_acked,
            len(queue.consumers))


def queue_type(queue: Any) -> str:
    """The queue's type as declared (``x-queue-type``): ``quorum`` for a quorum queue (served
    by a classic one, see ``broker.args.check_queue_type``), else ``classic``."""
    return "quorum" if queue.arguments.get("x-queue-type") == "quorum" else "classic"

