"""Shovel throughput syncmq -> RabbitMQ: syncmq's own shovel (run by the broker, the source
``amqp://``) against RabbitMQ's shovel plugin pulling the same messages from the same syncmq
queue, for ``on-confirm`` and ``on-publish``.

    python bench/shovel_rate.py [--messages 20000] [--size 100] [--prefetch 1000]

Each run: N persistent messages published (with confirms) into a durable syncmq queue, then
one shovel moves them to a durable RabbitMQ queue; the time is from setting the shovel to
the last message at RabbitMQ, with the CPU seconds each broker process used meanwhile (the
machine is shared: compare CPU seconds and ratios, not wall clock alone). syncmq runs in this
process (``syncmq.Server``) so its CPU is this process's (the bench's own polling included:
one passive declare every 0.2 s). Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "interop"))
sys.path.insert(0, str(REPO))

import pika  # noqa: E402
from interop_helpers import RabbitNode  # noqa: E402

import syncmq  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants (/proc)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(parts[1]), []).append(int(d))
        stats[int(d)] = (int(parts[11]) + int(parts[12])) / TICK
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def depth(port: int, queue: str) -> int:
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        return c.channel().queue_declare(queue, durable=True).method.message_count
    finally:
        c.close()


def fill(port: int, queue: str, n: int, size: int) -> None:
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = c.channel()
    ch.queue_delete(queue)
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    body = b"x" * size
    props = pika.BasicProperties(delivery_mode=2)
    for _ in range(n):
        ch.basic_publish("", queue, body, props)
    c.close()


def rabbit_api(rabbit: RabbitNode, method: str, path: str, body=None) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{rabbit.management_port}/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                 "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def wait_moved(rabbit: RabbitNode, queue: str, n: int) -> None:
    deadline = time.monotonic() + 1800
    while depth(rabbit.port, queue) < n:
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.2)


def run(srv, rabbit, who: str, mode: str, n: int, size: int, prefetch: int) -> dict:
    src, dst = f"src-{who}-{mode}", f"dst-{who}-{mode}"
    fill(srv.port, src, n, size)
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", rabbit.port))
    c.channel().queue_delete(dst)
    c.channel().queue_declare(dst, durable=True)
    c.close()
    value = {"src-queue": src, "dest-queue": dst, "ack-mode": mode,
             "src-prefetch-count": prefetch}
    r0, s0, t0 = tree_cpu(rabbit.proc.pid), self_cpu(), time.monotonic()
    if who == "syncmq":
        value.update({"src-uri": "amqp://",
                      "dest-uri": f"amqp://guest:guest@127.0.0.1:{rabbit.port}"})
        srv.node.shovels.validate("/", src, value)
        srv.node.shovels.apply("/", src, value)
    else:
        value.update({"src-uri": f"amqp://guest:guest@127.0.0.1:{srv.port}",
                      "dest-uri": "amqp://"})
        rabbit_api(rabbit, "PUT", f"parameters/shovel/%2F/{src}", {"value": value})
    wait_moved(rabbit, dst, n)
    secs = time.monotonic() - t0
    out = {"shovel": who, "ack_mode": mode, "messages": n, "size": size,
           "prefetch": prefetch, "seconds": round(secs, 2), "msg_per_s": round(n / secs),
           "syncmq_cpu_s": round(self_cpu() - s0, 2),
           "rabbitmq_cpu_s": round(tree_cpu(rabbit.proc.pid) - r0, 2),
           "load_avg": os.getloadavg()[0]}
    if who == "syncmq":
        srv.node.shovels.apply("/", src, None)
    else:
        rabbit_api(rabbit, "DELETE", f"parameters/shovel/%2F/{src}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--prefetch", type=int, default=1000)
    p.add_argument("--modes", default="on-confirm,on-publish")
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="shovel-rate-")
    os.mkdir(os.path.join(base, "rabbit"))
    rabbit = RabbitNode(os.path.join(base, "rabbit"), management=True,
                        plugins=("rabbitmq_shovel", "rabbitmq_shovel_management")).start()
    srv = syncmq.Server(data_dir=os.path.join(base, "syncmq")).start()
    try:
        for mode in args.modes.split(","):
            for who in ("syncmq", "rabbitmq"):
                print(json.dumps(run(srv, rabbit, who, mode, args.messages, args.size,
                                     args.prefetch)), flush=True)
    finally:
        srv.stop()
        rabbit.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
