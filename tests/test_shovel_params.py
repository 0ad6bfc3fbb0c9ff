"""Shovels as runtime parameters of a real syncmq process: set and refused through
``PUT /api/parameters/shovel/...`` and ``syncmqctl set_parameter``, surviving a kill -9 (the
parameter is journaled; the shovel starts again at recovery), deleted with
``syncmqctl delete_shovel``."""

from __future__ import annotations

import base64
import html
import json
import urllib.error
import urllib.request

import pika
from test_ctl_remote import fails, ok
from test_shovel import drain, publish, wait_for

import syncmq


def call(b, method, path, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{b.management_port}/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                 "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text else None


def running(b, name):
    code, rows = call(b, "GET", "shovels/%2F")
    return code == 200 and any(r["name"] == name and r["state"] == "running" for r in rows)


def test_shovel_parameter_survives_kill_9(brokers_on_dir):
    start, restart = brokers_on_dir
    a = start()
    dest = syncmq.Server().start()
    try:
        value = {"src-uri": "amqp://", "src-queue": "out",
                 "dest-uri": f"amqp://guest:guest@127.0.0.1:{dest.port}", "dest-queue": "in"}
        # a bad definition: RabbitMQ's 400 and text, nothing stored, the broker serves on
        code, body = call(a, "PUT", "parameters/shovel/%2F/s", {"value": {"src-uri": "amqp://"}})
        assert code == 400 and html.unescape(body["reason"]) == (
            "Validation failed\n\nMust specify 'src-exchange' or 'src-queue'\n"
            'Key "dest-uri" not found in s\n')
        assert call(a, "GET", "parameters/shovel/%2F/s")[0] == 404
        assert call(a, "PUT", "parameters/shovel/%2F/s", {"value": value})[0] == 201
        assert call(a, "GET", "parameters/shovel/%2F/s")[1]["value"] == value
        wait_for(lambda: running(a, "s"), what="the shovel running")
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", a.port))
        publish(c.channel(), "out", 50)
        c.close()
        cd = pika.BlockingConnection(pika.URLParameters(dest.url))
        chd = cd.channel()
        assert [n for n, _, _ in drain(chd, "in", 50)] == list(range(50))
        a.kill()
        a = restart(a)
        wait_for(lambda: running(a, "s"), what="the shovel back after kill -9")
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", a.port))
        publish(c.channel(), "out", 20, start=50)
        c.close()
        assert [n for n, _, _ in drain(chd, "in", 20)] == list(range(50, 70))
        # syncmqctl: set_parameter (a second shovel), shovel_status, delete_shovel
        ok(a, "set_parameter", "shovel", "t", json.dumps(dict(value, **{"src-queue": "o2"})))
        wait_for(lambda: running(a, "t"), what="the shovel set by syncmqctl")
        out = ok(a, "delete_shovel", "t")
        assert "Deleting shovel t in vhost /" in out
        assert call(a, "GET", "parameters/shovel/%2F/t")[0] == 404
        assert [r["name"] for r in call(a, "GET", "shovels")[1]] == ["s"]
        fails(a, "delete_shovel", "t", msg="Shovel with the given name was not found", code=69)
        cd.close()
    finally:
        dest.stop()


def test_direct_uri_needs_the_users_access_to_its_vhost(broker):
    """RabbitMQ's validate_params_user: a policymaker of one vhost may not point a shovel's
    amqp:// (this broker, reached with the trusted internal login) at another vhost."""
    assert call(broker, "PUT", "vhosts/pm-v1")[0] in (201, 204)
    assert call(broker, "PUT", "users/pm", {"password": "pw", "tags": "policymaker"})[0] in (
        201, 204)
    assert call(broker, "PUT", "permissions/pm-v1/pm",
                {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)

    def put_as_pm(value):
        req = urllib.request.Request(
            f"http://127.0.0.1:{broker.management_port}/api/parameters/shovel/pm-v1/s",
            method="PUT", data=json.dumps({"value": value}).encode(),
            headers={"Authorization": "Basic " + base64.b64encode(b"pm:pw").decode(),
                     "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    base = {"src-queue": "q", "dest-uri": "amqp:///pm-v1", "dest-queue": "q2",
            "reconnect-delay": 0}
    code, body = put_as_pm(dict(base, **{"src-uri": "amqp://"}))  # vhost "/"
    assert code == 400 and html.unescape(body["reason"]) == (
        'Validation failed\n\nuser "pm" may not connect to vhost "/"\n'), body
    code, body = put_as_pm(dict(base, **{"src-uri": ["amqp://u:p@elsewhere/", "amqp:///x"]}))
    assert code == 400 and "vhost" in body["reason"] and "x" in body["reason"], body
    assert put_as_pm(dict(base, **{"src-uri": "amqp:///pm-v1"}))[0] == 201
    # the administrator without permissions on a vhost is refused the same way
    assert call(broker, "PUT", "vhosts/pm-v2")[0] in (201, 204)
    # (creating it gave the creator full permissions on it, as RabbitMQ's PUT /api/vhosts)
    assert call(broker, "DELETE", "permissions/pm-v2/guest")[0] == 204
    assert call(broker, "PUT", "parameters/shovel/pm-v1/t", {"value": dict(
        base, **{"src-uri": "amqp:///pm-v2"})})[0] == 400
    call(broker, "DELETE", "parameters/shovel/pm-v1/s")
    call(broker, "DELETE", "users/pm")
    call(broker, "DELETE", "vhosts/pm-v1")
    call(broker, "DELETE", "vhosts/pm-v2")
