"""Vhost limits (issue 16): ``max-connections`` and ``max-queues`` on a real syncmq, through
``/api/vhost-limits``, ``/api/parameters``, definitions and ``syncmqctl``; enforced at
connection.open and queue.declare with RabbitMQ's codes and texts, race-free (racing opens
and declares never both pass), durable across restarts, bad inputs refused with the broker
still serving. The comparison with RabbitMQ itself is
tests/interop/test_vhost_limits_differential.py."""

from __future__ import annotations

import json
import threading
import time

import pika
import pika.exceptions
import pytest
from amqp_helpers import connect
from test_ctl_remote import ctl, fails, ok
from test_management import call

from syncmq.broker.broker import Broker
from syncmq.broker.erlterm import proplist
from syncmq.broker.erlterm import term as erlang_term
from syncmq.broker.vhost_limits import Limits
from syncmq.wire.errors import AMQPChannelError, AMQPConnectionError


def put_limit(b, vhost, name, value, **kw):
    return call(b, "PUT", f"/api/vhost-limits/{vhost}/{name}", {"value": value}, **kw)[:2]


def limits(b, vhost=None):
    status, body, _ = call(b, "GET", "/api/vhost-limits" + (f"/{vhost}" if vhost else ""))
    assert status == 200, body
    return body


def open_to(b, vhost):
    return connect(b.port, virtual_host=vhost)


def refused_open(b, vhost) -> str:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        open_to(b, vhost)
    return str(e.value)


