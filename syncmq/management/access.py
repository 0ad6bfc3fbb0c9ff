"""Who may read and act on a vhost's objects through the management API, as RabbitMQ
3.10.8's management plugin decides it (compared with it by
tests/interop/test_mgmt_vhost_access_differential.py). This module owns these rules; the
router (``API.handle``) and the object endpoints call it.

1. The vhost gate (``rabbit_mgmt_util:is_authorized_vhost``), checked by the router before
   any other check of a route in :func:`gated`: a user without ``administrator`` and
   without permissions on an *existing* vhost is refused 401 "User not authorised to
   access virtual host"; an unknown vhost passes (the endpoint answers its 404).
2. Acting on objects (declare and delete queues and exchanges, bind and unbind, publish,
   get, purge, the aliveness test) is done *as the user*, as RabbitMQ's plugin does it
   through an AMQP channel: any management user may (not only ``administrator``), and
   every user, ``administrator`` included, needs permissions on the vhost (else 401
   "Access refused.", :func:`vhost_access`) and the resource permission of the action
   (:func:`resource`): configure on the queue or exchange to declare or delete it, write
   on the destination and read on the source to bind or unbind, write on the exchange to
   publish, read on the queue to get or purge. The refusal's status and text are the
   endpoint's in RabbitMQ (the caller passes them: ``refusal``).
3. Endpoints that need ``administrator`` answer 401 "Not administrator user"
   (:func:`not_admin`, ``is_authorized_admin``).

A resource is named as RabbitMQ's channel names it: the default exchange is
``amq.default``. No state of its own; it reads ``req.user`` (the store's user of this
request).
"""

from __future__ import annotations

from collections.abc import Callable

from ..broker.auth import Permission
from .common import Request, has_tag
from .errors import HTTPError

VHOST_REFUSED = "User not authorised to access virtual host"

# The routes the vhost gate covers: (first path segment, number of segments), each with a
# ``{vhost}`` segment. Left out, as RabbitMQ leaves them out: ``consumers/{vhost}`` (no
# gate), single policies (the policymaker check comes first), parameters, shovels and the
# admin-only vhost, permission and definitions endpoints.
GATED = {("queues", 2), ("queues", 3), ("queues", 4), ("exchanges", 2), ("exchanges", 3),
         ("exchanges", 4), ("exchanges", 5), ("bindings", 2), ("bindings", 6),
         ("bindings", 7), ("aliveness-test", 2), ("vhost-limits", 2), ("policies", 2),
         ("operator-policies", 2)}


def not_admin() -> HTTPError:
    return HTTPError(401, "not_authorised", "Not administrator user")


def access_refused() -> HTTPError:
    return HTTPError(401, "not_authorised", "Access refused.")


def gated(parts: list[str]) -> bool:
    return (parts[0], len(parts)) in GATED if parts else False


def vhost_gate(req: Request, vhost: str, exists: bool) -> None:
    """401 unless ``req.user`` may see ``vhost`` (rule 1). A vhost's limits are shown to
    ``monitoring`` too, as RabbitMQ's (``is_authorized_monitor`` there)."""
    passes = ("administrator", "monitoring") if req.parts[0] == "vhost-limits" \
        else ("administrator",)
    if exists and not has_tag(req.user, *passes) and vhost not in req.user.permissions:
        raise HTTPError(401, "not_authorised", VHOST_REFUSED)


def vhost_access(req: Request, vhost: str) -> Permission:
    """The user's permissions on ``vhost`` (rule 2), or 401 "Access refused."."""
    perm = req.user.permissions.get(vhost)
    if perm is None:
        raise access_refused()
    return perm


def resource(req: Request, vhost: str, checks: list[tuple[str, str, str]],
             refusal: Callable[[str, str, str], HTTPError] | None = None) -> None:
    """Rule 2 for one action: vhost access, then each ``(what, kind, name)`` of ``checks``
    (what: configure/write/read; kind: queue/exchange). ``refusal(what, kind, name)``
    makes the error of a refused resource (default 401 "Access refused.")."""
    perm = vhost_access(req, vhost)
    for what, kind, name in checks:
        rname = "amq.default" if kind == "exchange" and name == "" else name
        if not perm.allows(what, rname):
            raise (refusal or (lambda *_: access_refused()))(what, kind, rname)


def refused_text(req: Request, vhost: str) -> Callable[[str, str, str], str]:
    """RabbitMQ's channel text for a refused resource, without the permission's name (as
    the management plugin reports it): "ACCESS_REFUSED - access to queue 'q' in vhost
    'v' refused for user 'u'"."""
    def text(what: str, kind: str, name: str) -> str:
        return (f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{vhost}' "
                f"refused for user '{req.user.name}'")
    return text
