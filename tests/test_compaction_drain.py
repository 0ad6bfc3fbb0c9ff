"""Compaction leaves the head of a drain alone (issue #22, ``compaction.py``, "A segment being
drained"), and the disk still comes back.

A FIFO drain acks a backlog in log order: compacting the segment it is draining through copies
records that die moments later. The journal thread's automatic compaction therefore leaves a
dirty segment alone while its live bytes fall fast enough to reach nothing within
``drain_horizon`` seconds (measured over ``drain_window``), compacts it once the fall stops, and
deletes a segment with nothing live at once. Shown here:

- the rule itself, on ``Compactor.find_run`` with a fake clock: a half-dead segment falling
  fast is skipped (and so is a run through it), compacted once it holds still for a window or
  falls too slowly; a dead one is taken at once; ``run_all`` (``Journal.compact``) ignores it;
- on the journal thread: a drain stopped half way through a segment is compacted while the
  journal is idle (nothing written wakes it); after a full FIFO drain the journal's size comes
  back to near empty, and the drain's segments were deleted, not copied (nor even read: they
  hold only PUBLISH records);
- with a real broker, a paged persistent backlog drained by pika: the journal directory comes
  back to near empty.
"""

from __future__ import annotations

import os
import time

import pika
from amqp_helpers import connection
from journal_helpers import barrier, open_journal
from test_journal import Driver, publish

from syncmq.journal import format as fmt
from syncmq.journal.compaction import Compactor
from syncmq.journal.state import JournalState, Segment

SEG = 64 * 1024
TIMEOUT = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _compactor(tmp_path, lives: list[int]) -> tuple[Compactor, Clock, dict[int, Segment]]:
    """A compactor over closed segments 1..len(lives), each SEG bytes with ``lives[i]`` live
    (segment len(lives) + 1 is the current one)."""
    st = JournalState()
    for no, live in enumerate(lives, 1):
        seg = Segment(no)
        seg.size, seg.live = SEG, live
        st.segments[no] = seg
    st.segments[len(lives) + 1] = Segment(len(lives) + 1)
    c = Compactor(str(tmp_path), st, SEG)
    clock = Clock()
    c.clock = clock
    return c, clock, st.segments


