#!/usr/bin/env python3
"""Mutation testing of the modules where a silent regression costs most (issue #24).

Runs mutmut 2.x (it mutates the source file in place and runs a shell command per mutant,
which is what our tests need: they start brokers as ``python -m syncmq.cli`` subprocesses
that must import the mutated file) on a SCRATCH CLONE of this checkout, never on the
checkout itself, one module at a time with the fast tests that cover it, at night-level
niceness and within a time budget per module. Prints the score per module and the surviving
mutants (docs/mutation.md keeps the last results and what each survivor is).

    python3 tools/mutation.py                     # every module below, 300 s each
    python3 tools/mutation.py access routing --budget 120

Requires ``pip install 'mutmut>=2.5,<3'`` (mutmut 3 runs tests in-process on a copied tree,
which our subprocess brokers cannot see).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

# module -> (file, the tests that cover it: fast, deterministic)
TARGETS = {
    "access": ("syncmq/methods/access.py", "tests/test_security_permissions.py"),
    "routing": ("syncmq/broker/routing.py", "tests/test_routing.py"),
    "heartbeats": ("syncmq/reactor.py",
                   "tests/test_protocol_connection.py -k heartbeat"),
    "ttl": ("syncmq/broker/queue.py", "tests/test_ext_ttl.py tests/test_ext_dlx.py"),
    "journal": ("syncmq/journal/writer.py",
                "tests/test_journal.py tests/test_confirm_journal.py tests/test_fsync_gate.py"),
    "recovery": ("syncmq/journal/recovery.py", "tests/test_journal.py tests/test_durability.py"),
}


def run_module(repo: str, name: str, budget: float) -> dict:
    path, tests = TARGETS[name]
    cwd = tempfile.mkdtemp(prefix=f"syncmq-mut-{name}-")
    subprocess.run(["git", "clone", "-q", repo, cwd], check=True)
    subprocess.run(["git", "-C", cwd, "checkout", "-q",
                    subprocess.check_output(["git", "-C", repo, "rev-parse", "HEAD"],
                                            text=True).strip()], check=True)
    runner = f"{sys.executable} -m pytest -x -q -p no:cacheprovider {tests}"
    cmd = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run",
           "--paths-to-mutate", path, "--runner", runner, "--no-progress"]
    try:
        subprocess.run(cmd, cwd=cwd, timeout=budget, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        complete = True
    except subprocess.TimeoutExpired:
        complete = False
    out = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=cwd,
                         capture_output=True, text=True).stdout
    killed = survived = 0
    section = None
    survivors: list[str] = []
    for line in out.splitlines():
        if line.startswith("Killed"):
            section = "killed"
        elif line.startswith("Survived"):
            section = "survived"
        elif line.startswith(("Timed out", "Suspicious", "Untested", "To apply")):
            section = "other"
        elif line.strip().startswith("----"):
            continue
        elif section and line.strip() and line.strip()[0].isdigit():
            ids = [x for x in line.replace(",", " ").split() if x.replace("-", "").isdigit()]
            n = 0
            for x in ids:
                if "-" in x:
                    a, b = x.split("-")
                    n += int(b) - int(a) + 1
                    if section == "survived":
                        survivors += [str(i) for i in range(int(a), int(b) + 1)]
                else:
                    n += 1
                    if section == "survived":
                        survivors.append(x)
            if section == "killed":
                killed += n
            elif section == "survived":
                survived += n
    diffs = []
    for sid in survivors:
        d = subprocess.run([sys.executable, "-m", "mutmut", "show", sid], cwd=cwd,
                           capture_output=True, text=True).stdout
        diffs.append("\n".join(x for x in d.splitlines() if x.startswith(("-", "+"))
                               and not x.startswith(("---", "+++"))))
    shutil.rmtree(cwd, ignore_errors=True)
    tested = killed + survived
    return {"module": name, "file": path, "killed": killed, "survived": survived,
            "score": killed / tested if tested else 0.0, "complete": complete,
            "survivors": diffs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", default=list(TARGETS), choices=[[], *TARGETS],
                    metavar="MODULE")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds per module")
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in args.modules or list(TARGETS):
        r = run_module(repo, name, args.budget)
        flag = "" if r["complete"] else " (budget ran out: partial)"
        print(f"{r['module']:<11} {r['file']:<28} killed {r['killed']:>3} survived "
              f"{r['survived']:>3} score {r['score']:.0%}{flag}")
        for d in r["survivors"]:
            print("    survivor:", d.replace("\n", " | "))


if __name__ == "__main__":
    main()
