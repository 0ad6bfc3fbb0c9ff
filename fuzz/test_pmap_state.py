"""Hypothesis tests of the persistent maps under the matchers (``syncmq.broker.pmap``, issue
#22: a flat-cost bind) and of the matchers built on them.

* :class:`PMapMachine`: set/delete at random on a persistent map next to a plain dict, with
  tiny ``SMALL``/``LEAF`` (so the dict -> trie -> dict transitions, leaf splits and branch
  pruning all happen in a few steps) and keys whose hashes collide on every bit; every old
  version kept must still read as its own model (nothing shared is ever mutated).
* :class:`TinyPMapMatcherMachine`: the exchange matchers' stateful test
  (``test_structures_state.MatcherMachine``: interleaved bind/unbind/bulk/drop against a
  naive matcher per binding, old snapshots still routing as their own model) with the same
  tiny sizes, so the topic trie's wide nodes and the binding table are persistent tries.
* :func:`test_routing_while_another_thread_binds`: a real thread binds and unbinds while
  another routes, without a lock, on whatever version was last published, and compares with
  a naive matcher over that version's bindings.
"""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from syncmq.broker import pmap
from syncmq.broker.pmap import PMap, pm_del, pm_from_dict, pm_set
from syncmq.broker.routing import matcher_for

from .test_structures_state import SETTINGS, MatcherMachine, freeze, topic_oracle


class Collider:
    """A key whose hash is one of 3 values: equal hash bits at every level of the trie."""

    __slots__ = ("v",)

    def __init__(self, v: int) -> None:
        self.v = v

    def __hash__(self) -> int:
        return self.v % 3 - 2  # negative hashes too

    def __eq__(self, other) -> bool:
        return type(other) is Collider and other.v == self.v

    def __repr__(self) -> str:
        return f"C{self.v}"


keys = st.one_of(st.integers(0, 60), st.text("ab.", max_size=3),
                 st.integers(0, 12).map(Collider))


class _TinySizes:
    """Sets ``pmap.SMALL``/``pmap.LEAF`` for one run of a machine, restored at teardown."""

    def _shrink(self, small: int, leaf: int) -> None:
        self._saved = (pmap.SMALL, pmap.LEAF)
        pmap.SMALL, pmap.LEAF = small, leaf

    def teardown(self) -> None:
        saved = getattr(self, "_saved", None)
        if saved is not None:
            pmap.SMALL, pmap.LEAF = saved


