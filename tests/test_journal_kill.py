"""kill -9 a process that appends with confirm callbacks: every confirmed record survives."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from syncmq.journal import Journal
from syncmq.journal import format as fmt

REPO = Path(__file__).resolve().parent.parent

# The child publishes from 4 threads; each confirm prints "P <id>". Every third confirmed
# message is then acked; the ack's confirm prints "A <id>". Small segments and an eager
# threshold keep auto-compaction busy, so kills also land in the middle of compaction jobs.
CHILD = r"""
import os, sys, threading
from syncmq.journal import Journal, format as fmt
data_dir, first_id = sys.argv[1], int(sys.argv[2])
j = Journal(data_dir, segment_bytes=64 * 1024, compact_threshold=0.7,
            compact_step_bytes=16 * 1024)
j.open()
rec = j.recover()
j.start()
ready = threading.Event()
j.append(fmt.encode_queue_declare("/", "q", 2), lambda e: ready.set())
ready.wait()

def out(line):
    os.write(1, line.encode())

def on_ack(mid):
    return lambda e: e is None and out(f"A {mid}\n")

window = threading.BoundedSemaphore(256)  # publisher-confirm window, like a real client

def on_pub(mid):
    def cb(e):
        window.release()
        if e is None:
            out(f"P {mid}\n")
            if mid % 3 == 0:
                j.append(fmt.encode_ack("/", "q", [mid]), on_ack(mid))
    return cb

def worker(t):
    mid = first_id + t
    while True:
        window.acquire()
        j.append(fmt.encode_publish(mid, "/", ["q"], "", "rk", b"", b"%d" % mid * 40),
                 on_pub(mid))
        mid += 4

out("READY\n")
for t in range(4):
    threading.Thread(target=worker, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def run_and_kill(data_dir: Path, first_id: int, rng: random.Random) -> tuple[set, set]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir), str(first_id)],
                            stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    target = rng.randrange(50, 3000)
    published: set[int] = set()
    acked: set[int] = set()
    lines: list[bytes] = []
    rest = b""
    try:
        line = proc.stdout.readline()
        assert line == b"READY\n", line
        while len(lines) < target:
            line = proc.stdout.readline()
            assert line.endswith(b"\n"), "child died"
            lines.append(line)
        time.sleep(rng.random() * 0.01)  # a random moment, not a synchronisation
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
    for raw in (b"".join(lines) + rest).split(b"\n")[:-1]:  # the last piece may be torn
        kind, _, mid = raw.partition(b" ")
        if kind == b"P":
            published.add(int(mid))
        elif kind == b"A":
            acked.add(int(mid))
    assert len(published) + len(acked) >= target
    return published, acked


def test_kill_9_loses_no_confirmed_record(tmp_path):
    rng = random.Random(int(os.environ.get("SYNCMQ_KILL_SEED", "1234")))
    first_id = 1
    all_published: set[int] = set()
    all_acked: set[int] = set()
    for _round in range(3):
        published, acked = run_and_kill(tmp_path, first_id, rng)
        assert published, "nothing was confirmed before the kill"
        all_published |= published
        all_acked |= acked
        j = Journal(tmp_path)
        j.open()
        rec = j.recover()
        j._state.check()
        j.close()
        q = rec.queue("/", "q")
        assert q is not None
        present = {m.msg_id for m in q.messages}
        # a message whose ack was appended but not confirmed may go either way
        must_have = {m for m in all_published if m % 3}
        missing = must_have - present
        assert not missing, f"confirmed but lost: {sorted(missing)[:10]}"
        resurrected = present & all_acked
        assert not resurrected, f"acked but back: {sorted(resurrected)[:10]}"
        assert rec.next_msg_id > max(all_published)
        first_id = rec.next_msg_id
        # the segments are readable end to end after recovery
        for name in os.listdir(tmp_path):
            if fmt.parse_segment_name(name) is not None:
                data = (tmp_path / name).read_bytes()
                assert fmt.iter_records(data)[2] is None
