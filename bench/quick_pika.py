"""Quick throughput probe with pika: one publisher process, one consumer process.

Usage: python bench/quick_pika.py PORT [N] [SIZE]. Prints one JSON line. A smoke-level probe,
not the PerfTest-class tool (that is syncmq-perf, see the performance issue).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time

import pika


def consumer(port: int, queue: str, n: int, ready, out) -> None:
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = c.channel()
    ch.basic_qos(prefetch_count=1000)
    got = 0
    start = None

    def on(ch_, m, p, b):
        nonlocal got, start
        if start is None:
            start = time.perf_counter()
        got += 1
        if got % 100 == 0 or got == n:
            ch_.basic_ack(m.delivery_tag, multiple=True)
        if got == n:
            ch_.stop_consuming()

    ch.basic_consume(queue, on)
    ready.set()
    ch.start_consuming()
    out.put(("consume", n / (time.perf_counter() - start)))
    c.close()


def main() -> None:
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = c.channel()
    q = "quick-bench"
    ch.queue_delete(q)
    ch.queue_declare(q)
    ready, out = mp.Event(), mp.Queue()
    p = mp.Process(target=consumer, args=(port, q, n, ready, out))
    p.start()
    ready.wait(10)
    body = b"x" * size
    t0 = time.perf_counter()
    for _ in range(n):
        ch.basic_publish("", q, body)
    pub = n / (time.perf_counter() - t0)
    kind, rate = out.get(timeout=120)
    p.join()
    ch.queue_delete(q)
    c.close()
    print(json.dumps({"n": n, "size": size, "publish_rate": round(pub), "consume_rate": round(rate)}))


if __name__ == "__main__":
    main()
