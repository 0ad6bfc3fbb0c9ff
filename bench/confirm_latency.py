#!/usr/bin/env python3
"""Publisher-confirm latency of S3 (1 KiB persistent, window 100, durable queue, one consumer
with manual acks and prefetch 100), against syncmq and RabbitMQ, alternating runs.

syncmq-perf reports rates only; this measures what a confirm window turns into a rate: the
time from writing a publish to reading the basic.ack that covers it, per message. A producer in
this process keeps ``--window`` publishes unconfirmed (like ``syncmq-perf -c 100``) and stamps
each one; a ``syncmq-perf`` consumer process drains the queue meanwhile.

    python bench/confirm_latency.py                  # 3 alternating runs x 5 s per broker
    python bench/confirm_latency.py --runs 5 --time 10 --no-rabbitmq

Prints one JSON line per run and a summary (medians of the runs' p50/p95/p99 in ms, and the
confirmed rate); the window over the confirmed rate is the mean latency (Little's law).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from perf_matrix import RabbitMQ, Syncmq  # noqa: E402

from syncmq.perf.client import Client  # noqa: E402

QUEUE = "perf-q-1"  # syncmq-perf's name for queue 1 (its consumer uses --predeclared)


class Stamped(Client):
    """A producer that records, per publish sequence number, when it was sent and when its
    confirm arrived."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri, name="confirm-latency")
        self.sent_at: dict[int, float] = {}
        self.latencies: list[float] = []

    def _resolve(self, tag: int, multiple: int, ok: bool) -> None:
        now = time.perf_counter()
        first = self._resolved_upto + 1 if multiple else tag
        for t in range(first, tag + 1):
            sent = self.sent_at.pop(t, None)
            if sent is not None:
                self.latencies.append(now - sent)
        super()._resolve(tag, multiple, ok)


def run(uri: str, seconds: float, window: int, size: int) -> dict:
    setup = Client(uri, name="confirm-latency-setup")
    setup.queue_declare(QUEUE, durable=True)
    setup.queue_purge(QUEUE)
    setup.close()
    consumer = subprocess.Popen(
        [sys.executable, "-m", "syncmq.perf.cli", "--uri", uri, "-x", "0", "-y", "1",
         "--predeclared", "-q", "100", "-z", str(seconds + 3)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p = Stamped(uri)
    p.confirm_select()
    one, _ = p.message_template("", QUEUE, size, persistent=True)
    time.sleep(0.5)  # let the consumer attach (not a wait on an event: a warm-up)
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        room = window - p.outstanding
        if room > 0:
            base = p.published
            p.publish_raw(one * room, room)
            for t in range(base + 1, base + room + 1):
                p.sent_at[t] = now
        p.poll(0.05 if room <= 0 else 0)
    p.wait_confirms(time.monotonic() + 30)
    elapsed = time.perf_counter() - t0
    p.close()
    out, _ = consumer.communicate(timeout=seconds + 60)
    lat = sorted(p.latencies)

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3, 2) if lat else 0.0

    cleanup = Client(uri, name="confirm-latency-cleanup")
    cleanup.queue_delete(QUEUE)
    cleanup.close()
    return {"confirmed": p.confirmed, "confirmed_rate": round(p.confirmed / elapsed),
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(lat) * 1e3, 2) if lat else 0.0,
            "consumer": json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
            .get("received", 0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--time", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--no-rabbitmq", action="store_true")
    opts = ap.parse_args()
    brokers = [Syncmq()]
    if not opts.no_rabbitmq and RabbitMQ.available():
        brokers.append(RabbitMQ())
    results: dict[str, list[dict]] = {b.name: [] for b in brokers}
    try:
        for i in range(opts.runs):
            for b in brokers:
                r = run(b.uri, opts.time, opts.window, opts.size)
                results[b.name].append(r)
                print(json.dumps({"broker": b.name, "run": i + 1, **r}), flush=True)
    finally:
        for b in brokers:
            b.stop()
    for name, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("confirmed_rate", "p50_ms", "p95_ms", "p99_ms", "mean_ms")}
        print(f"{name}: confirmed {med['confirmed_rate']:,.0f}/s  p50 {med['p50_ms']} ms  "
              f"p95 {med['p95_ms']} ms  p99 {med['p99_ms']} ms  mean {med['mean_ms']} ms "
              f"(medians of {len(rs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
