"""RabbitMQ's Prometheus families (rabbitmq_prometheus) from a syncmq broker, as
``prometheus_client`` metric families.

Three views, as RabbitMQ's plugin serves them:

- ``aggregated`` (``/metrics``): every table summed into one sample per family (queues,
  channels and connections carry no labels), so a scrape's size does not grow with the
  number of objects;
- ``per-object`` (``/metrics/per-object``): the same families with one sample per object
  (``vhost``/``queue``, ``channel``);
- ``detailed`` (``/metrics/detailed?family=...&vhost=...``): only the tables asked for, per
  object, named ``rabbitmq_detailed_*`` (and ``rabbitmq_cluster_*`` for ``exchange_names``,
  ``exchange_bindings``, ``vhost_status``); ``vhost`` limits the queue tables to those vhosts.

Every view also has ``rabbitmq_build_info`` and ``rabbitmq_identity_info``; the first two have
the global counters (``rabbitmq_global_*``), the totals, the alarms and syncmq's own families
(``syncmq_*``: journal, fsync latency histogram, memory budget and spill, per-queue lifetime
counters).

What a scrape reads, and under which locks (one :class:`Reading` per rendering): the open
sessions (``Context.sessions``: the server's sessions lock, to copy the set), each session's
channels and each vhost's queues and exchanges (dicts copied with ``list(...)``, no lock;
plain int and ``len`` reads, a monitoring snapshot), the counters of closed channels and the
event counters (``Broker.stats_lock``, once each), the body store's counters (its lock, once)
and the journal's counters (no lock: ints written by the journal thread). No queue, channel
or vhost lock is taken, nothing is taken per message, and the queue pass releases the GIL every
:data:`YIELD_EVERY` queues.
"""

from __future__ import annotations

import base64
import hashlib
import platform
import time
from importlib import metadata
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)

import syncmq.management.state as state
import syncmq.management.view as view

from ..broker.deadletter import DEAD_LETTER_SERIES, dead_letter_event
from . import prom_families as F
from .state import Context, Rates, connection_name, open_sessions

YIELD_EVERY = 1000  # queues read between two releases of the GIL (AMQP threads run between)
PREFIX = "rabbitmq_"
DETAILED_PREFIX = "rabbitmq_detailed_"
# the tables of /metrics and /metrics/per-object (RabbitMQ's mutually exclusive pairs: the
# detailed auth table only per object, queue_consumer_count only when asked alone)
AGGREGATED_TABLES = tuple(t for t in F.TABLES
                          if t not in ("auth_attempt_detailed_metrics", "queue_consumer_count"))
PER_OBJECT_TABLES = tuple(t for t in F.TABLES if t != "queue_consumer_count")
DETAILED_FAMILIES = frozenset(F.TABLES) | frozenset(F.CLUSTER)
try:
    CLIENT_VERSION = metadata.version("prometheus_client")
except metadata.PackageNotFoundError:  # pragma: no cover
    CLIENT_VERSION = ""

Row = tuple[tuple[str, ...], dict[str, float]]  # (label values, values by key)


def _family(name: str, kind: str, help_: str, labels: tuple[str, ...]) -> Metric:
    if kind == F.C:
        return CounterMetricFamily(name, help_, labels=labels)
    if kind == F.G:
        return GaugeMetricFamily(name, help_, labels=labels)
    return UnknownMetricFamily(name, help_, labels=labels)


