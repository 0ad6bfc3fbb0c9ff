"""Runtime-parameter records in the journal (PARAM_SET/CLEAR, GLOBAL_SET/CLEAR): format,
recovery and compaction against the reference model (``journal/model.py``)."""

from __future__ import annotations

import random

import pytest
from journal_helpers import barrier, open_journal

from syncmq.journal import format as fmt
from syncmq.journal.model import Model, snapshot

RECORDS = [
    fmt.ParamSet("/", "policy", "p1", b'{"pattern":"^a"}'),
    fmt.ParamSet("vh-\u00e9", "shovel", "s", b"{}"),
    fmt.ParamClear("/", "policy", "p1"),
    fmt.GlobalSet("cluster_name", b'"x"'),
    fmt.GlobalClear("cluster_name"),
]


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip(rec):
    data = rec.encode()
    assert fmt.check_record(data) == rec.TYPE
    assert fmt.decode_record(data) == rec
    with pytest.raises(fmt.FormatError):
        fmt.decode_payload(rec.TYPE, data[fmt.RECORD_HEADER.size:-1])


def _recover(path):
    j, rec = open_journal(path, start=False)
    j._state.check()
    j.close()
    return rec


def _add(j, model, rec):
    j.append(rec.encode())
    model.apply(rec)


def test_set_replace_clear_and_vhost_delete_recover(tmp_path):
    j, _ = open_journal(tmp_path)
    m = Model()
    for rec in [
        fmt.ParamSet("/", "policy", "a", b"1"), fmt.ParamSet("/", "policy", "a", b"2"),
        fmt.ParamSet("/", "vhost-limits", "limits", b"{}"),
        fmt.ParamSet("doomed", "policy", "a", b"3"), fmt.VhostDelete("doomed"),
        fmt.ParamSet("/", "shovel", "gone", b"4"), fmt.ParamClear("/", "shovel", "gone"),
        fmt.GlobalSet("g", b'"v1"'), fmt.GlobalSet("g", b'"v2"'), fmt.GlobalSet("h", b"0"),
        fmt.GlobalClear("h"),
    ]:
        _add(j, m, rec)
    barrier(j)
    j.close()
    rec = _recover(tmp_path)
    assert sorted(rec.parameters) == [fmt.ParamSet("/", "policy", "a", b"2"),
                                      fmt.ParamSet("/", "vhost-limits", "limits", b"{}")]
    assert rec.global_parameters == [fmt.GlobalSet("g", b'"v2"')]
    assert snapshot(rec) == m.snapshot()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compaction_keeps_the_last_value_and_the_clears(tmp_path, seed):
    """Random sets, re-sets and clears among message churn, compacted repeatedly: recovery
    always gives the model's parameters (a dropped old set never comes back, a clear is
    kept while a set of its parameter is still on disk before it)."""
    rnd = random.Random(seed)
    j, _ = open_journal(tmp_path, segment_bytes=4096, auto_compact=False)
    m = Model()
    _add(j, m, fmt.QueueDeclare("/", "q", 0, b""))
    names = [f"n{i}" for i in range(6)]
    mid = 0
    for step in range(600):
        r = rnd.random()
        if r < 0.3:
            _add(j, m, fmt.ParamSet(rnd.choice(["/", "v2"]), rnd.choice(["policy", "shovel"]),
                                    rnd.choice(names), b'{"n":%d}' % step))
        elif r < 0.4:
            _add(j, m, fmt.ParamClear(rnd.choice(["/", "v2"]), rnd.choice(["policy", "shovel"]),
                                      rnd.choice(names)))
        elif r < 0.5:
            _add(j, m, fmt.GlobalSet(rnd.choice(names), b"%d" % step))
        elif r < 0.55:
            _add(j, m, fmt.GlobalClear(rnd.choice(names)))
        elif r < 0.57:
            _add(j, m, fmt.VhostDelete("v2"))
        else:  # churn: fills segments with dead bytes
            mid += 1
            _add(j, m, fmt.Publish(mid, "/", ("q",), "", "k", b"", b"x" * 300))
            _add(j, m, fmt.Ack("/", "q", (mid,)))
        if step % 150 == 149:
            barrier(j)
            j.compact()
            j._state.check()
    barrier(j)
    j.compact()
    j.close()
    rec = _recover(tmp_path)
    assert snapshot(rec) == m.snapshot()
    assert m.params and m.globals  # the workload left something to recover


def test_clear_kept_while_its_set_is_in_an_older_segment(tmp_path):
    """A clear in a dead segment survives compaction while the set it clears is in an older
    segment that is not rewritten (mostly live); the parameter never comes back."""
    j, _ = open_journal(tmp_path, segment_bytes=4096, auto_compact=False)
    m = Model()
    _add(j, m, fmt.QueueDeclare("/", "keep", 0, b""))
    _add(j, m, fmt.ParamSet("/", "policy", "p", b"{}"))
    _add(j, m, fmt.GlobalSet("g", b"1"))
    for i in range(1, 8):  # segment 1: mostly live messages
        _add(j, m, fmt.Publish(i, "/", ("keep",), "", "", b"", b"k" * 400))
    barrier(j)
    for i in range(100, 130):  # later segments: churn, plus the clears
        _add(j, m, fmt.Publish(i, "/", ("keep",), "", "", b"", b"c" * 300))
        _add(j, m, fmt.Ack("/", "keep", (i,)))
        if i == 110:
            _add(j, m, fmt.ParamClear("/", "policy", "p"))
            _add(j, m, fmt.GlobalClear("g"))
    barrier(j)
    first = j.segment_numbers()[0]
    j.compact()
    assert first in j.segment_numbers()
    j.close()
    rec = _recover(tmp_path)
    assert rec.parameters == [] and rec.global_parameters == []
    assert snapshot(rec) == m.snapshot()


def test_resetting_a_parameter_does_not_grow_the_journal(tmp_path):
    """Only the last set of a parameter is live: 2,000 re-sets of one parameter compact to
    about one record (a value is replaced whole, unlike a re-declare)."""
    j, _ = open_journal(tmp_path, segment_bytes=8192, auto_compact=False)
    for i in range(2000):
        j.append(fmt.ParamSet("/", "policy", "p", b'{"v":"%06d"}' % i).encode())
        j.append(fmt.GlobalSet("g", b'"%06d"' % i).encode())
    barrier(j)
    j.compact()
    j._state.check()
    usage = j.disk_usage()
    j.close()
    assert usage < 3 * 8192, usage
    rec = _recover(tmp_path)
    assert rec.parameters == [fmt.ParamSet("/", "policy", "p", b'{"v":"001999"}')]
    assert rec.global_parameters == [fmt.GlobalSet("g", b'"001999"')]
