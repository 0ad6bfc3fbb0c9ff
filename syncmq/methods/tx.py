"""tx.* handlers: select, commit, rollback (publishes and acks applied atomically on commit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import _spec
from ..wire.errors import AMQPChannelError
from .basic import route
from .durable_reply import reply_after_barrier

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
    if not ch.tx:
        ch.tx = True
        ch.tx_publishes, ch.tx_acks = [], {}
    session.send_method(ch.id, T.SelectOk())


def commit(session: Session, ch: Channel, m: T.Commit, _p, _b) -> None:
    if not ch.tx:
        raise _not_transactional()
    publishes, acks = ch.tx_publishes, ch.tx_acks
    ch.tx_publishes, ch.tx_acks = [], {}
    durability = session.broker.durability
    if durability is None:
        _apply(session, ch, publishes, acks, True)
        return
    # one journal unit for the whole commit: after a crash all of it or none (issue #25)
    with durability.transaction() as unit:
        journaled = _apply(session, ch, publishes, acks, False)
    if journaled or unit.records:
        # commit-ok only once the persistent publishes and the acks are on disk; until then
        # the connection handles nothing more, so that the replies to the methods behind
        # the commit cannot overtake commit-ok (durable_reply)
        reply_after_barrier(session, ch.id, m, T.CommitOk())
    else:
        session.send_method(ch.id, T.CommitOk())


def _apply(session: Session, ch: Channel, publishes: list, acks: dict, reply: bool) -> bool:
    """Route the commit's publishes then settle its acks; True if a publish was journaled
    (``reply``: no journal, send commit-ok now)."""
    # As RabbitMQ: the publishes first, then the acks/rejects (collected and checked when
    # they arrived, see basic._tx_collect, so nothing here can fail half-way).
    journaled = False
    for ex, message, mandatory in publishes:
        journaled |= route(session, ch, ex, message, mandatory).journaled
    settled: list = []
    rejected: list = []
    requeued: list = []
    for tag, requeue in acks.items():
        try:
            entries = ch.take_unacked(tag, False)
        except AMQPChannelError:
            continue  # requeued meanwhile by basic.recover
        (requeued if requeue else rejected if requeue is None else settled).extend(entries)
    if settled:
        ch.settle(settled, requeue=False)
    if rejected:
        ch.settle(rejected, requeue=False, reject=True)
    if requeued:
        ch.settle(requeued, requeue=True)
    if reply:
        session.send_method(ch.id, T.CommitOk())
    return bool(journaled)


def rollback(session: Session, ch: Channel, m: T.Rollback, _p, _b) -> None:
    if not ch.tx:
        raise _not_transactional()
    ch.tx_publishes, ch.tx_acks = [], {}
    session.send_method(ch.id, T.RollbackOk())


HANDLERS = {
    T.Select.INDEX: select,
    T.Commit.INDEX: commit,
    T.Rollback.INDEX: rollback,
}
