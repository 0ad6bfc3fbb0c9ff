"""A list of message ids packed as runs of consecutive ids (issue #22).

Recovery lists each queue's live ids in log order (``MessageTable.by_queue``) and, after an
unclean stop, the ids to journal DELIVERED for (``Durability.journal_started``). Ids come
from one counter, so a backlog's ids are mostly one long run: :class:`IdRuns` keeps a run as
two items of one ``array('Q')``, not 8 bytes (or a 36-byte list entry and int) an id. No
lock: one thread at a time (recovery, then the start-up).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

__all__ = ["IdRuns"]

_RUN = 1 << 63  # IdRuns: an item with this bit is a run length, not an id


class IdRuns:
    """A list of message ids that stores a run of consecutive ids as two items (its first
    id, then ``_RUN | how many more``) in one ``array('Q')``: a queue's recovered backlog
    (ids from one counter) costs a few bytes in all instead of 8 a message; a lone id still
    costs 8. Append-only; iteration gives the ids in the order appended. Ids are below
    ``2**63`` (the journal's ids are)."""

    __slots__ = ("_a", "_last", "_n")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._a = array("Q")
        self._last = -2
        self._n = 0
        for mid in ids:
            self.append(mid)

    def append(self, mid: int) -> None:
        a = self._a
        if mid == self._last + 1:
            if a[-1] & _RUN:
                a[-1] += 1
            else:
                a.append(_RUN | 1)
        else:
            a.append(mid)
        self._last = mid
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[int]:
        prev = 0
        for v in self._a:
            if v & _RUN:
                yield from range(prev + 1, prev + 1 + (v ^ _RUN))
                prev += v ^ _RUN
            else:
                yield v
                prev = v

    def append_run(self, first: int, count: int) -> None:
        """:meth:`append` of ``first .. first + count - 1`` in O(1) (``count`` > 0)."""
        self.append(first)
        if count > 1:
            a = self._a
            if a[-1] & _RUN:
                a[-1] += count - 1
            else:
                a.append(_RUN | (count - 1))
            self._last = first + count - 1
            self._n += count - 1

    def runs(self, skip: int = 0) -> Iterator[tuple[int, int]]:
        """The ids as ``(first, count)`` runs of consecutive ids, in order, after the first
        ``skip`` ids (recovery hands a queue's paged tail over as runs, ``Durability``)."""
        a = self._a
        i, n = 0, len(a)
        while i < n:
            first, count = a[i], 1
            i += 1
            if i < n and a[i] & _RUN:
                count += a[i] ^ _RUN
                i += 1
            if skip >= count:
                skip -= count
                continue
            yield first + skip, count - skip
            skip = 0

    def nbytes(self) -> int:
        """Bytes of the packed items (tests: the size is per run, not per id)."""
        return self._a.itemsize * len(self._a)
