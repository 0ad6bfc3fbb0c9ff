"""Scenario matrix: syncmq vs RabbitMQ with syncmq-perf, alternating runs.

Usage::

    python bench/perf_matrix.py [--quick | --full] [--runs N] [--time S]
                                [--scenarios S1,S2,...] [--backlog N] [--connections M]
                                [--no-rabbitmq] [--no-tool-check] [--baseline DIR]
                                [--s8b-rate R] [--long-running [--settle-max S]]

Starts its own syncmq (``--port 0``, temp data dir) and, when ``rabbitmq-server`` is installed,
its own RabbitMQ node (own RABBITMQ_NODENAME / RABBITMQ_MNESIA_BASE / RABBITMQ_NODE_PORT / HOME
in a temp dir, so a RabbitMQ already running on the machine is not disturbed). For every
scenario the runs alternate between the brokers (syncmq first on odd runs, RabbitMQ first on
even ones); medians and the syncmq/RabbitMQ ratio are printed. While a run goes on, the broker's
VmRSS is sampled from /proc/PID/status (peak during the run, and the increase over the RSS just
before it) and its CPU seconds are the /proc/PID/stat utime+stime delta. Both brokers are
restarted before each scenario, and before each run of S6 and S7, so that memory figures are
the scenario's own.

Scenarios (all through syncmq-perf, one process per producer/consumer):

S1 1 producer / 1 consumer, 16 B, transient, autoack
S2 1/1, 1 KiB, manual ack (each message), prefetch 100
S3 1/1, 1 KiB, persistent, confirms (window 100), durable queue, manual ack, prefetch 100
S4 fanout exchange to 10 queues, 10 consumers (one a queue), 16 B, autoack
S5 4 producers / 4 consumers / 4 queues, 16 B, autoack
S5w1 (only when asked for: ``--scenarios S5,S5w1``) S5 with syncmq ``--workers 1``
S6 backlog: N x 1 KiB published with no consumer, then drained (prefetch 1000, ack every 100);
   N = --backlog (200,000; 1,000,000 with --full). syncmq runs with ``--memory-budget``
   (``--s6-memory-budget``, default 64MiB; ``0`` for none): S6 shows the budget at work, bodies
   beyond it spill to disk and RSS is the budget plus a per-message index
S6p (only when asked for: ``--scenarios S6,S6p``) S6 with persistent messages (delivery-mode
   2) on a durable queue, same budget and no confirms: paged out by reference to the journal
S7 M connections each publishing 1 msg/s (M = --connections, 500; 5,000 with --full), one
   consumer; RSS per connection = (peak RSS - RSS before) / M
S8 latency at 1,000 msg/s (1/1, 16 B, manual ack, prefetch 100)
S8b S8 at 10,000 msg/s (``--s8b-rate``); read its sent rate: a broker that cannot keep up shows
   queueing delay, not latency
S2off (only when asked for) S2 with syncmq's credit flow off (``--queue-flow-high 0``): with
   ``--scenarios S2,S2off``, peak RSS with and without the scheme (bench/flow_s2.py runs the
   two without RabbitMQ)

``--baseline DIR`` measures this checkout against another syncmq checkout (e.g. a
``git worktree add /tmp/before <rev>``) in RabbitMQ's place, alternating in the same way: the
ratio column is then after/before (the table's "RabbitMQ" columns are the baseline's).

Also (unless --no-tool-check, and when RabbitMQ and Go are installed): S1 against RabbitMQ with
syncmq-perf and with a Go client (bench/go/perfgo.go, amqp091-go), alternating, to show that the
load tool is not the bottleneck.

``--long-running`` runs the scenarios one after the other on ONE process of each broker (no
restart; syncmq with the S6 budget from the start) and reports its RSS settled at start (the
idle level) and after each scenario once its queues are deleted, with the peak and the ratio
to the idle level (issue #22: at most 1.5x after any backlog drained); bench/perf_longrun.py.

``--quick`` runs every scenario once for ~5 s; the default is 10 s x 3 runs. Results go to
``bench/results/<date>-<set>.json`` with machine info; a markdown table is printed.
The machine is shared and noisy: read the ratios from alternating runs, not the absolute rates.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Measure this checkout, whatever is installed: this process imports syncmq from it, and so do
# the broker and syncmq-perf subprocesses (python -m ... with PYTHONPATH).
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
CLK_TCK = os.sysconf("SC_CLK_TCK")
sys.path.insert(0, HERE)
import perf_longrun  # noqa: E402  (bench/, next to this script)

sys.path.insert(0, os.path.join(ROOT, "tests"))
from brokerproc import BrokerProcess, cli_args, cli_help  # noqa: E402

# ------------------------------------------------------------------------------ /proc probes


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ brokers


class Syncmq:
    """A syncmq broker run from the checkout ``root`` (this one by default)."""

    def __init__(self, root: str = ROOT, name: str = "syncmq",
                 extra: list[str] | None = None) -> None:
        self.root = os.path.abspath(root)
        self.name = name
        inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [self.root, *(p for p in inherited if p and p != ROOT)]))
        self.start(extra)

    def restart(self, extra: list[str] | None = None) -> None:
        """Restart, with ``extra`` command-line options (a scenario's, e.g. S6's budget)."""
        self.stop()
        self.start(extra)

    def start(self, extra: list[str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="perf-syncmq-")
        data = os.path.join(self.dir, "data")
        args = [sys.executable, *cli_args(data, cli_help(self.env, self.root)), *(extra or [])]
        self.broker = BrokerProcess(data, env=self.env, command=args, cwd=self.root)
        self.broker.preexec_fn = _raise_nofile
        self.log = self.broker.log_file = open(os.path.join(self.dir, "syncmq.log"), "w+")
        try:
            self.broker.start()
        except RuntimeError as e:
            raise RuntimeError("syncmq did not start; log in " + self.log.name) from e
        self.proc = self.broker.proc
        self.port = self.broker.port
        self.allocator = self.broker.record.get("allocator")  # (the start-up line's, since 0.7)
        self.pid = self.proc.pid
        self.uri = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"
        import syncmq

        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=self.root).stdout.strip()
        self.version = f"{syncmq.__version__} ({rev})" if rev else syncmq.__version__
        if self.allocator:
            self.version += f", allocator {self.allocator}"

    def stop(self) -> None:
        try:
            self.broker.stop(timeout=30)
        except subprocess.TimeoutExpired:
            pass  # (killed)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class RabbitMQ:
    name = "rabbitmq"

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("rabbitmq-server") or os.path.exists(
            "/usr/lib/rabbitmq/bin/rabbitmq-server"))

    def __init__(self) -> None:
        self.start()

    def restart(self) -> None:
        self.stop()
        self.start()

    def start(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="perf-rabbitmq-")
        os.chmod(self.dir, 0o755)
        self.port = _free_port()
        self.node = f"syncmq-perf-{os.getpid()}@localhost"
        d = self.dir
        self.env = dict(
            os.environ, HOME=d, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(_free_port()), RABBITMQ_MNESIA_BASE=os.path.join(d, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(d, "log"), RABBITMQ_PID_FILE=os.path.join(d, "pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(d, "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=os.path.join(d, "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(d, "advanced.config"),
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        )
        with open(os.path.join(d, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        lib = "/usr/lib/rabbitmq/bin"
        root = os.geteuid() == 0 and os.path.isdir(lib)
        # As root, the Debian wrapper would su to the rabbitmq user; run the real script
        # directly (RabbitMQ runs as root fine) so the temp dir and HOME cookie are ours.
        self.server = os.path.join(lib, "rabbitmq-server") if root else "rabbitmq-server"
        self.ctl = os.path.join(lib, "rabbitmqctl") if root else "rabbitmqctl"
        self.out = open(os.path.join(d, "server.out"), "w")
        self.proc = subprocess.Popen([self.server], env=self.env, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=d, preexec_fn=_raise_nofile)
        r = subprocess.run([self.ctl, "wait", self.env["RABBITMQ_PID_FILE"], "--timeout", "120"],
                           env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError("RabbitMQ did not start: " + r.stdout + r.stderr)
        with open(self.env["RABBITMQ_PID_FILE"]) as f:
            self.pid = int(f.read().strip())  # beam.smp
        self.uri = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"
        self.version = subprocess.run([self.ctl, "-n", self.node, "version"], env=self.env,
                                      capture_output=True, text=True).stdout.strip()

    def stop(self) -> None:
        subprocess.run([self.ctl, "-n", self.node, "stop"], env=self.env, capture_output=True,
                       timeout=120)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------ runs


def perf(uri: str, args: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "syncmq.perf.cli", "--uri", uri, *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:  # (a broker that stopped delivering: a result)
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {"errors": [f"syncmq-perf timed out after {timeout} s: {out[-500:]}"]}
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if not lines:
        return {"errors": [f"syncmq-perf exit {p.returncode}: {p.stderr[-2000:]}"]}
    return json.loads(lines[-1])


class Sampler:
    """Samples a broker's VmRSS every 100 ms while a run goes on."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_before = rss_kb(pid)[0]
        self.cpu_before = cpu_seconds(pid)
        self.peak = self.rss_before
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.peak = max(self.peak, rss_kb(self.pid)[0])
            except OSError:
                return

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        self._t.join()
        rss, hwm = rss_kb(self.pid)
        self.peak = max(self.peak, rss)
        return {"rss_before_mb": round(self.rss_before / 1024, 1),
                "rss_peak_mb": round(self.peak / 1024, 1),
                "rss_after_mb": round(rss / 1024, 1), "vmhwm_mb": round(hwm / 1024, 1),
                "cpu_s": round(cpu_seconds(self.pid) - self.cpu_before, 2)}


