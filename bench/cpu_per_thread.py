#!/usr/bin/env python3
"""Broker CPU per message, per thread: a load-robust figure on a shared machine.

Starts syncmq from this checkout (management on an ephemeral port, for the journal's fsync
histogram), runs ``syncmq-perf`` (S3 by default) against it and prints one JSON line per run:
rates, broker CPU microseconds per received message (utime + stime from /proc), the same split
per thread and into user/system time, fsyncs and their mean duration.

    python bench/cpu_per_thread.py --runs 3 --time 5
    python bench/cpu_per_thread.py --perf "-x 1 -y 1 -s 16 -a" --broker-args "--fsync never"
    python bench/cpu_per_thread.py --pyspy s3.raw     # also record a py-spy profile of the run
    python bench/cpu_per_thread.py --perf "-x 4 -y 4 --queues 4 -s 16 -a" --steady 2,5  # S5
    python bench/cpu_per_thread.py --root /tmp/main-checkout ...   # another tree's broker
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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


def thread_switches(pid: int) -> dict[str, tuple[int, int]]:
    """OS thread id -> (voluntary, involuntary) context switches so far (/proc)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                text = f.read()
        except OSError:
            continue
        v = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M)
        nv = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", text, re.M)
        if v and nv:
            out[tid] = (int(v.group(1)), int(nv.group(1)))
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


def message_counts(port: int) -> tuple[float, float]:
    """(messages received from publishers, messages delivered) so far: the broker's global
    counters (``rabbitmq_global_messages_{received,delivered}_total``, summed over labels)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    got = {"received": 0.0, "delivered": 0.0}
    for m in re.finditer(r"^rabbitmq_global_messages_(received|delivered)_total(?:\{[^}]*\})? "
                         r"(\S+)$", text, re.M):
        got[m.group(1)] += float(m.group(2))
    return got["received"], got["delivered"]


def steady(pid: int, port: int, start: float, end: float, t_go: float) -> dict[str, float]:
    """Broker CPU per message between ``start`` and ``end`` seconds after ``t_go`` (a
    ``time.monotonic()`` instant): the steady part of a run, without its setup and its
    teardown (closing connections and deleting queues with a backlog)."""
    time.sleep(max(0.0, t_go + start - time.monotonic()))
    c0, (p0, d0), w0 = sum(map(sum, thread_cpu(pid).values())), message_counts(port), \
        time.monotonic()
    time.sleep(max(0.0, t_go + end - time.monotonic()))
    c1, (p1, d1), w1 = sum(map(sum, thread_cpu(pid).values())), message_counts(port), \
        time.monotonic()
    pub, dlv = max(p1 - p0, 1.0), max(d1 - d0, 1.0)
    return {"seconds": round(w1 - w0, 2), "published_rate": round(pub / (w1 - w0)),
            "delivered_rate": round(dlv / (w1 - w0)), "cpu_cores": round((c1 - c0) / (w1 - w0), 2),
            "cpu_us_per_delivered": round((c1 - c0) * 1e6 / dlv, 2),
            "cpu_us_per_published": round((c1 - c0) * 1e6 / pub, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--time", default="5")
    ap.add_argument("--perf", default=S3, help=f"syncmq-perf arguments (default: S3, {S3})")
    ap.add_argument("--broker-args", default="")
    ap.add_argument("--root", default=ROOT,
                    help="the syncmq checkout to run (broker and syncmq-perf; default: this one)")
    ap.add_argument("--steady", default="",
                    help="A,B: also report broker CPU per published/delivered message between "
                    "A and B seconds after the run starts (the broker's global counters)")
    ap.add_argument("--pyspy", default="", help="write a py-spy raw profile of each run here")
    opts = ap.parse_args()
    d = tempfile.mkdtemp(prefix="cpu-per-msg-")
    args = [sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir", d + "/data",
            "--log-format", "json", "--management-port", "0", *opts.broker_args.split()]
    root = os.path.abspath(opts.root)
    env = dict(os.environ, PYTHONPATH=root)
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=root, env=env)
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
            m0, t0, c0 = fsync_metrics(mport), thread_cpu(p.pid), thread_switches(p.pid)
            spy = None
            if opts.pyspy:
                spy = subprocess.Popen(["py-spy", "record", "-r", "200", "-f", "raw", "-d",
                                        opts.time, "-p", str(p.pid), "-o", opts.pyspy],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t_go = time.monotonic()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.Popen([sys.executable, "-m", "syncmq.perf.cli", "--uri", uri,
                                     *opts.perf.split(), "-z", opts.time],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=root, env=env)
            window = None
            if opts.steady:
                a, b = (float(x) for x in opts.steady.split(","))
                window = steady(p.pid, mport, a, b, t_go)
            stdout, _ = proc.communicate()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if spy is not None:
                spy.wait()
            t1, m1, c1 = thread_cpu(p.pid), fsync_metrics(mport), thread_switches(p.pid)
            res = json.loads([x for x in stdout.splitlines() if x.startswith("{")][-1])
            n = max(res["received"], 1)
            per_thread = {}
            for tid, (u, s) in t1.items():
                u0, s0 = t0.get(tid, (0.0, 0.0))
                if u + s - u0 - s0 > 0:
                    per_thread[names.get(tid, tid)] = [round((u - u0) * 1e6 / n, 1),
                                                       round((s - s0) * 1e6 / n, 1)]
            switches = {}
            for tid, (v, nv) in c1.items():
                v0, nv0 = c0.get(tid, (0, 0))
                if tid in per_thread or names.get(tid, tid) in per_thread:
                    switches[names.get(tid, tid)] = [round((v - v0) * 1000 / n, 1),
                                                     round((nv - nv0) * 1000 / n, 1)]
            fsyncs = m1.get("count", 0) - m0.get("count", 0)
            print(json.dumps({
                "sent_rate": round(res["sent_rate"]), "received_rate": round(res["received_rate"]),
                "cpu_us_per_msg": round(sum(sum(v) for v in per_thread.values()), 1),
                # syncmq-perf's own CPU (all its processes, user + system) a received message
                "client_us_per_msg": round((ru1.ru_utime + ru1.ru_stime - ru0.ru_utime
                                            - ru0.ru_stime) * 1e6 / n, 1),
                "thread_us_per_msg_user_sys": per_thread,
                # context switches per 1,000 received messages: [voluntary, involuntary]
                "thread_switches_per_1k_vol_invol": switches,
                "fsyncs": int(fsyncs),
                "msgs_per_fsync": round(res["sent"] / fsyncs, 1) if fsyncs else None,
                "fsync_ms_mean": round((m1.get("sum", 0) - m0.get("sum", 0)) * 1e3 / fsyncs, 3)
                if fsyncs else None,
                # publishes whose PUBLISH record was never written (write cancel)
                "cancelled_share": round((m1["cancelled"] - m0["cancelled"])
                                         / max(res["sent"], 1), 3),
                "steady": window,
                "errors": res.get("errors")}), flush=True)
    finally:
        p.terminate()
        p.wait(30)
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
