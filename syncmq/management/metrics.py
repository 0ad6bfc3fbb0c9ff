"""The Prometheus endpoints: ``/metrics``, ``/metrics/per-object`` and ``/metrics/detailed``,
rendered by ``prometheus_client`` (text format 0.0.4) from :mod:`.prometheus`'s families.

As RabbitMQ's plugin: ``/metrics`` is aggregated (one sample per family, whatever the number
of queues, channels and connections), ``/metrics/per-object`` has one sample per object and
``/metrics/detailed?family=F&family=G&vhost=V`` only the tables asked for (see
:mod:`.prometheus`). Concurrent scrapes share renderings (:class:`Scrapes`). The same
endpoints are served on the management port and on the Prometheus port
(``--prometheus-port``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, generate_latest

from . import prometheus
from .state import Context, Rates

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATHS = {(): "aggregated", ("per-object",): "per-object", ("detailed",): "detailed"}


class _Collector:
    """A ``prometheus_client`` collector for one rendering (one :class:`Reading`)."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        yield from self.families


def view_of(parts: list[str]) -> str | None:
    """``["metrics", ...]`` path segments -> the view name, None if not a metrics path."""
    return PATHS.get(tuple(parts[1:])) if parts[:1] == ["metrics"] else None


def detailed_query(query: str) -> tuple[tuple[str, ...], frozenset[str] | None]:
    """``family=...`` (repeatable) and ``vhost=...`` (repeatable) of a detailed scrape."""
    pairs = parse_qsl(query)
    families = tuple(v for k, v in pairs if k == "family")
    vhosts = frozenset(v for k, v in pairs if k == "vhost")
    return families, (vhosts or None)


class Scrapes:
    """Concurrent scrapes share renderings: one rendering at a time per broker, and a scrape
    that arrives while one is running waits and then takes the next rendering of the same
    request that *starts after it arrived* (never an older snapshot). However many scrapers
    loop, the broker spends at most one thread on rendering. Thread-safe (``_lock``
    serialises the renderings)."""

    def __init__(self, ctx: Context, rates: Rates, node: Callable[[], dict[str, Any]]) -> None:
        self.ctx, self.rates, self.node = ctx, rates, node
        self._lock = threading.Lock()
        self._last: dict[tuple, tuple[float, bytes]] = {}

    def get(self, view: str, query: str = "") -> bytes:
        families, vhosts = detailed_query(query) if view == "detailed" else ((), None)
        key = (view, families, vhosts)
        arrived = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and last[0] >= arrived:
                return last[1]
            started = time.monotonic()
            body = self.render(view, families, vhosts)
            if len(self._last) > 64:  # detailed queries are the scraper's choice: bounded
                self._last.clear()
            self._last[key] = (started, body)
            return body

    def render(self, view: str, families: tuple[str, ...] = (),
               vhosts: frozenset[str] | None = None) -> bytes:
        reading = prometheus.Reading(self.ctx, self.rates, self.node(), vhosts,
                                     ordered=view != "aggregated")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(prometheus.collect(reading, view, families)))
        return generate_latest(registry)