def scenarios(opts: argparse.Namespace) -> dict[str, dict[str, Any]]:
    t = str(opts.time)
    n = str(opts.backlog)
    m = opts.connections
    return {
        "S1": {"desc": "1p/1c 16 B transient autoack",
               "steps": [["-x", "1", "-y", "1", "-s", "16", "-a", "-z", t]]},
        "S2": {"desc": "1p/1c 1 KiB manual ack prefetch 100",
               "steps": [["-x", "1", "-y", "1", "-s", "1024", "-q", "100", "-z", t]]},
        # S2 with syncmq's credit flow off (not in the default set: --scenarios S2,S2off
        # shows what the scheme saves in peak RSS; RabbitMQ runs plain S2)
        "S2off": {"desc": "S2 with syncmq --queue-flow-high 0 (credit flow off)",
                  "syncmq_args": ["--queue-flow-high", "0"],
                  "steps": [["-x", "1", "-y", "1", "-s", "1024", "-q", "100", "-z", t]],
                  "fresh": True},
        "S3": {"desc": "1p/1c 1 KiB persistent confirm 100 durable manual ack",
               "steps": [["-x", "1", "-y", "1", "-s", "1024", "--persistent", "-c", "100",
                          "--durable", "-q", "100", "-z", t]]},
        "S4": {"desc": "fanout to 10 queues, 10 consumers, 16 B autoack",
               "steps": [["-x", "1", "--fanout", "10", "-y", "10", "-s", "16", "-a", "-z", t]]},
        "S5": {"desc": "4p/4c/4 queues 16 B autoack",
               "steps": [["-x", "4", "-y", "4", "--queues", "4", "-s", "16", "-a", "-z", t]]},
        # S5 with one syncmq worker (not in the default set: --scenarios S5,S5w1 shows what
        # two workers busy at once cost under the GIL; RabbitMQ runs plain S5)
        "S5w1": {"desc": "S5 with syncmq --workers 1",
                 "syncmq_args": ["--workers", "1"],
                 "steps": [["-x", "4", "-y", "4", "--queues", "4", "-s", "16", "-a", "-z", t]],
                 "fresh": True},
        "S6": {"desc": f"backlog {opts.backlog} x 1 KiB: publish, then drain"
                       + (f" (syncmq --memory-budget {opts.s6_memory_budget})"
                          if opts.s6_memory_budget not in ("", "0") else ""),
               "syncmq_args": (["--memory-budget", opts.s6_memory_budget]
                               if opts.s6_memory_budget not in ("", "0") else []),
               "steps": [["-x", "1", "-y", "0", "-s", "1024", "-C", n, "--keep-queues"],
                         ["-x", "0", "-y", "1", "-D", n, "--predeclared", "-q", "1000",
                          "-A", "100", "--drain-timeout", "120"]], "fresh": True},
        # S6 with persistent messages on a durable queue (same budget, no confirms, as S6):
        # paged out by reference to the journal, not written a second time
        "S6p": {"desc": f"backlog {opts.backlog} x 1 KiB persistent, durable queue"
                        + (f" (syncmq --memory-budget {opts.s6_memory_budget})"
                           if opts.s6_memory_budget not in ("", "0") else ""),
                "syncmq_args": (["--memory-budget", opts.s6_memory_budget]
                                if opts.s6_memory_budget not in ("", "0") else []),
                "steps": [["-x", "1", "-y", "0", "-s", "1024", "-C", n, "--keep-queues",
                           "--persistent", "--durable"],
                          ["-x", "0", "-y", "1", "-D", n, "--predeclared", "-q", "1000",
                           "-A", "100", "--drain-timeout", "300"]],
                "fresh": True},
        "S7": {"desc": f"{m} connections x 1 msg/s, 1 consumer",
               "steps": [["-x", str(m), "-y", "1", "-r", "1", "-s", "16", "-a", "-z", t,
                          "--procs", "8"]], "connections": m, "fresh": True},
        "S8": {"desc": "latency at 1,000 msg/s, 16 B, manual ack prefetch 100",
               "steps": [["-x", "1", "-y", "1", "-r", "1000", "-s", "16", "--latency",
                          "-q", "100", "-z", t]]},
        "S8b": {"desc": f"latency at {opts.s8b_rate:,} msg/s, 16 B, manual ack prefetch 100",
                "steps": [["-x", "1", "-y", "1", "-r", str(opts.s8b_rate), "-s", "16",
                           "--latency", "-q", "100", "-z", t]]},
    }


