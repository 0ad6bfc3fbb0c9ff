"""bench/crash_loop.py in CI: 5 cycles of publish-with-confirms + consume-and-ack + SIGKILL.

The script itself checks RabbitMQ's guarantees (no confirmed message lost, no duplicate after
a durable ack, duplicates of acks that died with the kill only with ``redelivered=True``, no
phantom ids, no unflagged redelivery) and prints a JSON summary as its last line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_crash_loop_5_cycles():
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "crash_loop.py"), "--cycles", "5", "--seed", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    assert lines, f"no summary (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    summary = json.loads(lines[-1])
    assert summary["ok"], summary
    assert r.returncode == 0
    assert summary["cycles"] == 5
    assert summary["confirmed"] >= 5 * 20  # every cycle confirmed at least --min-confirms
    assert summary["lost"] == 0 and summary["duplicates_bad"] == 0 and summary["phantom"] == 0
    assert summary["unflagged_redeliveries"] == 0 and summary["tracebacks"] == 0
