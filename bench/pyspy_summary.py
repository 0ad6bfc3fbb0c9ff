#!/usr/bin/env python3
"""Summarise a ``py-spy record -f raw`` profile in the format of bench/results/profile-S*.txt.

    py-spy record -r 200 -f raw -d 8 -p <broker pid> -o s3.raw
    python bench/pyspy_summary.py s3.raw [TOP]

Sections: samples per thread (root frame: the first syncmq frame), top inclusive functions,
top self functions, top self lines (percent of all samples).
"""

from __future__ import annotations

import collections
import re
import sys

_FRAME = re.compile(r"(.*) \((.*?)(:\d+)?\)$")


def _fn(frame: str) -> str:
    m = _FRAME.match(frame)
    return f"{m.group(1)} ({m.group(2)})" if m else frame


def main(argv: list[str]) -> int:
    path = argv[1]
    top = int(argv[2]) if len(argv) > 2 else 35
    incl: collections.Counter = collections.Counter()
    self_fn: collections.Counter = collections.Counter()
    self_line: collections.Counter = collections.Counter()
    roots: collections.Counter = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, n_s = line.rsplit(" ", 1)
            n = int(n_s)
            frames = [x.strip() for x in stack.split(";")
                      if x.strip() and not x.startswith(("thread ", "process "))]
            if not frames:
                continue
            total += n
            roots[next((_fn(x) for x in frames if "syncmq/" in x), _fn(frames[0]))] += n
            for name in {_fn(x) for x in frames}:
                incl[name] += n
            self_fn[_fn(frames[-1])] += n
            self_line[frames[-1]] += n

    def section(title: str, counts: collections.Counter, k: int) -> None:
        print(f"## {title}")
        for name, v in counts.most_common(k):
            if "_bootstrap" in name or name.startswith("run (threading"):
                continue
            print(f"  {100 * v / total:5.1f}%  {name}")
        print()

    print(f"# {total} samples\n")
    section("threads (root frame)", roots, 8)
    section("top inclusive", incl, top)
    section("top self (function)", self_fn, 25)
    section("top self (line)", self_line, 15)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