def run_one(broker: Any, sc: dict[str, Any], timeout: float) -> dict[str, Any]:
    sampler = Sampler(broker.pid)
    results = [perf(broker.uri, step, timeout) for step in sc["steps"]]
    probe = sampler.finish()
    out: dict[str, Any] = {"broker": broker.name, **probe,
                           "errors": [e for r in results for e in r.get("errors", [])]}
    if len(results) == 2:  # S6: publish step, drain step
        out["sent_rate"] = results[0].get("sent_rate", 0.0)
        out["received_rate"] = results[1].get("received_rate", 0.0)
        out["sent"], out["received"] = results[0].get("sent", 0), results[1].get("received", 0)
    else:
        r = results[0]
        for k in ("sent_rate", "received_rate", "sent", "received", "confirmed", "latency_us"):
            out[k] = r.get(k)
    if "connections" in sc:
        out["rss_per_conn_kb"] = round((probe["rss_peak_mb"] - probe["rss_before_mb"]) * 1024
                                       / sc["connections"], 1)
    if out.get("received"):
        out["cpu_us_per_msg"] = round(probe["cpu_s"] * 1e6 / out["received"], 1)
    return out


def _median(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> float | None:
    vals = []
    for r in runs:
        v = r.get(key)
        if sub is not None:
            v = v.get(sub) if isinstance(v, dict) else None
        if isinstance(v, int | float):
            vals.append(v)
    return round(statistics.median(vals), 1) if vals else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    s = {k: _median(runs, k) for k in ("sent_rate", "received_rate", "rss_peak_mb",
                                       "rss_before_mb", "cpu_s", "cpu_us_per_msg",
                                       "rss_per_conn_kb")}
    s["latency_p50_us"] = _median(runs, "latency_us", "p50")
    s["latency_p99_us"] = _median(runs, "latency_us", "p99")
    s["runs"] = len(runs)
    s["errors"] = sum(len(r["errors"]) for r in runs)
    return s


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def tool_check(rabbit: RabbitMQ, runs: int, seconds: float) -> dict[str, Any] | None:
    """S1 against RabbitMQ: syncmq-perf vs the Go client, alternating."""
    go = shutil.which("go")
    gopath = "/usr/share/gocode"
    if not go or not os.path.isdir(os.path.join(gopath, "src/github.com/rabbitmq/amqp091-go")):
        return None
    build = tempfile.mkdtemp(prefix="perfgo-")
    exe = os.path.join(build, "perfgo")
    env = dict(os.environ, GO111MODULE="off", GOPATH=gopath, GOFLAGS="",
               GOCACHE=os.path.join(build, "cache"))
    r = subprocess.run([go, "build", "-o", exe, "."], cwd=os.path.join(HERE, "go"), env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": "go build failed: " + r.stderr[-1000:]}
    out: dict[str, list[dict[str, Any]]] = {"syncmq-perf": [], "go": []}
    for i in range(runs):
        order = ["syncmq-perf", "go"] if i % 2 == 0 else ["go", "syncmq-perf"]
        for tool in order:
            if tool == "go":
                p = subprocess.run([exe, "-uri", rabbit.uri.replace("%2f", ""), "-time",
                                    str(seconds)], capture_output=True, text=True,
                                   timeout=seconds + 60)
                res = json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr}
            else:
                res = perf(rabbit.uri, ["-x", "1", "-y", "1", "-s", "16", "-a", "-z",
                                        str(seconds)], seconds + 120)
            out[tool].append(res)
    shutil.rmtree(build, ignore_errors=True)
    summary = {}
    for tool, rs in out.items():
        summary[tool] = {"sent_rate": _median(rs, "sent_rate"),
                         "received_rate": _median(rs, "received_rate"), "runs": rs}
    return summary


def machine_info(rabbit: RabbitMQ | None, sq: Syncmq) -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "syncmq_version": sq.version,
            "rabbitmq_version": rabbit.version if rabbit else None,
            "loadavg_at_start": os.getloadavg()}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v >= 1000:
        return f"{v:,.0f}"
    return f"{v}"