class Reading:
    """One scrape's reads of the broker (see the module docstring for the locks)."""

    def __init__(self, ctx: Context, rates: Rates, node: dict[str, Any],
                 vhosts: frozenset[str] | None = None, ordered: bool = True) -> None:
        self.ctx = ctx
        self.node = node  # the facts /api/nodes shows (fds, memory, disk, threads, limits)
        self.sessions = open_sessions(ctx)
        self.channels = [(s, ch) for s in self.sessions for ch in list(s.channels.values())]
        self.vhosts = sorted(list(ctx.broker.vhosts.items()))
        self.queue_vhosts = vhosts  # the queue tables' vhost filter (detailed), None = all
        self.ordered = ordered  # queues sorted by name (per-object views; a sum needs no order)
        self._queue_sum: dict[str, float] | None = None
        counts = state.channel_totals(ctx, state.METRIC_STATS)
        self.totals = rates.monotonic("prometheus", counts)
        self.events = state.events(ctx)
        self._queue_rows: list[Row] | None = None

    def queues(self) -> list:
        out = []
        for name, vh in self.vhosts:
            if self.queue_vhosts is None or name in self.queue_vhosts:
                qs = list(vh.queues.values())
                out.extend(sorted(qs, key=lambda q: q.name) if self.ordered else qs)
        return out

    def queue_sum(self) -> dict[str, float]:
        """Every queue value summed over the queues (the aggregated views), computed once."""
        if self._queue_sum is None:
            rows = self.queue_rows()
            keys = rows[0][1].keys() if rows else ()
            self._queue_sum = {k: sum(v[k] for _, v in rows) for k in keys}
        return self._queue_sum

    def queue_rows(self) -> list[Row]:
        """Every queue's values, in one pass (shared by the queue tables and syncmq's)."""
        if self._queue_rows is None:
            rows = []
            for i, q in enumerate(self.queues()):
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    time.sleep(0)
                ready, unacked = view.depth(q)
                consumers = view.consumers(q)
                util = view.consumer_utilisation(q) if consumers else 0
                rows.append(((q.vhost, q.name), {
                    "ready": ready, "unacked": unacked, "messages": ready + unacked,
                    "consumers": consumers, "consumer_capacity": util,
                    "consumer_utilisation": util, "published": q.stats_published,
                    "delivered": q.stats_delivered, "acked": q.stats_acked}))
            self._queue_rows = rows
        return self._queue_rows

    # ---- one function per table: its rows, per object ----

    def rows(self, table: str) -> list[Row]:
        if table in F.QUEUE_TABLES or table == "channel_queue_exchange_metrics":
            return self.queue_rows()
        return getattr(self, "_" + table)()

    def _connection_churn_metrics(self) -> list[Row]:
        return [((), dict(self.events))]

    def _node_coarse_metrics(self) -> list[Row]:
        n = self.node
        values = {k: n[k] for k in ("fd_used", "sockets_used", "mem_used", "disk_free",
                                    "proc_used", "fd_total", "sockets_total", "mem_limit",
                                    "disk_free_limit", "proc_total")}
        values["uptime"] = n["uptime"] / 1000  # ms -> s, as RabbitMQ converts it
        return [((), values)]

    _node_metrics = _node_coarse_metrics

    def _node_persister_metrics(self) -> list[Row]:
        durability = getattr(self.ctx.broker, "durability", None)
        if durability is None:
            return []
        m = durability.journal.metrics
        return [((), {"io_write_count": m.batches, "io_write_bytes": m.bytes,
                      "io_sync_count": m.fsyncs, "io_sync_time": m.fsync_seconds_sum})]

    def _auth_attempt_metrics(self) -> list[Row]:
        e = self.events
        return [(("amqp091",), {"attempts": e["auth_attempts"],
                                "succeeded": e["auth_attempts"] - e["auth_attempts_failed"],
                                "failed": e["auth_attempts_failed"]})]

    def _auth_attempt_detailed_metrics(self) -> list[Row]:
        return []  # sources are not tracked (RabbitMQ's default: track_auth_attempt_source)

    def _channel_rows(self, fn) -> list[Row]:
        return [((f"{connection_name(s)} ({ch.id})", s.vhost.name), fn(s, ch))
                for s, ch in self.channels]

    def _channel_metrics(self) -> list[Row]:
        def values(_s, ch) -> dict[str, float]:
            c = ch.confirms
            return {"consumers": len(ch.consumers), "unacked": view.channel_unacked(ch),
                    "unconfirmed": c.seq - c.sent if c is not None else 0,
                    "uncommitted": len(ch.tx_publishes), "acks_uncommitted": len(ch.tx_acks),
                    "prefetch": ch.prefetch_count, "global_prefetch": ch.global_prefetch}
        return [((label,), v) for (label, _), v in self._channel_rows(values)]

    def _channel_counts(self) -> list[Row]:
        def values(_s, ch) -> dict[str, float]:
            return derived(dict(zip(state.METRIC_STATS, ch.metric_stats(), strict=True)))
        return self._channel_rows(values)

    _channel_exchange_metrics = _channel_counts
    _channel_queue_metrics = _channel_counts

    def _connection_coarse_metrics(self) -> list[Row]:
        return [((connection_name(s),), {
            "recv_oct": getattr(s.transport, "bytes_in", 0),
            "send_oct": getattr(s.transport, "bytes_out", 0),
            "channels": len(s.channels)}) for s in self.sessions]

    _connection_metrics = _connection_coarse_metrics


def derived(c: dict[str, int]) -> dict[str, int]:
    """RabbitMQ's splits of syncmq's counters: ack-mode deliveries and gets, all deliveries,
    routed publishes."""
    c = dict(c)
    c["deliver_ack"] = c["deliver"] - c["deliver_no_ack"]
    c["get_ack"] = c["get"] - c["get_no_ack"]
    c["deliver_get"] = c["deliver"] + c["get"]
    c["routed"] = max(0, c["publish"] - c["return_unroutable"] - c["drop_unroutable"])
    return c


