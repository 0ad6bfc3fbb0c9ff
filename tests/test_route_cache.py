"""A channel's cached route (``methods.basic.publish``, ``Channel.route_*``) lives from one
read to the next while the vhost's route generation holds (``VirtualHost.routes_changed``).

Each test publishes one method again and again from a raw connection (the protocol's pre-pass
reuses the decoded method, so the publish takes the cached path), one publish a read, each
confirmed before the next (so each is handled alone, in its own batch), and changes what the
route depends on from *another* connection (or the management API) in between: nothing on the
publisher's connection tells it that its route changed, only the generation. Each test fails
if the invalidation of its change is removed (broken on purpose for each when written: the
bump in ``declare_queue``, ``_delete_queue_locked``, ``bind``, ``unbind``,
``_delete_exchange_locked`` and ``PolicyRegistry._reapply``; the ``tx`` and topic checks of
the cached path).
"""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request

import pika
import pytest
from amqp_helpers import connection, wait_until
from amqp_raw import FRAME_BODY, FRAME_HEADER, FRAME_METHOD, connect

import syncmq
from syncmq.wire import _spec
from syncmq.wire.frames import encode_frame

B = _spec.Basic
CF = _spec.Confirm
TX = _spec.Tx
EX = _spec.Exchange


def _publish_frames(exchange: str, rk: str, body: bytes = b"x") -> bytes:
    return (encode_frame(FRAME_METHOD, 1, B.Publish(exchange=exchange, routing_key=rk).encode())
            + encode_frame(FRAME_HEADER, 1, struct.pack(">HHQ", 60, 0, len(body)) + b"\x00\x00")
            + encode_frame(FRAME_BODY, 1, body))


class _Publisher:
    """A raw connection that publishes one method, one publish a read, each confirmed
    (``confirm``) or followed by a round trip on its channel before the next."""

    def __init__(self, port: int, exchange: str, rk: str, confirm: bool = True,
                 **handshake) -> None:
        self.c = connect(port, **handshake)
        self.c.open_channel(1)
        self.confirm = confirm
        if confirm:
            self.c.send_method(1, CF.Select())
            self.c.expect_method(1, CF.SelectOk)
        self.frames = _publish_frames(exchange, rk)
        self.n = 0

    def publish(self) -> None:
        """Publish and wait until the broker handled it."""
        self.c.send(self.frames)
        self.n += 1
        if self.confirm:
            assert self.c.expect_method(1, B.Ack).delivery_tag == self.n
        else:  # (basic.qos flushes the channel's held publishes before its answer)
            self.c.send_method(1, B.Qos())
            self.c.expect_method(1, B.QosOk)

    def close(self) -> None:
        self.c.close()

    def __enter__(self) -> _Publisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def other(broker):
    """Another connection's channel: the one that changes the topology."""
    with connection(broker.port) as c:
        yield c.channel()


