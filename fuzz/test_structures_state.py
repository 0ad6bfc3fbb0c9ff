"""Hypothesis stateful tests of the queue structures and the exchange matchers.

Each structure is driven by random operations next to a deliberately simple model (sorted lists,
dicts, a regex), and its ``_check()`` runs after every step.  ``SYNCMQ_FUZZ_EXAMPLES`` sets the
number of examples (default 200).
"""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from syncmq.broker.routing import matcher_for
from syncmq.queues.ready import PriorityReadyQueue, ReadyQueue
from syncmq.queues.unacked import UnackedMap

# Inherit the profile fuzz/conftest.py loads; without it, read the same variable ourselves.
_profile = settings()
_extra = {}
if _profile.deadline is not None:  # the library default: no project profile loaded
    _extra = {"max_examples": int(os.environ.get("SYNCMQ_FUZZ_EXAMPLES", "200")),
              "deadline": None}
SETTINGS = settings(
    _profile,
    stateful_step_count=60,
    suppress_health_check=[*_profile.suppress_health_check, HealthCheck.too_slow,
                           HealthCheck.filter_too_much],
    **_extra,
)

items = st.integers(0, 9)  # few values, so predicates and duplicates are common


def pick(seq_keys, index):
    keys = sorted(seq_keys)
    return keys[index % len(keys)]


# ----------------------------------------------------------------------------------- ReadyQueue


class ReadyQueueMachine(RuleBasedStateMachine):
    """Model: ``ready`` a list of (seq, item) kept sorted by seq; ``out`` the popped ones."""

    def __init__(self):
        super().__init__()
        self.q = ReadyQueue()
        self.ready: list[tuple[int, int]] = []
        self.out: dict[int, int] = {}
        self.last_seq = -1

    @rule(item=items)
    def push(self, item):
        seq = self.q.push(item)
        assert seq > self.last_seq
        self.last_seq = seq
        self.ready.append((seq, item))

    @rule(new=st.lists(items, max_size=5))
    def push_many(self, new):
        """As ``push`` of each, in order (Queue.publish_many's runs)."""
        seq = self.q.next_seq
        self.q.push_many(iter(new))  # (an iterator: it must not need len())
        for item in new:
            self.ready.append((seq, item))
            seq += 1
        assert self.q.next_seq == seq
        self.last_seq = seq - 1

    @rule()
    def pop(self):
        got = self.q.pop()
        if not self.ready:
            assert got is None
            return
        want = self.ready.pop(0)
        assert got == want
        self.out[got[0]] = got[1]

    @rule()
    def peek(self):
        assert self.q.peek() == (self.ready[0] if self.ready else None)

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0, 1000))
    def requeue(self, index):
        seq = pick(self.out, index)
        item = self.out.pop(seq)
        self.q.requeue(seq, item)
        self.ready.append((seq, item))
        self.ready.sort()

    @precondition(lambda self: self.out)
    @rule(data=st.data())
    def requeue_many(self, data):
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.out)), unique=True, min_size=1))
        seqs = data.draw(st.permutations(seqs))
        pairs = [(s, self.out.pop(s)) for s in seqs]
        self.q.requeue_many(pairs)
        self.ready.extend(pairs)
        self.ready.sort()

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0, 1000))
    def drop_outstanding(self, index):
        # an acked delivery never comes back
        del self.out[pick(self.out, index)]

    @rule(k=st.integers(2, 5), r=st.integers(0, 4))
    def remove_if(self, k, r):
        pred = lambda item: item % k == r % k  # noqa: E731
        got = self.q.remove_if(pred)
        assert got == [item for _, item in self.ready if pred(item)]
        self.ready = [p for p in self.ready if not pred(p[1])]

    @rule(limit=st.integers(0, 9))
    def pop_while(self, limit):
        pred = lambda item: item < limit  # noqa: E731
        got = self.q.pop_while(pred)
        want = []
        while self.ready and pred(self.ready[0][1]):
            seq, item = self.ready.pop(0)
            want.append(item)
            self.out[seq] = item
        assert got == want

    @rule()
    def pop_tail(self):
        got = self.q.pop_tail()
        if not self.ready:
            assert got is None
        else:
            assert got == self.ready.pop()
            self.out[got[0]] = got[1]

    @precondition(lambda self: len(self.ready) < 40)
    @rule()
    def purge(self):
        assert self.q.purge() == [item for _, item in self.ready]
        self.ready = []

    @rule()
    def listing(self):
        assert list(self.q) == [item for _, item in self.ready]
        assert list(self.q.pairs()) == self.ready

    @invariant()
    def consistent(self):
        self.q._check()
        assert len(self.q) == len(self.ready)
        assert bool(self.q) == bool(self.ready)


