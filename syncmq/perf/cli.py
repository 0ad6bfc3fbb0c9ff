"""syncmq-perf: a PerfTest-class load generator for any AMQP 0-9-1 broker.

Producers and consumers run in separate processes (several connections per process when there
are more of them than ``--procs``), each over its own connection, with the minimal client of
:mod:`syncmq.perf.client`. The parent declares the topology, opens ``--idle-connections``,
starts everyone at one instant and prints ONE JSON line of results on stdout::

    {"tool": "syncmq-perf", "sent": .., "sent_rate": .., "received": .., "received_rate": ..,
     "confirmed": .., "nacked": .., "returned": .., "latency_us": {"p50": .., "p95": ..,
     "p99": .., "max": .., "samples": ..} | null, "duration_s": .., "errors": [..], ...}

``sent_rate`` is messages sent / (last publish - start) (for a count-bounded run with confirms:
until the last confirm); ``received_rate`` is messages received / (last delivery - start).

Topology (unless ``--predeclared``): queues ``perf-q-1`` .. ``perf-q-N`` are deleted and
re-declared (so no leftover backlog skews a run) and deleted again at the end (unless
``--keep-queues``). Producer ``i`` publishes to queue ``i mod N`` (through the default exchange,
or ``perf-direct``/``perf-topic`` with the queue name as routing key) or, with ``fanout``, to
``perf-fanout``, which every queue is bound to. Consumer ``j`` consumes from queue ``j mod N``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from typing import Any

from .client import Client, ClientError

QUEUE_PATTERN = "perf-q-%d"


def _rate(text: str) -> float:
    v = float(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncmq-perf",
        description="PerfTest-class load generator for AMQP 0-9-1 brokers (prints one JSON line)",
    )
    a = p.add_argument
    a("--uri", default="amqp://guest:guest@localhost:5672/%2f",
      help="amqp://user:pass@host:port/vhost (default %(default)s)")
    a("-x", "--producers", type=int, default=1, help="producer connections (default 1)")
    a("-y", "--consumers", type=int, default=1, help="consumer connections (default 1)")
    a("--queues", type=int, default=1, help="number of queues, named perf-q-1..N (default 1)")
    a("-s", "--size", type=int, default=16, help="message body size in octets (default 16)")
    a("-r", "--rate", type=_rate, default=0.0,
      help="publish rate per producer, msg/s (0 = unlimited, the default)")
    a("-z", "--time", type=float, default=None,
      help="run for this many seconds (default 10 unless -C/-D are given)")
    a("-C", "--pmessages", type=int, default=0, help="messages per producer (0 = unbounded)")
    a("-D", "--cmessages", type=int, default=0, help="messages per consumer (0 = unbounded)")
    a("--persistent", action="store_true", help="publish with delivery_mode 2")
    a("-c", "--confirm", type=int, default=0, metavar="N",
      help="publisher confirms with at most N outstanding per producer (0 = off)")
    a("-a", "--autoack", action="store_true", help="consume with no_ack")
    a("-q", "--qos", type=int, default=0, help="prefetch count per consumer (0 = unlimited)")
    a("-A", "--multi-ack-every", type=int, default=0, metavar="N",
      help="ack with multiple=True every N messages (0/1 = ack each message)")
    a("--exchange-type", choices=("default", "direct", "fanout", "topic"), default="default")
    a("--fanout", type=int, default=0, metavar="N",
      help="N queues bound to one fanout exchange (implies --exchange-type fanout --queues N)")
    a("--idle-connections", type=int, default=0, metavar="N",
      help="open N extra connections and keep them open (idle) during the run")
    a("--durable", action="store_true", help="declare durable queues and exchange")
    a("--predeclared", action="store_true",
      help="use existing queues/exchange: declare, purge and delete nothing")
    a("--keep-queues", action="store_true", help="do not delete the queues at the end")
    a("--latency", action="store_true",
      help="stamp bodies with time.time_ns() and report end-to-end latency percentiles (us)")
    a("--batch", type=int, default=0,
      help="publishes per sendall (default: as many as fit 64 KiB, at most 256)")
    a("--procs", type=int, default=0,
      help="at most this many processes per role (default 8); connections are spread over them")
    a("--frame-max", type=int, default=131072)
    a("--drain-timeout", type=float, default=30.0,
      help="after producers finish, how long consumers may take to reach -D (default 30 s)")
    a("--progress", action="store_true", help="print progress to stderr every second")
    return p


def _topology(opts: argparse.Namespace) -> tuple[str, str, list[str]]:
    """(exchange name, exchange type, queue names)."""
    if opts.fanout:
        opts.exchange_type = "fanout"
        opts.queues = opts.fanout
    queues = [QUEUE_PATTERN % (i + 1) for i in range(max(1, opts.queues))]
    etype = opts.exchange_type
    exchange = "" if etype == "default" else f"perf-{etype}"
    return exchange, etype, queues


def _declare(opts: argparse.Namespace, exchange: str, etype: str, queues: list[str]) -> None:
    c = Client(opts.uri, frame_max=opts.frame_max, name="perf-setup")
    try:
        if exchange:
            c.exchange_declare(exchange, etype, durable=opts.durable)
        for q in queues:
            c.queue_delete(q)
            c.queue_declare(q, durable=opts.durable)
            if exchange:
                c.queue_bind(q, exchange, "" if etype == "fanout" else q)
    finally:
        c.close()


def _cleanup(opts: argparse.Namespace, exchange: str, queues: list[str]) -> None:
    c = Client(opts.uri, frame_max=opts.frame_max, name="perf-cleanup")
    try:
        for q in queues:
            c.queue_delete(q)
        if exchange:
            c.exchange_delete(exchange)
    finally:
        c.close()


def _spread(items: list[Any], nprocs: int) -> list[list[Any]]:
    groups: list[list[Any]] = [[] for _ in range(min(nprocs, len(items)))]
    for i, item in enumerate(items):
        groups[i % len(groups)].append(item)
    return groups


def _percentiles(lat_ns: list[int]) -> dict[str, Any] | None:
    if not lat_ns:
        return None
    lat_ns.sort()
    n = len(lat_ns)

    def pct(p: float) -> float:
        return round(lat_ns[min(n - 1, int(p * n))] / 1000.0, 1)

    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
            "max": round(lat_ns[-1] / 1000.0, 1), "samples": n}


def _config(opts: argparse.Namespace) -> dict[str, Any]:
    """The settings every producer and consumer process gets (fills in defaults on ``opts``)."""
    if opts.time is None and not opts.pmessages and not opts.cmessages:
        opts.time = 10.0
    if opts.qos and opts.multi_ack_every > opts.qos:
        opts.multi_ack_every = opts.qos  # never wait for an ack that prefetch makes impossible
    batch = opts.batch or max(1, min(256, 65536 // (opts.size + 80)))
    cfg = {
        "uri": opts.uri, "frame_max": opts.frame_max, "size": opts.size, "rate": opts.rate,
        "confirm": opts.confirm, "persistent": opts.persistent, "latency": opts.latency,
        "pmessages": opts.pmessages, "cmessages": opts.cmessages, "batch": batch,
        "qos": opts.qos, "autoack": opts.autoack, "multi_ack_every": opts.multi_ack_every,
        "drain_timeout": opts.drain_timeout,
    }
    if opts.latency and opts.size < 8:
        cfg["size"] = 8
    return cfg


def _spawn(ctx: Any, role: str, target: Any, groups: list, progress: Any, stop: Any,
           cfg: dict[str, Any], procs: list[tuple[Any, Any, str]]) -> None:
    """Start one ``role`` process per group, appending ``(process, pipe, role)`` to
    ``procs``."""
    for i, group in enumerate(groups):
        parent_end, child_end = ctx.Pipe()
        pr = ctx.Process(target=target, args=(child_end, i, progress, stop, cfg, group),
                         daemon=True, name=f"perf-{role}-{i}")
        pr.start()
        procs.append((pr, parent_end, role))


def _all_ready(procs: list[tuple[Any, Any, str]], errors: list[str]) -> bool:
    """Wait for every process's "ready" (120 s each); False (errors noted) if one fails."""
    ready_ok = True
    for pr, pipe, _role in procs:
        if not pipe.poll(120):
            errors.append(f"{pr.name}: not ready after 120 s")
            ready_ok = False
            continue
        kind, payload = pipe.recv()
        if kind != "ready":
            errors.append(payload)
            ready_ok = False
    return ready_ok


