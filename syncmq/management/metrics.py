"""``GET /metrics`` and ``/metrics/per-object``: the Prometheus text format (0.0.4).

Counters are broker-wide message counts since start (kept per channel on the message path
and folded into the broker's totals when a channel closes); gauges are read from the broker
at scrape time. As RabbitMQ's Prometheus plugin, ``/metrics`` is aggregated: the queue
families are one sample each (the sum over all queues), so a scrape's size does not grow
with the number of queues and its cost is one pass of additions over them.
``/metrics/per-object`` gives the same families with one sample per queue (``vhost`` and
``queue`` labels): its size and cost grow with the queues. Concurrent scrapes share renderings
(:class:`Scrapes`).
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Iterable

import syncmq.management.state as state
import syncmq.management.view as view

from .state import Context, Rates, open_sessions

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric, help, counter names in state.STATS (+ deliver_get) that add up to it)
COUNTERS = (
    ("syncmq_messages_published_total", "Messages published by clients.", ("publish",)),
    ("syncmq_messages_delivered_total",
     "Messages delivered to consumers or fetched with basic.get.", ("deliver", "get")),
    ("syncmq_messages_acked_total", "Deliveries acknowledged by clients.", ("ack",)),
    ("syncmq_messages_redelivered_total", "Deliveries with the redelivered flag set.",
     ("redeliver",)),
    ("syncmq_messages_returned_total", "Mandatory messages returned as unroutable.",
     ("return_unroutable",)),
    ("syncmq_messages_confirmed_total", "Publishes confirmed to publishers (basic.ack).",
     ("confirm",)),
)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kw: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in kw.items()) + "}"


def _family(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float]]) -> str:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {_num(v)}" for labels, v in samples]
    return "\n".join(lines)


# (metric, kind, help, value of one queue)
QUEUE_FAMILIES = (
    ("syncmq_queue_messages_ready", "gauge", "Messages ready for delivery.",
     view.ready),
    ("syncmq_queue_messages_unacked", "gauge", "Messages delivered and not yet acknowledged.",
     view.unacked),
    ("syncmq_queue_consumers", "gauge", "Consumers of queues.", view.consumers),
    ("syncmq_queue_messages_published_total", "counter", "Messages enqueued.",
     operator.attrgetter("stats_published")),
    ("syncmq_queue_messages_delivered_total", "counter", "Messages delivered or fetched.",
     operator.attrgetter("stats_delivered")),
    ("syncmq_queue_messages_acked_total", "counter", "Deliveries acknowledged.",
     operator.attrgetter("stats_acked")),
)
YIELD_EVERY = 1000  # queues read between two releases of the GIL (AMQP threads run between)


def _queue_families(queues: list, per_object: bool) -> list[str]:
    """The queue families: one pass over the queues, each family summed (aggregated) or one
    sample per queue (``vhost``/``queue`` labels). The GIL is released every
    :data:`YIELD_EVERY` queues, so a scrape of 100,000 queues never holds up the AMQP
    threads for the whole pass."""
    fns = [f[3] for f in QUEUE_FAMILIES]
    sums = [0] * len(fns)
    rows: list[list[tuple[str, float]]] = [[] for _ in fns]
    for i, q in enumerate(queues):
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            time.sleep(0)
        vals = [fn(q) for fn in fns]
        if per_object:
            labels = _labels(vhost=q.vhost, queue=q.name)
            for row, v in zip(rows, vals, strict=True):
                row.append((labels, v))
        else:
            sums = [a + b for a, b in zip(sums, vals, strict=True)]
    if not per_object:
        rows = [[("", v)] for v in sums]
    return [_family(name, kind, help_, row)
            for (name, kind, help_, _), row in zip(QUEUE_FAMILIES, rows, strict=True)]


class Scrapes:
    """Concurrent scrapes share renderings: one rendering at a time per broker, and a scrape
    that arrives while one is running waits and then takes the next rendering that *starts
    after it arrived* (never an older snapshot). However many scrapers loop, the broker spends
    at most one thread on rendering. Thread-safe (``_lock`` serialises the renderings)."""

    def __init__(self, ctx: Context, rates: Rates) -> None:
        self.ctx, self.rates = ctx, rates
        self._lock = threading.Lock()
        self._last: dict[bool, tuple[float, bytes]] = {}

    def get(self, per_object: bool) -> bytes:
        arrived = time.monotonic()
        with self._lock:
            last = self._last.get(per_object)
            if last is not None and last[0] >= arrived:
                return last[1]
            started = time.monotonic()
            body = render(self.ctx, self.rates, per_object).encode()
            self._last[per_object] = (started, body)
            return body


def _num(v: float) -> str:
    return str(int(v)) if isinstance(v, int) or float(v).is_integer() else repr(float(v))


def _fsync_histogram(m) -> str:
    """The journal's fsync latency as a Prometheus histogram (cumulative buckets)."""
    from ..journal.writer import FSYNC_BUCKETS

    name = "syncmq_journal_fsync_seconds"
    lines = [f"# HELP {name} Latency of the journal's fsync calls (group commits).",
             f"# TYPE {name} histogram"]
    counts = list(m.fsync_buckets)
    total = 0
    for bound, n in zip((*FSYNC_BUCKETS, "+Inf"), counts, strict=True):
        total += n
        le = bound if bound == "+Inf" else repr(float(bound))
        lines.append(f'{name}_bucket{{le="{le}"}} {total}')
    lines.append(f"{name}_sum {m.fsync_seconds_sum!r}")
    lines.append(f"{name}_count {total}")
    return "\n".join(lines)