def table(summary: dict[str, Any], other: str = "rabbitmq") -> str:
    rows = ["| Scenario | sent/s syncmq | sent/s RabbitMQ | ratio | recv/s syncmq | recv/s RabbitMQ "
            "| ratio | p50 / p99 us (syncmq ; RabbitMQ) | peak RSS MB (s / R) | CPU s (s / R) | CPU us/msg (s / R) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, sc in summary.items():
        s = sc["syncmq"]
        r = sc.get(other) or {}
        extra = ""
        if s.get("rss_per_conn_kb") is not None:
            extra = f" ({_fmt(s['rss_per_conn_kb'])} / {_fmt(r.get('rss_per_conn_kb'))} KiB/conn)"
        rows.append(
            f"| {name} {sc['desc']} | {_fmt(s['sent_rate'])} | {_fmt(r.get('sent_rate'))} | "
            f"{_fmt(_ratio(s['sent_rate'], r.get('sent_rate')))} | {_fmt(s['received_rate'])} | "
            f"{_fmt(r.get('received_rate'))} | "
            f"{_fmt(_ratio(s['received_rate'], r.get('received_rate')))} | "
            f"{_fmt(s['latency_p50_us'])} / {_fmt(s['latency_p99_us'])} ; "
            f"{_fmt(r.get('latency_p50_us'))} / {_fmt(r.get('latency_p99_us'))} | "
            f"{_fmt(s['rss_peak_mb'])} / {_fmt(r.get('rss_peak_mb'))}{extra} | "
            f"{_fmt(s['cpu_s'])} / {_fmt(r.get('cpu_s'))} | "
            f"{_fmt(s['cpu_us_per_msg'])} / {_fmt(r.get('cpu_us_per_msg'))} |")
    return "\n".join(rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run of ~5 s per scenario")
    ap.add_argument("--full", action="store_true",
                    help="S6 backlog 1,000,000 and S7 5,000 connections")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs per broker (default 3, quick 1); passes with --long-running "
                         "(default 1)")
    ap.add_argument("--time", type=float, default=None, help="seconds per run (default 10, quick 5)")
    ap.add_argument("--scenarios", default="S1,S2,S3,S4,S5,S6,S7,S8,S8b")
    ap.add_argument("--backlog", type=int, default=None)
    ap.add_argument("--connections", type=int, default=None)
    ap.add_argument("--s6-memory-budget", default="64MiB",
                    help="syncmq's --memory-budget in S6 (0: none)")
    ap.add_argument("--s8b-rate", type=int, default=10_000, help="S8b's publish rate (msg/s)")
    ap.add_argument("--long-running", action="store_true",
                    help="every scenario on one broker process each, RSS settled after each "
                         "(bench/perf_longrun.py)")
    ap.add_argument("--settle-max", type=float, default=90.0,
                    help="--long-running: longest wait for the RSS to settle (s)")
    ap.add_argument("--no-rabbitmq", action="store_true")
    ap.add_argument("--no-tool-check", action="store_true")
    ap.add_argument("--baseline", default=None, metavar="DIR",
                    help="another syncmq checkout to measure against, in RabbitMQ's place")
    ap.add_argument("--out", default=None, help="results file (default bench/results/...)")
    opts = ap.parse_args(argv)
    opts.runs = opts.runs or (1 if opts.quick or opts.long_running else 3)
    opts.time = opts.time or (5.0 if opts.quick else 10.0)
    opts.backlog = opts.backlog or (1_000_000 if opts.full else 200_000)
    opts.connections = opts.connections or (5000 if opts.full else 500)
    return opts


def run_matrix(brokers: list[Any], wanted: list[str], all_sc: dict[str, dict[str, Any]],
               opts: argparse.Namespace, other: str | None) -> tuple[dict, dict]:
    """Each scenario on fresh brokers, runs alternating; returns (raw runs, summary)."""
    raw: dict[str, dict[str, list]] = {}
    summary: dict[str, Any] = {}
    for name in wanted:
        sc = all_sc[name]
        timeout = opts.time * 4 + 600
        raw[name] = {b.name: [] for b in brokers}
        if name != wanted[0] and not sc.get("fresh"):
            for b in brokers:  # RSS figures must not carry the previous scenario's heap
                b.restart()
        for i in range(opts.runs):
            order = brokers if i % 2 == 0 else list(reversed(brokers))
            for b in order:
                if sc.get("fresh"):  # memory figures from a broker of the run's own
                    if isinstance(b, Syncmq):
                        b.restart(sc.get("syncmq_args"))
                    else:
                        b.restart()
                res = run_one(b, sc, timeout)
                raw[name][b.name].append(res)
                print(f"# {name} run {i + 1} {b.name}: {json.dumps(res)}", file=sys.stderr,
                      flush=True)
        summary[name] = {"desc": sc["desc"], "args": sc["steps"],
                         **{b: summarize(rs) for b, rs in raw[name].items()}}
        for key in ("sent_rate", "received_rate"):
            if other:
                summary[name][f"{key}_ratio"] = _ratio(summary[name]["syncmq"][key],
                                                       summary[name][other][key])
    return raw, summary


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    _raise_nofile()
    wanted = [s.strip() for s in opts.scenarios.split(",") if s.strip()]
    all_sc = scenarios(opts)
    set_name = "full" if opts.full else "quick" if opts.quick else "standard"
    if opts.long_running:
        set_name = "long-running"
        bad = perf_longrun.refused(wanted, all_sc)
        if bad:
            sys.exit(f"--long-running: {', '.join(bad)} need a broker of their own")
    if wanted != list(all_sc):
        set_name += "-" + "-".join(wanted)
    # a long-running syncmq has one configuration: the S6 budget from the start
    sq = Syncmq(extra=all_sc["S6"]["syncmq_args"] if opts.long_running else None)
    rabbit = None
    tools = raw = summary = longrun = None
    try:
        if opts.baseline:
            rabbit = Syncmq(opts.baseline, "baseline",
                            extra=all_sc["S6"]["syncmq_args"] if opts.long_running else None)
        elif not opts.no_rabbitmq and RabbitMQ.available():
            rabbit = RabbitMQ()
        brokers: list[Any] = [b for b in (sq, rabbit) if b is not None]
        info = machine_info(rabbit, sq)
        print(f"# machine: {json.dumps(info)}", file=sys.stderr)
        if opts.long_running:
            longrun = perf_longrun.long_running(
                brokers, wanted, all_sc, run_one, rss_kb, opts.runs, opts.time * 4 + 600,
                opts.settle_max, lambda text: print(text, file=sys.stderr, flush=True))
            md = perf_longrun.table(longrun)
        else:
            raw, summary = run_matrix(brokers, wanted, all_sc, opts,
                                      rabbit.name if rabbit else None)
            md = table(summary, rabbit.name if rabbit is not None else "rabbitmq")
            if isinstance(rabbit, RabbitMQ) and not opts.no_tool_check:
                tools = tool_check(rabbit, opts.runs, opts.time)
    finally:
        sq.stop()
        if rabbit:
            rabbit.stop()
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *(argv or sys.argv[1:])]),
              "set": set_name, "runs": opts.runs, "time_s": opts.time, "backlog": opts.backlog,
              "connections": opts.connections, "machine": info, "summary": summary,
              "long_running": longrun, "tool_check": tools, "raw": raw, "markdown": md}
    out = opts.out or os.path.join(HERE, "results",
                                   f"{datetime.date.today().isoformat()}-{set_name}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(md)
    if tools and "error" not in tools:
        print()
        print("Load tool check (S1 against RabbitMQ, medians): "
              f"syncmq-perf sent {_fmt(tools['syncmq-perf']['sent_rate'])}/s received "
              f"{_fmt(tools['syncmq-perf']['received_rate'])}/s; Go amqp091-go sent "
              f"{_fmt(tools['go']['sent_rate'])}/s received {_fmt(tools['go']['received_rate'])}/s")
    print(f"\n(results: {os.path.relpath(out, ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