def _count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def _http(broker, method: str, path: str, body=None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{broker.management_port}/api{path}",
                                 data=data, method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _exchange_with_alternate(ch, name: str) -> str:
    """A direct exchange ``name`` whose alternate exchange (a fanout) routes to the queue
    ``name + '-alt'``: where a publish its bindings do not route goes; returns that queue."""
    alt = name + "-alt"
    ch.exchange_declare(alt, "fanout")
    ch.queue_declare(alt)
    ch.queue_bind(alt, alt)
    ch.exchange_declare(name, "direct", arguments={"alternate-exchange": alt})
    return alt


def _bound_with_alternate(ch, name: str) -> str:
    """:func:`_exchange_with_alternate` with the queue ``name`` bound to it by the key "k";
    returns the alternate's queue."""
    alt = _exchange_with_alternate(ch, name)
    ch.queue_declare(name)
    ch.queue_bind(name, name, "k")
    return alt


def test_a_queue_declared_after_a_cached_unroutable_publish_gets_the_next(
        broker, other, unique) -> None:
    with _Publisher(broker.port, "", unique) as p:
        p.publish()  # (no such queue: unroutable, and that route is cached)
        other.queue_declare(unique)
        p.publish()
        assert _count(other, unique) == 1


def test_a_queue_deleted_under_a_cached_route_no_longer_takes_the_next(
        broker, other, unique) -> None:
    alt = _bound_with_alternate(other, unique)
    with _Publisher(broker.port, unique, "k") as p:
        p.publish()
        assert (_count(other, unique), _count(other, alt)) == (1, 0)
        other.queue_delete(unique)  # (its binding goes with it: the exchange routes nowhere)
        p.publish()
        assert _count(other, alt) == 1


def test_an_exclusive_queue_deleted_with_its_connection_no_longer_takes_the_next(
        broker, other, unique) -> None:
    alt = _exchange_with_alternate(other, unique)
    owner = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    och = owner.channel()
    och.queue_declare(unique, exclusive=True)
    och.queue_bind(unique, unique, "k")
    p = _Publisher(broker.port, unique, "k")
    try:
        p.publish()
        assert _count(och, unique) == 1
        owner.close()

        def gone() -> bool:  # (the queue goes once the broker has seen the close)
            try:
                other.connection.channel().queue_declare(unique, passive=True)
            except pika.exceptions.ChannelClosedByBroker as e:
                assert e.reply_code == 404
                return True
            return False
        wait_until(other.connection, gone, what="the exclusive queue's deletion")
        p.publish()
        assert _count(other, alt) == 1
    finally:
        p.close()
        if owner.is_open:
            owner.close()


def test_a_binding_added_under_a_cached_route_takes_the_next(broker, other, unique) -> None:
    other.queue_declare(unique)
    with _Publisher(broker.port, "amq.direct", unique) as p:
        p.publish()  # (unbound key: unroutable)
        other.queue_bind(unique, "amq.direct", unique)
        p.publish()
        assert _count(other, unique) == 1


def test_a_binding_removed_under_a_cached_route_no_longer_takes_the_next(
        broker, other, unique) -> None:
    alt = _bound_with_alternate(other, unique)
    with _Publisher(broker.port, unique, "k") as p:
        p.publish()
        other.queue_unbind(unique, unique, "k")
        p.publish()
        assert (_count(other, unique), _count(other, alt)) == (1, 1)


def test_a_binding_downstream_of_an_exchange_to_exchange_binding_takes_the_next(
        broker, other, unique) -> None:
    # the published-to exchange's own bindings do not change: only its destination's
    down = unique + "-down"
    other.exchange_declare(unique, "direct")
    other.exchange_declare(down, "direct")
    other.exchange_bind(down, unique, "k")
    other.queue_declare(unique)
    with _Publisher(broker.port, unique, "k") as p:
        p.publish()  # (the downstream exchange routes nowhere yet)
        other.queue_bind(unique, down, "k")
        p.publish()
        assert _count(other, unique) == 1
        other.exchange_unbind(down, unique, "k")
        p.publish()
        assert _count(other, unique) == 1


def test_an_exchange_deleted_under_a_cached_route_refuses_the_next(
        broker, other, unique) -> None:
    other.exchange_declare(unique, "fanout")
    other.queue_declare(unique)
    other.queue_bind(unique, unique)
    with _Publisher(broker.port, unique, "") as p:
        p.publish()
        other.exchange_delete(unique)
        p.c.send(p.frames)
        assert p.c.expect_close()[0] == 404
        assert _count(other, unique) == 1


def test_an_alternate_exchange_set_and_removed_by_a_policy_applies_to_the_next(
        broker, other, unique) -> None:
    alt = unique + "-alt"
    other.exchange_declare(alt, "fanout")
    other.queue_declare(alt)
    other.queue_bind(alt, alt)
    other.exchange_declare(unique, "direct")
    p = _Publisher(broker.port, unique, "k")
    policy = f"/policies/%2F/{unique}"
    try:
        p.publish()  # (no binding, no alternate: unroutable)
        assert _http(broker, "PUT", policy, {
            "pattern": f"^{unique}$", "apply-to": "exchanges",
            "definition": {"alternate-exchange": alt}}) in (201, 204)
        p.publish()
        assert _count(other, alt) == 1
        assert _http(broker, "DELETE", policy) == 204
        p.publish()
        assert _count(other, alt) == 1
    finally:
        _http(broker, "DELETE", policy)
        p.close()


def test_a_channel_that_turned_transactional_holds_the_next_until_commit(
        broker, other, unique) -> None:
    other.queue_declare(unique)
    with _Publisher(broker.port, "", unique, confirm=False) as p:
        p.publish()
        p.c.send_method(1, TX.Select())
        p.c.expect_method(1, TX.SelectOk)
        p.publish()
        assert _count(other, unique) == 1
        p.c.send_method(1, TX.Commit())
        p.c.expect_method(1, TX.CommitOk)
        assert _count(other, unique) == 2


def test_a_topic_permission_set_under_a_cached_route_refuses_the_next(
        broker, other, unique) -> None:
    user = unique
    assert _http(broker, "PUT", f"/users/{user}", {"password": "pw", "tags": ""}) in (201, 204)
    assert _http(broker, "PUT", f"/permissions/%2F/{user}",
                 {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)
    other.queue_declare(unique)
    other.queue_bind(unique, "amq.topic", "a.#")
    p = _Publisher(broker.port, "amq.topic", "a.b", user=user, password="pw")
    try:
        p.publish()
        assert _http(broker, "PUT", f"/topic-permissions/%2F/{user}",
                     {"exchange": "amq.topic", "write": "^z", "read": ".*"}) in (201, 204)
        p.c.send(p.frames)
        assert p.c.expect_close()[0] == 403
        assert _count(other, unique) == 1
    finally:
        p.close()
        _http(broker, "DELETE", f"/users/{user}")


def test_write_permission_revoked_by_a_users_file_reload_refuses_the_next(tmp_path) -> None:
    """A reload empties each channel's permission caches (``access.clear_caches``); a cached
    route skips the write check its first publish made, so the reload drops it too."""
    from syncmq.broker.auth import hash_password

    users = tmp_path / "users.toml"
    text = (f'vhosts = ["/"]\nloopback_users = []\n[users.app]\n'
            f'password_hash = "{hash_password("pw")}"\ntags = []\n'
            f'[users.app.permissions."/"]\nconfigure = ".*"\nwrite = ".*"\nread = ".*"\n')
    users.write_text(text)
    with syncmq.Server(users_file=str(users)) as s:
        creds = pika.PlainCredentials("app", "pw")
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", s.port,
                                                              credentials=creds))
        ch = c.channel()
        ch.queue_declare("q")
        p = _Publisher(s.port, "", "q", user="app", password="pw")
        try:
            p.publish()
            p.publish()
            users.write_text(text.replace('write = ".*"', 'write = "^$"'))
            assert s.reload_users()
            p.c.send(p.frames)
            assert p.c.expect_close()[0] == 403
            assert _count(ch, "q") == 2
        finally:
            p.close()
            c.close()


def test_an_alternate_exchange_declared_under_a_cached_route_takes_the_next(
        broker, other, unique) -> None:
    """An exchange's alternate that did not exist when the route was cached: declaring it
    (no binding of its own, but an alternate of its own that routes) changes the route."""
    ae1, ae2, qalt = unique + "-ae1", unique + "-ae2", unique + "-alt"
    other.exchange_declare(ae2, "fanout")
    other.queue_declare(qalt)
    other.queue_bind(qalt, ae2)
    other.exchange_declare(unique, "direct", arguments={"alternate-exchange": ae1})
    with _Publisher(broker.port, unique, "k") as p:
        p.publish()  # (its alternate does not exist: unroutable, and that route is cached)
        other.exchange_declare(ae1, "fanout", arguments={"alternate-exchange": ae2})
        p.publish()
        assert _count(other, qalt) == 1
