#!/usr/bin/env python3
"""Applying a policy to many existing queues (issue #16): time, broker CPU, and the traffic
of another connection meanwhile.

Starts a syncmq, declares ``--queues`` queues (10,000) with ``--messages`` messages each (3),
starts a separate process doing publish + basic.get round trips on another queue, then
``PUT /api/policies`` a policy ``{"max-length": 1}`` matching every queue (each queue drops
its two oldest messages at once), then ``DELETE`` it. For each of the two: the request's wall
time, the broker's CPU seconds (``/proc/<pid>/stat``) and the round trips the other
connection completed meanwhile, with its longest round trip.

    python bench/policy_apply.py                      # 10,000 queues
    python bench/policy_apply.py --queues 2000

Prints one JSON line per phase. The machine the figures come from is shared and loaded:
wall times are indicative, CPU seconds less so affected.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import pika  # noqa: E402
from brokerproc import BrokerProcess  # noqa: E402

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def http(port: int, method: str, path: str, body=None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", data=data,
                                 method=method, headers={"Authorization": AUTH,
                                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status


def traffic(port: int, stop, marks, out) -> None:
    """Round trips (publish then get) until ``stop``; ``marks`` asks for the count so far."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.queue_declare("bench-other")
    n, stamps = 0, []
    while not stop.is_set():
        t0 = time.monotonic()
        ch.basic_publish("", "bench-other", b"x")
        assert ch.basic_get("bench-other", auto_ack=True)[0] is not None
        stamps.append((t0, time.monotonic() - t0))
        n += 1
        if n == 50:
            marks.set()
    conn.close()
    out.put(stamps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queues", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=3)
    args = ap.parse_args()
    b = BrokerProcess(tempfile.mkdtemp(prefix="syncmq-bench-policy-")).start()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        for i in range(args.queues):
            ch.queue_declare(f"bench-{i}")
            for _ in range(args.messages):
                ch.basic_publish("", f"bench-{i}", b"m")
        ch.queue_declare(f"bench-{args.queues - 1}", passive=True)  # all routed
        stop, started, out = multiprocessing.Event(), multiprocessing.Event(), \
            multiprocessing.Queue()
        p = multiprocessing.Process(target=traffic, args=(b.port, stop, started, out))
        p.start()
        started.wait(60)
        phases = []
        for name, method, body in (
                ("set", "PUT", {"pattern": "^bench-[0-9]", "definition": {"max-length": 1}}),
                ("clear", "DELETE", None)):
            cpu0, t0 = cpu_seconds(b.proc.pid), time.monotonic()
            status = http(b.management_port, method, "/policies/%2F/bench", body)
            t1, cpu1 = time.monotonic(), cpu_seconds(b.proc.pid)
            phases.append((name, status, t0, t1, cpu1 - cpu0))
            time.sleep(0.5)  # traffic between the phases
        depth = ch.queue_declare("bench-0", passive=True).method.message_count
        stop.set()
        stamps = out.get(timeout=120)
        p.join()
        conn.close()
        for name, status, t0, t1, cpu in phases:
            during = [d for s, d in stamps if t0 <= s <= t1]
            print(json.dumps({
                "phase": name, "status": status, "queues": args.queues,
                "messages_per_queue": args.messages, "seconds": round(t1 - t0, 3),
                "broker_cpu_s": round(cpu, 3),
                "other_round_trips_during": len(during),
                "other_longest_round_trip_ms": round(max(during, default=0) * 1000, 1),
                "depth_after": depth if name == "set" else None}))
    finally:
        b.stop()


if __name__ == "__main__":
    main()
