"""Queue credit flow: a queue whose consumers fall behind withholds credit from the
connections that publish to it (issue #22; RabbitMQ's ``credit_flow`` in spirit).

The queue's side (:class:`QueueCredit`, a mixin of ``Queue``, every field under the queue's
lock, like the rest of its state):

- ``behind`` (read without the lock by publishers: one attribute load) becomes True when a
  publish leaves more than ``flow_high`` ready messages, or more than ``flow_high_bytes``
  ready body bytes, on a queue *that has consumers*. A
  queue without consumers is a store, not a queue behind its consumers: it never withholds
  credit (the memory budget spills its bodies and the memory alarm bounds the rest, as a
  RabbitMQ queue without consumers grows until the alarm).
- ``flow_waiters``: the connections (:class:`CreditWaiter`) that published to it while it was
  behind and are waiting for credit. They are all told, and ``behind`` cleared, when the
  ready count falls to ``flow_low`` and the ready bytes to ``flow_low_bytes`` (both: a queue
  behind for its bytes may hold few, large messages) (a delivery or basic.get, or messages
  expired or dropped
  for a length limit: ``QueueLimits._discard_locked``), the queue loses its last
  consumer, is purged or deleted (:meth:`QueueCredit._caught_up_locked`).

The publisher's side is ``methods.credit`` (a connection stops being read while it waits).
``flow_high`` (``flow_high_bytes``) is huge when that threshold is off (``--queue-flow-high
0``, ``--queue-flow-high-bytes 0``), so the check on the publish path is two comparisons
either way. The bytes are the queue's ``ready_bytes`` (body sizes, as ``message_bytes_ready``
in the management API), whether the bodies are in memory or spilled by the memory budget:
the threshold bounds the backlog a publisher can build, as the count does.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

OFF = sys.maxsize  # flow_high of a queue that never withholds credit


class FlowLimits:
    """The broker's thresholds, copied into each queue when it is created (so that the publish
    path reads a queue attribute). More than ``high`` ready messages, or more than
    ``high_bytes`` ready body bytes, make a queue with consumers behind; it is caught up again
    at ``low`` messages and ``low_bytes`` bytes (half the highs). A high of 0: that one off."""

    __slots__ = ("high", "low", "high_bytes", "low_bytes")

    def __init__(self, high: int = 0, low: int | None = None, high_bytes: int = 0) -> None:
        self.high = OFF
        self.low = OFF
        self.set(high, low)
        self.set_bytes(high_bytes)

    def set(self, high: int, low: int | None = None) -> None:
        """Thresholds for queues created from now on (the server sets them before any)."""
        self.high = high if high > 0 else OFF
        # (off: any count is low, so that the bytes alone decide when a queue catches up)
        self.low = (high // 2 if low is None else min(low, high)) if high > 0 else OFF

    def set_bytes(self, high_bytes: int) -> None:
        """The bytes threshold for queues created from now on (0: off)."""
        self.high_bytes = high_bytes if high_bytes > 0 else OFF
        self.low_bytes = high_bytes // 2 if high_bytes > 0 else OFF


class CreditWaiter(Protocol):
    """A publisher waiting for a queue's credit."""

    def queue_caught_up(self, queue: Any) -> None:
        """The queue is no longer behind. Called with the queue's lock held, from any thread:
        must only hand the news over (no lock, no blocking)."""


class QueueCredit:
    """The queue's side of credit flow (a mixin of ``Queue``; its attributes are the
    queue's: ``behind``, ``flow_high``, ``flow_low``, ``flow_high_bytes``,
    ``flow_low_bytes``, ``flow_waiters``)."""

    __slots__ = ()

    behind: bool
    flow_high: int
    flow_low: int
    flow_high_bytes: int
    flow_low_bytes: int
    flow_waiters: set | None

    def _set_flow_limits(self, limits: FlowLimits | None) -> None:
        self.behind = False
        self.flow_high = limits.high if limits is not None else OFF
        self.flow_low = limits.low if limits is not None else OFF
        self.flow_high_bytes = limits.high_bytes if limits is not None else OFF
        self.flow_low_bytes = limits.low_bytes if limits is not None else OFF
        self.flow_waiters = None

    def wait_for_credit(self, waiter: CreditWaiter) -> bool:
        """Register ``waiter`` if this queue is (still) behind; False if it is not (nothing to
        wait for). The waiter is told once, by :meth:`_caught_up_locked`."""
        with self.lock:  # type: ignore[attr-defined]
            if not self.behind:
                return False
            if self.flow_waiters is None:
                self.flow_waiters = set()
            self.flow_waiters.add(waiter)
            return True

    def stop_waiting(self, waiter: CreditWaiter) -> None:
        """``waiter`` no longer waits (its connection closed or gave up on this queue)."""
        with self.lock:  # type: ignore[attr-defined]
            if self.flow_waiters:
                self.flow_waiters.discard(waiter)

    def _check_behind_locked(self) -> None:
        """After a publish left more than ``flow_high`` ready messages or ``flow_high_bytes``
        ready bytes (queue lock held)."""
        if self.consumers and not self.deleted:  # type: ignore[attr-defined]
            self.behind = True

    def _below_low_locked(self) -> bool:
        """Whether a queue that is behind may be caught up: down to ``flow_low`` ready
        messages and ``flow_low_bytes`` ready bytes (queue lock held; called only while
        ``behind``, so the common path pays nothing for it)."""
        return (self.ready.count() <= self.flow_low  # type: ignore[attr-defined]
                and self.ready_bytes <= self.flow_low_bytes)  # type: ignore[attr-defined]

    def _caught_up_locked(self) -> None:
        """No longer behind (queue lock held): clear ``behind`` and tell every waiter."""
        self.behind = False
        waiters = self.flow_waiters
        if waiters:
            self.flow_waiters = None
            for w in waiters:
                w.queue_caught_up(self)

    def credit_progress(self) -> int:
        """A counter that moves while the queue's consumers take messages (read without the
        lock; a waiter compares two readings to tell a slow consumer from a stuck one)."""
        return self.stats_delivered  # type: ignore[attr-defined]


__all__ = ["OFF", "CreditWaiter", "FlowLimits", "QueueCredit"]
