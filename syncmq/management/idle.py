"""``idle_since`` of a queue, as RabbitMQ's management API shows it.

RabbitMQ reports when a queue process went idle (no message in or out, no consumer change),
as ``"2026-12-02T12:48:53.635+00:00"``, and leaves the field out while the queue is busy.
syncmq keeps no timestamp on the message path for it: :class:`IdleSince` (one per API,
read by the management request threads under its own leaf lock) compares a queue's activity
counters (published, delivered, acked, consumers: the queue's own) with those it saw at the
previous look. Unchanged: idle since the look that first saw them (a queue seen for the
first time: since now). Changed: busy, no field. So the value is as
precise as the listings are frequent (the dashboard and the history sampler look every few
seconds), like RabbitMQ's, which marks a queue idle only when its process hibernates.
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any


def iso(ts: float) -> str:
    """RabbitMQ's timestamp text: UTC, milliseconds, ``+00:00``."""
    d = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+00:00"


class IdleSince:
    """The last activity seen per queue (keyed by the queue object's id, the queue kept in
    the entry so a reused id is told apart; deleted queues are dropped as the map grows)."""

    def __init__(self, clock=None) -> None:
        self._clock = clock or time.time
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[Any, tuple, float]] = {}
        self._prune_at = 1024

    def since(self, q: Any, activity: tuple) -> str | None:
        """``idle_since`` text of ``q`` given its activity counters now, or None (busy)."""
        now = self._clock()
        with self._lock:
            entry = self._seen.get(id(q))
            if entry is None or entry[0] is not q:
                self._seen[id(q)] = (q, activity, now)
                self._prune_locked()
                return iso(now)
            if entry[1] != activity:
                self._seen[id(q)] = (q, activity, now)
                return None
            return iso(entry[2])

    def _prune_locked(self) -> None:
        if len(self._seen) < self._prune_at:
            return
        for key in [k for k, (q, _a, _s) in self._seen.items() if q.deleted]:
            del self._seen[key]
        self._prune_at = max(1024, 2 * len(self._seen))
