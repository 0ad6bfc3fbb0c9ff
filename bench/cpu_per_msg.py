"""Broker CPU per message: a load-robust development metric (issue #9).

Usage::

    python bench/cpu_per_msg.py [--scenarios S1,S2,S4,S5] [-n 200000] [--repeat 3]

Starts one syncmq (as ``bench/perf_matrix.py`` does), then for each scenario runs
``syncmq-perf`` for a fixed message count (``-C``/``-D``) and reads the broker's utime+stime
from /proc/<pid>/stat before and after: the difference divided by the messages delivered is
the broker's CPU cost per delivered message, which, unlike a rate, barely moves when other
processes compete for the cores. Prints one line per run and the median per scenario.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from perf_matrix import Syncmq, cpu_seconds, perf  # noqa: E402


def scenarios(n: int) -> dict[str, tuple[list[str], int]]:
    """Scenario -> (syncmq-perf arguments, messages delivered in total)."""
    c = str(n)
    return {
        "S1": (["-x", "1", "-y", "1", "-s", "16", "-a", "-C", c, "-D", c], n),
        "S2": (["-x", "1", "-y", "1", "-s", "1024", "-q", "100", "-C", c, "-D", c], n),
        "S4": (["-x", "1", "--fanout", "10", "-y", "10", "-s", "16", "-a", "-C", c,
                "-D", c], 10 * n),
        "S5": (["-x", "4", "-y", "4", "--queues", "4", "-s", "16", "-a", "-C", c, "-D", c],
               4 * n),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="S1,S2,S4,S5")
    ap.add_argument("-n", type=int, default=200_000, help="messages per producer")
    ap.add_argument("--repeat", type=int, default=3)
    opts = ap.parse_args()
    table = scenarios(opts.n)
    broker = Syncmq()
    try:
        for name in opts.scenarios.split(","):
            args, delivered = table[name]
            if name == "S4":
                # fanout: one publisher's N messages reach each of the 10 queues
                args = [a if a != str(opts.n) else str(opts.n // 10) for a in args]
                delivered //= 10
            per = []
            for _ in range(opts.repeat):
                before = cpu_seconds(broker.pid)
                r = perf(broker.uri, args, 600)
                cpu = cpu_seconds(broker.pid) - before
                got = r.get("received", r.get("received_count", delivered))
                us = cpu / delivered * 1e6
                per.append(us)
                print(f"{name}: {cpu:.2f} s broker CPU, {us:.2f} us/delivered msg, "
                      f"recv/s {r.get('received_rate', 0):,.0f} errors {r.get('errors')} "
                      f"({got})", flush=True)
            print(f"{name} median {statistics.median(per):.2f} us/msg", flush=True)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
