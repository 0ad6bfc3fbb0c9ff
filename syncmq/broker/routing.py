"""Exchange-type matchers: which destinations a publish reaches.

A binding is ``(destination, routing_key, arguments)``: ``destination`` is any hashable object
(the broker uses queue and exchange objects), ``arguments`` a field table (dict, maybe empty).
Two bindings that differ only in their arguments are distinct bindings, as in RabbitMQ, but a
destination is routed to at most once per publish.

Matchers are immutable (copy-on-write).  ``with_binding``/``without_binding``/
``without_destination`` return a new matcher that shares every unchanged part with the old one;
the old one stays valid and unchanged, so a publisher can route on a snapshot without taking any
lock while another thread rebinds.  Nothing in a matcher is mutated after it is returned (but
for the caches below, which change no content), so this also holds without the GIL.

Costs, for N bindings on the matcher and D destinations:

* ``route``: direct O(1), fanout O(1) (both return a shared frozenset, no allocation; see the
  classes for the first routes of a version past ``pmap.SMALL`` entries);
  topic O(w * s) for a key of w words and s live trie states (s is small; it never exceeds the
  trie size, because states are deduplicated, so ``#.#.#`` style patterns cannot blow up);
  headers O(sum of binding sizes), as in RabbitMQ.
* a binding change: O(log N) whatever the type (``syncmq.broker.pmap``'s persistent maps, see
  ``Matcher``): the binding table plus the index part, direct O(log K + log D) for K distinct
  keys and D destinations on the key, fanout O(log D) (O(SMALL) below SMALL destinations),
  topic O(w log fan-out) for a key of w words, headers O(log N + size of the arguments).
  ``with_bindings`` adds many at once in O(N + k).

Routing reads only immutable data; the one thing a route may store is a cache: a plain dict
or frozenset view of a persistent map (``PMap.as_dict``/``key_set``/``hot_dict``, and
``DirectMatcher._flat``), a pure function of that version's bindings, built whole and stored
by one attribute store, so readers see it absent or complete.

Semantics follow RabbitMQ (rabbit_exchange_type_{direct,fanout,topic,headers} and
rabbit_db_topic_exchange); see the docstrings of the classes for the details and edge cases.
"""


from __future__ import annotations

from . import pmap
from .federation import FEDERATION_UPSTREAM, link_params, should_forward
from .headers import HeadersMatcher, validate_headers_binding
from .matcher import _EMPTY, Matcher
from .pmap import PMap, pm_del, pm_from_dict, pm_set
from .topic import TopicMatcher, topic_words

__all__ = [
    "Matcher",
    "DirectMatcher",
    "FanoutMatcher",
    "TopicMatcher",
    "HeadersMatcher",
    "FederationUpstreamMatcher",
    "matcher_for",
    "validate_headers_binding",
    "topic_words",
]



# ---------------------------------------------------------------------------------------------
# direct