TestReadyQueue = ReadyQueueMachine.TestCase
TestReadyQueue.settings = SETTINGS


# ----------------------------------------------------------------------------- PriorityReadyQueue


priorities = st.one_of(st.none(), st.integers(0, 12), st.integers(13, 300))


class PriorityReadyQueueMachine(RuleBasedStateMachine):
    """Model: ``ready`` a list of (level, seq, item) ordered by (-level, seq)."""

    def __init__(self):
        super().__init__()
        self.q = None
        self.max = 0
        self.ready: list[tuple[int, int, int]] = []
        self.out: dict[int, tuple[int, object]] = {}  # seq -> (item, priority as published)
        self.out_priority: dict[int, object] = {}  # seq -> priority as published

    @initialize(max_priority=st.integers(0, 10))
    def make(self, max_priority):
        self.q = PriorityReadyQueue(max_priority)
        self.max = max_priority

    def level(self, priority):
        if priority is None:
            return 0
        return min(priority, self.max)

    def sort(self):
        self.ready.sort(key=lambda t: (-t[0], t[1]))

    @rule(item=items, priority=priorities)
    def push(self, item, priority):
        seq = self.q.push(item, priority)
        assert all(seq > s for _, s, _ in self.ready) and seq not in self.out
        self.ready.append((self.level(priority), seq, item))
        self.out_priority[seq] = priority
        self.sort()

    @rule()
    def pop(self):
        got = self.q.pop()
        if not self.ready:
            assert got is None
            return
        _, seq, item = self.ready.pop(0)
        assert got == (seq, item)
        self.out[seq] = (item, self.out_priority[seq])

    @rule()
    def peek(self):
        want = (self.ready[0][1], self.ready[0][2]) if self.ready else None
        assert self.q.peek() == want

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0, 1000))
    def requeue(self, index):
        seq = pick(self.out, index)
        item, priority = self.out.pop(seq)
        self.q.requeue(seq, item, priority)
        self.ready.append((self.level(priority), seq, item))
        self.sort()

    @precondition(lambda self: self.out)
    @rule(data=st.data())
    def requeue_many(self, data):
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.out)), unique=True, min_size=1))
        seqs = data.draw(st.permutations(seqs))
        triples = []
        for s in seqs:
            item, priority = self.out.pop(s)
            triples.append((s, item, priority))
            self.ready.append((self.level(priority), s, item))
        self.q.requeue_many(triples)
        self.sort()

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0, 1000))
    def drop_outstanding(self, index):
        del self.out[pick(self.out, index)]

    @rule(k=st.integers(2, 5), r=st.integers(0, 4))
    def remove_if(self, k, r):
        pred = lambda item: item % k == r % k  # noqa: E731
        assert self.q.remove_if(pred) == [item for _, _, item in self.ready if pred(item)]
        self.ready = [t for t in self.ready if not pred(t[2])]

    @rule(limit=st.integers(0, 9))
    def pop_while(self, limit):
        got = self.q.pop_while(lambda item: item < limit)
        want = []
        while self.ready and self.ready[0][2] < limit:
            _, seq, item = self.ready.pop(0)
            want.append(item)
            self.out[seq] = (item, self.out_priority[seq])
        assert got == want

    @rule()
    def pop_tail(self):
        got = self.q.pop_tail()
        if not self.ready:
            assert got is None
        else:
            _, seq, item = self.ready.pop()
            assert got == (seq, item)
            self.out[seq] = (item, self.out_priority[seq])

    @precondition(lambda self: len(self.ready) < 40)
    @rule()
    def purge(self):
        assert self.q.purge() == [item for _, _, item in self.ready]
        self.ready = []

    @rule()
    def listing(self):
        assert list(self.q) == [item for _, _, item in self.ready]
        assert list(self.q.pairs()) == [(s, i) for _, s, i in self.ready]

    @invariant()
    def consistent(self):
        if self.q is None:
            return
        self.q._check()
        assert len(self.q) == len(self.ready)


TestPriorityReadyQueue = PriorityReadyQueueMachine.TestCase
TestPriorityReadyQueue.settings = SETTINGS


# ----------------------------------------------------------------------------------- UnackedMap


