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

import calendar
from datetime import datetime
from decimal import Decimal

__all__ = [
    "Matcher",
    "DirectMatcher",
    "FanoutMatcher",
    "TopicMatcher",
    "HeadersMatcher",
    "matcher_for",
    "validate_headers_binding",
    "topic_words",
]

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
    is a dict that is never mutated once the matcher is built, so a new matcher copies only the
    levels on the changed path.
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

    def _derive(self, bindings: dict, count: int) -> Matcher:
        new = object.__new__(type(self))
        new._bindings = bindings
        new._count = count
        self._copy_index_to(new)
        return new

    # -- public API -----------------------------------------------------------------------------

    def with_binding(self, destination, routing_key: str, arguments: dict | None) -> Matcher:
        """A matcher with the binding added (``self`` if it is already there); self unchanged.

        O(D + size of arguments) plus the index update (see the module docstring).
        """
        args = dict(arguments) if arguments else {}
        self._validate(args)
        akey = _freeze_table(args)
        per_dest = self._bindings.get(destination)
        per_key = per_dest.get(routing_key) if per_dest is not None else None
        if per_key is not None and akey in per_key:
            return self
        new_per_key = dict(per_key) if per_key is not None else {}
        new_per_key[akey] = args
        new_per_dest = dict(per_dest) if per_dest is not None else {}
        new_per_dest[routing_key] = new_per_key
        bindings = dict(self._bindings)
        bindings[destination] = new_per_dest
        new = self._derive(bindings, self._count + 1)
        new._index_added(destination, routing_key, args, per_dest is None, per_key is None)
        return new

    def with_bindings(self, bindings) -> Matcher:
        """A matcher with every ``(destination, routing_key, arguments)`` of ``bindings`` added.

        For recovery and bulk changes: O(N + k) for k new bindings, instead of k * O(D).
        """
        nested = {d: {k: dict(pk) for k, pk in pd.items()} for d, pd in self._bindings.items()}
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
        new._bindings = nested
        new._count = count
        new._build_index()
        return new

    def without_binding(self, destination, routing_key: str, arguments: dict | None) -> Matcher:
        """A matcher without that binding (``self`` if it is not there); self unchanged.

        O(D + size of arguments) plus the index update.
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
        bindings = dict(self._bindings)
        gone_key = len(per_key) == 1
        gone_dest = gone_key and len(per_dest) == 1
        if gone_dest:
            del bindings[destination]
        else:
            new_per_dest = dict(per_dest)
            if gone_key:
                del new_per_dest[routing_key]
            else:
                new_per_key = dict(per_key)
                del new_per_key[akey]
                new_per_dest[routing_key] = new_per_key
            bindings[destination] = new_per_dest
        new = self._derive(bindings, self._count - 1)
        new._index_removed(destination, routing_key, args, gone_dest, gone_key)
        return new

    def without_destination(self, destination) -> Matcher:
        """A matcher without any binding to ``destination``; self unchanged.

        O(D) plus the index update for each of its bindings.
        """
        per_dest = self._bindings.get(destination)
        if per_dest is None:
            return self
        bindings = dict(self._bindings)
        del bindings[destination]
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
        """Every bound destination, in first-bound order.  O(D)."""
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
        for _dest, per_dest in self._bindings.items():
            assert type(per_dest) is dict and per_dest, per_dest
            for key, per_key in per_dest.items():
                assert isinstance(key, str), key
                assert type(per_key) is dict and per_key, per_key
                for akey, args in per_key.items():
                    assert type(args) is dict, args
                    assert akey == _freeze_table(args), (akey, args)
                    n += 1
        assert n == self._count, (n, self._count)
        fresh = object.__new__(type(self))
        fresh._bindings = self._bindings
        fresh._count = self._count
        fresh._build_index()
        assert self._index_state() == fresh._index_state(), "index differs from a rebuild"


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
# topic


def topic_words(key: str) -> list[str]:
    """Split a routing or binding key into words as RabbitMQ does.

    ``""`` is *no* word at all; otherwise every ``.`` separates two words, which may be empty:
    ``"a..b"`` is ``["a", "", "b"]`` and ``"."`` is ``["", ""]``.
    """
    return key.split(".") if key else []


class _TNode:
    """One trie node: the binding-key words so far.  Immutable once built.

    ``is_hash`` says the edge into this node was ``#``, so the node may also consume any word
    and stay where it is.  A ``#`` node without children is *terminal*: once reached, whatever
    words follow, its destinations match.  Derived fields, for ``route``:

    * ``closure``: the nodes reachable without consuming a word (the node and its chain of ``#``
      children, ``#`` matching zero words), leaving out a terminal ``#`` node;
    * ``sure``: the destinations of the terminal ``#`` node of that chain (None if none);
    * ``simple``: no ``*``/``#`` edge out and not a ``#`` node, so one word leads to at most one
      node (a literal child).
    """

    __slots__ = ("words", "star", "hash", "dests", "is_hash", "closure", "sure", "simple")

    def __init__(self, words: dict, star, hash_, dests: frozenset, is_hash: bool) -> None:
        self.words = words
        self.star = star
        self.hash = hash_
        self.dests = dests
        self.is_hash = is_hash
        self.simple = star is None and hash_ is None and not is_hash
        if hash_ is not None:
            self.closure = (self,) + hash_.closure
            self.sure = hash_.sure
        elif is_hash and star is None and not words:
            self.closure = ()
            self.sure = dests or None
        else:
            self.closure = (self,)
            self.sure = None

    def child(self, word: str):
        if word == "*":
            return self.star
        if word == "#":
            return self.hash
        return self.words.get(word)

    def with_child(self, word: str, child) -> _TNode:
        """A copy with the edge ``word`` leading to ``child`` (None: edge removed)."""
        words, star, hash_ = self.words, self.star, self.hash
        if word == "*":
            star = child
        elif word == "#":
            hash_ = child
        else:
            words = dict(words)
            if child is None:
                words.pop(word, None)
            else:
                words[word] = child
            if not words:
                words = _NO_WORDS
        return _TNode(words, star, hash_, self.dests, self.is_hash)

    def is_empty(self) -> bool:
        return not self.dests and not self.words and self.star is None and self.hash is None


_NO_WORDS: dict = {}  # shared by every node without literal children; never mutated


def _t_empty(is_hash: bool) -> _TNode:
    return _TNode(_NO_WORDS, None, None, _EMPTY, is_hash)


def _t_change(root: _TNode | None, words: list[str], dest, add: bool) -> _TNode | None:
    """Path-copy ``root`` with ``dest`` added to / removed from the node at ``words``.

    O(len(words) * literal fan-out along the path).  Removing prunes nodes left empty; the
    result is None when the whole trie is empty.
    """
    path = []
    node = root
    for w in words:
        path.append(node)
        node = node.child(w) if node is not None else None
    if node is None:
        if not add:
            return root
        node = _t_empty(bool(words) and words[-1] == "#")
    dests = node.dests.union((dest,)) if add else node.dests.difference((dest,))
    new = _TNode(node.words, node.star, node.hash, dests, node.is_hash)
    if new.is_empty():
        new = None
    for depth in range(len(words) - 1, -1, -1):
        parent = path[depth]
        if parent is None:
            parent = _t_empty(depth > 0 and words[depth - 1] == "#")
        new = parent.with_child(words[depth], new)
        if new.is_empty():
            new = None
    return new


def _t_build(entries) -> _TNode | None:
    """Build a trie from ``(words, dest)`` pairs in one pass.  O(total words)."""
    # mutable proto nodes: [literal children, star, hash, dests]
    root = [{}, None, None, set()]
    for words, dest in entries:
        node = root
        for w in words:
            if w == "*":
                if node[1] is None:
                    node[1] = [{}, None, None, set()]
                node = node[1]
            elif w == "#":
                if node[2] is None:
                    node[2] = [{}, None, None, set()]
                node = node[2]
            else:
                nxt = node[0].get(w)
                if nxt is None:
                    nxt = node[0][w] = [{}, None, None, set()]
                node = nxt
        node[3].add(dest)

    def freeze(proto, is_hash):
        words = {w: freeze(c, False) for w, c in proto[0].items()} or _NO_WORDS
        star = freeze(proto[1], False) if proto[1] is not None else None
        hash_ = freeze(proto[2], True) if proto[2] is not None else None
        return _TNode(words, star, hash_, frozenset(proto[3]), is_hash)

    node = freeze(root, False)
    return None if node.is_empty() else node


def _t_dump(node: _TNode | None):
    """A canonical nested-tuple picture of a trie, checking node invariants on the way."""
    if node is None:
        return None
    assert type(node.dests) is frozenset
    terminal = node.is_hash and not node.words and node.star is None and node.hash is None
    if node.hash is not None:
        closure, sure = (node,) + node.hash.closure, node.hash.sure
    elif terminal:
        closure, sure = (), node.dests
    else:
        closure, sure = (node,), None
    assert node.closure == closure and node.sure == sure, "stale closure"
    assert node.simple == (node.star is None and node.hash is None and not node.is_hash)
    if node.hash is not None:
        assert node.hash.is_hash
    if node.star is not None:
        assert not node.star.is_hash
    for w, c in node.words.items():
        assert w not in ("*", "#"), w
        assert not c.is_hash
    for c in (node.star, node.hash, *node.words.values()):
        if c is not None:
            assert not c.is_empty(), "empty node kept"
    return (
        node.is_hash,
        node.dests,
        tuple(sorted((w, _t_dump(c)) for w, c in node.words.items())),
        _t_dump(node.star),
        _t_dump(node.hash),
    )


class TopicMatcher(Matcher):
    """Topic exchange, as RabbitMQ (rabbit_db_topic_exchange).

    Keys are split into words on ``.`` (see ``topic_words``: ``""`` has no word, empty words are
    words).  In a binding key ``*`` matches exactly one word and ``#`` zero or more; other words
    (including ones like ``a*``) match literally.  In a routing key ``*`` and ``#`` are plain
    words.  So ``#`` matches ``""``, ``a.#`` matches ``a``, ``#.#`` is the same as ``#``, ``*``
    does not match ``""`` but ``*.*`` matches ``"."``; the binding key ``""`` matches only the
    routing key ``""``.

    Index: an immutable trie of binding-key words, path-copied on change.  Routing walks it as an
    NFA (a set of live nodes per word), never backtracking and never building a regex.
    """

    __slots__ = ("_root",)

    exchange_type = "topic"

    def _build_index(self) -> None:
        self._root = _t_build(
            (topic_words(key), dest)
            for dest, per_dest in self._bindings.items()
            for key in per_dest
        )

    def _copy_index_to(self, other) -> None:
        other._root = self._root

    def _index_added(self, dest, key, args, new_dest, new_key) -> None:
        if new_key:
            self._root = _t_change(self._root, topic_words(key), dest, True)

    def _index_removed(self, dest, key, args, gone_dest, gone_key) -> None:
        if gone_key:
            self._root = _t_change(self._root, topic_words(key), dest, False)

    def _index_removed_dest(self, dest, per_dest) -> None:
        root = self._root
        for key in per_dest:
            root = _t_change(root, topic_words(key), dest, False)
        self._root = root

    def _index_state(self):
        return _t_dump(self._root)

    def route(self, routing_key: str, headers: dict | None = None) -> set | frozenset:
        """Destinations whose binding key matches ``routing_key``.

        O(w * s): w words, s live trie nodes per step (deduplicated, so bounded by the trie).
        Walks a literal-only prefix without any allocation; stops early once only terminal
        ``#`` nodes are left.  Returns a node's own frozenset when one node matches.
        """
        node = self._root
        if node is None:
            return _EMPTY
        words = routing_key.split(".") if routing_key else ()
        n = len(words)
        i = 0
        # fast path: while one word leads to at most one node
        while i < n and node.simple:
            node = node.words.get(words[i])
            if node is None:
                return _EMPTY
            i += 1
        states = node.closure
        sure = [node.sure] if node.sure is not None else []
        while i < n and states:
            w = words[i]
            i += 1
            nxt: list = []
            ext = nxt.extend
            stay = False
            for s in states:
                c = s.words.get(w)
                if c is not None:
                    ext(c.closure)
                    if c.sure is not None:
                        sure.append(c.sure)
                c = s.star
                if c is not None:
                    ext(c.closure)
                    if c.sure is not None:
                        sure.append(c.sure)
                if s.is_hash:
                    ext(s.closure)
                    stay = True
            # without a '#' node staying put, no node can be reached twice
            states = set(nxt) if stay and len(nxt) > 1 else nxt
        if i < n:
            states = ()
        for s in states:
            if s.dests:
                sure.append(s.dests)
        if not sure:
            return _EMPTY
        if len(sure) == 1:
            return sure[0]
        return _EMPTY.union(*sure)


# ---------------------------------------------------------------------------------------------
# headers

_X_MATCH_MODES = {
    "all": (True, False),
    "any": (False, False),
    "all-with-x": (True, True),
    "any-with-x": (False, True),
}

_PLAIN_TYPES = frozenset((str, int, float, bytes, bool))
_NUMBER_TYPES = (int, float)
_BINARY_TYPES = (str, bytes, bytearray, memoryview)
_SEQ_TYPES = (list, tuple)
_COMPLEX = object()  # "compare with _values_equal" marker in a compiled binding


def validate_headers_binding(arguments: dict | None) -> str | None:
    """None if ``arguments`` is a valid headers-exchange binding, else a reply text for the
    broker's 406 PRECONDITION_FAILED.  O(1).

    As RabbitMQ (rabbit_exchange_type_headers:validate_binding): ``x-match`` may be absent
    (meaning ``all``); otherwise it must be a long string (``str`` from the codec) equal to
    ``all``, ``any``, ``all-with-x`` or ``any-with-x``.
    """
    if not arguments:
        return None
    value = arguments.get("x-match", _MISSING)
    if value is _MISSING:
        return None
    if type(value) is str:
        if value in _X_MATCH_MODES:
            return None
        return (f"Invalid x-match field value {_erl(value)}; "
                "expected all, any, all-with-x, or any-with-x")
    if isinstance(value, bytes | bytearray | memoryview):
        # the codec hands a long string over as bytes only when it is not UTF-8 (so it cannot
        # be a valid mode); bytes that are UTF-8 came from a byte array ('x'), the wrong type
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return (f"Invalid x-match field value {_erl(bytes(value))}; "
                    "expected all, any, all-with-x, or any-with-x")
        kind = "binary"
    else:
        kind = _FIELD_KIND.get(type(value), type(value).__name__)
        if kind == "signedint" and not -2 ** 31 <= value < 2 ** 31:
            kind = "long"
    return f"Invalid x-match field type {kind} (value {_erl(value)}); expected longstr"


def _erl(value) -> str:
    """A value as Erlang's ``~p`` prints it in RabbitMQ's text (binaries as <<"...">>)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return '<<"' + value.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"') + '">>'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "undefined"
    return repr(value)


# RabbitMQ's field type names (rabbit_binary_parser), as rabbit_exchange_type_headers prints
# them; the codec keeps Python values, so these are the types a client encodes them as
_FIELD_KIND = {bool: "bool", int: "signedint", float: "double", Decimal: "decimal",
               dict: "table", list: "array", tuple: "array", datetime: "timestamp",
               type(None): "void"}


def _x_match(args: dict) -> tuple[bool, bool]:
    """(match all?, include x- keys?) of a binding; anything unknown counts as ``all``."""
    value = args.get("x-match")
    return _X_MATCH_MODES.get(value, (True, False)) if type(value) is str else (True, False)


def _as_bytes(v) -> bytes:
    return v.encode("utf-8") if type(v) is str else bytes(v)


def _values_equal(p, d) -> bool:
    """Whether header value ``d`` matches binding value ``p``, the way RabbitMQ compares them.

    RabbitMQ compares the untyped values with Erlang ``==``: numbers by value (so 1 matches 1.0
    and a long matches a short int), strings and byte arrays by their bytes, booleans only with
    booleans, decimals by scale and digits, timestamps as seconds.
    """
    tp = type(p)
    td = type(d)
    if tp is td:
        if tp in _PLAIN_TYPES:
            return p == d
        if tp is dict:
            if p.keys() != d.keys():
                return False
            return all(_values_equal(v, d[k]) for k, v in p.items())
        if tp is list or tp is tuple:
            return len(p) == len(d) and all(map(_values_equal, p, d))
        if tp is Decimal:
            return p == d and p.as_tuple().exponent == d.as_tuple().exponent
        return p == d
    if tp is bool or td is bool:
        return False
    if tp in _NUMBER_TYPES and td in _NUMBER_TYPES:
        return p == d
    if isinstance(p, _BINARY_TYPES) and isinstance(d, _BINARY_TYPES):
        return _as_bytes(p) == _as_bytes(d)
    if isinstance(p, _SEQ_TYPES) and isinstance(d, _SEQ_TYPES):
        return len(p) == len(d) and all(map(_values_equal, p, d))
    if tp is Decimal or td is Decimal:
        return False
    if tp is datetime and td is int:
        return calendar.timegm(p.utctimetuple()) == d
    if tp is int and td is datetime:
        return calendar.timegm(d.utctimetuple()) == p
    try:
        return bool(p == d)
    except Exception:
        return False


def _compile_headers_binding(args: dict):
    """``(match_all, items)`` with items ``(key, value, kind)``; kind None means "void: key
    present is enough", a type means "same type and ==", ``_COMPLEX`` means ``_values_equal``.
    Returns None for a binding that can never match (``any`` with nothing to compare)."""
    match_all, with_x = _x_match(args)
    items = []
    for key, value in args.items():
        if key == "x-match":
            continue
        if not with_x and isinstance(key, str) and key.startswith("x-"):
            continue
        if value is None:
            kind = None
        elif type(value) in _PLAIN_TYPES:
            kind = type(value)
        else:
            kind = _COMPLEX
        items.append((key, value, kind))
    if not items and not match_all:
        return None
    return (match_all, tuple(items))


class HeadersMatcher(Matcher):
    """Headers exchange, as RabbitMQ (rabbit_exchange_type_headers).  Routing key ignored.

    * ``x-match``: ``all`` (default, also for any value that slipped past validation), ``any``,
      ``all-with-x``, ``any-with-x``.  ``x-match`` itself never takes part; other binding keys
      starting with ``x-`` take part only in the ``-with-x`` modes.
    * A binding value of void (None) matches when the header is present, whatever its value.
    * Other values: see ``_values_equal`` (numbers by value, strings/bytes by bytes, ...).
    * ``all`` with nothing left to compare matches every message (even one without headers);
      ``any`` with nothing left to compare matches none.

    Index: ``{destination: (compiled binding, ...)}``; routing tries each destination's bindings
    until one matches.  O(sum of binding sizes) per publish, as in RabbitMQ.
    """

    __slots__ = ("_specs",)

    exchange_type = "headers"

    def _validate(self, args: dict) -> None:
        error = validate_headers_binding(args)
        if error is not None:
            raise ValueError(error)

    @staticmethod
    def _compile_dest(per_dest: dict) -> tuple:
        seen = set()
        specs = []
        for per_key in per_dest.values():
            for akey, args in per_key.items():
                if akey in seen:
                    continue
                seen.add(akey)
                spec = _compile_headers_binding(args)
                if spec is not None:
                    specs.append(spec)
        return tuple(specs)

    def _build_index(self) -> None:
        specs = {}
        for dest, per_dest in self._bindings.items():
            compiled = self._compile_dest(per_dest)
            if compiled:
                specs[dest] = compiled
        self._specs = specs

    def _copy_index_to(self, other) -> None:
        other._specs = self._specs

    def _recompile(self, dest) -> None:
        specs = dict(self._specs)
        per_dest = self._bindings.get(dest)
        compiled = self._compile_dest(per_dest) if per_dest else ()
        if compiled:
            specs[dest] = compiled
        else:
            specs.pop(dest, None)
        self._specs = specs

    def _index_added(self, dest, key, args, new_dest, new_key) -> None:
        self._recompile(dest)

    def _index_removed(self, dest, key, args, gone_dest, gone_key) -> None:
        self._recompile(dest)

    def _index_removed_dest(self, dest, per_dest) -> None:
        if dest in self._specs:
            specs = dict(self._specs)
            del specs[dest]
            self._specs = specs

    def _index_state(self):
        return {d: [(a, [(k, _freeze(v), t is None) for k, v, t in items]) for a, items in s]
                for d, s in self._specs.items()}

    def route(self, routing_key: str = "", headers: dict | None = None) -> set | frozenset:
        """Destinations with a binding matching ``headers`` (None: no headers).

        O(sum of the sizes of the bindings tried); allocates a set only if something matches.
        """
        specs = self._specs
        if not specs:
            return _EMPTY
        h = headers if headers else _NO_ARGS
        missing = _MISSING
        res = None
        for dest, dest_specs in specs.items():
            for match_all, items in dest_specs:
                if match_all:
                    for key, value, kind in items:
                        hv = h.get(key, missing)
                        if hv is missing:
                            break
                        if kind is None:
                            continue
                        if type(hv) is kind:
                            if hv != value:
                                break
                        elif not _values_equal(value, hv):
                            break
                    else:
                        break  # every item matched
                else:
                    matched = False
                    for key, value, kind in items:
                        hv = h.get(key, missing)
                        if hv is missing:
                            continue
                        if kind is None or (hv == value if type(hv) is kind
                                            else _values_equal(value, hv)):
                            matched = True
                            break
                    if matched:
                        break
            else:
                continue  # no binding of dest matched
            if res is None:
                res = {dest}
            else:
                res.add(dest)
        return _EMPTY if res is None else res


# ---------------------------------------------------------------------------------------------

_TYPES: dict[str, type[Matcher]] = {
    "direct": DirectMatcher,
    "fanout": FanoutMatcher,
    "topic": TopicMatcher,
    "headers": HeadersMatcher,
}


def matcher_for(exchange_type: str) -> Matcher:
    """An empty matcher for ``exchange_type`` ("direct", "fanout", "topic", "headers").

    Raises KeyError for any other type.  O(1).
    """
    return _TYPES[exchange_type]()
