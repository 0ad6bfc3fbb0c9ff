"""Differential: ``syncmqctl status`` against ``rabbitmqctl status`` (3.10.8), in text and with
``--formatter json``: the same section titles in the same order, the same line names within
each section and the same JSON keys, except the ones listed here with the reason (RabbitMQ
facts syncmq has no counterpart for, and syncmq's own additions).

rabbitmqctl's titles, line names and keys (``_text_view``, ``_json_view``: no values) are the
ones recorded in tests/fixtures/ctl_transcripts.json, run on the private RabbitMQ node (its
node name and cookie: interop_helpers.RabbitNode); ctl_transcripts.py says when they are read
live instead and how to re-record."""

from __future__ import annotations

import json
import re

from ctl_transcripts import as_recorded, rabbitmq_answers
from test_ctl_remote import ok

TITLE = re.compile(r"^\x1b\[1m(.*)\x1b\[0m$")  # rabbitmqctl prints titles bold
# rabbitmqctl lines (section, name) syncmq does not print, and why
NOT_SHOWN = {
    ("Runtime", "RabbitMQ version"): "syncmq is not RabbitMQ: Product name/version say what",
    ("Runtime", "RabbitMQ release series support status"): "RabbitMQ's release support",
    ("Runtime", "Erlang configuration"): "no Erlang VM: the Python line is its counterpart",
    ("Runtime", "Erlang processes"): "no Erlang VM: the Threads line is its counterpart",
    ("Runtime", "Crypto library"): "the CLI cannot see the broker's OpenSSL build",
    ("Runtime", "Scheduler run queue"): "an Erlang scheduler figure",
    ("Runtime", "Cluster heartbeat timeout (net_ticktime)"): "a single node: no clustering",
    ("Data directory", "Raft data directory"): "no quorum queues (Raft)",
}
# syncmq's lines with no rabbitmqctl counterpart (or printed only when set, as Product *)
SYNCMQ_ONLY = {("Runtime", "Python"), ("Runtime", "Threads"), ("Runtime", "Product name"),
               ("Runtime", "Product version"), ("Data directory", "Journal"),
               ("Memory", "Accounted memory (what the memory alarm compares)")}
JSON_NOT_SHOWN = {"erlang_version": "Python's version is python_version",
                  "crypto_lib_version": "as the Crypto library line",
                  "release_series_support_status": "RabbitMQ's release support",
                  "run_queue": "an Erlang scheduler figure", "net_ticktime": "a single node",
                  "raft_data_directory": "no quorum queues (Raft)"}
JSON_SYNCMQ_ONLY = {"python_version", "journal_bytes"}


def _structure(text: str) -> list[tuple[str, list[str]]]:
    """[(title, [line names])]: a title is a bold line (rabbitmqctl) or a line between two
    blank ones that is not a list item or ``(none)`` (syncmq, not on a terminal)."""
    lines = text.splitlines()[1:]  # the banner
    out: list[tuple[str, list[str]]] = []
    for i, line in enumerate(lines):
        m = TITLE.match(line)
        is_title = m is not None or (
            line and not line.startswith(("(", " * ")) and (i == 0 or not lines[i - 1])
            and i + 1 < len(lines) and not lines[i + 1])
        if is_title:
            out.append((m.group(1) if m else line, []))
        elif out and ": " in line and not line.startswith(" * "):
            out[-1][1].append(line.split(": ")[0])
    return out


def _memory_category(name: str) -> bool:  # the breakdown lines differ by design
    return name not in ("Total memory used", "Calculation strategy",
                        "Memory high watermark setting",
                        "Accounted memory (what the memory alarm compares)")


def _text_view(text: str) -> list:
    """[[title, [line names]]] of a status in text: the Memory breakdown's categories left out
    (they differ by design; rabbitmqctl orders them by size), a Listeners section's names
    deduplicated and sorted (a line per listener, and the nodes have other listeners)."""
    out = []
    for title, names in _structure(text):
        if title == "Memory":
            names = [n for n in names if not _memory_category(n)]
        elif title == "Listeners":
            names = sorted(set(names))
        out.append([title, names])
    return out


def _json_view(text: str) -> dict:
    """The keys of a status in JSON that are compared: the top level's, some objects', the
    first listener's."""
    j = json.loads(text)
    objects = ("file_descriptors", "totals", "processes", "memory",
               "vm_memory_high_watermark_setting")
    return {"keys": sorted(j), "listener": sorted(j["listeners"][0])} | {
        k: sorted(j[k]) for k in objects}


STEPS = [["status"], ["status", "--formatter", "json"]]


def test_status_sections_and_keys_match_rabbitmqctl(request, broker):
    theirs, r_json = rabbitmq_answers(request, STEPS, lambda node: [
        _text_view(node.rabbitmqctl(*STEPS[0]).stdout),
        _json_view(node.rabbitmqctl(*STEPS[1]).stdout)])
    ours, s_json = as_recorded([_text_view(ok(broker, *STEPS[0])),
                                _json_view(ok(broker, *STEPS[1]))])
    assert [t for t, _ in ours] == [t for t, _ in theirs]
    for (title, r_names), (_t, s_names) in zip(theirs, ours, strict=True):
        want = [n for n in r_names if (title, n) not in NOT_SHOWN]
        got = [n for n in s_names if (title, n) not in SYNCMQ_ONLY]
        assert got == want, (title, got, want)
    assert set(s_json["keys"]) - JSON_SYNCMQ_ONLY == set(r_json["keys"]) - set(JSON_NOT_SHOWN)
    for key in ("file_descriptors", "totals", "processes", "listener"):
        assert s_json[key] == r_json[key], key
    assert {"total", "strategy"} <= set(s_json["memory"]) and \
        {"total", "strategy"} <= set(r_json["memory"])
    assert set(s_json["vm_memory_high_watermark_setting"]) <= {"absolute", "relative"}
