"""tx.commit is atomic across queues and across a crash (issue #25).

A commit's records are one journal unit (a TX record then its publishes and acks, in one
segment: ``format.py``, "Transactions"); recovery applies a unit whole or not at all. Tested at
the journal (every cut inside a unit drops all of it; compaction drops the markers and keeps
the rest) and end to end (kill -9 while multi-queue commits are in flight: each batch is all
there or absent, and every batch whose commit-ok arrived is there).
"""

from __future__ import annotations

import shutil
import threading

import pika
from amqp_helpers import connect
from brokerproc import BrokerProcess
from journal_helpers import barrier, open_journal

from syncmq.journal import format as fmt

QUEUES = ("ta", "tb", "tc")


def _unit(first: int, n: int) -> list[bytes]:
    return [fmt.encode_publish(first + i, "/", [QUEUES[i % 3]], "", "", b"", b"m%d" % i)
            for i in range(n)] + [fmt.encode_ack("/", "ta", [first])]


def _live(rec) -> set[int]:
    return {m.msg_id for q in rec.queues for m in q.messages}


def test_every_cut_inside_a_unit_drops_all_of_it(tmp_path) -> None:
    src = tmp_path / "src"
    j, _ = open_journal(src)
    for q in QUEUES:
        j.append(fmt.encode_queue_declare("/", q, 1))
    j.append(fmt.encode_publish(1, "/", ["ta"], "", "", b"", b"before"))
    j.append_unit(_unit(100, 9))
    barrier(j)
    j.close()
    (seg,) = sorted(src.glob("*.seg"))
    data = seg.read_bytes()
    records, end, problem = fmt.iter_records(data)
    assert problem is None and end == len(data)
    tx_off = next(off for off, t, _ in records if t == fmt.T_TX)
    whole = set(range(101, 109))  # 100 was acked inside the unit
    for cut in range(tx_off, len(data) + 1, 7):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d, ignore=shutil.ignore_patterns("LOCK", "CLEAN"))
        with open(next(d.glob("*.seg")), "r+b") as f:
            f.truncate(cut)
        j2, rec = open_journal(d, start=False)
        j2.close()
        assert _live(rec) == ({1} | whole if cut == len(data) else {1}), cut
    j3, rec = open_journal(src, start=False)
    j3.close()
    assert _live(rec) == {1} | whole


def test_a_unit_never_spans_segments_and_compaction_drops_its_marker(tmp_path) -> None:
    j, _ = open_journal(tmp_path, segment_bytes=4096, auto_compact=False)
    for q in QUEUES:
        j.append(fmt.encode_queue_declare("/", q, 1))
    for k in range(20):
        j.append_unit(_unit(1000 * (k + 1), 12))
    barrier(j)
    for path in sorted(tmp_path.glob("*.seg")):
        recs, _end, problem = fmt.iter_records(path.read_bytes())
        assert problem is None
        i = 0
        while i < len(recs):  # each TX is followed by all of its records in this file
            if recs[i][1] == fmt.T_TX:
                assert len(recs) - i - 1 >= 13, path
                i += 13
            i += 1
    # ack most of it: compaction rewrites the closed segments without the TX markers
    for k in range(20):
        j.append(fmt.encode_ack("/", QUEUES[1], [1000 * (k + 1) + 1]))
        j.append(fmt.encode_ack("/", QUEUES[0], [1000 * (k + 1) + i for i in range(3, 12, 3)]))
    barrier(j)
    assert j.compact() >= 1
    j.close()
    j2, rec = open_journal(tmp_path, start=False)
    j2.close()
    want = {1000 * (k + 1) + i for k in range(20) for i in (2, 4, 5, 7, 8, 10, 11)}
    assert _live(rec) == want


# ---- end to end ---------------------------------------------------------------------------

BATCH = 150  # messages per commit, spread over the three queues
CYCLES = 10


def _committer(port: int, cycle: int, committed: list[int], started: threading.Event) -> None:
    try:
        ch = connect(port).channel()
        ch.tx_select()
        props = pika.BasicProperties(delivery_mode=2)
        for batch in range(10_000):
            tag = b"%d-%d-" % (cycle, batch)
            for i in range(BATCH):
                ch.basic_publish("tx-fan" if i % 2 else "", QUEUES[i % 3] if i % 2 == 0 else "",
                                 tag + b"%d" % i + b"x" * 900, props)
            ch.tx_commit()
            committed.append(batch)
            started.set()
    except Exception:  # the kill
        return


