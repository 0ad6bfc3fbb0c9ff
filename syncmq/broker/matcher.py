"""The base of the exchange-type matchers (:class:`Matcher`) and the canonical, hashable form
of binding arguments it keys bindings by.

See ``syncmq.broker.routing`` for the matchers' contract (immutable, copy-on-write) and costs;
the concrete matchers live there (direct, fanout), in ``syncmq.broker.topic`` and in
``syncmq.broker.headers``.
"""

from __future__ import annotations

from decimal import Decimal

from .pmap import PMap, pm_del, pm_from_dict, pm_set

_EMPTY: frozenset = frozenset()
_NO_ARGS: dict = {}
_MISSING = object()


# ---------------------------------------------------------------------------------------------
# Binding identity: a canonical, hashable form of a field table.  Types are kept apart (1, 1.0
# and True are three different binding arguments, as RabbitMQ compares typed field tables),
# keys are order-independent (RabbitMQ sorts binding arguments).


def _freeze(v):
    t = type(v)
    if t is str or v is None:
        return v
    if t is bytes:
        return ("x", v)
    if t is bool:
        return ("t", v)
    if t is int:
        return ("i", v)
    if t is float:
        return ("f", repr(v))
    if t is Decimal:
        return ("D", str(v))
    if t is dict:
        return ("F", _freeze_table(v))
    if t is list or t is tuple:
        return ("A", tuple([_freeze(x) for x in v]))
    if t is bytearray or t is memoryview:
        return ("x", bytes(v))
    try:
        hash(v)
    except TypeError:
        return (t.__name__, repr(v))
    return (t.__name__, v)


def _table_sort_key(kv):
    k = kv[0]
    return (type(k).__name__, k)


def _freeze_table(args) -> tuple:
    if not args:
        return ()
    return tuple(sorted(((k, _freeze(v)) for k, v in args.items()), key=_table_sort_key))


# ---------------------------------------------------------------------------------------------
# Base


