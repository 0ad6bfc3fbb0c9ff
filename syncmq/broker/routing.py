"""Exchange-type matchers: which destinations a publish reaches.

A binding is ``(destination, routing_key, arguments)``: ``destination`` is any hashable object
(the broker uses queue and exchange objects), ``arguments`` a field table (dict, maybe empty).
Two bindings that differ only in their arguments are distinct bindings, as in RabbitMQ, but a
destination is routed to at most once per publish.

Matchers are immutable (copy-on-write).  ``with_binding``/``without_binding``/
``without_destination`` return a new matcher that shares every unchanged part with the old one;
the old one stays valid and unchanged, so a publisher can route on a snapshot without taking any
lock while another thread rebinds.  Nothing in a matcher is mutated after it is returned, so this
also holds without the GIL.

Costs, for N bindings on the matcher and D destinations:

* ``route``: direct O(1), fanout O(1) (both return a shared frozenset, no allocation);
  topic O(w * s) for a key of w words and s live trie states (s is small; it never exceeds the
  trie size, because states are deduplicated, so ``#.#.#`` style patterns cannot blow up);
  headers O(sum of binding sizes), as in RabbitMQ.
* a binding change: O(D) to copy the destination map (a C-level dict copy) plus the index part:
  direct O(K) for K distinct keys, fanout O(D), topic O(depth * fanout along the path), headers
  O(D + bindings of that destination).  ``with_bindings`` adds many at once in O(N + k).

Semantics follow RabbitMQ (rabbit_exchange_type_{direct,fanout,topic,headers} and
rabbit_db_topic_exchange); see the docstrings of the classes for the details and edge cases.
"""


from __future__ import annotations

from .federation import FEDERATION_UPSTREAM, link_params, should_forward
from .headers import HeadersMatcher, validate_headers_binding
from .matcher import _EMPTY, Matcher
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

    Index: ``{routing_key: frozenset(destinations)}``.
    """

    __slots__ = ("_table",)

    exchange_type = "direct"

    def _build_index(self) -> None:
        table: dict[str, set] = {}
        for dest, per_dest in self._bindings.items():
            for key in per_dest:
                table.setdefault(key, set()).add(dest)
        self._table = {k: frozenset(v) for k, v in table.items()}

    def _copy_index_to(self, other) -> None:
        other._table = self._table

    def _index_added(self, dest, key, args, new_dest, new_key) -> None:
        if new_key:
            table = dict(self._table)
            table[key] = table.get(key, _EMPTY).union((dest,))
            self._table = table

    def _index_removed(self, dest, key, args, gone_dest, gone_key) -> None:
        if gone_key:
            table = dict(self._table)
            self._discard(table, key, dest)
            self._table = table

    def _index_removed_dest(self, dest, per_dest) -> None:
        table = dict(self._table)
        for key in per_dest:
            self._discard(table, key, dest)
        self._table = table

    @staticmethod
    def _discard(table, key, dest) -> None:
        rest = table[key].difference((dest,))
        if rest:
            table[key] = rest
        else:
            del table[key]

    def _index_state(self):
        return self._table

    def route(self, routing_key: str, headers: dict | None = None) -> frozenset:
        """Destinations bound with exactly ``routing_key``.  O(1), no allocation."""
        return self._table.get(routing_key, _EMPTY)

    def _check(self) -> None:
        super()._check()
        for key, dests in self._table.items():
            assert type(dests) is frozenset and dests, (key, dests)


# ---------------------------------------------------------------------------------------------
# fanout


class FanoutMatcher(Matcher):
    """Fanout exchange: every bound destination, whatever the routing key and headers."""

    __slots__ = ("_dests",)

    exchange_type = "fanout"

    def _build_index(self) -> None:
        self._dests = frozenset(self._bindings)

    def _copy_index_to(self, other) -> None:
        other._dests = self._dests

    def _index_added(self, dest, key, args, new_dest, new_key) -> None:
        if new_dest:
            self._dests = self._dests.union((dest,))

    def _index_removed(self, dest, key, args, gone_dest, gone_key) -> None:
        if gone_dest:
            self._dests = self._dests.difference((dest,))

    def _index_removed_dest(self, dest, per_dest) -> None:
        self._dests = self._dests.difference((dest,))

    def _index_state(self):
        return self._dests

    def route(self, routing_key: str = "", headers: dict | None = None) -> frozenset:
        """Every bound destination.  O(1), no allocation."""
        return self._dests


# ---------------------------------------------------------------------------------------------
# x-federation-upstream


class FederationUpstreamMatcher(FanoutMatcher):
    """``x-federation-upstream`` (see ``syncmq.broker.federation``): fanout, unless the
    message's ``x-received-from`` header says the downstream already has it. Holds its
    exchange's ``(max_hops, downstream_name, downstream_vhost)``, fixed at creation (an
    exchange's arguments never change), carried over to every derived matcher."""

    __slots__ = ("_params",)

    exchange_type = FEDERATION_UPSTREAM

    def __init__(self, arguments: dict | None = None) -> None:
        self._params = link_params(arguments)
        super().__init__()

    def _copy_params_to(self, other) -> None:
        other._params = self._params

    def route(self, routing_key: str = "", headers: dict | None = None) -> frozenset:
        """Every bound destination, or none. O(entries of x-received-from)."""
        if headers and not should_forward(headers, *self._params):
            return _EMPTY
        return self._dests


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
