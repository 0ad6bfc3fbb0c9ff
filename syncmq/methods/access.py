"""Permission checks (configure/write/read regexes per vhost), as RabbitMQ applies them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import _spec
from ..wire.errors import AMQPChannelError

if TYPE_CHECKING:
    from .session import Session


def _refused(session: Session, what: str, kind: str, name: str) -> AMQPChannelError:
    return AMQPChannelError(
        _spec.ACCESS_REFUSED,
        f"ACCESS_REFUSED - {what} access to {kind} '{name}' in vhost '{session.vhost.name}' "
        f"refused for user '{session.username}'",
    )


def configure(session: Session, kind: str, name: str) -> None:
    perm = session.user.permissions.get(session.vhost.name)
    if perm is None or not perm.can_configure(name):
        raise _refused(session, "configure", kind, name)


def write(session: Session, kind: str, name: str) -> None:
    perm = session.user.permissions.get(session.vhost.name)
    if perm is None or not perm.can_write(name):
        raise _refused(session, "write", kind, name)


def read(session: Session, kind: str, name: str) -> None:
    perm = session.user.permissions.get(session.vhost.name)
    if perm is None or not perm.can_read(name):
        raise _refused(session, "read", kind, name)
