"""Compaction deletes a dead run of segments without reading it (issue #22, S3;
``compaction.py``, "A dead run").

A run qualifies when nothing of it would be kept: nothing live, no entity/parameter/tombstone
record (``Segment.msgs_only``), and no id its ACK/DELIVERED/DELIVERED_RUNS records name can be
a PUBLISH still on disk before it (``max_pub`` of every older segment below the run's
``min_ref``). Shown here, on a journal driven directly (``auto_compact=False``, so each
``compact()`` is one decision we can look at):

- an S3-like history (publish, deliver, ack a few messages later) is deleted unread once the
  segment holding the queue's declare was compacted, and the per-segment fields come out of
  replay the same;
- the shortcut is NOT taken (and a restart recovers the model's state) when a record of the
  run names a PUBLISH of an older segment still on disk (ACK of a dead one, DELIVERED and
  DELIVERED_RUNS of live ones), when the run holds a declare/delete or a parameter record,
  and when a segment of the run still holds a live message;
- a real broker driven by pika (S3-like, small segments) deletes its closed segments unread.
"""

from __future__ import annotations

import pika
import pytest
from amqp_helpers import connection
from journal_helpers import barrier, open_journal
from test_journal import Driver, publish, recover_snapshot

from syncmq.journal import format as fmt

SEG = 4096


def _fields(j) -> dict:
    return {no: (s.msgs_only, s.min_ref, s.max_pub, s.live, s.size)
            for no, s in j._state.segments.items()}


class History:
    """A journal, its model, and the next message id."""

    def __init__(self, tmp_path) -> None:
        self.path = tmp_path
        self.j, _ = open_journal(tmp_path, segment_bytes=SEG, auto_compact=False)
        self.d = Driver(self.j)
        self.next_id = 1

    def add(self, rec: fmt.Record) -> None:
        self.d.add(rec)

    def msg(self, queues=("q",), body: int = 300) -> int:
        mid = self.next_id
        self.next_id += 1
        self.add(publish(mid, list(queues), b"m" * body))
        return mid

    def s3(self, n: int, lag: int = 3) -> None:
        """Publish, deliver and ack ``n`` messages on q, each acked ``lag`` messages later."""
        pending: list[int] = []
        for _ in range(n):
            mid = self.msg()
            self.add(fmt.Delivered("/", "q", (mid,)))
            pending.append(mid)
            if len(pending) > lag:
                self.add(fmt.Ack("/", "q", (pending.pop(0),)))
        self.add(fmt.Ack("/", "q", tuple(pending)))

    def roll(self) -> None:
        """Dead messages (acked at once) until the current segment is closed."""
        barrier(self.j)
        n = len(self.j.segment_numbers())
        while len(self.j.segment_numbers()) == n:
            mid = self.msg()
            self.add(fmt.Ack("/", "q", (mid,)))
            barrier(self.j)

    def compact(self) -> tuple[int, int]:
        """Compact; return how many segments were deleted unread and how many bytes read."""
        st = self.j.compaction_stats
        unread, read = st.segments_unread, st.bytes_read
        barrier(self.j)
        self.j.compact()
        self.j._state.check()
        return st.segments_unread - unread, st.bytes_read - read

    def restart_matches(self) -> None:
        """Close; recovery gives the model's state and the same per-segment fields."""
        barrier(self.j)
        before = _fields(self.j)
        self.j.close()
        state, _ = recover_snapshot(self.path)
        assert state == self.d.model.snapshot()
        j, _ = open_journal(self.path, start=False, segment_bytes=SEG)
        try:
            assert _fields(j) == before
        finally:
            j.close()


def test_an_s3_history_is_deleted_unread(tmp_path):
    h = History(tmp_path)
    h.add(fmt.QueueDeclare("/", "q", 2, b""))
    h.s3(40)
    h.roll()
    unread, read = h.compact()  # the first run holds the declare: read, the declare kept
    assert unread == 0 and read > 0
    assert h.j.compaction_stats.records_kept == 1
    for _ in range(3):
        h.s3(40)
        h.roll()
        closed = len(h.j.segment_numbers()) - 2  # (the declare's output, the current one)
        assert closed >= 3
        unread, read = h.compact()
        assert unread == closed and read == 0
        assert len(h.j.segment_numbers()) == 2
    h.s3(10)  # (some records in the current segment too)
    h.restart_matches()


@pytest.fixture
def older(tmp_path):
    """A history whose first segment stays on disk (mostly live, not dirty) and holds
    queues ``q`` (for the churn), ``keep`` (live messages), ``gone``, a parameter and a dead
    message ``dead`` of ``keep``; the next segments are being written."""
    h = History(tmp_path)
    for q in ("q", "keep", "gone"):
        h.add(fmt.QueueDeclare("/", q, 2, b""))
    h.add(fmt.ParamSet("/", "policy", "p1", b'{"pattern":"^k"}'))
    h.live = [h.msg(("keep",), body=500) for _ in range(4)]
    h.dead = h.msg(("keep",), body=500)
    h.roll()
    first = h.j.segment_numbers()[0]
    assert h.dead in h.j._state.msgs and h.j._state.msgs.loc(h.dead)[0] == first
    h.first = first
    return h


