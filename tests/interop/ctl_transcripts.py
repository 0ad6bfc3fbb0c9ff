"""RabbitMQ's side of the rabbitmqctl differential tests (``test_ctl_*_diff.py``): recorded, or
read live off the private node.

Each rabbitmqctl call starts an Erlang VM (1-2 CPU s), and those tests make about 140 of them,
so rabbitmqctl's answers are recorded in ``tests/fixtures/ctl_transcripts.json``: for each test
(``module::test name``), the RabbitMQ version it was recorded with and its steps (the
arguments, as the test builds them with the fixed names it uses) each with rabbitmqctl's answer
as the test compares it (exit code, standard output, the compared part of standard error,
after the test's own normalisation). syncmqctl always runs live; ``rabbitmq_answers`` gives a
test RabbitMQ's side:

- the recorded answers when the installed RabbitMQ is the recorded version, or when no
  RabbitMQ is installed (the tests then run without a node, as tests/test_policies_live.py
  does with tests/fixtures/policy_transcripts.json);
- live from the private node (the ``rabbitmq`` fixture) when the installed RabbitMQ is another
  version (or its version cannot be read), or with ``SYNCMQ_RERECORD_CTL=1``, which also
  rewrites the test's entry in the fixture (``SYNCMQ_RERECORD_CTL=1 python3 -m pytest
  tests/interop/test_ctl_*_diff.py``, then ``git diff tests/fixtures/``).

A test with no recorded entry, or with steps that are not the recorded ones (a step added,
changed or reordered, or what a step compares changed), fails, saying to re-record: answers
are never matched to steps they were not recorded for. Only this module reads or writes the
fixture.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from interop_helpers import RabbitNode, rabbitmq_version

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ctl_transcripts.json")
RERECORD = "SYNCMQ_RERECORD_CTL"


def as_recorded(value: Any) -> Any:
    """``value`` as it reads back from the fixture (tuples become lists): both sides of a
    comparison go through it, so a recorded and a live answer compare alike."""
    return json.loads(json.dumps(value))


def _key(request: pytest.FixtureRequest) -> str:
    return f"{request.node.module.__name__}::{request.node.name}"


def _load() -> dict:
    try:
        with open(FIXTURE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _dump(entries: dict) -> str:
    """The fixture's text: the tests sorted by key, one line per step (a re-recording that
    changes one answer changes one line)."""
    out = ["{"]
    for i, key in enumerate(sorted(entries)):
        entry = entries[key]
        out.append(f" {json.dumps(key)}: {{")
        out.append(f'  "rabbitmq": {json.dumps(entry["rabbitmq"])},')
        out.append('  "steps": [')
        steps = entry["steps"]
        out += [f"   {json.dumps(s)}" + ("," if j < len(steps) - 1 else "")
                for j, s in enumerate(steps)]
        out.append("  ]")
        out.append(" }" + ("," if i < len(entries) - 1 else ""))
    out.append("}")
    return "\n".join(out) + "\n"


def _record(key: str, version: str, steps: list, answers: list) -> None:
    """Rewrite ``key``'s entry. Under an exclusive lock on the fixture: two pytest-xdist
    workers re-recording at once each rewrite their own entries, neither loses the other's."""
    with open(FIXTURE, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        entries = json.loads(text) if text.strip() else {}
        entries[key] = {"rabbitmq": version,
                        "steps": [{"step": s, "rabbitmqctl": a}
                                  for s, a in zip(steps, answers, strict=True)]}
        f.seek(0)
        f.truncate()
        f.write(_dump(entries))


def rabbitmq_answers(request: pytest.FixtureRequest, steps: list,
                     live: Callable[[RabbitNode], list]) -> list:
    """rabbitmqctl's answers to ``steps`` (JSON values that say what each step runs and
    compares) for the calling test: recorded, or ``live(node)`` run against the private node
    (module docstring says when), which returns one answer per step in order. The answers are
    as ``as_recorded`` makes them."""
    key, steps = _key(request), as_recorded(steps)
    installed = rabbitmq_version()
    if os.environ.get(RERECORD) == "1":
        if installed is None:
            pytest.skip(f"{RERECORD}=1: rabbitmq-server is not installed, nothing to record")
        answers = _live(request, key, steps, live)
        _record(key, installed, steps, answers)
        return answers
    entry = _load().get(key)
    assert entry is not None, f"{key} has no recording: record it ({RERECORD}=1)"
    if installed not in (entry["rabbitmq"], None):
        return _live(request, key, steps, live)
    assert [s["step"] for s in entry["steps"]] == steps, (
        f"{key}: the steps recorded in {os.path.basename(FIXTURE)} are not the test's; "
        f"re-record them ({RERECORD}=1, with RabbitMQ {entry['rabbitmq']} installed)")
    return [s["rabbitmqctl"] for s in entry["steps"]]


def _live(request: pytest.FixtureRequest, key: str, steps: list,
          live: Callable[[RabbitNode], list]) -> list:
    answers = as_recorded(live(request.getfixturevalue("rabbitmq")))
    assert len(answers) == len(steps), (key, len(answers), len(steps))
    return answers
