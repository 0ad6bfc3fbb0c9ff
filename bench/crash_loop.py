#!/usr/bin/env python3
"""Crash loop: SIGKILL syncmq again and again under load; no confirmed message may be lost.

Each cycle starts syncmq on the same data directory, runs a publisher process (pika, publisher
confirms, persistent messages to the durable queue ``crash``; it prints every confirmed id) and
a consumer (manual acks: most messages acked, some rejected with requeue), and SIGKILLs the
broker at a random moment (after a random number of confirms of that cycle). After the last
cycle the broker is started once more, the queue is drained (acking everything), the broker is
stopped with SIGTERM and started again to check that the queue stays empty.

What counts (RabbitMQ's semantics):

* lost: a confirmed id never delivered. Must be 0.
* duplicate: a delivery of an id after one of its deliveries was acked. An ack is *fenced*
  once a confirmed publish on the consumer's connection followed it (the broker journals the
  ack before that publish, and confirms the publish only once both are on disk); a duplicate
  of a fenced ack is a bug. An unfenced ack may have been lost with the kill: its duplicate is
  allowed if it is flagged ``redelivered``, a bug otherwise.
* phantom: an id that was never published. Must be 0.
* unflagged redelivery: a message delivered before a restart coming back with
  ``redelivered=False``. Must be 0.

The last line printed is a JSON summary; the exit status is 0 when every check passed.

    python bench/crash_loop.py --cycles 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUEUE = "crash"
FENCE_QUEUE = "crash-fence"
ID_STRIDE = 10_000_000  # ids of cycle c are c * ID_STRIDE + 0, 1, 2, ...
TIMEOUT = 120.0  # generous: a loaded 2-core CI box


def _pika():
    import pika  # only the load generators need it

    return pika


def _params(port: int):
    pika = _pika()
    return pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=0,
                                     socket_timeout=TIMEOUT, stack_timeout=TIMEOUT,
                                     blocked_connection_timeout=TIMEOUT)


# ---- the publisher (a child process) -----------------------------------------------------------


def run_publisher(port: int, first: int, count: int) -> int:
    """Publish ids first.. with confirms; print 'C <id>' for each confirm. Ends on error."""
    pika = _pika()
    out = sys.stdout
    try:
        conn = pika.BlockingConnection(_params(port))
        ch = conn.channel()
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2, message_id="x")
        out.write("READY\n")
        out.flush()
        for mid in range(first, first + count):
            body = b"%d|" % mid + b"p" * (mid % 300)
            ch.basic_publish("", QUEUE, body, props)
            out.write(f"C {mid}\n")
            out.flush()
    except Exception as e:  # the broker was killed: the normal way out
        out.write(f"END {type(e).__name__}\n")
        out.flush()
    return 0


# ---- the broker --------------------------------------------------------------------------------


class Broker:
    def __init__(self, data_dir: str, log, extra: list[str]) -> None:
        self.lines: list[str] = []
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir", data_dir,
             "--log-format", "json", "--no-management", *extra],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.port: int | None = None
        self._started = threading.Event()
        threading.Thread(target=self._reader, daemon=True).start()
        if not self._started.wait(TIMEOUT) or self.port is None:
            self.proc.kill()
            raise RuntimeError("syncmq did not start:\n" + "\n".join(self.lines[-30:]))

    def _reader(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            self.log.write(line)
            if self.port is None and '"port"' in line:
                try:
                    self.port = int(json.loads(line)["port"])
                except (ValueError, KeyError):
                    continue
                self._started.set()
        self._started.set()

    def tracebacks(self) -> list[str]:
        return [x for x in self.lines if "Traceback" in x]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(TIMEOUT)


# ---- the consumer (a thread of this process) ---------------------------------------------------


class Consumer(threading.Thread):
    """Consumes ``crash`` with manual acks until its connection dies or ``stop`` is set.

    Acks ~80% of deliveries and rejects the rest with requeue. Every so often it publishes a
    confirmed message on the same connection: the acks before it are then fenced (durable).
    """

    def __init__(self, port: int, cycle: int, rnd: random.Random, log: list) -> None:
        super().__init__(daemon=True)
        self.port, self.cycle, self.rnd, self.log = port, cycle, rnd, log
        self.unfenced: list[int] = []  # acked, not yet known durable
        self.fenced: list[int] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        pika = _pika()
        try:
            conn = pika.BlockingConnection(_params(self.port))
            ch = conn.channel()
            ch.queue_declare(FENCE_QUEUE, durable=True)
            ch.confirm_delivery()
            ch.basic_qos(prefetch_count=50)
            inbox: list = []
            ch.basic_consume(QUEUE, lambda _c, m, _p, body: inbox.append((m, body)))
            self.ready.set()
            last_fence = time.monotonic()
            while not self.stop.is_set():
                conn.process_data_events(time_limit=0.02)
                batch, inbox[:] = list(inbox), []
                for m, body in batch:
                    mid = int(body[:body.index(b"|")])
                    entry = [mid, m.redelivered, self.cycle, "unacked"]
                    self.log.append(entry)
                    if self.rnd.random() < 0.8:
                        ch.basic_ack(m.delivery_tag)
                        entry[3] = "acked"
                        self.unfenced.append(mid)
                    else:
                        ch.basic_reject(m.delivery_tag, requeue=True)
                        entry[3] = "rejected"
                if self.unfenced and (len(self.unfenced) >= 40
                                      or time.monotonic() - last_fence > 0.3):
                    acks = list(self.unfenced)
                    ch.basic_publish("", FENCE_QUEUE, b"f", pika.BasicProperties(delivery_mode=2))
                    # confirmed: every ack sent before the fence is on disk
                    self.fenced.extend(acks)
                    del self.unfenced[:len(acks)]
                    last_fence = time.monotonic()
            ch.queue_purge(FENCE_QUEUE)
            conn.close()
        except Exception as e:  # the broker was killed
            self.error = e
        finally:
            self.ready.set()


def drain(port: int, cycle: int, log: list) -> list[int]:
    """Final phase: basic.get everything, ack it all, fence it; returns the ids acked."""
    pika = _pika()
    conn = pika.BlockingConnection(_params(port))
    ch = conn.channel()
    ch.confirm_delivery()
    acked = []
    while True:
        m, _p, body = ch.basic_get(QUEUE)
        if m is None:
            break
        mid = int(body[:body.index(b"|")])
        log.append([mid, m.redelivered, cycle, "acked"])
        ch.basic_ack(m.delivery_tag)
        acked.append(mid)
    ch.queue_purge(FENCE_QUEUE)
    ch.basic_publish("", FENCE_QUEUE, b"f", pika.BasicProperties(delivery_mode=2))
    conn.close()
    return acked


def queue_depth(port: int) -> int:
    pika = _pika()
    conn = pika.BlockingConnection(_params(port))
    n = conn.channel().queue_declare(QUEUE, durable=True, passive=True).method.message_count
    conn.close()
    return n


# ---- the loop ----------------------------------------------------------------------------------


def crash_loop(cycles: int, seed: int, data_dir: str, log_path: str, extra: list[str],
               min_confirms: int, max_confirms: int) -> dict:
    rnd = random.Random(seed)
    t0 = time.monotonic()
    confirmed: set[int] = set()
    max_attempted: dict[int, int] = {}  # cycle -> highest id that may have been published
    # [id, redelivered, cycle, outcome] in delivery order; outcome: "unacked", "rejected",
    # "fenced" (acked, known durable) or "inflight" (acked, may have died with the kill)
    deliveries: list = []
    n_fenced = n_inflight = 0
    kills_during_publish = 0
    tracebacks: list[str] = []
    with open(log_path, "a") as log:
        # declare the queue once
        b = Broker(data_dir, log, extra)
        pika = _pika()
        c = pika.BlockingConnection(_params(b.port))
        c.channel().queue_declare(QUEUE, durable=True)
        c.close()
        b.stop()
        for cycle in range(1, cycles + 1):
            b = Broker(data_dir, log, extra)
            cons = Consumer(b.port, cycle, random.Random(rnd.random()), deliveries)
            cons.start()
            cons.ready.wait(TIMEOUT)
            first = cycle * ID_STRIDE
            pub = subprocess.Popen(
                [sys.executable, __file__, "--publisher", "--port", str(b.port),
                 "--first", str(first), "--count", str(ID_STRIDE - 1)],
                cwd=REPO, stdout=subprocess.PIPE, text=True, bufsize=1)
            target = rnd.randrange(min_confirms, max_confirms + 1)
            n = 0
            deadline = time.monotonic() + TIMEOUT
            for line in pub.stdout:
                if line.startswith("C "):
                    confirmed.add(int(line[2:]))
                    n += 1
                    if n >= target:
                        break
                if time.monotonic() > deadline:
                    break
            # a random moment: now, or a little later (with more confirms in flight)
            if rnd.random() < 0.5:
                time.sleep(rnd.random() * 0.05)
            b.kill()
            kills_during_publish += pub.poll() is None
            for line in pub.stdout:  # confirms that arrived before the kill
                if line.startswith("C "):
                    confirmed.add(int(line[2:]))
            pub.wait(TIMEOUT)
            cons.stop.set()
            cons.join(TIMEOUT)
            top = max((i for i in confirmed if i // ID_STRIDE == cycle), default=first - 1)
            max_attempted[cycle] = top + 1  # the blocking publisher has one publish in flight
            fenced = set(cons.fenced)
            for entry in deliveries:
                if entry[2] == cycle and entry[3] == "acked":
                    entry[3] = "fenced" if entry[0] in fenced else "inflight"
            n_fenced += len(cons.fenced)
            n_inflight += len(cons.unfenced)
            tracebacks += b.tracebacks()
        # final: drain, stop cleanly, check it stays empty
        b = Broker(data_dir, log, extra)
        final_cycle = cycles + 1
        n_fenced += len(drain(b.port, final_cycle, deliveries))
        for entry in deliveries:
            if entry[2] == final_cycle:
                entry[3] = "fenced"
        rc = b.stop()
        tracebacks += b.tracebacks()
        b = Broker(data_dir, log, extra)
        left = queue_depth(b.port)
        rc2 = b.stop()
        tracebacks += b.tracebacks()

    # ---- analysis ----
    last_ack: dict[int, str] = {}  # id -> "fenced"/"inflight" once a delivery of it was acked
    last_cycle: dict[int, int] = {}  # id -> cycle of its last delivery
    dup_allowed = dup_bad = unflagged = phantom = 0
    problems: list[str] = []
    delivered_ids: set[int] = set()
    for mid, red, cyc, outcome in deliveries:
        c = mid // ID_STRIDE
        if c < 1 or mid > max_attempted.get(c, -1):
            phantom += 1
            problems.append(f"phantom id {mid}")
            continue
        if mid in last_ack:
            if last_ack[mid] == "inflight" and red:
                dup_allowed += 1
            else:
                dup_bad += 1
                problems.append(f"id {mid} delivered again in cycle {cyc} after a "
                                f"{last_ack[mid]} ack (redelivered={red})")
        elif mid in last_cycle and last_cycle[mid] < cyc and not red:
            unflagged += 1
            problems.append(f"id {mid} redelivered in cycle {cyc} without the flag")
        delivered_ids.add(mid)
        last_cycle[mid] = cyc
        if outcome in ("fenced", "inflight"):
            last_ack[mid] = outcome
    lost = sorted(confirmed - delivered_ids)
    if lost:
        problems.append(f"{len(lost)} confirmed ids never delivered, e.g. {lost[:10]}")
    if left:
        problems.append(f"{left} messages left after the final drain and a clean restart")
    if rc or rc2:
        problems.append(f"clean stop exit status {rc}, {rc2}")
    if tracebacks:
        problems.append(f"{len(tracebacks)} tracebacks in the broker log")
    unconfirmed_delivered = len(delivered_ids - confirmed)
    return {
        "cycles": cycles,
        "seed": seed,
        "confirmed": len(confirmed),
        "deliveries": len(deliveries),
        "unconfirmed_delivered": unconfirmed_delivered,
        "lost": len(lost),
        "duplicates_allowed": dup_allowed,
        "duplicates_bad": dup_bad,
        "unflagged_redeliveries": unflagged,
        "phantom": phantom,
        "acks_fenced": n_fenced,
        "acks_inflight_at_kill": n_inflight,
        "kills_during_publish": kills_during_publish,
        "tracebacks": len(tracebacks),
        "seconds": round(time.monotonic() - t0, 1),
        "ok": not problems,
        "problems": problems[:20],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data-dir", default=None, help="default: a temporary directory")
    p.add_argument("--keep", action="store_true", help="keep the data dir and broker log")
    p.add_argument("--segment-bytes", default="256KiB",
                   help="journal segment size (small: compaction runs during the loop)")
    p.add_argument("--min-confirms", type=int, default=20)
    p.add_argument("--max-confirms", type=int, default=400)
    p.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.publisher:
        return run_publisher(a.port, a.first, a.count)
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    tmp = tempfile.mkdtemp(prefix="syncmq-crash-")
    data_dir = a.data_dir or os.path.join(tmp, "data")
    log_path = os.path.join(tmp, "broker.log")
    try:
        summary = crash_loop(a.cycles, seed, data_dir, log_path,
                             ["--journal-segment-bytes", a.segment_bytes],
                             a.min_confirms, a.max_confirms)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if a.keep:
        summary["log"] = log_path
        summary["data_dir"] = data_dir
    print(json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
