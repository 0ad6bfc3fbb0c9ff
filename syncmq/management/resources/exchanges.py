"""``/api/exchanges``: listing, declaring, deleting, and their bindings as source or destination.

Each endpoint is ``fn(api, req, **path_args) -> Response``; ``api`` is the shared
:class:`~..api.API` (visibility, listings, counters)."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import syncmq.management.validate as validate

from ...wire.errors import AMQPChannelError, AMQPConnectionError
from .. import access
from ..common import (
    _EXCHANGE_SORTS,
    Request,
    Response,
    _amqp_error,
    jsonable,
)
from ..errors import bad_request, not_found
from . import bindings

if TYPE_CHECKING:
    from ..api import API

log = logging.getLogger("syncmq.management")


def _exchange_json(api: API, ex) -> dict[str, Any]:
    out = {"name": ex.name, "vhost": ex.vhost, "type": ex.type, "durable": ex.durable,
           "auto_delete": ex.auto_delete, "internal": ex.internal,
           "arguments": jsonable(ex.arguments), "user_who_performed_action": ""}
    if ex.policy is not None:  # RabbitMQ shows the field only when a policy applies
        out["policy"] = ex.policy.name
    return out


def exchanges(api: API, req: Request, vhost: str | None = None) -> Response:
    exs = [ex for vh in api.visible_vhosts(req, vhost)
           for ex in sorted(list(vh.exchanges.values()), key=lambda e: e.name)]
    return api.listing(req, exs, lambda e: e.name,
                       functools.partial(_exchange_json, api), _EXCHANGE_SORTS)


def exchange(api: API, req: Request, vhost: str, name: str) -> Response:
    vh, ex = api.get_exchange(req, vhost, name)
    out = _exchange_json(api, ex)
    out["outgoing"], out["incoming"] = [], []
    return Response(200, out)


def exchange_bindings_source(api: API, req: Request, vhost: str, name: str) -> Response:
    vh, ex = api.get_exchange(req, vhost, name)
    return Response(200, [b for b in bindings._binding_list(api, [vh]) if b["source"] == ex.name])


def exchange_bindings_destination(api: API, req: Request, vhost: str, name: str) -> Response:
    vh, ex = api.get_exchange(req, vhost, name)
    return Response(200, [b for b in bindings._binding_list(api, [vh])
                          if b["destination_type"] == "exchange"
                          and b["destination"] == ex.name])


def put_exchange(api: API, req: Request, vhost: str, name: str) -> Response:
    """Declare as the user (``access``: configure on the exchange), as ``put_queue``."""
    vh = api.vhost_or_404(vhost, "vhost_not_found")
    body = validate.obj(req.body)
    validate.name(name, "exchange")
    etype = body.get("type", "direct")  # RabbitMQ 3.10's default, as durable's false
    if not isinstance(etype, str):
        raise bad_request("'type' must be a string")
    durable = validate.boolean(body, "durable", False)
    auto_delete = validate.boolean(body, "auto_delete", False)
    internal = validate.boolean(body, "internal", False)
    args = validate.arguments(body)
    access.resource(req, vhost, [("configure", "exchange", name)])
    try:
        _, created = vh.declare_exchange(name, etype, False, durable, auto_delete, internal,
                                         args)
    except (AMQPChannelError, AMQPConnectionError) as e:
        raise _amqp_error(e) from None
    return Response(201 if created else 204)


def delete_exchange(api: API, req: Request, vhost: str, name: str) -> Response:
    vh = api.vhost_or_404(vhost)
    if name not in vh.exchanges:
        raise not_found()
    access.resource(req, vhost, [("configure", "exchange", name)])
    try:
        ex = vh.delete_exchange(name, req.query.get("if-unused") == "true")
    except AMQPChannelError as e:
        raise _amqp_error(e) from None
    if ex is None:
        raise not_found()
    return Response(204)
