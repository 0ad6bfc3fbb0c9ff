"""``/api/shovels``: the dynamic shovels' status, restarting and deleting one, as RabbitMQ
3.10's ``rabbitmq_shovel_management`` (``rabbit_shovel_mgmt``).

``GET /api/shovels`` and ``/api/shovels/{vhost}`` list a row per shovel of the vhosts the
user may see (404 for an unknown vhost); ``DELETE /api/shovels/vhost/{vhost}/{name}/restart``
restarts one (new connections; 204, 404 if there is no such shovel);
``DELETE /api/shovels/vhost/{vhost}/{name}`` deletes one by clearing its runtime parameter
(the store's ``clear``, as ``DELETE /api/parameters/shovel/...``; 204, 404 if there is none):
RabbitMQ's management UI deletes shovels this way. The definitions themselves are runtime
parameters (``/api/parameters/shovel/...``), not served here.

Who may: every one of these needs the ``monitoring`` or ``administrator`` tag, the restart
and the delete too (RabbitMQ's ``is_authorized_monitor``; anyone else gets 401 "Not monitor
user"). The routes are ``self_checked`` so that ``API.handle`` lets a monitoring user's
DELETE through to here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common import Response, has_tag
from ..errors import HTTPError, not_found

if TYPE_CHECKING:
    from ..api import API
    from ..common import Request


def _need_monitor(req: Request) -> None:
    if not has_tag(req.user, "monitoring", "administrator"):
        raise HTTPError(401, "not_authorised", "Not monitor user")


def shovels(api: API, req: Request, vhost: str | None = None) -> Response:
    _need_monitor(req)
    names = {vh.name for vh in api.visible_vhosts(req, vhost)}
    mgr = api.ctx.shovels
    rows = [] if mgr is None else mgr.status(vhost)
    return Response(200, [r for r in rows if r["vhost"] in names])


def restart(api: API, req: Request, vhost: str, name: str) -> Response:
    _need_monitor(req)
    api.visible_vhosts(req, vhost)
    mgr = api.ctx.shovels
    if mgr is None or not mgr.restart(vhost, name):
        raise not_found()
    return Response(204)


def delete(api: API, req: Request, vhost: str, name: str) -> Response:
    _need_monitor(req)
    api.visible_vhosts(req, vhost)
    if api.ctx.shovels is None or not api.ctx.broker.parameters.clear(
            "shovel", vhost, name, user=req.user.name):
        raise not_found()
    return Response(204)
