"""Journal benchmark: group-commit throughput and recovery time.

    python bench/journal_bench.py                        # 100k x 1 KiB from 4 threads
    python bench/journal_bench.py --records 200000 --fsync always --window 1
    python bench/journal_bench.py --small 1000000        # recovery of 1M small publishes + acks

Each thread publishes with a confirm window (like a client in confirm mode): at most
``--window`` unconfirmed appends in flight; the callback releases a slot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from syncmq.journal import Journal  # noqa: E402
from syncmq.journal import format as fmt  # noqa: E402


def bench_append(data_dir: str, records: int, threads: int, body: int, fsync: str,
                 window: int, ack_fraction: float) -> None:
    j = Journal(data_dir, fsync=fsync)
    j.open()
    j.recover()
    j.start()
    ready = threading.Event()
    j.append(fmt.encode_queue_declare("/", "bench", 2), lambda e: ready.set())
    ready.wait()
    payload = os.urandom(body)
    per = records // threads
    done = threading.Barrier(threads + 1)
    errors: list = []

    def worker(t: int) -> None:
        slots = threading.BoundedSemaphore(window)

        def cb(err):
            if err is not None:
                errors.append(err)
            slots.release()

        base = 1 + t * per
        acks: list[int] = []
        for i in range(per):
            slots.acquire()
            mid = base + i
            j.append(fmt.encode_publish(mid, "/", ["bench"], "amq.direct", "bench", b"\x90\x00",
                                        payload), cb)
            if ack_fraction and (i % 100) < ack_fraction * 100:
                acks.append(mid)
                if len(acks) >= 50:
                    j.append(fmt.encode_ack("/", "bench", acks))
                    acks = []
        for _ in range(window):
            slots.acquire()
        done.wait()

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    done.wait()
    elapsed = time.perf_counter() - t0
    m = j.metrics
    j.close()
    n = per * threads
    print(f"append: {n} x {body} B publishes, {threads} threads, window {window}, "
          f"fsync={fsync}")
    print(f"  {n / elapsed:,.0f} records/s  ({elapsed:.2f} s, "
          f"{m.bytes / elapsed / 2**20:,.1f} MiB/s)")
    print(f"  batches {m.batches:,}  fsyncs {m.fsyncs:,}  mean batch {m.mean_batch:.1f} "
          f"appends  max batch {m.max_batch}  errors {len(errors)}")
    bench_recover(data_dir)


def bench_recover(data_dir: str) -> None:
    size = sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir))
    j = Journal(data_dir)
    j.open()
    t0 = time.perf_counter()
    rec = j.recover()
    elapsed = time.perf_counter() - t0
    j.close()
    st = rec.stats
    print(f"recover: {st.records:,} records, {size / 2**20:,.1f} MiB in {st.segments} "
          f"segment(s): {elapsed:.2f} s ({st.records / elapsed:,.0f} records/s), "
          f"{st.live_messages:,} live messages")


def bench_small(data_dir: str, n: int, body: int) -> None:
    """n small publishes and acks for 90% of them, written as fast as possible (fsync=never),
    then recovered."""
    j = Journal(data_dir, fsync="never", auto_compact=False)
    j.open()
    j.recover()
    j.start()
    j.append(fmt.encode_queue_declare("/", "q", 2))
    payload = b"x" * body
    t0 = time.perf_counter()
    chunk: list[bytes] = []
    for mid in range(1, n + 1):
        chunk.append(fmt.encode_publish(mid, "/", ["q"], "", "k", b"", payload))
        if mid % 100 == 0:
            chunk.append(fmt.encode_ack("/", "q", [m for m in range(mid - 99, mid + 1)
                                                   if m % 10]))
            j.append_many(chunk)
            chunk = []
    if chunk:
        j.append_many(chunk)
    ev = threading.Event()
    j.sync_barrier(lambda e: ev.set())
    ev.wait()
    print(f"wrote {n:,} small publishes + acks in {time.perf_counter() - t0:.2f} s")
    j.close()
    bench_recover(data_dir)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--body", type=int, default=1024)
    p.add_argument("--fsync", default="batch", choices=["batch", "always", "never"])
    p.add_argument("--window", type=int, default=256, help="unconfirmed appends per thread")
    p.add_argument("--ack-fraction", type=float, default=0.0)
    p.add_argument("--small", type=int, default=0,
                   help="instead: recovery of N small publishes (+ acks of 90%%)")
    p.add_argument("--dir", default=None, help="data dir (default: a temporary one)")
    args = p.parse_args()
    data_dir = args.dir or tempfile.mkdtemp(prefix="syncmq-journal-bench-")
    try:
        if args.small:
            bench_small(data_dir, args.small, 16 if args.body == 1024 else args.body)
        else:
            bench_append(data_dir, args.records, args.threads, args.body, args.fsync,
                         args.window, args.ack_fraction)
    finally:
        if args.dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