def test_a_segment_falling_fast_is_left_alone_until_its_fall_stops(tmp_path):
    c, clock, segs = _compactor(tmp_path, [SEG // 4, SEG])
    cur = 3
    assert c.find_run(cur) == [1]  # without the rule: dirty, compacted
    assert c.find_run(cur, defer_draining=True) is None and c.deferred  # first window
    clock.now += 0.5
    segs[1].live -= 1000
    assert c.find_run(cur, defer_draining=True) is None  # the window is not over
    clock.now += 0.5
    segs[1].live -= 1000  # 2000 bytes a second: empty in ~7 s, within the horizon
    assert c.find_run(cur, defer_draining=True) is None and c.deferred
    clock.now += 1.0  # nothing acked for a window: the drain stopped
    assert c.find_run(cur, defer_draining=True) == [1]
    assert not c.deferred


def test_a_slow_fall_does_not_defer_and_a_dead_segment_is_taken_at_once(tmp_path):
    c, clock, segs = _compactor(tmp_path, [SEG // 4, 0, SEG])
    cur = 4
    # segment 2 is dead: never deferred, so the run starts there while 1 is measured
    assert c.find_run(cur, defer_draining=True) == [2] and c.deferred
    clock.now += 1.0
    segs[1].live -= 100  # 100 bytes a second: ~160 s to empty, past the 30 s horizon
    assert c.find_run(cur, defer_draining=True) == [1, 2]


def test_a_run_stops_at_a_draining_segment(tmp_path):
    c, clock, segs = _compactor(tmp_path, [SEG // 8, SEG // 8, SEG // 8])
    cur = 4
    assert c.find_run(cur) == [1, 2, 3]
    c.find_run(cur, defer_draining=True)  # first sight of all three
    clock.now += 1.0
    segs[2].live -= 4000  # 2 falls fast, 1 and 3 hold still
    assert c.find_run(cur, defer_draining=True) == [1]
    segs[1].live = 0  # (1 compacted: gone from the state)
    del segs[1]
    assert c.find_run(cur, defer_draining=True) == [3]


def test_a_clean_small_segment_is_not_copied_alone_while_its_neighbour_drains(tmp_path):
    """A small clean segment starts a run only to merge with its small neighbour: with the
    neighbour deferred it would be rewritten unchanged on every call (found in review)."""
    small = SEG // 16
    c, clock, segs = _compactor(tmp_path, [small, small // 4])
    for no in (1, 2):
        segs[no].size = small
    cur = 3
    assert c.find_run(cur) == [1, 2]  # without the rule: merged
    c.find_run(cur, defer_draining=True)  # first sight
    clock.now += 1.0
    segs[2].live -= 200  # 2 drains fast
    assert c.find_run(cur, defer_draining=True) is None and c.deferred
    clock.now += 1.0  # 2's drain stopped: the pair is merged again
    assert c.find_run(cur, defer_draining=True) == [1, 2]


def _backlog(j, n: int, body: int = 900) -> Driver:
    d = Driver(j)
    d.add(fmt.QueueDeclare("/", "q", 0, b""))
    for i in range(1, n + 1):
        d.add(publish(i, ["q"], b"m" * body))
    barrier(j)
    return d


def _wait(cond, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_stopped_drain_is_compacted_while_the_journal_is_idle(tmp_path):
    j, _ = open_journal(tmp_path, segment_bytes=SEG)
    j._compactor.drain_window = 0.05
    n = 400  # ~6 segments of ~70 records
    _backlog(j, n)
    per_seg = n // len(j.segment_numbers())
    j.append_ids(fmt.T_ACK, "/", "q", list(range(1, per_seg * 3 // 4)))  # 3/4 of the first
    barrier(j)
    barrier(j)  # (the first barrier's batch is applied before the second is written)
    # nothing more is written: only the journal thread's own look after a window compacts it
    _wait(lambda: j.compaction_stats.bytes_written > 0, "the stopped drain's segment was "
          "never compacted")
    assert j.compaction_stats.records_kept >= per_seg // 4 - 2
    j.close()


def test_after_a_full_fifo_drain_the_disk_comes_back_without_copying(tmp_path):
    j, _ = open_journal(tmp_path, segment_bytes=SEG)
    clock = Clock()
    j._compactor.clock = clock
    n = 1200  # ~17 segments of ~70 records
    _backlog(j, n)
    full, nseg = j.disk_usage(), len(j.segment_numbers())
    step = n // nseg // 4
    for i in range(1, n + 1, step):  # a FIFO drain: a quarter segment every half second
        j.append_ids(fmt.T_ACK, "/", "q", list(range(i, min(i + step, n + 1))))
        clock.now += 0.5
        barrier(j)
        barrier(j)  # (applied, and the journal thread has looked for compaction work)
    _wait(lambda: j.disk_usage() < 2 * SEG, "the journal did not shrink after the drain")
    # the drain's segments were deleted, not rewritten: no PUBLISH copied (the queue's
    # declare, in the first segment, is the one record kept)
    assert j.compaction_stats.records_kept <= 1, j.compaction_stats
    assert j.compaction_stats.segments_deleted >= nseg - 3
    # and deleted without being read (a dead run: compaction.py, "A dead run"), but the first
    # (the queue's declare) and the last ones (the ACKs)
    assert j.compaction_stats.bytes_read < 4 * SEG, j.compaction_stats
    assert j.disk_usage() < full // 5
    j.close()


def _journal_bytes(data_dir: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _d, files in os.walk(data_dir)
               for f in files if f.endswith(".seg"))


def test_a_drained_paged_backlog_gives_the_journal_back(broker_factory):
    seg = 256 * 1024
    b = broker_factory("--memory-budget", "8MiB", "--queue-page-window", "64",
                       "--journal-segment-bytes", str(seg))
    n = 3000
    body = b"d" * 1000
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.queue_declare("drain", durable=True)
        ch.confirm_delivery()
        for _ in range(n):
            ch.basic_publish("", "drain", body, pika.BasicProperties(delivery_mode=2))
        full = _journal_bytes(b.data_dir)
        assert full > 3 * 1000 * 1000
        ch.basic_qos(prefetch_count=100)
        got = 0
        for method, _props, data in ch.consume("drain", inactivity_timeout=TIMEOUT):
            assert method is not None and data == body
            got += 1
            ch.basic_ack(method.delivery_tag, multiple=True)
            if got == n:
                break
        ch.cancel()
        assert ch.queue_declare("drain", passive=True).method.message_count == 0
    _wait(lambda: _journal_bytes(b.data_dir) < 4 * seg,
          f"the journal kept {_journal_bytes(b.data_dir)} bytes after the drain")
    with connection(b.port) as conn:  # the broker still serves
        conn.channel().queue_declare("after", durable=True)