def table_families(reading: Reading, table: str, prefix: str, per_object: bool) -> list[Metric]:
    """One table's families: a sample per row (per object), or one summed sample."""
    rows = reading.rows(table)
    labels = F.LABELS.get(table, ()) if per_object or table in F.KEEP_LABELS else ()
    if not per_object and table in F.LABELS and table not in F.KEEP_LABELS:
        if rows is reading.queue_rows():
            summed = reading.queue_sum()
        else:
            summed = {}
            for _, values in rows:
                for k, v in values.items():
                    summed[k] = summed.get(k, 0) + v
        rows = [((), summed)]  # a zero sample when there is no object, as RabbitMQ
    out = []
    for name, kind, help_, key in F.TABLES[table]:
        fam = _family(prefix + name, kind, help_, labels)
        for label_values, values in rows:
            if key == "consumer_capacity" and not per_object:
                continue  # RabbitMQ's aggregated scrape has no sample for it either
            fam.add_metric(list(label_values), values.get(key, 0))
        out.append(fam)
    return out


def common(reading: Reading) -> list[Metric]:
    """The families of both /metrics and /metrics/per-object besides the tables."""
    ctx = reading.ctx
    out: list[Metric] = []
    fam = GaugeMetricFamily("process_start_time_seconds",
                            "Start time of the process since unix epoch in seconds.",
                            value=round(ctx.started_at))
    out.append(fam)
    for name, help_, alarm in F.ALARMS:
        fam = UnknownMetricFamily(PREFIX + name, help_,
                                  value=int(alarm is not None and alarm in ctx.broker.alarms))
        out.append(fam)
    totals = {"connections": len(reading.sessions), "channels": len(reading.channels),
              "consumers": sum(len(ch.consumers) for _, ch in reading.channels),
              "queues": sum(len(vh.queues) for _, vh in reading.vhosts)}
    for name, help_ in F.TOTALS:
        out.append(GaugeMetricFamily(PREFIX + name, help_, value=totals[name]))
    g = derived(reading.totals)
    g["consumers"] = totals["consumers"]
    g["publishers"] = sum(1 for _, ch in reading.channels if ch.n_publish)
    for name, kind, help_, labels, key in F.GLOBAL:
        fam = _family(PREFIX + name, kind, help_, labels)
        fam.add_metric(["amqp091", "rabbit_classic_queue"][:len(labels)], g[key])
        out.append(fam)
    out.extend(dead_letter_families(reading.events))
    return out


def dead_letter_families(events: dict[str, int]) -> list[Metric]:
    """``rabbitmq_global_messages_dead_lettered_*_total``: a sample per series that counts
    the reason (RabbitMQ's), from the broker's counters (``Broker.count``)."""
    out = []
    for reason, help_ in F.DEAD_LETTERED:
        fam = CounterMetricFamily(f"{PREFIX}global_messages_dead_lettered_{reason}_total",
                                  help_, labels=F.DEAD_LETTER_LABELS)
        for qtype, strategy, reasons in DEAD_LETTER_SERIES:
            if reason in reasons:
                fam.add_metric([qtype, strategy],
                               events.get(dead_letter_event(qtype, strategy, reason), 0))
        out.append(fam)
    return out


def identity(ctx: Context) -> list[Metric]:
    """``rabbitmq_build_info`` and ``rabbitmq_identity_info`` (on every endpoint)."""
    build = UnknownMetricFamily(
        PREFIX + "build_info", "RabbitMQ & Erlang/OTP version info",
        labels=("rabbitmq_version", "prometheus_plugin_version", "prometheus_client_version",
                "erlang_version"))
    # syncmq's version where RabbitMQ's is (as /api/overview), Python's where Erlang's is
    build.add_metric([ctx.version, ctx.version, CLIENT_VERSION, platform.python_version()], 1)
    ident = UnknownMetricFamily(
        PREFIX + "identity_info", "RabbitMQ node & cluster identity info",
        labels=("rabbitmq_node", "rabbitmq_cluster", "rabbitmq_cluster_permanent_id"))
    ident.add_metric([ctx.node, ctx.cluster_name, permanent_id(ctx.cluster_name)], 1)
    return [build, ident]


