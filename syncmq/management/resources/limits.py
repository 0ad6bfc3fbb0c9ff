"""``/api/vhost-limits``: the vhost limits (``broker/vhost_limits.py``, runtime-parameter
component ``vhost-limits``) with RabbitMQ 3.10's paths, shapes, codes and texts
(``rabbit_mgmt_wm_limits``, ``rabbit_mgmt_wm_limit``).

- ``GET /api/vhost-limits[/{vhost}]``: ``[{"vhost": ..., "value": {...}}]`` for the visible
  vhosts that have limits (an emptied value is ``[]`` in the listing of every vhost and
  left out of a vhost's own, as RabbitMQ does).
- ``PUT /api/vhost-limits/{vhost}/{name}`` ``{"value": N}`` sets one limit, keeping the
  others; ``DELETE`` clears one. Both answer 204 (RabbitMQ never answers 201 here), and an
  administrator only (the route is not a policymaker's). A refusal's text is not
  HTML-escaped here (``/api/parameters`` escapes it), as in RabbitMQ.

Differences on purpose: ``DELETE`` for an unknown vhost is 404 (RabbitMQ: 500), and a body
with other keys than ``value`` is fine (RabbitMQ: 500 when it holds ``vhost``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import syncmq.management.validate as validate

from ...broker.parameters import NotFound, ParameterError
from ..common import Request, Response
from ..errors import HTTPError, bad_request, not_found

if TYPE_CHECKING:
    from ..api import API


def vhost_limits(api: API, req: Request, vhost: str | None = None) -> Response:
    limits = api.ctx.broker.vhost_limits
    out = []
    for vh in api.visible_vhosts(req, vhost):
        value = limits.value(vh.name)
        # an emptied value is listed by /api/vhost-limits, not by /api/vhost-limits/{vhost}
        # (RabbitMQ's rabbit_vhost_limit:list/0 and list/1)
        if value is not None and (value or vhost is None):
            out.append({"vhost": vh.name, "value": value or []})
    return Response(200, out)


def _update(api: API, req: Request, vhost: str, name: str, value, clear: bool) -> Response:
    try:
        api.ctx.broker.vhost_limits.update(vhost, name, value, clear, user=req.user.name)
    except NotFound:
        raise HTTPError(404, "not_found", "vhost_not_found") from None
    except ParameterError as e:
        raise bad_request(str(e)) from None  # not escaped, unlike /api/parameters
    return Response(204)


def put_limit(api: API, req: Request, vhost: str, name: str) -> Response:
    body = validate.require(req.body, "value")
    return _update(api, req, vhost, name, body["value"], False)


def delete_limit(api: API, req: Request, vhost: str, name: str) -> Response:
    if vhost not in api.ctx.broker.vhosts:
        raise not_found()
    return _update(api, req, vhost, name, None, True)
