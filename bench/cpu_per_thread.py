#!/usr/bin/env python3
"""Broker CPU per message, per thread: a load-robust figure on a shared machine.

Starts syncmq from this checkout (management on an ephemeral port, for the journal's fsync
histogram), runs ``syncmq-perf`` (S3 by default) against it and prints one JSON line per run:
rates, broker CPU microseconds per received message (utime + stime from /proc), the same split
per thread and into user/system time, fsyncs and their mean duration.

    python bench/cpu_per_thread.py --runs 3 --time 5
    python bench/cpu_per_thread.py --perf "-x 1 -y 1 -s 16 -a" --broker-args "--fsync never"
    python bench/cpu_per_thread.py --pyspy s3.raw     # also record a py-spy profile of the run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S3 = "-x 1 -y 1 -s 1024 --persistent -c 100 --durable -q 100"
TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) / TCK, int(fields[12]) / TCK)
    return out


def thread_names(pid: int) -> dict[str, str]:
    """OS thread id -> Python thread name (py-spy dump; Python 3.11 does not name OS threads)."""
    try:
        text = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {m.group(1): m.group(2).replace("syncmq-", "")
            for m in re.finditer(r'Thread (\d+) \(\w+\): "([^"]+)"', text)}


def fsync_metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {m.group(1): float(m.group(2)) for m in
           re.finditer(r"^syncmq_journal_fsync_seconds_(sum|count) (\S+)$", text, re.M)}
    m = re.search(r"^syncmq_journal_cancelled_publishes_total (\S+)$", text, re.M)
    out["cancelled"] = float(m.group(1)) if m else 0.0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--time", default="5")
    ap.add_argument("--perf", default=S3, help=f"syncmq-perf arguments (default: S3, {S3})")
    ap.add_argument("--broker-args", default="")
    ap.add_argument("--pyspy", default="", help="write a py-spy raw profile of each run here")
    opts = ap.parse_args()
    d = tempfile.mkdtemp(prefix="cpu-per-msg-")
    args = [sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir", d + "/data",
            "--log-format", "json", "--management-port", "0", *opts.broker_args.split()]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    port = mport = None
    try:
        while port is None:
            line = p.stderr.readline()
            if not line:
                raise SystemExit("syncmq did not start")
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "port" in rec:
                port, mport = rec["port"], rec.get("management_port")
        threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
        uri = f"amqp://guest:guest@127.0.0.1:{port}/%2f"
        names = thread_names(p.pid)
        for _ in range(opts.runs):
            m0, t0 = fsync_metrics(mport), thread_cpu(p.pid)
            spy = None
            if opts.pyspy:
                spy = subprocess.Popen(["py-spy", "record", "-r", "200", "-f", "raw", "-d",
                                        opts.time, "-p", str(p.pid), "-o", opts.pyspy],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run = subprocess.run([sys.executable, "-m", "syncmq.perf.cli", "--uri", uri,
                                  *opts.perf.split(), "-z", opts.time],
                                 capture_output=True, text=True, cwd=ROOT)
            if spy is not None:
                spy.wait()
            t1, m1 = thread_cpu(p.pid), fsync_metrics(mport)
            res = json.loads([x for x in run.stdout.splitlines() if x.startswith("{")][-1])
            n = max(res["received"], 1)
            per_thread = {}
            for tid, (u, s) in t1.items():
                u0, s0 = t0.get(tid, (0.0, 0.0))
                if u + s - u0 - s0 > 0:
                    per_thread[names.get(tid, tid)] = [round((u - u0) * 1e6 / n, 1),
                                                       round((s - s0) * 1e6 / n, 1)]
            fsyncs = m1.get("count", 0) - m0.get("count", 0)
            print(json.dumps({
                "sent_rate": round(res["sent_rate"]), "received_rate": round(res["received_rate"]),
                "cpu_us_per_msg": round(sum(sum(v) for v in per_thread.values()), 1),
                "thread_us_per_msg_user_sys": per_thread,
                "fsyncs": int(fsyncs),
                "msgs_per_fsync": round(res["sent"] / fsyncs, 1) if fsyncs else None,
                "fsync_ms_mean": round((m1.get("sum", 0) - m0.get("sum", 0)) * 1e3 / fsyncs, 3)
                if fsyncs else None,
                # publishes whose PUBLISH record was never written (write cancel)
                "cancelled_share": round((m1["cancelled"] - m0["cancelled"])
                                         / max(res["sent"], 1), 3),
                "errors": res.get("errors")}), flush=True)
    finally:
        p.terminate()
        p.wait(30)
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
