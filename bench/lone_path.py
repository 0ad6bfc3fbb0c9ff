#!/usr/bin/env python3
"""Where a lone message's time goes in the broker (S8's path), two ways.

``--mode stamps`` (wall time): an embedded broker whose reactor poll, a few functions on the
path and the delivery's ``sendmsg`` are wrapped to take ``perf_counter_ns`` stamps; syncmq-perf
publishes one 16 B message every 1/``--rate`` s to one manual-ack consumer (prefetch 100) for
``--seconds``. Prints the client's latency percentiles, then the p50 of each step between
stamps for the reads that delivered a message (the first second left out), and the p50 from the
reactor's wake-up to the delivery's ``sendmsg``. The wrappers add ~0.5-1 us a stamp.

``--mode trace`` (bytecodes, deterministic): the same load at a low rate with
``sys.settrace`` and ``f_trace_opcodes`` on the reactor thread for half a second; prints the
ordered calls of the traced reads with the cumulative bytecode count at each call. Read the
publish's read (``_read`` ... ``_send_chunks``) and the ack's read that follows it.

    python bench/lone_path.py --mode stamps
    python bench/lone_path.py --mode trace | less

Figures from it are in docs/architecture.md ("A lone message").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

# the path's steps, in order: (class's module, class, method, label)
STEPS = (
    ("syncmq.reactor.reading", "Reader", "_read", "_read"),
    ("syncmq.workers", "Worker", "stand_in", "stand_in"),
    ("syncmq.methods.session", "Session", "frames_received", "frames_received"),
    ("syncmq.protocol.connection", "ConnectionProtocol", "receive", "receive"),
    ("syncmq.methods.session", "Session", "_handle", "_handle"),
    ("syncmq.methods.session", "Session", "flush_runs", "flush_runs"),
    ("syncmq.broker.queue", "Queue", "publish_many", "publish_many"),
    ("syncmq.methods.channel_state", "Channel", "deliver_many", "deliver_many"),
    ("syncmq.reactor.outbuf", "OutBuffer", "write", "write"),
)


def _load(port: int, rate: int, seconds: float) -> dict:
    out = subprocess.run(
        ["syncmq-perf", "--uri", f"amqp://guest:guest@127.0.0.1:{port}/%2f", "-x", "1", "-y",
         "1", "-r", str(rate), "-s", "16", "--latency", "-q", "100", "-z", str(seconds)],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def stamps(rate: int, seconds: float) -> None:
    import importlib

    import syncmq
    from syncmq.reactor import outbuf, poller

    ns = time.perf_counter_ns
    cur: list = []
    reads: list = []
    poller_init = poller.Poller.__init__

    def init(self):
        poller_init(self)
        inner = self.poll

        def poll(timeout):
            r = inner(timeout)
            if len(cur) > 3:
                reads.append(list(cur))
            cur.clear()
            cur.append(("wake", ns()))
            return r
        self.poll = poll
    poller.Poller.__init__ = init

    def wrap(cls, name, label):
        f = getattr(cls, name)

        def w(*a, **k):
            cur.append((label, ns()))
            return f(*a, **k)
        setattr(cls, name, w)
    for mod, cls, name, label in STEPS:
        wrap(getattr(importlib.import_module(mod), cls), name, label)
    send_chunks = outbuf.OutBuffer._send_chunks

    def timed_send_chunks(self, send, whole=-1):
        def timed(batch):
            cur.append(("sendmsg", ns()))
            n = send(batch)
            cur.append(("sent", ns()))
            return n
        return send_chunks(self, timed, whole)
    outbuf.OutBuffer._send_chunks = timed_send_chunks

    srv = syncmq.Server().start()
    try:
        print("client latency (us):", _load(srv.port, rate, seconds)["latency_us"])
    finally:
        srv.stop()
    pubs = [r for r in reads if any(label == "publish_many" for label, _ in r)
            and any(label == "sendmsg" for label, _ in r)][rate:]
    if not pubs:
        sys.exit("no delivering read was seen")
    labels = [label for label, _ in pubs[0]]
    same = [r for r in pubs if [label for label, _ in r] == labels]
    print(f"{len(same)} reads with the steps {labels}")
    for i in range(1, len(labels)):
        d = statistics.median((r[i][1] - r[i - 1][1]) / 1000 for r in same)
        print(f"{labels[i - 1]:>16} -> {labels[i]:<16} p50 {d:6.1f} us")
    wake_send = statistics.median((r[labels.index("sendmsg")][1] - r[0][1]) / 1000
                                  for r in same)
    print(f"wake -> sendmsg p50 {wake_send:.1f} us")


def trace(rate: int) -> None:
    import syncmq

    on = [False]
    log: list = []
    depth = [0]
    count = [0]

    def local(frame, event, arg):
        if event == "opcode":
            count[0] += 1
        elif event == "return":
            depth[0] -= 1
        return local

    def glob(frame, event, arg):
        if not on[0] or threading.current_thread().name != "syncmq-reactor":
            return None
        code = frame.f_code
        where = code.co_filename.split("syncmq/")[-1]
        log.append((count[0], depth[0], code.co_name, f"{where}:{code.co_firstlineno}"))
        depth[0] += 1
        frame.f_trace_opcodes = True
        return local

    threading.settrace(glob)
    srv = syncmq.Server().start()
    try:
        load = threading.Thread(target=_load, args=(srv.port, rate, 4.0))
        load.start()
        time.sleep(2.0)
        on[0] = True
        time.sleep(0.5)
        on[0] = False
        load.join()
    finally:
        threading.settrace(None)
        srv.stop()
    for c, d, name, where in log:
        print(f"{c:7d} {'  ' * max(d, 0)}{name} {where}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("stamps", "trace"), default="stamps")
    ap.add_argument("--rate", type=int, default=0,
                    help="messages a second (default 1,000 for stamps, 20 for trace)")
    ap.add_argument("--seconds", type=float, default=8.0, help="the stamps load's length")
    opts = ap.parse_args()
    if opts.mode == "stamps":
        stamps(opts.rate or 1000, opts.seconds)
    else:
        trace(opts.rate or 20)


if __name__ == "__main__":
    main()
