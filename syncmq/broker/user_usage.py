"""Open connections and channels per user: what the user limits ``max-connections`` and
``max-channels`` are checked against (``user_rules``), as RabbitMQ's connection and channel
tracking counts them (every vhost, every connection of the user).

A connection is counted from its ``connection.open`` (once it may be refused no more) to its
release; a channel from its ``channel.open`` to its close or the connection's release. A
check and its count are one step under :attr:`UserUsage.lock` (two connections opening at
once cannot both take the last place). Callers: the connection's worker
(``methods.connection``, ``methods.channel``, ``Session``); the management API reads counts.
"""

from __future__ import annotations

import threading


class UserUsage:
    """Counts per user name. ``lock`` guards both dicts (a leaf lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: dict[str, int] = {}
        self.channels: dict[str, int] = {}

    def acquire(self, table: dict[str, int], user: str, limit: int | None) -> bool:
        """Count one more for ``user`` unless ``limit`` (None: no limit) is reached."""
        with self.lock:
            n = table.get(user, 0)
            if limit is not None and n >= limit:
                return False
            table[user] = n + 1
            return True

    def release(self, table: dict[str, int], user: str) -> None:
        with self.lock:
            n = table.get(user, 0) - 1
            if n > 0:
                table[user] = n
            else:
                table.pop(user, None)
