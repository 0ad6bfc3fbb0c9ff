#!/usr/bin/env python3
"""AMQP round-trip latency with and without Prometheus scrapers (issue 18).

Starts a syncmq, declares ``--queues`` queues (20,000), then measures ``--samples`` AMQP round
trips (basic.publish to a queue, then basic.get of it on the same channel: one network round
trip through routing and the queue) three ways: no scraper, then ``--scrapers`` processes
scraping ``/metrics`` (aggregated, no credentials) in a loop, then the same on
``/metrics/per-object`` (one sample per queue, with credentials). Scrapers are separate
processes so that they do not share the measuring process's GIL.

    python bench/metrics_scrape.py                      # 20,000 queues, 3 scrapers
    python bench/metrics_scrape.py --queues 2000 --samples 500

Prints one JSON line per phase (median and p99 in ms, scrapes done, bytes per scrape) and
the ratios to the no-scraper phase.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import pika  # noqa: E402
from brokerproc import BrokerProcess  # noqa: E402

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def scraper(url: str, stop, counts) -> None:
    req = urllib.request.Request(url, headers={"Authorization": AUTH})
    n = size = 0
    while not stop.is_set():
        with urllib.request.urlopen(req, timeout=120) as r:
            size = len(r.read())
        n += 1
    counts.put((n, size))


def round_trips(ch, queue: str, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        ch.basic_publish("", queue, b"x")
        method, _, _ = ch.basic_get(queue, auto_ack=True)
        out.append(time.perf_counter() - t0)
        assert method is not None
    return out


def phase(ch, queue: str, samples: int, url: str | None, scrapers: int) -> dict:
    stop, counts = multiprocessing.Event(), multiprocessing.Queue()
    procs = [multiprocessing.Process(target=scraper, args=(url, stop, counts))
             for _ in range(scrapers if url else 0)]
    for p in procs:
        p.start()
    if procs:
        time.sleep(1.0)  # let the scrapers get going
    started = time.monotonic()
    lat = sorted(round_trips(ch, queue, samples))
    elapsed = time.monotonic() - started
    stop.set()
    done = [counts.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return {"scrape": url.rsplit("/", 1)[-1] if url else None, "scrapers": len(procs),
            "median_ms": round(statistics.median(lat) * 1000, 3),
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
            "seconds": round(elapsed, 1), "scrapes": sum(n for n, _ in done),
            "bytes_per_scrape": done[0][1] if done else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queues", type=int, default=20000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--scrapers", type=int, default=3)
    args = ap.parse_args()
    b = BrokerProcess(tempfile.mkdtemp(prefix="syncmq-bench-")).start()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        for i in range(args.queues):
            ch.queue_declare(f"bench-q-{i}")
        queue = "bench-rt"
        ch.queue_declare(queue)
        base = f"http://127.0.0.1:{b.management_port}"
        round_trips(ch, queue, 200)  # warm-up
        results = [phase(ch, queue, args.samples, None, 0),
                   phase(ch, queue, args.samples, base + "/metrics", args.scrapers),
                   phase(ch, queue, args.samples, base + "/metrics/per-object",
                         args.scrapers)]
        for r in results:
            print(json.dumps(r))
        for r in results[1:]:
            print(f"{r['scrape']}: median x{r['median_ms'] / results[0]['median_ms']:.2f}, "
                  f"p99 x{r['p99_ms'] / results[0]['p99_ms']:.2f}")
        conn.close()
    finally:
        b.stop()


if __name__ == "__main__":
    main()
