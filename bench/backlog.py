#!/usr/bin/env python3
"""Backlog: a large queue published completely, then drained completely, with broker RSS sampled.

The memory budget's acceptance run (docs/architecture.md, "Memory budget"): 1,000,000 messages
of 1 KiB into one queue with ``--memory-budget 64MiB``, published by ``syncmq-perf`` (one
producer, publisher confirms) and then drained by one ``syncmq-perf`` consumer (manual acks).
A sampler reads ``VmRSS`` and ``VmHWM`` from ``/proc/<broker pid>/status`` every 0.2 s; the
spill directory is measured after the publish and after the drain. The last line printed is a
JSON summary (figures, not assertions: nothing here fails on time).

After the drain (issue #22: RSS back within 1.5x of idle) the summary's ``settle`` gives, at
1, 5, 15 and 30 s after the last delivery (``--settle``), the broker's RSS, its ratio to the
idle level (``rss_idle_kib``, taken after a warm-up of 1,000 messages published and drained),
and the broker's own accounting (``/api/nodes/{node}?memory=true``: ``memory.total.accounted``
and the parts); ``monitor_log`` lists the memory monitor's and the journal's lines (trims, index
rebuilds, the journal's dead-id table) with their time from the last delivery.

    python bench/backlog.py                            # 1M x 1 KiB, --memory-budget 64MiB
    python bench/backlog.py --budget 0                 # the same backlog without a budget
    python bench/backlog.py --messages 300000 --out bench/results/backlog.json
    python bench/backlog.py --persistent               # delivery-mode 2 to a durable queue
    python bench/backlog.py --persistent --kill-recover  # kill -9 after the publish, restart

With ``--persistent`` the bodies are journaled too: the summary gives the journal's segment
bytes after the publish and the drain, and the body store's counters from the broker's "body
store closed" log line (``spill_written_bytes``: bodies written to spill files, which stays ~0
once persistent bodies are read back from the journal). ``broker_cpu_seconds`` (user + system,
from ``/proc/<pid>/stat``) per phase is the load-robust figure on a shared machine.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_per_thread import thread_cpu, thread_names  # noqa: E402

KiB = 1024


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])  # KiB
    return out


class Sampler(threading.Thread):
    """Max and last VmRSS per phase (KiB)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.phase = "idle"
        self.max_rss: dict[str, int] = {}
        self.samples: list[tuple[float, str, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.is_set():
            try:
                rss = _status(self.pid)["VmRSS"]
            except (OSError, KeyError):
                return
            self.max_rss[self.phase] = max(self.max_rss.get(self.phase, 0), rss)
            self.samples.append((round(time.monotonic() - t0, 1), self.phase, rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def journal_bytes(data_dir: str) -> int:
    """Bytes of the journal's segment files."""
    total = 0
    for n in os.listdir(data_dir):
        if n.endswith(".seg"):
            try:
                total += os.path.getsize(os.path.join(data_dir, n))
            except FileNotFoundError:
                pass
    return total


_STORE_LINES: list[str] = []
#: (monotonic time, line) of the memory monitor's lines (trims, index rebuilds)
_MONITOR_LINES: list[tuple[float, str]] = []
_MONITOR_MARKS = ("memory returned to the OS", "index tables rebuilt", "dead-id table rebuilt")
#: the checkout whose syncmq is benchmarked (broker and syncmq-perf): this script's, or
#: $SYNCMQ_ROOT (e.g. to measure another branch with the same script)
ROOT = os.environ.get("SYNCMQ_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _drain_stderr(proc: subprocess.Popen) -> None:
    for x in proc.stderr:
        if "body store closed" in x:
            _STORE_LINES.append(x)
        elif any(m in x for m in _MONITOR_MARKS):
            _MONITOR_LINES.append((time.monotonic(), x))


#: the management port of the broker last started (its memory breakdown; None: not known)
MGMT: dict[str, int] = {}


def start_broker(data_dir: str, budget: str, workers: int) -> tuple[subprocess.Popen, int]:
    args = [sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir", data_dir,
            "--log-format", "json", "--log-level", "info", "--management-port", "0",
            "--prometheus-port", "-1",
            "--workers", str(workers), "--memory-budget", budget,
            "--memory-high-watermark", "0"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            bufsize=1, env=_env(), cwd=ROOT)
    for line in proc.stderr:
        if '"port"' in line:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "port" in rec:
                if rec.get("management_port"):
                    MGMT["port"] = int(rec["management_port"])
                threading.Thread(target=_drain_stderr, args=(proc,), daemon=True).start()
                return proc, int(rec["port"])
    raise RuntimeError("syncmq did not start")


def spill_usage(data_dir: str) -> dict[str, int]:
    d = os.path.join(data_dir, "spill")
    if not os.path.isdir(d):
        return {"files": 0, "bytes": 0}
    names = os.listdir(d)
    return {"files": len(names), "bytes": sum(os.path.getsize(os.path.join(d, n))
                                              for n in names)}


def node_memory() -> dict | None:
    """The broker's own breakdown (``/api/nodes/{node}?memory=true``), in KiB; None if the
    management API does not answer."""
    if "port" not in MGMT:
        return None
    auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
    base = f"http://127.0.0.1:{MGMT['port']}/api/nodes"
    try:
        with urllib.request.urlopen(urllib.request.Request(base, headers=auth), timeout=30) as r:
            name = json.loads(r.read())[0]["name"]
        url = f"{base}/{urllib.request.quote(name)}?memory=true"
        with urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=30) as r:
            mem = json.loads(r.read())["memory"]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    out = {}
    for k, v in mem.items():
        if isinstance(v, int):
            out[k] = v // KiB
        elif isinstance(v, dict):
            out[k] = {kk: vv // KiB for kk, vv in v.items() if isinstance(vv, int)}
    return out


def _brief(line: str) -> dict:
    """A monitor log line's message and figures."""
    try:
        rec = json.loads(line)
    except ValueError:
        return {"message": line.strip()}
    return {k: v for k, v in rec.items() if k == "message" or isinstance(v, int)}


def settle(pid: int, idle_kib: int, t_end: float, points: list[float]) -> list[dict]:
    """RSS and the broker's accounting at ``points`` seconds after ``t_end`` (the last
    delivery)."""
    out = []
    for p in points:
        delay = t_end + p - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        rss = _status(pid)["VmRSS"]
        out.append({"after_s": p, "rss_kib": rss, "rss_over_idle": round(rss / idle_kib, 2),
                    "node_memory_kib": node_memory()})
    return out


def perf(port: int, *args: str) -> dict:
    cmd = ["syncmq-perf", "--uri", f"amqp://guest:guest@127.0.0.1:{port}/%2f", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_env()).stdout
    return json.loads(out.strip().splitlines()[-1])


def _kill_and_recover(proc, sampler, data_dir: str, opts, result: dict):
    """kill -9 the broker, restart it on ``data_dir``: seconds until it listens (recovery),
    its CPU seconds and RSS then (issue #22: recovery of a backlog after a crash)."""
    proc.kill()
    proc.wait()
    sampler.stop()
    t0 = time.monotonic()
    proc, port = start_broker(data_dir, opts.budget, opts.workers)
    result["recovery_seconds"] = round(time.monotonic() - t0, 1)
    st = _status(proc.pid)
    result["after_recovery"] = {"rss_kib": st["VmRSS"], "hwm_kib": st["VmHWM"],
                                "cpu_seconds": round(_cpu_seconds(proc.pid), 1),
                                "spill": spill_usage(data_dir)}
    old = sampler.max_rss
    sampler = Sampler(proc.pid)
    sampler.max_rss.update(old)
    sampler.start()
    return proc, port, sampler


def _start_pyspy(pid: int, out: str) -> subprocess.Popen:
    return subprocess.Popen(["py-spy", "record", "-r", "100", "-f", "raw", "-p", str(pid),
                             "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _per_thread(pid: int, before: dict, messages: int) -> dict[str, float]:
    """User + system CPU microseconds per message of each broker thread since ``before``."""
    names = thread_names(pid)
    out = {}
    for tid, (u, s) in thread_cpu(pid).items():
        u0, s0 = before.get(tid, (0.0, 0.0))
        us = (u + s - u0 - s0) * 1e6 / messages
        if us >= 0.05:
            out[names.get(tid, tid)] = round(us, 1)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--budget", default="64MiB", help="--memory-budget of the broker (0: none)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--persistent", action="store_true",
                   help="publish persistent messages (delivery-mode 2) to a durable queue")
    p.add_argument("--kill-recover", action="store_true",
                   help="after the publish, kill -9 the broker and restart it on the same data "
                        "dir (recovery time, CPU and RSS), then drain the restarted one")
    p.add_argument("--data-dir", default=None, help="default: a temporary directory")
    p.add_argument("--out", default=None, help="also write the JSON summary here")
    p.add_argument("--pyspy", default=None, metavar="RAW",
                   help="record a py-spy profile of the drain (-f raw) into RAW "
                        "(summarise it with bench/pyspy_summary.py)")
    p.add_argument("--settle", default="1,5,15,30",
                   help="seconds after the last delivery at which RSS and the broker's "
                        "accounting are read")
    opts = p.parse_args()

    data_dir = opts.data_dir or tempfile.mkdtemp(prefix="syncmq-backlog-")
    proc, port = start_broker(data_dir, opts.budget, opts.workers)
    sampler = Sampler(proc.pid)
    sampler.start()
    result: dict = {"syncmq_root": ROOT, "messages": opts.messages, "size": opts.size, "budget": opts.budget,
                    "volume_bytes": opts.messages * opts.size, "persistent": opts.persistent}
    persist = ["--persistent", "--durable"] if opts.persistent else []
    cpu: dict[str, float] = {}
    try:
        # warm up (threads, codec, first buffers), then the idle level
        perf(port, "-x", "1", "-y", "1", "-C", "1000", "-D", "1000", "-s", str(opts.size),
             *persist)
        time.sleep(1.0)
        result["rss_idle_kib"] = _status(proc.pid)["VmRSS"]
        result["idle_node_memory_kib"] = node_memory()
        sampler.phase = "publish"
        t0 = time.monotonic()
        c0 = _cpu_seconds(proc.pid)
        pub = perf(port, "-x", "1", "-y", "0", "-C", str(opts.messages), "-s", str(opts.size),
                   "-c", "2000", "--keep-queues", *persist)
        cpu["publish"] = round(_cpu_seconds(proc.pid) - c0, 1)
        result["publish_seconds"] = round(time.monotonic() - t0, 1)
        result["publish_rate"] = round(opts.messages / result["publish_seconds"])
        result["publish_perf"] = {k: pub.get(k) for k in ("sent", "confirmed", "send_rate")
                                  if k in pub}
        time.sleep(1.0)
        st = _status(proc.pid)
        result["after_publish"] = {"rss_kib": st["VmRSS"], "hwm_kib": st["VmHWM"],
                                   "spill": spill_usage(data_dir),
                                   "journal_bytes": journal_bytes(data_dir)}
        if opts.kill_recover:
            proc, port, sampler = _kill_and_recover(proc, sampler, data_dir, opts, result)
        sampler.phase = "drain"
        t0 = time.monotonic()
        c0 = _cpu_seconds(proc.pid)
        threads0 = thread_cpu(proc.pid)
        spy = _start_pyspy(proc.pid, opts.pyspy) if opts.pyspy else None
        con = perf(port, "-x", "0", "-y", "1", "-D", str(opts.messages), "--predeclared",
                   "-q", "1000", "-A", "100", "--drain-timeout", "3600")
        t_end = time.monotonic()  # (the last delivery: the settle points count from here)
        cpu["drain"] = round(_cpu_seconds(proc.pid) - c0, 1)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        result["drain_cpu_us_per_message_by_thread"] = _per_thread(proc.pid, threads0,
                                                                   opts.messages)
        result["broker_cpu_seconds"] = cpu
        result["drain_seconds"] = round(time.monotonic() - t0, 1)
        result["drain_rate"] = round(opts.messages / result["drain_seconds"])
        result["drain_perf"] = {k: con.get(k) for k in ("received", "receive_rate")
                                if k in con}
        sampler.phase = "settle"
        points = [float(x) for x in opts.settle.split(",") if x]
        result["settle"] = settle(proc.pid, result["rss_idle_kib"], t_end, points)
        result["monitor_log"] = [[round(t - t_end, 1), _brief(x)]
                                 for t, x in list(_MONITOR_LINES) if t >= t_end - 60]
        st = _status(proc.pid)
        result["after_drain"] = {"rss_kib": st["VmRSS"], "hwm_kib": st["VmHWM"],
                                 "spill": spill_usage(data_dir),
                                 "journal_bytes": journal_bytes(data_dir)}
        result["max_rss_kib"] = dict(sampler.max_rss)
        hwm = st["VmHWM"]
        result["hwm_minus_idle_per_message_bytes"] = round(
            (hwm - result["rss_idle_kib"]) * KiB / opts.messages, 1)
    finally:
        sampler.stop()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for _ in range(50):  # the drainer thread may still be reading the last lines
            if _STORE_LINES:
                break
            time.sleep(0.1)
        if _STORE_LINES:
            try:
                result["body_store_at_stop"] = json.loads(_STORE_LINES[-1]).get("body_store")
            except ValueError:
                pass
        if opts.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    line = json.dumps(result)
    print(line)
    if opts.out:
        with open(opts.out, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
