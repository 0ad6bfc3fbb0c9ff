"""The journal's hot-path entry points: coalesced ACK/DELIVERED ids (``append_ids``) and
pre-decoded PUBLISH records (``append_publish``), and the writer's apply-after-callbacks."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from journal_helpers import barrier, open_journal

from syncmq.journal import Journal, JournalFailed
from syncmq.journal import format as fmt
from syncmq.journal.model import snapshot


def recover(path: Path):
    j, rec = open_journal(path, start=False)
    j._state.check()
    j.close()
    return rec


def records_on_disk(path: Path) -> list[fmt.Record]:
    out = []
    for name in sorted(p.name for p in path.iterdir() if p.suffix == ".seg"):
        data = (path / name).read_bytes()
        out.extend(fmt.decode_record(data[off:off + n])
                   for off, n in _spans(data))
    return out


def _spans(data: bytes):
    pos = fmt.FILE_HEADER.size
    while pos < len(data):
        length = fmt.RECORD_HEADER.unpack_from(data, pos)[0]
        n = fmt.RECORD_HEADER.size + length
        yield pos, n
        pos += n


def publish(j: Journal, mid: int, queues=("q",), body: bytes | None = None) -> None:
    body = b"body-%d" % mid if body is None else body
    j.append_publish(fmt.encode_publish(mid, "/", queues, "", "rk", b"\x90\x00", body),
                     mid, "/", tuple(queues))


class Gate:
    """Holds the journal thread inside a callback until released, so that what is appended
    meanwhile lands in one batch."""

    def __init__(self, j: Journal) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        j.append(fmt.encode_vhost_add("gate"), self._cb)
        assert self.entered.wait(30)

    def _cb(self, err) -> None:
        self.entered.set()
        self.release.wait(30)


def _messages(j) -> dict:
    """Each live message's (segment, offset, size, queues) in ``j``'s state."""
    return {mid: (m.seg, m.off, m.size, sorted(m.queues)) for mid, m in j._state.msgs.items()}


def _segments(j) -> dict:
    return {no: (s.size, s.live) for no, s in j._state.segments.items()}


def _close_and_match_recovery(j, path) -> None:
    """``j``'s state passes its check, and recovery of ``path`` after a close rebuilds the
    same messages and segments."""
    live, sizes = _messages(j), _segments(j)
    j._state.check()
    j.close()
    j2, _ = open_journal(path, start=False)
    assert _messages(j2) == live
    assert _segments(j2) == sizes
    j2.close()


def test_ids_of_one_batch_are_one_record_after_the_batch(tmp_path):
    j, _ = open_journal(tmp_path)
    j.append(fmt.encode_queue_declare("/", "q", 1))
    j.append(fmt.encode_queue_declare("/", "r", 1))
    barrier(j)
    gate = Gate(j)
    for mid in range(1, 11):
        publish(j, mid, ("q", "r"))
        j.append_ids(fmt.T_DELIVERED, "/", "q", (mid,))
        if mid % 2:
            j.append_ids(fmt.T_ACK, "/", "q", [mid])
    j.append_ids(fmt.T_ACK, "/", "r", [2, 4, 6])  # (none acked on both: no write cancel)
    publish(j, 11)  # appended after the ids: still written before them
    gate.release.set()
    barrier(j)
    j.close()
    recs = records_on_disk(tmp_path)
    tail = recs[-3:]
    # the DELIVERED ids wait a batch (items.hold_delivered): those acked on q meanwhile are
    # never written, the rest come with the close
    assert tail == [fmt.Ack("/", "q", (1, 3, 5, 7, 9)),
                    fmt.Ack("/", "r", (2, 4, 6)),
                    fmt.Delivered("/", "q", (2, 4, 6, 8, 10))]
    assert [r.msg_id for r in recs if isinstance(r, fmt.Publish)] == list(range(1, 12))
    st = snapshot(recover(tmp_path))
    assert [(m[0], m[5]) for m in st["queues"][("/", "q")][2]] == \
        [(2, True), (4, True), (6, True), (8, True), (10, True), (11, False)]
    assert [m[0] for m in st["queues"][("/", "r")][2]] == [1, 3, 5, 7, 8, 9, 10]


def test_ids_appended_while_the_journal_thread_takes_a_batch_go_in_the_next(
        tmp_path, monkeypatch):
    """The journal thread reads the ids it took after releasing ``_lock``: they must be a
    dict of its own even when none were queued. Once it kept the live (empty) dict, an
    ``append_ids`` landing between the take and the encode went into the batch it was
    encoding while a worker grew it ("dictionary changed size during iteration": the journal
    failed, every persistent publish refused until restart, seen in S3 at 0.10.0-dev), and
    the same ids were written again by the next batch. Here the append is made to land in
    exactly that window, from another thread."""
    j, _ = open_journal(tmp_path)
    j.append(fmt.encode_queue_declare("/", "q", 1))
    publish(j, 1)
    publish(j, 2)
    barrier(j)
    appended = threading.Event()
    take = Journal._take_batch_locked
    armed = [True]

    class Items(list):
        def __bool__(self) -> bool:  # (read by the journal thread once the lock is free)
            appended.wait(30)
            return len(self) > 0

    def append_now() -> None:
        j.append_ids(fmt.T_DELIVERED, "/", "q", [1, 2])
        appended.set()

    def take_and_race(self):
        items, ids = take(self)
        if armed[0] and items and not ids:
            armed[0] = False
            threading.Thread(target=append_now).start()  # (blocks until the lock is free)
            return Items(items), ids
        return items, ids

    monkeypatch.setattr(Journal, "_take_batch_locked", take_and_race)
    j.append(fmt.encode_vhost_add("v"))
    assert appended.wait(30)
    barrier(j)
    j.close()
    delivered = [r for r in records_on_disk(tmp_path) if isinstance(r, fmt.Delivered)]
    assert delivered == [fmt.Delivered("/", "q", (1, 2))]


def test_ids_are_covered_by_a_later_barrier(tmp_path):
    """A barrier appended after ids fires only once they are written (and fsynced)."""
    j, _ = open_journal(tmp_path)
    j.append(fmt.encode_queue_declare("/", "q", 1))
    for mid in range(1, 6):
        publish(j, mid)
    barrier(j)
    j.append_ids(fmt.T_ACK, "/", "q", [1, 2])
    barrier(j)
    # the journal is still open: what a kill -9 now would leave on disk
    on_disk = records_on_disk(tmp_path)
    assert fmt.Ack("/", "q", (1, 2)) in on_disk
    j.close()
    assert [m[0] for m in snapshot(recover(tmp_path))["queues"][("/", "q")][2]] == [3, 4, 5]


def test_ids_without_a_barrier_are_written_promptly_and_on_close(tmp_path):
    j, _ = open_journal(tmp_path)
    j.append(fmt.encode_queue_declare("/", "q", 1))
    publish(j, 1)
    publish(j, 2)
    barrier(j)
    j.append_ids(fmt.T_ACK, "/", "q", [1])
    j.close()
    assert [m[0] for m in snapshot(recover(tmp_path))["queues"][("/", "q")][2]] == [2]


def test_ids_in_always_mode_are_one_record_per_call(tmp_path):
    j, _ = open_journal(tmp_path, fsync="always")
    j.append(fmt.encode_queue_declare("/", "q", 1))
    for mid in (1, 2, 3):
        publish(j, mid)
    j.append_ids(fmt.T_ACK, "/", "q", [1])
    j.append_ids(fmt.T_ACK, "/", "q", [2])
    j.append_ids(fmt.T_ACK, "/", "q", [])
    barrier(j)
    j.close()
    acks = [r for r in records_on_disk(tmp_path) if isinstance(r, fmt.Ack)]
    assert acks == [fmt.Ack("/", "q", (1,)), fmt.Ack("/", "q", (2,))]


def test_append_ids_refuses_other_types_and_a_failed_journal(tmp_path):
    j, _ = open_journal(tmp_path)
    with pytest.raises(fmt.FormatError):
        j.append_ids(fmt.T_PUBLISH, "/", "q", [1])
    j._error = OSError(28, "No space left on device")  # the failed state, as _fail leaves it
    with pytest.raises(JournalFailed):
        j.append_ids(fmt.T_ACK, "/", "q", [1])
    j._error = None
    j.close()


def test_append_publish_state_matches_a_decoded_publish(tmp_path):
    """The writer's state after pre-decoded PUBLISH records equals the one recovery builds
    from the same bytes (the invariants of JournalState.check included)."""
    j, _ = open_journal(tmp_path, segment_bytes=4096, auto_compact=False)
    j.append(fmt.encode_queue_declare("/", "q", 1))
    j.append(fmt.encode_queue_declare("/", "r", 1))
    for mid in range(1, 40):  # rolls segments on the way
        publish(j, mid, ("q", "r") if mid % 3 else ("q",), body=bytes(300))
        if mid % 4 == 0:
            j.append_ids(fmt.T_ACK, "/", "q", [mid - 1])
    barrier(j)
    _close_and_match_recovery(j, tmp_path)


def test_a_run_of_publishes_that_rolls_segments_matches_recovery(tmp_path):
    """One publisher's run of PUBLISH records in one batch (one run item of
    ``append_publish``) crossing several segment rolls: every record is applied with its own
    segment and offset, as recovery finds them."""
    j, _ = open_journal(tmp_path, segment_bytes=4096, auto_compact=False)
    j.append(fmt.encode_queue_declare("/", "q", 1))
    barrier(j)
    gate = Gate(j)
    for mid in range(1, 41):  # ~13 records a segment: the run rolls three times
        publish(j, mid, ("q",), body=bytes(300))
    assert len(j._pending) == 1 and len(j._pending[0].records) == 40  # one run item
    gate.release.set()
    barrier(j)
    live = _messages(j)
    assert len(live) == 40 and len({v[0] for v in live.values()}) >= 3
    _close_and_match_recovery(j, tmp_path)
