"""Resource alarms: memory high watermark and disk free limit, as RabbitMQ has them.

A :class:`ResourceMonitor` samples the process's resident memory (``/proc/self/statm``) and the
free space of the data directory's file system (``os.statvfs``) on a reactor timer (both reads
are a few microseconds). When a limit is crossed the alarm is *set*: ``broker.alarms`` gains
``"memory"`` or ``"disk"``, one log line says so, and every session is told on its own worker
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
from collections.abc import Callable
from typing import Any

log = logging.getLogger("syncmq.alarms")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory() -> int:
    """Resident set size of this process in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


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
        self.memory_used = 0
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
        self.memory_used = mem = resident_memory()
        if self.memory_high_watermark:
            self._update(alarms, "memory", mem > self.memory_high_watermark,
                         f"memory resource limit alarm: {mem} bytes used, high watermark "
                         f"{self.memory_high_watermark}")
        if self.disk_free_limit:
            self.disk_free = free = disk_free(self.data_dir)
            if free >= 0:
                self._update(alarms, "disk", free < self.disk_free_limit,
                             f"disk resource limit alarm: {free} bytes free in "
                             f"{self.data_dir}, limit {self.disk_free_limit}")
        alarms = frozenset(alarms)
        if alarms != self.broker.alarms:
            self.broker.alarms = alarms
            for s in self.sessions():
                s.transport.worker.submit(s.alarms_changed, alarms)
        return alarms

    @staticmethod
    def _update(alarms: set, name: str, over: bool, text: str) -> None:
        if over and name not in alarms:
            alarms.add(name)
            log.warning("%s set; publishers are blocked", text, extra={"alarm": name})
        elif not over and name in alarms:
            alarms.discard(name)
            log.info("%s cleared; publishers resume", text, extra={"alarm": name})
