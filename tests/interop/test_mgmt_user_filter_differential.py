"""Whose connections, channels and consumers a user without ``monitoring`` sees in the
management API, against RabbitMQ 3.10.8 and syncmq.

RabbitMQ's management plugin (``rabbit_mgmt_util:filter_conn_ch_list``/``filter_user``) shows
a user tagged ``management`` (or ``policymaker``) only their own connections and channels,
whatever vhosts they may use; ``administrator`` and ``monitoring`` see every one. syncmq
filtered them by vhost, so a ``management`` user saw the connections of everyone in its
vhosts; reading another's connection or channel is 401, closing one's own is allowed.
A vhost's listing needs permissions on it (401) but for ``/api/consumers/{vhost}``. Both
brokers get the same users (a ``management`` user and a ``monitoring`` one, both
with permissions on ``/``) and the same clients (guest and the management user each connect
to ``/`` and consume), and every answer's owners (and the status of the single-object reads
of guest's connection and channel) are compared.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import pika
import test_rabbitmqadmin as ra
from interop_helpers import api

rabbit_mgmt = ra.rabbit_mgmt  # the RabbitMQ node's management port, once it answers
TIMEOUT = 60.0
MGMT, MON, PW = "mgmt-filter-user", "mon-filter-user", "pw-filter"
LISTS = ("/connections", "/vhosts/%2F/connections", "/channels", "/vhosts/%2F/channels",
         "/consumers", "/consumers/%2F")


def _setup_users(port: int) -> None:
    assert api(port, "PUT", "/vhosts/filter-vh")[0] in (201, 204)  # none of theirs
    for user, tags in ((MGMT, "management"), (MON, "monitoring")):
        assert api(port, "PUT", f"/users/{user}", {"password": PW, "tags": tags})[0] in (201, 204)
        assert api(port, "PUT", f"/permissions/%2F/{user}",
                   {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)


def _client(amqp_port: int, user: str, password: str, queue: str) -> pika.BlockingConnection:
    c = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", amqp_port, "/", pika.PlainCredentials(user, password),
        client_properties={"connection_name": f"filter-{user}"}))
    ch = c.channel()
    ch.queue_declare(queue, auto_delete=True)
    ch.basic_consume(queue, lambda *a: None)
    return c


def _owners(items: list, key: str) -> list[str]:
    """The owners of ours among the listed objects (other tests' clients are left out)."""
    users = {"guest", MGMT}
    if key == "consumers":
        got = [i["channel_details"]["user"] for i in items]
    else:
        got = [i["user"] for i in items]
    return sorted(u for u in got if u in users)


def _wait_listed(port: int) -> dict:
    """guest's view once both clients are in every listing (RabbitMQ's statistics come on a
    timer: polled, with a deadline)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        views = {p: api(port, "GET", p)[1] for p in LISTS}
        if all(_owners(v, "consumers" if "consumers" in p else "")[-2:] == ["guest", MGMT]
               for p, v in views.items() if isinstance(v, list)):
            return views
        if time.monotonic() > deadline:
            raise AssertionError(f"never listed both clients: {views}")
        time.sleep(0.2)


def _view(amqp_port: int, port: int, unique: str) -> dict:
    _setup_users(port)
    clients = [_client(amqp_port, "guest", "guest", f"{unique}-g"),
               _client(amqp_port, MGMT, PW, f"{unique}-m")]
    try:
        guest_view = _wait_listed(port)
        guest_conn = next(c["name"] for c in guest_view["/connections"]
                          if c.get("user_provided_name") == "filter-guest")
        guest_ch = next(c["name"] for c in guest_view["/channels"]
                        if c["connection_details"]["name"] == guest_conn)
        own_conn = next(c["name"] for c in guest_view["/connections"]
                        if c.get("user_provided_name") == f"filter-{MGMT}")
        own_ch = next(c["name"] for c in guest_view["/channels"]
                      if c["connection_details"]["name"] == own_conn)
        out = {}
        for user in (MGMT, MON):
            for p in LISTS:
                status, body = api(port, "GET", p, user=user, password=PW)
                out[user, p] = (status, _owners(body, "consumers" if "consumers" in p else ""))
            for p in (f"/connections/{quote(guest_conn, safe='')}",
                      f"/connections/{quote(guest_conn, safe='')}/channels",
                      f"/channels/{quote(guest_ch, safe='')}",
                      f"/connections/{quote(own_conn, safe='')}",
                      f"/connections/{quote(own_conn, safe='')}/channels",
                      f"/channels/{quote(own_ch, safe='')}",
                      "/vhosts/filter-vh/connections", "/vhosts/filter-vh/channels",
                      "/consumers/filter-vh"):
                status, body = api(port, "GET", p, user=user, password=PW)
                out[user, p.replace(quote(guest_conn, safe=""), "GUEST")
                    .replace(quote(guest_ch, safe=""), "GUEST-CH")
                    .replace(quote(own_conn, safe=""), "OWN")
                    .replace(quote(own_ch, safe=""), "OWN-CH")] = (
                        status, body if status >= 400 else None)
        for user, pw in ((MGMT, PW), (MON, PW), ("guest", "guest")):
            for p in ("/vhosts/nope-vh/connections", "/vhosts/nope-vh/channels",
                      "/consumers/nope-vh", "/vhosts/filter-vh/connections",
                      "/consumers/filter-vh"):
                status, body = api(port, "GET", p, user=user, password=pw)
                out["vhosts", user, p] = (status, body)
        out["unknown"] = api(port, "GET", "/connections/no-such-conn", user=MGMT, password=PW)
        # closing: another's (monitoring may read it, not close it), then its own
        for user, name in ((MON, guest_conn), (MGMT, guest_conn), (MGMT, own_conn)):
            status, body = api(port, "DELETE", f"/connections/{quote(name, safe='')}",
                               user=user, password=PW)
            out["delete", user, name == own_conn] = (status, body)
        return out
    finally:
        for c in clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - a connection the DELETE closed
                pass
        for user in (MGMT, MON):
            api(port, "DELETE", f"/users/{user}")
        api(port, "DELETE", "/vhosts/filter-vh")


def test_a_management_user_sees_only_its_own_connections_like_rabbitmq(
        rabbitmq, rabbit_mgmt, broker, unique):
    rabbit = _view(rabbitmq.port, rabbit_mgmt, unique)
    ours = _view(broker.port, broker.management_port, unique)
    # an unknown connection asked by a user without monitoring: RabbitMQ 3.10.8 crashes in
    # is_authorized_user (500, empty body); syncmq answers what everyone else gets, 404
    assert rabbit.pop("unknown")[0] == 500
    assert ours.pop("unknown") == (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert ours == rabbit
    assert rabbit[MGMT, "/connections"] == (200, [MGMT])
    assert rabbit[MON, "/connections"] == (200, ["guest", MGMT])
    assert rabbit[MGMT, "/connections/GUEST"] == (401, {
        "error": "not_authorised", "reason": "User not authorised to access object"})
    assert rabbit["delete", MGMT, True] == (204, None)
