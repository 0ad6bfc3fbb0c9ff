"""Whole start of a real syncmq process on an existing data directory (issue #22): from the
process spawn to the AMQP port accepting and a passive declare of the queue answering with
the expected message count. Reports wall seconds, the broker's CPU seconds (user + system,
all threads, from /proc) and VmHWM at that point, then kill -9s the broker, so the next run
on the same directory is a crash recovery again (``--clean-stop`` stops it with SIGTERM).

Build a journal with ``bench/journal_recovery.py --role build`` (killed once it prints
``ready``), or reuse one a broker wrote. To compare checkouts on copies of one journal:

    python3 bench/restart_start.py --data-dir D1 --expect 1000000 --root /work/main
    python3 bench/restart_start.py --data-dir D2 --expect 1000000 --root .
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pika


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), help="the checkout whose syncmq runs (default: this one)")
    ap.add_argument("--queue", default="backlog")
    ap.add_argument("--vhost", default="/")
    ap.add_argument("--expect", type=int, required=True, help="messages the queue must hold")
    ap.add_argument("--budget", default="64MiB", help="--memory-budget")
    ap.add_argument("--clean-stop", action="store_true", help="SIGTERM instead of kill -9")
    a = ap.parse_args()
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.path.abspath(a.root))
    args = [sys.executable, "-m", "syncmq.cli", "--port", str(port), "--data-dir", a.data_dir,
            "--management-port", "-1", "--prometheus-port", "-1", "--memory-budget", a.budget,
            "--memory-high-watermark", "0"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=a.root)
    try:
        while True:  # the port accepts once recovery is done and the listener is bound
            if proc.poll() is not None:
                raise SystemExit(f"syncmq exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        listening = time.perf_counter() - t0
        params = pika.ConnectionParameters("127.0.0.1", port, a.vhost,
                                           blocked_connection_timeout=600)
        conn = pika.BlockingConnection(params)
        count = conn.channel().queue_declare(a.queue, passive=True).method.message_count
        conn.close()
        wall = time.perf_counter() - t0
        out = {"root": a.root, "messages": count, "ok": count == a.expect,
               "listening_wall_s": round(listening, 2), "start_wall_s": round(wall, 2),
               "start_cpu_s": round(_cpu_seconds(proc.pid), 2),
               "peak_rss_mib": round(_hwm_mib(proc.pid), 1)}
        print(json.dumps(out), flush=True)
        return 0 if out["ok"] else 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if a.clean_stop else signal.SIGKILL)
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
