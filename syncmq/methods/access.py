"""Permission checks (configure/write/read regexes per vhost), as RabbitMQ applies them.

- Checks read the broker's *current* :class:`~syncmq.broker.auth.UserStore` by user name, so
  after a reload (SIGHUP) every check made from then on uses the new data, on connections
  opened before the reload too. A user removed from the file keeps its open connections
  (syncmq does not drop connections on reload) but is refused every check.
- The default exchange ``""`` is checked, and named in the error, as ``amq.default``
  (``rabbit_access_control:check_resource_access``).
- The regex is searched, not anchored, and ``""`` grants nothing (``auth.Permission``).
- The error is 403 ACCESS_REFUSED with RabbitMQ's text: "configure access to queue 'q' in
  vhost '/' refused for user 'u'".
- ``basic.publish`` caches granted write checks per channel (``Channel.write_ok``), as
  RabbitMQ's channel caches its last permission checks. A new channel starts with an empty
  cache; on reload :func:`clear_caches` empties the caches of every open channel (run on the
  connection's own worker), so an existing channel is re-checked on its next publish.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import _spec
from ..wire.errors import AMQPChannelError

if TYPE_CHECKING:
    from .session import Session


def _resource_name(kind: str, name: str) -> str:
    return "amq.default" if kind == "exchange" and name == "" else name


def _refused(session: Session, what: str, kind: str, name: str) -> AMQPChannelError:
    return AMQPChannelError(
        _spec.ACCESS_REFUSED,
        f"ACCESS_REFUSED - {what} access to {kind} '{name}' in vhost '{session.vhost.name}' "
        f"refused for user '{session.username}'",
    )


def check(session: Session, what: str, kind: str, name: str) -> None:
    """Raise 403 unless the session's user has ``what`` (configure/write/read) on the
    ``kind`` (queue/exchange) called ``name`` in the session's vhost."""
    if session.user.internal:  # the broker's own client: RabbitMQ's trusted user none
        return
    name = _resource_name(kind, name)
    perm = session.broker.users.permission(session.username, session.vhost.name)
    if perm is None or not perm.allows(what, name):
        raise _refused(session, what, kind, name)


def configure(session: Session, kind: str, name: str) -> None:
    check(session, "configure", kind, name)


def write(session: Session, kind: str, name: str) -> None:
    check(session, "write", kind, name)


def read(session: Session, kind: str, name: str) -> None:
    check(session, "read", kind, name)


def vhost_allowed(store, username: str, vhost: str) -> bool:
    """connection.open: the user needs a permissions entry (any) on the vhost."""
    user = store.users.get(username)
    return user is not None and vhost in user.permissions


def clear_caches(session: Session) -> None:
    """Forget the per-channel permission caches (call on the connection's worker)."""
    for ch in list(session.channels.values()):
        ch.write_ok.clear()
        ch.read_ok.clear()
