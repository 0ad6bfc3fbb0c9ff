"""The last minutes of the broker-wide counters, so a chart has a history when it opens.

A :class:`History` records one sample of the message counters and queue depths every
``interval`` seconds, in its own daemon thread ``syncmq-management-history``, and keeps the last
``keep`` seconds of them (120 samples by default: a sample costs one pass over the open channels
and the queues' lengths, nothing on the message path). The management API serves them as
RabbitMQ does, as ``samples`` in a ``*_details`` object when asked with
``?msg_rates_age=&msg_rates_incr=`` (counters) or ``?lengths_age=&lengths_incr=`` (depths).

A :class:`Watched` does the same for single objects (a queue's page and its charts): only for
the objects asked for with those parameters in the last ``keep`` seconds, at most ``limit`` of
them, so a broker with 10,000 queues keeps no history of the 9,990 nobody looks at. The first
ask starts the object's history (one sample at once); it is recorded by the same sampler thread.

Thread-safety: ``_samples`` is appended by the sampler thread and copied by request threads,
both under ``_lock``; a sample's dict is never changed once recorded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class History:
    """Samples of ``sample()`` (a dict of name -> int) every ``interval`` s for ``keep`` s."""

    def __init__(self, sample: Callable[[], dict[str, int]], interval: float = 5.0,
                 keep: float = 600.0) -> None:
        self.interval = interval
        self.keep = keep
        self._sample = sample
        self._lock = threading.Lock()
        self._samples: deque[tuple[int, dict[str, int]]] = deque(
            maxlen=int(keep / interval) + 1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="syncmq-management-history",
                                        daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def stop(self) -> None:
        """Stop sampling and join the thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            try:
                self.record()
            except Exception:  # a snapshot racing a vhost deletion: skip this sample
                pass
            if self._stop.wait(self.interval):
                return

    def record(self, now_ms: int | None = None) -> None:
        counts = self._sample()
        ts = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            self._samples.append((ts, counts))

    def samples(self, key: str, age: float, incr: float) -> list[dict[str, int]]:
        """RabbitMQ's ``samples`` of ``key``: ``[{"sample": n, "timestamp": ms}, ...]``,
        newest first, covering the last ``age`` seconds, at least ``incr`` seconds apart."""
        with self._lock:
            recorded = list(self._samples)
        return pick(recorded, key, age, incr)


class Watched:
    """Per-object histories (``sample(obj_key)`` every ``interval`` s, ``keep`` s of them) of
    the objects :meth:`watch`-ed in the last ``keep`` s, at most ``limit`` (the least
    recently watched is dropped first). ``sample`` returns None for an object that is gone,
    which ends its history. :meth:`record` is called by the :class:`History` thread.

    Thread-safety: ``_objs`` (key -> [last watched (monotonic s), deque of samples]) is
    changed by request threads (:meth:`watch`) and the sampler (:meth:`record`), both under
    ``_lock``; ``sample`` is called outside it (it reads monitoring snapshots).
    """

    def __init__(self, sample: Callable[[Any], dict[str, int] | None], interval: float = 5.0,
                 keep: float = 600.0, limit: int = 64) -> None:
        self.interval, self.keep, self.limit = interval, keep, limit
        self._sample = sample
        self._lock = threading.Lock()
        self._objs: dict[Any, list] = {}

    def watch(self, obj: Any) -> None:
        """Keep (or start) ``obj``'s history; a new one gets its first sample now."""
        with self._lock:
            entry = self._objs.pop(obj, None)  # re-inserted last: the most recently watched
            if entry is not None:
                entry[0] = time.monotonic()
                self._objs[obj] = entry
                return
        counts = self._sample(obj)
        if counts is None:
            return
        with self._lock:
            entry = [time.monotonic(), deque(maxlen=int(self.keep / self.interval) + 1)]
            entry[1].append((int(time.time() * 1000), counts))
            self._objs[obj] = entry
            while len(self._objs) > self.limit:
                del self._objs[next(iter(self._objs))]

    def record(self, now_ms: int | None = None) -> None:
        """One sample of every object watched in the last ``keep`` s; forget the others."""
        now = time.monotonic()
        with self._lock:
            for obj in [k for k, e in self._objs.items() if now - e[0] > self.keep]:
                del self._objs[obj]
            objs = list(self._objs)
        ts = int(time.time() * 1000) if now_ms is None else now_ms
        for obj in objs:
            counts = self._sample(obj)
            with self._lock:
                entry = self._objs.get(obj)
                if entry is None:
                    continue
                if counts is None:
                    del self._objs[obj]
                else:
                    entry[1].append((ts, counts))

    def watched(self) -> list[Any]:
        with self._lock:
            return list(self._objs)

    def samples(self, obj: Any, key: str, age: float, incr: float) -> list[dict[str, int]]:
        """:meth:`History.samples` of one watched object (``[]`` if it is not watched)."""
        with self._lock:
            entry = self._objs.get(obj)
            recorded = list(entry[1]) if entry is not None else []
        return pick(recorded, key, age, incr)


def pick(recorded: list[tuple[int, dict[str, int]]], key: str, age: float,
         incr: float) -> list[dict[str, int]]:
    """The ``samples`` of ``key`` in ``recorded`` (oldest first): newest first, the last
    ``age`` seconds, at least ``incr`` seconds apart."""
    if not recorded:
        return []
    newest = recorded[-1][0]
    out: list[dict[str, int]] = []
    last = None
    step = max(incr, 0.0) * 1000 * 0.9  # the sampler's timer jitters a little
    for ts, counts in reversed(recorded):
        if newest - ts > age * 1000:
            break
        if key not in counts:
            continue
        if last is not None and last - ts < step:
            continue
        out.append({"sample": counts[key], "timestamp": ts})
        last = ts
    return out


def details(samples: list[dict[str, int]], counter: bool) -> dict[str, Any]:
    """What RabbitMQ adds to a ``*_details`` object with its samples: ``avg_rate`` (per second
    over the samples) and ``avg`` (the mean, meaningful for depths)."""
    out: dict[str, Any] = {"samples": samples}
    if len(samples) >= 2:
        dt = (samples[0]["timestamp"] - samples[-1]["timestamp"]) / 1000
        diff = samples[0]["sample"] - samples[-1]["sample"]
        out["avg_rate"] = round(diff / dt, 1) if dt > 0 else 0.0
    else:
        out["avg_rate"] = 0.0
    if not counter:
        out["avg"] = (round(sum(s["sample"] for s in samples) / len(samples), 1)
                      if samples else 0.0)
    return out


def age_and_incr(query: dict[str, str], prefix: str, keep: float,
                 interval: float) -> tuple[float, float] | None:
    """``(age, incr)`` from ``?{prefix}_age=&{prefix}_incr=`` (seconds), None when not asked.
    Raises ValueError for values that are not positive numbers."""
    raw = query.get(prefix + "_age")
    if raw is None:
        return None
    age = float(raw)
    incr = float(query.get(prefix + "_incr") or interval)
    if not (age > 0 and incr > 0):
        raise ValueError(f"{prefix}_age and {prefix}_incr must be positive")
    return min(age, keep), max(incr, interval)