def run(opts: argparse.Namespace) -> dict[str, Any]:
    """Run one test; returns the result dict (also what ``main`` prints)."""
    exchange, etype, queues = _topology(opts)
    cfg = _config(opts)
    errors: list[str] = []
    if not opts.predeclared:
        _declare(opts, exchange, etype, queues)
    idle: list[Client] = []
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    stop = ctx.RawValue("b", 0)
    max_procs = opts.procs or 8
    p_targets = [(exchange, "" if etype == "fanout" else queues[i % len(queues)])
                 for i in range(opts.producers)]
    c_queues = [queues[j % len(queues)] for j in range(opts.consumers)]
    p_groups = _spread(p_targets, max_procs) if p_targets else []
    c_groups = _spread(c_queues, max_procs) if c_queues else []
    p_progress = ctx.RawArray("q", max(1, len(p_groups)))
    c_progress = ctx.RawArray("q", max(1, len(c_groups)))
    from .workers import consumer_main, producer_main

    procs: list[tuple[Any, Any, str]] = []  # (process, pipe, role)
    try:
        _spawn(ctx, "consumer", consumer_main, c_groups, c_progress, stop, cfg, procs)
        _spawn(ctx, "producer", producer_main, p_groups, p_progress, stop, cfg, procs)
        for _ in range(opts.idle_connections):
            idle.append(Client(opts.uri, frame_max=opts.frame_max, name="perf-idle"))
        results: list[dict[str, Any]] = []
        t0 = time.monotonic() + 0.05
        deadline = t0 + opts.time if opts.time is not None else None
        if _all_ready(procs, errors):
            for _pr, pipe, _role in procs:
                pipe.send(("go", t0, deadline))
            results = _collect(opts, procs, p_progress, c_progress, stop, deadline)
        else:
            for _pr, pipe, _role in procs:
                try:
                    pipe.send(("stop",))
                except OSError:
                    pass
        t_done = time.monotonic()
    finally:
        for pr, _pipe, _role in procs:
            pr.join(10)
            if pr.is_alive():
                pr.kill()
        for c in idle:
            c.close(timeout=2.0)
    if not opts.predeclared and not opts.keep_queues:
        try:
            _cleanup(opts, exchange, queues)
        except (ClientError, OSError) as exc:
            errors.append(f"cleanup: {exc}")
    return _summarize(opts, cfg, results, errors, t0, t_done, len(queues), etype)


