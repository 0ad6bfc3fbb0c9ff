#!/usr/bin/env python3
"""Mutation testing of the modules where a silent regression costs most (issue #24).

Runs mutmut 2.x (it mutates the source file in place and runs a shell command per mutant,
which is what our tests need: they start brokers as ``python -m syncmq.cli`` subprocesses
that must import the mutated file) on a SCRATCH CLONE of this checkout, never on the
checkout itself, one module at a time with the fast tests that cover it, at night-level
niceness and within a time budget per module. Prints the score per module and the surviving
mutants (docs/mutation.md keeps the last results and what each survivor is).

    python3 tools/mutation.py                     # the DEFAULT modules, 300 s each
    python3 tools/mutation.py permissions ttl --budget 600
    python3 tools/mutation.py permissions --tests-from 8a4aaec   # "before" score

Requires ``pip install 'mutmut>=2.5,<3'`` (mutmut 3 runs tests in-process on a copied tree,
which our subprocess brokers cannot see).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

# module -> (files to mutate, the tests that cover them: fast, deterministic)
TARGETS = {
    "permissions": ("syncmq/methods/access.py,syncmq/methods/exchange.py,"
                    "syncmq/methods/queue.py", "tests/test_security_permissions.py"),
    "confirms": ("syncmq/broker/durability.py,syncmq/methods/confirm.py,syncmq/methods/tx.py",
                 "tests/test_fsync_gate.py tests/test_confirm_journal.py "
                 "tests/test_broker_confirm_tx.py"),
    "ttl": ("syncmq/broker/deadletter.py,syncmq/broker/timers.py",
            "tests/test_ext_ttl.py tests/test_ext_dlx.py"),
    "routing": ("syncmq/broker/routing.py", "tests/test_routing.py"),
    "recovery": ("syncmq/journal/recovery.py", "tests/test_journal.py"),
    # reactor.py is large (hundreds of mutants) and its heartbeat tests take seconds each:
    # run it alone, with a long budget
    "heartbeats": ("syncmq/reactor.py", "tests/test_protocol_connection.py -k heartbeat"),
}
DEFAULT = ["permissions", "confirms", "ttl", "routing", "recovery"]

# mutmut's status per mutant (its .mutmut-cache, a SQLite file)
_KILLED, _SURVIVED = "ok_killed", "bad_survived"


def _clone(repo: str, name: str, tests_from: str | None) -> str:
    cwd = tempfile.mkdtemp(prefix=f"syncmq-mut-{name}-")
    head = subprocess.check_output(["git", "-C", repo, "rev-parse", "HEAD"], text=True).strip()
    subprocess.run(["git", "clone", "-q", repo, cwd], check=True)
    subprocess.run(["git", "-C", cwd, "checkout", "-q", head], check=True)
    if tests_from:  # the "before" score: this code, an older revision's tests
        subprocess.run(["git", "-C", cwd, "rm", "-q", "-r", "tests"], check=True)
        subprocess.run(["git", "-C", cwd, "checkout", "-q", tests_from, "--", "tests"],
                       check=True)
    return cwd


def _results(cwd: str) -> tuple[dict[str, int], list[str]]:
    db = sqlite3.connect(os.path.join(cwd, ".mutmut-cache"))
    counts: dict[str, int] = {}
    for status, n in db.execute("SELECT status, count(*) FROM Mutant GROUP BY status"):
        counts[status] = n
    ids = [str(r[0]) for r in db.execute("SELECT id FROM Mutant WHERE status = ?",
                                         (_SURVIVED,))]
    db.close()
    diffs = []
    for sid in ids:
        d = subprocess.run([sys.executable, "-m", "mutmut", "show", sid], cwd=cwd,
                           capture_output=True, text=True).stdout
        lines = d.splitlines()
        where = next((x[4:] for x in lines if x.startswith("--- ")), None)
        if where is None:  # mutmut could not show it (e.g. its file changed since)
            diffs.append(f"mutant {sid}: `mutmut show {sid}` gave no diff")
            continue
        diffs.append(where + ": " + " | ".join(
            x for x in lines if x.startswith(("-", "+")) and not x.startswith(("---", "+++"))))
    return counts, diffs


def run_module(repo: str, name: str, budget: float, tests_from: str | None = None) -> dict:
    paths, tests = TARGETS[name]
    cwd = _clone(repo, name, tests_from)
    # an older revision's tests/ may lack a module: leave it out (else every mutant "dies")
    tests = " ".join(t for t in tests.split()
                     if not t.startswith("tests/") or os.path.exists(os.path.join(cwd, t)))
    runner = f"{sys.executable} -m pytest -x -q -p no:cacheprovider {tests}"
    cmd = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run",
           "--paths-to-mutate", paths, "--runner", runner, "--no-progress"]
    try:
        subprocess.run(cmd, cwd=cwd, timeout=budget, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        complete = True
    except subprocess.TimeoutExpired:
        complete = False
    counts, diffs = _results(cwd)
    shutil.rmtree(cwd, ignore_errors=True)
    killed, survived = counts.get(_KILLED, 0), counts.get(_SURVIVED, 0)
    tested = killed + survived
    return {"module": name, "files": paths, "killed": killed, "survived": survived,
            "untested": sum(counts.values()) - tested,
            "score": killed / tested if tested else 0.0, "complete": complete,
            "survivors": diffs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", metavar="MODULE",
                    help=f"of {', '.join(TARGETS)} (default: {' '.join(DEFAULT)})")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds per module")
    ap.add_argument("--tests-from", metavar="REV",
                    help="score this code against the tests/ of an older revision (before)")
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in args.modules or DEFAULT:
        if name not in TARGETS:
            ap.error(f"unknown module {name!r}")
        r = run_module(repo, name, args.budget, args.tests_from)
        flag = "" if r["complete"] else f" (budget ran out: {r['untested']} not run)"
        print(f"{r['module']:<12} killed {r['killed']:>3} survived {r['survived']:>3} "
              f"score {r['score']:.0%}{flag}", flush=True)
        for d in r["survivors"]:
            print("    survivor:", d, flush=True)


if __name__ == "__main__":
    main()