class DirectMatcher(Matcher):
    """Direct exchange: a destination receives a message if it is bound with exactly the
    message's routing key (byte-for-byte; ``*`` and ``#`` are ordinary characters here).

    Index: ``_table``, a persistent map ``{routing_key: destinations}``; the destinations of a
    key are a frozenset up to ``pmap.SMALL`` of them, else a persistent map ``{dest: None}``
    (``_big`` counts those keys), so a bind or unbind replaces one entry of each: O(log K +
    log D) for K distinct keys and D destinations on the key, not a copy of either.

    A matcher's class says how it routes: a ``DirectMatcher`` has a dict ``_table`` and no
    big key, and routes with one ``dict.get`` returning a ready frozenset (the same code as
    before the table was persistent); any other version is a ``_WideDirect`` (see there).
    ``_set_table`` picks the class of each version, before it is published.
    """

    __slots__ = ("_table", "_big", "_flat")

    exchange_type = "direct"

    def _build_index(self) -> None:
        table: dict[str, dict] = {}
        for dest, per_dest in self._bindings.items():
            for key in per_dest:
                table.setdefault(key, {})[dest] = None
        table = {k: _dest_set(pm_from_dict(v)) for k, v in table.items()}
        self._big = sum(type(v) is PMap for v in table.values())
        self._set_table(pm_from_dict(table))

    def _set_table(self, table) -> None:
        self._table = table
        self._flat = None
        self.__class__ = DirectMatcher if type(table) is dict and not self._big else _WideDirect

    def _copy_index_to(self, other) -> None:
        other._table = self._table
        other._big = self._big
        other._flat = self._flat

    def _change(self, key, dest, add: bool) -> None:
        old = self._table.get(key)
        new = _dest_add(old, dest) if add else _dest_remove(old, dest)
        self._big += (type(new) is PMap) - (type(old) is PMap)
        self._set_table(pm_set(self._table, key, new) if new is not None
                        else pm_del(self._table, key))

    def _index_added(self, dest, key, args, new_dest, new_key) -> None:
        if new_key:
            self._change(key, dest, True)

    def _index_removed(self, dest, key, args, gone_dest, gone_key) -> None:
        if gone_key:
            self._change(key, dest, False)

    def _index_removed_dest(self, dest, per_dest) -> None:
        for key in per_dest:
            self._change(key, dest, False)

    def _index_state(self):
        return {k: frozenset(v) if type(v) is frozenset else v.key_set()
                for k, v in self._table.items()}

    def route(self, routing_key: str, headers: dict | None = None) -> frozenset:
        """Destinations bound with exactly ``routing_key``.  O(1), no allocation."""
        return self._table.get(routing_key, _EMPTY)

    def _check(self) -> None:
        super()._check()
        big = 0
        for key, dests in self._table.items():
            if type(dests) is PMap:
                big += 1
                dests._check()
            else:
                assert type(dests) is frozenset and 0 < len(dests) <= pmap.SMALL, (key, dests)
        assert big == self._big, (big, self._big)
        assert (type(self) is DirectMatcher) == (type(self._table) is dict and not big)
        if self._flat is not None:
            assert not big and self._flat == dict(self._table.items()), "stale _flat"


class _WideDirect(DirectMatcher):
    """A direct matcher with more than ``pmap.SMALL`` distinct keys or a key with more than
    ``pmap.SMALL`` destinations (see ``DirectMatcher``).

    ``_flat`` is the plain dict it routes on once the table's ``hot_dict`` is built (the
    table read about ``len / pmap.HOT`` times in this version; stored here by one attribute
    store, a cache of this version's own table), and only when no key is big.  Until then a
    route walks the persistent map, O(log K); a key with big destinations returns their
    ``key_set``, built on the first route to it in this version (O(D), as the D copies)."""

    __slots__ = ()

    def route(self, routing_key: str, headers: dict | None = None) -> frozenset:
        flat = self._flat
        if flat is not None:
            return flat.get(routing_key, _EMPTY)
        table = self._table
        if type(table) is PMap:
            hot = table.hot_dict()
            if hot is not None:
                table = hot
                if not self._big:
                    self._flat = hot
        dests = table.get(routing_key, _EMPTY)
        return dests if type(dests) is frozenset else dests.key_set()


def _dest_set(d):
    """A key's destinations from their persistent map form (``{dest: None}``, non-empty):
    a frozenset while small, else the map itself."""
    return frozenset(d) if type(d) is dict else d


def _dest_add(dests, dest):
    """``dests`` (None, a frozenset or a PMap) with ``dest``.  O(SMALL) or O(log D)."""
    if dests is None:
        dests = _EMPTY
    if type(dests) is frozenset:
        if len(dests) < pmap.SMALL:
            return dests.union((dest,))
        grown = dict.fromkeys(dests)
        grown[dest] = None
        return _dest_set(pm_from_dict(grown))
    return pm_set(dests, dest, None)


def _dest_remove(dests, dest):
    """``dests`` without ``dest``, None when empty.  O(SMALL) or O(log D)."""
    if type(dests) is frozenset:
        return dests.difference((dest,)) or None
    rest = pm_del(dests, dest)
    return _dest_set(rest) if rest else None


