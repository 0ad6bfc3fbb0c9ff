#!/usr/bin/env python3
"""Broker instructions per delivered message (callgrind), this tree against a git ref.

Wall-clock rates are noise on a shared machine; the number of instructions the broker executes
per message is not. Each tree's broker runs under ``valgrind --tool=callgrind`` (threads are
serialized, so the count does not depend on the other processes on the machine), a raw-socket
client drives a fixed workload, and the broker's instruction count for the measured phase is
read with ``callgrind_control -z`` (zero after the warm-up) and ``-d`` (dump after it):

- ``S1``: S1-like, one publisher connection and one autoack consumer connection on one queue,
  16 B transient bodies, pipelined in windows of ``--window`` messages (the next window is
  sent when the consumer has received the previous one).
- ``S8``: S8-like, one message at a time (publish, wait for its delivery, ack it): the
  per-message path that S8's latency measures (manual ack, prefetch 100, 16 B).
- ``S8c``: as S8 with the publisher in confirm mode (waits for the confirm too).
- ``S3``: S3-like, 1 KiB persistent bodies to a durable queue, publisher confirms, manual
  ack (each delivery) with prefetch 100, in windows of ``--window`` messages (the next window
  is sent when every publish of the previous one is confirmed and delivered): the journaled
  confirm path (the journal's fsync per batch is in the count, its wait is not).
- ``S2``: S2-like, 1 KiB transient bodies, manual ack (each delivery) with prefetch 100, in
  windows of ``--window`` messages (the next window is sent when the previous one is
  delivered and acked).
- ``S5``: S5-like, 4 publisher and 4 consumer connections on 4 queues, 16 B transient,
  autoack, each pair pipelined in windows as S1 (the 4 windows are sent together).

Each load runs ``--repeat`` times on the same broker after a warm-up; the figure is the median
of instructions / delivered message. With ``--baseline REF`` the same loads run against a
broker from ``git worktree add --detach`` of REF (under /tmp, removed at exit), started
alongside, runs alternating with this tree's, and the ratio this/baseline is printed. The
client is this tree's code in both cases. Run-to-run spread: ~1% for S1, up to ~3% for S8
(how many frames one read takes depends on timing; timers fire per second, not per message).

    python bench/instr_per_msg.py --baseline 8a4aaec
    python bench/instr_per_msg.py --loads S1 -n 2000 --json out.json
    python bench/instr_per_msg.py --baseline main --loads S3 --broker-args \
        '--journal-segment-bytes 1MiB'   # (S3's messages close segments: compaction counts)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

import amqp_raw as raw  # noqa: E402
from brokerproc import BrokerProcess, cli_args, cli_help  # noqa: E402

from syncmq.wire import _spec  # noqa: E402
from syncmq.wire.frames import encode_content, encode_frame, parse_frames  # noqa: E402

BODY = b"0123456789abcdef"


class Broker:
    """A syncmq from checkout ``root`` under callgrind (instrumentation from the start)."""

    def __init__(self, root: str, allocator: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.root = root
        self.dir = tempfile.mkdtemp(prefix="instr-")
        env = dict(os.environ, PYTHONPATH=root)
        if allocator:  # set for the interpreter valgrind starts: a re-exec would escape it
            env["PYTHONMALLOC"] = allocator
        help_text = cli_help(env, root)
        args = ["valgrind", "--tool=callgrind", "--dump-line=no", "--compress-strings=no",
                f"--callgrind-out-file={self.dir}/cg.%p", f"--log-file={self.dir}/vg.log",
                sys.executable, *cli_args(os.path.join(self.dir, "data"), help_text)]
        if "--allocator" in help_text:  # the interpreter's own: no re-exec
            args += ["--allocator", allocator or ("malloc" if not sys.getallocatedblocks()
                                                  else "pymalloc")]
        args += extra
        self.broker = BrokerProcess(os.path.join(self.dir, "data"), env=env, command=args,
                                    cwd=root)
        try:
            self.broker.start(timeout=600)
        except RuntimeError as e:
            raise RuntimeError(f"syncmq did not start under valgrind; see {self.dir}") from e
        self.proc = self.broker.proc
        self.port = self.broker.port

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.proc.pid)], check=True,
                       capture_output=True, timeout=600)

    def zero(self) -> None:
        self._control("-z")

    def dump(self) -> int:
        """Dump, and return the instructions counted since the last zero or dump."""
        before = set(glob.glob(f"{self.dir}/cg.*"))
        self._control("-d")
        new = sorted(set(glob.glob(f"{self.dir}/cg.*")) - before)
        total = 0
        for path in new:
            with open(path) as f:
                for line in f:
                    m = re.match(r"(?:totals|summary): (\d+)", line)
                    if m:
                        total = max(total, int(m.group(1)))
            os.unlink(path)
        return total

    def stop(self) -> None:
        try:
            self.broker.stop(timeout=120)
        except subprocess.TimeoutExpired:
            pass  # (killed)
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------ the client


def _publish_frames(channel: int, queue: str, frame_max: int, persistent: bool = False,
                    body: bytes = BODY) -> bytes:
    pub = encode_frame(raw.FRAME_METHOD, channel, _spec.Basic.Publish(
        exchange="", routing_key=queue).encode())
    props = b"\x10\x00\x02" if persistent else b"\x00\x00"  # delivery-mode 2, or none
    return pub + b"".join(bytes(x) for x in encode_content(channel, 60, props, body,
                                                           frame_max))


def _read(c: raw.RawClient, deadline: float, done: Callable[[_spec.Method], bool]) -> None:
    """Read ``c``'s methods (content frames skipped), each passed to ``done``, until it
    returns True for one (the rest of that read is still passed on)."""
    finished = False
    while not finished:
        parsed, used = parse_frames(c.buf, 0)
        del c.buf[:used]
        for ftype, _ch, payload in parsed:
            if ftype == raw.FRAME_METHOD and done(_spec.decode_method(bytes(payload))):
                finished = True
        if not finished and not c._fill(deadline):
            raise RuntimeError("timed out")


def _confirmed(c: raw.RawClient, upto: int, deadline: float) -> None:
    """Read ``c``'s basic.acks (confirms, maybe ``multiple``) until ``upto`` is covered."""
    def done(m: _spec.Method) -> bool:
        if not isinstance(m, _spec.Basic.Ack):
            raise RuntimeError(f"unexpected {m}")
        return m.delivery_tag >= upto
    _read(c, deadline, done)