class PMapMachine(_TinySizes, RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = {}
        self.model: dict = {}
        self.versions: list = []

    @initialize(small=st.integers(0, 4), leaf=st.integers(1, 3))
    def sizes(self, small, leaf):
        self._shrink(small, leaf)

    @rule(k=keys, v=st.integers())
    def set(self, k, v):
        self.m = pm_set(self.m, k, v)
        self.model[k] = v

    @rule(k=keys)
    def delete(self, k):
        new = pm_del(self.m, k)
        if k not in self.model:
            assert new is self.m
        self.model.pop(k, None)
        self.m = new

    @rule()
    def rebuild(self):
        self.m = pm_from_dict(dict(self.m.items()))

    @rule()
    def views(self):
        """The cached views (built once, kept with the map) equal the model; later versions
        derived from this one must not inherit them (``_check`` compares every cache)."""
        if isinstance(self.m, PMap):
            assert self.m.as_dict() == self.model and self.m.as_dict() is self.m.as_dict()
            assert self.m.key_set() == frozenset(self.model)
            assert self.m.hot_dict() is self.m.as_dict()

    @rule()
    def keep(self):
        self.versions.append((self.m, dict(self.model)))

    @invariant()
    def same_as_model(self):
        if isinstance(self.m, PMap):
            self.m._check()
        else:
            assert type(self.m) is dict and len(self.m) <= pmap.SMALL
        assert list(self.m.items()) == list(self.model.items())  # insertion order too
        assert len(self.m) == len(self.model)
        for k, v in self.model.items():
            assert k in self.m and self.m.get(k) == v
        assert self.m.get(Collider(99), "none") == "none" and Collider(98) not in self.m
        for old, model in self.versions[-3:]:
            assert list(old.items()) == list(model.items())


TestPMap = PMapMachine.TestCase
TestPMap.settings = SETTINGS


class TinyPMapMatcherMachine(_TinySizes, MatcherMachine):
    """``MatcherMachine`` with persistent maps of 0-2 entries before they become tries."""

    @initialize(kind=st.sampled_from(["direct", "fanout", "topic", "headers"]),
                small=st.integers(0, 2), leaf=st.integers(1, 2))
    def make(self, kind, small, leaf):
        self._shrink(small, leaf)
        super().make(kind)

    @invariant()
    def snapshots_unchanged(self):
        """Every kept version still lists and routes its own bindings (a shared node
        mutated by a later change would show here), for a few keys at every step."""
        for old, model in self.snapshots[-3:]:
            assert sorted((d, k, freeze(a)) for d, k, a in old.bindings()) == sorted(model)
            for key in ("", "a", "b", "ab", "a.b", "b.a", "a.a", ".", "a.b.ab"):
                for headers in (None, {"a": 1, "x-c": "1"}):
                    assert set(old.route(key, headers)) == self.expected(model, key, headers)


TestTinyPMapMatcher = TinyPMapMatcherMachine.TestCase
TestTinyPMapMatcher.settings = SETTINGS


_ORACLES = {
    "topic": topic_oracle,
    "direct": lambda binding, key: binding == key,
    "fanout": lambda binding, key: True,
    "headers": lambda binding, key: True,  # no arguments: x-match all of nothing
}


@pytest.mark.parametrize("kind", list(_ORACLES))
@pytest.mark.parametrize("small", [0, 128])
def test_routing_while_another_thread_binds(small, kind):
    """One thread binds and unbinds at random and publishes each new matcher (with the set
    of bindings it holds) by one store; another routes on the last published one, without a
    lock (the latest, or an older one), and must get exactly what a naive matcher over that
    version's bindings gets. Both run until the writer made 3,000 changes; then a sample of
    the versions is checked again (none changed after it was published). The reader's routes
    also fill the versions' caches (``PMap.hot_dict``/``key_set``, ``DirectMatcher._flat``;
    ``pmap.HOT`` = 1 builds them early) while the writer derives new versions from them."""
    saved = pmap.SMALL, pmap.HOT
    pmap.SMALL, pmap.HOT = small, 1
    oracle = _ORACLES[kind]
    try:
        words = ["a", "b", "c", "*", "#", ""]
        pool = [".".join(random.Random(i).choices(words, k=i % 4 + 1)) for i in range(40)]
        pool += [f"w.{i}" for i in range(300)]  # a wide node
        current = [(matcher_for(kind), frozenset())]
        history = list(current)  # every version published, in order
        done = threading.Event()
        errors: list = []

        def writer():
            rnd = random.Random(7)
            m, model = current[0]
            for _ in range(3000):
                b = (rnd.randrange(6), rnd.choice(pool))
                if b in model:
                    m, model = m.without_binding(*b, None), model - {b}
                else:
                    m, model = m.with_binding(*b, None), model | {b}
                current[0] = (m, model)
                history.append((m, model))
            done.set()

        def reader():
            rnd = random.Random(8)
            keys_ = ["a.b", "a", "", "c.c.c", "w.7", "w.299", "w", "b..a"]
            try:
                while not done.is_set():
                    # the latest version, or one a slow publisher may still hold
                    m, model = current[0] if rnd.random() < 0.5 else rnd.choice(history)
                    key = rnd.choice(keys_)
                    want = {d for d, b in model if oracle(b, key)}
                    assert set(m.route(key)) == want, (key, sorted(model))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors[0]
        current[0][0]._check()
        for m, model in history[::50]:  # no version changed after it was published
            assert {(d, k) for d, k, _ in m.bindings()} == model
            for key in ("a.b", "w.7", "c", "w.150"):
                assert set(m.route(key)) == {d for d, b in model if oracle(b, key)}
    finally:
        pmap.SMALL, pmap.HOT = saved


@SETTINGS
@given(st.lists(st.integers(0, 3000).map(str) | st.sampled_from(["*", "#", "", "1.#"]),
                max_size=400, unique=True))
def test_wide_topic_node_routes_like_the_oracle(suffixes):
    """Hundreds of children under one word (a PMap node at the default sizes)."""
    m = matcher_for("topic")
    for i, s in enumerate(suffixes):
        m = m.with_binding(i, f"x.{s}", None)
    m._check()
    for s in suffixes[:20] + ["zz", "", "1.2"]:
        key = f"x.{s}"
        assert set(m.route(key)) == {i for i, t in enumerate(suffixes)
                                     if topic_oracle(f"x.{t}", key)}
