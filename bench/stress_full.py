#!/usr/bin/env python3
"""The resource-exhaustion tests (tests/test_stress.py) at the sizes of issue 10.

Runs pytest on tests/test_stress.py with ``SYNCMQ_STRESS_SCALE=full`` (5,000 connections,
100,000 queues, 2,000 channels, 1,000 consumers, a 100 MiB message, 1 GiB pushed at clients
that never read, 600 slowloris sockets), collects the figures every test records, and prints
them, then a JSON summary as the last line. Exit status: pytest's.

    python bench/stress_full.py            # full sizes
    python bench/stress_full.py --scale ci # the CI sizes, same report
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="full", choices=["ci", "full"])
    ap.add_argument("-k", default=None, help="pytest -k expression (a subset of the tests)")
    args = ap.parse_args()
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as report:
        env = dict(os.environ, SYNCMQ_STRESS_SCALE=args.scale,
                   SYNCMQ_STRESS_REPORT=report.name)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-o", "timeout=3600", "tests/test_stress.py"]
        if args.k:
            cmd += ["-k", args.k]
        t0 = time.monotonic()
        rc = subprocess.call(cmd, cwd=REPO, env=env)
        elapsed = time.monotonic() - t0
        records = [json.loads(line) for line in report.read().splitlines() if line.strip()]
    for r in records:
        print(json.dumps(r))
    print(json.dumps({"scale": args.scale, "pytest_exit": rc, "elapsed_s": round(elapsed, 1),
                      "tests_reported": len(records)}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