def _take(c: raw.RawClient, want: type, n: int, deadline: float,
          tags: list[int] | None = None) -> int:
    """Read until ``n`` methods of class ``want`` arrived (content frames skipped; confirms
    are let through); their delivery tags go to ``tags``. Returns the count."""
    got = 0

    def done(m: _spec.Method) -> bool:
        nonlocal got
        if isinstance(m, want):
            got += 1
            if tags is not None:
                tags.append(m.delivery_tag)
        elif not isinstance(m, _spec.Basic.Ack):
            raise RuntimeError(f"unexpected {m}")
        return got >= n
    _read(c, deadline, done)
    return got


class Load:
    """One publisher connection and one consumer connection on a fresh queue."""

    def __init__(self, port: int, name: str, confirm: bool, no_ack: bool,
                 persistent: bool = False, body: bytes = BODY) -> None:
        self.pub = raw.connect(port)
        self.con = raw.connect(port)
        self.pub.open_channel()
        self.con.open_channel()
        self.queue = f"instr-{name}-{os.getpid()}"
        self.pub.send_method(1, _spec.Queue.Declare(queue=self.queue, auto_delete=False,
                                                    durable=persistent))
        self.pub.expect_method(1, _spec.Queue.DeclareOk)
        self.confirm = confirm
        self.seq = 0  # the publisher's last publish (confirm mode)
        if confirm:
            self.pub.send_method(1, _spec.Confirm.Select())
            self.pub.expect_method(1, _spec.Confirm.SelectOk)
        self.no_ack = no_ack
        if not no_ack:
            self.con.send_method(1, _spec.Basic.Qos(prefetch_count=100))
            self.con.expect_method(1, _spec.Basic.QosOk)
        self.con.send_method(1, _spec.Basic.Consume(queue=self.queue, consumer_tag="c",
                                                    no_ack=no_ack))
        self.con.expect_method(1, _spec.Basic.ConsumeOk)
        self.one = _publish_frames(1, self.queue, self.pub.frame_max, persistent, body)

    def windows(self, n: int, window: int) -> int:
        """S1-like: pipelined windows, autoack."""
        done = 0
        deadline = time.monotonic() + 3600
        while done < n:
            k = min(window, n - done)
            self.pub.send(self.one * k)
            done += _take(self.con, _spec.Basic.Deliver, k, deadline)
        return done

    def one_by_one(self, n: int) -> int:
        """S8-like: publish, wait for the delivery (and the confirm), ack."""
        deadline = time.monotonic() + 3600
        tags: list[int] = []
        for _ in range(n):
            self.pub.send(self.one)
            if self.confirm:
                _take(self.pub, _spec.Basic.Ack, 1, deadline)
            _take(self.con, _spec.Basic.Deliver, 1, deadline, tags)
            self.con.send_method(1, _spec.Basic.Ack(delivery_tag=tags.pop()))
        return n

    def confirmed_windows(self, n: int, window: int) -> int:
        """S3-like: a window of persistent publishes, its confirms and deliveries (each
        acked) before the next (S2: no confirms)."""
        done = 0
        deadline = time.monotonic() + 3600
        tags: list[int] = []
        while done < n:
            k = min(window, n - done)
            self.pub.send(self.one * k)
            self.seq += k
            _take(self.con, _spec.Basic.Deliver, k, deadline, tags)
            self.con.send(b"".join(encode_frame(raw.FRAME_METHOD, 1, _spec.Basic.Ack(
                delivery_tag=t).encode()) for t in tags))
            tags.clear()
            if self.confirm:
                _confirmed(self.pub, self.seq, deadline)
            done += k
        return done

    def run(self, kind: str, n: int, window: int) -> int:
        if kind == "S1":
            return self.windows(n, window)
        if kind in ("S2", "S3"):
            return self.confirmed_windows(n, window)
        return self.one_by_one(n)

    def close(self) -> None:
        self.pub.close()
        self.con.close()