_KILLERS = {
    # the run's offending record(s), or None for the control (the shortcut is taken)
    "none": None,
    "ack-of-an-older-dead-publish": "ack",
    "delivered-of-older-live": lambda h: [fmt.Delivered("/", "keep", (h.live[1],))],
    "delivered-runs-of-older-live": lambda h: [fmt.DeliveredRuns("/", "keep",
                                                                 ((h.live[0], 3),))],
    "delete-of-an-older-queue": lambda h: [fmt.QueueDelete("/", "gone")],
    "clear-of-an-older-parameter": lambda h: [fmt.ParamClear("/", "policy", "p1")],
    "declare-and-delete-in-the-run": lambda h: [fmt.QueueDeclare("/", "tmp", 2, b""),
                                                fmt.QueueDelete("/", "tmp")],
    "parameter-set-and-clear-in-the-run": lambda h: [
        fmt.ParamSet("/", "policy", "p2", b"{}"), fmt.ParamClear("/", "policy", "p2")],
}


@pytest.mark.parametrize("case", list(_KILLERS))
def test_a_run_naming_what_is_before_it_is_read(older, case):
    h = older
    h.s3(15)
    killer = _KILLERS[case]
    if killer == "ack":
        # the message dies now: its PUBLISH, in the older segment, stays on disk (dead)
        h.add(fmt.Ack("/", "keep", (h.dead,)))
    elif killer is not None:
        for rec in killer(h):
            h.add(rec)
    h.s3(15)
    h.roll()
    segs = h.j._state.segments
    assert h.first in segs and h.j._compactor.find_run(h.j.segment_numbers()[-1])[0] > h.first
    unread, read = h.compact()
    assert h.first in h.j.segment_numbers()  # (not part of the run: the rule is about it)
    if killer is None:
        assert unread >= 2 and read == 0
    else:
        assert unread == 0 and read > 0
    h.restart_matches()


def test_a_run_with_a_live_message_is_read(tmp_path):
    h = History(tmp_path)
    h.add(fmt.QueueDeclare("/", "q", 2, b""))
    h.roll()
    h.compact()
    h.s3(10)
    survivor = h.msg()  # never acked: its segment is mostly dead, not all dead
    h.s3(10)
    h.roll()
    unread, read = h.compact()
    assert unread == 0 and read > 0
    assert survivor in h.j._state.msgs
    h.restart_matches()


def test_a_batched_backlog_counts_in_max_pub(tmp_path):
    """The journal thread applies a batch's PUBLISH records of one route in one step
    (``publish_run``): the segment's ``max_pub`` still covers them, and the older segment
    holding them blocks the shortcut for a run that acks them."""
    h = History(tmp_path)
    h.add(fmt.QueueDeclare("/", "q", 2, b""))
    h.add(fmt.QueueDeclare("/", "keep", 2, b""))
    recs = [publish(i, ["keep"], b"x" * 40) for i in range(1, 41)]
    for r in recs:
        h.j.append_publish(r.encode(), r.msg_id, "/", ("keep",))
        h.d.model.apply(r)
    h.next_id = 41
    barrier(h.j)
    h.j._state.check()
    first = h.j.segment_numbers()[0]
    assert h.j._state.segments[first].max_pub == 40
    h.roll()
    h.s3(10)
    h.add(fmt.Ack("/", "keep", (40,)))  # dead now; its PUBLISH stays on disk before the run
    h.s3(10)
    h.roll()
    unread, read = h.compact()
    assert unread == 0 and read > 0 and first in h.j.segment_numbers()
    h.restart_matches()


def test_a_real_broker_deletes_s3_segments_unread(brokers_on_dir):
    """pika, S3-like (publish confirmed, get, ack, one at a time) on small segments: the
    journal thread deletes the closed segments unread, while a message of another queue
    stays live in the oldest segment; a restart gives that message back and nothing else."""
    start, restart = brokers_on_dir
    b = start("--journal-segment-bytes", str(64 * 1024))
    body = b"s" * 1000
    persistent = pika.BasicProperties(delivery_mode=2)
    with connection(b.port) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("keeper", durable=True)
        ch.queue_declare("s3", durable=True)
        ch.basic_publish("", "keeper", b"kept", persistent)
        for _ in range(400):  # ~6 segments
            ch.basic_publish("", "s3", body, persistent)
            method, _props, data = ch.basic_get("s3")
            assert data == body
            ch.basic_ack(method.delivery_tag)
        b.wait_for_log("dead segment(s) unread")
        assert ch.queue_declare("s3", passive=True).method.message_count == 0
    assert b.stop() == 0
    b2 = restart(b)
    with connection(b2.port) as conn:
        ch = conn.channel()
        assert ch.queue_declare("s3", passive=True).method.message_count == 0
        method, _props, data = ch.basic_get("keeper", auto_ack=True)
        assert data == b"kept"
        assert ch.queue_declare("keeper", passive=True).method.message_count == 0
