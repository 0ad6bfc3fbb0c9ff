"""Differential: ``syncmqctl`` and ``rabbitmqctl`` (3.10.8, on the private RabbitMQ node) list
the same users, vhosts, permissions and topic permissions with each ``--formatter`` (issue 17):
``table`` (the header and the rows), ``json`` (the objects and their keys) and
``pretty_table`` (the columns and cells; rabbitmqctl draws its boxes with the terminal's
line-drawing characters and syncmq with ASCII, so the cells are compared, not the frame).
Each listing is narrowed to the test's own objects (the brokers are shared).

Known difference: in a ``pretty_table`` rabbitmqctl 3.10.8 prints a list of tags run together
(``managementmonitoring``), where its ``table`` prints ``[management, monitoring]``; syncmq
prints the ``table`` form in both.
"""

from __future__ import annotations

import json
import re

from interop_helpers import api
from test_ctl_remote import ok

ESC = re.compile(r"\x1b\[[0-9;]*m|\x1b\([0B]")
CELL = "\x1b(0x\x1b(B"  # rabbitmqctl's vertical rule


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


def _listings(run, vh: str, user: str, tag: str) -> dict:
    out = {}
    for verb in _verbs(vh, user):
        for fmt in ("table", "json", "pretty_table"):
            out[verb, fmt] = _narrow(fmt, run(*verb, "-q", "--formatter", fmt), tag)
    return out


def test_listings_in_each_formatter_as_rabbitmqctl(rabbitmq, broker, unique):
    tag = unique[-6:]
    vh, user = f"ctlf-{tag}", f"ctlfu-{tag}"
    for port in (rabbitmq.management_port, broker.management_port):
        _setup(port, vh, user)
    try:
        theirs = _listings(lambda *a: rabbitmq.rabbitmqctl(*a).stdout, vh, user, tag)
        ours = _listings(lambda *a: ok(broker, *a), vh, user, tag)
    finally:
        for port in (rabbitmq.management_port, broker.management_port):
            api(port, "DELETE", f"/users/{user}")
            api(port, "DELETE", f"/vhosts/{vh}")
    # the known difference (module docstring): rabbitmqctl's pretty_table runs tags together
    key = (("list_users",), "pretty_table")
    assert theirs[key][1:] == [[user, "managementmonitoring"]]
    assert ours.pop(key)[1:] == [[user, "[management, monitoring]"]]
    assert theirs.pop(key)[0] == ["user", "tags"]
    for key in theirs:
        assert ours[key] == theirs[key], f"{key}\nsyncmq:     {ours[key]}\n" \
                                         f"rabbitmqctl: {theirs[key]}"
    # what is compared, as rabbitmqctl prints it
    assert theirs[("list_users",), "table"] == ["user\ttags",
                                                f"{user}\t[management, monitoring]"]
    assert theirs[("list_users",), "json"] == [{"user": user,
                                                "tags": ["management", "monitoring"]}]
