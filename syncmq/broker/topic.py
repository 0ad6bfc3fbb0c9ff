"""The topic exchange's matcher: a deduplicated trie of binding-key words (``*``, ``#``).

See ``syncmq.broker.routing`` for the matchers' contract and costs.
"""

from __future__ import annotations

from .matcher import _EMPTY, Matcher
from .pmap import PMap, pm_del, pm_from_dict, pm_set

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

    ``words`` maps a literal word to the child node: a persistent map (``syncmq.broker.pmap``:
    a dict up to 128 children, a hash array mapped trie beyond), so that replacing one child of
    a node with 100,000 children copies O(log n) slots, not the node's whole map.

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
            words = pm_del(words, word) if child is None else pm_set(words, word, child)
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

    O(len(words) * log(literal fan-out along the path)).  Removing prunes nodes left empty; the
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
        words = pm_from_dict({w: freeze(c, False) for w, c in proto[0].items()}) or _NO_WORDS
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
    if type(node.words) is PMap:
        node.words._check()
    else:
        assert type(node.words) is dict
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

    Costs and concurrency: a bind or unbind copies the nodes on the key's path (w words), each
    copy replacing one child in a persistent map (O(log fan-out)), and the binding table's
    two persistent levels (O(log N), see ``Matcher``): O(w log N) in all, flat in the number of
    bindings N.  Nothing reachable from a published matcher is ever mutated: a change builds
    new nodes and new map slots, shares the rest, and the vhost publishes the new matcher with
    one attribute store (``exchange.matcher``, under the vhost lock).  A publisher reads
    ``exchange.matcher`` once, without a lock, and routes on that version to the end: it
    sees every binding of that version and none of a later one, whatever binds run meanwhile.
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
