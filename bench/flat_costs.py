#!/usr/bin/env python3
"""Costs that stay flat (issue #22): broker CPU per operation at N, 4N, 16N objects present.

One syncmq per scenario; the scenarios (tests/flat_cost.py) are consume + cancel with N
consumers on a queue, declare + delete with N queues, topic bind and topic route with N
bindings, connection open/close with N connections open, channel open/close with N channels
open on the connection, publish to a fanout with N queues bound (cost per copy), and bind
(or unbind) with N bindings on a direct exchange (N keys, or one key and N queues), a fanout
or a headers exchange (N queues). Each size's figure is the lowest of 3 batches of broker CPU
seconds (/proc utime + stime) per operation; the ratios to the first size say whether the
cost grows (flat: ~1; a scan per operation: ~4 per step). tests/test_flat_costs.py asserts the same at N and 4N.

    python bench/flat_costs.py
    python bench/flat_costs.py --scenarios topic-route --sizes 25000,100000 --json out.json
    python bench/flat_costs.py --scenarios direct-bind,fanout-bind --sizes 2000,8000,32000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from brokerproc import BrokerProcess  # noqa: E402
from flat_cost import SCENARIOS, cost_per_op  # noqa: E402

# scenario -> (default sizes, operations per batch)
DEFAULTS = {
    "consume-cancel": ("2500,10000,40000", 30_000),
    "declare-delete": ("2500,10000,40000", 15_000),
    "topic-bind": ("2500,10000", 2_000),
    "topic-route": ("2500,10000,40000", 20_000),
    "connection-open-close": ("100,400,1600", 400),
    "channel-open": ("120,480,1920", 3_000),
    "fanout-copy": ("250,1000,4000", 0),
    "direct-bind": ("2500,10000,40000", 20_000),
    "direct-bind-queues": ("2500,10000,40000", 20_000),
    "fanout-bind": ("2500,10000,40000", 20_000),
    "headers-bind": ("2500,10000,40000", 20_000),
    "direct-unbind": ("2500,10000,40000", 20_000),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(DEFAULTS))
    ap.add_argument("--sizes", help="N values (default: per scenario)")
    ap.add_argument("--json", help="write the figures here")
    opts = ap.parse_args(argv)
    out = {}
    for name in opts.scenarios.split(","):
        sizes, k = DEFAULTS[name]
        sizes = [int(x) for x in (opts.sizes or sizes).split(",")]
        with tempfile.TemporaryDirectory(prefix="flat-") as d:
            b = BrokerProcess(os.path.join(d, "data"), "--workers", "2").start()
            try:
                s = SCENARIOS[name](b.port, "flat")
                rows = []
                for n in sizes:
                    s.grow(n)
                    cost = cost_per_op(b.proc.pid, s, k)
                    rows.append({"n": n, "us": cost * 1e6})
                    print(f"{name:22} N={n:>7}: {cost * 1e6:9.2f} us/{s.unit}  "
                          f"x{cost * 1e6 / rows[0]['us']:.2f}", flush=True)
                s.close()
            finally:
                b.stop()
        out[name] = rows
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
