"""Costs that stay flat (issue #22): one operation costs the broker the same CPU with N or 4N
objects present.

Each test grows a background of N objects, measures the broker's CPU seconds per operation
(tests/flat_cost.py: /proc utime + stime around a batch, the lowest of 3 batches), grows it
to 4N and measures again. A scan per operation makes the ratio ~3.5-4; the bound is 2x (plus
one clock tick spread over the batch), generous for a loaded machine, whose noise only ever
adds CPU to a batch (hence the lowest of 3). Never a wall-clock limit.

Consumer registration alone at N and 4N is tests/test_consumer_scale.py; here consume is
paired with cancel.
"""

from __future__ import annotations

import os

import pytest
from flat_cost import SCENARIOS, cost_per_op

TICK = 1.0 / os.sysconf("SC_CLK_TCK")
BOUND = 2.0

# scenario -> (N, operations per batch): batches of ~0.3 s of broker CPU or more
CASES = {
    "consume-cancel": (2_000, 30_000),
    "declare-delete": (2_000, 15_000),
    "topic-route": (2_000, 20_000),
    "connection-open-close": (250, 400),
    "channel-open": (400, 3_000),
    "fanout-copy": (250, 0),
    # binds and unbinds with N bindings (docs/architecture.md, "Costs that stay flat"); the
    # copies they replaced are C-level, so N is large enough for a copy to show
    "direct-bind": (4_000, 20_000),
    "direct-bind-queues": (4_000, 20_000),
    "fanout-bind": (4_000, 20_000),
    "headers-bind": (4_000, 20_000),
    "direct-unbind": (4_000, 20_000),
}


def _ratio(broker_factory, unique: str, name: str, n: int, k: int) -> tuple[float, float]:
    b = broker_factory("--workers", "2")
    s = SCENARIOS[name](b.port, unique)
    try:
        s.grow(n)
        cost_n = cost_per_op(b.proc.pid, s, k)
        s.grow(4 * n)
        cost_4n = cost_per_op(b.proc.pid, s, k)
    finally:
        s.close()
    per = k or s.COPIES
    return cost_n, cost_4n, TICK / per


@pytest.mark.parametrize("name", list(CASES))
def test_cost_per_operation_is_flat_from_n_to_4n(broker_factory, unique, name):
    n, k = CASES[name]
    cost_n, cost_4n, tick = _ratio(broker_factory, unique, name, n, k)
    assert cost_4n < BOUND * cost_n + tick, (
        f"{name}: {cost_n * 1e6:.1f} us at N={n}, {cost_4n * 1e6:.1f} us at 4N")


def test_topic_bind_cost_is_flat_from_n_to_4n(broker_factory, unique):
    cost_n, cost_4n, tick = _ratio(broker_factory, unique, "topic-bind", 2_000, 2_000)
    assert cost_4n < BOUND * cost_n + tick, (cost_n, cost_4n)
