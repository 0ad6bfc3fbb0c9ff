"""A vhost created through the management API or a definitions import survives a restart
(issue #16: vhost limits, policies and parameters live on vhosts; RabbitMQ keeps every vhost):
VHOST_ADD and VHOST_DELETE are journaled and answered after the fsync. And without
``--users-file`` the users store lives in ``<data-dir>/users.toml`` (with one, in that file),
so with or without a users file, after a SIGTERM restart or a kill -9, the same vhosts exist
(a deleted one stays deleted), with the same vhost limits, policies, operator policies,
runtime and global parameters, users, permissions, topic permissions and user limits; the
limits, policies and topic permissions are in force on the recovered vhost (max-queues
refuses with RabbitMQ's text, a policy trims a recovered queue, a publish outside the topic
permission is refused)."""

from __future__ import annotations

import signal

import pika
import pika.exceptions
import pytest
from amqp_helpers import connect
from test_management import call
from test_user_rules import _file

UP = {"uri": "amqp://upstream", "max-hops": 1}
STATE = ["/api/vhost-limits", "/api/policies", "/api/operator-policies", "/api/parameters",
         "/api/global-parameters"]
USER_STATE = ["/api/topic-permissions", "/api/user-limits"]


def _ok(b, auth, method, path, body=None):
    status, answer, _ = call(b, method, path, body, auth=auth)
    assert status in (200, 201, 204), (method, path, status, answer)
    return answer


def _snapshot(b, auth) -> dict:
    paths = STATE + USER_STATE
    out = {p: _ok(b, auth, "GET", p) for p in paths}
    out["vhosts"] = sorted(v["name"] for v in _ok(b, auth, "GET", "/api/vhosts"))
    return out


def _setup(b, auth, user) -> None:
    for vh in ("dur", "empty", "gone"):
        assert call(b, "PUT", f"/api/vhosts/{vh}", auth=auth)[0] == 201
    _ok(b, auth, "PUT", "/api/vhost-limits/dur/max-queues", {"value": 2})
    _ok(b, auth, "PUT", "/api/vhost-limits/dur/max-connections", {"value": 5})
    _ok(b, auth, "PUT", "/api/policies/dur/trim", {"pattern": "^q", "definition": {
        "max-length": 1}, "apply-to": "queues", "priority": 2})
    _ok(b, auth, "PUT", "/api/operator-policies/dur/cap", {"pattern": ".*", "definition": {
        "message-ttl": 600000}})
    _ok(b, auth, "PUT", "/api/parameters/federation-upstream/dur/up", {"value": UP})
    _ok(b, auth, "PUT", "/api/global-parameters/dur-global", {"value": {"a": 1}})
    _ok(b, auth, "PUT", "/api/topic-permissions/dur/" + user,
        {"exchange": "amq.topic", "write": "^w", "read": "^r"})
    _ok(b, auth, "PUT", f"/api/user-limits/{user}/max-channels", {"value": 40})
    _ok(b, auth, "PUT", "/api/users/made", {"password": "made-pw", "tags": ""})
    # a durable queue in "dur" (held back by the policy) and one in "gone"
    with connect(b.port, virtual_host="dur", credentials=pika.PlainCredentials(*auth)) as c:
        ch = c.channel()
        ch.queue_declare("q1", durable=True)
        for i in range(3):
            ch.basic_publish("", "q1", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    with connect(b.port, virtual_host="gone", credentials=pika.PlainCredentials(*auth)) as c:
        c.channel().queue_declare("gq", durable=True)
    _ok(b, auth, "PUT", "/api/vhost-limits/gone/max-queues", {"value": 9})
    assert call(b, "DELETE", "/api/vhosts/gone", auth=auth)[0] == 204
    # a vhost that comes from a definitions import, with its limits
    _ok(b, auth, "POST", "/api/definitions", {
        "vhosts": [{"name": "imported"}],
        "parameters": [{"vhost": "imported", "component": "vhost-limits", "name": "limits",
                        "value": {"max-connections": 3}}]})


@pytest.mark.parametrize("users_file", [False, True], ids=["memory-users", "users-file"])
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_vhosts_and_their_settings_survive_restart(brokers_on_dir, tmp_path, users_file, how):
    start, restart = brokers_on_dir
    extra = ("--users-file", _file(tmp_path)) if users_file else ()
    auth = ("admin", "admin-pw") if users_file else ("guest", "guest")
    b = start(*extra)
    _setup(b, auth, auth[0])
    before = _snapshot(b, auth)
    assert before["vhosts"] == ["/", "dur", "empty", "imported"]
    assert {"vhost": "dur", "value": {"max-queues": 2, "max-connections": 5}} in \
        before["/api/vhost-limits"]
    if how == "kill9":
        b.stop(signal.SIGKILL)
    else:
        assert b.stop() == 0
    b = restart(b, *extra)
    assert _snapshot(b, auth) == before
    assert call(b, "GET", "/api/users/made", auth=auth)[0] == 200
    with connect(b.port, virtual_host="dur", credentials=pika.PlainCredentials(*auth)) as c:
        ch = c.channel()
        assert ch.queue_declare("q1", passive=True).method.message_count == 1
        assert ch.basic_get("q1", auto_ack=True)[2] == b"2"  # trimmed from the head
        ch.queue_declare("q2")
        ch.basic_publish("amq.topic", "w.ok", b"x")  # write allowed by the topic permission
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("q3")
        assert e.value.reply_code == 406
        assert e.value.reply_text == ("PRECONDITION_FAILED - cannot declare queue 'q3': "
                                      "queue limit in vhost 'dur' (2) is reached")
        ch = c.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.basic_publish("amq.topic", "nope", b"x")
            ch.queue_declare("q1", passive=True)  # a round trip: the refusal arrives
        assert e.value.reply_code == 403
    assert call(b, "GET", "/api/vhosts/gone", auth=auth)[0] == 404
    # deleted after the restart, it stays deleted after the next one
    assert call(b, "DELETE", "/api/vhosts/empty", auth=auth)[0] == 204
    b.stop(signal.SIGKILL)
    b = restart(b, *extra)
    assert call(b, "GET", "/api/vhosts/empty", auth=auth)[0] == 404
    assert call(b, "GET", "/api/vhosts/dur", auth=auth)[0] == 200
