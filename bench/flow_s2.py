"""S2 (one publisher outrunning one manual-ack consumer, 1 KiB, prefetch 100) against syncmq
with credit flow on (the default ``--queue-flow-high``) and off (``0``), alternating runs on a
fresh broker each: peak RSS, CPU seconds and the rates, medians printed as a table.

Usage::

    python bench/flow_s2.py [--runs N] [--time S] [--high N]

Peak RSS and CPU seconds are what to read on a loaded machine (wall-clock rates move with
the load; the ratio of delivered rates is still shown). Uses bench/perf_matrix.py's broker,
syncmq-perf and /proc sampler; no RabbitMQ (``perf_matrix.py --scenarios S2,S2off`` adds it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perf_matrix as pm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--time", type=float, default=10.0)
    ap.add_argument("--high", default=None, help="--queue-flow-high when on (default: the "
                    "broker's default)")
    opts = ap.parse_args(argv)
    steps = [["-x", "1", "-y", "1", "-s", "1024", "-q", "100", "-z", str(opts.time)]]
    variants = {"on": ["--queue-flow-high", opts.high] if opts.high else [],
                "off": ["--queue-flow-high", "0"]}
    raw: dict[str, list] = {k: [] for k in variants}
    broker = pm.Syncmq()
    try:
        for i in range(opts.runs):
            for name in (list(variants) if i % 2 == 0 else list(reversed(variants))):
                broker.restart(variants[name])
                res = pm.run_one(broker, {"steps": steps}, opts.time * 4 + 120)
                raw[name].append(res)
                print(f"# run {i + 1} flow {name}: {json.dumps(res)}", file=sys.stderr,
                      flush=True)
    finally:
        broker.stop()
    keys = ("sent_rate", "received_rate", "rss_peak_mb", "cpu_s", "cpu_us_per_msg")
    med = {n: {k: statistics.median(r.get(k) or 0 for r in rs) for k in keys}
           for n, rs in raw.items()}
    print("| credit flow | sent/s | delivered/s | peak RSS MB | CPU s | CPU us/msg |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, m in med.items():
        print(f"| {n} | {m['sent_rate']:.0f} | {m['received_rate']:.0f} | "
              f"{m['rss_peak_mb']:.1f} | {m['cpu_s']:.1f} | {m['cpu_us_per_msg']:.1f} |")
    on, off = med["on"], med["off"]
    if off["rss_peak_mb"] and off["received_rate"]:
        print(f"on/off: peak RSS {on['rss_peak_mb'] / off['rss_peak_mb']:.2f}, delivered "
              f"{on['received_rate'] / off['received_rate']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
