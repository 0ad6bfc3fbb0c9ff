"""The broker's one way to run something later: :class:`Scheduler`.

The broker keeps no threads of its own. TTL expiry and queue expiry (``x-expires``) need work
done at a given time even when no client does anything, so the server wires a hook that puts a
timer on the reactor (which owns every timer) and, when it fires, submits the function to a
worker: broker logic never runs on the reactor thread. Without a hook (the broker used alone,
in tests) nothing is scheduled and expiry is only done lazily, when a queue is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Scheduler:
    """``schedule(delay, fn)`` runs ``fn()`` on a worker about ``delay`` seconds from now.

    ``hook`` is set once by the server before it starts (a plain attribute store, read without
    a lock by any worker).
    """

    __slots__ = ("hook",)

    def __init__(self) -> None:
        self.hook: Callable[[float, Callable[[], Any]], None] | None = None

    def schedule(self, delay: float, fn: Callable[[], Any]) -> bool:
        """Schedule ``fn``; False (and nothing happens) when no hook is installed."""
        hook = self.hook
        if hook is None:
            return False
        hook(max(0.0, delay), fn)
        return True
