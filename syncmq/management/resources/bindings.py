"""``/api/bindings``: listings, a queue's bindings, and bindings between one exchange and one
queue or exchange, created (``POST``), read and deleted by their properties key, as
RabbitMQ's ``rabbit_mgmt_wm_bindings``/``rabbit_mgmt_wm_binding``.

A binding is created and removed through :meth:`VirtualHost.bind`/``unbind``, the same code
path (checks, journal) as ``queue.bind``/``exchange.bind`` over AMQP.

Each endpoint is ``fn(api, req, **path_args) -> Response``; ``api`` is the shared
:class:`~..api.API` (visibility, listings, counters)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, unquote_plus

import syncmq.management.validate as validate

from ...broker.queue import Queue
from ...broker.vhost import VirtualHost
from ...wire.errors import AMQPChannelError, AMQPConnectionError
from .. import access
from ..common import (
    Request,
    Response,
    _amqp_error,
    _properties_key,
    jsonable,
)
from ..errors import HTTPError, access_refused, bad_request, not_found

if TYPE_CHECKING:
    from ..api import API

log = logging.getLogger("syncmq.management")


def _binding_list(api: API, vhosts: list[VirtualHost]) -> list[dict[str, Any]]:
    out = []
    for vh in vhosts:
        for q in sorted(list(vh.queues.values()), key=lambda q: q.name):
            out.append(_binding_json(api, vh.name, "", q, q.name, {}))
        for ex in sorted(list(vh.exchanges.values()), key=lambda e: e.name):
            if ex.name == "":
                continue
            for dest, key, args in ex.matcher.bindings():
                out.append(_binding_json(api, vh.name, ex.name, dest, key, args))
    return out


def _binding_json(api: API, vhost: str, source: str, dest, key: str, args: dict):
    return {"source": source, "vhost": vhost, "destination": dest.name,
            "destination_type": "queue" if isinstance(dest, Queue) else "exchange",
            "routing_key": key, "arguments": jsonable(args),
            "properties_key": _properties_key(key, args)}


def bindings(api: API, req: Request, vhost: str | None = None) -> Response:
    return Response(200, _binding_list(api, api.visible_vhosts(req, vhost)))


def queue_bindings(api: API, req: Request, vhost: str, name: str) -> Response:
    vh, q = api.get_queue(req, vhost, name)
    return Response(200, [b for b in _binding_list(api, [vh])
                          if b["destination_type"] == "queue" and b["destination"] == name])


def _between(api: API, req: Request, vhost: str, source: str, dtype: str, dest: str):
    """The vhost, source exchange and destination named by a bindings path (404 when one of
    them does not exist, or ``dtype`` is neither ``q`` nor ``e``)."""
    if dtype not in ("q", "e"):
        raise not_found()
    vh, ex = api.get_exchange(req, vhost, source)
    table = vh.queues if dtype == "q" else vh.exchanges
    destination = table.get("" if dtype == "e" and dest == "amq.default" else dest)
    if destination is None:
        raise not_found()
    return vh, ex, destination


def _raw_between(vh: VirtualHost, ex, destination) -> list[tuple[Any, str, dict]]:
    """The bindings from ``ex`` to ``destination`` as ``(destination, key, arguments)``."""
    if ex.name == "":  # the default exchange's implicit binding, by the queue's name
        return [(destination, destination.name, {})] if isinstance(destination, Queue) else []
    return ex.matcher.bindings_for(destination)


def bindings_between(api: API, req: Request, vhost: str, source: str, dtype: str,
                     dest: str) -> Response:
    vh, ex, destination = _between(api, req, vhost, source, dtype, dest)
    return Response(200, [_binding_json(api, vh.name, ex.name, d, key, args)
                          for d, key, args in _raw_between(vh, ex, destination)])


def _find(api: API, req: Request, vhost: str, source: str, dtype: str, dest: str,
          props: str) -> tuple[VirtualHost, Any, Any, str, dict]:
    """The binding whose properties key is ``props``: ``(vhost, source, destination, routing
    key, arguments)``, or 404."""
    vh, ex, destination = _between(api, req, vhost, source, dtype, dest)
    want = _unpack(props)
    for d, key, args in _raw_between(vh, ex, destination):
        if _unpack(_properties_key(key, args)) == want:
            return vh, ex, d, key, args
    raise not_found()


def _unpack(props: str) -> tuple[str, str | None]:
    """A properties key as RabbitMQ reads it (``unpack_binding_props``): the unquoted routing
    key and the arguments' hash (None without), so ``a.*`` finds the binding listed as
    ``a.%2A`` (rabbitmqadmin passes the routing key as typed)."""
    if props == "~":
        return "", None
    key, sep, digest = props.partition("~")
    return unquote_plus(key), (digest if sep else None)


def binding(api: API, req: Request, vhost: str, source: str, dtype: str, dest: str,
            props: str) -> Response:
    vh, ex, d, key, args = _find(api, req, vhost, source, dtype, dest, props)
    return Response(200, _binding_json(api, vh.name, ex.name, d, key, args))


def _post_target(api: API, req: Request, vhost: str, source: str, dtype: str, dest: str):
    """What a bind names, refused as RabbitMQ's bind through its channel refuses it: the
    default exchange (401 "Access refused."), then a missing destination, then a missing
    source (404 ``not_found`` naming it)."""
    if dtype not in ("q", "e"):
        raise not_found()
    vh = api.ctx.broker.vhosts.get(vhost)
    if vh is None or not api.visible(req.user, vhost):
        raise HTTPError(404, "not_found", "vhost_not_found")
    access.resource(req, vhost, _bind_checks(source, dtype, dest))
    if source in ("", "amq.default") or (dtype == "e" and dest in ("", "amq.default")):
        raise access_refused()
    what, table = ("queue", vh.queues) if dtype == "q" else ("exchange", vh.exchanges)
    for kind, name, tab in ((what, dest, table), ("exchange", source, vh.exchanges)):
        if name not in tab:
            raise HTTPError(404, "not_found", f"no {kind} '{name}' in vhost '{vhost}'")
    return vh, vh.exchanges[source], table[dest]


def _bind_checks(source: str, dtype: str, dest: str) -> list[tuple[str, str, str]]:
    """What a bind or unbind needs, as RabbitMQ's channel checks it: write on the
    destination, then read on the source (``access.resource``)."""
    src = "" if source == "amq.default" else source
    return [("write", "queue" if dtype == "q" else "exchange", dest),
            ("read", "exchange", src)]


def _check_topic(api: API, req: Request, vhost: str, source: str, key: str) -> None:
    """The HTTP user's topic permission (read on the binding key) on a topic source, as
    RabbitMQ's bind through its channel checks it: refused is 401 "Access refused."."""
    vh = api.ctx.broker.vhosts.get(vhost)
    ex = vh.exchanges.get(source) if vh is not None else None
    if ex is not None and ex.type == "topic":
        t = req.user.topic_permission(vhost, source)
        if t is not None and not t.allows("read", key):
            raise access_refused()


