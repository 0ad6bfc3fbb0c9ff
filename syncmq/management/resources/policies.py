"""``/api/policies`` and ``/api/operator-policies`` (RabbitMQ's ``rabbit_mgmt_wm_policies``,
``rabbit_mgmt_wm_policy`` and their operator twins).

Who may: list, any management user (the policies of the vhosts it sees); read one or change,
an ``administrator``, for user policies also a ``policymaker`` in the vhosts it has
permissions on (RabbitMQ's ``is_authorized_policies``); anyone else 401. A PUT is stored
through the runtime-parameter store (``broker.parameters``, components
``policy``/``operator_policy``: validated, journaled, then applied live by the
``PolicyRegistry``); the API waits for its fsync like any change (``Api.handle``).

RabbitMQ's answers, read off a 3.10.8 node: listings sorted by priority (ascending; syncmq
breaks ties by vhost and name where RabbitMQ's order is its table's), 201 for a new policy
and 204 for a changed one, 404 ``{"error":"not_found","reason":"vhost_not_found"}`` for a PUT
to an unknown vhost, 400 with the validation text. The ``/api/policies`` texts are
HTML-escaped (``&lt;&lt;"x"&gt;&gt;``) and the operator-policy ones are not, as RabbitMQ's.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import syncmq.management.validate as validate

from ...broker.parameters import NotFound, ParameterError
from ..common import Request, Response, has_tag
from ..errors import HTTPError, bad_request, not_found

if TYPE_CHECKING:
    from ..api import API

_FIELDS = ("pattern", "definition", "priority", "apply-to")


def _component(req: Request) -> str:
    return "operator_policy" if req.parts[0] == "operator-policies" else "policy"


def _listing(api: API, req: Request, vhost: str | None) -> Response:
    """Any management user lists the policies (and operator policies) of the vhosts it
    sees, as RabbitMQ's listings (its vhost gate is the router's: ``access``)."""
    if vhost is not None:
        api.visible_vhosts(req, vhost)
    visible = {vh.name for vh in api.visible_vhosts(req)}
    ps = [p for p in api.ctx.broker.policies.list(_component(req), vhost)
          if p.vhost in visible]
    ps.sort(key=lambda p: p.priority)  # stable: by vhost and name within a priority
    return Response(200, [p.listing() for p in ps])


def policies(api: API, req: Request, vhost: str | None = None) -> Response:
    return _listing(api, req, vhost)


def policy(api: API, req: Request, vhost: str, name: str) -> Response:
    _may_change(api, req, vhost)
    api.visible_vhosts(req, vhost)
    p = api.ctx.broker.policies.get(_component(req), vhost, name)
    if p is None:
        raise not_found()
    return Response(200, p.listing())


def _may_change(api: API, req: Request, vhost: str | None) -> None:
    """``administrator``, or for user policies a ``policymaker`` with permissions on the
    vhost (RabbitMQ's ``is_authorized_policies``); else 401."""
    user = req.user
    if has_tag(user, "administrator"):
        return
    # a vhost that does not exist passes (RabbitMQ's user_matches_vhost): the 404 follows
    if _component(req) == "policy" and has_tag(user, "policymaker") and (
            vhost is None or vhost in user.permissions or vhost not in api.ctx.broker.vhosts):
        return
    raise HTTPError(401, "not_authorised", "User not authorised to access object")


def put_policy(api: API, req: Request, vhost: str, name: str) -> Response:
    _may_change(api, req, vhost)
    body = validate.obj(req.body)
    component = _component(req)
    broker = api.ctx.broker
    if vhost not in broker.vhosts:
        raise HTTPError(404, "not_found", "vhost_not_found")
    missing = [k for k in ("pattern", "definition") if k not in body]
    if missing:
        raise bad_request("[" + ",".join(f"{{key_missing,{k}}}" for k in missing) + "]")
    value: dict[str, Any] = {k: body[k] for k in _FIELDS if k in body}
    value.setdefault("priority", 0)
    value.setdefault("apply-to", "all")
    try:
        new = store_set(broker, component, vhost, name, value, req.user.name)
    except NotFound:
        raise HTTPError(404, "not_found", "vhost_not_found") from None
    except ParameterError as e:
        reason = str(e)
        raise bad_request(reason if component == "operator_policy"
                          else html.escape(reason, quote=False)) from None
    return Response(201 if new else 204)


def delete_policy(api: API, req: Request, vhost: str, name: str) -> Response:
    _may_change(api, req, vhost)
    broker = api.ctx.broker
    api.vhost_or_404(vhost)
    if not broker.parameters.clear(_component(req), vhost, name, req.user.name):
        raise not_found()
    return Response(204)


# ---- the parameter store (the one owner of the values) ----

def store_set(broker: Any, component: str, vhost: str, name: str, value: dict,
              user: str | None) -> bool:
    """Set through ``broker.parameters`` (validated by the PolicyRegistry, journaled, then
    applied live); ParameterError for a refused value. True if new."""
    return broker.parameters.set(component, vhost, name, value, user)
