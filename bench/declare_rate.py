#!/usr/bin/env python3
"""Declares per second of N durable queues (issue #25: the cost of fsynced declares).

Starts syncmq on a fresh data directory and declares ``--queues`` durable queues (pika,
``queue.declare`` waiting for each declare-ok) from ``--connections`` connections in parallel,
each declaring its share one after another. Prints declares/s and the journal's fsync count
(from ``/metrics``: how many declares one group commit covered).

    python bench/declare_rate.py --queues 10000 --connections 1
    python bench/declare_rate.py --queues 10000 --connections 8
    python bench/declare_rate.py --queues 10000 --rabbitmq   # the same against RabbitMQ
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from brokerproc import BrokerProcess  # noqa: E402


def _fsyncs(mport: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=30) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("syncmq_journal_fsync_seconds_count"):
            return int(float(line.split()[-1]))
    return -1


def _declarer(port: int, names: list[str], barrier: threading.Barrier) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    ch = conn.channel()
    barrier.wait()
    for name in names:
        ch.queue_declare(name, durable=True)
    conn.close()


def _declare_all(port: int, queues: int, connections: int) -> float:
    barrier = threading.Barrier(connections + 1)
    threads = [threading.Thread(target=_declarer, args=(
        port, [f"q{c}-{i}" for i in range(c, queues, connections)], barrier))
        for c in range(connections)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def run(queues: int, connections: int, rabbitmq: bool = False) -> dict:
    fsyncs = -1
    if rabbitmq:
        sys.path.insert(0, str(REPO / "bench"))
        from perf_matrix import RabbitMQ

        rmq = RabbitMQ()
        try:
            elapsed = _declare_all(rmq.port, queues, connections)
        finally:
            rmq.stop()
    else:
        with tempfile.TemporaryDirectory(prefix="syncmq-declare-") as d:
            broker = BrokerProcess(d).start()
            try:
                before = _fsyncs(broker.management_port)
                elapsed = _declare_all(broker.port, queues, connections)
                fsyncs = _fsyncs(broker.management_port) - before
            finally:
                broker.stop()
    return {"broker": "rabbitmq" if rabbitmq else "syncmq", "queues": queues,
            "connections": connections, "seconds": round(elapsed, 3),
            "declares_per_s": round(queues / elapsed), "fsyncs": fsyncs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queues", type=int, default=10_000)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--rabbitmq", action="store_true", help="measure RabbitMQ instead")
    a = p.parse_args()
    for _ in range(a.runs):
        print(json.dumps(run(a.queues, a.connections, a.rabbitmq)), flush=True)


if __name__ == "__main__":
    main()
