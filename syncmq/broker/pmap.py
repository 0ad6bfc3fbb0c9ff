"""Persistent (immutable, path-copied) maps for the exchange matchers (issue #22).

A matcher is copy-on-write (``syncmq.broker.routing``): a binding change builds a new matcher
that shares every unchanged part with the old one, and routing reads one published matcher
without a lock.  Copying a whole ``dict`` on each change costs O(its size), so a bind to an
exchange with 100,000 bindings used to cost O(100,000).  These maps bound the copy:

* A map of at most ``SMALL`` entries is a plain ``dict`` (copied whole on change: O(SMALL),
  and ``dict.get`` stays the fastest lookup for the common, narrow trie node).
* A larger one is a :class:`PMap`: a hash array mapped trie.  Its branches are lists of 32
  slots indexed by 5 bits of ``hash(key)``; its leaves are pairs of dicts ``(key -> value,
  key -> seq)`` of at most ``LEAF`` entries (no object per entry: the garbage collector,
  which scans every container, sees two dicts a leaf).  A change copies the one leaf and the branches on its path: O(LEAF
  + 32 * log32 n), i.e. flat in practice (4 levels at 10**6 entries).

Both kinds are only ever built by :func:`pm_set`, :func:`pm_del` and :func:`pm_from_dict`, and
never mutated once returned (every list and dict of a ``PMap`` is a fresh copy or shared
unchanged; only the caches below are filled in later), so a reader holding a map sees one consistent version whatever other threads do.

Both kinds answer ``get``, ``in``, ``len``, iteration (keys), ``keys``, ``values`` and
``items``; iteration is in insertion order (a ``dict``'s own order; a ``PMap`` sorts its
entries by the insertion sequence number it keeps, O(n log n), for listings only).  A
re-set key keeps its place.

For the routing hot paths a ``PMap`` also hands out plain, unordered views of its entries,
each built on first use and kept with the map: :meth:`PMap.as_dict` (O(n) once, then a C-level
``dict.get``), :meth:`PMap.key_set` (a frozenset of the keys) and :meth:`PMap.hot_dict`
(``as_dict`` only once the map has been read through it about ``len / HOT`` times: a map
replaced after a few reads never pays the O(n) build, one read far more often than it changes
gets ``dict.get`` speed; ski rental).  These caches are the only attributes ever set on a
``PMap`` after construction; each is a pure function of its immutable entries, built whole
and then stored by one attribute store, so a reader sees None or the finished object, and
two threads building it at once build the same thing (one store wins).  The read counter is
a racy ``+= 1``: a lost increment only delays the build.
"""

from __future__ import annotations

SMALL = 128  # a plain dict up to this many entries (a dict.get is the fastest lookup)
LEAF = 16  # entries of a PMap leaf before it splits into a branch
_BITS = 5
_WIDTH = 1 << _BITS
_MASK = _WIDTH - 1
_MAX_SHIFT = 64  # hashes are 64-bit: deeper, equal hash bits; a leaf then just grows
HOT = 8  # hot_dict builds the dict after len // HOT reads (a walk costs ~HOT entries' copy)


