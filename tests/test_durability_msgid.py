"""Broker level: message ids stay unique across compaction and real restarts.

The ids are the journal's (never seen by clients), so the test reads them back from the data
directory between runs with the journal API (read-only recovery changes no file)."""

from __future__ import annotations

import contextlib

import pika
from amqp_helpers import connect
from brokerproc import BrokerProcess
from journal_helpers import open_journal

SEG = "1024"  # the smallest segment: every message rolls, so compaction has closed segments


def _ids(data_dir: str) -> tuple[dict[str, list[int]], int]:
    """(queue -> live msg ids, next_msg_id) of the journal in ``data_dir``."""
    j, rec = open_journal(data_dir, start=False)
    j.close()
    return {q.name: [m.msg_id for m in q.messages] for q in rec.queues}, rec.next_msg_id


def _compact_offline(data_dir: str) -> None:
    """What the broker's journal thread does on its own, made deterministic: compact every
    closed segment that qualifies while the broker is stopped."""
    j, _rec = open_journal(data_dir, start=False, segment_bytes=int(SEG))
    j.compact()
    j.close()


def _run(data_dir: str, queue: str, n: int, ack: bool) -> None:
    b = BrokerProcess(data_dir, "--journal-segment-bytes", SEG).start(60)
    try:
        with contextlib.closing(connect(b.port)) as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare(queue, durable=True)
            for i in range(n):
                ch.basic_publish("", queue, b"%d" % i + b"." * 600,
                                 pika.BasicProperties(delivery_mode=2))
            if ack:
                for _ in range(n):
                    m, _p, _b = ch.basic_get(queue)
                    ch.basic_ack(m.delivery_tag)
            # roll past the acks without new ids (declare-ok waits for the fsync): their
            # segment is closed, so compaction may drop them
            for i in range(4):
                ch.queue_declare(f"filler{i}", durable=True, arguments={"f": "x" * 600})
                ch.queue_delete(f"filler{i}")
    finally:
        assert b.stop() == 0
        assert not b.tracebacks(), "\n".join(b.tracebacks())


def test_restart_after_compaction_never_reuses_message_ids(tmp_path):
    data = str(tmp_path / "data")
    _run(data, "keep", 1, ack=False)
    _run(data, "gone", 20, ack=True)  # ids 2..21 used, acked ...
    _compact_offline(data)  # ... and compacted away (if the broker had not done it already)
    used = 21  # persistent messages published to durable queues so far
    live, nxt = _ids(data)
    assert live["keep"] == [1] and live["gone"] == []
    assert nxt > used
    _run(data, "after", 3, ack=False)  # a real restart: the broker picks the next ids
    live, _nxt = _ids(data)
    assert live["keep"] == [1]
    assert len(live["after"]) == 3 and min(live["after"]) > used, (live, used)
