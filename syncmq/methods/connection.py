"""connection.* handlers: login, tune, open, close, update-secret."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..broker import certname
from ..broker.user_rules import limit_of
from ..protocol import connection as pconn
from ..wire import _spec
from ..wire.errors import AMQPConnectionError
from ..wire.fields import decode_table
from . import access

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("syncmq.connection")

C = _spec.Connection
CHANNEL_MIN = 1  # rabbit.hrl ?CHANNEL_MIN


def _credentials(mechanism: str, response: bytes) -> tuple[str, str]:
    """(username, password) from a PLAIN or AMQPLAIN response; 403-style failure as ValueError."""
    if mechanism == "PLAIN":
        parts = bytes(response).split(b"\x00")
        if len(parts) != 3:
            raise ValueError("malformed PLAIN response")
        if parts[0] and parts[0] != parts[1]:
            # an authorization identity other than the user would be a login as someone
            # else; RabbitMQ accepts none at all and drops the connection (as here)
            raise ValueError("PLAIN authorization identity differs from the user")
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    # AMQPLAIN: a field table without its length prefix
    raw = bytes(response)
    table, _ = decode_table(len(raw).to_bytes(4, "big") + raw, 0)
    login, password = table.get("LOGIN"), table.get("PASSWORD")
    if isinstance(login, bytes):
        login = login.decode("utf-8", "replace")
    if isinstance(password, bytes):
        password = password.decode("utf-8", "replace")
    if not isinstance(login, str) or not isinstance(password, str):
        raise ValueError("malformed AMQPLAIN response")
    return login, password


def start_ok(session: Session, _ch, m: C.StartOk, _p, _b) -> None:
    props = m.client_properties or {}
    session.client_properties = props
    caps = props.get("capabilities")
    session.capabilities = caps if isinstance(caps, dict) else {}
    mechanism = m.mechanism
    if mechanism == "EXTERNAL" and getattr(session.transport, "peer_cert", None):
        _login(session, mechanism, *_external(session))
        return
    if mechanism not in ("PLAIN", "AMQPLAIN"):
        raise AMQPConnectionError(
            _spec.COMMAND_INVALID,
            f"COMMAND_INVALID - unknown authentication mechanism '{mechanism}'",
        )
    try:
        username, password = _credentials(mechanism, m.response)
    except (ValueError, AMQPConnectionError) as e:
        # RabbitMQ's PLAIN/AMQPLAIN mechanisms answer a malformed response with
        # {protocol_error, ...} -> syntax_error (502), which in the 'starting' state ends in a
        # silent close (see Session._answers_with_close), not in access_refused.
        why = f" ({e})" if isinstance(e, ValueError) else ""
        raise AMQPConnectionError(
            _spec.SYNTAX_ERROR,
            f"SYNTAX_ERROR - malformed {mechanism} response{why}",
            m.CLASS_ID, m.METHOD_ID,
        ) from None
    internal = session.broker.internal_login.check(username, password,
                                                   session.broker.users.users)
    if internal is not None:  # the broker's own client (a shovel's local end)
        _login(session, mechanism, username, internal, "")
        return
    _login(session, mechanism, username,
           *session.broker.users.authenticate(username, password, session.peer))


def _external(session: Session) -> tuple[str, object, str]:
    """(username, user or None, reason) from the TLS client certificate, named as RabbitMQ's
    ``ssl_cert_login_from`` does (``broker.certname``: several CNs are joined, never one
    picked)."""
    name = certname.login_name(session.transport.peer_cert, session.settings.cert_login_from)
    if name is None:
        return "", None, "the client certificate's subject has no CN"
    user, reason = session.broker.users.authenticate_external(name, session.peer)
    return name, user, reason


def _login(session: Session, mechanism: str, username: str, user, reason: str) -> None:
    """Finish start-ok: refuse (403) or move on to connection.tune."""
    session.broker.count("auth_attempts")
    if user is None:
        session.broker.count("auth_attempts_failed")
        log.warning(
            "login refused: %s (mechanism %s)", reason, mechanism,
            extra={"peer": _peer(session), "user": username},
        )
        raise AMQPConnectionError(
            _spec.ACCESS_REFUSED,
            f"ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. "
            "For details see the broker logfile.",
        )
    session.user = user
    session.username = user.name
    session.auth_mechanism = mechanism
    s = session.settings
    session.send_method(0, C.Tune(channel_max=s.channel_max, frame_max=s.frame_max,
                                  heartbeat=s.heartbeat))


def _negotiated(field: str, value: int, minimum: int, server: int) -> None:
    """rabbit_reader ``validate_negotiated_integer_value``: 530 NOT_ALLOWED, reported against
    connection.tune, when the client's value is below the minimum, or is 0 ("no limit") or
    above the server's value while the server has a limit."""
    if value != 0 and value < minimum:
        bound, side, limit = "lower", "minimum", minimum
    elif server != 0 and (value == 0 or value > server):
        bound, side, limit = "higher", "maximum", server
    else:
        return
    detail = " (no limit)" if value == 0 else ""
    raise AMQPConnectionError(
        _spec.NOT_ALLOWED,
        f"NOT_ALLOWED - negotiated {field} = {value}{detail} is {bound} than the {side} "
        f"allowed value ({limit})",
        C.Tune.CLASS_ID, C.Tune.METHOD_ID,
    )


def tune_ok(session: Session, _ch, m: C.TuneOk, _p, _b) -> None:
    s = session.settings
    _negotiated("frame_max", m.frame_max, _spec.FRAME_MIN_SIZE, s.frame_max)
    _negotiated("channel_max", m.channel_max, CHANNEL_MIN, s.channel_max)
    frame_max = m.frame_max or s.frame_max
    channel_max = m.channel_max or s.channel_max
    session.frame_max = frame_max
    session.channel_max = channel_max
    session.transport.set_frame_max(frame_max)
    session.heartbeat = m.heartbeat
    if m.heartbeat:
        session.transport.set_heartbeat(m.heartbeat)
    session.proto.tuned(frame_max, channel_max)


