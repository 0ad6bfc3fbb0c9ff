"""The consumers of one queue, in delivery order, at O(1) per consume, cancel and delivery.

A queue hands each message to the first consumer in its order that takes it, then moves that
consumer behind its equals (round-robin within a priority). The order used to be a ``deque``
scanned for an exclusive consumer on every ``basic.consume`` and searched on every cancel
(``deque.remove``): registering 20,000 consumers on one queue took 11 s, and a user with read
permission could stall every connection sharing the worker.

``ConsumerRing`` keeps one insertion-ordered dict (``dict`` keeps order; the C ``OrderedDict``
adds an O(1) ``move_to_end``) per priority, the priorities present in descending order
(a short list: a queue sees few distinct ``x-priority`` values), and counters for what
``basic.consume`` must check (``n_exclusive``). Every operation is O(1) but for adding the
first consumer of a new priority (O(p), p distinct priorities) and iteration.

Without consumer priorities (the default, and always with single active consumer, where the
active one is simply the first) every consumer lives in group 0; ``by_priority`` turns on when
the first consumer with a non-zero ``x-priority`` attaches, at which point all consumers
present have priority 0, so they are already in the right group.

Not thread-safe: owned by one queue and used under ``Queue.lock``. Consumers are hashed by
identity (they define no ``__eq__``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from itertools import chain
from typing import Any

__all__ = ["ConsumerRing"]


class ConsumerRing:
    """Consumers ordered by priority, then by round-robin turn. Items need ``.priority`` and
    ``.exclusive``."""

    __slots__ = ("_groups", "_prios", "count", "n_exclusive", "by_priority", "single_active",
                 "sole")

    def __init__(self, single_active: bool = False) -> None:
        self._groups: dict[int, OrderedDict] = {}
        self._prios: list[int] = []  # keys of _groups, highest first
        # how many consumers (read it rather than ``len()``/``bool()`` on a per-message path:
        # a slot read instead of a call; written here only)
        self.count = 0
        self.n_exclusive = 0
        self.by_priority = False
        self.single_active = single_active
        # The one consumer every message goes to, or None: the only consumer, or with single
        # active consumer the active one (the first); a slot read for the queue's batch
        # dispatch. Set by add, remove and clear (rotate never changes it: with one consumer
        # it moves nothing, and single active consumer never rotates).
        self.sole: Any = None

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def __iter__(self) -> Iterator[Any]:
        """Consumers in delivery order (do not mutate while iterating, but for a
        :meth:`rotate` right before leaving the loop)."""
        prios = self._prios
        if len(prios) == 1:
            return iter(self._groups[prios[0]])
        return chain.from_iterable(self._groups[p] for p in prios)

    def _key(self, consumer: Any) -> int:
        return consumer.priority if self.by_priority else 0

    def add(self, consumer: Any) -> None:
        """Append ``consumer`` behind every consumer of the same or a higher priority."""
        if consumer.priority and not self.single_active:
            self.by_priority = True
        key = self._key(consumer)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = OrderedDict()
            prios = self._prios
            i = 0
            while i < len(prios) and prios[i] > key:
                i += 1
            prios.insert(i, key)
        group[consumer] = None
        self.count += 1
        if consumer.exclusive:
            self.n_exclusive += 1
        self._set_sole()

    def remove(self, consumer: Any) -> bool:
        """Detach ``consumer``; False if it was not here."""
        key = self._key(consumer)
        group = self._groups.get(key)
        if group is None or group.pop(consumer, False) is False:
            return False
        if not group:
            del self._groups[key]
            self._prios.remove(key)
        self.count -= 1
        if consumer.exclusive:
            self.n_exclusive -= 1
        self._set_sole()
        return True

    def _set_sole(self) -> None:
        self.sole = self.first() if self.single_active or self.count == 1 else None

    def first(self) -> Any:
        """The consumer served first (the active one with single active consumer); None if
        there is none."""
        if not self.count:
            return None
        return next(iter(self._groups[self._prios[0]]))

    def rotate(self, consumer: Any) -> None:
        """``consumer`` just got a message: it goes behind its equals."""
        self._groups[self._key(consumer)].move_to_end(consumer)

    def clear(self) -> list:
        """Detach everyone; return them in order."""
        out = list(self)
        self._groups.clear()
        self._prios.clear()
        self.count = 0
        self.n_exclusive = 0
        self.sole = None
        return out

    def _check(self) -> None:
        """Invariants (for tests): counters match the groups, priorities sorted, no empty
        group, each consumer in the group of its key."""
        assert self._prios == sorted(self._groups, reverse=True)
        assert all(self._groups[p] for p in self._prios)
        members = list(self)
        assert len(members) == self.count == len(set(map(id, members)))
        assert self.n_exclusive == sum(1 for c in members if c.exclusive)
        for p, group in self._groups.items():
            assert all(self._key(c) == p for c in group)
        if not self.by_priority:
            assert len(self._prios) <= 1
        assert self.sole is (self.first() if self.single_active or self.count == 1 else None)
