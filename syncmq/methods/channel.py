"""channel.* handlers: open, close, close-ok, flow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..broker.user_rules import limit_of
from ..wire import _spec
from ..wire.errors import AMQPConnectionError

if TYPE_CHECKING:
    from .session import Channel, Session

Ch = _spec.Channel


def open_(session: Session, ch: Channel, m: Ch.Open, _p, _b) -> None:
    """The session created ``ch`` when the protocol accepted the channel number. It is
    counted for the user (``broker.user_usage``), or refused with rabbit_reader's 530 (a
    connection error) when the user's ``max-channels`` is reached."""
    # the broker's own client (user none) is not a user of the store: not counted
    if session.user.internal:
        session.send_method(ch.id, Ch.OpenOk())
        return
    user = session.broker.users.users.get(session.username)
    limit = limit_of(user.limits, "max-channels") if user is not None else None
    usage = session.broker.user_usage
    if not usage.acquire(usage.channels, session.username, limit):
        err = AMQPConnectionError(
            _spec.NOT_ALLOWED, f"NOT_ALLOWED - number of channels opened for user "
            f"'{session.username}' has reached the maximum allowed user limit of ({limit})")
        err.no_method = True  # rabbit_reader names no method (class and method 0)
        raise err
    session.counted_channels.add(ch.id)
    session.send_method(ch.id, Ch.OpenOk())


def close(session: Session, ch: Channel, m: Ch.Close, _p, _b) -> None:
    if session.proto.channel_is_closing(ch.id):
        # The client's close crossed ours: answer it, and keep waiting for the close-ok to
        # ours before the number may be reused (rabbit_channel, channel.close in state
        # closing). Forgetting the channel here made that close-ok a 504 "expected
        # 'channel.open'" that killed the connection.
        session.send_method(ch.id, Ch.CloseOk())
        return
    session.forget_channel(ch.id)
    session.send_method(ch.id, Ch.CloseOk())


def close_ok(session: Session, ch: Channel, m: Ch.CloseOk, _p, _b) -> None:
    session.forget_channel(ch.id)


def flow(session: Session, ch: Channel, m: Ch.Flow, _p, _b) -> None:
    if not m.active:
        # RabbitMQ no longer lets clients stop deliveries this way (use basic.qos).
        raise AMQPConnectionError(
            _spec.NOT_IMPLEMENTED, "NOT_IMPLEMENTED - active=false", m.CLASS_ID, m.METHOD_ID
        )
    session.send_method(ch.id, Ch.FlowOk(active=True))


def flow_ok(session: Session, ch: Channel, m: Ch.FlowOk, _p, _b) -> None:
    """We never send channel.flow, so a flow-ok is simply ignored."""


HANDLERS = {
    Ch.Open.INDEX: open_,
    Ch.Close.INDEX: close,
    Ch.CloseOk.INDEX: close_ok,
    Ch.Flow.INDEX: flow,
    Ch.FlowOk.INDEX: flow_ok,
}
