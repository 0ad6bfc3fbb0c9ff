"""``/api/shovels``: the dynamic shovels' status, and restarting one, as RabbitMQ's
``rabbitmq_shovel_management`` (``rabbit_shovel_mgmt``).

``GET /api/shovels`` and ``/api/shovels/{vhost}`` list a row per shovel of the vhosts the
user may see (404 for an unknown vhost); ``DELETE /api/shovels/vhost/{vhost}/{name}/restart``
restarts one (new connections; 204, 404 if there is no such shovel). The definitions
themselves are runtime parameters (``/api/parameters/shovel/...``), not served here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common import Response
from ..errors import not_found

if TYPE_CHECKING:
    from ..api import API
    from ..common import Request


def shovels(api: API, req: Request, vhost: str | None = None) -> Response:
    names = {vh.name for vh in api.visible_vhosts(req, vhost)}
    mgr = api.ctx.shovels
    rows = [] if mgr is None else mgr.status(vhost)
    return Response(200, [r for r in rows if r["vhost"] in names])


def restart(api: API, req: Request, vhost: str, name: str) -> Response:
    api.visible_vhosts(req, vhost)
    mgr = api.ctx.shovels
    if mgr is None or not mgr.restart(vhost, name):
        raise not_found()
    return Response(204)
