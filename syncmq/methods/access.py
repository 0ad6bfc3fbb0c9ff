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
  connection's own worker), so an existing channel is re-checked on its next publish; it
  also drops the channel's cached route (``methods.basic.publish``), whose publishes skip
  the write check.
- Topic permissions (``broker.user_rules``) are checked by :func:`topic` for exchanges of type
  ``topic`` only: write on basic.publish's routing key (after the write permission, the
  exchange lookup and the internal check, as ``rabbit_channel``), read on a binding's key
  against its source exchange (after the read permission, when the source exists). The
  session keeps the user's topic permissions for its vhost (``Session.topic_perms``: exchange
  -> ``TopicPermission``, None when there are none), taken from the store they were read
  from (``Session.topic_store``) and re-read whenever ``broker.users`` is another store, so
  a change applies from the next check on. A publisher whose user has no topic permissions
  in the vhost pays two attribute comparisons per publish to a topic exchange and no regex.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..broker.user_rules import topic_refusal
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
    """Forget the per-channel permission caches (call on the connection's worker), and each
    channel's cached route (``Channel.route_gen``): its publishes skip the write check the
    route's first publish made, so the next one must route (and check) afresh."""
    for ch in list(session.channels.values()):
        ch.write_ok.clear()
        ch.read_ok.clear()
        ch.route_gen = -1


def topic_perms(session: Session) -> dict | None:
    """The session's user's topic permissions in its vhost (exchange -> TopicPermission,
    None when it has none), re-read when ``broker.users`` was replaced."""
    if session.user.internal:  # the broker's own client (user none): no topic rules
        return None
    store = session.broker.users
    if store is not session.topic_store:
        user = store.users.get(session.username)
        per = user.topic_permissions.get(session.vhost.name) if user is not None else None
        session.topic_perms = per or None
        session.topic_store = store
    return session.topic_perms


def topic(session: Session, exchange: str, routing_key: str, what: str) -> None:
    """403 unless the user's topic permission (if any) on ``exchange`` (a topic exchange)
    lets it ``what`` ("write" or "read") ``routing_key``."""
    per = topic_perms(session)
    if per is not None:
        t = per.get(exchange)
        if t is not None and not t.allows(what, routing_key):
            raise AMQPChannelError(_spec.ACCESS_REFUSED, topic_refusal(
                routing_key, exchange, session.vhost.name, session.username))


def topic_bind(session: Session, source: str, routing_key: str) -> None:
    """queue.bind/unbind, exchange.bind/unbind: read on the binding key, when the source
    exists and is a topic exchange (rabbit_channel:binding_action)."""
    ex = session.vhost.exchanges.get(source)
    if ex is not None and ex.type == "topic":
        topic(session, source, routing_key, "read")
