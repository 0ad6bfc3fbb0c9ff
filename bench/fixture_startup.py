"""Time from fixture request to a usable connection: syncmq's plugin vs pytest-rabbitmq.

Each sample is a fresh pytest process running one test that asks for a broker fixture and
opens a channel; a conftest hook stamps the start of the test's setup (fixtures are set up
inside it) and the test stamps the moment its channel is open. The median of ``--runs``
samples is printed for:

- ``syncmq``: the ``syncmq_url`` fixture (an in-process ``syncmq.Server`` started for the
  session) and a pika connection to it;
- ``pytest-rabbitmq``: its ``rabbitmq`` fixture (``rabbitmq_proc`` starts rabbitmq-server, the
  client fixture connects with pika), skipped when rabbitmq-server is not installed.

Most of syncmq's figure is importing the broker (the fixture imports it on first use). Then
``--cycles`` start/stop cycles of ``syncmq.Server`` in this process (each with a connection,
a durable queue and 100 persistent messages): time from ``Server()`` to an open channel once
imported, threads left after each stop (any thread named ``syncmq-*``) and this process's
RSS after the first and the last cycle.

    python bench/fixture_startup.py [--runs 10] [--cycles 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = '''
import os, time, pytest

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.config._t0 = time.perf_counter()

@pytest.fixture
def stamp(request):
    def done():
        with open(os.environ["STAMP"], "w") as f:
            f.write(repr(time.perf_counter() - request.config._t0))
    return done
'''

TESTS = {
    "syncmq": '''
import pika

def test_ready(syncmq_url, stamp):
    conn = pika.BlockingConnection(pika.URLParameters(syncmq_url))
    conn.channel()
    stamp()
    conn.close()
''',
    "pytest-rabbitmq": '''
def test_ready(rabbitmq, stamp):
    rabbitmq.channel()
    stamp()
''',
}


def sample(kind: str, work: Path) -> float:
    """One pytest process; returns seconds from setup start to an open channel."""
    d = work / kind.replace("-", "_")
    d.mkdir(exist_ok=True)
    (d / "conftest.py").write_text(CONFTEST)
    (d / "test_ready.py").write_text(TESTS[kind])
    stamp = d / "stamp"
    stamp.unlink(missing_ok=True)
    env = dict(os.environ, STAMP=str(stamp), PYTHONPATH=str(ROOT))
    probe = ("from importlib.metadata import entry_points as e; print(any(p.value == "
             "'syncmq.testing.plugin' for p in e(group='pytest11')))")
    installed = subprocess.run([sys.executable, "-c", probe], env=env, cwd=d, text=True,
                               capture_output=True).stdout.strip() == "True"
    mine = [] if installed else ["-p", "syncmq.testing.plugin"]
    plugins = [*mine, "-p", "no:pytest_rabbitmq"] if kind == "syncmq" else ["-p", "no:syncmq"]
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-c", os.devnull, "--rootdir", str(d), *plugins, str(d)],
                       capture_output=True, text=True, env=env, cwd=d, timeout=600)
    if p.returncode != 0 or not stamp.exists():
        raise RuntimeError(f"{kind} run failed:\n{p.stdout[-3000:]}{p.stderr[-2000:]}")
    return float(stamp.read_text())


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cycles(n: int) -> dict:
    """Start/stop ``n`` servers in this process with a little traffic each."""
    import pika

    sys.path.insert(0, str(ROOT))
    import syncmq

    left_after_stop, rss, ready = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        with syncmq.Server() as s:
            conn = pika.BlockingConnection(pika.URLParameters(s.url))
            ch = conn.channel()
            ready.append(time.perf_counter() - t0)
            ch.queue_declare("bench", durable=True)
            for _ in range(100):
                ch.basic_publish("", "bench", b"x" * 512, pika.BasicProperties(delivery_mode=2))
            conn.close()
        left_after_stop.append(sum(t.name.startswith("syncmq-") for t in threading.enumerate()))
        if i in (0, n - 1):
            rss.append(_rss_kib())
    return {"cycles": n, "start_to_open_channel_median_s": round(statistics.median(ready), 4),
            "max_syncmq_threads_after_stop": max(left_after_stop),
            "threads_after_all": threading.active_count(),
            "rss_kib_after_first": rss[0], "rss_kib_after_last": rss[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cycles", type=int, default=50)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syncmq-fixture-bench-"))
    kinds = ["syncmq"]
    if shutil.which("rabbitmq-server") or os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server"):
        kinds.append("pytest-rabbitmq")
    out: dict = {}
    try:
        for kind in kinds:
            times = [sample(kind, work) for _ in range(args.runs)]
            out[kind] = {"median_s": round(statistics.median(times), 4),
                         "min_s": round(min(times), 4), "max_s": round(max(times), 4),
                         "runs": args.runs}
            print(kind, json.dumps(out[kind]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(out) == 2:
        print("ratio pytest-rabbitmq/syncmq (median):",
              round(out["pytest-rabbitmq"]["median_s"] / out["syncmq"]["median_s"], 1))
    print("after stop():", json.dumps(cycles(args.cycles)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
