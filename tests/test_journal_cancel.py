"""Write cancel (issue #22): a PUBLISH whose message was acked on every queue of its route
within the batch that holds it is not written, nor are its ACK and DELIVERED ids; the
journal's liveness state never hears of it, and recovery has nothing to replay."""

from __future__ import annotations

from journal_helpers import barrier, open_journal
from test_journal_coalesce import Gate, publish, records_on_disk, recover

from syncmq.journal import format as fmt
from syncmq.journal.model import snapshot


def _declare(j, *names):
    for n in names:
        j.append(fmt.encode_queue_declare("/", n, 1))
    barrier(j)


def _ids(recs, kind):
    return [(r.queue, r.msg_ids) for r in recs if isinstance(r, kind)]


def test_a_publish_acked_on_every_queue_in_its_batch_is_not_written(tmp_path):
    j, _ = open_journal(tmp_path)
    _declare(j, "q", "r")
    gate = Gate(j)  # everything below lands in one batch
    publish(j, 1)  # q only: delivered and acked -> cancelled
    j.append_ids(fmt.T_DELIVERED, "/", "q", (1,))
    j.append_ids(fmt.T_ACK, "/", "q", [1])
    publish(j, 2, ("q", "r"))  # acked on q only -> written, with its ack
    j.append_ids(fmt.T_DELIVERED, "/", "q", (2,))
    j.append_ids(fmt.T_ACK, "/", "q", [2])
    publish(j, 3, ("q", "r"))  # acked on both -> cancelled
    j.append_ids(fmt.T_ACK, "/", "r", [3])
    j.append_ids(fmt.T_ACK, "/", "q", [3])
    publish(j, 4)  # not acked -> written
    j.append_ids(fmt.T_DELIVERED, "/", "q", (4,))
    gate.release.set()
    barrier(j)
    assert j.metrics.cancelled == 2
    j._state.check()
    assert 1 not in j._state.msgs and 3 not in j._state.msgs and 2 in j._state.msgs
    j.close()
    recs = records_on_disk(tmp_path)
    assert [r.msg_id for r in recs if isinstance(r, fmt.Publish)] == [2, 4]
    assert _ids(recs, fmt.Ack) == [("q", (2,))]
    # 2's DELIVERED on q is not written either: acked on q in the same batch
    # (items.hold_delivered); 4's is held a batch, then written by the clean close
    assert _ids(recs, fmt.Delivered) == [("q", (4,))]
    st = snapshot(recover(tmp_path))
    assert [m[0] for m in st["queues"][("/", "q")][2]] == [4]
    assert [m[0] for m in st["queues"][("/", "r")][2]] == [2]


def test_a_run_whose_ids_came_out_of_order_is_still_cancelled(tmp_path):
    """Two publishers take their ids outside the journal's lock, so one run of a route may
    hold them out of order ([11, 10]): an ack of the smaller one in the batch still cancels
    it (the run is not skipped for its first id being above every acked one)."""
    j, _ = open_journal(tmp_path)
    _declare(j, "q")
    gate = Gate(j)
    publish(j, 11)
    publish(j, 10)
    assert j._pending[-1].head[0] == [11, 10]  # one run item
    j.append_ids(fmt.T_ACK, "/", "q", [10])
    gate.release.set()
    barrier(j)
    assert j.metrics.cancelled == 1
    j._state.check()
    j.close()
    recs = records_on_disk(tmp_path)
    assert [r.msg_id for r in recs if isinstance(r, fmt.Publish)] == [11]
    assert [m[0] for m in snapshot(recover(tmp_path))["queues"][("/", "q")][2]] == [11]


def test_an_ack_in_a_later_batch_cancels_nothing(tmp_path):
    """The PUBLISH was written in an earlier batch: its ACK is written as usual."""
    j, _ = open_journal(tmp_path)
    _declare(j, "q")
    publish(j, 1)
    publish(j, 2)
    barrier(j)
    j.append_ids(fmt.T_ACK, "/", "q", [1])
    barrier(j)
    assert j.metrics.cancelled == 0
    j.close()
    recs = records_on_disk(tmp_path)
    assert [r.msg_id for r in recs if isinstance(r, fmt.Publish)] == [1, 2]
    assert _ids(recs, fmt.Ack) == [("q", (1,))]
    assert [m[0] for m in snapshot(recover(tmp_path))["queues"][("/", "q")][2]] == [2]


def test_transactions_are_left_as_they_are(tmp_path):
    """A tx unit's PUBLISH is written even with its ACK in the same batch."""
    j, _ = open_journal(tmp_path)
    _declare(j, "q")
    gate = Gate(j)
    j.append_unit([fmt.encode_publish(1, "/", ("q",), "", "rk", b"\x90\x00", b"x")])
    j.append_ids(fmt.T_ACK, "/", "q", [1])
    gate.release.set()
    barrier(j)
    assert j.metrics.cancelled == 0
    j.close()
    recs = records_on_disk(tmp_path)
    assert [r.msg_id for r in recs if isinstance(r, fmt.Publish)] == [1]
    assert snapshot(recover(tmp_path))["queues"][("/", "q")][2] == []
