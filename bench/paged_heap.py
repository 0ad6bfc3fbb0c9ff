"""Traced heap bytes per queued message, in-process (issue #22): a broker with a journal and
a memory budget, N x 1 KiB messages published through ``broker.publish`` to one durable
queue (persistent or transient), everything fsynced and applied, then ``tracemalloc`` says
how many bytes the backlog holds and which modules hold them.

    PYTHONPATH=. python3 bench/paged_heap.py -n 200000 --window 0      # unpaged
    PYTHONPATH=. python3 bench/paged_heap.py -n 200000 --window 4096 --transient
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import tracemalloc

from syncmq.broker.broker import Broker
from syncmq.broker.durability import Durability
from syncmq.broker.message import Message
from syncmq.broker.publish import publish
from syncmq.journal.writer import Journal
from syncmq.queues.spill import BodyStore
from syncmq.wire import _spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--window", type=int, default=4096)
    ap.add_argument("--budget", type=int, default=64 << 20)
    ap.add_argument("--transient", action="store_true")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="paged-heap-")
    journal = Journal(data)
    store = BodyStore(os.path.join(data, "spill"), a.budget)
    store.page_window = a.window
    store.attach_journal(journal.reader)
    broker = Broker(durability=Durability(journal), body_store=store)
    journal.open()
    store.open()
    broker.durability.recover_into(broker)
    journal.start()
    broker.durability.journal_started()
    vh = broker.vhosts["/"]
    q, _ = vh.declare_queue("backlog", False, True, False, False, None, None)
    props = _spec.BasicProperties(delivery_mode=1 if a.transient else 2).encode()
    body = b"x" * 1024
    tracemalloc.start(1)
    base = tracemalloc.get_traced_memory()[0]
    snap0 = tracemalloc.take_snapshot()
    t0 = time.process_time()
    ex = vh.default_exchange
    for _ in range(a.n):
        publish(vh, ex, Message("", "backlog", props, body))
    done = threading.Event()
    journal.sync_barrier(lambda _e: done.set())
    done.wait()
    time.sleep(0.5)  # the journal thread applies the batch after the barrier's callback
    cpu = time.process_time() - t0
    used = tracemalloc.get_traced_memory()[0] - base
    snap = tracemalloc.take_snapshot()
    print(f"n={a.n} window={a.window} {'transient' if a.transient else 'persistent'}: "
          f"{used / a.n:.0f} traced bytes a message ({used / 2**20:.1f} MiB), "
          f"ready {len(q.ready)} paged {q.ready.paged_count}, cpu {cpu:.1f} s (traced)")
    by_file: dict[str, int] = {}
    for st in snap.compare_to(snap0, "filename"):
        name = st.traceback[0].filename
        name = name.split("/site-packages/")[-1].split("/syncmq/")[-1]
        by_file[name] = by_file.get(name, 0) + st.size_diff
    for name, size in sorted(by_file.items(), key=lambda kv: -kv[1])[:a.top]:
        print(f"  {size / a.n:8.1f} B/msg  {name}")
    tracemalloc.stop()
    journal.close()
    store.close()


if __name__ == "__main__":
    main()
