"""Issue #20's edge-to-core run: syncmq shovels forward 100,000 persistent messages from three
source queues to a private RabbitMQ node with ``ack-mode: on-confirm`` while the node is
stopped and restarted twice and syncmq is killed -9 once; every message must arrive, in order
per source queue apart from replays after a failure. The scenario and its checks are
tests/interop/shovel_scenario.py, which the CI test (tests/interop/test_shovel_rabbit.py)
runs with these same defaults; this script runs it with other sizes and prints the figures.

    python bench/shovel_edge.py [--messages 100000] [--queues 3] [--rabbit-restarts 2]
                                [--syncmq-kills 1] [--prefetch 250] [--in-process]

Needs rabbitmq-server (the interop suite's private node). Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "interop"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from interop_helpers import RabbitNode  # noqa: E402
from shovel_scenario import edge_to_core  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--rabbit-restarts", type=int, default=2)
    p.add_argument("--syncmq-kills", type=int, default=1)
    p.add_argument("--prefetch", type=int, default=250)
    p.add_argument("--queues", type=int, default=3, help="source queues, a shovel each")
    p.add_argument("--in-process", dest="in_broker", action="store_false",
                   help="the shovels' workers in this process with syncmq as a remote "
                        "source; default: as syncmq runs them (runtime parameters, source "
                        "amqp://)")
    p.add_argument("--in-broker", dest="in_broker", action="store_true",
                   help="the default (kept for the commands of earlier results)")
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="shovel-edge-")
    (pathlib.Path(base) / "rabbit").mkdir()
    rabbit = RabbitNode(str(pathlib.Path(base) / "rabbit")).start()
    try:
        figures = edge_to_core(str(pathlib.Path(base) / "syncmq"), rabbit, args.messages,
                               args.rabbit_restarts, args.syncmq_kills, args.prefetch,
                               queues=args.queues, in_broker=args.in_broker,
                               log=lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        rabbit.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(dict(figures, in_broker=args.in_broker)))


if __name__ == "__main__":
    main()
