"""Long run of the differential fuzzer (tests/interop/test_diff_fuzz.py): syncmq against a
private RabbitMQ node, N generated sequences of AMQP operations, every reply compared.

    python3 bench/diff_fuzz.py [--examples 2000] [--steps 25]

Prints the number of sequences and steps run and the count of each kind of reply; a difference
fails with the shrunk sequence (add it to REGRESSIONS in the test module once fixed, or to
KNOWN_DIFFERENCES and docs/compatibility.md if syncmq keeps it on purpose).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--steps", type=int, default=25)
    a = p.parse_args()
    env = dict(os.environ, SYNCMQ_DIFF_FUZZ_EXAMPLES=str(a.examples),
               SYNCMQ_DIFF_FUZZ_STEPS=str(a.steps), SYNCMQ_DIFF_FUZZ_VERBOSE="1")
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                        "-p", "no:logging", "-o", "timeout=0", "tests/interop/test_diff_fuzz.py", "-k",
                        "differential_fuzz"], cwd=ROOT, env=env)
    print(f"diff_fuzz: {a.examples} examples of <= {a.steps} steps, exit {r.returncode}, "
          f"{time.monotonic() - start:.0f} s")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
