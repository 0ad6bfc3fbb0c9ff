"""Hypothesis: the journal (with restarts and compaction) recovers exactly what a model says,
and garbage after the last good record never breaks recovery of what came before it."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from syncmq.journal import Journal
from syncmq.journal import format as fmt
from syncmq.journal.model import Model, snapshot

SETTINGS = settings(
    max_examples=int(os.environ.get("SYNCMQ_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VHOSTS = st.sampled_from(["/", "v1"])
QUEUES = st.sampled_from(["q0", "q1", "q2"])
EXCHANGES = st.sampled_from(["x0", "x1"])
PICKS = st.lists(st.integers(0, 10_000), min_size=1, max_size=4)

_STRATEGIES = {
    "declare_q": st.tuples(st.just("declare_q"), VHOSTS, QUEUES, st.integers(0, 3)),
    "delete_q": st.tuples(st.just("delete_q"), VHOSTS, QUEUES),
    "purge": st.tuples(st.just("purge"), VHOSTS, QUEUES),
    "declare_x": st.tuples(st.just("declare_x"), VHOSTS, EXCHANGES, st.integers(0, 1)),
    "delete_x": st.tuples(st.just("delete_x"), VHOSTS, EXCHANGES),
    "bind": st.tuples(st.just("bind"), VHOSTS, EXCHANGES, QUEUES, st.sampled_from(["a", "b"])),
    "unbind": st.tuples(st.just("unbind"), VHOSTS, EXCHANGES, QUEUES,
                        st.sampled_from(["a", "b"])),
    "bind_x": st.tuples(st.just("bind_x"), VHOSTS, EXCHANGES, EXCHANGES),
    "vhost_add": st.tuples(st.just("vhost_add"), VHOSTS),
    "vhost_delete": st.tuples(st.just("vhost_delete"), VHOSTS),
    "publish": st.tuples(st.just("publish"), VHOSTS, st.lists(QUEUES, min_size=1, max_size=3),
                         st.integers(0, 400)),
    "ack": st.tuples(st.just("ack"), VHOSTS, QUEUES, PICKS),
    "ack_many": st.tuples(st.just("ack_many"), VHOSTS, QUEUES, st.integers(0, 10_000),
                          st.integers(1, 40)),
    "delivered": st.tuples(st.just("delivered"), VHOSTS, QUEUES, PICKS),
    # the last few ids published (an S3-like consumer acking at once): the segments of such
    # a history hold ACKs of their own messages only, compaction's dead runs (deleted unread)
    "ack_recent": st.tuples(st.just("ack_recent"), VHOSTS, QUEUES, st.integers(1, 8)),
    # DELIVERED_RUNS: runs (first pick, length) over the ids published so far (and past them)
    "delivered_runs": st.tuples(st.just("delivered_runs"), VHOSTS, QUEUES,
                                st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 60)),
                                         min_size=1, max_size=3)),
    "param_set": st.tuples(st.just("param_set"), VHOSTS, st.sampled_from(["policy", "shovel"]),
                           st.sampled_from(["p0", "p1"]), st.integers(0, 300)),
    "param_clear": st.tuples(st.just("param_clear"), VHOSTS, st.sampled_from(["policy", "shovel"]),
                             st.sampled_from(["p0", "p1"])),
    "global_set": st.tuples(st.just("global_set"), st.sampled_from(["g0", "g1"]),
                            st.integers(0, 300)),
    "global_clear": st.tuples(st.just("global_clear"), st.sampled_from(["g0", "g1"])),
    "compact": st.tuples(st.just("compact")),
    "restart": st.tuples(st.just("restart")),
    # wait for a sync barrier: a batch boundary (DELIVERED ids held over it, items.hold_delivered)
    "barrier": st.tuples(st.just("barrier")),
}
# publishes and acks dominate, as in a broker; the rest keep the entity rules busy
_KINDS = ["publish"] * 12 + ["ack"] * 6 + ["ack_many"] * 3 + ["ack_recent"] * 4 + [
    "declare_q"] * 3 + ["delivered"] * 3 + ["delivered_runs"] * 2 + ["barrier"] * 3 + [
    k for k in _STRATEGIES
    if k not in ("publish", "ack", "ack_many", "ack_recent", "declare_q", "delivered",
                 "delivered_runs", "barrier")]
OPS = st.sampled_from(_KINDS).flatmap(_STRATEGIES.__getitem__)


def to_record(op: tuple, ids: list[int]) -> fmt.Record | None:
    kind = op[0]
    if kind == "declare_q":
        return fmt.QueueDeclare(op[1], op[2], op[3], b"a%d" % op[3])
    if kind == "delete_q":
        return fmt.QueueDelete(op[1], op[2])
    if kind == "purge":
        return fmt.QueuePurge(op[1], op[2])
    if kind == "declare_x":
        return fmt.ExchangeDeclare(op[1], op[2], ["direct", "topic"][op[3]], op[3], b"")
    if kind == "delete_x":
        return fmt.ExchangeDelete(op[1], op[2])
    if kind == "bind":
        return fmt.BindingAdd(op[1], op[2], op[3], fmt.DEST_QUEUE, op[4], b"")
    if kind == "unbind":
        return fmt.BindingRemove(op[1], op[2], op[3], fmt.DEST_QUEUE, op[4], b"")
    if kind == "bind_x":
        return fmt.BindingAdd(op[1], op[2], op[3], fmt.DEST_EXCHANGE, "", b"")
    if kind == "vhost_add":
        return fmt.VhostAdd(op[1])
    if kind == "vhost_delete":
        return fmt.VhostDelete(op[1])
    if kind == "param_set":
        return fmt.ParamSet(op[1], op[2], op[3], b'"%s"' % (b"v" * op[4]))
    if kind == "param_clear":
        return fmt.ParamClear(op[1], op[2], op[3])
    if kind == "global_set":
        return fmt.GlobalSet(op[1], b"%d" % op[2])
    if kind == "global_clear":
        return fmt.GlobalClear(op[1])
    if kind == "publish":
        mid = len(ids) + 1
        ids.append(mid)
        return fmt.Publish(mid, op[1], tuple(op[2]), "x", f"r{mid}", b"p", b"%d|" % mid * 1
                           + b"." * op[3])
    if kind == "ack_many":
        if not ids:
            return None
        first = op[3] % len(ids)
        return fmt.Ack(op[1], op[2], tuple(ids[first : first + op[4]]))
    if kind == "ack_recent":
        return fmt.Ack(op[1], op[2], tuple(ids[-op[3]:])) if ids else None
    if kind == "delivered_runs":
        if not ids:
            return None
        return fmt.DeliveredRuns(op[1], op[2], tuple((ids[a % len(ids)], n) for a, n in op[3]))
    if kind in ("ack", "delivered"):
        if not ids:
            return None
        picked = tuple(dict.fromkeys(ids[p % len(ids)] for p in op[3]))
        cls = fmt.Ack if kind == "ack" else fmt.Delivered
        return cls(op[1], op[2], picked)
    raise AssertionError(kind)


def start(path: Path, threshold: float) -> tuple[Journal, dict]:
    j = Journal(path, fsync="never", segment_bytes=1024, compact_threshold=threshold,
                compact_step_bytes=512)
    j.open()
    rec = j.recover()
    j._state.check()
    j.start()
    return j, snapshot(rec)


def barrier(j: Journal) -> None:
    ev = threading.Event()
    j.sync_barrier(lambda e: ev.set())
    assert ev.wait(60)


# Compaction drops the highest ids (dead publishes 2..4 and their ACK) and nothing else on
# disk names them: recovery must still report next_msg_id 5 (it said 3: ids reused).
_IDS_COMPACTED_AWAY = [("declare_q", "/", "q0", 0)] + [
    ("publish", "/", ["q0"], 400)] * 4 + [("ack_many", "/", "q0", 1, 3)] + [
    ("declare_x", "/", "x0", 0), ("delete_x", "/", "x0")] * 30 + [("compact",), ("restart",)]


@SETTINGS
@given(ops=st.lists(OPS, min_size=20, max_size=250), threshold=st.sampled_from([0.3, 0.5, 0.95]),
       via_ids=st.booleans())
@example(ops=_IDS_COMPACTED_AWAY, threshold=0.5, via_ids=False)
def test_random_operations_recover_like_the_model(ops, threshold, via_ids):
    """``via_ids``: ACK and DELIVERED go through ``Journal.append_ids`` as the broker's do
    (coalesced per batch, DELIVERED held a batch and dropped when acked meanwhile: they move
    later in the log, which must not change what recovery gives)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)
        model = Model()
        ids: list[int] = []
        j, recovered = start(path, threshold)
        assert recovered == model.snapshot()
        try:
            for op in ops:
                if op[0] == "compact":
                    barrier(j)
                    j.compact()
                elif op[0] == "barrier":
                    barrier(j)
                elif op[0] == "restart":
                    j.close()
                    assert j.metrics.internal_errors == 0
                    j, recovered = start(path, threshold)
                    assert recovered == model.snapshot()
                else:
                    rec = to_record(op, ids)
                    if rec is None:
                        continue
                    if via_ids and isinstance(rec, (fmt.Ack, fmt.Delivered)):
                        j.append_ids(rec.TYPE, rec.vhost, rec.queue, rec.msg_ids)
                    else:
                        j.append(rec.encode())
                    model.apply(rec)
        finally:
            j.close()
        assert j.metrics.internal_errors == 0
        j = Journal(path, segment_bytes=1024, compact_threshold=threshold)
        j.open()
        rec = j.recover()
        j._state.check()
        assert snapshot(rec) == model.snapshot()
        assert rec.next_msg_id > model.max_id
        # a full compaction of what is left changes nothing either
        j.compact()
        j._state.check()
        j.close()
        j = Journal(path)
        j.open()
        again = j.recover()
        j.close()
        assert snapshot(again) == model.snapshot()