def post_binding(api: API, req: Request, vhost: str, source: str, dtype: str,
                 dest: str) -> Response:
    """Bind; 201 with ``Location`` the new binding's path relative to the request's, as
    RabbitMQ's (``{destination}/{properties key}``)."""
    body = validate.obj(req.body)
    key = body.get("routing_key", "")
    if not isinstance(key, str):
        raise bad_request("routing_key must be a string")
    if len(key.encode()) > 255:
        raise bad_request("routing_key is longer than 255 bytes")
    args = validate.arguments(body)
    _check_topic(api, req, vhost, source, key)
    vh, ex, destination = _post_target(api, req, vhost, source, dtype, dest)
    try:
        vh.bind(ex.name, destination, key, args)
    except (AMQPChannelError, AMQPConnectionError) as e:
        raise _amqp_error(e) from None
    # RabbitMQ form-quotes each path segment again, the properties key included
    location = quote_plus(dest, safe="") + "/" + quote_plus(_properties_key(key, args), safe="")
    return Response(201, None, [("Location", location)])


def delete_binding(api: API, req: Request, vhost: str, source: str, dtype: str, dest: str,
                   props: str) -> Response:
    vh, ex, d, key, args = _find(api, req, vhost, source, dtype, dest, props)
    access.resource(req, vhost, _bind_checks(source, dtype, dest))
    _check_topic(api, req, vhost, source, key)
    try:
        vh.unbind(ex.name, d, key, args)
    except (AMQPChannelError, AMQPConnectionError) as e:
        raise _amqp_error(e) from None
    return Response(204)
