"""Dead-lettering: the message a queue republishes to its dead-letter exchange.

What RabbitMQ (3.13, ``mc:record_death`` / ``rabbit_dead_letter``) does to a dead-lettered
AMQP 0-9-1 message, and so do we:

- ``x-death`` (an array of tables, most recent first) gets an entry per ``{queue, reason}``:
  ``count`` (a long), ``reason``, ``queue``, ``time`` (a timestamp, of the first such death),
  ``exchange`` and ``routing-keys`` (the publish routing key and the CC keys, never BCC), plus
  ``original-expiration`` when the message had an ``expiration`` property. An existing entry
  for the same queue and reason has its count incremented and moves to the front.
- ``x-first-death-reason/queue/exchange`` are set once, on the first death;
  ``x-last-death-reason/queue/exchange`` on every death (new in RabbitMQ 3.13).
- The ``expiration`` property is removed (so the message does not expire again downstream).
- The message is routed through the dead-letter exchange with the queue's
  ``x-dead-letter-routing-key`` if it has one, else with all its original routing keys (CC and
  BCC included).
- Cycles: a message routed back to a queue it already died in is dropped for that queue,
  unless one of the deaths since (that one included) was a rejection
  (``mc:is_death_cycle``: "only drop if the cycle is fully automatic").
"""

from __future__ import annotations

import datetime
from typing import Any

from ..wire import _spec
from ..wire.fields import Long
from .message import Message

Death = tuple[str, str]  # (queue, reason), most recent first

# Dead letters by source queue type, dead-letter strategy and reason, as RabbitMQ's global
# counters keep them (rabbit_global_counters): ``disabled`` when the queue has no dead-letter
# exchange (or it does not exist: the message is dropped), ``at_most_once`` when it was
# republished to it. syncmq serves quorum declarations with classic queues, which dead-letter
# at most once, so ``confirmed`` and ``delivery_limit`` stay 0.
DEAD_LETTER_SERIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("rabbit_classic_queue", "disabled", ("maxlen", "expired", "rejected")),
    ("rabbit_classic_queue", "at_most_once", ("maxlen", "expired", "rejected")),
    ("rabbit_quorum_queue", "disabled", ("maxlen", "expired", "rejected", "delivery_limit")),
    ("rabbit_quorum_queue", "at_most_once",
     ("maxlen", "expired", "rejected", "delivery_limit")),
    ("rabbit_quorum_queue", "at_least_once",
     ("confirmed", "expired", "rejected", "delivery_limit")),
)


def dead_letter_event(queue_type: str, strategy: str, reason: str) -> str:
    """The ``Broker.count`` event name of one dead-letter series."""
    return f"dead_lettered:{queue_type}:{strategy}:{reason}"


# (queue type, strategy, reason) -> its event name, made once (not per dead letter)
DEAD_LETTER_EVENT = {(qt, st, r): dead_letter_event(qt, st, r)
                     for qt, st, reasons in DEAD_LETTER_SERIES for r in reasons}
DEAD_LETTER_EVENTS = tuple(DEAD_LETTER_EVENT.values())


def queue_type_module(queue_type: str) -> str:
    """RabbitMQ's queue type module for a declared ``x-queue-type`` (the counters' label)."""
    return "rabbit_quorum_queue" if queue_type == "quorum" else "rabbit_classic_queue"


def count_by_reason(letters: list[tuple[Message, str]]) -> dict[str, int]:
    if len(letters) == 1:  # the common batch: one dead letter made by one operation
        return {letters[0][1]: 1}
    counts: dict[str, int] = {}
    for _, reason in letters:
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)


def dead_lettered(message: Message, reason: str, queue: str, dlx: str,
                  dlrk: str | None) -> tuple[Message, list[Death]]:
    """The message to publish to ``dlx`` and its deaths (for cycle detection)."""
    old = message.props
    headers: dict[str, Any] = dict(old.headers) if old.headers else {}
    deaths = headers.get("x-death")
    entries = [d for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []
    found = None
    for i, d in enumerate(entries):
        if d.get("queue") == queue and d.get("reason") == reason:
            found = entries.pop(i)
            break
    if found is not None:
        entry = dict(found)
        count = entry.get("count")
        entry["count"] = Long((count if isinstance(count, int) else 0) + 1)
    else:
        entry = {
            "count": Long(1),
            "reason": reason,
            "queue": queue,
            "time": _utcnow(),
            "exchange": message.exchange,
            "routing-keys": [message.routing_key, *message.cc],
        }
        if old.expiration is not None:
            entry["original-expiration"] = old.expiration
    entries.insert(0, entry)
    headers["x-death"] = entries
    if "x-first-death-reason" not in headers:
        headers["x-first-death-reason"] = reason
        headers["x-first-death-queue"] = queue
        headers["x-first-death-exchange"] = message.exchange
    headers["x-last-death-reason"] = reason
    headers["x-last-death-queue"] = queue
    headers["x-last-death-exchange"] = message.exchange
    props = _spec.BasicProperties(**{f: getattr(old, f) for f in _spec.BasicProperties.FIELDS})
    props.headers = headers
    props.expiration = None
    body = message.body
    if body is None:  # in the memory budget's body store (the source still holds it)
        body = message.load_body()
    if dlrk is not None:
        new = Message(dlx, dlrk, props.encode(), body)
    else:
        new = Message(dlx, message.routing_key, props.encode(), body, message.cc,
                      message.bcc)
    return new, [(d.get("queue"), d.get("reason")) for d in entries]


def is_cycle(target: str, deaths: list[Death]) -> bool:
    """Whether dead-lettering to queue ``target`` closes a cycle with no rejection in it."""
    for queue, reason in deaths:
        if reason == "rejected":
            return False
        if queue == target:
            return True
    return False
