"""The journal's SegmentReader keeps a bounded number of fds (issue #19): an LRU of
``FD_CACHE`` segments plus those still held by references, one fd per segment at most."""

from __future__ import annotations

import gc
import os
import threading
import time

from journal_helpers import open_journal

from syncmq.journal import format as jf
from syncmq.journal import reader as jreader

KiB = 1024


def _open_fds_on_segments(data: str) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(data) and target.endswith(".seg"):
            n += 1
    return n


def test_fds_bounded_by_lru_plus_references(tmp_path):
    data = str(tmp_path / "data")
    j, _ = open_journal(data, segment_bytes=16 * KiB, auto_compact=False)
    try:
        j.append(jf.encode_queue_declare("/", "q", 1, b""))
        body = b"b" * (8 * KiB)
        n_segments = jreader.FD_CACHE * 3
        ids = list(range(1, 2 * n_segments + 1))  # two bodies per 16 KiB segment
        for mid in ids:
            j.append(jf.encode_publish(mid, "/", ["q"], "", "rk", b"\x00\x00", body))
        done = threading.Event()
        j.sync_barrier(lambda _e: done.set())
        assert done.wait(30)
        r = j.reader
        # references held for every message: one fd per segment, shared by its messages
        # (locate answers None until the journal has applied the records to its state, which
        # may come a moment after the barrier: wait for it, bounded)
        deadline = time.monotonic() + 30
        while True:
            refs = [r.locate(mid, len(body)) for mid in ids]
            if all(ref is not None for ref in refs):
                break
            assert time.monotonic() < deadline, "records never located"
            refs.clear()
            done.clear()
            j.sync_barrier(lambda _e: done.set())
            assert done.wait(30)
        segs = {ref[0].no for ref in refs}
        assert len(segs) > 2 * jreader.FD_CACHE
        assert len({id(ref[0]) for ref in refs}) == len(segs)
        assert r.cached_fds() == len(segs)
        assert all(ref[0].pread(len(body), ref[1]) == body for ref in refs)
        # references released: only the LRU's fds stay open
        refs.clear()
        gc.collect()
        assert r.cached_fds() == jreader.FD_CACHE
        assert _open_fds_on_segments(data) <= jreader.FD_CACHE + 1  # + the writer's
        # a segment that fell out of the LRU is opened again on demand
        loc = r.locate(ids[0], len(body))
        assert loc is not None and loc[0].pread(len(body), loc[1]) == body
        assert r.cached_fds() == jreader.FD_CACHE
    finally:
        j.close()
