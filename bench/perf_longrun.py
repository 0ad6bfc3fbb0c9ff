"""The matrix as a long-running broker sees it: ``perf_matrix.py --long-running``.

Every scenario runs on ONE broker process of each kind (no restart between scenarios, unlike
the matrix proper), in order, ``--runs`` passes. The broker's RSS is taken settled:

- at start (the idle level), before any scenario;
- after each scenario, once its queues are deleted (``syncmq-perf`` deletes its own; the
  ones a scenario keeps, S6's drained queue, are deleted here) and the RSS has settled: sampled
  every :data:`POLL` s until the samples of the last :data:`WINDOW` s (RabbitMQ may keep a
  level for 5 s before its garbage collection drops it) differ by at most
  max(1 MiB, 2 %), or ``--settle-max`` seconds passed (then the last sample counts and
  ``settled`` is false);
- the peak during each scenario (the matrix's ``Sampler``), and the process's VmHWM at the end.

``ratio`` is the settled RSS over the idle level: issue #22 asks for at most 1.5 after any
backlog drained. syncmq runs with the S6 memory budget (``--s6-memory-budget``) from the start,
as a user's broker has one configuration; scenarios that need a broker option of their own
(``S2off``) are refused. This module holds no load loop: the caller passes its ``run_one``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

POLL = 0.5  # seconds between two RSS samples while settling
WINDOW = 10.0  # seconds the RSS must stay within the tolerance to count as settled
MiB = 1024


def settle(pid: int, rss_kb: Callable[[int], tuple[int, int]], limit: float) -> dict[str, Any]:
    """Wait (bounded by ``limit`` seconds) until the RSS of ``pid`` is stable; returns
    ``{"rss_mb", "settle_s", "settled"}``."""
    t0 = time.monotonic()
    samples: list[tuple[float, int]] = []
    while True:
        now = time.monotonic()
        samples.append((now, rss_kb(pid)[0]))
        window = [v for t, v in samples if t >= now - WINDOW]
        full = samples[0][0] <= now - WINDOW
        if full and max(window) - min(window) <= max(MiB, max(window) // 50):
            settled = True
            break
        if now - t0 >= limit:
            settled = False
            break
        time.sleep(POLL)
    return {"rss_mb": round(samples[-1][1] / MiB, 1), "settle_s": round(now - t0, 1),
            "settled": settled}


def scenario_queues(steps: list[list[str]]) -> list[str]:
    """The ``perf-q-N`` queues a scenario's ``syncmq-perf`` steps use."""
    n = 1
    for step in steps:
        for flag in ("--fanout", "--queues"):
            if flag in step:
                n = max(n, int(step[step.index(flag) + 1]))
    return [f"perf-q-{i}" for i in range(1, n + 1)]


def delete_queues(uri: str, queues: list[str], limit: float = 300.0) -> list[str]:
    """Delete ``queues`` (missing ones are fine: queue.delete is idempotent in AMQP 0-9-1
    as RabbitMQ and syncmq implement it), retrying for up to ``limit`` seconds: a broker
    still working through a flood it has read (S5) may not complete a new connection's
    handshake in time. Returns the errors of the attempts that failed."""
    from syncmq.perf.client import Client, ClientError

    errors: list[str] = []
    deadline = time.monotonic() + limit
    while True:
        try:
            c = Client(uri, name="perf-longrun-cleanup")
            try:
                for q in queues:
                    c.queue_delete(q)
            finally:
                c.close()
            return errors
        except (ClientError, OSError) as exc:
            errors.append(f"longrun cleanup: {exc}")
            if time.monotonic() > deadline:
                return errors
            time.sleep(2)


def long_running(brokers: list[Any], names: list[str], all_sc: dict[str, dict[str, Any]],
                 run_one: Callable[..., dict[str, Any]], rss_kb: Callable, passes: int,
                 timeout: float, settle_max: float, log: Callable[[str], None]) -> dict:
    """Runs ``names`` ``passes`` times on each broker without restarting it; returns
    ``{broker name: {"idle_rss_mb", "steps": [...], "peak_rss_mb", "max_ratio", ...}}``.
    The brokers alternate (which goes first) from one scenario to the next."""
    out: dict[str, Any] = {}
    for b in brokers:
        idle = settle(b.pid, rss_kb, settle_max)
        out[b.name] = {"idle_rss_mb": idle["rss_mb"], "idle": idle, "steps": []}
        log(f"# LR {b.name} idle: {idle}")
    k = 0
    for p in range(passes):
        for name in names:
            sc = all_sc[name]
            for b in brokers if k % 2 == 0 else list(reversed(brokers)):
                res = run_one(b, sc, timeout)
                res["errors"] += delete_queues(b.uri, scenario_queues(sc["steps"]))
                st = settle(b.pid, rss_kb, settle_max)
                idle_mb = out[b.name]["idle_rss_mb"]
                row = {"scenario": name, "pass": p + 1, "rss_peak_mb": res["rss_peak_mb"],
                       "rss_settled_mb": st["rss_mb"], "ratio": round(st["rss_mb"] / idle_mb, 2),
                       "settle_s": st["settle_s"], "settled": st["settled"],
                       "received": res.get("received"), "errors": res["errors"], "run": res}
                out[b.name]["steps"].append(row)
                log(f"# LR {name} pass {p + 1} {b.name}: peak {row['rss_peak_mb']} MiB, "
                    f"settled {row['rss_settled_mb']} MiB ({row['ratio']}x idle) "
                    f"in {row['settle_s']} s, errors {row['errors'][:2]}")
            k += 1
    for b in brokers:
        o = out[b.name]
        o["peak_rss_mb"] = max(s["rss_peak_mb"] for s in o["steps"])
        o["vmhwm_mb"] = round(rss_kb(b.pid)[1] / MiB, 1)
        o["max_ratio"] = max(s["ratio"] for s in o["steps"])
        o["final_ratio"] = o["steps"][-1]["ratio"]
    return out


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per scenario (and pass), settled RSS and ratio per broker."""
    names = list(result)
    head = " | ".join(f"{n} peak / settled MiB (x idle)" for n in names)
    rows = [f"| Scenario | {head} |", "|---" * (len(names) + 1) + "|",
            "| idle | " + " | ".join(f"{result[n]['idle_rss_mb']}" for n in names) + " |"]
    for i, step in enumerate(result[names[0]]["steps"]):
        cells = []
        for n in names:
            s = result[n]["steps"][i]
            mark = "" if s["settled"] else " (not settled)"
            cells.append(f"{s['rss_peak_mb']} / {s['rss_settled_mb']} ({s['ratio']}x){mark}")
        label = step["scenario"] + (f" #{step['pass']}" if step["pass"] > 1 else "")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows.append("| max | " + " | ".join(
        f"{result[n]['peak_rss_mb']} / max {result[n]['max_ratio']}x" for n in names) + " |")
    return "\n".join(rows)


def refused(names: list[str], all_sc: dict[str, dict[str, Any]]) -> list[str]:
    """Scenarios that need a broker option of their own (cannot share one process)."""
    return [n for n in names if all_sc[n].get("syncmq_args") and n not in ("S6", "S6p")]
