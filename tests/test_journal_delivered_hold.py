"""DELIVERED ids wait one batch (``items.hold_delivered``, issue #22 S3): a DELIVERED id
whose ACK on the same queue comes in that batch or the next is never written; the others
are, at the latest by a clean close, so that after a clean stop recovery still flags every
delivered message ``redelivered`` (after an unclean stop every message is flagged anyway)."""

from __future__ import annotations

from journal_helpers import barrier, open_journal
from test_journal_coalesce import Gate, publish, records_on_disk, recover

from syncmq.journal import format as fmt
from syncmq.journal.items import hold_delivered
from syncmq.journal.model import snapshot

D, A = fmt.T_DELIVERED, fmt.T_ACK


def _delivered(path):
    return [(r.queue, r.msg_ids) for r in records_on_disk(path) if isinstance(r, fmt.Delivered)]


def _flags(path, queue="q"):
    return [(m[0], m[5]) for m in snapshot(recover(path))["queues"][("/", queue)][2]]


def _declared(tmp_path, *names):
    j, _ = open_journal(tmp_path)
    for n in names:
        j.append(fmt.encode_queue_declare("/", n, 1))
    barrier(j)
    return j


def test_a_delivery_acked_in_the_next_batch_writes_no_delivered(tmp_path):
    j = _declared(tmp_path, "q")
    for mid in (1, 2, 3):
        publish(j, mid)
    barrier(j)
    j.append_ids(D, "/", "q", [1, 2, 3])
    barrier(j)  # batch k: the DELIVERED ids are held
    assert _delivered(tmp_path) == []
    j.append_ids(A, "/", "q", [1, 3])
    barrier(j)  # batch k+1: 1 and 3 acked, 2 written
    assert _delivered(tmp_path) == [("q", (2,))]
    j.close()
    assert _delivered(tmp_path) == [("q", (2,))]
    assert _flags(tmp_path) == [(2, True)]


def test_held_ids_are_written_by_a_clean_close(tmp_path):
    """An idle journal keeps the last batch's DELIVERED ids in memory (the barrier of their
    own batch does not write them); close writes them before its final fsync and the CLEAN
    marker."""
    j = _declared(tmp_path, "q")
    publish(j, 1)
    publish(j, 2)
    barrier(j)
    j.append_ids(D, "/", "q", [1, 2])
    barrier(j)
    assert _delivered(tmp_path) == []
    j.close()
    assert _delivered(tmp_path) == [("q", (1, 2))]
    assert _flags(tmp_path) == [(1, True), (2, True)]


def test_an_ack_on_another_queue_does_not_drop_a_delivered(tmp_path):
    j = _declared(tmp_path, "q", "r")
    publish(j, 1, ("q", "r"))
    barrier(j)
    gate = Gate(j)
    j.append_ids(D, "/", "q", [1])
    j.append_ids(A, "/", "r", [1])  # acked on r only: still on q, delivered there
    gate.release.set()
    barrier(j)
    j.close()
    assert _delivered(tmp_path) == [("q", (1,))]
    assert _flags(tmp_path) == [(1, True)]


def test_hold_delivered_splits_and_filters():
    held = {(D, "/", "q"): [1, 2, 3], (D, "/", "r"): [4]}
    ids = {(A, "/", "q"): [2, 7], (D, "/", "q"): [6, 7, 8], (A, "/", "s"): [9]}
    out, keep = hold_delivered(held, ids, flush=False)
    assert out == {(A, "/", "q"): [2, 7], (A, "/", "s"): [9], (D, "/", "q"): [1, 3],
                   (D, "/", "r"): [4]}
    assert keep == {(D, "/", "q"): [6, 8]}
    out, keep = hold_delivered(keep, {(D, "/", "q"): [10]}, flush=True)
    assert out == {(D, "/", "q"): [6, 8, 10]} and keep == {}
    out, keep = hold_delivered({}, {(D, "/", "q"): [5], (A, "/", "q"): [5]}, flush=False)
    assert out == {(A, "/", "q"): [5]} and keep == {}
