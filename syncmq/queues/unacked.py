"""Per-channel map of unacknowledged deliveries.

A channel numbers its deliveries with monotonically increasing delivery tags, so the map is a
plain ``dict`` whose insertion order is tag order.  ``basic.ack``/``basic.nack`` with
``multiple=True`` removes a *prefix* of that order (every tag ``<= tag``).

Removing a prefix by iterating the dict from its front is O(k + d), where d counts the slots
CPython leaves behind for entries deleted since the last resize (a dict never compacts on
delete).  With "ack multiple after every delivery" that degrades to O(size) per ack.  To avoid it
the map also keeps a *low-water mark* ``_lo`` (no live tag is below it) and removes a prefix either
by probing the integers ``lo..tag`` (each integer is probed at most once over the channel's life,
so this is amortised O(1) per delivery tag ever issued) or, when that range is much wider than the
map (many single acks left gaps), by one C-speed walk of the dict.  Each call costs
O(min(tag - lo, k + d)).

Not thread-safe by itself: it belongs to one channel, whose connection is pinned to one worker.
"""

from __future__ import annotations

__all__ = ["UnackedMap"]

_MISSING = object()


class UnackedMap:
    """Per-channel unacknowledged deliveries keyed by delivery tag.

    Delivery tags are monotonic ints, so ``multiple=True`` is a range.  Values are opaque.

    Invariant (the caller's, asserted by :meth:`_check`): tags are added in increasing order,
    each above every tag added before (the channel's ``next_tag``, under its lock), so the
    dict's last key is its highest live tag.
    """

    __slots__ = ("_d", "_lo", "get", "add")

    def __init__(self) -> None:
        self._d: dict[int, object] = {}
        # ``get(tag, default=None)``: the value of ``tag`` without removing it, else
        # ``default``. O(1). ``add(tag, value)``: record delivery ``tag`` (above every tag
        # added before: see the class docstring). O(1). Both the dict's own methods (no
        # Python frame: every delivery records its entry, and every ack on the reactor
        # standing in reads its entry first, methods.hand_over.ack_heavy).
        self.get = self._d.get
        self.add = self._d.__setitem__
        # every live tag is >= _lo; tags below it were removed already
        self._lo = 0

    def pop(self, tag: int):
        """Remove and return the value of ``tag``; None if it is unknown.  O(1)."""
        v = self._d.pop(tag, _MISSING)
        if v is _MISSING:
            return None
        if tag == self._lo:
            self._lo = tag + 1
        return v

    def pop_upto(self, tag: int) -> list:
        """Remove and return every value whose tag is ``<= tag``, in tag order.

        This is ``multiple=True``.  O(min(g, k + d)) for k entries removed, g = the width of the
        tag range probed (amortised O(1) per delivery tag ever issued) and d = dead dict slots.
        """
        d = self._d
        if not d:
            return []
        lo = self._lo
        last = next(reversed(d))  # the highest live tag (see the class docstring)
        hi = tag if tag < last else last
        if hi < lo:
            return []
        out: list = []
        if hi - lo <= 2 * len(d) + 8:
            pop = d.pop
            append = out.append
            missing = _MISSING
            for t in range(lo, hi + 1):
                v = pop(t, missing)
                if v is not missing:
                    append(v)
        else:
            keys = []
            for t in d:
                if t > hi:
                    break
                keys.append(t)
            pop = d.pop
            out = [pop(t) for t in keys]
        self._lo = hi + 1
        return out

    def pop_all(self) -> list:
        """Remove and return every value in tag order (channel close, ``basic.recover``).  O(n)."""
        d = self._d
        if not d:
            return []
        self._lo = next(reversed(d)) + 1
        out = list(d.values())
        d.clear()
        return out

    def items(self) -> list[tuple[int, object]]:
        """A list of ``(tag, value)`` pairs in tag order, without removing them.  O(n)."""
        return list(self._d.items())

    def __iter__(self):
        """Tags in increasing order.  O(1) per step (plus dead slots)."""
        return iter(self._d)

    def __contains__(self, tag) -> bool:
        """Whether ``tag`` is unacknowledged.  O(1)."""
        return tag in self._d

    def __len__(self) -> int:
        """Number of unacknowledged deliveries.  O(1)."""
        return len(self._d)

    def __bool__(self) -> bool:
        return bool(self._d)

    def __repr__(self) -> str:
        return f"<UnackedMap {len(self._d)} unacked, low-water mark {self._lo}>"

    def _check(self) -> None:
        """Assert the invariants.  O(n)."""
        prev = None
        for t in self._d:
            assert isinstance(t, int), t
            assert t >= self._lo, (t, self._lo)
            if prev is not None:
                assert prev < t, (prev, t)  # added in increasing order
            prev = t
