"""``/api/users`` and ``/api/permissions``: users are changed by copying the user store (``management/users.py``).

Each endpoint is ``fn(api, req, **path_args) -> Response``; ``api`` is the shared
:class:`~..api.API` (visibility, listings, counters)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import syncmq.management.users as users_mod
import syncmq.management.validate as validate

from ...broker.auth import User
from ...broker.user_rules import validate_limits
from ..common import (
    Request,
    Response,
)
from ..errors import bad_request, not_found

if TYPE_CHECKING:
    from ..api import API

log = logging.getLogger("syncmq.management")


def _user_json(api: API, u: User) -> dict[str, Any]:
    return {"name": u.name, "password_hash": users_mod.to_base64(u.password_hash),
            "hashing_algorithm": users_mod.SHA256, "tags": list(u.tags),
            "limits": dict(sorted(u.limits.items()))}


def users(api: API, req: Request) -> Response:
    api.need_admin(req)
    return Response(200, [_user_json(api, u)
                          for u in list(api.ctx.broker.users.users.values())])


def user(api: API, req: Request, user: str) -> Response:
    api.need_admin(req)
    u = api.ctx.broker.users.users.get(user)
    if u is None:
        raise not_found()
    return Response(200, _user_json(api, u))


def put_user(api: API, req: Request, user: str) -> Response:
    body = validate.obj(req.body)
    if not user:
        raise bad_request("user name must not be empty")
    validate.name(user, "user")
    old = api.ctx.broker.users.users.get(user)
    try:
        tags = users_mod.parse_tags(body.get("tags", list(old.tags) if old else []))
        if "password" in body:
            if not isinstance(body["password"], str) or not body["password"]:
                raise ValueError("password must be a non-empty string")
            nu = users_mod.make_user(user, password=body["password"], tags=tags, old=old)
        elif "password_hash" in body:
            algo = body.get("hashing_algorithm", users_mod.SHA256)
            if algo != users_mod.SHA256:
                raise ValueError(f"hashing_algorithm '{algo}' is not supported")
            nu = users_mod.make_user(user, password_hash=str(body["password_hash"]),
                                     tags=tags, old=old)
        elif old is not None:
            nu = users_mod.make_user(user, tags=tags, old=old)
        else:
            raise ValueError("password or password_hash is required")
        if "limits" in body:  # merged into the user's, as RabbitMQ's put_user
            nu.limits = {**nu.limits, **validate_limits(body["limits"])}
    except ValueError as e:  # (LimitError is one: RabbitMQ's text; RabbitMQ itself answers 500)
        raise bad_request(str(e)) from None

    def change(users: dict, vhosts: list[str] | None) -> None:
        users[user] = nu

    users_mod.update(api.ctx.broker, change)
    return Response(204 if old is not None else 201)


def delete_user(api: API, req: Request, user: str) -> Response:
    if user not in api.ctx.broker.users.users:
        raise not_found()

    def change(users: dict, vhosts: list[str] | None) -> None:
        users.pop(user, None)

    users_mod.update(api.ctx.broker, change)
    return Response(204)


def _permissions(api: API, pred: Callable[[str, str], bool]) -> list[dict[str, str]]:
    out = []
    for u in list(api.ctx.broker.users.users.values()):
        for vh, p in u.permissions.items():
            if pred(u.name, vh):
                out.append({"user": u.name, "vhost": vh, "configure": p.configure,
                            "write": p.write, "read": p.read})
    return out


def permissions(api: API, req: Request) -> Response:
    api.need_admin(req)
    return Response(200, _permissions(api, lambda u, v: True))


def vhost_permissions(api: API, req: Request, vhost: str) -> Response:
    api.need_admin(req)
    api.vhost_or_404(vhost)
    return Response(200, _permissions(api, lambda u, v: v == vhost))


def user_permissions(api: API, req: Request, user: str) -> Response:
    api.need_admin(req)
    if user not in api.ctx.broker.users.users:
        raise not_found()
    return Response(200, _permissions(api, lambda u, v: u == user))


def permission(api: API, req: Request, vhost: str, user: str) -> Response:
    api.need_admin(req)
    found = _permissions(api, lambda u, v: u == user and v == vhost)
    if not found:
        raise not_found()
    return Response(200, found[0])


def put_permission(api: API, req: Request, vhost: str, user: str) -> Response:
    if vhost not in api.ctx.broker.vhosts:  # RabbitMQ: 400, for the vhost as for the user
        raise bad_request("vhost_or_user_not_found")
    body = validate.obj(req.body)
    vals = [body.get(k, "") for k in ("configure", "write", "read")]
    if not all(isinstance(v, str) for v in vals):
        raise bad_request("configure, write and read must be strings")
    try:
        perm = users_mod.permission(*vals)
    except (re.error, RecursionError, OverflowError) as e:  # a bad regex
        raise bad_request(f"invalid regular expression: {e}") from None
    if user not in api.ctx.broker.users.users:
        raise bad_request("vhost_or_user_not_found")
    existed = vhost in api.ctx.broker.users.users[user].permissions

    def change(users: dict, vhosts: list[str] | None) -> None:
        if user not in users:
            raise bad_request("vhost_or_user_not_found")
        users[user].permissions[vhost] = perm

    users_mod.update(api.ctx.broker, change)
    return Response(204 if existed else 201)


def delete_permission(api: API, req: Request, vhost: str, user: str) -> Response:
    u = api.ctx.broker.users.users.get(user)
    if u is None or vhost not in u.permissions:
        raise not_found()

    def change(users: dict, vhosts: list[str] | None) -> None:
        if user in users:
            users[user].permissions.pop(vhost, None)

    users_mod.update(api.ctx.broker, change)
    return Response(204)
