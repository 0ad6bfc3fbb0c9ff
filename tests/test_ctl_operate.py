"""syncmqctl's operating verbs against a live broker (issue 17): ``await_startup``,
``list_user_permissions``, ``authenticate_user``, ``close_connection``,
``close_all_connections``, ``environment`` and ``--formatter json|table|pretty_table``, with
rabbitmqctl's argument forms."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from amqp_helpers import connect
from test_ctl_remote import ctl, fails, ok
from test_management import call, get


def test_formatters(broker):
    table = ok(broker, "list_users")
    # rabbitmqctl's (tests/interop/test_ctl_formatters_diff.py compares them)
    assert "user\ttags" in table.splitlines() and "guest\t[administrator]" in table
    as_json = json.loads(ok(broker, "--formatter", "json", "list_users"))
    assert {"user": "guest", "tags": ["administrator"]} in as_json
    assert json.loads(ok(broker, "list_users", "--formatter", "json")) == as_json
    pretty = ok(broker, "-q", "list_users", "--formatter", "pretty_table").splitlines()
    assert pretty[0].startswith("+-") and pretty[0] == pretty[2] == pretty[-1]
    assert [c.strip() for c in pretty[1].strip("|").split("|")] == ["user", "tags"]
    assert any("guest" in line and "administrator" in line for line in pretty[3:-1])
    r = ctl(broker, "list_users", "--formatter", "yaml")
    assert r.returncode == 64 and "invalid choice" in r.stderr  # rabbitmqctl's EX_USAGE


def test_list_user_permissions(broker):
    rows = json.loads(ok(broker, "--formatter", "json", "list_user_permissions", "guest"))
    assert {"vhost": "/", "configure": ".*", "write": ".*", "read": ".*"} in rows
    out = ok(broker, "list_user_permissions", "guest").splitlines()
    assert out[0] == 'Listing permissions for user "guest" ...'
    assert out[1] == "vhost\tconfigure\twrite\tread" and "/\t.*\t.*\t.*" in out
    fails(broker, "list_user_permissions", "nobody", msg='{:no_such_user, "nobody"}', code=69)


def test_authenticate_user(broker, unique):
    out = ok(broker, "authenticate_user", "guest", "guest")
    assert out.splitlines() == ['Authenticating user "guest" ...', "Success"]
    fails(broker, "authenticate_user", "guest", "wrong",
          msg='Error:\nError: failed to authenticate user "guest"', code=65)
    fails(broker, "authenticate_user", "nobody", "x", msg='failed to authenticate user', code=65)
    # a user without management tags has valid credentials all the same
    ok(broker, "add_user", unique, "pw")
    try:
        assert ok(broker, "authenticate_user", unique, "pw").splitlines()[-1] == "Success"
    finally:
        ok(broker, "delete_user", unique)


def test_authenticate_user_fails_when_the_answer_is_not_a_login_verdict(broker):
    """Only a refused login or a valid one without management tags is a verdict; a broker
    that cannot answer (here: a URL where the management API answers 404) is a failure,
    not Success."""
    r = ctl(broker, "authenticate_user", "guest", "guest",
            url=f"http://127.0.0.1:{broker.management_port}/nothing-here")
    assert r.returncode == 69 and "Success" not in r.stdout


def _open(broker, name: str) -> pika.BlockingConnection:
    return connect(broker.port, client_properties={"connection_name": name})


def _name_of(broker, user_name: str) -> str:
    for c in get(broker, "/api/connections"):
        if c["user_provided_name"] == user_name:
            return c["name"]
    raise AssertionError(f"no connection {user_name}")


def _closed_with(conn: pika.BlockingConnection) -> tuple[int, str]:
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        while True:
            conn.process_data_events(0.1)
    return e.value.reply_code, e.value.reply_text


def test_close_connection(broker, unique):
    victim, bystander = _open(broker, unique), _open(broker, unique + "-other")
    name = _name_of(broker, unique)
    out = ok(broker, "close_connection", name, "go away")
    assert out.splitlines()[0] == f"Closing connection {name}, reason: go away..."
    assert _closed_with(victim) == (320, "CONNECTION_FORCED - go away")
    assert bystander.channel().queue_declare("", exclusive=True)  # still served
    bystander.close()
    fails(broker, "close_connection", "1.2.3.4:5 -> 6.7.8.9:10", "x",
          msg="Connection '1.2.3.4:5 -> 6.7.8.9:10' does not exist", code=69)


def test_close_all_connections(broker, unique):
    vhost = unique
    assert call(broker, "PUT", f"/api/vhosts/{quote(vhost, safe='')}", {})[0] == 201
    # the vhost's creator already has full permissions on it (RabbitMQ's rule): 204
    assert call(broker, "PUT", f"/api/permissions/{quote(vhost, safe='')}/guest",
                {"configure": ".*", "write": ".*", "read": ".*"})[0] == 204
    inside = [connect(broker.port, virtual_host=vhost) for _ in range(3)]
    outside = _open(broker, unique + "-out")
    ok(broker, "close_all_connections", "-p", vhost, "maintenance")
    for c in inside:
        assert _closed_with(c) == (320, "CONNECTION_FORCED - maintenance")
    assert outside.channel().queue_declare("", exclusive=True)  # other vhosts untouched
    # --limit: at most N of them
    more = [connect(broker.port, virtual_host=vhost) for _ in range(3)]
    ok(broker, "close_all_connections", "-p", vhost, "--limit", "1", "one")
    closed = 0
    for c in more:
        try:
            c.channel()
        except pika.exceptions.AMQPError:
            closed += 1
    assert closed == 1, closed
    for c in more:
        if c.is_open:
            c.close()
    outside.close()
    # a missing vhost has no connections: nothing closed, as rabbitmqctl (exit 0)
    assert ok(broker, "close_all_connections", "-p", "no-such-vhost", "x").splitlines() == [
        "Closing all connections in vhost no-such-vhost, reason: x...", "Closed 0 connections"]


def test_environment(broker):
    env = json.loads(ok(broker, "--formatter", "json", "environment"))
    assert f"amqp 127.0.0.1:{broker.port}" in env["listeners"]
    assert env["node"] and env["version"] and "PLAIN" in env["auth_mechanisms"]
    text = ok(broker, "environment").splitlines()
    assert text[0].startswith("Application environment of node ")
    assert any(line.startswith("listeners: ") for line in text)


def test_await_startup(broker, tmp_path):
    assert ok(broker, "-q", "await_startup") == ""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = subprocess.run([sys.executable, "-m", "syncmq.ctl", "await_startup", "--timeout", "1",
                        "--management-url", dead], capture_output=True, text=True, timeout=60)
    assert r.returncode == 69 and "cannot reach the management API" in r.stderr
    assert r.stdout == ""  # rabbitmqctl prints nothing on stdout for a node it cannot reach