class Matcher:
    """Base of the exchange-type matchers.  Immutable; see the module docstring.

    ``_bindings`` is ``{destination: {routing_key: {frozen_arguments: arguments}}}``: every level
    is never mutated once the matcher is built, so a new matcher copies only the levels on the
    changed path.  All three levels are persistent maps (``syncmq.broker.pmap``: a dict while
    small, a hash array mapped trie beyond), so that copy is O(log n) whatever the number of
    destinations, of keys per destination and of argument tables per key (headers bindings
    of one queue differ by their arguments only).
    """

    __slots__ = ("_bindings", "_count")

    exchange_type = ""

    def __init__(self) -> None:
        self._bindings: dict = {}
        self._count = 0
        self._build_index()

    # -- subclass hooks (each runs on a freshly derived matcher, before anyone else sees it,
    #    and must *replace* index structures, never mutate shared ones) -------------------------

    def _build_index(self) -> None:
        """(Re)build the routing index from ``_bindings``.  O(N)."""
        raise NotImplementedError

    def _copy_index_to(self, other: Matcher) -> None:
        raise NotImplementedError

    def _index_added(self, dest, key, args, new_dest: bool, new_key: bool) -> None:
        raise NotImplementedError

    def _index_removed(self, dest, key, args, gone_dest: bool, gone_key: bool) -> None:
        raise NotImplementedError

    def _index_removed_dest(self, dest, per_dest: dict) -> None:
        """All bindings of ``dest`` (``per_dest``: key -> {akey: args}) are gone."""
        raise NotImplementedError

    def _index_state(self):
        """A comparable picture of the index, for ``_check``."""
        raise NotImplementedError

    def _validate(self, args: dict) -> None:
        """Raise ValueError if ``args`` cannot be a binding of this type."""

    def _copy_params_to(self, other: Matcher) -> None:
        """Copy what a matcher holds besides its bindings (its exchange's arguments, for a
        type whose routing reads them) to a matcher derived from it."""

    def _derive(self, bindings: dict, count: int) -> Matcher:
        new = object.__new__(type(self))
        new._bindings = bindings
        new._count = count
        self._copy_params_to(new)
        self._copy_index_to(new)
        return new

    # -- public API -----------------------------------------------------------------------------

    def with_binding(self, destination, routing_key: str, arguments: dict | None) -> Matcher:
        """A matcher with the binding added (``self`` if it is already there); self unchanged.

        O(log N + size of arguments) plus the index update (see the module docstring).
        """
        args = dict(arguments) if arguments else {}
        self._validate(args)
        akey = _freeze_table(args)
        per_dest = self._bindings.get(destination)
        per_key = per_dest.get(routing_key) if per_dest is not None else None
        if per_key is not None and akey in per_key:
            return self
        new_per_key = pm_set(per_key if per_key is not None else _NO_ARGS, akey, args)
        new_per_dest = pm_set(per_dest if per_dest is not None else _NO_ARGS, routing_key,
                              new_per_key)
        bindings = pm_set(self._bindings, destination, new_per_dest)
        new = self._derive(bindings, self._count + 1)
        new._index_added(destination, routing_key, args, per_dest is None, per_key is None)
        return new

    def with_bindings(self, bindings) -> Matcher:
        """A matcher with every ``(destination, routing_key, arguments)`` of ``bindings`` added.

        For recovery and bulk changes: O(N + k) for k new bindings, instead of k * O(D).
        """
        nested = {d: {k: dict(pk.items()) for k, pk in pd.items()}
                  for d, pd in self._bindings.items()}
        count = self._count
        for destination, routing_key, arguments in bindings:
            args = dict(arguments) if arguments else {}
            self._validate(args)
            akey = _freeze_table(args)
            per_key = nested.setdefault(destination, {}).setdefault(routing_key, {})
            if akey not in per_key:
                per_key[akey] = args
                count += 1
        if count == self._count:
            return self
        new = object.__new__(type(self))
        new._bindings = pm_from_dict({d: pm_from_dict({k: pm_from_dict(pk) for k, pk in pd.items()})
                                      for d, pd in nested.items()})
        new._count = count
        self._copy_params_to(new)
        new._build_index()
        return new

    def without_binding(self, destination, routing_key: str, arguments: dict | None) -> Matcher:
        """A matcher without that binding (``self`` if it is not there); self unchanged.

        O(log N + size of arguments) plus the index update.
        """
        per_dest = self._bindings.get(destination)
        if per_dest is None:
            return self
        per_key = per_dest.get(routing_key)
        if per_key is None:
            return self
        akey = _freeze_table(arguments)
        args = per_key.get(akey)
        if args is None:
            return self
        gone_key = len(per_key) == 1
        gone_dest = gone_key and len(per_dest) == 1
        if gone_dest:
            bindings = pm_del(self._bindings, destination)
        else:
            if gone_key:
                new_per_dest = pm_del(per_dest, routing_key)
            else:
                new_per_dest = pm_set(per_dest, routing_key, pm_del(per_key, akey))
            bindings = pm_set(self._bindings, destination, new_per_dest)
        new = self._derive(bindings, self._count - 1)
        new._index_removed(destination, routing_key, args, gone_dest, gone_key)
        return new

    def without_destination(self, destination) -> Matcher:
        """A matcher without any binding to ``destination``; self unchanged.

        O(log D) plus the index update for each of its bindings.
        """
        per_dest = self._bindings.get(destination)
        if per_dest is None:
            return self
        bindings = pm_del(self._bindings, destination)
        removed = sum(len(pk) for pk in per_dest.values())
        new = self._derive(bindings, self._count - removed)
        new._index_removed_dest(destination, per_dest)
        return new

    def route(self, routing_key: str, headers: dict | None = None) -> set | frozenset:
        """The destinations a message with this routing key and headers goes to, each once.

        The result must not be mutated (it may be shared).  Cost: see the subclass.
        """
        raise NotImplementedError

    def has_binding(self, destination, routing_key: str, arguments: dict | None) -> bool:
        """Whether exactly this binding exists.  O(size of arguments)."""
        per_dest = self._bindings.get(destination)
        if per_dest is None:
            return False
        per_key = per_dest.get(routing_key)
        return per_key is not None and _freeze_table(arguments) in per_key

    def has_destination(self, destination) -> bool:
        """Whether any binding goes to ``destination``.  O(1)."""
        return destination in self._bindings

    def destinations(self) -> list:
        """Every bound destination, in first-bound order.  O(D log D)."""
        return list(self._bindings)

    def bindings(self) -> list[tuple[object, str, dict]]:
        """Every binding as ``(destination, routing_key, arguments)``; arguments are copies.  O(N)."""
        return [
            (dest, key, dict(args))
            for dest, per_dest in self._bindings.items()
            for key, per_key in per_dest.items()
            for args in per_key.values()
        ]

    def bindings_for(self, destination) -> list[tuple[object, str, dict]]:
        """The bindings to ``destination``, as ``bindings`` lists them.  O(its bindings)."""
        per_dest = self._bindings.get(destination)
        if per_dest is None:
            return []
        return [
            (destination, key, dict(args))
            for key, per_key in per_dest.items()
            for args in per_key.values()
        ]

    def __len__(self) -> int:
        """Number of bindings.  O(1)."""
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._count} bindings>"

    def _check(self) -> None:
        """Assert the invariants, including that the index equals one rebuilt from scratch.  O(N)."""
        n = 0
        levels = [self._bindings, *self._bindings.values()]
        levels += [pk for pd in self._bindings.values() for pk in pd.values()]
        for level in levels:
            if type(level) is PMap:
                level._check()
            else:
                assert type(level) is dict, level
        for _dest, per_dest in self._bindings.items():
            assert per_dest, per_dest
            for key, per_key in per_dest.items():
                assert isinstance(key, str), key
                assert per_key, per_key
                for akey, args in per_key.items():
                    assert type(args) is dict, args
                    assert akey == _freeze_table(args), (akey, args)
                    n += 1
        assert n == self._count, (n, self._count)
        fresh = object.__new__(type(self))
        fresh._bindings = self._bindings
        fresh._count = self._count
        self._copy_params_to(fresh)
        fresh._build_index()
        assert self._index_state() == fresh._index_state(), "index differs from a rebuild"
