"""Resource alarms: memory high watermark and disk free limit, as RabbitMQ has them.

A :class:`ResourceMonitor` samples memory and the free space of the data directory's file
system (``os.statvfs``) on a reactor timer. Memory has two signals (``syncmq.memory``): what
the broker accounts for (queued messages and their bodies in memory, connection buffers and
state, the start-up baseline) and the process's RSS (``/proc/self/statm``). The memory alarm
is set when the accounted figure exceeds ``--memory-high-watermark`` or RSS exceeds
:data:`RSS_FACTOR` times it (something the accounting misses), and cleared once the accounted
figure is back under :data:`CLEAR_BELOW` of the watermark and RSS under its bound (the margin
keeps it from flapping). RSS alone could not clear it: the allocator keeps what was freed.
When RSS is well above the accounted figure (a backlog drained) the monitor gives memory back
(``memory.trim``: glibc ``malloc_trim``), at most every :data:`TRIM_EVERY` seconds, backing
off while it releases little (up to 60 s; a drop by half of the accounted figure since the
last attempt, a backlog drained, ends the back-off); before each trim the body store rebuilds the index tables a
drained backlog left oversized (``BodyStore.shrink``: dicts never shrink on deletion). When a limit is crossed the alarm is *set*: ``broker.alarms`` gains
``"memory"`` or ``"disk"``, then one log line says so (after: whoever reads it finds the
alarm in effect), and every session is told on its own worker
(``Session.alarms_changed``). A session then sends ``connection.blocked`` (to clients with that
capability) and stops reading from its socket as soon as it publishes, as RabbitMQ's reader
does; consumers keep being served, so queues can drain. When the resource is back under the
limit the alarm clears and sessions resume reading and send ``connection.unblocked``.

Thread-safety: ``_tick`` runs on the reactor thread only; ``broker.alarms`` is replaced, never
mutated, so readers on other threads see either the old or the new frozenset.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from . import memory
from .memory import resident_memory

log = logging.getLogger("syncmq.alarms")

RSS_FACTOR = 1.5  # RSS above this many watermarks sets the memory alarm whatever is accounted
CLEAR_BELOW = 0.9  # the memory alarm clears under this fraction of the watermark
TRIM_EVERY = 2.0  # seconds between two malloc_trim calls at most (doubled while they fail)
# RSS this far above the accounted figure (and 1/TRIM_SHARE of it) -> trim. With glibc for
# every object (--allocator malloc) a trim after a drained load returns RSS to ~1.08x of idle;
# 8 MiB and 1/4 (the figures before) left every long-running scenario at 1.15-1.31x.
TRIM_SLACK = 4 * 1024 * 1024
TRIM_SHARE = 8
#: queued messages (in memory or paged out) that must go, and halve what was held at the last
#: trim, for a drained backlog to end the trim back-off: a queue depth swinging between a few
#: dozen and none must not (each failed trim holds the reactor for milliseconds)
TRIM_HELD_DROP = 10_000
WALK_SHARE = 0.05  # the accounting walk may take this share of a core


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def disk_free(path: str) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


class ResourceMonitor:
    """Samples memory and disk every ``interval`` seconds on the reactor thread."""

    def __init__(
        self,
        broker: Any,
        sessions: Callable[[], list],
        call_later: Callable[..., None],
        memory_high_watermark: int,
        disk_free_limit: int,
        data_dir: str,
        interval: float = 0.5,
    ) -> None:
        self.broker = broker
        self.sessions = sessions
        self.call_later = call_later
        self.memory_high_watermark = memory_high_watermark
        self.disk_free_limit = disk_free_limit
        self.data_dir = data_dir
        self.interval = interval
        self.memory_used = 0  # accounted bytes (memory.accounted_memory's total)
        self.memory_parts: dict[str, int] = {}
        self.rss = 0
        self.baseline = resident_memory()  # the process before it holds anything
        self._next_walk = 0.0
        self._next_trim = 0.0
        self._trim_every = TRIM_EVERY
        self._trim_mem = 0  # the accounted figure at the last trim attempt
        self._trim_held = 0  # messages queued (in memory or paged out) at that attempt
        self.trims = 0  # malloc_trim calls that released memory (tests, logs)
        self.disk_free = 0
        self.stopped = False

    def start(self) -> None:
        self.call_later(self.interval, self._tick)

    def stop(self) -> None:
        self.stopped = True

    def _tick(self) -> None:
        if self.stopped:
            return
        try:
            self.check()
        finally:
            self.call_later(self.interval, self._tick)

    def check(self) -> frozenset:
        """Sample once and set/clear alarms; returns the alarms now in effect."""
        alarms = set(self.broker.alarms)
        lines: list[tuple[int, str, str]] = []  # logged once the state says so
        mem, rss = self.sample_memory()
        wm = self.memory_high_watermark
        if wm:
            if "memory" in alarms:
                over = mem >= wm * CLEAR_BELOW or rss > wm * RSS_FACTOR
            else:
                over = mem > wm or rss > wm * RSS_FACTOR
            self._update(alarms, lines, "memory", over,
                         f"memory resource limit alarm: {mem} bytes used (accounted), RSS "
                         f"{rss}, high watermark {wm}")
        if self.disk_free_limit:
            self.disk_free = free = disk_free(self.data_dir)
            if free >= 0:
                self._update(alarms, lines, "disk", free < self.disk_free_limit,
                             f"disk resource limit alarm: {free} bytes free in "
                             f"{self.data_dir}, limit {self.disk_free_limit}")
        alarms = frozenset(alarms)
        if alarms != self.broker.alarms:
            self.broker.alarms = alarms
            for s in self.sessions():
                s.transport.worker.submit(s.alarms_changed, alarms)
        for level, text, name in lines:
            log.log(level, text, extra={"alarm": name})
        return alarms

    def sample_memory(self) -> tuple[int, int]:
        """(accounted, RSS) now; walks the broker's structures at most WALK_SHARE of the
        time, and trims the allocator when RSS is well above what is accounted."""
        now = time.monotonic()
        if now >= self._next_walk:
            parts = memory.accounted_memory(self.broker, self.sessions(), self.baseline)
            took = time.monotonic() - now
            self._next_walk = now + took / WALK_SHARE
            self.memory_parts = parts
            self.memory_used = parts["total"]
            self.broker.memory_used = parts["total"]
        mem = self.memory_used
        held = self.memory_parts.get("messages", 0) + self.memory_parts.get("paged", 0)
        rss = resident_memory()
        if mem < self._trim_mem // 2 or (
                held < self._trim_held // 2 and self._trim_held - held >= TRIM_HELD_DROP):
            # what the broker holds, or the messages it queues, halved since the last trim
            # (a backlog drained): trim now, not after the back-off that the failed trims
            # during the backlog built up. (A paged backlog is mostly not in the accounted
            # figure: 1,000,000 paged persistent 16 B messages drained left RSS at 4.5x
            # idle for 26 s, until the back-off ran out.)
            self._next_trim = now
        if rss > mem + max(TRIM_SLACK, mem // TRIM_SHARE) and now >= self._next_trim:
            self._trim_mem, self._trim_held = mem, held
            store = getattr(self.broker, "body_store", None)
            if store is not None and store.shrink():  # a drained backlog's index tables
                log.info("body store index tables rebuilt at their size",
                         extra={"rss_before": rss, "accounted": mem})
            released = memory.trim()
            after = resident_memory()
            if released and rss - after >= TRIM_SLACK // 4:
                self.trims += 1
                self._trim_every = TRIM_EVERY
                log.info("memory returned to the OS", extra={
                    "rss_before": rss, "rss_after": after, "accounted": mem})
            else:  # fragmentation a trim cannot undo: ask less often
                self._trim_every = min(self._trim_every * 2, 60.0)
            self._next_trim = time.monotonic() + self._trim_every
            rss = after
        self.rss = rss
        return mem, rss

    @staticmethod
    def _update(alarms: set, lines: list, name: str, over: bool, text: str) -> None:
        """Set or clear ``name`` in ``alarms``; its log line goes to ``lines``, written by
        :meth:`check` after ``broker.alarms`` changed (a reader of the log never sees an
        alarm the broker does not act on yet)."""
        if over and name not in alarms:
            alarms.add(name)
            lines.append((logging.WARNING, f"{text} set; publishers are blocked", name))
        elif not over and name in alarms:
            alarms.discard(name)
            lines.append((logging.INFO, f"{text} cleared; publishers resume", name))
