"""``/api/vhosts`` and ``/api/definitions`` (export and the all-or-nothing import).

Each endpoint is ``fn(api, req, **path_args) -> Response``; ``api`` is the shared
:class:`~..api.API` (visibility, listings, counters)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import syncmq.management.definitions as definitions
import syncmq.management.definitions_import as definitions_import
import syncmq.management.state as state
import syncmq.management.users as users_mod
import syncmq.management.validate as validate

from ...broker.vhost import VirtualHost
from ..common import (
    Request,
    Response,
)
from ..errors import HTTPError, bad_request, not_found
from ..state import open_sessions

if TYPE_CHECKING:
    from ..api import API

log = logging.getLogger("syncmq.management")


def _vhost_json(api: API, vh: VirtualHost) -> dict[str, Any]:
    totals = api.queue_totals([vh])
    return {
        "name": vh.name,
        "description": "",
        "tags": [],
        "metadata": {"description": "", "tags": []},
        "tracing": False,
        "cluster_state": {api.ctx.node: "running"},
        **state.with_details(totals, api.rates.rates(("vhost", vh.name), totals)),
    }


def vhosts(api: API, req: Request) -> Response:
    return Response(200, [_vhost_json(api, vh) for vh in api.visible_vhosts(req)])


def vhost(api: API, req: Request, vhost: str) -> Response:
    """One vhost: ``administrator`` only, as RabbitMQ 3.10's (others list ``/api/vhosts``)."""
    api.need_admin(req)
    return Response(200, _vhost_json(api, api.visible_vhosts(req, vhost)[0]))


def put_vhost(api: API, req: Request, vhost: str) -> Response:
    broker = api.ctx.broker
    validate.obj(req.body)
    if not vhost:
        raise bad_request("vhost name must not be empty")
    validate.name(vhost, "vhost")
    existed = vhost in broker.vhosts

    def change(users: dict, vhosts: list[str] | None) -> None:
        if vhosts is not None and vhost not in vhosts:
            vhosts.append(vhost)
        me = users.get(req.user.name)
        if not existed and me is not None:
            # as RabbitMQ's management plugin: whoever creates a vhost gets full
            # permissions on it (so `rabbitmqadmin declare vhost` then using it works)
            me.permissions[vhost] = users_mod.permission(".*", ".*", ".*")

    # the users file (its vhost list) first: a file that cannot be written refuses the
    # change (500) before the vhost exists, so memory and file never differ
    users_mod.update(broker, change)
    broker.create_vhost(vhost)
    return Response(204 if existed else 201)


def delete_vhost(api: API, req: Request, vhost: str) -> Response:
    """Remove the vhost: its connections are closed (320), its queues deleted, its runtime
    parameters cleared (journaled, each component told)."""
    broker = api.ctx.broker
    if vhost not in broker.vhosts:
        raise not_found()

    def change(users: dict, vhosts: list[str] | None) -> None:
        for u in users.values():
            u.permissions.pop(vhost, None)
            u.topic_permissions.pop(vhost, None)
        if vhosts is not None and vhost in vhosts:
            vhosts.remove(vhost)

    # the users file first (the vhost, its permissions and topic permissions): a file that
    # cannot be written refuses the deletion (500) before anything of the vhost is gone
    users_mod.update(broker, change)
    vh = broker.remove_vhost(vhost)  # journaled: VHOST_DELETE
    if vh is None:
        raise not_found()  # deleted meanwhile by another request
    try:
        for s in open_sessions(api.ctx):
            if s.vhost is vh:
                api.close(s, f"CONNECTION_FORCED - vhost '{vhost}' is deleted")
        for q in list(vh.queues.values()):
            api.drop_queue(vh, q)
        for ex in list(vh.exchanges.values()):  # through the vhost, so the journal sees it
            if ex.name and not ex.name.startswith("amq."):
                vh.delete_exchange(ex.name, False)
    finally:
        # even if a step above failed: a vhost re-created under this name must not inherit
        # the old one's parameters (policies, limits, shovels)
        broker.parameters.clear_vhost(vhost)
    return Response(204)


def get_definitions(api: API, req: Request) -> Response:
    api.need_admin(req)
    return Response(200, definitions.export(api.ctx))


def get_vhost_definitions(api: API, req: Request, vhost: str) -> Response:
    """One vhost's definitions (rabbitmqadmin ``-V vh export``); an unknown vhost is
    RabbitMQ's 400 ``vhost_not_found``."""
    api.need_admin(req)
    if vhost not in api.ctx.broker.vhosts:
        raise bad_request("vhost_not_found")
    return Response(200, definitions.export_vhost(api.ctx, vhost))


def post_vhost_definitions(api: API, req: Request, vhost: str) -> Response:
    """Import into one vhost (rabbitmqadmin ``-V vh import``): every object lands in
    ``vhost``; users, vhosts and permissions in the file are ignored, as RabbitMQ does. An
    unknown vhost is RabbitMQ's 404 ``not_found``/``vhost_not_found``."""
    if vhost not in api.ctx.broker.vhosts:
        raise HTTPError(404, "not_found", "vhost_not_found")
    return post_definitions(api, req, definitions.for_vhost(req.body, vhost))


def post_definitions(api: API, req: Request, body: Any = None) -> Response:
    body = req.body if body is None else body
    try:
        definitions_import.apply(api.ctx, definitions_import.plan(api.ctx, body))
    except definitions_import.DefinitionsError as e:
        raise bad_request(str(e)) from None
    return Response(204)
