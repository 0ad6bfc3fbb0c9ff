"""Differential suite: the scripted pika sessions of ``scenarios.py`` run against syncmq and
against a private RabbitMQ node started for the test session; their transcripts (methods,
reply codes and texts, message order, flags, properties, headers) must be equal.

``scenarios_ext.RESTART_SCENARIOS`` restart each broker in the middle (RabbitMQ with
``rabbitmqctl stop_app``/``start_app``, syncmq with SIGTERM and a start on the same data dir).
``scenarios_ext.USER_SCENARIOS`` run the same way as non-guest users on several vhosts: the
RabbitMQ node gets ``scenarios_ext.USERS``/``VHOSTS`` through ``rabbitmqctl``, syncmq the same
through a users file.

A scenario in ``scenarios.KNOWN_DIFFERENCES`` is a documented difference (see
docs/compatibility.md): it is expected to differ (strict xfail), so the day syncmq matches
RabbitMQ there the test says so and the entry must go.
"""

from __future__ import annotations

import os
import pprint
import subprocess

import pytest

pytest.importorskip("pika", reason="pika is not installed")
import scenarios  # noqa: E402  (tests/interop is on sys.path)
import scenarios_ext  # noqa: E402,F401  (registers the extension scenarios)


def _params():
    for name in scenarios.SCENARIOS:
        marks = []
        if name in scenarios.KNOWN_DIFFERENCES:
            marks.append(pytest.mark.xfail(strict=True,
                                           reason=scenarios.KNOWN_DIFFERENCES[name]))
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_same_transcript(rabbitmq, broker, name):
    prefix = f"diff-{os.urandom(4).hex()}"
    expected = scenarios.run(rabbitmq.port, prefix, name)
    got = scenarios.run(broker.port, prefix, name)
    assert got == expected, (
        f"{name}: syncmq and RabbitMQ differ\n--- RabbitMQ\n{pprint.pformat(expected)}\n"
        f"--- syncmq\n{pprint.pformat(got)}")


@pytest.fixture(scope="module")
def rabbit_users(rabbitmq):
    """The RabbitMQ node with scenarios_ext's users, vhosts and permissions."""
    def ctl(*args):
        r = subprocess.run([rabbitmq.ctl, "-n", rabbitmq.node, *args], env=rabbitmq.env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    for vhost in scenarios_ext.VHOSTS:
        if vhost != "/":
            ctl("add_vhost", vhost)
    for user, (password, perms) in scenarios_ext.USERS.items():
        if user != "guest":
            ctl("add_user", user, password)
        for vhost, (c, w, r) in perms.items():
            ctl("set_permissions", "-p", vhost, user, c, w, r)
    yield rabbitmq
    for vhost in scenarios_ext.VHOSTS:
        if vhost != "/":
            ctl("delete_vhost", vhost)
    for user in scenarios_ext.USERS:
        if user != "guest":
            ctl("delete_user", user)


@pytest.fixture(scope="module")
def users_broker(tmp_path_factory):
    """A syncmq with the same users, vhosts and permissions (a users file)."""
    from brokerproc import start_broker

    from syncmq.broker.auth import Permission, User, UserStore, hash_password, save
    users = {name: User(name, hash_password(pw), ["administrator"] if name == "guest" else [],
                        {v: Permission(*p) for v, p in perms.items()})
             for name, (pw, perms) in scenarios_ext.USERS.items()}
    path = tmp_path_factory.mktemp("diff-users") / "users.toml"
    save(UserStore(users, list(scenarios_ext.VHOSTS), []), str(path))
    b = start_broker(tmp_path_factory, "--users-file", str(path))
    yield b
    assert b.stop() == 0, b.log_tail()


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=scenarios.KNOWN_DIFFERENCES[n])]
                 if n in scenarios.KNOWN_DIFFERENCES else [], id=n)
    for n in sorted(scenarios_ext.USER_SCENARIOS)])
def test_same_transcript_with_users(rabbit_users, users_broker, name):
    prefix = f"diff-{os.urandom(4).hex()}"
    fn = scenarios_ext.USER_SCENARIOS[name]
    expected = scenarios.run_fn(rabbit_users.port, prefix, fn)
    got = scenarios.run_fn(users_broker.port, prefix, fn)
    assert got == expected, (
        f"{name}: syncmq and RabbitMQ differ\n--- RabbitMQ\n{pprint.pformat(expected)}\n"
        f"--- syncmq\n{pprint.pformat(got)}")


@pytest.mark.parametrize("name", sorted(scenarios_ext.RESTART_SCENARIOS))
def test_same_transcript_across_restart(rabbitmq, fresh_broker, name):
    def restart_rabbit():
        for cmd in (["stop_app"], ["start_app"], ["await_startup", "--timeout", "120"]):
            r = subprocess.run([rabbitmq.ctl, "-n", rabbitmq.node, *cmd], env=rabbitmq.env,
                               capture_output=True, text=True, timeout=150)
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        return rabbitmq.port

    def restart_syncmq():
        assert fresh_broker.stop() == 0
        return fresh_broker.start().port

    prefix = f"diff-{os.urandom(4).hex()}"
    fn = scenarios_ext.RESTART_SCENARIOS[name]
    expected = scenarios.run_fn(rabbitmq.port, prefix, lambda s: fn(s, restart_rabbit))
    got = scenarios.run_fn(fresh_broker.port, prefix, lambda s: fn(s, restart_syncmq))
    assert got == expected, (
        f"{name}: syncmq and RabbitMQ differ\n--- RabbitMQ\n{pprint.pformat(expected)}\n"
        f"--- syncmq\n{pprint.pformat(got)}")
