"""Instructions the topic-permission check adds to one basic.publish (issue #16), counted
with callgrind (stable on a shared machine, unlike wall-clock time).

Runs the exact test ``methods/basic.publish`` makes, on a real ``Exchange`` and a session-like
object, N times, for: a direct exchange (``direct``), a topic exchange and a user without
topic permissions (``topic``), and the regex search a user with a topic permission on that
exchange pays (``regex``); ``none`` is the empty loop. Per-publish cost = (Ir(case) -
Ir(none)) / N::

    PY=$(python3 -c 'import sys; print(sys.executable)')
    for c in none direct topic regex; do
      valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$c $PY bench/topic_check_cost.py $c \\
        2>&1 | grep Collected
    done
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from syncmq.broker.exchange import Exchange  # noqa: E402
from syncmq.broker.user_rules import TopicPermission  # noqa: E402

N = 200_000


class _Broker:
    def __init__(self, users: object) -> None:
        self.users = users


class _Session:
    """Instance attributes, as ``Session``'s (no slots)."""

    def __init__(self, store: object) -> None:
        self.topic_perms = None
        self.topic_store = store
        self.broker = _Broker(store)


def run(case: str) -> None:
    session = _Session(object())
    ex = Exchange("/", "amq.topic", "direct" if case == "direct" else "topic", False, False,
                  False, None)
    tp = TopicPermission("^{username}\\.", "", "app", "/")
    if case == "none":
        for _ in range(N):
            pass
    elif case == "regex":
        for _ in range(N):
            tp.allows("write", "app.orders.created")
    else:
        for _ in range(N):
            if ex.type == "topic" and (session.topic_perms is not None
                                       or session.broker.users is not session.topic_store):
                pass


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "topic")
