#!/usr/bin/env python3
"""Consumers on one queue: time to register 2,500 / 5,000 / 10,000 / 20,000 (issue #19).

One connection pipelines no-wait ``basic.consume``s on one queue (then a passive declare
that is answered after them) in steps up to each total; another connection meanwhile sends
passive declares and records how long each waited. Printed per total: wall seconds and
broker CPU seconds (user + system, /proc) for the whole registration, and the other
connection's worst wait. Figures, not assertions.

    python bench/consumers.py
    python bench/consumers.py --totals 2500,5000,10000,20000,40000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

import amqp_raw as raw  # noqa: E402
from backlog import _cpu_seconds, start_broker  # noqa: E402

from syncmq.wire import _spec  # noqa: E402


def run(port: int, pid: int, total: int) -> dict:
    queue = f"scale-{total}"
    with raw.connect(port) as a, raw.connect(port) as other:
        a.open_channel()
        other.open_channel()
        a.send_method(1, _spec.Queue.Declare(queue=queue, auto_delete=True))
        a.expect_method(1, _spec.Queue.DeclareOk)
        waits: list[float] = []
        done = threading.Event()

        def declares() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                other.send_method(1, _spec.Queue.Declare(queue=queue, passive=True))
                other.expect_method(1, _spec.Queue.DeclareOk, timeout=300)
                waits.append(time.perf_counter() - t0)
                time.sleep(0.01)

        t = threading.Thread(target=declares, daemon=True)
        t.start()
        cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
        n = 0
        while n < total:
            k = min(2_500, total - n)
            assert raw.register_consumers(a, queue, n, k) == n + k
            n += k
        wall, cpu = time.perf_counter() - t0, _cpu_seconds(pid) - cpu0
        done.set()
        t.join(300)
    return {"consumers": total, "wall_s": round(wall, 3), "broker_cpu_s": round(cpu, 2),
            "other_max_wait_ms": round(max(waits) * 1000, 1), "other_declares": len(waits)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--totals", default="2500,5000,10000,20000")
    ap.add_argument("--workers", type=int, default=2)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        proc, port = start_broker(d, "0", opts.workers)
        try:
            rows = [run(port, proc.pid, int(n)) for n in opts.totals.split(",")]
        finally:
            proc.terminate()
            proc.wait(30)
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
