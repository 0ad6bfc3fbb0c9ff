"""Run syncmq under :class:`fuzz.powerloss.PowerLossFS` and "lose power" at a chosen event.

    python -m fuzz.powerloss_broker --cut-at N --image DIR -- <syncmq.cli arguments>

The journal's file-system events (syncs, renames, unlinks) are numbered from start-up; right
before event ``N`` the image a power cut would leave (torn tails included) is written to
``DIR`` and the process ends at once (``os._exit``): nothing after that point, and no reply
that waited for that fsync, ever happened. Test-only (tests/test_powerloss_broker.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from fuzz.powerloss import PowerLossFS
from syncmq import cli


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cut-at", type=int, required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--seed", type=int, default=0)
    a, rest = p.parse_known_args()
    if rest and rest[0] == "--":
        rest = rest[1:]
    data_dir = rest[rest.index("--data-dir") + 1]
    os.makedirs(data_dir, exist_ok=True)
    import syncmq.journal.compaction  # noqa: F401  (every journal module, for install)
    import syncmq.journal.writer  # noqa: F401

    fs = PowerLossFS(data_dir, a.image + ".shadow", seed=a.seed)

    def cut(_event: int, _kind: str) -> None:
        fs.image(a.image, torn=True)
        os._exit(99)

    fs.cut_at = a.cut_at
    fs.on_cut = cut
    fs.install()
    sys.exit(cli.main(rest))


if __name__ == "__main__":
    main()
