"""Monitoring snapshots of the broker: connections, channels, consumers, counters and rates.

Nothing here takes a broker lock except :meth:`Broker.stats_lock` (to copy the totals of
closed channels): sessions, channels and queue counters are read unlocked, each dict copied
with ``list(...)`` first, which is what a monitoring snapshot needs (the numbers may be a few
microseconds apart, never torn).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..broker.broker import Broker
from ..methods.session import Channel, Session

STATS = Channel.STATS  # ("publish", "confirm", "return_unroutable", "deliver", "get", ...)
METRIC_STATS = Channel.METRIC_STATS  # STATS and the counters only /metrics shows


@dataclass
class Context:
    """What the management server is given by ``syncmq.server`` (it never imports it)."""

    broker: Broker
    sessions: Callable[[], list[Session]]
    node: str = "syncmq@localhost"
    version: str = ""
    started_at: float = field(default_factory=time.time)
    data_dir: str = ""
    listeners: list[dict] = field(default_factory=list)
    cluster_name: str = "syncmq@localhost"
    # the TLS listener's certificate chain and CA files (the certificate-expiration check)
    tls_files: list[str] = field(default_factory=list)
    mem_limit: int = 0  # --memory-high-watermark in bytes (0: no memory alarm)
    disk_free_limit: int = 0  # --disk-free-limit in bytes (0: no disk alarm)
    # The files it was started with (``--config``, ``--users-file``) and logs to
    # (``--log-file`` or ``<stderr>``): /api/nodes ``config_files``, ``log_files``.
    config_files: list[str] = field(default_factory=list)
    log_files: list[str] = field(default_factory=list)
    # The resource monitor's last memory accounting (``memory.accounted_memory``), {} before
    # its first sample: /api/nodes/{node}?memory=true
    memory_parts: Callable[[], dict[str, int]] = dict
    # Called with (session, code, text) to close a connection on its own worker.
    close_connection: Callable[[Session, int, str], None] | None = None
    # the broker's dynamic shovels (``syncmq.shovel.manager.Shovels``), None: no shovels
    shovels: Any = None


def peer_parts(addr: Any) -> tuple[str, int]:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return str(addr), 0


def connection_name(s: Session) -> str:
    """RabbitMQ's connection name: ``"peer_host:peer_port -> host:port"``."""
    ph, pp = peer_parts(s.peer)
    h, p = peer_parts(getattr(s.transport, "sockname", ("", 0)))
    return f"{ph}:{pp} -> {h}:{p}"


def open_sessions(ctx: Context) -> list[Session]:
    """Sessions past connection.open (RabbitMQ lists those as connections in a vhost)."""
    return [s for s in ctx.sessions() if s.vhost is not None and not s.released]


def channel_totals(ctx: Context, keys: tuple[str, ...] = STATS) -> dict[str, int]:
    """Broker-wide message counters ``keys`` (of ``Channel.METRIC_STATS``; the API's
    ``STATS`` by default): closed channels' totals plus every open channel's."""
    broker = ctx.broker
    with broker.stats_lock:
        totals = list(broker.closed_stats)
    totals += [0] * (len(METRIC_STATS) - len(totals))
    for s in ctx.sessions():
        for ch in list(s.channels.values()):
            if ch.stats_folded:
                continue
            for i, n in enumerate(ch.metric_stats()):
                totals[i] += n
    by_name = dict(zip(METRIC_STATS, totals, strict=True))
    return {k: by_name[k] for k in keys}


def events(ctx: Context) -> dict[str, int]:
    """The broker's event counters (``Broker.events``: churn, logins), a copy."""
    with ctx.broker.stats_lock:
        return dict(ctx.broker.events)


def with_deliver_get(counts: dict[str, int]) -> dict[str, int]:
    out = dict(counts)
    out["deliver_get"] = counts.get("deliver", 0) + counts.get("get", 0)
    return out


class Rates:
    """Per-second rates of monotonic counters, from samples kept per key.

    Each call records a sample (at most one a second per key) and returns the rate over the
    last ~5 seconds, as RabbitMQ's ``*_details.rate`` does. Counters that go down (a brief
    race while a channel's counts move to the closed totals) are clamped to the highest
    value seen, so the reported counters stay monotonic.
    """

    WINDOW = 5.0

    def __init__(self) -> None:
        # Guards ``_samples`` and ``_high``: HTTP requests run on several threads.
        self._lock = threading.Lock()
        self._samples: dict[Any, list[tuple[float, dict[str, int]]]] = {}
        self._high: dict[Any, dict[str, int]] = {}

    def monotonic(self, key: Any, counts: dict[str, int]) -> dict[str, int]:
        with self._lock:
            high = self._high.setdefault(key, {})
            out = {}
            for k, v in counts.items():
                v = max(v, high.get(k, 0))
                high[k] = out[k] = v
            return out

    def rates(self, key: Any, counts: dict[str, int]) -> dict[str, float]:
        now = time.monotonic()
        with self._lock:
            samples = self._samples.setdefault(key, [])
            if not samples or now - samples[-1][0] >= 1.0:
                samples.append((now, dict(counts)))
            while len(samples) > 1 and now - samples[1][0] >= self.WINDOW:
                samples.pop(0)
            t0, c0 = samples[0]
        dt = now - t0
        if dt <= 0:
            return {k: 0.0 for k in counts}
        return {k: round(max(0, v - c0.get(k, 0)) / dt, 1) for k, v in counts.items()}

    def forget_missing(self, kinds: tuple[str, ...], live: set) -> None:
        """Drop samples of ``(kind, ...)`` keys that no longer exist (deleted queues)."""
        with self._lock:
            for d in (self._samples, self._high):
                for key in [k for k in d if isinstance(k, tuple) and k[0] in kinds
                            and k not in live]:
                    del d[key]


def with_details(counts: dict[str, int], rates: dict[str, float]) -> dict[str, Any]:
    """``{"publish": 5, "publish_details": {"rate": 0.0}, ...}`` as RabbitMQ writes stats."""
    out: dict[str, Any] = {}
    for k, v in counts.items():
        out[k] = v
        out[k + "_details"] = {"rate": rates.get(k, 0.0)}
    return out


def queue_counts(q) -> dict[str, int]:
    return {"publish": q.stats_published, "deliver_get": q.stats_delivered,
            "ack": q.stats_acked}


def resident_memory() -> int:
    """This process's resident set size in bytes (``/proc/self/statm``; 0 if unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:
            return 0


def journal_bytes(data_dir: str) -> int | None:
    """Bytes in the journal's segment files (``*.seg``), None if there is no data dir."""
    try:
        entries = list(os.scandir(data_dir))
    except OSError:
        return None
    total = 0
    for e in entries:
        if e.name.endswith(".seg"):
            try:
                total += e.stat().st_size
            except OSError:
                pass
    return total
