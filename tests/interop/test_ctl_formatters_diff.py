"""Differential: ``syncmqctl`` and ``rabbitmqctl`` (3.10.8) list the same users, vhosts,
permissions and topic permissions with each ``--formatter`` (issue 17):
``table`` (the header and the rows), ``json`` (the objects and their keys) and
``pretty_table`` (the columns and cells; rabbitmqctl draws its boxes with the terminal's
line-drawing characters and syncmq with ASCII, so the cells are compared, not the frame).
Each listing is narrowed to the test's own objects (the brokers are shared).

rabbitmqctl's listings are the ones recorded in tests/fixtures/ctl_transcripts.json (run on
the private RabbitMQ node; ctl_transcripts.py says when they are read live instead and how to
re-record): a vhost and a user of fixed names (``ctlf-rec7f3``, ``ctlfu-rec7f3``), which only
this test makes, on a node and a broker no other run shares.

Known difference: in a ``pretty_table`` rabbitmqctl 3.10.8 prints a list of tags run together
(``managementmonitoring``), where its ``table`` prints ``[management, monitoring]``; syncmq
prints the ``table`` form in both.
"""

from __future__ import annotations

import json
import re

from ctl_transcripts import as_recorded, rabbitmq_answers
from interop_helpers import api
from test_ctl_remote import ok

ESC = re.compile(r"\x1b\[[0-9;]*m|\x1b\([0B]")
CELL = "\x1b(0x\x1b(B"  # rabbitmqctl's vertical rule
FORMATS = ("table", "json", "pretty_table")
TAG = "rec7f3"  # in the names of the test's objects, and in no other name
VH, USER = f"ctlf-{TAG}", f"ctlfu-{TAG}"


def _verbs(vh: str, user: str) -> list[tuple[str, ...]]:
    return [("list_users",), ("list_vhosts", "name", "tracing"),
            ("list_permissions", "-p", vh), ("list_user_permissions", user),
            ("list_topic_permissions", "-p", vh), ("list_user_topic_permissions", user)]


def _setup(port: int, vh: str, user: str) -> None:
    for method, path, body in (
            ("PUT", f"/vhosts/{vh}", None),
            ("PUT", f"/users/{user}", {"password": "x", "tags": "management,monitoring"}),
            ("PUT", f"/permissions/{vh}/{user}", {"configure": "^c", "write": ".*", "read": ""}),
            ("PUT", f"/topic-permissions/{vh}/{user}",
             {"exchange": "amq.topic", "write": "^w", "read": ".*"})):
        assert api(port, method, path, body)[0] in (201, 204), path


def _pretty_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):  # syncmq
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif CELL in line:  # rabbitmqctl
            rows.append([ESC.sub("", c).strip() for c in line.split(CELL)[1:-1]])
    return rows


def _narrow(fmt: str, text: str, tag: str):
    if fmt == "json":
        return [o for o in json.loads(text) if tag in json.dumps(o)]
    if fmt == "pretty_table":
        rows = _pretty_rows(text)
        return [rows[0]] + [r for r in rows[1:] if tag in " ".join(r)]
    lines = text.splitlines()
    return [lines[0]] + [ln for ln in lines[1:] if tag in ln]


def _steps() -> list[list[str]]:
    """A listing's arguments: the verb's, then ``--formatter``'s."""
    return [[*verb, fmt] for verb in _verbs(VH, USER) for fmt in FORMATS]


def _listings(run, port: int) -> list:
    """Each step's listing, narrowed, with the test's vhost and user made (through the
    management API on ``port``) for them."""
    _setup(port, VH, USER)
    try:
        return [_narrow(step[-1], run(*step[:-1], "-q", "--formatter", step[-1]), TAG)
                for step in _steps()]
    finally:
        api(port, "DELETE", f"/users/{USER}")
        api(port, "DELETE", f"/vhosts/{VH}")


def test_listings_in_each_formatter_as_rabbitmqctl(request, broker):
    keys = [(tuple(step[:-1]), step[-1]) for step in _steps()]
    theirs = dict(zip(keys, rabbitmq_answers(request, _steps(), lambda node: _listings(
        lambda *a: node.rabbitmqctl(*a).stdout, node.management_port)), strict=True))
    ours = dict(zip(keys, as_recorded(_listings(lambda *a: ok(broker, *a),
                                                broker.management_port)), strict=True))
    # the known difference (module docstring): rabbitmqctl's pretty_table runs tags together
    key = (("list_users",), "pretty_table")
    assert theirs[key][1:] == [[USER, "managementmonitoring"]]
    assert ours.pop(key)[1:] == [[USER, "[management, monitoring]"]]
    assert theirs.pop(key)[0] == ["user", "tags"]
    for key in theirs:
        assert ours[key] == theirs[key], f"{key}\nsyncmq:     {ours[key]}\n" \
                                         f"rabbitmqctl: {theirs[key]}"
    # what is compared, as rabbitmqctl prints it
    assert theirs[("list_users",), "table"] == ["user\ttags",
                                                f"{USER}\t[management, monitoring]"]
    assert theirs[("list_users",), "json"] == [{"user": USER,
                                                "tags": ["management", "monitoring"]}]
