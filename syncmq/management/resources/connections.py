"""``/api/connections``, ``/api/channels`` and ``/api/consumers``: monitoring snapshots of the sessions (read through :mod:`..view`), and closing a connection on its worker.

Each endpoint is ``fn(api, req, **path_args) -> Response``; ``api`` is the shared
:class:`~..api.API` (visibility, listings, counters)."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import syncmq.management.state as state
import syncmq.management.view as view

from ...broker.vhost import VirtualHost
from ...methods.session import Session
from ..common import (
    Request,
    Response,
    jsonable,
)
from ..errors import not_found
from ..state import connection_name, open_sessions, peer_parts

if TYPE_CHECKING:
    from ..api import API

log = logging.getLogger("syncmq.management")


def _connection_json(api: API, s: Session) -> dict[str, Any]:
    ph, pp = peer_parts(s.peer)
    h, p = peer_parts(getattr(s.transport, "sockname", ("", 0)))
    props = jsonable(s.client_properties)
    t = s.transport
    return {
        "name": connection_name(s),
        "node": api.ctx.node,
        "vhost": s.vhost.name,
        "user": s.username,
        "state": view.connection_state(s),
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": s.auth_mechanism,
        "ssl": False,
        "host": h, "port": p, "peer_host": ph, "peer_port": pp,
        "channels": len(s.channels),
        "channel_max": s.channel_max,
        "frame_max": s.frame_max,
        "timeout": s.heartbeat,
        "connected_at": int(s.connected_at * 1000),
        "client_properties": props,
        "user_provided_name": props.get("connection_name"),
        **_octets(api, s),
        "send_pend": t.pending_bytes() if hasattr(t, "pending_bytes") else 0,
    }


class _LiveConnections:
    """``("connection", name) in live``: whether that connection is still open."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def __contains__(self, key: Any) -> bool:
        return key[1] in self.names


def _octets(api: API, s: Session) -> dict[str, Any]:
    """``recv_oct``/``send_oct`` and RabbitMQ's ``*_details`` rates of them."""
    t = s.transport
    counts = {"recv_oct": getattr(t, "bytes_in", 0), "send_oct": getattr(t, "bytes_out", 0)}
    key = ("connection", connection_name(s))
    return state.with_details(counts, api.rates.rates(key, counts))


def connections(api: API, req: Request, vhost: str | None = None) -> Response:
    api.rates.forget_missing(("connection",), _LiveConnections(
        {connection_name(s) for s in open_sessions(api.ctx)}))
    return api.listing(req, api.sessions(req, vhost), connection_name,
                       functools.partial(_connection_json, api))


def connection(api: API, req: Request, name: str) -> Response:
    return Response(200, _connection_json(api, api.find_session(req, name)))


def delete_connection(api: API, req: Request, name: str) -> Response:
    s = api.find_session(req, name)
    reason = req.headers.get("x-reason") or "Closed via management plugin"
    api.close(s, f"CONNECTION_FORCED - {reason}")
    return Response(204)


def _channel_json(api: API, s: Session, ch) -> dict[str, Any]:
    cname = connection_name(s)
    name = f"{cname} ({ch.id})"
    counts = state.with_deliver_get(dict(zip(state.STATS, ch.stats(), strict=True)))
    ph, pp = peer_parts(s.peer)
    return {
        "name": name,
        "node": api.ctx.node,
        "number": ch.id,
        "vhost": s.vhost.name,
        "user": s.username,
        "connection_details": {"name": cname, "peer_host": ph, "peer_port": pp},
        "state": "closing" if ch.closing else "running",
        "consumer_count": len(ch.consumers),
        "messages_unacknowledged": view.channel_unacked(ch),
        "messages_unconfirmed": 0,
        "messages_uncommitted": len(ch.tx_publishes),
        "acks_uncommitted": len(ch.tx_acks),
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch,
        "confirm": ch.confirm,
        "transactional": ch.tx,
        "message_stats": state.with_details(
            counts, api.rates.rates(("channel", name), counts)),
    }


def _channel_list(api: API, sessions: list[Session]) -> list[dict[str, Any]]:
    return [_channel_json(api, s, ch) for s in sessions
            for ch in sorted(list(s.channels.values()), key=lambda c: c.id)]


def channels(api: API, req: Request, vhost: str | None = None) -> Response:
    """Every visible channel, with RabbitMQ's paging/filter/sort (``?page=&name=&sort=``)."""
    pairs = [(s, ch) for s in api.sessions(req, vhost)
             for ch in sorted(list(s.channels.values()), key=lambda c: c.id)]
    return api.listing(req, pairs, lambda p: f"{connection_name(p[0])} ({p[1].id})",
                       lambda p: _channel_json(api, *p))


def channel(api: API, req: Request, name: str) -> Response:
    """One channel, with its consumers (``consumer_details``, as RabbitMQ's channel page);
    another user's is 401 but for ``monitoring``/``administrator`` (``API.may_see``)."""
    for s in open_sessions(api.ctx):
        for ch in list(s.channels.values()):
            if f"{connection_name(s)} ({ch.id})" == name:
                api.may_see(req, s.username)
                c = _channel_json(api, s, ch)
                c["consumer_details"] = [
                    d for d in _consumer_list(api, [s.vhost])
                    if d["channel_details"]["name"] == name]
                return Response(200, c)
    raise not_found()


def connection_channels(api: API, req: Request, name: str) -> Response:
    return Response(200, _channel_list(api, [api.find_session(req, name)]))


def _consumer_list(api: API, vhosts: list[VirtualHost],
                   user: str | None = None) -> list[dict[str, Any]]:
    """The consumers on the channels of ``vhosts`` (of ``user``'s connections only, if
    given)."""
    names = {vh.name for vh in vhosts}
    out = []
    for s in open_sessions(api.ctx):
        if s.vhost.name not in names or (user is not None and s.username != user):
            continue
        cname = connection_name(s)
        ph, pp = peer_parts(s.peer)
        for ch in list(s.channels.values()):
            for c in list(ch.consumers.values()):
                out.append({
                    "consumer_tag": c.tag,
                    "queue": {"name": c.queue.name, "vhost": c.queue.vhost},
                    "channel_details": {
                        "name": f"{cname} ({ch.id})", "number": ch.id,
                        "connection_name": cname, "peer_host": ph, "peer_port": pp,
                        "user": s.username, "node": api.ctx.node,
                    },
                    "ack_required": not c.no_ack,
                    "exclusive": c.exclusive,
                    "prefetch_count": c.prefetch,
                    "arguments": jsonable(c.arguments),
                    "active": True,
                    "activity_status": "up",
                })
    return out


def consumers(api: API, req: Request, vhost: str | None = None) -> Response:
    """Every consumer (of one existing vhost: 404 else, whatever the user's permissions),
    as RabbitMQ's ``/api/consumers``: only those of the user's own connections but for
    ``monitoring``/``administrator`` users."""
    broker = api.ctx.broker
    if vhost is None:
        vhosts = list(broker.vhosts.values())
    elif (vh := broker.vhosts.get(vhost)) is not None:
        vhosts = [vh]
    else:
        raise not_found()
    user = None if api.sees_all(req.user) else req.user.name
    return Response(200, _consumer_list(api, vhosts, user))