def _collect(opts: argparse.Namespace, procs: list[tuple[Any, Any, str]], p_progress: Any,
             c_progress: Any, stop: Any, deadline: float | None) -> list[dict[str, Any]]:
    from multiprocessing.connection import wait

    results: list[dict[str, Any]] = []
    pending = {pipe: role for _pr, pipe, role in procs}
    producers_left = sum(1 for r in pending.values() if r == "producer")
    producers_done_at: float | None = None
    last_total, last_change = -1, time.monotonic()
    next_print = time.monotonic() + 1
    while pending:
        for pipe in wait(list(pending), timeout=0.05):
            try:
                kind, payload = pipe.recv()
            except EOFError:
                results.append({"role": pending[pipe], "errors": ["worker died"]})
            else:
                if kind == "result":
                    results.append(payload)
                elif kind == "error":
                    results.append({"role": pending[pipe], "errors": [payload]})
            if pending.pop(pipe) == "producer":
                producers_left -= 1
        now = time.monotonic()
        if producers_left == 0 and producers_done_at is None:
            producers_done_at = now
        total = sum(c_progress)
        if total != last_total:
            last_total, last_change = total, now
        if producers_done_at is not None and not stop.value and deadline is None:
            # count-bounded run: consumers stop at -D; without -D, once the flow has dried up
            quiet = opts.drain_timeout if opts.cmessages else 1.0
            if now - last_change > quiet:
                stop.value = 1
        if deadline is not None and now > deadline + opts.drain_timeout + 5:
            stop.value = 1
        if opts.progress and now >= next_print:
            next_print = now + 1
            print(f"sent {sum(p_progress)} received {total}", file=sys.stderr, flush=True)
    return results


def _summarize(opts: argparse.Namespace, cfg: dict[str, Any], results: list[dict[str, Any]],
               errors: list[str], t0: float, t_done: float, nqueues: int,
               etype: str) -> dict[str, Any]:
    import array

    prods = [r for r in results if r["role"] == "producer" and "sent" in r]
    cons = [r for r in results if r["role"] == "consumer" and "received" in r]
    for r in results:
        errors.extend(r.get("errors", []))
    sent = sum(r["sent"] for r in prods)
    received = sum(r["received"] for r in cons)
    p_end = max((r["t_end"] for r in prods), default=t0)
    c_end = max((r["t_last"] for r in cons), default=t0)
    lat = array.array("q")
    for r in cons:
        lat.frombytes(r["latency_ns"])
    return {
        "tool": "syncmq-perf",
        "uri": _redact(opts.uri),
        "producers": opts.producers, "consumers": opts.consumers, "queues": nqueues,
        "exchange_type": etype, "size": cfg["size"], "rate": opts.rate,
        "confirm": opts.confirm, "persistent": opts.persistent, "autoack": opts.autoack,
        "qos": opts.qos, "multi_ack_every": opts.multi_ack_every,
        "idle_connections": opts.idle_connections,
        "time": opts.time, "pmessages": opts.pmessages, "cmessages": opts.cmessages,
        "sent": sent,
        "sent_rate": round(sent / (p_end - t0), 1) if sent and p_end > t0 else 0.0,
        "received": received,
        "received_rate": round(received / (c_end - t0), 1) if received and c_end > t0 else 0.0,
        "confirmed": sum(r["confirmed"] for r in prods),
        "nacked": sum(r["nacked"] for r in prods),
        "returned": sum(r["returned"] for r in prods),
        "latency_us": _percentiles(lat.tolist()),
        "duration_s": round(t_done - t0, 3),
        "errors": errors,
    }


def _redact(uri: str) -> str:
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return uri


def _raise_nofile() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    _raise_nofile()
    if min(opts.producers, opts.consumers, opts.queues, opts.size, opts.confirm,
           opts.qos, opts.pmessages, opts.cmessages, opts.idle_connections) < 0:
        print("syncmq-perf: counts must be >= 0", file=sys.stderr)
        return 2
    try:
        result = run(opts)
    except (ClientError, OSError) as exc:
        print(json.dumps({"tool": "syncmq-perf", "errors": [f"setup: {exc}"]}))
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result), flush=True)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
