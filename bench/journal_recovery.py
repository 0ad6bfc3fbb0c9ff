"""Restart cost of a persistent backlog (issue #22): write N x SIZE persistent messages to one
durable queue straight through the journal, kill -9 the writer, then restart a broker on that
journal as syncmq's start-up does (journal recovery, then ``Durability.recover_into`` into a
paged queue with a memory budget, then the journal starts and ``journal_started`` journals
DELIVERED for the recovered messages) and report its CPU seconds, wall seconds and peak RSS:
``recovery_*`` up to the end of ``recover_into``, ``start_*`` and ``peak_rss_mib`` to the end.

Each phase runs in a fresh process, so the peak RSS (``ru_maxrss``) is the restart's own.

    PYTHONPATH=. python3 bench/journal_recovery.py --messages 1000000
    PYTHONPATH=. python3 bench/journal_recovery.py --messages 1000000 --profile /tmp/rec.prof
    PYTHONPATH=. python3 bench/journal_recovery.py --data-dir D --reuse   # restart D again
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time


def build(data: str, n: int, size: int) -> None:
    """Child: a durable queue and ``n`` persistent messages, fsynced; prints 'ready' and waits
    to be killed (no clean stop: the restart is a crash recovery)."""
    from syncmq.journal import format as fmt
    from syncmq.journal.writer import Journal

    j = Journal(data)
    j.open()
    j.recover()
    j.start()
    from syncmq.wire import _spec

    j.append(fmt.encode_queue_declare("/", "backlog", 0, b""))
    body = b"x" * size
    props = _spec.BasicProperties(delivery_mode=2).encode()
    for mid in range(1, n + 1):
        rec = fmt.encode_publish(mid, "/", ("backlog",), "", "backlog", props, body)
        j.append_publish(rec, mid, "/", ("backlog",))
        if mid % 20000 == 0:
            _barrier(j)
    _barrier(j)
    print("ready", flush=True)
    time.sleep(3600)


def _barrier(j) -> None:
    done = threading.Event()
    j.sync_barrier(lambda _e: done.set())
    done.wait()


def restart(data: str, window: int, budget: int, profile: str | None) -> None:
    """Child: start a broker on ``data`` as syncmq does and print the figures as JSON."""
    from syncmq.broker.broker import Broker
    from syncmq.broker.durability import Durability
    from syncmq.journal.writer import Journal
    from syncmq.queues.spill import BodyStore

    spill = tempfile.mkdtemp(prefix="rec-spill-")
    t0, c0 = time.perf_counter(), time.process_time()
    journal = Journal(data)
    store = BodyStore(spill, budget)
    store.page_window = window
    store.attach_journal(journal.reader)
    broker = Broker(durability=Durability(journal), body_store=store)
    journal.open()
    store.open()
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    counts = broker.durability.recover_into(broker)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # then as the server's start-up goes on: the journal runs and, after this unclean stop,
    # journals DELIVERED for every recovered message (Durability.journal_started)
    journal.start()
    broker.durability.journal_started()
    assert broker.durability.wait_durable() is None
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    q = broker.vhosts["/"].queues.get("backlog")
    print(json.dumps({
        "messages": counts["messages"], "queue_ready": len(q.ready) if q else 0,
        "recovery_wall_s": round(wall, 2), "recovery_cpu_s": round(cpu, 2),
        "recovery_peak_rss_mib": round(rss, 1),
        "start_wall_s": round(time.perf_counter() - t0, 2),
        "start_cpu_s": round(time.process_time() - c0, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }), flush=True)
    shutil.rmtree(spill, ignore_errors=True)
    os._exit(0)  # no clean stop: the next restart of the same dir is a crash recovery again


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--window", type=int, default=4096, help="--queue-page-window")
    ap.add_argument("--budget", type=int, default=64 << 20, help="--memory-budget (bytes)")
    ap.add_argument("--data-dir", help="default: a temporary directory, deleted at the end")
    ap.add_argument("--reuse", action="store_true", help="restart --data-dir as it is")
    ap.add_argument("--profile", help="cProfile the restart into this file")
    ap.add_argument("--role", choices=["build", "restart"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "build":
        return build(a.data_dir, a.messages, a.size)
    if a.role == "restart":
        return restart(a.data_dir, a.window, a.budget, a.profile)
    data = a.data_dir or tempfile.mkdtemp(prefix="rec-bench-")
    me = [sys.executable, os.path.abspath(__file__), "--data-dir", data]
    try:
        if not a.reuse:
            t0 = time.perf_counter()
            child = subprocess.Popen(me + ["--role", "build", "--messages", str(a.messages),
                                           "--size", str(a.size)], stdout=subprocess.PIPE,
                                     text=True)
            assert child.stdout.readline().strip() == "ready"
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            print(f"built {a.messages} messages in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
        extra = ["--window", str(a.window), "--budget", str(a.budget)]
        if a.profile:
            extra += ["--profile", a.profile]
        out = subprocess.run(me + ["--role", "restart"] + extra, capture_output=True,
                             text=True, check=True).stdout
        print(out.strip().splitlines()[-1])
    finally:
        if not a.data_dir:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
