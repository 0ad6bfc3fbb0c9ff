"""Helpers for tests that drive a :class:`syncmq.journal.Journal` directly (no broker)."""

from __future__ import annotations

import threading
from pathlib import Path

from syncmq.journal import Journal


def open_journal(path: Path | str, start: bool = True, **kw):
    """A journal opened and recovered at ``path`` (started unless ``start`` is false), and
    what its recovery found."""
    j = Journal(path, **kw)
    j.open()
    rec = j.recover()
    if start:
        j.start()
    return j, rec


def barrier(j: Journal, timeout: float = 30) -> None:
    """Wait until everything appended to ``j`` so far is durable; it must succeed."""
    ev = threading.Event()
    errors: list = []

    def cb(err):
        errors.append(err)
        ev.set()

    j.sync_barrier(cb)
    assert ev.wait(timeout), "sync_barrier did not fire"
    assert errors == [None]
    assert j.metrics.internal_errors == 0