class Flood:
    """S5-like: ``pairs`` Loads (publisher, consumer, queue) pipelined side by side."""

    def __init__(self, port: int, name: str, pairs: int = 4) -> None:
        self.loads = [Load(port, f"{name}-{i}", False, True) for i in range(pairs)]
        self.pub = self.loads[0].pub  # (measure's sync round trip)
        self.con = self.loads[0].con
        self.queue = self.loads[0].queue

    def run(self, kind: str, n: int, window: int) -> int:
        """``n`` messages per pair; returns the total delivered."""
        deadline = time.monotonic() + 3600
        done = 0
        while done < n:
            k = min(window, n - done)
            for load in self.loads:
                load.pub.send(load.one * k)
            for load in self.loads:
                _take(load.con, _spec.Basic.Deliver, k, deadline)
            done += k
        return n * len(self.loads)

    def close(self) -> None:
        for load in self.loads:
            load.close()


# name -> (confirm, no_ack, persistent, body size); S5 is a Flood of four S1 pairs
LOADS = {"S1": (False, True, False, 16), "S8": (False, False, False, 16),
         "S8c": (True, False, False, 16), "S2": (False, False, False, 1024),
         "S3": (True, False, True, 1024), "S5": (False, True, False, 16)}


def _load(port: int, name: str) -> Load | Flood:
    if name == "S5":
        return Flood(port, name)
    confirm, no_ack, persistent, size = LOADS[name]
    return Load(port, name, confirm, no_ack, persistent, BODY if size == 16 else b"x" * size)


def measure(roots: dict[str, tuple[str, str | None]], loads: list[str], n: int, warmup: int, repeat: int,
            window: int, extra: tuple[str, ...] = ()) -> dict[str, dict[str, list[float]]]:
    """Every tree's broker runs at once; each load's runs alternate between them (this,
    baseline, this, ...), so that both see the same machine: what the broker does per message
    depends a little on timing (how many frames one read takes, timers that fire per second
    rather than per message)."""
    brokers: dict[str, Broker] = {}
    out: dict[str, dict[str, list[float]]] = {label: {} for label in roots}
    try:
        for label, tree in roots.items():  # (one that fails to start stops those started)
            brokers[label] = Broker(*tree, extra)
        for name in loads:
            no_ack = LOADS[name][1]
            runs = {label: _load(b.port, name) for label, b in brokers.items()}
            for load in runs.values():
                load.run(name, warmup, window)
            for _ in range(repeat):
                for label, broker in brokers.items():
                    load = runs[label]
                    broker.zero()
                    delivered = load.run(name, n, window)
                    # the last acks reach the broker before the dump
                    load.pub.send_method(1, _spec.Queue.Declare(queue=load.queue,
                                                                passive=True))
                    load.pub.expect_method(1, _spec.Queue.DeclareOk, timeout=600)
                    if not no_ack:
                        load.con.send_method(1, _spec.Basic.Qos(prefetch_count=100))
                        load.con.expect_method(1, _spec.Basic.QosOk, timeout=600)
                    per = broker.dump() / delivered
                    out[label].setdefault(name, []).append(per)
                    print(f"  {label} {name}: {per:,.0f} instr/msg", flush=True)
            for load in runs.values():
                load.close()
    finally:
        for b in brokers.values():
            b.stop()
    return out