# ---------------------------------------------------------------------------------------------
# fanout


class FanoutMatcher(Matcher):
    """Fanout exchange: every bound destination, whatever the routing key and headers.

    Index: ``_dests``, the frozenset of bound destinations while the binding table is a dict
    (at most ``pmap.SMALL`` destinations; rebuilt on a destination's first bind or last
    unbind: O(SMALL)), routed with no allocation.  Beyond, ``_dests`` is None and the
    version is a ``_WideFanout`` (``_build_index`` picks the class), which routes on the
    table's ``key_set``, built on the first route of each version: O(D), as the publish's D
    copies are.  A bind or unbind is O(log D) then (the table's persistent map, ``Matcher``).
    """

    __slots__ = ("_dests",)

    exchange_type = "fanout"
    _shapes: tuple | None = None  # (narrow class, wide class); None: keep the class

    def _build_index(self) -> None:
        b = self._bindings
        self._dests = frozenset(b) if type(b) is dict else None
        shapes = self._shapes
        if shapes is not None:
            self.__class__ = shapes[self._dests is None]

    def _copy_index_to(self, other) -> None:
        other._dests = self._dests

    def _index_added(self, dest, key, args, new_dest, new_key) -> None:
        if new_dest:
            self._build_index()

    def _index_removed(self, dest, key, args, gone_dest, gone_key) -> None:
        if gone_dest:
            self._build_index()

    def _index_removed_dest(self, dest, per_dest) -> None:
        self._build_index()

    def _index_state(self):
        return self._dests

    def route(self, routing_key: str = "", headers: dict | None = None) -> frozenset:
        """Every bound destination.  O(1), no allocation."""
        return self._dests


class _WideFanout(FanoutMatcher):
    """A fanout matcher with more than ``pmap.SMALL`` destinations (see ``FanoutMatcher``)."""

    __slots__ = ()

    def route(self, routing_key: str = "", headers: dict | None = None) -> frozenset:
        """Every bound destination: O(D) on a version's first route, then O(1)."""
        return self._bindings.key_set()


FanoutMatcher._shapes = (FanoutMatcher, _WideFanout)


# ---------------------------------------------------------------------------------------------
# x-federation-upstream


class FederationUpstreamMatcher(FanoutMatcher):
    """``x-federation-upstream`` (see ``syncmq.broker.federation``): fanout, unless the
    message's ``x-received-from`` header says the downstream already has it. Holds its
    exchange's ``(max_hops, downstream_name, downstream_vhost)``, fixed at creation (an
    exchange's arguments never change), carried over to every derived matcher."""

    __slots__ = ("_params",)

    exchange_type = FEDERATION_UPSTREAM
    _shapes = None  # one class, whatever the size: its route reads ``_dests`` or the table

    def __init__(self, arguments: dict | None = None) -> None:
        self._params = link_params(arguments)
        super().__init__()

    def _copy_params_to(self, other) -> None:
        other._params = self._params

    def route(self, routing_key: str = "", headers: dict | None = None) -> frozenset:
        """Every bound destination, or none. O(entries of x-received-from)."""
        if headers and not should_forward(headers, *self._params):
            return _EMPTY
        d = self._dests
        return d if d is not None else self._bindings.key_set()


# ---------------------------------------------------------------------------------------------

_TYPES: dict[str, type[Matcher]] = {
    "direct": DirectMatcher,
    "fanout": FanoutMatcher,
    "topic": TopicMatcher,
    "headers": HeadersMatcher,
}


def matcher_for(exchange_type: str, arguments: dict | None = None) -> Matcher:
    """An empty matcher for ``exchange_type`` ("direct", "fanout", "topic", "headers",
    "x-federation-upstream"); ``arguments`` are the exchange's (read by the last one).

    Raises KeyError for any other type.  O(1).
    """
    if exchange_type == FEDERATION_UPSTREAM:
        return FederationUpstreamMatcher(arguments)
    return _TYPES[exchange_type]()