class UnackedMapMachine(RuleBasedStateMachine):
    """Model: a dict kept in tag order, compared entry by entry."""

    def __init__(self):
        super().__init__()
        self.m = UnackedMap()
        self.model: dict[int, object] = {}
        self.next_tag = 1

    @rule(gap=st.one_of(st.just(1), st.integers(1, 60)), value=items)
    def add(self, gap, value):
        tag = self.next_tag + gap - 1
        self.next_tag = tag + 1
        self.m.add(tag, (tag, value))
        self.model[tag] = (tag, value)

    @rule(n=st.integers(1, 30))
    def add_run(self, n):
        for _ in range(n):
            tag = self.next_tag
            self.next_tag += 1
            self.m.add(tag, tag)
            self.model[tag] = tag

    @rule(delta=st.integers(-70, 5))
    def pop(self, delta):
        tag = self.next_tag + delta
        assert self.m.pop(tag) == self.model.pop(tag, None)

    @precondition(lambda self: self.model)
    @rule(index=st.integers(0, 1000))
    def pop_known(self, index):
        tag = pick(self.model, index)
        assert tag in self.m
        assert self.m.pop(tag) == self.model.pop(tag)
        assert tag not in self.m

    @rule(delta=st.integers(-80, 10))
    def pop_upto(self, delta):
        tag = self.next_tag + delta
        want = [v for t, v in self.model.items() if t <= tag]
        self.model = {t: v for t, v in self.model.items() if t > tag}
        assert self.m.pop_upto(tag) == want

    @precondition(lambda self: self.model)
    @rule(index=st.integers(0, 1000))
    def pop_upto_known(self, index):
        tag = pick(self.model, index)
        want = [v for t, v in self.model.items() if t <= tag]
        self.model = {t: v for t, v in self.model.items() if t > tag}
        assert self.m.pop_upto(tag) == want

    @rule()
    def pop_all(self):
        assert self.m.pop_all() == list(self.model.values())
        self.model = {}

    @rule(delta=st.integers(-20, 2))
    def contains(self, delta):
        tag = self.next_tag + delta
        assert (tag in self.m) == (tag in self.model)

    @invariant()
    def consistent(self):
        self.m._check()
        assert len(self.m) == len(self.model)
        assert self.m.items() == list(self.model.items())
        assert list(self.m) == list(self.model)


TestUnackedMap = UnackedMapMachine.TestCase
TestUnackedMap.settings = SETTINGS


# ------------------------------------------------------------------------ topic: trie vs oracle

binding_words = st.sampled_from(["a", "b", "", "*", "#", "ab"])
routing_words = st.sampled_from(["a", "b", "", "ab", "c", "*", "#"])
binding_keys = st.lists(binding_words, max_size=6).map(".".join)
routing_keys = st.lists(routing_words, max_size=8).map(".".join)


def words_of(key: str) -> list[str]:
    return key.split(".") if key else []


def topic_regex(binding: str) -> re.Pattern:
    """Slow oracle: a regex over the key's words, each followed by NUL (so zero words is "")."""
    parts = []
    for w in words_of(binding):
        if w == "*":
            parts.append("[^\0]*\0")
        elif w == "#":
            parts.append("(?:[^\0]*\0)*")
        else:
            parts.append(re.escape(w) + "\0")
    return re.compile("".join(parts), re.DOTALL)


def topic_oracle(binding: str, key: str) -> bool:
    subject = "".join(w + "\0" for w in words_of(key))
    return topic_regex(binding).fullmatch(subject) is not None