class PMap:
    """An immutable map of more than ``SMALL`` entries; see the module docstring.

    ``_root`` is a branch (list of ``_WIDTH`` slots, each None, a leaf or a branch) or a leaf
    (tuple ``(key -> value, key -> seq)``, both dicts with the same keys); ``_len`` the number of entries; ``_seq`` the next
    insertion sequence number.  ``_dict``, ``_keys`` and ``_reads`` are the caches of the
    module docstring (None, None, 0 until used).
    """

    __slots__ = ("_root", "_len", "_seq", "_dict", "_keys", "_reads")

    def __init__(self, root, length: int, seq: int) -> None:
        self._root = root
        self._len = length
        self._seq = seq
        self._dict = None
        self._keys = None
        self._reads = 0

    def get(self, key, default=None):
        node = self._root
        h = hash(key)
        while type(node) is list:
            node = node[h & _MASK]
            if node is None:
                return default
            h >>= _BITS
        return node[0].get(key, default)

    def as_dict(self) -> dict:
        """The entries as a plain dict, in no particular order; built on the first call and
        kept (see the module docstring).  O(n) once, then O(1).  Must not be mutated."""
        d = self._dict
        if d is None:
            d = {}
            for leaf in self._leaves():
                d.update(leaf[0])
            self._dict = d
        return d

    def key_set(self) -> frozenset:
        """The keys as a frozenset; built on the first call and kept.  O(n) once."""
        ks = self._keys
        if ks is None:
            ks = self._keys = frozenset(self.as_dict())
        return ks

    def hot_dict(self):
        """``as_dict()`` once this map has been read through here more than ``len // HOT``
        times (so the O(n) build costs about what as many walks would), else None."""
        d = self._dict
        if d is None:
            self._reads = reads = self._reads + 1
            if reads <= self._len // HOT:
                return None
            d = self.as_dict()
        return d

    def __contains__(self, key) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def __len__(self) -> int:
        return self._len

    def _leaves(self):
        """Every leaf ``(values, insertion numbers)`` of the trie, in no particular order."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            if type(node) is list:
                stack.extend(c for c in node if c is not None)
            else:
                yield node

    def _entries(self) -> list:
        """``(seq, key, value)`` of every entry, in insertion order.  O(n log n)."""
        out: list = []
        for values, seqs in self._leaves():
            out.extend((seqs[k], k, v) for k, v in values.items())
        out.sort(key=_first)
        return out

    def items(self) -> list:
        return [(k, v) for _, k, v in self._entries()]

    def keys(self) -> list:
        return [k for _, k, _ in self._entries()]

    def values(self) -> list:
        return [v for _, _, v in self._entries()]

    def __iter__(self):
        return iter(self.keys())

    def __repr__(self) -> str:
        return f"<PMap {self._len} entries>"

    def _check(self) -> None:
        """Assert the invariants: entries where their hash bits say, leaves within bounds
        (but at the last level), no empty branch or leaf, the length.  O(n)."""
        n = 0
        seqs = set()
        stack = [(self._root, 0, 0)]  # node, shift, hash bits so far
        while stack:
            node, shift, bits = stack.pop()
            if type(node) is list:
                assert len(node) == _WIDTH and any(c is not None for c in node), "empty branch"
                for i, c in enumerate(node):
                    if c is not None:
                        stack.append((c, shift + _BITS, bits | (i << shift)))
                continue
            assert type(node) is tuple and len(node) == 2, node
            vals, seqs_of = node
            assert type(vals) is dict and type(seqs_of) is dict and vals, "empty leaf"
            assert vals.keys() == seqs_of.keys()
            assert len(vals) <= LEAF or shift >= _MAX_SHIFT, (len(vals), shift)
            for k, seq in seqs_of.items():
                assert hash(k) & ((1 << shift) - 1) == bits, (k, shift)
                assert seq < self._seq and seq not in seqs
                seqs.add(seq)
                n += 1
        assert n == self._len > SMALL, (n, self._len)
        if self._dict is not None:
            assert self._dict == dict(self.items()), "stale as_dict cache"
        if self._keys is not None:
            assert self._keys == frozenset(self.keys()), "stale key_set cache"


_ABSENT = object()


def _first(t):
    return t[0]


def _place(entries: list, shift: int):
    """A leaf or branch holding ``entries`` (``(key, hash, seq, value)``), all of whose
    hashes agree on the bits below ``shift``."""
    if len(entries) <= LEAF or shift >= _MAX_SHIFT:
        return ({e[0]: e[3] for e in entries}, {e[0]: e[2] for e in entries})
    slots: list = [[] for _ in range(_WIDTH)]
    for ent in entries:
        slots[(ent[1] >> shift) & _MASK].append(ent)
    return [_place(s, shift + _BITS) if s else None for s in slots]


def pm_from_dict(d: dict, _seq0: int = 0):
    """The persistent form of the entries of ``d`` (insertion order kept): ``d`` itself
    when small (the caller must not mutate it afterwards), else a ``PMap``.  O(n)."""
    if len(d) <= SMALL:
        return d
    entries = [(k, hash(k), _seq0 + i, v) for i, (k, v) in enumerate(d.items())]
    return PMap(_place(entries, 0), len(entries), _seq0 + len(entries))


def pm_set(m, key, value):
    """``m`` with ``key`` set to ``value`` (``m`` unchanged).  O(SMALL) or O(log n)."""
    if type(m) is dict:
        d = dict(m)
        d[key] = value
        return pm_from_dict(d)
    path, node, shift = _descend(m, key)
    seq = node[1].get(key) if node is not None else None
    added = seq is None
    if added:
        seq = m._seq
    if node is None:
        new = ({key: value}, {key: seq})
    else:
        vals, seqs = dict(node[0]), dict(node[1])
        vals[key] = value
        seqs[key] = seq
        new = (vals, seqs)
        if len(vals) > LEAF and shift < _MAX_SHIFT:
            new = _place([(k, hash(k), seqs[k], v) for k, v in vals.items()], shift)
    return PMap(_rebuild(path, new), m._len + added, m._seq + added)


def pm_del(m, key):
    """``m`` without ``key`` (``m`` itself if absent).  A ``PMap`` that falls to ``SMALL``
    entries turns back into a dict.  O(SMALL) or O(log n)."""
    if type(m) is dict:
        if key not in m:
            return m
        d = dict(m)
        del d[key]
        return d
    path, node, _ = _descend(m, key)
    if node is None or key not in node[0]:
        return m
    if m._len - 1 <= SMALL:
        return {k: v for k, v in m.items() if k != key}
    vals, seqs = dict(node[0]), dict(node[1])
    del vals[key], seqs[key]
    return PMap(_rebuild(path, (vals, seqs) if vals else None), m._len - 1, m._seq)


def _descend(m, key):
    """The walk from ``m``'s root towards ``key``: ``(path, node, shift)`` where ``path`` is
    the (branch, slot) pairs from the root down, ``node`` the leaf reached (or None for an
    empty slot) and ``shift`` the hash shift at that depth."""
    h = hash(key)
    path = []
    node = m._root
    shift = 0
    while type(node) is list:
        slot = (h >> shift) & _MASK
        path.append((node, slot))
        node = node[slot]
        shift += _BITS
    return path, node, shift


def _rebuild(path: list, node):
    """Copy the branches of ``path`` bottom-up with ``node`` in place of the old leaf or
    empty slot; a branch left without any child becomes None."""
    for branch, slot in reversed(path):
        b = list(branch)
        b[slot] = node
        node = b if node is not None or any(c is not None for c in b) else None
    return node


__all__ = ["HOT", "LEAF", "SMALL", "PMap", "pm_del", "pm_from_dict", "pm_set"]
