#!/usr/bin/env python3
"""Soak: minutes of mixed traffic against one syncmq; its RSS and fd count must stay flat.

Load (each a child process with its own pika connections, until the deadline):

* publishers: publisher confirms, persistent and transient messages of 10 B..8 KiB to durable
  queues ``soak-N`` (x-max-length 50,000 as a safety net; consumers normally keep up);
* consumers: basic.consume with manual acks and a prefetch of 100 on the same queues;
* churners: declare a queue and an exchange, bind, publish, get, unbind, delete, again;
* connectors: open a connection and a channel, declare an exclusive queue, then close
  cleanly, or drop the socket without a close (every third time).

Every ``--sample`` seconds the broker's VmRSS (/proc/PID/status) and open fds (/proc/PID/fd)
are sampled. The verdict looks only at samples after ``--warmup``: RSS must not grow by more
than ``--max-rss-growth`` MiB between the first and the last third of them (a slope, not the
noise of one sample), and the fd count must come back to its post-warm-up level. The last line
printed is a JSON summary; the exit status is 0 when the run was flat, the broker logged no
traceback and stopped cleanly.

    python bench/soak.py --duration 180
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from brokerproc import BrokerProcess  # noqa: E402

MiB = 2**20
TIMEOUT = 60.0


def _params(port: int):
    import pika

    return pika.ConnectionParameters("127.0.0.1", port, heartbeat=0, socket_timeout=TIMEOUT,
                                     stack_timeout=TIMEOUT, blocked_connection_timeout=TIMEOUT)


def _queue_args() -> dict:
    return {"x-max-length": 50_000}


# ---- load processes (each returns a dict of counts through ``out``) ------------------------


def publisher(port: int, idx: int, nqueues: int, deadline: float, out) -> None:
    import pika

    rnd = random.Random(idx)
    counts = {"published": 0, "errors": 0}
    while time.time() < deadline:
        try:
            conn = pika.BlockingConnection(_params(port))
            ch = conn.channel()
            ch.confirm_delivery()
            q = f"soak-{idx % nqueues}"
            ch.queue_declare(q, durable=True, arguments=_queue_args())
            persistent = pika.BasicProperties(delivery_mode=2)
            while time.time() < deadline:
                body = os.urandom(rnd.choice((10, 100, 1000, 8192)))
                ch.basic_publish("", q, body, persistent if rnd.random() < 0.3 else None)
                counts["published"] += 1
            conn.close()
        except Exception:
            counts["errors"] += 1
            time.sleep(0.5)
    out.put(("publisher", counts))


def consumer(port: int, idx: int, nqueues: int, deadline: float, out) -> None:
    import pika

    counts = {"consumed": 0, "errors": 0}
    while time.time() < deadline:
        try:
            conn = pika.BlockingConnection(_params(port))
            ch = conn.channel()
            q = f"soak-{idx % nqueues}"
            ch.queue_declare(q, durable=True, arguments=_queue_args())
            ch.basic_qos(prefetch_count=100)

            def on_msg(ch_, method, _props, _body):
                ch_.basic_ack(method.delivery_tag)
                counts["consumed"] += 1

            ch.basic_consume(q, on_msg)
            while time.time() < deadline:
                conn.process_data_events(time_limit=0.5)
            conn.close()
        except Exception:
            counts["errors"] += 1
            time.sleep(0.5)
    out.put(("consumer", counts))


def churner(port: int, idx: int, deadline: float, out) -> None:
    import pika

    counts = {"declared": 0, "deleted": 0, "errors": 0}
    while time.time() < deadline:
        try:
            conn = pika.BlockingConnection(_params(port))
            ch = conn.channel()
            while time.time() < deadline:
                tag = os.urandom(4).hex()
                q, x = f"churn-{idx}-{tag}", f"churn-x-{idx}-{tag}"
                ch.queue_declare(q, arguments={"x-message-ttl": 60_000})
                ch.exchange_declare(x, "topic")
                ch.queue_bind(q, x, "a.#")
                for _ in range(5):
                    ch.basic_publish(x, "a.b", b"churn")
                got = ch.basic_get(q, auto_ack=True)[2]
                assert got == b"churn", got
                ch.queue_unbind(q, x, "a.#")
                ch.exchange_delete(x)
                ch.queue_delete(q)
                counts["declared"] += 1
                counts["deleted"] += 1
            conn.close()
        except Exception:
            counts["errors"] += 1
            time.sleep(0.5)
    out.put(("churner", counts))


def connector(port: int, idx: int, deadline: float, out) -> None:
    import pika

    counts = {"opened": 0, "dropped": 0, "errors": 0}
    n = 0
    while time.time() < deadline:
        try:
            conn = pika.BlockingConnection(_params(port))
            ch = conn.channel()
            ch.queue_declare("", exclusive=True)
            n += 1
            counts["opened"] += 1
            if n % 3 == 0:
                # drop the socket without connection.close
                conn._impl._transport._sock.close()  # noqa: SLF001
                counts["dropped"] += 1
                try:
                    conn.close()
                except Exception:
                    pass
            else:
                conn.close()
        except Exception:
            counts["errors"] += 1
            time.sleep(0.5)
    out.put(("connector", counts))


# ---- sampling ----------------------------------------------------------------------------


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def nfds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds not judged")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--publishers", type=int, default=3)
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--churners", type=int, default=1)
    ap.add_argument("--connectors", type=int, default=1)
    ap.add_argument("--max-rss-growth", type=float, default=16.0,
                    help="MiB the late samples may exceed the early ones by")
    args = ap.parse_args()

    data_dir = tempfile.mkdtemp(prefix="syncmq-soak-")
    b = BrokerProcess(data_dir, "--heartbeat", "0").start()
    pid = b.proc.pid
    nq = max(args.publishers, 1)
    deadline = time.time() + args.duration
    out: mp.Queue = mp.Queue()
    ctx = mp.get_context("fork")
    procs = []
    for i in range(args.consumers):
        procs.append(ctx.Process(target=consumer, args=(b.port, i, nq, deadline, out)))
    for i in range(args.publishers):
        procs.append(ctx.Process(target=publisher, args=(b.port, i, nq, deadline, out)))
    for i in range(args.churners):
        procs.append(ctx.Process(target=churner, args=(b.port, i, deadline, out)))
    for i in range(args.connectors):
        procs.append(ctx.Process(target=connector, args=(b.port, i, deadline, out)))
    t0 = time.time()
    for p in procs:
        p.start()
    samples = []
    next_sample = t0
    while time.time() < deadline:
        now = time.time()
        if now >= next_sample:
            samples.append({"t": round(now - t0, 1), "rss_mib": round(rss(pid) / MiB, 1),
                            "fds": nfds(pid)})
            print(json.dumps(samples[-1]), flush=True)
            next_sample += args.sample
        time.sleep(max(0.0, min(next_sample, deadline) - time.time()))
    totals: dict[str, int] = {}
    for _ in procs:
        try:
            _kind, counts = out.get(timeout=TIMEOUT * 2)
        except Exception:
            break
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    for p in procs:
        p.join(TIMEOUT)
        if p.is_alive():
            p.kill()
    # after the load: every connection closed, the fds back where they were
    settle_deadline = time.time() + 30
    while time.time() < settle_deadline and nfds(pid) > samples[0]["fds"] + 2:
        time.sleep(0.2)
    idle = {"rss_mib": round(rss(pid) / MiB, 1), "fds": nfds(pid)}
    rc = b.stop()
    tracebacks = b.tracebacks()
    shutil.rmtree(data_dir, ignore_errors=True)

    judged = [s for s in samples if s["t"] >= args.warmup]
    third = max(1, len(judged) // 3)
    early = statistics.mean(s["rss_mib"] for s in judged[:third]) if judged else 0.0
    late = statistics.mean(s["rss_mib"] for s in judged[-third:]) if judged else 0.0
    rss_vals = [s["rss_mib"] for s in judged]
    fd_vals = [s["fds"] for s in judged]
    growth = round(late - early, 1)
    flat = bool(judged) and growth <= args.max_rss_growth and idle["fds"] <= samples[0]["fds"] + 2
    summary = {
        "duration_s": args.duration, "warmup_s": args.warmup, "samples": len(samples),
        "rss_mib_after_warmup": {"min": min(rss_vals, default=0), "max": max(rss_vals, default=0),
                                 "early_mean": round(early, 1), "late_mean": round(late, 1),
                                 "growth": growth},
        "fds_after_warmup": {"min": min(fd_vals, default=0), "max": max(fd_vals, default=0)},
        "fds_at_start": samples[0]["fds"] if samples else None, "idle_after_load": idle,
        "operations": totals, "broker_exit": rc, "tracebacks": len(tracebacks),
        "ok": flat and rc == 0 and not tracebacks and totals.get("published", 0) > 0,
    }
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