def test_multi_queue_tx_killed_during_commit_is_all_or_nothing(tmp_path) -> None:
    b = BrokerProcess(str(tmp_path / "data"), "--journal-segment-bytes", str(1 << 20))
    done: dict[str, int] = {}  # cycle-batch -> commit-ok received (1) or not (0)
    for cycle in range(CYCLES):
        b.start()
        if cycle == 0:
            ch = connect(b.port).channel()
            ch.exchange_declare("tx-fan", "fanout", durable=True)
            for q in QUEUES:
                ch.queue_declare(q, durable=True)
                ch.queue_bind(q, "tx-fan")
            ch.connection.close()
        committed: list[int] = []
        started = threading.Event()
        t = threading.Thread(target=_committer, args=(b.port, cycle, committed, started),
                             daemon=True)
        t.start()
        assert started.wait(120), b.log_tail()
        for _k in range(cycle % 3):  # a few more commits, then kill mid-commit
            n = len(committed)
            while len(committed) == n and t.is_alive():
                started.clear()
                started.wait(60)
        b.kill()
        t.join(60)
        for batch in committed:
            done[f"{cycle}-{batch}"] = 1
    b.start()
    counts: dict[str, int] = {}
    ch = connect(b.port).channel()
    for q in QUEUES:
        while True:
            m, _p, body = ch.basic_get(q, auto_ack=True)
            if m is None:
                break
            key = b"-".join(body.split(b"-")[:2]).decode()
            counts[key] = counts.get(key, 0) + 1
    ch.connection.close()
    assert b.stop() == 0
    # each fanout publish reaches 3 queues, each default-exchange publish 1
    full = (BATCH // 2) * 3 + (BATCH - BATCH // 2)
    partial = {k: n for k, n in counts.items() if n != full}
    assert not partial, f"batches partly recovered: {partial}"
    lost = [k for k in done if k not in counts]
    assert not lost, f"committed batches lost: {lost}"


def test_an_ack_from_another_worker_during_the_commit_joins_the_unit(tmp_path) -> None:
    """A message of a commit is on its queue before the unit is appended: an ack of it by
    another worker in that window goes into the unit (after its PUBLISH), never before it."""
    from types import SimpleNamespace

    from syncmq.broker.durability import Durability
    from syncmq.broker.message import Message

    j, _ = open_journal(tmp_path)
    d = Durability(j)
    q = SimpleNamespace(vhost="/", name="ta", journaled=True, message_ttl=None)
    j.append(fmt.encode_queue_declare("/", "ta", 1))
    msg = Message("", "ta", b"\x00\x00", b"body")
    acked = threading.Event()
    with d.transaction() as unit:
        d.publish("/", msg, [q])
        t = threading.Thread(target=lambda: (d.acked(q, [msg.msg_id]), acked.set()))
        t.start()
        assert acked.wait(30)
        assert len(unit.records) == 2  # the PUBLISH, then the other worker's ACK
    d.acked(q, [msg.msg_id + 1000])  # after the commit: the normal path
    barrier(j)
    j.close()
    j2, rec = open_journal(tmp_path, start=False)
    j2.close()
    assert rec.queue("/", "ta").messages == []
    types = [t for _o, t, _n in fmt.iter_records(next(tmp_path.glob("*.seg")).read_bytes())[0]]
    assert types[-4:-1] == [fmt.T_TX, fmt.T_PUBLISH, fmt.T_ACK]


def test_queue_deleted_and_redeclared_during_a_commit_keeps_its_message_dead(
        tmp_path, monkeypatch) -> None:
    """Another client deletes the queue a commit has just published to, and declares it
    again, before the commit's unit is appended: the unit's PUBLISH is written after the
    QUEUE_DELETE and the new QUEUE_DECLARE, so without an ACK in the unit for the deleted
    copy a restart put the message back on the new (empty) queue. The race is forced by
    running the delete and the declare (management API, their answers wait for the fsync)
    right after the commit's publishes are routed."""
    import base64
    import urllib.request

    from syncmq.embedded import Server
    from syncmq.methods import tx as txmod

    server = Server(data_dir=str(tmp_path / "data"), management_port=0).start()
    try:
        def api(method: str, body: bytes | None) -> int:
            req = urllib.request.Request(server.management_url + "api/queues/%2F/q",
                                         data=body, method=method)
            req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
            req.add_header("Content-Type", "application/json")
            return urllib.request.urlopen(req).status

        routed = txmod._apply

        def apply_then_race(*a, **k):
            out = routed(*a, **k)
            assert api("DELETE", None) == 204 and api("PUT", b'{"durable": true}') == 201
            return out

        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        ch = conn.channel()
        ch.queue_declare("q", durable=True)
        ch.tx_select()
        ch.basic_publish("", "q", b"m", pika.BasicProperties(delivery_mode=2))
        monkeypatch.setattr(txmod, "_apply", apply_then_race)
        ch.tx_commit()
        monkeypatch.setattr(txmod, "_apply", routed)
        assert ch.queue_declare("q", passive=True).method.message_count == 0
        conn.close()
        server.restart()
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        assert conn.channel().queue_declare("q", passive=True).method.message_count == 0
        conn.close()
    finally:
        server.stop()
