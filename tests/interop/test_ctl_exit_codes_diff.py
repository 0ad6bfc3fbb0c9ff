"""Differential: ``syncmqctl``'s exit codes against ``rabbitmqctl`` 3.10.8's (sysexits: 64
usage, 65 data, 67 no such user, 69 unavailable/refused, 70 software), for the user, vhost,
queue, permission, connection, parameter, policy and shovel error cases, with the same
arguments: the same exit code, the same standard output (banners) and the same
error line, except where a case says why not.

And the unreachable node: rabbitmqctl exits 69 with nothing on standard output and
``Error: unable to perform an operation on node ...`` first on standard error; syncmqctl
the same (its management API URL in place of the node name, then its own hints).

rabbitmqctl's answers (what is compared of them) are the ones recorded in
tests/fixtures/ctl_transcripts.json, run on the private RabbitMQ node; ctl_transcripts.py says
when they are read live instead and how to re-record. The cases run on a vhost, a user and
queues of fixed names (``ctlx-rec``, ...), which only this test makes, on a node and a broker
no other run shares."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pika
import pytest
from ctl_transcripts import as_recorded, rabbitmq_answers
from test_ctl_remote import ctl as syncmqctl

from syncmq import ctl as ctl_module

NOV, NOU, NOQ = "ctlx-novh", "ctlx-nouser", "ctlx-noq"
VH, USER, QFULL, QUSED = "ctlx-rec", "ctlxu-rec", "ctlx-full-rec", "ctlx-used-rec"

# why a case's error text (the exit code and standard output are still compared) or standard
# output differs: the third item of a case names what is not compared
USAGE_TEXT = {"text": "usage texts: rabbitmqctl's, argparse's"}
PATH_FIRST = {"text": "rabbitmqctl checks the path before it connects (a usage text)",
              "stdout": "so it prints no banner"}
PROMPT = {"stdout": "rabbitmqctl prompts 'Password:' on standard output"}
NODE_NAMED = {"text": "rabbitmqctl names its Erlang node in the message"}


def _cases(vh: str, user: str, qfull: str, qused: str) -> list[tuple[tuple, int, dict]]:
    """(arguments, rabbitmqctl's exit code as measured on 3.10.8, what is not compared)."""
    p = ("-p", NOV)
    return [
        (("add_user", user, "pw"), 70, {}),
        (("add_vhost", vh), 0, {}),
        (("delete_user", NOU), 67, {}),
        (("change_password", NOU, "x"), 67, {}),
        (("set_user_tags", NOU, "a"), 67, {}),
        (("add_user", f"{user}-new"), 65, PROMPT),  # no password, empty stdin (new_password)
        (("change_password", user), 70, PROMPT),  # the same (rabbitmqctl's own code)
        (("delete_vhost", NOV), 65, {}),
        (("set_vhost_limits", *p, '{"max-queues":1}'), 65, {}),
        (("authenticate_user", user, "wrong"), 65, {}),
        (("authenticate_user", NOU, "wrong"), 65, {}),
        (("export_definitions", "/nonexistent-ctlx/dir/x.json"), 65, PATH_FIRST),
        (("import_definitions", "/nonexistent-ctlx/x.json"), 65, PATH_FIRST),
        (("delete_queue", NOQ), 64, {}),
        (("delete_queue", "--if-empty", qfull), 64, {}),
        (("delete_queue", "--if-unused", qused), 64, {}),
        (("purge_queue", NOQ), 69, {"text": "rabbitmqctl prints the Erlang atom not_found"}),
        (("list_queues", *p), 0, {"stdout": "rabbitmqctl prints a Timeout line, and no "
                                            "header for no rows"}),
        (("list_queues", "badkey"), 64, {}),
        (("bogus_command",), 64, USAGE_TEXT),
        (("delete_user",), 64, USAGE_TEXT),
        (("delete_user", "a", "b"), 64, USAGE_TEXT),
        (("list_queues", "--bogus"), 64, USAGE_TEXT),
        (("status", "--unit", "bogus"), 64, USAGE_TEXT),
        (("set_permissions", *p, user, ".*", ".*", ".*"), 69, {}),
        (("set_permissions", NOU, ".*", ".*", ".*"), 67, {}),
        (("set_permissions", user, "(", ".*", ".*"), 69, {"text": "the regex engines' messages "
                                                             "(Erlang re, Python re)"}),
        (("clear_permissions", *p, user), 69, {}),
        (("clear_permissions", NOU), 67, {}),
        (("list_permissions", *p), 65, {}),
        (("list_user_permissions", NOU), 69, {}),
        (("close_connection", "nosuch", "reason"), 69, {"text": "rabbitmqctl names a "
                                                        "connection by Erlang pid, syncmq by "
                                                        "name"}),
        (("close_all_connections", *p, "reason"), 0, {}),
        (("await_startup",), 0, {}),
        (("set_topic_permissions", NOU, "amq.topic", "w", "r"), 67, {}),
        (("set_topic_permissions", *p, user, "amq.topic", "w", "r"), 69, {}),
        (("clear_topic_permissions", NOU), 67, {}),
        (("clear_topic_permissions", *p, user), 69, {}),
        (("list_topic_permissions", *p), 65, {}),
        (("list_user_topic_permissions", NOU), 69, {}),
        (("set_user_limits", NOU, '{"max-channels":1}'), 69, {}),
        (("clear_user_limits", NOU, "all"), 69, {}),
        (("list_user_limits", "--user", NOU), 69, {}),
        (("clear_vhost_limits", "-p", vh), 69, {}),
        (("list_vhost_limits", *p), 65, {}),
        (("set_parameter", *p, "federation-upstream", "up", '{"uri":"amqp://x"}'), 65, {}),
        (("clear_parameter", "-p", vh, "federation-upstream", "up"), 69, {}),
        (("list_parameters", *p), 65, {}),
        (("clear_global_parameter", "ctlx-nog"), 69, {}),
        (("set_policy", *p, "pol", ".*", '{"max-length":1}'), 65, {}),
        (("set_policy", "-p", vh, "pol", ".*", '{"foo":1}'), 69, {}),
        (("clear_policy", "-p", vh, "nopol"), 69, {}),
        (("list_policies", *p), 65, {}),
        (("clear_operator_policy", "-p", vh, "nopol"), 69, {}),
        (("list_operator_policies", *p), 65, {}),
        (("delete_shovel", "-p", vh, "nosh"), 69, NODE_NAMED),
        (("restart_shovel", "-p", vh, "nosh"), 69, {**NODE_NAMED,
                                                    "stdout": "and in the banner"}),
    ]


def _reason(stderr: str) -> str:
    """The error's first line (the line after a bare ``Error:``)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if lines and lines[0] == "Error:":
        lines = lines[1:]
    return lines[0] if lines else ""


@contextlib.contextmanager
def _queues(port: int, qfull: str, qused: str):
    """A queue holding a message and a queue with a consumer, on the broker at ``port``."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        ch = conn.channel()
        ch.queue_declare(qfull)
        ch.queue_declare(qused)
        ch.confirm_delivery()
        ch.basic_publish("", qfull, b"m")
        ch.basic_consume(qused, lambda *a: None)
        yield
    finally:
        with contextlib.suppress(Exception):
            ch.queue_delete(qfull)
            ch.queue_delete(qused)
        conn.close()


CASES = _cases(VH, USER, QFULL, QUSED)


def _answer(r: subprocess.CompletedProcess | None, skip: dict) -> list | None:
    """What is compared of an outcome: [exit code, error line, standard output], None for a
    part the case does not compare; None for no outcome (not a verb of the mode)."""
    if r is None:
        return None
    return [r.returncode, None if "text" in skip else _reason(r.stderr),
            None if "stdout" in skip else r.stdout]


def _run(run, port: int) -> list:
    for s in (("add_vhost", VH), ("add_user", USER, "pw")):
        assert run(*s).returncode == 0, s
    try:
        with _queues(port, QFULL, QUSED):
            return as_recorded([_answer(run(*args), skip) for args, _code, skip in CASES])
    finally:
        run("delete_vhost", VH)
        run("delete_user", USER)


def _compare(theirs: list, ours: list, mode: str) -> list[str]:
    diffs = []
    for (args, code, _skip), t, o in zip(CASES, theirs, ours, strict=True):
        if o is None:  # not a verb of this mode
            continue
        if t[0] != code:  # what the cases say is what rabbitmqctl does
            diffs.append(f"{args}: rabbitmqctl exited {t[0]}, the case says {code}")
        if o != t:
            diffs.append(f"{args} ({mode})\n  syncmqctl:   {o}\n  rabbitmqctl: {t}")
    return diffs


def test_exit_codes_same_as_rabbitmqctl(request, broker, tmp_path):
    """Both modes: the management API's, and ``--users-file`` for the verbs it has (the same
    cases on a users file holding the same user and vhost)."""
    def rabbit(node):
        return lambda *args: subprocess.run(
            [node.ctl, "-n", node.node, *args], env=node.env, input="", capture_output=True,
            text=True, timeout=120)

    users_file = str(tmp_path / "users.toml")

    def offline(*args):
        if args[0] not in ctl_module.VERBS and args[0] != "bogus_command":
            return None
        return subprocess.run([sys.executable, "-m", "syncmq.ctl", *args, "--users-file",
                               users_file], input="", capture_output=True, text=True,
                              timeout=60)

    steps = [[list(args), sorted(skip)] for args, _code, skip in CASES]
    theirs = rabbitmq_answers(request, steps, lambda node: _run(rabbit(node), node.port))
    ours = _run(lambda *a: syncmqctl(broker, *a, stdin=""), broker.port)
    in_file = _run(offline, broker.port)
    diffs = _compare(theirs, ours, "remote") + _compare(theirs, in_file, "--users-file")
    assert not diffs, "\n".join(diffs)
    # every kind is covered (a mapping that gives one code to all cannot pass), in both modes
    assert {code for _a, code, _s in CASES} == {0, 64, 65, 67, 69, 70}
    assert {a[0] for a in in_file if a} == {0, 64, 65, 67, 69, 70}


HEAD = "Error: unable to perform an operation on node "


def _unreachable(r: subprocess.CompletedProcess) -> list:
    """What is compared: the exit code, standard output, the start of standard error."""
    return [r.returncode, r.stdout, r.stderr[:len(HEAD)]]


@pytest.mark.parametrize("args", [("list_queues",), ("-q", "delete_user", "x"), ("status",)],
                         ids=["list_queues", "quiet_delete_user", "status"])
def test_unreachable_node_same_as_rabbitmqctl(request, args):
    """A node that is not there: 69, nothing on standard output (no banner), the same first
    words on standard error."""
    def rabbit(node):
        return [_unreachable(subprocess.run(
            [node.ctl, "-n", "ctlx-nonexistent@localhost", *args], env=node.env, input="",
            capture_output=True, text=True, timeout=120))]

    [theirs] = rabbitmq_answers(request, [list(args)], rabbit)
    ours = as_recorded(_unreachable(syncmqctl(None, *args, url="http://127.0.0.1:9",
                                              stdin="")))
    assert theirs == ours == [69, "", HEAD]
