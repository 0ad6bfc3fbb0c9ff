#!/usr/bin/env python3
"""Long run of the power-loss state machine (fuzz/test_powerloss_state.py, issue #25).

Runs ``--examples`` Hypothesis examples of the journal power-cut state machine and prints one
JSON line: examples, power cuts checked (by where they struck: an fsync, a rename, an unlink,
between steps), clean closes checked, messages recovered, torn tails truncated, seconds.
Exit status 1 on the first counterexample (Hypothesis prints it).

    python bench/powerloss_run.py --examples 20000
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=20_000)
    a = p.parse_args()
    from hypothesis import settings
    from hypothesis.stateful import run_state_machine_as_test

    import fuzz.test_powerloss_state as t

    stats: collections.Counter = collections.Counter()
    check, on_cut = t.PowerLoss._check, t.PowerLoss._on_cut

    def counted_check(self, rec, snap, strict):
        stats["clean_closes" if strict else "cuts_checked"] += 1
        stats["messages_recovered"] += sum(len(q.messages) for q in rec.queues)
        stats["truncated_tails"] += bool(rec.stats.truncated_bytes)
        return check(self, rec, snap, strict)

    def counted_cut(self, event, kind):
        stats[f"cut_at_{kind}"] += 1
        return on_cut(self, event, kind)

    t.PowerLoss._check, t.PowerLoss._on_cut = counted_check, counted_cut
    t0 = time.perf_counter()
    ok = True
    try:
        run_state_machine_as_test(t.CleanClose, settings=settings(
            t.SETTINGS, max_examples=a.examples, database=None))
    except Exception:
        ok = False
        raise
    finally:
        print(json.dumps({"examples": a.examples, "ok": ok, **stats,
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