@SETTINGS
@given(ops=st.lists(OPS.filter(lambda o: o[0] not in ("compact", "restart", "barrier")),
                    max_size=30),
       garbage=st.binary(min_size=1, max_size=300),
       prefix=st.sampled_from([b"", b"\x00\x00\x00\x05", fmt.encode_vhost_add("x")[:-1],
                               b"\x00" * 9]))
def test_garbage_after_the_last_record_never_breaks_recovery(ops, garbage, prefix):
    # a torn record completed by the "garbage" is a valid record, not garbage
    assume(not (prefix + garbage).startswith(fmt.encode_vhost_add("x")))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)
        model = Model()
        ids: list[int] = []
        j, _ = start(path, 0.5)
        try:
            for op in ops:
                rec = to_record(op, ids)
                if rec is not None:
                    j.append(rec.encode())
                    model.apply(rec)
        finally:
            j.close()
        last = max(j.segment_numbers())
        seg = path / fmt.segment_name(last)
        good_size = seg.stat().st_size
        with open(seg, "ab") as f:
            f.write(prefix + garbage)
        j = Journal(path)
        j.open()
        rec = j.recover()
        j.close()
        assert snapshot(rec) == model.snapshot()
        assert seg.stat().st_size == good_size
        j = Journal(path)
        j.open()
        rec2 = j.recover()
        j.close()
        assert rec2.stats.truncated_bytes == 0 and snapshot(rec2) == model.snapshot()
