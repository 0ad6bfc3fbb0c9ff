"""Message ids never go backwards across compaction and restarts (``next_msg_id``).

A journal used to compute ``next_msg_id`` from the ids still on disk: once compaction dropped
the highest-id dead PUBLISH and its ACK, a restart handed out ids that had been used before.
"""

from __future__ import annotations

from journal_helpers import barrier, open_journal

from syncmq.journal import format as fmt


def _filler(n: int) -> bytes:
    """A record that is dead at once (declare then delete) and pushes the writer to roll."""
    return fmt.encode_queue_declare("/", f"filler{n}", 0, b"x" * 300)


def _use_ids_then_compact_them_away(path) -> None:
    j, rec = open_journal(path, segment_bytes=1024)
    j.append(fmt.encode_queue_declare("/", "q", 2, b""))
    j.append(fmt.encode_publish(1, "/", ["q"], "", "q", b"", b"live"))
    for mid in range(2, 26):  # 2..25 published and acked: dead
        j.append(fmt.encode_publish(mid, "/", ["q"], "", "q", b"", b"b" * 200))
    j.append(fmt.encode_ack("/", "q", list(range(2, 26))))
    for n in range(8):  # roll past the acks so their segments are closed
        j.append(_filler(n))
        j.append(fmt.encode_queue_delete("/", f"filler{n}"))
    barrier(j)
    j.compact()
    j.close()


def test_next_msg_id_survives_compaction_of_the_highest_dead_ids(tmp_path):
    _use_ids_then_compact_them_away(tmp_path)
    j, rec = open_journal(tmp_path, start=False)
    j.close()
    # nothing mentioning ids 2..25 is left on disk ...
    assert [m.msg_id for m in rec.queue("/", "q").messages] == [1]
    assert rec.stats.live_messages == 1
    # ... and yet id 25 was used: the next one must be 26, not 2
    assert rec.next_msg_id == 26


def test_ids_stay_monotonic_over_many_restarts_and_compactions(tmp_path):
    _use_ids_then_compact_them_away(tmp_path)
    seen = []
    for _ in range(4):
        j, rec = open_journal(tmp_path, segment_bytes=1024)
        seen.append(rec.next_msg_id)
        mid = rec.next_msg_id
        j.append(fmt.encode_publish(mid, "/", ["q"], "", "q", b"", b"b" * 200))
        j.append(fmt.encode_ack("/", "q", [mid]))
        for n in range(8):
            j.append(_filler(n))
            j.append(fmt.encode_queue_delete("/", f"filler{n}"))
        barrier(j)
        j.compact()
        j.close()
    assert seen == [26, 27, 28, 29]


def test_one_batch_over_several_segments_marks_its_own_ids(tmp_path):
    """A single write batch that rolls several times: each new segment's ID_MARK covers the
    ids written earlier in the same batch (the writer applies them before it rolls)."""
    j, _ = open_journal(tmp_path, segment_bytes=1024)
    recs = [fmt.encode_queue_declare("/", "q", 2, b"")]
    recs += [fmt.encode_publish(mid, "/", ["q"], "", "q", b"", b"b" * 300)
             for mid in range(1, 11)]
    recs.append(fmt.encode_ack("/", "q", list(range(1, 11))))
    for n in range(8):
        recs += [_filler(n), fmt.encode_queue_delete("/", f"filler{n}")]
    j.append_many(recs)
    barrier(j)
    j.compact()
    j.close()
    j, rec = open_journal(tmp_path, start=False)
    j.close()
    assert rec.stats.live_messages == 0
    assert rec.next_msg_id == 11


def test_a_recovery_that_is_only_read_changes_no_file(tmp_path):
    _use_ids_then_compact_them_away(tmp_path)
    sizes = {p.name: p.stat().st_size for p in tmp_path.glob("*.seg")}
    for _ in range(3):
        j, rec = open_journal(tmp_path, start=False)
        j.close()
        assert rec.next_msg_id == 26
    assert {p.name: p.stat().st_size for p in tmp_path.glob("*.seg")} == sizes


def test_an_old_journal_without_id_marks_keeps_its_ids(tmp_path):
    """A data directory written before ID_MARK existed (hand-built here): it recovers as
    before, and once the journal runs, compaction of its old segments does not lower the
    next id (the reopened current segment gets an ID_MARK first)."""
    seg1 = [fmt.encode_queue_declare("/", "q", 2, b""),
            fmt.encode_publish(1, "/", ["q"], "", "q", b"", b"live")]
    seg1 += [fmt.encode_publish(mid, "/", ["q"], "", "q", b"", b"b" * 300)
             for mid in range(2, 6)]
    seg1.append(fmt.encode_ack("/", "q", [2, 3, 4, 5]))
    (tmp_path / fmt.segment_name(1)).write_bytes(fmt.encode_file_header(1) + b"".join(seg1))
    (tmp_path / fmt.segment_name(2)).write_bytes(
        fmt.encode_file_header(2) + fmt.encode_queue_declare("/", "other", 2, b""))
    j, rec = open_journal(tmp_path, segment_bytes=4096)
    assert rec.next_msg_id == 6
    assert [m.body for m in rec.queue("/", "q").messages] == [b"live"]
    j.compact()  # (automatic compaction may have run already)
    assert j.compaction_stats.jobs >= 1
    j.close()
    j, rec = open_journal(tmp_path, start=False)
    j.close()
    assert [m.body for m in rec.queue("/", "q").messages] == [b"live"]
    assert rec.next_msg_id == 6