def setup_vhost(b, vhost):
    assert call(b, "PUT", f"/api/vhosts/{vhost}")[0] == 201
    assert call(b, "PUT", f"/api/permissions/{vhost}/guest",
                {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)


def test_api_shapes_and_bad_inputs(broker, unique):
    vh = "vl-" + unique
    setup_vhost(broker, vh)
    assert limits(broker, vh) == []
    assert put_limit(broker, vh, "max-queues", 4) == (204, None)
    assert put_limit(broker, vh, "max-connections", 3) == (204, None)
    assert limits(broker, vh) == [{"vhost": vh, "value": {"max-connections": 3,
                                                           "max-queues": 4}}]
    assert {"vhost": vh, "value": {"max-connections": 3, "max-queues": 4}} in limits(broker)
    status, body, _ = call(broker, "GET", f"/api/parameters/vhost-limits/{vh}")
    assert body == [{"vhost": vh, "component": "vhost-limits", "name": "limits",
                     "value": {"max-connections": 3, "max-queues": 4}}]
    bad = [
        ("max-connections", "3", 'max-connections should be a number, actually was <<"3">>'),
        ("max-connections", 3.5, "max-connections should be a number, actually was 3.5"),
        ("max-queues", 1e3, "max-queues should be a number, actually was 1.0e3"),
        ("max-queues", True, "max-queues should be a number, actually was true"),
        ("max-queues", None, "max-queues should be a number, actually was null"),
        ("max-whatever", 3, 'Unrecognised terms [{<<"max-whatever">>,3}] in limits'),
    ]
    for name, value, text in bad:
        assert put_limit(broker, vh, name, value) == (400, {
            "error": "bad_request", "reason": f"Validation failed\n\n{text}\n"}), name
    assert call(broker, "PUT", f"/api/vhost-limits/{vh}/max-queues", {"valu": 1})[:2] == (
        400, {"error": "bad_request", "reason": "[{key_missing,value}]"})
    assert put_limit(broker, "no-such-vhost-vl", "max-queues", 1) == (
        404, {"error": "not_found", "reason": "vhost_not_found"})
    assert call(broker, "GET", "/api/vhost-limits/no-such-vhost-vl")[0] == 404
    assert call(broker, "DELETE", "/api/vhost-limits/no-such-vhost-vl/max-queues")[0] == 404
    assert call(broker, "GET", f"/api/vhost-limits/{vh}/max-queues")[0] == 405
    assert call(broker, "PUT", f"/api/vhost-limits/{vh}", {"value": 1})[0] == 405
    for value, text in ((5, "limits not a list 5"), ([1], "Unrecognised terms [1] in limits"),
                        ({"max-queues": 1, "max-x": "y", "max-connections": "z"},
                         'Unrecognised terms [{&lt;&lt;"max-x"&gt;&gt;,&lt;&lt;"y"&gt;&gt;}] in '
                         'limits\nmax-connections should be a number, actually was '
                         '&lt;&lt;"z"&gt;&gt;')):
        assert call(broker, "PUT", f"/api/parameters/vhost-limits/{vh}/limits",
                    {"value": value})[:2] == (400, {"error": "bad_request",
                                                    "reason": f"Validation failed\n\n{text}\n"})
    assert call(broker, "PUT", f"/api/parameters/vhost-limits/{vh}/other",
                {"value": {"max-queues": 1}})[0] == 400
    assert limits(broker, vh)[0]["value"] == {"max-connections": 3, "max-queues": 4}
    # clearing one key keeps the other; clearing the last leaves [] (as RabbitMQ)
    assert call(broker, "DELETE", f"/api/vhost-limits/{vh}/max-queues")[0] == 204
    assert limits(broker, vh) == [{"vhost": vh, "value": {"max-connections": 3}}]
    assert call(broker, "DELETE", f"/api/vhost-limits/{vh}/max-connections")[0] == 204
    assert call(broker, "DELETE", f"/api/vhost-limits/{vh}/max-connections")[0] == 204
    assert limits(broker, vh) == []
    assert {"vhost": vh, "value": []} in limits(broker)
    # a management user (not an administrator) may read, not change
    assert call(broker, "PUT", "/api/users/vl-mg", {"password": "pw",
                                                   "tags": "management"})[0] in (201, 204)
    assert call(broker, "PUT", f"/api/vhost-limits/{vh}/max-queues", {"value": 1},
                auth=("vl-mg", "pw"))[0] == 401
    with open_to(broker, vh) as c:  # the broker still serves
        c.channel().queue_declare("", exclusive=True)


def test_connection_limit(broker, unique):
    vh = "vc-" + unique
    setup_vhost(broker, vh)
    assert put_limit(broker, vh, "max-connections", 1)[0] == 204
    first = open_to(broker, vh)
    text = refused_open(broker, vh)
    assert (f"(530) \"NOT_ALLOWED - access to vhost '{vh}' refused for user 'guest': "
            "connection limit (1) is reached\"") in text
    # lowered below what is open: nothing closed, new ones refused
    assert put_limit(broker, vh, "max-connections", 0)[0] == 204
    assert first.is_open
    first.channel().queue_declare("", exclusive=True)
    assert "connection limit (0) is reached" in refused_open(broker, vh)
    # negative: no limit
    assert put_limit(broker, vh, "max-connections", -1)[0] == 204
    second = open_to(broker, vh)
    second.close()
    first.close()
    # the count went back to 0: a limit of 1 admits one again
    assert put_limit(broker, vh, "max-connections", 1)[0] == 204
    with open_to(broker, vh):
        assert "connection limit (1)" in refused_open(broker, vh)
    with open_to(broker, vh):  # the closed one gave its place back
        pass
    assert call(broker, "DELETE", f"/api/vhost-limits/{vh}/max-connections")[0] == 204
    with open_to(broker, vh), open_to(broker, vh):
        pass
    with connect(broker.port) as other:  # other vhosts never counted
        other.channel()


def test_queue_limit(broker, unique):
    vh = "vq-" + unique
    setup_vhost(broker, vh)
    assert put_limit(broker, vh, "max-queues", 2)[0] == 204
    with open_to(broker, vh) as c:
        ch = c.channel()
        ch.queue_declare("q1")
        ch.queue_declare("", exclusive=True)  # server-named and exclusive queues count
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("q3", arguments={"x-max-length": "bad"})  # limit first
        assert e.value.reply_code == 406
        assert e.value.reply_text == (f"PRECONDITION_FAILED - cannot declare queue 'q3': queue "
                                      f"limit in vhost '{vh}' (2) is reached")
        ch = c.channel()
        ch.queue_declare("q1")  # redeclaring and passive declares are never refused
        ch.queue_declare("q1", passive=True)
        status, body, _ = call(broker, "PUT", f"/api/queues/{vh}/q5", {})
        assert (status, body["reason"]) == (
            400, f"cannot declare queue 'q5': queue limit in vhost '{vh}' (2) is reached")
        assert put_limit(broker, vh, "max-queues", 1)[0] == 204  # lowered: both stay
        assert len(call(broker, "GET", f"/api/queues/{vh}")[1]) == 2
        ch.queue_delete("q1")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("q6")
        assert f"queue limit in vhost '{vh}' (1) is reached" in e.value.reply_text
        ch = c.channel()
        assert put_limit(broker, vh, "max-queues", -5)[0] == 204
        ch.queue_declare("q6")
        ch.queue_declare("q7")
        assert put_limit(broker, vh, "max-queues", 0)[0] == 204
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            ch.queue_declare("q8")
        assert call(broker, "DELETE", f"/api/vhost-limits/{vh}/max-queues")[0] == 204
        ch = c.channel()
        ch.queue_declare("q8")
        for q in ("q6", "q7", "q8"):
            ch.queue_delete(q)


def _race(n_threads, fn) -> list:
    results: list = []
    start = threading.Barrier(n_threads)

    def run():
        start.wait()
        results.append(fn())

    threads = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_racing_opens_and_declares_never_pass_the_limit(broker, unique):
    """Twelve clients open at once against max-connections 3 (the broker's workers handle them
    in parallel): exactly 3 get in. Then twelve connections declare a queue each at once
    against max-queues 5: exactly 5 exist."""
    vh = "vr-" + unique
    setup_vhost(broker, vh)
    assert put_limit(broker, vh, "max-connections", 3)[0] == 204

    def try_open():
        try:
            return open_to(broker, vh)
        except pika.exceptions.AMQPConnectionError:
            return None

    opened = [c for c in _race(12, try_open) if c is not None]
    assert len(opened) == 3
    for c in opened:
        c.close()
    assert call(broker, "DELETE", f"/api/vhost-limits/{vh}/max-connections")[0] == 204
    conns = [open_to(broker, vh) for _ in range(12)]
    assert put_limit(broker, vh, "max-queues", 5)[0] == 204
    it = iter(range(12))
    lock = threading.Lock()

    def try_declare():
        with lock:
            i = next(it)
        try:
            conns[i].channel().queue_declare(f"race-{i}")
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False

    assert sorted(_race(12, try_declare)).count(True) == 5
    assert len(call(broker, "GET", f"/api/queues/{vh}")[1]) == 5
    for c in conns:
        c.close()
    assert call(broker, "DELETE", f"/api/vhosts/{vh}")[0] == 204


class _SlowLimits(Limits):
    """Reading the connection count or the queue limit yields the GIL for a while: a check
    made outside the lock that owns the count lets every racer see the old count."""

    __slots__ = ("_n", "_max_q")

    def __init__(self, vhost):
        super().__init__(vhost)
        self._max_q = None

    def _get_n(self):
        time.sleep(0.01)
        return self._n

    def _set_n(self, v):
        self._n = v

    def _get_q(self):
        time.sleep(0.01)
        return self._max_q

    def _set_q(self, v):
        self._max_q = v

    connections = property(_get_n, _set_n)
    max_queues = property(_get_q, _set_q)


def test_checks_are_atomic_with_the_counts():
    """In-process: every racer reads the limit slowly; still exactly the limit passes (the
    check and the count are one step under the count's lock)."""
    b = Broker()
    vh = b.vhosts["/"]
    vh.limits = slow = _SlowLimits("/")
    slow.set({"max-connections": 2, "max-queues": 3})

    def open_one():
        try:
            slow.open_connection("guest")
            return True
        except AMQPConnectionError as e:
            assert "connection limit (2) is reached" in e.reply_text
            return False

    assert _race(8, open_one).count(True) == 2 and slow.connections == 2
    names = iter(range(8))
    lock = threading.Lock()

    def declare_one():
        with lock:
            n = next(names)
        try:
            vh.declare_queue(f"q{n}", False, False, False, False, None, None)
            return True
        except AMQPChannelError as e:
            assert e.reply_code == 406
            return False

    assert _race(8, declare_one).count(True) == 3 and len(vh.queues) == 3


def test_erlang_terms():
    assert [erlang_term(v) for v in (3.5, 1000.0, 100.0, 0.1, 1e20, -2.5, 1e-5)] == [
        "3.5", "1.0e3", "100.0", "0.1", "1.0e20", "-2.5", "1.0e-5"]
    assert proplist([("a", [1, None]), ("x\"y", 2)]) == '[{<<"a">>,[1,null]},{<<"x\\"y">>,2}]'


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_limits_survive_restart_and_vhost_delete_clears(brokers_on_dir, how):
    """On vhost "/" (a users store without a file keeps no permissions over a restart)."""
    start, restart = brokers_on_dir
    b = start()
    assert put_limit(b, "%2F", "max-queues", 1)[0] == 204
    assert put_limit(b, "%2F", "max-connections", 1)[0] == 204
    with connect(b.port) as c:
        c.channel().queue_declare("only", durable=True)
    # a deleted vhost's limits go with it; recreated, it has none
    setup_vhost(b, "gone")
    assert put_limit(b, "gone", "max-queues", 0)[0] == 204
    assert call(b, "DELETE", "/api/vhosts/gone")[0] == 204
    setup_vhost(b, "gone")
    assert limits(b, "gone") == []
    with open_to(b, "gone") as c:
        c.channel().queue_declare("a")
    if how == "kill9":
        b.kill()
    else:
        assert b.stop() == 0
    b2 = restart(b)
    assert limits(b2) == [{"vhost": "/", "value": {"max-connections": 1, "max-queues": 1}}]
    with connect(b2.port) as c:
        assert "connection limit (1)" in refused_open(b2, "/")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            c.channel().queue_declare("second")
        assert "queue limit in vhost '/' (1) is reached" in e.value.reply_text


def test_definitions_round_trip(fresh_broker):
    b = fresh_broker
    setup_vhost(b, "defs")
    assert put_limit(b, "defs", "max-queues", 9)[0] == 204
    d = call(b, "GET", "/api/definitions")[1]
    assert {"vhost": "defs", "component": "vhost-limits", "name": "limits",
            "value": {"max-queues": 9}} in d["parameters"]
    assert call(b, "DELETE", "/api/vhosts/defs")[0] == 204
    assert call(b, "POST", "/api/definitions", d)[0] in (200, 201, 204)
    assert limits(b, "defs") == [{"vhost": "defs", "value": {"max-queues": 9}}]
    # a RabbitMQ export's emptied limits ([]) and a bad value (refused whole, 400)
    d["parameters"] = [{"vhost": "defs", "component": "vhost-limits", "name": "limits",
                        "value": []}]
    assert call(b, "POST", "/api/definitions", d)[0] in (200, 201, 204)
    assert {"vhost": "defs", "value": []} in limits(b)
    d["parameters"][0]["value"] = {"max-queues": "many"}
    status, body, _ = call(b, "POST", "/api/definitions", d)
    assert status == 400 and "max-queues should be a number" in body["reason"]


def test_syncmqctl(fresh_broker):
    b = fresh_broker
    ok(b, "add_vhost", "v2")
    assert ok(b, "set_vhost_limits", "-p", "v2", '{"max-queues": 7, "max-connections": 2}') \
        == 'Setting vhost limits to "{"max-queues": 7, "max-connections": 2}" for vhost "v2" ...\n'
    assert ok(b, "list_vhost_limits", "-p", "v2") == (
        'Listing limits for vhost "v2" ...\n{"max-connections":2,"max-queues":7}\n')
    assert ok(b, "list_vhost_limits", "-p", "v2", "-q") == '{"max-connections":2,"max-queues":7}\n'
    assert json.loads(ok(b, "list_vhost_limits", "-p", "v2", "--formatter", "json")) == {
        "result": "ok", "value": '{"max-connections":2,"max-queues":7}'}
    assert ok(b, "list_vhost_limits") == 'Listing limits for vhost "/" ...\n\n'
    assert ok(b, "list_vhost_limits", "--global") == (
        'Listing limits for all vhosts ...\nvhost\tlimits\nv2\t'
        '{"max-connections":2,"max-queues":7}\n')
    fails(b, "set_vhost_limits", "-p", "v2", '{"max-queues": "x"}',
          msg='Error:\nValidation failed\n\nmax-queues should be a number, actually was <<"x">>\n',
          code=69)
    fails(b, "set_vhost_limits", "-p", "v2", "notjson", msg="JSON decoding error", code=69)
    fails(b, "set_vhost_limits", "-p", "novh", '{"max-queues": 1}',
          msg="Virtual host 'novh' does not exist", code=65)
    fails(b, "list_vhost_limits", "-p", "novh", msg="Virtual host 'novh' does not exist", code=65)
    assert ok(b, "clear_vhost_limits", "-p", "v2") == 'Clearing vhost "v2" limits ...\n'
    fails(b, "clear_vhost_limits", "-p", "v2", msg="Error:\nParameter does not exist", code=69)
    assert ok(b, "list_vhost_limits", "-p", "v2", "-q") == "\n"
    assert ctl(b, "set_vhost_limits", "-p", "v2").returncode == 64  # usage: JSON missing
