"""Differential (issue #16): ``syncmqctl``'s policy, operator policy, vhost limit, user limit,
topic permission and runtime parameter verbs against ``rabbitmqctl`` 3.10.8's answers, with
the same arguments in rabbitmqctl's forms (``-p``, ``--priority``,
``--apply-to`` before or after the positionals, ``--user``, ``--global``, ``-q``,
``--formatter json``): the same exit codes, the same standard output (banners, tables,
values) and the same error line for a refused value.

Normalised: nothing in standard output. On failure the first line of RabbitMQ's error
(``Error:`` and the reason on the next line) is compared, rabbitmqctl's usage hints after it
are not printed by syncmqctl. Listings are filtered to this run's objects (the node is
shared with other interop tests).

rabbitmqctl's answers are the ones recorded in tests/fixtures/ctl_transcripts.json (run on
the private node, ctl_transcripts.py says when they are read live instead and how to
re-record): the steps run on a vhost and a user of fixed names (``ctlr-rec``, ``ctlu-rec``),
which only this test makes, on a node and a broker no other run shares."""

from __future__ import annotations

import json

from ctl_transcripts import as_recorded, rabbitmq_answers
from test_ctl_remote import ctl as syncmqctl

VH, USER = "ctlr-rec", "ctlu-rec"


def _steps(vh: str, user: str) -> list[tuple]:
    p = ("-p", vh)
    return [
        ("list_policies", *p),
        ("list_policies", *p, "-q"),
        ("list_operator_policies", *p, "-q"),
        ("list_topic_permissions", *p),
        ("list_topic_permissions", *p, "-q"),
        ("list_parameters", *p),
        ("set_policy", *p, "--priority", "3", "--apply-to", "queues", "lim", "^q",
         '{"max-length":5,"message-ttl":1000}'),
        ("set_policy", *p, "ae", "^x", '{"alternate-exchange":"u"}', "--apply-to",
         "exchanges"),
        ("set_policy", *p, "dls", "^d", '{"dead-letter-strategy":"at-most-once"}'),
        ("list_policies", *p),
        ("list_policies", *p, "-q"),
        ("set_operator_policy", *p, "--priority", "1", "--apply-to", "queues", "cap", ".*",
         '{"max-length":10}'),
        ("list_operator_policies", *p),
        ("set_operator_policy", *p, "bad", ".*", '{"overflow":"drop-head"}'),
        ("set_policy", *p, "bad", "^a", '{"max-priority":3}'),
        ("set_policy", *p, "bad", "^a", '{"foo":1}'),
        ("set_policy", *p, "bad", "^a", "notjson"),
        ("clear_policy", *p, "ae"),
        ("clear_policy", *p, "ae"),
        ("clear_operator_policy", *p, "cap"),
        ("list_policies", *p),
        ("set_vhost_limits", *p, '{"max-queues":4,"max-connections":2}'),
        ("list_vhost_limits", *p),
        ("set_vhost_limits", *p, '{"max-queues":"x"}'),
        ("clear_vhost_limits", *p),
        ("list_vhost_limits", *p, "-q"),
        ("set_user_limits", user, '{"max-channels":3}'),
        ("set_user_limits", user, '{"max-connections":2}'),
        ("list_user_limits", "--user", user),
        ("set_user_limits", user, '{"max-channels":"x"}'),
        ("clear_user_limits", user, "max-channels"),
        ("list_user_limits", "--user", user, "-q"),
        ("clear_user_limits", user, "all"),
        ("set_topic_permissions", *p, user, "amq.topic", "^{username}", "^r"),
        ("set_topic_permissions", *p, user, "x.y", "w", "r"),
        ("list_topic_permissions", *p),
        ("list_topic_permissions", *p, "--formatter", "json"),
        ("list_user_topic_permissions", user),
        ("clear_topic_permissions", *p, user, "x.y"),
        ("list_user_topic_permissions", user, "-q"),
        ("set_parameter", *p, "federation-upstream", "up", '{"uri":"amqp://localhost:1"}'),
        ("list_parameters", *p),
        ("list_parameters", *p, "--formatter", "json"),
        ("clear_parameter", *p, "federation-upstream", "up"),
        ("clear_parameter", *p, "federation-upstream", "up"),
        ("list_parameters", *p, "-q"),
        ("list_parameters", *p),
        ("list_user_topic_permissions", user),
    ]


def _run(run, vh: str, user: str) -> list:
    """The steps' outcomes, on a vhost and a user made for them (set-up and clean-up not
    compared: rabbitmqctl's add_user prints a hint syncmqctl does not)."""
    for s in (("add_vhost", vh), ("add_user", user, "pw"),
              ("set_permissions", "-p", vh, user, ".*", ".*", ".*")):
        assert run(*s).returncode == 0, s
    try:
        return [_outcome(run(*s)) for s in _steps(vh, user)]
    finally:
        run("delete_vhost", vh)
        run("delete_user", user)


def _sorted_rows(out):
    """rabbitmqctl lists topic permissions in its table's (hash) order: rows compared as a
    set (the banner and header lines stay first)."""
    if isinstance(out, list):
        return sorted(out, key=lambda r: json.dumps(r, sort_keys=True))
    lines = out.splitlines()
    head = [ln for ln in lines if ln.endswith("...") or ln.startswith("user\t")]
    return head + sorted(ln for ln in lines if ln not in head)


def _outcome(r) -> list:
    err = [line for line in r.stderr.splitlines() if line.strip()]
    if r.returncode != 0 and err and err[0] == "Error:":
        err = err[:2]
    elif r.returncode != 0:
        err = err[:1]
    else:
        err = []
    out = r.stdout
    if out.lstrip().startswith("["):
        out = json.loads(out)
    # the exit code itself: rabbitmqctl's sysexits codes, syncmqctl's (syncmq.ctl_errors)
    return [r.returncode, _sorted_rows(out), err]


def test_rule_verbs_same_as_rabbitmqctl(request, broker):
    steps = _steps(VH, USER)
    theirs = rabbitmq_answers(
        request, steps, lambda node: _run(lambda *a: node.rabbitmqctl(*a, check=False), VH,
                                          USER))
    ours = as_recorded(_run(lambda *a: syncmqctl(broker, *a), VH, USER))
    diffs = [f"{step}\n  syncmqctl:   {o}\n  rabbitmqctl: {t}"
             for step, t, o in zip(steps, theirs, ours, strict=True) if o != t]
    assert not diffs, "\n".join(diffs)
    # what the comparison covers (both failing alike cannot pass)
    assert [o[0] for o in ours].count(0) >= 30
