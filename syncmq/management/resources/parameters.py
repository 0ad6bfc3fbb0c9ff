"""``/api/parameters`` and ``/api/global-parameters``: the runtime-parameter store
(``broker/parameters.py``) over HTTP, with RabbitMQ 3.10's paths, shapes, codes and texts.

Authorisation is RabbitMQ's ``is_authorized_policies`` / ``is_authorized_global_parameters``:
an ``administrator`` or a ``policymaker`` may read and change them, a policymaker only in the
vhosts it has permissions on (both for global parameters); anyone else (``management``,
``monitoring``) gets 401 "User not authorised to access object". These routes are registered
with ``API._policymaker_route`` (``checks_user=True``) so that ``API.handle`` lets a policymaker's changes through to here.

Differences from RabbitMQ, on purpose: a value RabbitMQ's federation validator crashes on (a
non-object, answered 500) is a 400, and ``DELETE /api/parameters/policy/...`` (a 500 in
RabbitMQ) is the 400 that the PUT answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import syncmq.management.validate as validate

from ...broker.parameters import HIDDEN_COMPONENTS, NotFound, ParameterError
from ..common import Request, Response, has_tag
from ..errors import HTTPError, bad_request, not_found

if TYPE_CHECKING:
    from ..api import API


def not_authorised() -> HTTPError:
    return HTTPError(401, "not_authorised", "User not authorised to access object")


def _may(api: API, req: Request, vhost: str | None = None) -> bool:
    """Whether the user may use parameters at all (no vhost) or those of ``vhost``. A vhost
    that does not exist passes (RabbitMQ's ``user_matches_vhost``: ``not_found -> true``), so
    a policymaker gets the 404 an administrator gets, not a 401."""
    user = req.user
    if has_tag(user, "administrator"):
        return True
    return has_tag(user, "policymaker") and (
        vhost is None or vhost in user.permissions or vhost not in api.ctx.broker.vhosts)


def _need(api: API, req: Request, vhost: str | None = None) -> None:
    if not _may(api, req, vhost):
        raise not_authorised()


def reason(exc: ParameterError) -> str:
    """The 400's reason as RabbitMQ writes it (``escape_html_tags``)."""
    return str(exc).replace("<", "&lt;").replace(">", "&gt;")


def _visible(api: API, req: Request, params: list[dict]) -> list[dict]:
    if has_tag(req.user, "administrator"):
        return params
    perms = req.user.permissions
    return [p for p in params if p["vhost"] in perms]


def _vhost(api: API, req: Request, vhost: str) -> None:
    _need(api, req, vhost)
    if vhost not in api.ctx.broker.vhosts:
        raise not_found()


def parameters(api: API, req: Request, component: str | None = None,
               vhost: str | None = None) -> Response:
    _need(api, req)
    store = api.ctx.broker.parameters
    if vhost is not None:
        _vhost(api, req, vhost)
    found = store.list(component, vhost)
    if component is None:
        found = [p for p in found if p["component"] not in HIDDEN_COMPONENTS]
    return Response(200, _visible(api, req, found))


def parameter(api: API, req: Request, component: str, vhost: str, name: str) -> Response:
    _vhost(api, req, vhost)
    value = api.ctx.broker.parameters.get(component, vhost, name)
    if value is None:
        raise not_found()
    return Response(200, {"value": value, "vhost": vhost, "component": component,
                          "name": name})


def _one(name: str) -> None:
    if not name:  # RabbitMQ: the trailing slash leaves the listing, which is GET only
        raise HTTPError(405, "Method Not Allowed", "Method Not Allowed")


def put_parameter(api: API, req: Request, component: str, vhost: str, name: str) -> Response:
    """Set one parameter from ``{"value": ...}`` (the body's component/vhost/name, if any,
    are ignored: the path names the parameter, as in RabbitMQ)."""
    _one(name)
    _need(api, req, vhost)
    body = validate.require(req.body, "value")
    if component in HIDDEN_COMPONENTS:
        raise bad_request("policies may not be set using this method")
    try:
        created = api.ctx.broker.parameters.set(component, vhost, name, body["value"],
                                                user=req.user.name)
    except NotFound:
        raise HTTPError(404, "not_found", "vhost_not_found") from None
    except ParameterError as e:
        raise bad_request(reason(e)) from None
    return Response(201 if created else 204)


def delete_parameter(api: API, req: Request, component: str, vhost: str,
                     name: str) -> Response:
    _one(name)
    _vhost(api, req, vhost)
    if component in HIDDEN_COMPONENTS:
        raise bad_request("policies may not be set using this method")
    if not api.ctx.broker.parameters.clear(component, vhost, name, user=req.user.name):
        raise not_found()
    return Response(204)


def global_parameters(api: API, req: Request) -> Response:
    _need(api, req)
    return Response(200, api.ctx.broker.parameters.list_global())


def global_parameter(api: API, req: Request, name: str) -> Response:
    _need(api, req)
    value = api.ctx.broker.parameters.get_global(name)
    if value is None:
        raise not_found()
    return Response(200, {"value": value, "name": name})


def put_global_parameter(api: API, req: Request, name: str) -> Response:
    _one(name)
    _need(api, req)
    body: dict[str, Any] = validate.require(req.body, "value")
    try:
        created = api.ctx.broker.parameters.set_global(name, body["value"], user=req.user.name)
    except ParameterError as e:
        raise bad_request(reason(e)) from None
    return Response(201 if created else 204)


def delete_global_parameter(api: API, req: Request, name: str) -> Response:
    _one(name)
    _need(api, req)
    if not api.ctx.broker.parameters.clear_global(name, user=req.user.name):
        raise not_found()
    return Response(204)