def render(ctx: Context, rates: Rates, per_object: bool = False) -> str:
    """The whole scrape as text (queue families summed unless ``per_object``)."""
    totals = rates.monotonic("overview", state.with_deliver_get(state.channel_totals(ctx)))
    out = []
    for name, help_, parts in COUNTERS:
        out.append(_family(name, "counter", help_, [("", sum(totals[p] for p in parts))]))

    sessions = open_sessions(ctx)
    channels = [ch for s in sessions for ch in list(s.channels.values())]
    vhosts = sorted(list(ctx.broker.vhosts.items()))
    if per_object:
        queues = [q for _, vh in vhosts for q in sorted(list(vh.queues.values()),
                                                          key=lambda q: q.name)]
    else:
        queues = [q for _, vh in vhosts for q in list(vh.queues.values())]
    gauges = [
        ("syncmq_connections", "Open AMQP connections.", len(sessions)),
        ("syncmq_channels", "Open channels.", len(channels)),
        ("syncmq_queues", "Queues.", len(queues)),
        ("syncmq_exchanges", "Exchanges (including the predeclared ones).",
         sum(len(vh.exchanges) for _, vh in vhosts)),
        ("syncmq_consumers", "Consumers.", sum(len(ch.consumers) for ch in channels)),
        ("syncmq_vhosts", "Virtual hosts.", len(vhosts)),
    ]
    for name, help_, v in gauges:
        out.append(_family(name, "gauge", help_, [("", v)]))

    out.extend(_queue_families(queues, per_object))

    jb = state.journal_bytes(ctx.data_dir) if ctx.data_dir else None
    if jb is not None:
        out.append(_family("syncmq_journal_bytes", "gauge",
                           "Bytes in the journal's segment files.", [("", jb)]))
    durability = getattr(ctx.broker, "durability", None)
    if durability is not None:
        out.append(_fsync_histogram(durability.journal.metrics))
    out.append(_family("process_resident_memory_bytes", "gauge",
                       "Resident memory size in bytes.", [("", state.resident_memory())]))
    out.append(_family("process_start_time_seconds", "gauge",
                       "Start time of the process since the Unix epoch in seconds.",
                       [("", round(ctx.started_at, 3))]))
    out.append(_family("syncmq_uptime_seconds", "gauge", "Seconds since the broker started.",
                       [("", round(time.time() - ctx.started_at, 3))]))
    out.append(_family("syncmq_build_info", "gauge", "syncmq version (always 1).",
                       [(_labels(version=ctx.version, node=ctx.node), 1)]))
    return "\n".join(out) + "\n"
