"""``/api/topic-permissions`` and ``/api/user-limits``: the per-user rules of
``broker/user_rules.py``, kept with the users and changed by copying the user store
(``management/users.py``), as RabbitMQ's ``rabbit_mgmt_wm_topic_permission(s)``,
``..._topic_permissions_user``, ``..._topic_permissions_vhost`` and
``rabbit_mgmt_wm_user_limit(s)`` answer (paths, statuses, shapes and texts read off a
RabbitMQ 3.10.8 node; tests/interop/test_user_rules_differential.py compares them).

Where RabbitMQ stores a value of the wrong JSON type as it is (a number as an exchange name)
or fails with a 500 (a number as a regex, a limit cleared for an unknown user), syncmq
answers 400 or 404 in RabbitMQ's error shape; docs/users-file.md lists these.

Each endpoint is ``fn(api, req, **path_args) -> Response``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import syncmq.management.users as users_mod
import syncmq.management.validate as validate

from ...broker.user_rules import LimitError, TopicPermission, check_regex, validate_limits
from ..common import Request, Response
from ..errors import HTTPError, bad_request, not_found

if TYPE_CHECKING:
    from ..api import API


def topic_rows(store: Any, user: str | None = None, vhost: str | None = None) -> list[dict]:
    """Every topic permission (of ``user``, in ``vhost``), sorted as RabbitMQ sorts the
    listing (vhost, user; then exchange)."""
    rows = []
    for u in list(store.users.values()):
        if user is not None and u.name != user:
            continue
        for vh, per in u.topic_permissions.items():
            if vhost is not None and vh != vhost:
                continue
            for x, t in per.items():
                rows.append({"user": u.name, "vhost": vh, "exchange": x, "write": t.write,
                             "read": t.read})
    rows.sort(key=lambda r: (r["vhost"], r["user"], r["exchange"]))
    return rows


def topic_permissions(api: API, req: Request) -> Response:
    api.need_admin(req)
    return Response(200, topic_rows(api.ctx.broker.users))


def user_topic_permissions(api: API, req: Request, user: str) -> Response:
    api.need_admin(req)
    store = api.ctx.broker.users
    if user not in store.users:
        raise not_found()
    return Response(200, topic_rows(store, user=user))


def vhost_topic_permissions(api: API, req: Request, vhost: str) -> Response:
    api.need_admin(req)
    api.vhost_or_404(vhost)
    return Response(200, topic_rows(api.ctx.broker.users, vhost=vhost))


def _existing(api: API, vhost: str, user: str) -> list[dict] | None:
    """The user's topic permissions in the vhost; None when the user or the vhost does not
    exist (RabbitMQ's ``not_found``), [] when it has none (``none``)."""
    store = api.ctx.broker.users
    if user not in store.users or vhost not in api.ctx.broker.vhosts:
        return None
    return topic_rows(store, user=user, vhost=vhost)


def topic_permission(api: API, req: Request, vhost: str, user: str,
                     exchange: str | None = None) -> Response:
    """GET .../{vhost}/{user}[/{exchange}]: the user's topic permissions in the vhost (all of
    them, also with an exchange in the path, as RabbitMQ); 404 when there are none."""
    api.need_admin(req)
    rows = _existing(api, vhost, user)
    if not rows:
        raise not_found()
    return Response(200, rows)


def put_topic_permission(api: API, req: Request, vhost: str, user: str,
                         exchange: str | None = None) -> Response:
    """PUT .../{vhost}/{user}: body ``{exchange, write, read}`` (the exchange is the body's,
    also with one in the path). 201 if the user had none in the vhost, else 204."""
    rows = _existing(api, vhost, user)
    if rows is None:
        raise bad_request("vhost_or_user_not_found")
    body = validate.require(req.body, "exchange", "write", "read")
    values = {}
    for key in ("exchange", "write", "read"):
        values[key] = validate.string(body, key)
    validate.name(values["exchange"], "exchange")
    for key in ("write", "read"):
        why = check_regex(values[key])
        if why is not None:
            # RabbitMQ's shape: ["invalid_regexp", Regex, [Reason, Position]] (its reason and
            # position are PCRE's; these are Python's)
            raise HTTPError(400, "bad_request", ["invalid_regexp", values[key], [why, 0]])
    perm = TopicPermission(values["write"], values["read"], user, vhost)

    def change(users: dict, vhosts: list[str] | None) -> None:
        u = users.get(user)
        if u is None:
            raise bad_request("vhost_or_user_not_found")
        u.topic_permissions[vhost] = {**u.topic_permissions.get(vhost, {}),
                                      values["exchange"]: perm}

    users_mod.update(api.ctx.broker, change)
    return Response(201 if not rows else 204)


def delete_topic_permission(api: API, req: Request, vhost: str, user: str,
                            exchange: str | None = None) -> Response:
    """DELETE .../{vhost}/{user}: all of them; .../{exchange}: that one (204 even if it was
    not there). 404 when the user has none in the vhost."""
    if not _existing(api, vhost, user):
        raise not_found()

    def change(users: dict, vhosts: list[str] | None) -> None:
        u = users.get(user)
        if u is None:
            return
        per = {x: t for x, t in u.topic_permissions.get(vhost, {}).items()
               if exchange is not None and x != exchange}
        if per:
            u.topic_permissions[vhost] = per
        else:
            u.topic_permissions.pop(vhost, None)

    users_mod.update(api.ctx.broker, change)
    return Response(204)


# ---- user limits ----


def _limit_rows(store: Any, user: str | None = None) -> list[dict]:
    return [{"user": u.name, "value": dict(sorted(u.limits.items()))}
            for u in sorted(store.users.values(), key=lambda u: u.name)
            if u.limits and (user is None or u.name == user)]


def user_limits(api: API, req: Request, user: str | None = None) -> Response:
    """GET /api/user-limits[/{user}]: users with limits, ``[{user, value}]`` (any
    management user may read them, as in RabbitMQ); 404 for an unknown user."""
    store = api.ctx.broker.users
    if user is not None and user not in store.users:
        raise not_found()
    return Response(200, _limit_rows(store, user))


def put_user_limit(api: API, req: Request, user: str, name: str) -> Response:
    """PUT /api/user-limits/{user}/{name}: body ``{"value": N}``; merged into the user's
    limits (``set_user_limits``); RabbitMQ's texts for a bad name or value."""
    body = validate.require(req.body, "value")
    if user not in api.ctx.broker.users.users:
        raise HTTPError(400, "bad_request", ["no_such_user", user])
    set_limits(api, user, {name: body["value"]})
    return Response(204)


def set_limits(api: API, user: str, term: object) -> None:
    try:
        limits = validate_limits(term)
    except LimitError as e:
        raise bad_request(str(e)) from None

    def change(users: dict, vhosts: list[str] | None) -> None:
        u = users.get(user)
        if u is None:
            raise HTTPError(400, "bad_request", ["no_such_user", user])
        u.limits = {**u.limits, **limits}

    users_mod.update(api.ctx.broker, change)


def delete_user_limit(api: API, req: Request, user: str, name: str) -> Response:
    """DELETE /api/user-limits/{user}/{name}: 204 (an unset or unknown name too; ``all``
    clears every limit, as ``clear_user_limits``); 404 for an unknown user."""
    if user not in api.ctx.broker.users.users:
        raise not_found()

    def change(users: dict, vhosts: list[str] | None) -> None:
        u = users.get(user)
        if u is not None:
            u.limits = {} if name == "all" else {k: v for k, v in u.limits.items()
                                                  if k != name}

    users_mod.update(api.ctx.broker, change)
    return Response(204)


def add_routes(r) -> None:
    """Register the endpoints with the API's ``_route``."""
    r("GET", "topic-permissions", topic_permissions)
    for path in ("topic-permissions/{vhost}/{user}",
                 "topic-permissions/{vhost}/{user}/{exchange}"):
        r("GET", path, topic_permission)
        r("PUT", path, put_topic_permission)
        r("DELETE", path, delete_topic_permission)
    r("GET", "users/{user}/topic-permissions", user_topic_permissions)
    r("GET", "vhosts/{vhost}/topic-permissions", vhost_topic_permissions)
    r("GET", "user-limits", user_limits)
    r("GET", "user-limits/{user}", user_limits)
    r("PUT", "user-limits/{user}/{name}", put_user_limit)
    r("DELETE", "user-limits/{user}/{name}", delete_user_limit)
