"""tx.* handlers: select, commit, rollback (publishes and acks applied atomically on commit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import _spec
from ..wire.errors import AMQPChannelError
from .basic import route

if TYPE_CHECKING:
    from .session import Channel, Session

T = _spec.Tx


def _not_transactional() -> AMQPChannelError:
    return AMQPChannelError(
        _spec.PRECONDITION_FAILED, "PRECONDITION_FAILED - channel is not transactional"
    )


def select(session: Session, ch: Channel, m: T.Select, _p, _b) -> None:
    if ch.confirm:
        raise AMQPChannelError(
            _spec.PRECONDITION_FAILED,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
        )
    ch.tx = True
    session.send_method(ch.id, T.SelectOk())


def commit(session: Session, ch: Channel, m: T.Commit, _p, _b) -> None:
    if not ch.tx:
        raise _not_transactional()
    publishes, acks = ch.tx_publishes, ch.tx_acks
    ch.tx_publishes, ch.tx_acks = [], []
    for tag, multiple, requeue in acks:
        ch.settle(ch.take_unacked(tag, multiple), requeue=requeue)
    for ex, message, mandatory in publishes:
        route(session, ch, ex, message, mandatory)
    session.send_method(ch.id, T.CommitOk())


def rollback(session: Session, ch: Channel, m: T.Rollback, _p, _b) -> None:
    if not ch.tx:
        raise _not_transactional()
    ch.tx_publishes, ch.tx_acks = [], []
    session.send_method(ch.id, T.RollbackOk())


HANDLERS = {
    T.Select.INDEX: select,
    T.Commit.INDEX: commit,
    T.Rollback.INDEX: rollback,
}