def topic_recursive(pattern: list[str], key: list[str]) -> bool:
    """A second, independent oracle: plain recursion over word lists."""
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(topic_recursive(rest, key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    return (head == "*" or head == key[0]) and topic_recursive(rest, key[1:])


@SETTINGS
@given(bindings=st.lists(binding_keys, max_size=12), keys=st.lists(routing_keys, max_size=8))
def test_topic_trie_matches_oracle(bindings, keys):
    m = matcher_for("topic")
    for i, b in enumerate(bindings):
        m = m.with_binding(i, b, None)
    m._check()
    bulk = matcher_for("topic").with_bindings([(i, b, None) for i, b in enumerate(bindings)])
    bulk._check()
    assert bulk._index_state() == m._index_state()
    for key in keys:
        want = {i for i, b in enumerate(bindings) if topic_oracle(b, key)}
        assert want == {i for i, b in enumerate(bindings)
                        if topic_recursive(words_of(b), words_of(key))}
        assert m.route(key, None) == want, (key, bindings)


# ------------------------------------------------------------ matchers: copy-on-write, stateful

destinations = st.sampled_from(["q1", "q2", "q3", "q4"])
header_keys = st.sampled_from(["a", "b", "x-c"])
header_values = st.sampled_from([1, 2, "1", None])
x_match = st.sampled_from([None, "all", "any", "all-with-x", "any-with-x"])


@st.composite
def binding_args(draw, kind):
    if kind != "headers":
        return draw(st.sampled_from([None, {}, {"x-n": 1}, {"x-n": 2}]))
    args = draw(st.dictionaries(header_keys, header_values, max_size=3))
    mode = draw(x_match)
    if mode is not None:
        args["x-match"] = mode
    return args


def headers_oracle(args: dict, headers: dict | None) -> bool:
    headers = headers or {}
    mode = args.get("x-match", "all")
    with_x = mode.endswith("-with-x")
    items = [(k, v) for k, v in args.items()
             if k != "x-match" and (with_x or not k.startswith("x-"))]

    def ok(k, v):
        if k not in headers:
            return False
        return v is None or (type(v) is type(headers[k]) and v == headers[k])

    if mode.startswith("all"):
        return all(ok(k, v) for k, v in items)
    return any(ok(k, v) for k, v in items)


def freeze(args):
    return tuple(sorted((k, (type(v).__name__, v)) for k, v in (args or {}).items()))


class MatcherMachine(RuleBasedStateMachine):
    """Bind/unbind at random; every snapshot taken must keep routing as its own model says."""

    def __init__(self):
        super().__init__()
        self.kind = None
        self.m = None
        self.model: dict = {}  # (dest, key, frozen args) -> args
        self.snapshots: list = []

    @initialize(kind=st.sampled_from(["direct", "fanout", "topic", "headers"]))
    def make(self, kind):
        self.kind = kind
        self.m = matcher_for(kind)

    def expected(self, model, key, headers):
        out = set()
        for (dest, bkey, _), args in model.items():
            if self.kind == "direct":
                hit = bkey == key
            elif self.kind == "fanout":
                hit = True
            elif self.kind == "topic":
                hit = topic_oracle(bkey, key)
            else:
                hit = headers_oracle(args or {}, headers)
            if hit:
                out.add(dest)
        return out

    @rule(dest=destinations, key=binding_keys, data=st.data())
    def bind(self, dest, key, data):
        args = data.draw(binding_args(self.kind))
        new = self.m.with_binding(dest, key, args)
        ident = (dest, key, freeze(args))
        if ident in self.model:
            assert new is self.m
        self.model[ident] = args
        self.m = new

    @precondition(lambda self: self.model)
    @rule(index=st.integers(0, 1000))
    def unbind(self, index):
        ident = sorted(self.model, key=repr)[index % len(self.model)]
        args = self.model.pop(ident)
        self.m = self.m.without_binding(ident[0], ident[1], args)

    @rule(dest=destinations, key=binding_keys)
    def unbind_unknown(self, dest, key):
        if not any(d == dest and k == key for d, k, _ in self.model):
            assert self.m.without_binding(dest, key, None) is self.m

    @rule(dest=destinations)
    def drop_destination(self, dest):
        self.m = self.m.without_destination(dest)
        self.model = {i: a for i, a in self.model.items() if i[0] != dest}

    @rule(data=st.data())
    def bulk(self, data):
        kind = self.kind
        new = data.draw(st.lists(st.tuples(destinations, binding_keys, binding_args(kind)),
                                 max_size=5))
        self.m = self.m.with_bindings(new)
        for dest, key, args in new:
            self.model.setdefault((dest, key, freeze(args)), args)

    @rule()
    def snapshot(self):
        self.snapshots.append((self.m, dict(self.model)))

    @rule(key=routing_keys, headers=st.none() | st.dictionaries(header_keys, header_values))
    def route(self, key, headers):
        assert set(self.m.route(key, headers)) == self.expected(self.model, key, headers)
        for old, model in self.snapshots[-3:]:
            assert set(old.route(key, headers)) == self.expected(model, key, headers)

    @invariant()
    def consistent(self):
        if self.m is None:
            return
        self.m._check()
        assert len(self.m) == len(self.model)
        assert sorted((d, k, freeze(a)) for d, k, a in self.m.bindings()) == sorted(self.model)
        for ident, args in self.model.items():
            assert self.m.has_binding(ident[0], ident[1], args)


TestMatcher = MatcherMachine.TestCase
TestMatcher.settings = SETTINGS