def open_(session: Session, _ch, m: C.Open, _p, _b) -> None:
    name = m.virtual_host
    vhost = session.broker.vhosts.get(name)
    if vhost is None:
        raise AMQPConnectionError(_spec.NOT_ALLOWED, f"NOT_ALLOWED - vhost {name} not found")
    # rabbit_reader's order: the vhost's max-connections (checked and counted in one step
    # under the vhost's limits lock, so racing opens cannot both pass), the user's, access
    vhost.limits.open_connection(session.username)
    session.counted_in = vhost.limits  # Session.release gives the count back
    _count_user_connection(session)
    if not (session.user.internal
            or access.vhost_allowed(session.broker.users, session.username, name)):
        raise AMQPConnectionError(
            _spec.NOT_ALLOWED,
            f"NOT_ALLOWED - access to vhost '{name}' refused for user '{session.username}'",
        )
    opened = session.transport.mark_open()
    if opened is None:
        # lost meanwhile (the handshake timeout closed it): no limit refused it and nobody
        # hears an answer; connection_lost follows on this worker and releases the counts
        return
    if not opened:
        # sockets in the handshake are bounded separately (--max-handshakes); the limit on
        # open connections is enforced here, when one would become open
        raise AMQPConnectionError(
            _spec.NOT_ALLOWED,
            "NOT_ALLOWED - connection refused: the node's connection limit is reached")
    session.vhost = vhost
    session.broker.count("connections_opened")
    session.send_method(0, C.OpenOk())  # the protocol is OPEN from here on
    if session.broker.alarms:
        session.alarms_changed(session.broker.alarms)
    log.info(
        "connection opened", extra={"peer": _peer(session), "user": session.username,
                                    "vhost": name},
    )


def _count_user_connection(session: Session) -> None:
    """Count the connection for its user, or refuse it (530, rabbit_reader's
    ``is_over_user_connection_limit``) when the user's ``max-connections`` is reached. Once
    counted it stays counted until ``Session.release``, refused later or not."""
    # the broker's own client (user none) is not a user of the store: not counted (a file
    # user named none would otherwise be held to a limit by the shovels' connections)
    if session.user.internal:
        return
    user = session.broker.users.users.get(session.username)
    limit = limit_of(user.limits, "max-connections") if user is not None else None
    usage = session.broker.user_usage
    if not usage.acquire(usage.connections, session.username, limit):
        raise AMQPConnectionError(
            _spec.NOT_ALLOWED, f"NOT_ALLOWED - connection refused for user "
            f"'{session.username}': user connection limit ({limit}) is reached")
    session.counted = True


def close(session: Session, _ch, m: C.Close, _p, _b) -> None:
    """Client-initiated close (or the client's close crossing ours): close-ok, then hang up."""
    was_open = session.proto.state is pconn.OPEN
    session.proto.peer_closed()
    # RabbitMQ deletes exclusive queues (and requeues unacked messages) before close-ok
    session.release()
    session.send_method(0, C.CloseOk())
    session.transport.close_after_flush()
    if was_open:
        log.info("connection closed by client", extra={"peer": _peer(session),
                                                       "user": session.username,
                                                       "vhost": session.vhost.name})


def close_ok(session: Session, _ch, m: C.CloseOk, _p, _b) -> None:
    session.proto.peer_closed()
    session.release()
    session.transport.close_after_flush()


def update_secret(session: Session, _ch, m: C.UpdateSecret, _p, _b) -> None:
    """RabbitMQ 3.8+ ``connection.update-secret`` (rabbit_reader ``handle_method0``): the new
    secret is checked for the connection's user with the mechanism it logged in with, against
    the *current* users file (PLAIN/AMQPLAIN: the password; EXTERNAL: the certificate's user
    must still exist). Accepted: update-secret-ok, and every channel's cached permission
    checks are dropped so the next check reads the current permissions. Refused: the
    connection is closed with RabbitMQ's 530 and text (its ``{refused, _}`` branch).

    RabbitMQ's internal backend cannot expire and accepts any secret; syncmq checks it (a
    documented difference, docs/compatibility.md)."""
    store = session.broker.users
    if session.auth_mechanism == "EXTERNAL":
        user, reason = store.authenticate_external(session.username, session.peer)
    else:
        secret = m.new_secret
        if isinstance(secret, (bytes, bytearray, memoryview)):
            secret = bytes(secret).decode("utf-8", "replace")
        user, reason = store.authenticate(session.username, secret, session.peer)
    if user is None:
        log.warning("secret update refused: %s", reason,
                    extra={"peer": _peer(session), "user": session.username})
        raise AMQPConnectionError(
            _spec.NOT_ALLOWED, "NOT_ALLOWED - New secret was refused by one of the backends",
            m.CLASS_ID, m.METHOD_ID)
    session.user = user
    access.clear_caches(session)
    session.send_method(0, C.UpdateSecretOk())
    log.info("user updated secret", extra={"peer": _peer(session), "user": session.username,
                                           "reason": m.reason})


def _peer(session: Session) -> str:
    p = session.peer
    return f"{p[0]}:{p[1]}" if isinstance(p, tuple) else str(p)


HANDLERS = {
    C.StartOk.INDEX: start_ok,
    C.TuneOk.INDEX: tune_ok,
    C.Open.INDEX: open_,
    C.Close.INDEX: close,
    C.CloseOk.INDEX: close_ok,
    C.UpdateSecret.INDEX: update_secret,
}