def permanent_id(cluster_name: str) -> str:
    """A cluster id of RabbitMQ's shape, stable for a cluster name (RabbitMQ draws one at
    random when the cluster is formed and keeps it in its database)."""
    digest = hashlib.sha256(cluster_name.encode()).digest()[:16]
    return "rabbitmq-cluster-id-" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def syncmq_families(reading: Reading, per_object: bool) -> list[Metric]:
    """syncmq's own families: journal, fsync latency, memory budget, per-queue counters."""
    ctx = reading.ctx
    out: list[Metric] = []
    labels = ("vhost", "queue") if per_object else ()
    for key, help_ in (("published", "Messages enqueued (since the queue was declared)."),
                       ("delivered", "Messages delivered or fetched from the queue."),
                       ("acked", "Deliveries from the queue acknowledged.")):
        fam = CounterMetricFamily(f"syncmq_queue_messages_{key}_total", help_, labels=labels)
        if per_object:
            for lv, v in reading.queue_rows():
                fam.add_metric(list(lv), v[key])
        else:
            fam.add_metric([], reading.queue_sum().get(key, 0))
        out.append(fam)
    jb = state.journal_bytes(ctx.data_dir) if ctx.data_dir else None
    if jb is not None:
        out.append(GaugeMetricFamily("syncmq_journal_bytes",
                                     "Bytes in the journal's segment files.", value=jb))
    durability = getattr(ctx.broker, "durability", None)
    if durability is not None:
        out.append(_fsync_histogram(durability.journal.metrics))
        out.append(CounterMetricFamily(
            "syncmq_journal_cancelled_publishes",
            "Persistent publishes never written: acked on every queue in their own batch.",
            value=durability.journal.metrics.cancelled))
    store = getattr(ctx.broker, "body_store", None)
    if store is not None:
        st = store.stats()
        for key, name, help_ in (
                ("budget", "memory_budget_bytes", "The memory budget (--memory-budget)."),
                ("memory_bytes", "body_store_memory_bytes",
                 "Bytes of queued message bodies held in memory."),
                ("spilled_messages", "spilled_messages", "Message bodies spilled to disk."),
                ("spilled_bytes", "spilled_bytes", "Bytes of message bodies spilled to disk."),
                ("spill_file_bytes", "spill_file_bytes", "Bytes in the spill files.")):
            out.append(GaugeMetricFamily("syncmq_" + name, help_, value=st[key]))
    return out


def _fsync_histogram(m) -> Metric:
    """The journal's fsync latency as a Prometheus histogram (cumulative buckets)."""
    from ..journal.writer import FSYNC_BUCKETS

    buckets, total = [], 0
    for bound, n in zip((*FSYNC_BUCKETS, "+Inf"), list(m.fsync_buckets), strict=True):
        total += n
        buckets.append((bound if bound == "+Inf" else repr(float(bound)), total))
    return HistogramMetricFamily("syncmq_journal_fsync_seconds",
                                 "Latency of the journal's fsync calls (group commits).",
                                 buckets=buckets, sum_value=m.fsync_seconds_sum)


def cluster_families(reading: Reading, family: str) -> Metric:
    """``exchange_names``, ``exchange_bindings``, ``vhost_status`` (rabbitmq_cluster_*)."""
    name, kind, help_ = F.CLUSTER[family]
    if family == "vhost_status":
        fam = _family("rabbitmq_cluster_" + name, kind, help_, ("vhost",))
        for vname, _ in reading.vhosts:
            fam.add_metric([vname], 1)
        return fam
    fam = _family("rabbitmq_cluster_" + name, kind, help_, ("vhost", "exchange", "type"))
    for vname, vh in reading.vhosts:
        for ex in list(vh.exchanges.values()):
            if ex.name:  # RabbitMQ leaves the default exchange out
                n = len(ex.matcher) if family == "exchange_bindings" else 1
                fam.add_metric([vname, ex.name, ex.type], n)
    return fam


def collect(reading: Reading, view_: str, families: tuple[str, ...] = ()) -> list[Metric]:
    """The families of one view: ``aggregated``, ``per-object`` or ``detailed`` (the tables
    named in ``families``; unknown names are ignored, as RabbitMQ does)."""
    if view_ == "detailed":
        asked = [f for f in dict.fromkeys(families) if f in DETAILED_FAMILIES]
        if "queue_metrics" in asked and "queue_consumer_count" in asked:
            asked.remove("queue_consumer_count")
        out: list[Metric] = []
        for f in asked:
            if f in F.CLUSTER:
                out.append(cluster_families(reading, f))
            else:
                out.extend(table_families(reading, f, DETAILED_PREFIX, True))
        return out + identity(reading.ctx)
    per_object = view_ == "per-object"
    out = common(reading)
    for table in PER_OBJECT_TABLES if per_object else AGGREGATED_TABLES:
        out.extend(table_families(reading, table, PREFIX, per_object))
    return out + identity(reading.ctx) + syncmq_families(reading, per_object)