def baseline_tree(ref: str) -> str:
    """A new detached worktree of ``ref`` under /tmp (its own directory: a concurrent run's
    is never reused nor removed); :func:`remove_tree` removes it."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    path = tempfile.mkdtemp(prefix=f"syncmq-baseline-{sha}-")
    try:
        subprocess.run(["git", "worktree", "add", "--detach", path, sha], cwd=ROOT,
                       check=True, capture_output=True)
    except BaseException:
        remove_tree(path)
        raise
    return path


def remove_tree(path: str) -> None:
    """Remove the worktree :func:`baseline_tree` made (and git's record of it)."""
    subprocess.run(["git", "worktree", "remove", "--force", path], cwd=ROOT,
                   capture_output=True)
    shutil.rmtree(path, ignore_errors=True)  # (when the add failed half-way)
    subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="git ref to compare against (e.g. 8a4aaec)")
    ap.add_argument("--loads", default="S1,S2,S8,S8c,S3,S5", help="of S1,S2,S3,S5,S8,S8c")
    ap.add_argument("-n", type=int, default=3000, help="messages per measured run")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--window", type=int, default=100, help="S1's pipelined window")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--allocator", choices=("malloc", "pymalloc"),
                    help="this tree's broker runs with PYTHONMALLOC=this (default: as the "
                         "environment says)")
    ap.add_argument("--baseline-allocator", choices=("malloc", "pymalloc"),
                    help="the baseline's allocator; without --baseline the baseline is this "
                         "tree with this allocator (e.g. --allocator malloc "
                         "--baseline-allocator pymalloc)")
    ap.add_argument("--broker-args", default="",
                    help="more arguments for BOTH brokers, one string (e.g. "
                         "'--journal-segment-bytes 1MiB', so that S3's few thousand "
                         "messages close segments and compaction runs)")
    opts = ap.parse_args(argv)
    loads = opts.loads.split(",")
    trees = {"this": (ROOT, opts.allocator)}
    if opts.baseline:
        trees["baseline"] = (baseline_tree(opts.baseline), opts.baseline_allocator)
    elif opts.baseline_allocator:
        trees["baseline"] = (ROOT, opts.baseline_allocator)
        opts.baseline = opts.baseline_allocator
    try:
        results = measure(trees, loads, opts.n, opts.warmup, opts.repeat, opts.window,
                          tuple(opts.broker_args.split()))
    finally:
        if trees.get("baseline", (ROOT,))[0] != ROOT:
            remove_tree(trees["baseline"][0])
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=ROOT).stdout.strip()
    print(f"\ninstructions per delivered message (median of {opts.repeat} x {opts.n})")
    print(f"{'load':6} {'this ' + rev:>16}" + (f" {opts.baseline:>16} {'ratio':>7}"
                                               if opts.baseline else ""))
    summary = {}
    for name in loads:
        this = statistics.median(results["this"][name])
        row = f"{name:6} {this:16,.0f}"
        summary[name] = {"this": this, "runs": results["this"][name]}
        if opts.baseline:
            base = statistics.median(results["baseline"][name])
            row += f" {base:16,.0f} {this / base:7.3f}"
            summary[name].update(baseline=base, baseline_runs=results["baseline"][name],
                                 ratio=this / base)
        print(row)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"head": rev, "baseline": opts.baseline, "n": opts.n,
                       "allocator": opts.allocator,
                       "baseline_allocator": opts.baseline_allocator,
                       "repeat": opts.repeat, "window": opts.window, "python": sys.version,
                       "loads": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
